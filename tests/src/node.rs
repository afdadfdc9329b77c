//! A Bitcoin Core JSON-RPC endpoint on 127.0.0.1:0 that serves the replies a real
//! v30.0 regtest node gave (`tests/fixtures/bitcoind`), as HTTP the way bitcoind speaks it:
//! 401 with an empty body for bad credentials, a JSON-RPC `error` member otherwise.
//!
//! The test decides what the node knows: the template (and so the tip), the reply to
//! the next `submitblock`, the hashes `getblockhash` returns, whether it is in initial
//! block download, or whether it fails every call. A long poll waits until the test
//! sets a new template. Every call's method is logged for the test to wait on.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::watch;

/// The fixture directory.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/bitcoind")
}

/// A fixture file, parsed.
pub fn fixture(name: &str) -> Value {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Default)]
struct Inner {
    template: Value,
    chain_info: Value,
    submit_replies: VecDeque<Value>,
    block_hashes: HashMap<u64, String>,
    failing: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    authorization: String,
    /// Bumped with every new template, to wake long polls.
    generation: watch::Sender<u64>,
    /// Every call as `method` (and `submitblock` with its hex), in order.
    log: watch::Sender<Vec<(String, Value)>>,
}

/// A running fixture node.
pub struct FixtureNode {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FixtureNode {
    /// Serves `gbt-many.json` and `chaininfo.json` to `user`/`password`.
    pub async fn start(user: &str, password: &str) -> FixtureNode {
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                template: fixture("gbt-many.json"),
                chain_info: fixture("chaininfo.json"),
                ..Inner::default()
            }),
            authorization,
            generation: watch::channel(0).0,
            log: watch::channel(Vec::new()).0,
        });
        let router = axum::Router::new()
            .route("/", axum::routing::post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FixtureNode {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.shared.inner.lock().unwrap())
    }

    /// The template `getblocktemplate` returns from now on; wakes long polls.
    pub fn set_template(&self, template: Value) {
        self.with(|inner| inner.template = template);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// The current template.
    pub fn template(&self) -> Value {
        self.with(|inner| inner.template.clone())
    }

    /// Sets a field of the `getblockchaininfo` reply.
    pub fn set_chain_info(&self, field: &str, value: Value) {
        self.with(|inner| inner.chain_info[field] = value);
    }

    /// The reply to the next `submitblock` (`null` once these run out).
    pub fn push_submit_reply(&self, reply: Value) {
        self.with(|inner| inner.submit_replies.push_back(reply));
    }

    /// What `getblockhash height` answers.
    pub fn set_block_hash(&self, height: u64, hash: &str) {
        self.with(|inner| inner.block_hashes.insert(height, hash.to_owned()));
    }

    /// Whether every call fails with HTTP 500 and no JSON body.
    pub fn set_failing(&self, failing: bool) {
        self.with(|inner| inner.failing = failing);
    }

    /// The methods called so far, with their params.
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.shared.log.borrow().clone()
    }

    /// Waits until the call log satisfies `done`, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&[(String, Value)]) -> bool,
    ) {
        let mut log = self.shared.log.subscribe();
        tokio::time::timeout(timeout, log.wait_for(|calls| done(calls)))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for the pool to {what}"))
            .unwrap();
    }

    /// The blocks submitted so far, as hex.
    pub fn submitted(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|(method, _)| method == "submitblock")
            .filter_map(|(_, params)| params[0].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for FixtureNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    let authorized = headers
        .get("authorization")
        .is_some_and(|value| value.as_bytes() == shared.authorization.as_bytes());
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            [("WWW-Authenticate", "Basic realm=\"jsonrpc\"")],
        )
            .into_response();
    }
    let method = request["method"].as_str().unwrap_or_default().to_owned();
    let params = request["params"].clone();
    let id = request["id"].clone();
    shared
        .log
        .send_modify(|log| log.push((method.clone(), params.clone())));
    if shared.inner.lock().unwrap().failing {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let result = match method.as_str() {
        "getblockchaininfo" => Ok(shared.inner.lock().unwrap().chain_info.clone()),
        "getbestblockhash" => {
            Ok(shared.inner.lock().unwrap().template["previousblockhash"].clone())
        }
        "getblocktemplate" => Ok(template(&shared, &params).await),
        "submitblock" => Ok(shared
            .inner
            .lock()
            .unwrap()
            .submit_replies
            .pop_front()
            .unwrap_or(Value::Null)),
        "getblockhash" => {
            let height = params[0].as_u64().unwrap_or(u64::MAX);
            match shared.inner.lock().unwrap().block_hashes.get(&height) {
                Some(hash) => Ok(json!(hash)),
                None => Err((-8, "Block height out of range")),
            }
        }
        _ => Err((-32601, "Method not found")),
    };
    match result {
        Ok(result) => Json(json!({"result": result, "error": null, "id": id})).into_response(),
        Err((code, message)) => {
            let status = if code == -32601 {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            let body =
                json!({"result": null, "error": {"code": code, "message": message}, "id": id});
            (status, Json(body)).into_response()
        }
    }
}

/// The current template; with a `longpollid` equal to the current one, the next one.
async fn template(shared: &Shared, params: &Value) -> Value {
    let mut generation = shared.generation.subscribe();
    let seen = *generation.borrow_and_update();
    let current = shared.inner.lock().unwrap().template.clone();
    let wanted = &params[0]["longpollid"];
    if wanted.is_null() || *wanted != current["longpollid"] {
        return current;
    }
    let _ = generation.wait_for(|g| *g != seen).await;
    shared.inner.lock().unwrap().template.clone()
}
