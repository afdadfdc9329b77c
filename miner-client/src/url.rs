//! Pool URLs in the cpuminer convention: `stratum+tcp://host:port` for plain TCP,
//! `stratum+ssl://`, `stratum+tls://` or `stratum+tcps://` for TLS (STRATUM.md §10).

use std::fmt;
use std::str::FromStr;

/// A URL that is not a Stratum pool address; quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// A scheme other than the four Stratum ones.
    #[error("{url:?}: unknown scheme {scheme:?} (expected stratum+tcp, stratum+ssl, stratum+tls or stratum+tcps)")]
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
}

/// Where a pool listens and whether to speak TLS to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolUrl {
    pub tls: bool,
    /// A host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl PoolUrl {
    /// The same scheme at another address (for `client.reconnect`).
    pub fn redirect(&self, host: Option<&str>, port: Option<u16>) -> PoolUrl {
        PoolUrl {
            tls: self.tls,
            host: host.map_or_else(|| self.host.clone(), str::to_owned),
            port: port.unwrap_or(self.port),
        }
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
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "stratum+tcp" | "stratum" | "tcp" => false,
            "stratum+ssl" | "stratum+tls" | "stratum+tcps" | "ssl" | "tls" => true,
            _ => {
                return Err(UrlError::Scheme {
                    url: url.to_owned(),
                    scheme: scheme.to_owned(),
                })
            }
        };
        let authority = rest.split(['/', '#', '?']).next().unwrap_or_default();
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
        Ok(PoolUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for PoolUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls {
            "stratum+ssl"
        } else {
            "stratum+tcp"
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> PoolUrl {
        text.parse().unwrap()
    }

    #[test]
    fn schemes_select_tls() {
        assert!(!url("stratum+tcp://pool.example:3333").tls);
        for scheme in ["stratum+ssl", "stratum+tls", "stratum+tcps", "STRATUM+SSL"] {
            assert!(
                url(&format!("{scheme}://pool.example:3334")).tls,
                "{scheme}"
            );
        }
        assert!(!url("pool.example:3333").tls, "no scheme means plain TCP");
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
