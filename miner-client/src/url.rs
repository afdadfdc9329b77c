//! Pool URLs in the cpuminer convention: `stratum+tcp://host:port` for plain TCP,
//! `stratum+ssl://`, `stratum+tls://` or `stratum+tcps://` for TLS (STRATUM.md §10),
//! and `stratum2+tcp://host:port/KEY` for Stratum V2, whose Noise handshake must prove
//! the authority public key `KEY` (base58check, as SRI's pools print it).

use std::fmt;
use std::str::FromStr;

use quarry_protocol::sv2::{AuthorityPublicKey, KeyError};

/// A URL that is not a Stratum pool address; quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// A scheme other than the Stratum ones.
    #[error("{url:?}: unknown scheme {scheme:?} (expected stratum+tcp, stratum+ssl, stratum+tls, stratum+tcps or stratum2+tcp)")]
    Scheme { url: String, scheme: String },
    /// No `:port` after the host.
    #[error("{0:?}: missing :port")]
    MissingPort(String),
    /// A port that is not 1..=65535.
    #[error("{url:?}: invalid port {port:?}")]
    Port { url: String, port: String },
    /// An empty host or one with characters no host name has.
    #[error("{0:?}: invalid host")]
    Host(String),
    /// A `stratum2+tcp://` URL without the pool's authority key after the port.
    #[error("{0:?}: missing the pool's authority public key (stratum2+tcp://HOST:PORT/KEY)")]
    MissingKey(String),
    /// An authority key that is not one.
    #[error("{url:?}: invalid authority public key: {error}")]
    Key { url: String, error: KeyError },
}

/// How to talk to a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Stratum V1 over plain TCP.
    Tcp,
    /// Stratum V1 over TLS.
    Tls,
    /// Stratum V2 over Noise, accepting only a pool that proves this key.
    V2(AuthorityPublicKey),
}

/// Where a pool listens and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolUrl {
    pub scheme: Scheme,
    /// A host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl PoolUrl {
    /// The same scheme at another address (for `client.reconnect`).
    pub fn redirect(&self, host: Option<&str>, port: Option<u16>) -> PoolUrl {
        PoolUrl {
            scheme: self.scheme,
            host: host.map_or_else(|| self.host.clone(), str::to_owned),
            port: port.unwrap_or(self.port),
        }
    }

    /// Whether the connection is TLS.
    pub fn tls(&self) -> bool {
        self.scheme == Scheme::Tls
    }

    /// `host:port` as `TcpStream::connect` takes it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for PoolUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = url.split_once("://").unwrap_or(("stratum+tcp", url));
        // `None`: Stratum V2, whose key follows the port.
        let v1 = match scheme.to_ascii_lowercase().as_str() {
            "stratum+tcp" | "stratum" | "tcp" => Some(Scheme::Tcp),
            "stratum+ssl" | "stratum+tls" | "stratum+tcps" | "ssl" | "tls" => Some(Scheme::Tls),
            "stratum2+tcp" => None,
            _ => {
                return Err(UrlError::Scheme {
                    url: url.to_owned(),
                    scheme: scheme.to_owned(),
                })
            }
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let authority = authority.split(['#', '?']).next().unwrap_or_default();
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| UrlError::Host(url.to_owned()))?;
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| UrlError::MissingPort(url.to_owned()))?;
                (host, port)
            }
            None => authority
                .rsplit_once(':')
                .ok_or_else(|| UrlError::MissingPort(url.to_owned()))?,
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !valid_host {
            return Err(UrlError::Host(url.to_owned()));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| UrlError::Port {
                url: url.to_owned(),
                port: port.to_owned(),
            })?;
        let scheme = match v1 {
            Some(scheme) => scheme,
            None => {
                let key = path.split(['/', '#', '?']).next().unwrap_or_default();
                if key.is_empty() {
                    return Err(UrlError::MissingKey(url.to_owned()));
                }
                Scheme::V2(key.parse().map_err(|error| UrlError::Key {
                    url: url.to_owned(),
                    error,
                })?)
            }
        };
        Ok(PoolUrl {
            scheme,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for PoolUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::Tcp => write!(f, "stratum+tcp://{}", self.authority()),
            Scheme::Tls => write!(f, "stratum+ssl://{}", self.authority()),
            Scheme::V2(key) => write!(f, "stratum2+tcp://{}/{key}", self.authority()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_protocol::sv2::AuthorityKeypair;

    fn url(text: &str) -> PoolUrl {
        text.parse().unwrap()
    }

    #[test]
    fn schemes_select_tls() {
        assert_eq!(url("stratum+tcp://pool.example:3333").scheme, Scheme::Tcp);
        for scheme in ["stratum+ssl", "stratum+tls", "stratum+tcps", "STRATUM+SSL"] {
            assert!(
                url(&format!("{scheme}://pool.example:3334")).tls(),
                "{scheme}"
            );
        }
        assert_eq!(
            url("pool.example:3333").scheme,
            Scheme::Tcp,
            "no scheme means plain TCP"
        );
    }

    #[test]
    fn host_and_port_are_split() {
        let u = url("stratum+tcp://pool.example.com:3333/");
        assert_eq!((u.host.as_str(), u.port), ("pool.example.com", 3333));
        let u = url("stratum+ssl://[::1]:3334#xnsub");
        assert_eq!((u.host.as_str(), u.port), ("::1", 3334));
        assert_eq!(u.authority(), "[::1]:3334");
        assert_eq!(u.to_string(), "stratum+ssl://[::1]:3334");
        assert_eq!(url("127.0.0.1:1").authority(), "127.0.0.1:1");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = |t: &str| t.parse::<PoolUrl>().unwrap_err();
        assert!(matches!(err("http://x:1"), UrlError::Scheme { .. }));
        assert!(matches!(err("stratum+tcp://x"), UrlError::MissingPort(_)));
        assert!(matches!(err("stratum+tcp://x:0"), UrlError::Port { .. }));
        assert!(matches!(
            err("stratum+tcp://x:70000"),
            UrlError::Port { .. }
        ));
        assert!(matches!(err("stratum+tcp://:3333"), UrlError::Host(_)));
        assert!(matches!(err("stratum+tcp://a b:3333"), UrlError::Host(_)));
        assert!(err("http://x:1").to_string().contains("http"));
    }

    #[test]
    fn stratum2_urls_carry_the_authority_key() {
        let key = AuthorityKeypair::generate().public;
        let u = url(&format!("stratum2+tcp://pool.example:3336/{key}"));
        assert_eq!(u.scheme, Scheme::V2(key));
        assert!(!u.tls());
        assert_eq!((u.host.as_str(), u.port), ("pool.example", 3336));
        assert_eq!(
            u.to_string(),
            format!("stratum2+tcp://pool.example:3336/{key}")
        );
        assert_eq!(url(&u.to_string()), u, "display round-trips");
        let u = url(&format!("STRATUM2+TCP://[::1]:3336/{key}/"));
        assert_eq!((u.host.as_str(), u.scheme), ("::1", Scheme::V2(key)));
    }

    #[test]
    fn stratum2_urls_need_a_valid_key() {
        let err = |t: &str| t.parse::<PoolUrl>().unwrap_err();
        for missing in [
            "stratum2+tcp://x:1",
            "stratum2+tcp://x:1/",
            "stratum2+tcp://x:1/#k",
        ] {
            assert_eq!(err(missing), UrlError::MissingKey(missing.to_owned()));
        }
        let key = AuthorityKeypair::generate().public.to_string();
        let typo = format!("stratum2+tcp://x:1/{}x", &key[..key.len() - 1]);
        assert!(matches!(err(&typo), UrlError::Key { .. }), "{typo}");
        assert!(err(&typo).to_string().contains("authority public key"));
        assert!(matches!(
            err("stratum2+tcp://x:1/notbase58!"),
            UrlError::Key { .. }
        ));
        assert!(matches!(
            err("stratum2+tcp://x/abc"),
            UrlError::MissingPort(_)
        ));
        // A V1 URL ignores any path, as before.
        assert_eq!(url("stratum+tcp://x:1/whatever").scheme, Scheme::Tcp);
    }

    #[test]
    fn redirect_keeps_the_scheme() {
        let u = url("stratum+ssl://a:1");
        assert_eq!(u.redirect(None, None), u);
        assert_eq!(
            u.redirect(Some("b"), Some(2)).to_string(),
            "stratum+ssl://b:2"
        );
        assert_eq!(u.redirect(None, Some(2)).to_string(), "stratum+ssl://a:2");
    }
}
