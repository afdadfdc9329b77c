//! Acknowledged shares survive `kill -9`; the API's counts equal the acks.

use quarry_protocol::Extranonce;
use quarry_tests::grind::grind;
use quarry_tests::{Client, PoolProcess};
use serde_json::json;

const ARGS: &[&str] = &[
    "--start-difficulty",
    "1e-7",
    "--chain-difficulty",
    "1",
    "--share-interval",
    "0.001",
];

/// Sends `count` valid shares without waiting, then reads every reply; returns
/// how many were acknowledged with `true`, stopping early if the pool goes away.
async fn pipeline(client: &mut Client, worker: &str, first: u64, count: u64) -> (u64, u64) {
    let job = client.job.clone().unwrap();
    let en1 = client.extranonce1.unwrap();
    let difficulty = client.job_difficulty;
    for i in 0..count {
        let share = grind(
            &job,
            en1,
            Extranonce::from_counter(first + i, 4),
            difficulty,
            0,
            true,
        );
        let line = json!({"id": 1000 + first + i, "method": "mining.submit", "params": share.params(worker, &job)});
        client.send_raw(&line.to_string()).await;
    }
    let (mut acked, mut replies) = (0, 0);
    while replies < count {
        match client.recv_or_closed().await {
            None => break,
            Some(reply) if reply.get("method").is_some() => continue,
            Some(reply) => {
                replies += 1;
                if reply["result"] == json!(true) {
                    acked += 1;
                }
            }
        }
    }
    (acked, replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_counts_equal_acknowledgements_and_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(dir.path(), ARGS);
    let mut a = Client::tcp(pool.tcp).await;
    a.handshake("carol.a").await;
    let mut b = Client::tls(pool.tls, &pool.certificate_pem()).await;
    b.handshake("carol.b").await;
    let (acked_a, _) = pipeline(&mut a, "carol.a", 0, 200).await;
    let (acked_b, _) = pipeline(&mut b, "carol.b", 0, 150).await;
    assert_eq!((acked_a, acked_b), (200, 150));

    let workers = pool.api_get("/api/workers?account=carol");
    let accepted: Vec<_> = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["accepted"].clone())
        .collect();
    assert_eq!(accepted, vec![json!(200), json!(150)]);
    let table = pool.run_cli(&["workers"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("carol.a") && l.contains(" 200 ")),
        "{table}"
    );

    drop((a, b));
    assert!(pool.terminate().success());
    let pool = PoolProcess::start(dir.path(), ARGS);
    let worker = pool.api_get("/api/workers/carol.a");
    assert_eq!(worker["accepted"], json!(200));
    assert_eq!(pool.api_get("/api/pool")["accepted"], json!(350));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_share() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(dir.path(), ARGS);
    let mut client = Client::tcp(pool.tcp).await;
    client.handshake("dave.x").await;
    let (before, _) = pipeline(&mut client, "dave.x", 0, 100).await;
    assert_eq!(before, 100);

    // Queue many more shares, then kill the pool while their acks are arriving.
    let job = client.job.clone().unwrap();
    let en1 = client.extranonce1.unwrap();
    let difficulty = client.job_difficulty;
    for i in 100..1100u64 {
        let share = grind(
            &job,
            en1,
            Extranonce::from_counter(i, 4),
            difficulty,
            0,
            true,
        );
        let line =
            json!({"id": i, "method": "mining.submit", "params": share.params("dave.x", &job)});
        client.send_raw(&line.to_string()).await;
    }
    let mut acked = before;
    loop {
        let reply = client.recv().await;
        if reply["result"] == json!(true) {
            acked += 1;
        }
        if acked == before + 50 {
            break;
        }
    }
    pool.kill9();
    // Count the acks that were already on their way before the kill.
    while let Some(reply) = client.recv_or_closed().await {
        if reply["result"] == json!(true) {
            acked += 1;
        }
    }

    let pool = PoolProcess::start(dir.path(), ARGS);
    let worker = pool.api_get("/api/workers/dave.x");
    let accepted = worker["accepted"].as_u64().unwrap();
    assert!(
        accepted >= acked,
        "{acked} acknowledged, only {accepted} restored"
    );
    assert!(accepted <= 1100, "{accepted} restored, more than were sent");
}
