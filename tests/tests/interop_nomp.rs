//! `quarry-miner` against an independent Stratum pool over TLS with a pinned
//! certificate: stratum-pool-sha256 2.1.3 (npm; NOMP's node-stratum-pool line,
//! `tests/interop/nomp/pool.js`) behind Debian's stunnel4, fed mainnet-shaped
//! templates (segwit commitment, 3,000 transactions: 12 merkle branches) by
//! `tests/interop/nomp/node.py` from a real Bitcoin Core template. The pool
//! judges every share itself; clean jobs come with each new previous block,
//! non-clean rebroadcasts in between, and its variable difficulty moves.
//!
//! Needs `node`, `python3`, `stunnel4` and `npm ci --prefix tests/interop/nomp`.
//! Without them it says so and passes, unless `QUARRY_REQUIRE_INTEROP` is set
//! (as in CI), when it fails.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quarry_miner::tls::Fingerprint;
use quarry_tests::process::forward;
use quarry_tests::{Killed, MinerProcess};
use serde_json::Value;

/// Valid shares, previous blocks (clean jobs) and difficulties the run must span.
const SHARES: usize = 100;
const HEIGHTS: usize = 2;
const DIFFICULTIES: usize = 2;
/// Seconds between new previous blocks in the stand-in node.
const BLOCK_SECONDS: &str = "20";

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/nomp")
}

/// Whether everything the test needs is here; if not, why.
fn missing() -> Option<String> {
    for (program, arg) in [
        ("node", "--version"),
        ("python3", "--version"),
        ("stunnel4", "-version"),
    ] {
        let found = Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{program}` is not installed"));
        }
    }
    let pool = interop_dir().join("node_modules/stratum-pool-sha256");
    (!pool.exists()).then(|| {
        format!(
            "{} is missing: run `npm ci --prefix tests/interop/nomp`",
            pool.display()
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns `command`; returns it with channels of its stdout and stderr lines.
fn spawn(mut command: Command) -> (Killed, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning a helper");
    let (out_tx, stdout) = mpsc::channel();
    let (err_tx, stderr) = mpsc::channel();
    forward(child.stdout.take().unwrap(), out_tx);
    forward(child.stderr.take().unwrap(), err_tx);
    (Killed(child), stdout, stderr)
}

/// Reads `lines` until one contains `needle`; panics naming `what` after 60 s.
fn wait_line(lines: &mpsc::Receiver<String>, needle: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "{what} did not print {needle:?}; it printed:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// What the pool said of the shares it judged.
#[derive(Default)]
struct Judged {
    valid: usize,
    invalid: Vec<Value>,
    heights: HashSet<u64>,
    jobs: HashSet<String>,
    difficulties: HashSet<String>,
}

impl Judged {
    fn add(&mut self, share: Value) {
        if share["valid"] == true {
            self.valid += 1;
            self.heights.extend(share["height"].as_u64());
            self.jobs.extend(share["job"].as_str().map(str::to_owned));
            self.difficulties.insert(share["difficulty"].to_string());
        } else {
            self.invalid.push(share);
        }
    }

    fn enough(&self) -> bool {
        self.valid >= SHARES
            && self.heights.len() >= HEIGHTS
            && self.difficulties.len() >= DIFFICULTIES
            // More jobs than previous blocks: shares on non-clean jobs too.
            && self.jobs.len() > self.heights.len()
    }
}

#[test]
fn quarry_miner_mines_for_an_independent_pool_over_pinned_tls() {
    if let Some(why) = missing() {
        quarry_tests::skip_unless_required("QUARRY_REQUIRE_INTEROP", &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bitcoind/gbt-many.json");

    let mut node = Command::new("python3");
    node.arg(interop_dir().join("node.py"))
        .arg(&fixture)
        .args(["0", BLOCK_SECONDS]);
    let (_node, node_out, _) = spawn(node);
    let node_port = wait_line(&node_out, "", "node.py");

    let stratum_port = free_port();
    let mut pool = Command::new("node");
    pool.current_dir(interop_dir())
        .args(["pool.js", &stratum_port.to_string(), node_port.trim()]);
    let (pool, shares, pool_log) = spawn(pool);
    wait_line(&pool_log, "ready", "the pool");

    // TLS in front of it, as pools without their own TLS offer it.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let fingerprint = Fingerprint::of(cert.der()).to_string();
    let pem = dir.path().join("stunnel.pem");
    std::fs::write(&pem, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    let tls_port = free_port();
    let conf = dir.path().join("stunnel.conf");
    let mut file = std::fs::File::create(&conf).unwrap();
    write!(
        file,
        "foreground = yes\npid =\nsslVersionMin = TLSv1.2\n[stratum-tls]\naccept = 127.0.0.1:{tls_port}\n\
         connect = 127.0.0.1:{stratum_port}\ncert = {}\n",
        pem.display()
    )
    .unwrap();
    let mut tunnel = Command::new("stunnel4");
    tunnel.arg(&conf);
    let (_tunnel, _, tunnel_log) = spawn(tunnel);
    wait_line(&tunnel_log, "Configuration successful", "stunnel4");
    let url = format!("stratum+ssl://127.0.0.1:{tls_port}");

    // A wrong pin: refused before any Stratum is spoken.
    let wrong = "00".repeat(32);
    let mut refused = MinerProcess::start(&[
        "-o",
        &url,
        "-u",
        "nomp.wrong",
        "-t",
        "1",
        "--tls-fingerprint",
        &wrong,
    ]);
    let line = refused.wait_for(&["does not match the pinned"], Duration::from_secs(30));
    assert!(line.is_some(), "{}", refused.transcript());
    drop(refused);

    let mut miner = MinerProcess::start(&[
        "-o",
        &url,
        "-u",
        "nomp.rig",
        "-t",
        "1",
        "--tls-fingerprint",
        &fingerprint,
    ]);
    let mut judged = Judged::default();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !judged.enough() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = shares.recv_timeout(left) else {
            miner.drain();
            panic!(
                "the pool judged {} valid shares over {} heights, {} jobs, {} difficulties; invalid: {:?}\nminer:\n{}",
                judged.valid,
                judged.heights.len(),
                judged.jobs.len(),
                judged.difficulties.len(),
                judged.invalid,
                miner.transcript()
            );
        };
        if let Ok(share) = serde_json::from_str::<Value>(&line) {
            judged.add(share);
        }
    }
    drop(miner);
    drop(pool);

    let total = judged.valid + judged.invalid.len();
    eprintln!(
        "independent pool: {} of {total} shares valid, {} heights, {} jobs, difficulties {:?}; invalid: {:?}",
        judged.valid,
        judged.heights.len(),
        judged.jobs.len(),
        judged.difficulties,
        judged.invalid
    );
    assert!(
        judged.valid * 100 >= total * 99,
        "invalid: {:?}",
        judged.invalid
    );
    let malformed: Vec<_> = judged
        .invalid
        .iter()
        .filter(|s| {
            s["error"]
                .as_str()
                .is_some_and(|e| e.contains("incorrect size") || e.contains("out of range"))
        })
        .collect();
    assert!(malformed.is_empty(), "malformed shares: {malformed:?}");
}
