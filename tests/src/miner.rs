//! The miner as a child process, and waiting on what it logs or what a pool's API
//! shows, with deadlines.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{binary, forward, PoolProcess};

/// Pool options for a miner test: a tiny share difficulty so even an unoptimized miner
/// finds shares every second; network difficulty 1 so no blocks interfere.
pub const POOL_ARGS: &[&str] = &[
    "--start-difficulty",
    "1e-5",
    "--chain-difficulty",
    "1",
    "--share-interval",
    "1",
];

/// A running `quarry-miner`; its stdout and stderr lines are collected.
pub struct MinerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub output: Vec<String>,
}

impl MinerProcess {
    /// Starts `quarry-miner args…` with info logging.
    pub fn start(args: &[&str]) -> MinerProcess {
        let mut child = Command::new(binary("quarry-miner", "quarry-miner"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning quarry-miner");
        let (tx, lines) = mpsc::channel();
        forward(child.stdout.take().expect("piped stdout"), tx.clone());
        forward(child.stderr.take().expect("piped stderr"), tx);
        MinerProcess {
            child,
            lines,
            output: Vec::new(),
        }
    }

    /// Waits up to `timeout` for a line containing every one of `needles`; returns it.
    pub fn wait_for(&mut self, needles: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            self.output.push(line.clone());
            if needles.iter().all(|n| line.contains(n)) {
                return Some(line);
            }
        }
    }

    /// The `host:port` of the miner's API, from its start-up line.
    pub fn api_address(&mut self, timeout: Duration) -> String {
        let line = self
            .wait_for(&["API on http://"], timeout)
            .unwrap_or_else(|| panic!("the miner's API address\n{}", self.transcript()));
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("host:port after http://")
            .to_owned()
    }

    /// Whether any line read so far contains `needle`.
    pub fn printed(&self, needle: &str) -> bool {
        self.output.iter().any(|l| l.contains(needle))
    }

    /// Reads every line printed so far, without waiting.
    pub fn drain(&mut self) {
        self.output.extend(self.lines.try_iter());
    }

    /// Everything read so far, for failure messages.
    pub fn transcript(&self) -> String {
        self.output.join("\n")
    }
}

impl Drop for MinerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker's view in a pool's API, or `None` if the pool does not know the worker.
pub fn worker(pool: &PoolProcess, name: &str) -> Option<Value> {
    let url = format!("http://{}/api/workers/{name}", pool.api);
    match ureq::get(&url).timeout(Duration::from_secs(10)).call() {
        Ok(response) => Some(response.into_json().expect("JSON worker view")),
        Err(ureq::Error::Status(404, _)) => None,
        Err(error) => panic!("GET {url}: {error}"),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls the pool until `name` has more than `above` accepted shares; returns the count.
pub fn accepted_above(
    pool: &PoolProcess,
    name: &str,
    above: u64,
    timeout: Duration,
) -> Option<u64> {
    poll(timeout, || {
        let accepted = worker(pool, name)?["accepted"].as_u64()?;
        (accepted > above).then_some(accepted)
    })
}
