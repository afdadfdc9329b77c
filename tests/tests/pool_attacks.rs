//! Attacks on a public pool, each from its own loopback address while an honest
//! miner on 127.0.0.1 keeps mining: every honest share must be acknowledged, the
//! attacker throttled, dropped or banned, and the pool's memory bounded.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_protocol::Extranonce;
use quarry_tests::grind::grind;
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const HONEST: &str = "honest.rig";
/// The most the pool may grow during an attack.
const MAX_RSS_GROWTH_KIB: u64 = 64 * 1024;
/// An honest rig's share pace: 50 shares/s, half the default submit rate.
const HONEST_PACE: Duration = Duration::from_millis(20);

fn attacker(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

fn start(dir: &tempfile::TempDir, extra: &[&str]) -> PoolProcess {
    // One fixed, easy share difficulty: the honest miner's pace must not make
    // vardiff raise it beyond what a debug build grinds quickly.
    let mut args = vec!["--start-difficulty", "1e-7", "--max-difficulty", "1e-7"];
    args.extend_from_slice(&["--chain-difficulty", "1"]);
    args.extend_from_slice(extra);
    PoolProcess::start(dir.path(), &args)
}

/// What the honest miner saw.
struct Honest {
    acked: u64,
    sent: u64,
    latencies: Vec<Duration>,
}

/// Mines honestly (one share at a time, waiting for each reply, at most one
/// share per [`HONEST_PACE`], well inside the default submit budget) until `stop`.
async fn honest_miner(addr: SocketAddr, stop: Arc<AtomicBool>) -> Honest {
    let mut client = Client::tcp(addr).await;
    client.handshake(HONEST).await;
    let mut report = Honest {
        acked: 0,
        sent: 0,
        latencies: Vec::new(),
    };
    let mut counter = 0u64;
    let mut pace = tokio::time::interval(HONEST_PACE);
    // At least a few shares, and on until the attack is over.
    while report.sent < 20 || !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        counter += 1;
        let share = client.valid_share(HONEST, counter);
        let started = Instant::now();
        let reply = client.request("mining.submit", share).await;
        report.sent += 1;
        if reply["result"] == json!(true) {
            report.acked += 1;
            report.latencies.push(started.elapsed());
        }
    }
    report
}

/// The median acknowledgement latency a miner saw.
fn median(report: &Honest) -> Duration {
    let mut latencies = report.latencies.clone();
    latencies.sort();
    latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default()
}

/// Runs `attack` while the honest miner mines; checks the honest miner lost
/// nothing and the pool's memory stayed bounded. Reports (not asserts: timings
/// do not belong in tests) the honest miner's latency idle and under attack.
async fn under_attack<F, Fut>(pool: &PoolProcess, name: &str, attack: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let idle = honest_miner(pool.tcp, Arc::new(AtomicBool::new(true))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let honest = tokio::spawn(honest_miner(pool.tcp, stop.clone()));
    let rss_before = pool.rss_kib();
    attack().await;
    let rss_after = pool.rss_kib();
    stop.store(true, Ordering::Relaxed);
    let report = honest.await.expect("honest miner");
    eprintln!(
        "{name}: honest miner {} of {} acknowledged, median ack {:?} (idle {:?}); pool RSS {} -> {} KiB",
        report.acked,
        report.sent,
        median(&report),
        median(&idle),
        rss_before,
        rss_after
    );
    assert_eq!(
        report.acked, report.sent,
        "{name}: an honest share was not acknowledged"
    );
    assert!(
        rss_after < rss_before + MAX_RSS_GROWTH_KIB,
        "{name}: pool memory grew from {rss_before} to {rss_after} KiB"
    );
    let worker = pool.api_get("/api/workers/honest.rig");
    assert_eq!(worker["rejected"], json!(0), "{name}: {worker}");
}

fn banned(pool: &PoolProcess, ip: IpAddr) -> bool {
    let bans = pool.api_get("/api/bans");
    bans["bans"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["ip"] == json!(ip.to_string()))
}

/// Reads until the pool closes the connection; returns the lines seen.
async fn until_closed(client: &mut Client) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Some(line) = client.recv_or_closed().await {
        seen.push(line);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_submits_authorizes_and_junk_are_throttled_then_banned() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir, &["--violations-before-ban", "50"]);
    for (n, name, line) in [
        (
            2,
            "submit flood",
            r#"{"id":1,"method":"mining.submit","params":["x.y","1","00000000","00000000","00000000"]}"#,
        ),
        (
            3,
            "authorize flood",
            r#"{"id":1,"method":"mining.authorize","params":["x.y","p"]}"#,
        ),
        (4, "junk lines", "this is not JSON at all"),
    ] {
        let ip = attacker(n);
        under_attack(&pool, name, || async {
            let mut client = Client::tcp_from(ip, pool.tcp).await.unwrap();
            client.request("mining.subscribe", json!([])).await;
            client
                .request("mining.authorize", json!(["x.y", "p"]))
                .await;
            for _ in 0..5_000 {
                if client.send_raw_checked(line).await.is_err() {
                    break;
                }
            }
            let seen = until_closed(&mut client).await;
            assert!(
                seen.iter()
                    .any(|v| v["error"] == json!([20, "rate limit exceeded", null])),
                "{name}: no rate-limit error before the ban"
            );
        })
        .await;
        assert!(banned(&pool, ip), "{name}: attacker not banned");
        assert!(
            Client::tcp_from(ip, pool.tcp)
                .await
                .unwrap()
                .recv_or_closed()
                .await
                .is_none(),
            "{name}: ban not enforced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_line_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir, &[]);
    under_attack(&pool, "endless line", || async {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(attacker(5), 0)).unwrap();
        let mut stream = socket.connect(pool.tcp).await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut closed = false;
        for _ in 0..1024 {
            if stream.write_all(&chunk).await.is_err() {
                closed = true;
                break;
            }
        }
        if !closed {
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await;
            closed = matches!(read, Ok(Ok(0) | Err(_)));
        }
        assert!(closed, "a 64 MiB line did not close the connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_tls_handshakes_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir, &["--handshake-timeout", "1"]);
    under_attack(&pool, "slowloris TLS", || async {
        let mut idle = Vec::new();
        for _ in 0..15 {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(attacker(6), 0)).unwrap();
            let mut stream = socket.connect(pool.tls).await.unwrap();
            stream.write_all(&[0x16, 0x03]).await.unwrap(); // half a TLS record header
            idle.push(stream);
        }
        for mut stream in idle {
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0) | Err(_))),
                "an idle handshake was not closed"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(
        &dir,
        &["--message-rate", "1000000", "--message-burst", "1000000"],
    );
    under_attack(&pool, "never reads", || async {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(attacker(7), 0)).unwrap();
        let mut stream = socket.connect(pool.tcp).await.unwrap();
        // Each request's reply echoes a 15 KiB id: replies pile up on the pool's side.
        let id = "i".repeat(15_000);
        let line = format!(
            "{{\"id\":\"{id}\",\"method\":\"mining.extranonce.subscribe\",\"params\":[]}}\n"
        );
        let mut dropped = false;
        for _ in 0..20_000 {
            let write =
                tokio::time::timeout(Duration::from_secs(30), stream.write_all(line.as_bytes()))
                    .await;
            match write {
                Ok(Ok(())) => {}
                // Our writes stall once the pool stops reading us; then it must drop us.
                Ok(Err(_)) => {
                    dropped = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if !dropped {
            // Drain: the connection must end (reset or EOF) rather than stay open.
            let mut buf = vec![0u8; 1 << 20];
            dropped = loop {
                match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break true,
                    Ok(Ok(_)) => continue,
                    Err(_) => break false,
                }
            };
        }
        assert!(dropped, "a client that never reads was kept");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_from_one_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(
        &dir,
        &["--connection-burst", "10", "--connection-rate", "1"],
    );
    under_attack(&pool, "connection storm", || async {
        let mut served = 0;
        let mut held = Vec::new();
        for _ in 0..200 {
            let Ok(mut client) = Client::tcp_from(attacker(8), pool.tcp).await else {
                continue;
            };
            client
                .send_raw(r#"{"id":1,"method":"mining.subscribe","params":[]}"#)
                .await;
            if client.recv_or_closed().await.is_some() {
                served += 1;
                held.push(client);
            }
        }
        assert!(served <= 11, "{served} connections served from one address");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_connections_wait() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the honest miner and three more.
    let pool = start(&dir, &["--max-connections", "4"]);
    under_attack(&pool, "connection cap", || async {
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut client = Client::tcp_from(attacker(9), pool.tcp).await.unwrap();
            client.request("mining.subscribe", json!([])).await;
            held.push(client);
        }
        // The fifth connection is queued, not served, until a slot frees.
        let mut waiting = Client::tcp_from(attacker(10), pool.tcp).await.unwrap();
        waiting
            .send_raw(r#"{"id":1,"method":"mining.subscribe","params":[]}"#)
            .await;
        held.pop();
        let reply = waiting.recv().await;
        assert_eq!(reply["id"], json!(1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_forger_is_banned() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir, &[]);
    under_attack(&pool, "share forger", || async {
        let mut client = Client::tcp_from(attacker(11), pool.tcp).await.unwrap();
        client.handshake("forger.x").await;
        let job = client.job.clone().unwrap();
        let en1 = client.extranonce1.unwrap();
        let mut rejected = 0;
        for i in 0..200u64 {
            // Hashes that miss the share target: all low-difficulty forgeries.
            let forged = grind(&job, en1, Extranonce::from_counter(i, 4), client.job_difficulty, 0, false);
            let line = json!({"id": i + 10, "method": "mining.submit", "params": forged.params("forger.x", &job)});
            if client.send_raw_checked(&line.to_string()).await.is_err() {
                break;
            }
            match client.recv_or_closed().await {
                Some(reply) if reply["error"][0] == json!(23) => rejected += 1,
                Some(_) => {}
                None => break,
            }
        }
        assert!((100..200).contains(&rejected), "{rejected} forgeries answered before the ban");
    })
    .await;
    assert!(banned(&pool, attacker(11)));
}
