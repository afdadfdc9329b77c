//! A JSON-RPC client for one or more Bitcoin Core nodes, with failover.
//!
//! Calls go to the node that last answered and fail over to the next URL on any
//! error. Bitcoin Core answers a bad password with HTTP 401 and an empty body; RPC
//! errors come as a JSON `error` member on 200, 404 or 500, so the body is read on all
//! three. With cookie authentication the cookie file is read again after a 401, because
//! bitcoind writes a new one each time it starts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// How the pool authenticates to its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `rpcuser`/`rpcpassword` or an `rpcauth` entry.
    Password { user: String, password: String },
    /// The `.cookie` file bitcoind writes into its data directory.
    Cookie(PathBuf),
}

/// What a call to a node can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(
        "bitcoind at {url} refused the credentials (HTTP 401): check bitcoind_user and \
         bitcoind_password, or bitcoind_cookie"
    )]
    Unauthorized { url: String },
    #[error("cannot read the bitcoind cookie file {path}")]
    Cookie {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bitcoind cookie file {0} does not hold user:password")]
    CookieFormat(PathBuf),
    #[error("bitcoind at {url} did not answer {method}")]
    Transport {
        url: String,
        method: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("bitcoind at {url} answered {method} with HTTP {status} and no JSON-RPC reply")]
    Http {
        url: String,
        method: &'static str,
        status: StatusCode,
    },
    #[error("bitcoind at {url} answered {method} with error {code}: {message}")]
    Rpc {
        url: String,
        method: &'static str,
        code: i64,
        message: String,
    },
    #[error("bitcoind at {url} answered {method} with a result that does not parse")]
    Decode {
        url: String,
        method: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl RpcError {
    /// Whether the error is a credentials problem, which retrying will not fix.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            RpcError::Unauthorized { .. } | RpcError::Cookie { .. } | RpcError::CookieFormat(_)
        )
    }
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Option<RpcErrorBody>,
}

#[derive(Deserialize)]
struct RpcErrorBody {
    code: i64,
    message: String,
}

/// Bitcoin Core's JSON-RPC, over one or more node URLs.
pub struct RpcClient {
    urls: Vec<String>,
    auth: Auth,
    /// The cookie's `user:password`, read again after a 401.
    cookie: Mutex<Option<(String, String)>>,
    /// The index of the node that last answered.
    preferred: AtomicUsize,
    http: reqwest::Client,
    /// A separate connection pool for long polls, which hold a connection for minutes.
    long_poll_http: reqwest::Client,
}

impl RpcClient {
    /// A client for `urls` (at least one), each call limited to `timeout`; long polls get
    /// `long_poll_timeout`.
    pub fn new(
        urls: Vec<String>,
        auth: Auth,
        timeout: Duration,
        long_poll_timeout: Duration,
    ) -> RpcClient {
        let client = |timeout| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5).min(timeout))
                .timeout(timeout)
                .build()
                .unwrap_or_default()
        };
        RpcClient {
            urls,
            auth,
            cookie: Mutex::new(None),
            preferred: AtomicUsize::new(0),
            http: client(timeout),
            long_poll_http: client(long_poll_timeout),
        }
    }

    /// The configured node URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Calls `method` on the preferred node, failing over to the others in turn.
    ///
    /// # Errors
    /// The last node's error when none answered with a result.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: Value,
    ) -> Result<T, RpcError> {
        self.failover(method, params, false).await
    }

    /// `getblocktemplate` long poll: returns when the node's template changes.
    ///
    /// # Errors
    /// As [`RpcClient::call`].
    pub async fn long_poll<T: DeserializeOwned>(&self, longpollid: &str) -> Result<T, RpcError> {
        let params = json!([{"rules": ["segwit"], "longpollid": longpollid}]);
        self.failover("getblocktemplate", params, true).await
    }

    /// Calls `method` on every node at once (for `submitblock`), in URL order.
    pub async fn call_all<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: Value,
    ) -> Vec<(String, Result<T, RpcError>)> {
        let calls = (0..self.urls.len()).map(|index| {
            let params = params.clone();
            async move {
                let result = self.call_on(index, method, params, false).await;
                (self.urls[index].clone(), result)
            }
        });
        futures_util::future::join_all(calls).await
    }

    async fn failover<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: Value,
        long_poll: bool,
    ) -> Result<T, RpcError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for step in 0..self.urls.len() {
            let index = (first + step) % self.urls.len();
            match self.call_on(index, method, params.clone(), long_poll).await {
                Ok(value) => {
                    if index != first {
                        tracing::warn!(url = %self.urls[index], "failed over to another bitcoind");
                        self.preferred.store(index, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Err(err) => {
                    if self.urls.len() > 1 {
                        tracing::warn!(err = %err, "bitcoind call failed; trying the next node");
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| RpcError::Http {
            url: String::new(),
            method,
            status: StatusCode::SERVICE_UNAVAILABLE,
        }))
    }

    async fn call_on<T: DeserializeOwned>(
        &self,
        index: usize,
        method: &'static str,
        params: Value,
        long_poll: bool,
    ) -> Result<T, RpcError> {
        match self.post(index, method, &params, long_poll).await {
            Err(RpcError::Unauthorized { .. }) if matches!(self.auth, Auth::Cookie(_)) => {
                // bitcoind may have restarted and written a new cookie.
                self.reload_cookie()?;
                self.post(index, method, &params, long_poll).await
            }
            other => other,
        }
    }

    async fn post<T: DeserializeOwned>(
        &self,
        index: usize,
        method: &'static str,
        params: &Value,
        long_poll: bool,
    ) -> Result<T, RpcError> {
        let url = &self.urls[index];
        let (user, password) = self.credentials()?;
        let http = if long_poll {
            &self.long_poll_http
        } else {
            &self.http
        };
        let body = json!({"jsonrpc": "1.0", "id": "quarry", "method": method, "params": params});
        let transport = |source| RpcError::Transport {
            url: url.clone(),
            method,
            source,
        };
        let response = http
            .post(url)
            .basic_auth(user, Some(password))
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RpcError::Unauthorized { url: url.clone() });
        }
        let bytes = response.bytes().await.map_err(transport)?;
        let reply: Reply = serde_json::from_slice(&bytes).map_err(|_| RpcError::Http {
            url: url.clone(),
            method,
            status,
        })?;
        if let Some(error) = reply.error {
            return Err(RpcError::Rpc {
                url: url.clone(),
                method,
                code: error.code,
                message: error.message,
            });
        }
        serde_json::from_value(reply.result).map_err(|source| RpcError::Decode {
            url: url.clone(),
            method,
            source,
        })
    }

    fn credentials(&self) -> Result<(String, String), RpcError> {
        match &self.auth {
            Auth::Password { user, password } => Ok((user.clone(), password.clone())),
            Auth::Cookie(_) => {
                if let Some(pair) = self.lock_cookie().clone() {
                    return Ok(pair);
                }
                self.reload_cookie()
            }
        }
    }

    fn reload_cookie(&self) -> Result<(String, String), RpcError> {
        let Auth::Cookie(path) = &self.auth else {
            return self.credentials();
        };
        let text = std::fs::read_to_string(path).map_err(|source| RpcError::Cookie {
            path: path.clone(),
            source,
        })?;
        let (user, password) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| RpcError::CookieFormat(path.clone()))?;
        let pair = (user.to_owned(), password.to_owned());
        *self.lock_cookie() = Some(pair.clone());
        Ok(pair)
    }

    fn lock_cookie(&self) -> std::sync::MutexGuard<'_, Option<(String, String)>> {
        self.cookie.lock().unwrap_or_else(|e| e.into_inner())
    }
}
