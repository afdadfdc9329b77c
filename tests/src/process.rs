//! The pool as a child process, started the way a user starts it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Embedded-chain options where shares are easy and blocks are not: a share takes about
/// 43 hashes and a block about 430,000, so no share finds a block by chance (one in
/// 10,000 or fewer) and a test finds one only by grinding for it
/// ([`crate::Client::submit_block`]).
pub const EASY_SHARES: &[&str] = &[
    "--chain-difficulty",
    "1e-4",
    "--start-difficulty",
    "1e-9",
    "--max-difficulty",
    "1e-8",
];

/// The directory holding the workspace's binaries for the profile the tests run in.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned()
}

/// The path of a workspace binary, building it first if this test run has not.
pub fn binary(package: &str, name: &str) -> PathBuf {
    let dir = bin_dir();
    let path = dir.join(name);
    let release = dir.file_name().is_some_and(|p| p == "release");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args(["build", "--quiet", "-p", package, "--bin", name]);
    if release {
        cargo.arg("--release");
    }
    // Always ask cargo: it is a no-op when the binary is fresh, and a rebuild when stale.
    let status = cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    path
}

/// Sends every line of `stream` (a child's stdout or stderr) to `tx`, from a thread.
pub fn forward(stream: impl std::io::Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// A child process that is killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `quarry-pool`.
pub struct PoolProcess {
    child: Child,
    pub tcp: SocketAddr,
    pub tls: SocketAddr,
    pub api: SocketAddr,
    pub fingerprint: String,
    /// The Stratum V2 listener and the authority key it proves.
    pub v2: SocketAddr,
    pub authority: String,
    pub data_dir: PathBuf,
    /// Stdout lines after start-up.
    pub stdout: mpsc::Receiver<String>,
}

impl PoolProcess {
    /// Starts the pool on loopback with every listener on a port of its choosing,
    /// its data in `data_dir`, plus `extra` arguments.
    pub fn start(data_dir: &Path, extra: &[&str]) -> PoolProcess {
        PoolProcess::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// As [`PoolProcess::start`], with plain Stratum on `tcp` (e.g. the port of an
    /// earlier run, to restart a pool where its miners expect it).
    pub fn start_on(data_dir: &Path, tcp: &str, extra: &[&str]) -> PoolProcess {
        let mut child = Command::new(binary("quarry-pool", "quarry-pool"))
            .args(["run", "--stratum-tcp", tcp, "--stratum-tls", "127.0.0.1:0"])
            .args(["--stratum-v2", "127.0.0.1:0"])
            .args(["--api", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning quarry-pool");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut tcp, mut tls, mut api, mut fingerprint) = (None, None, None, None);
        let (mut v2, mut authority) = (None, None);
        while tcp.is_none()
            || tls.is_none()
            || api.is_none()
            || fingerprint.is_none()
            || v2.is_none()
            || authority.is_none()
        {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .expect("quarry-pool printed its addresses");
            if let Some(addr) = line.strip_prefix("quarry-pool: listening on stratum+tcp://") {
                tcp = addr.parse().ok();
            } else if let Some(addr) = line.strip_prefix("quarry-pool: listening on stratum+ssl://")
            {
                tls = addr.parse().ok();
            } else if let Some(addr) =
                line.strip_prefix("quarry-pool: listening on stratum2+tcp://")
            {
                v2 = addr.parse().ok();
            } else if let Some(key) = line
                .trim()
                .strip_prefix("Stratum V2 authority public key: ")
            {
                authority = Some(key.to_owned());
            } else if let Some(rest) = line.strip_prefix("quarry-pool: API on http://") {
                api = rest.trim_end_matches("/api/pool").parse().ok();
            } else if let Some(fp) = line
                .trim()
                .strip_prefix("TLS certificate SHA-256 fingerprint: ")
            {
                fingerprint = Some(fp.to_owned());
            }
        }
        PoolProcess {
            child,
            tcp: tcp.unwrap(),
            tls: tls.unwrap(),
            api: api.unwrap(),
            fingerprint: fingerprint.unwrap(),
            v2: v2.unwrap(),
            authority: authority.unwrap(),
            data_dir: data_dir.to_owned(),
            stdout: rx,
        }
    }

    /// Runs the pool as [`PoolProcess::start`] expecting it to fail at start-up, and
    /// returns what it printed to stderr.
    pub fn start_error(data_dir: &Path, extra: &[&str]) -> String {
        let out = Command::new(binary("quarry-pool", "quarry-pool"))
            .args([
                "run",
                "--stratum-tcp",
                "127.0.0.1:0",
                "--stratum-tls",
                "off",
                "--stratum-v2",
                "off",
            ])
            .args(["--api", "off", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .output()
            .expect("running quarry-pool");
        assert!(!out.status.success(), "quarry-pool started: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Waits up to `timeout` for the pool to exit on its own; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        crate::miner::poll(timeout, || self.child.try_wait().ok().flatten())
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id().try_into().expect("a pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.child.wait().expect("waiting for quarry-pool")
    }

    /// The pool's resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// GET a JSON document from the pool's API.
    pub fn api_get(&self, path: &str) -> Value {
        let url = format!("http://{}{}", self.api, path);
        ureq::get(&url)
            .timeout(Duration::from_secs(30))
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .into_json()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Sends `method path` to the pool's API, with `token` as its bearer token and `body`
    /// as JSON when given; returns the status and the JSON answer, errors included.
    pub fn api_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("http://{}{}", self.api, path);
        let mut request = ureq::request(method, &url).timeout(Duration::from_secs(30));
        if let Some(token) = token {
            request = request.set("authorization", &format!("Bearer {token}"));
        }
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let response = match response {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(err) => panic!("{method} {url}: {err}"),
        };
        let status = response.status();
        let body = response.into_json().unwrap_or(Value::Null);
        (status, body)
    }

    /// The certificate the pool serves over TLS (self-signed, in its data dir).
    pub fn certificate_pem(&self) -> Vec<u8> {
        std::fs::read(self.data_dir.join("tls-cert.pem"))
            .expect("self-signed certificate in the data dir")
    }

    /// Runs `quarry-pool <args>` (a client subcommand) and returns its stdout.
    pub fn run_cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary("quarry-pool", "quarry-pool"))
            .args(args)
            .args(["--api", &format!("http://{}", self.api)])
            .output()
            .expect("running quarry-pool");
        assert!(
            out.status.success(),
            "quarry-pool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

impl Drop for PoolProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
