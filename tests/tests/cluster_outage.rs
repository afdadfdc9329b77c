//! A pool node whose PostgreSQL becomes unreachable (a proxy between them cuts every
//! connection). For 30 s: it never acknowledges a share it has not committed, keeps sending
//! jobs, and acknowledges again within seconds of the database's return, with every
//! acknowledged share stored once. For longer than its lease: it stops serving while the
//! database still counts the lease as its own, so no other node can have taken its id.
//! In its own test binary: nothing else runs meanwhile.

use std::time::{Duration, Instant};

use quarry_tests::miner::poll;
use quarry_tests::postgres::TestDatabase;
use quarry_tests::proxy::Proxy;
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};

const OUTAGE: Duration = Duration::from_secs(30);

/// The node's arguments: easy shares, a job every second, no limits for the test client.
fn args(url: &str) -> Vec<&str> {
    vec![
        "--database",
        url,
        "--start-difficulty",
        "1e-7",
        "--min-difficulty",
        "1e-7",
        "--chain-difficulty",
        "1",
        "--share-interval",
        "0.001",
        "--job-interval",
        "1",
        "--allow-cidr",
        "127.0.0.1/32",
    ]
}

/// Submits one valid share and waits for its reply; notifies meanwhile are counted.
async fn submit(client: &mut Client, counter: u64, notifies: &mut u64) -> Value {
    let params = client.valid_share("gail.rig", counter);
    let id = json!(counter + 1_000_000);
    client
        .send_raw(&json!({"id": id, "method": "mining.submit", "params": params}).to_string())
        .await;
    loop {
        let message = client.recv().await;
        if message["method"] == "mining.notify" {
            *notifies += 1;
        } else if message["id"] == id {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_never_yields_an_unrecorded_ack() {
    let Some(db) = TestDatabase::create("cluster_outage") else {
        return;
    };
    let proxy = Proxy::start(db.server()).await;
    let url = db.url_via(proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(dir.path(), &args(&url));
    let mut client = Client::tcp(pool.tcp).await;
    client.handshake("gail.rig").await;
    let (mut sent, mut acked, mut notifies) = (0u64, 0u64, 0u64);
    for _ in 0..100 {
        sent += 1;
        if submit(&mut client, sent, &mut notifies).await["result"] == json!(true) {
            acked += 1;
        }
    }
    assert_eq!(acked, 100);

    proxy.cut();
    let cut = Instant::now();
    let (mut acked_during, mut refused, mut notifies_during) = (0u64, 0u64, 0u64);
    while cut.elapsed() < OUTAGE {
        sent += 1;
        let reply = submit(&mut client, sent, &mut notifies_during).await;
        if reply["result"] == json!(true) {
            acked_during += 1;
        } else {
            assert_eq!(
                reply["error"][1], "share not recorded: pool storage error",
                "{reply}"
            );
            refused += 1;
        }
    }
    assert_eq!(
        acked_during, 0,
        "acknowledged while the database was unreachable"
    );
    assert!(refused > 0);
    assert!(
        notifies_during >= 10,
        "jobs kept flowing during the outage: {notifies_during} notifies in {OUTAGE:?}"
    );

    proxy.restore();
    let restored = Instant::now();
    let resumed = loop {
        sent += 1;
        if submit(&mut client, sent, &mut notifies).await["result"] == json!(true) {
            acked += 1;
            break restored.elapsed();
        }
        assert!(
            restored.elapsed() < Duration::from_secs(15),
            "no acknowledgement within 15 s of the database's return"
        );
    };
    for _ in 0..100 {
        sent += 1;
        if submit(&mut client, sent, &mut notifies).await["result"] == json!(true) {
            acked += 1;
        }
    }

    let ledger = |sql: &str| db.query(sql)[0].parse::<u64>().unwrap();
    let total = ledger("SELECT accepted FROM workers WHERE name = 'gail.rig'");
    let rows = ledger("SELECT count(*) FROM shares");
    eprintln!(
        "database unreachable {OUTAGE:?}: {refused} shares refused with a clear error, 0 \
         acknowledged, {notifies_during} jobs sent meanwhile; first acknowledgement {resumed:?} \
         after its return; {sent} sent, {acked} acknowledged, {rows} stored"
    );
    assert_eq!(
        total, rows,
        "the worker's total counts each stored share once"
    );
    assert!(rows >= acked, "{acked} acknowledged, {rows} stored");
    assert!(rows <= sent);
    // The node kept its id through the outage.
    assert_eq!(pool.api_get("/api/nodes")["nodes"][0]["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_past_its_lease_stops_serving_before_its_id_is_free() {
    let Some(db) = TestDatabase::create("cluster_partition") else {
        return;
    };
    let proxy = Proxy::start(db.server()).await;
    let url = db.url_via(proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    let mut pool = PoolProcess::start(dir.path(), &args(&url));
    let mut client = Client::tcp(pool.tcp).await;
    client.handshake("hank.rig").await;
    let joined = poll(Duration::from_secs(30), || {
        (pool.api_get("/api/nodes")["nodes"][0]["status"] == "ok").then_some(())
    });
    assert!(joined.is_some(), "{}", pool.api_get("/api/nodes"));

    proxy.cut();
    // The lease lasts 60 s from the last renewal; the node gives up 5 s before that.
    let status = pool.wait_exit(Duration::from_secs(90));
    let remaining_ms: f64 = db
        .query("SELECT extract(epoch FROM lease_until - now()) * 1000 FROM nodes WHERE id = 0")[0]
        .parse()
        .unwrap();
    let status = status.expect("the cut-off node stopped serving");
    assert!(!status.success(), "it exits with an error: {status}");
    assert!(
        remaining_ms > 0.0,
        "the database still held the lease for the node when it stopped ({remaining_ms} ms left)"
    );
    // Its miners were disconnected rather than left mining on a stopped node.
    while client.recv_or_closed().await.is_some() {}
    eprintln!("cut-off node stopped with {remaining_ms:.0} ms of its lease left");
}
