//! Interoperability with a Stratum V1 miner written elsewhere: `para miner`
//! (crates.io `para` 0.6.0, parasitepool's toolkit), over plain TCP and over TLS
//! (through Debian's stunnel4, which verifies the pool's certificate).
//!
//! Runs when `QUARRY_PARA` names a `para` binary
//! (`cargo install para --version 0.6.0 --locked`); otherwise it says so and
//! passes. TLS also needs `stunnel4` on the PATH.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quarry_tests::{Killed, PoolProcess};
use serde_json::Value;

/// para insists that the account part is a Bitcoin address.
const ADDRESS: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
/// Shares each run must see acknowledged.
const SHARES: u64 = 150;

fn para_binary() -> Option<String> {
    match std::env::var("QUARRY_PARA") {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            eprintln!("skipped: set QUARRY_PARA to a `para` 0.6.0 binary to run the interoperability test");
            None
        }
    }
}

fn mine(para: &str, addr: SocketAddr, worker: &str) -> Killed {
    Killed(
        Command::new(para)
            .args([
                "miner",
                &addr.to_string(),
                "--username",
                worker,
                "--cpu-cores",
                "1",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting para"),
    )
}

/// Polls the pool's API until `worker` has `SHARES` accepted shares; returns it.
fn wait_for_shares(pool: &PoolProcess, worker: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let workers = pool.api_get(&format!("/api/workers?account={ADDRESS}"));
        let found = workers["workers"]
            .as_array()
            .and_then(|all| all.iter().find(|w| w["worker"] == worker).cloned());
        if let Some(w) = found {
            if w["accepted"].as_u64().unwrap_or(0) >= SHARES {
                return w;
            }
        }
        assert!(
            Instant::now() < deadline,
            "para did not get {SHARES} shares accepted in time"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_healthy(worker: &Value) {
    let accepted = worker["accepted"].as_u64().unwrap();
    let rejected = worker["rejected"].as_u64().unwrap();
    let ratio = accepted as f64 / (accepted + rejected) as f64;
    eprintln!(
        "{}: {accepted} accepted, {rejected} rejected ({:.2}%)",
        worker["worker"],
        ratio * 100.0
    );
    assert!(ratio >= 0.99, "{worker}");
    assert_eq!(worker["rejected_by_reason"]["malformed"], 0, "{worker}");
}

#[test]
fn para_miner_over_tcp_and_tls() {
    let Some(para) = para_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(
        dir.path(),
        &[
            "--start-difficulty",
            "0.001",
            "--chain-difficulty",
            "1",
            "--share-interval",
            "1",
        ],
    );

    let tcp_worker = format!("{ADDRESS}.tcp");
    let miner = mine(&para, pool.tcp, &tcp_worker);
    let worker = wait_for_shares(&pool, &tcp_worker);
    drop(miner);
    assert_healthy(&worker);

    if Command::new("stunnel4")
        .arg("-version")
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped TLS: stunnel4 is not installed");
        return;
    }
    let cert = dir.path().join("tls-cert.pem");
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tunnel_addr = local.local_addr().unwrap();
    drop(local);
    let conf = dir.path().join("stunnel.conf");
    let mut file = std::fs::File::create(&conf).unwrap();
    write!(
        file,
        "foreground = yes\npid =\n[stratum-tls]\nclient = yes\naccept = {tunnel_addr}\nconnect = {}\n\
         verifyPeer = yes\nCAfile = {}\ncheckHost = localhost\n",
        pool.tls,
        cert.display()
    )
    .unwrap();
    let _tunnel = Killed(
        Command::new("stunnel4")
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
            .expect("starting stunnel4"),
    );
    // para gives up if its first connection is refused: wait for the tunnel.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(tunnel_addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "stunnel4 did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let tls_worker = format!("{ADDRESS}.tls");
    let miner = mine(&para, tunnel_addr, &tls_worker);
    let worker = wait_for_shares(&pool, &tls_worker);
    drop(miner);
    assert_healthy(&worker);
}
