//! Three `quarry-pool` nodes on 127.0.0.2-4 sharing one real PostgreSQL database: node
//! status, one ledger, failover of real miners after a `kill -9`, shared bans, and nodes
//! refused for other settings or a newer schema.

use std::time::{Duration, Instant};

use quarry_protocol::target::hashrate;
use quarry_protocol::Extranonce;
use quarry_tests::client::TIMEOUT;
use quarry_tests::grind::grind;
use quarry_tests::miner::{accepted_above, poll, worker};
use quarry_tests::postgres::TestDatabase;
use quarry_tests::{Client, MinerProcess, PoolProcess};
use serde_json::{json, Value};

/// Easy shares for raw clients and miners. Clients on 127.0.0.1 are exempt from limits
/// (a raw client's pipelined burst would be banned, and a ban holds on every node).
const ARGS: &[&str] = &[
    "--start-difficulty",
    "1e-7",
    "--min-difficulty",
    "1e-7",
    "--share-interval",
    "0.001",
    "--admin-token",
    "s3cret",
    "--allow-cidr",
    "127.0.0.1/32",
];

/// A chain hard enough that no block interrupts a share stream.
const HARD_CHAIN: &[&str] = &["--chain-difficulty", "1"];

/// Starts a node with plain Stratum on `host`, its data in a directory of its own.
fn node(db: &TestDatabase, host: &str, dir: &tempfile::TempDir, extra: &[&str]) -> PoolProcess {
    PoolProcess::start_on(dir.path(), &format!("{host}:0"), &args(db, extra))
}

fn args<'a>(db: &'a TestDatabase, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = ARGS.to_vec();
    args.extend(["--database", db.url.as_str()]);
    args.extend(extra);
    args
}

/// `N` nodes on 127.0.0.2 on, each with its data in a directory of its own, once all
/// report ok (and `/api/nodes` as the last one then answers).
fn start_nodes<const N: usize>(
    db: &TestDatabase,
    extra: &[&str],
) -> ([tempfile::TempDir; N], [PoolProcess; N], Value) {
    let dirs: [tempfile::TempDir; N] = std::array::from_fn(|_| tempfile::tempdir().unwrap());
    let nodes: [PoolProcess; N] =
        std::array::from_fn(|i| node(db, &format!("127.0.0.{}", i + 2), &dirs[i], extra));
    let status = wait_for_ok_nodes(&nodes[N - 1], N);
    (dirs, nodes, status)
}

/// Polls `pool`'s `/api/nodes` until `ok` nodes report ok; returns the answer.
fn wait_for_ok_nodes(pool: &PoolProcess, ok: usize) -> Value {
    poll(Duration::from_secs(30), || {
        let nodes = pool.api_get("/api/nodes");
        let count = nodes["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["status"] == "ok")
            .count();
        (count == ok).then_some(nodes)
    })
    .unwrap_or_else(|| panic!("{ok} ok nodes: {}", pool.api_get("/api/nodes")))
}

/// Sends `count` valid shares from `first` on, without waiting for replies.
async fn send_shares(client: &mut Client, worker: &str, first: u64, count: u64) {
    let job = client.job.clone().unwrap();
    let en1 = client.extranonce1.unwrap();
    for i in first..first + count {
        let share = grind(
            &job,
            en1,
            Extranonce::from_counter(i, 4),
            client.job_difficulty,
            0,
            true,
        );
        let line =
            json!({"id": i, "method": "mining.submit", "params": share.params(worker, &job)});
        client.send_raw(&line.to_string()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_ledger_and_a_kill_9_loses_nothing() {
    let Some(db) = TestDatabase::create("cluster_kill") else {
        return;
    };
    let (_dirs, [a, b, c], nodes) = start_nodes(&db, HARD_CHAIN);
    eprintln!("GET /api/nodes (three-node run): {nodes:#}");
    let ids: Vec<u64> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 1, 2], "each node holds its own id");
    let table = c.run_cli(&["nodes"]);
    assert_eq!(
        table.lines().filter(|l| l.contains(" ok ")).count(),
        3,
        "{table}"
    );

    // Each node's extranonce1s carry its id in the high byte.
    let mut seen = Vec::new();
    for pool in [&a, &b, &c] {
        let mut client = Client::tcp(pool.tcp).await;
        client.handshake("erin.probe").await;
        seen.push(client.extranonce1.unwrap().as_bytes()[0]);
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2]);

    // A real miner on node A, with node B next in its list.
    let mut miner = MinerProcess::start(&[
        "-o",
        &format!("stratum+tcp://{}", a.tcp),
        "-o",
        &format!("stratum+tcp://{}", b.tcp),
        "-u",
        "erin.rig",
        "-t",
        "1",
        "--share-interval",
        "0.5",
    ]);
    assert!(
        accepted_above(&a, "erin.rig", 0, Duration::from_secs(60)).is_some(),
        "the miner mines on node A\n{}",
        miner.transcript()
    );

    // A stream of shares into node A, killed while its acknowledgements arrive.
    let mut client = Client::tcp(a.tcp).await;
    client.handshake("dave.x").await;
    const SENT: u64 = 2_000;
    send_shares(&mut client, "dave.x", 0, SENT).await;
    let mut acked = 0u64;
    while acked < 300 {
        let Some(reply) = client.recv_within(TIMEOUT).await else {
            panic!(
                "{acked} of {SENT} shares acknowledged, then nothing from node A for \
                 {TIMEOUT:?}; its view of dave.x: {:?}",
                worker(&a, "dave.x")
            );
        };
        if reply["result"] == json!(true) {
            acked += 1;
        }
    }
    let killed = Instant::now();
    a.kill9();
    while let Some(reply) = client.recv_or_closed().await {
        if reply["result"] == json!(true) {
            acked += 1;
        }
    }

    // The miner moves to node B and mines there within 10 s.
    let b_url = format!("stratum+tcp://{}", b.tcp);
    let deadline = Duration::from_secs(10);
    let moved = miner.wait_for(&["connecting", &b_url], deadline);
    let mined = moved.and_then(|_| {
        miner.wait_for(
            &["share accepted"],
            deadline.saturating_sub(killed.elapsed()),
        )
    });
    assert!(
        mined.is_some(),
        "the miner mined on node B within 10 s of the kill\n{}",
        miner.transcript()
    );
    let failover = killed.elapsed();

    // Every acknowledged share is in the ledger, counted once: the totals equal the rows.
    let ledger = |sql: &str| db.query(sql)[0].parse::<u64>().unwrap();
    let total = ledger("SELECT accepted FROM workers WHERE name = 'dave.x'");
    let rows = ledger(
        "SELECT count(*) FROM shares JOIN workers ON workers.id = worker_id \
         WHERE workers.name = 'dave.x'",
    );
    eprintln!(
        "kill -9 mid-stream: {SENT} sent, {acked} acknowledged, {rows} in the ledger; \
         miner mining on node B {failover:?} after the kill"
    );
    assert_eq!(
        total, rows,
        "a worker's total counts each stored share once"
    );
    assert!(rows >= acked, "{acked} acknowledged, {rows} stored");
    assert!(rows <= SENT);

    // The surviving nodes show the cluster's totals.
    for pool in [&b, &c] {
        let shown = poll(Duration::from_secs(10), || {
            let accepted = worker(pool, "dave.x")?["accepted"].as_u64()?;
            (accepted == total).then_some(accepted)
        });
        assert_eq!(shown, Some(total), "node shows the ledger's total");
    }
    // Node A's heartbeats stopped: it is dead to the others.
    let statuses = poll(Duration::from_secs(30), || {
        let nodes = b.api_get("/api/nodes");
        let dead = nodes["nodes"]
            .as_array()?
            .iter()
            .any(|n| n["id"] == 0 && n["status"] == "dead");
        dead.then_some(nodes)
    });
    assert!(statuses.is_some(), "{}", b.api_get("/api/nodes"));
    drop(miner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_on_one_node_holds_on_every_node() {
    let Some(db) = TestDatabase::create("cluster_bans") else {
        return;
    };
    let (_dirs, [a, b], _) = start_nodes(&db, HARD_CHAIN);
    // A rig on 127.0.0.9 mining on node B.
    let rig_ip = "127.0.0.9".parse().unwrap();
    let mut rig = Client::tcp_from(rig_ip, b.tcp).await.unwrap();
    rig.handshake("mallory.rig").await;

    let url = format!("http://{}/api/bans", a.api);
    let response = ureq::post(&url)
        .set("authorization", "Bearer s3cret")
        .send_json(json!({"ip": "127.0.0.9", "reason": "abuse seen on node A", "seconds": 600}))
        .expect("ban on node A");
    assert!(
        (200..300).contains(&response.status()),
        "{}",
        response.status()
    );

    let on_b = poll(Duration::from_secs(15), || {
        let bans = b.api_get("/api/bans");
        let ban = bans["bans"]
            .as_array()?
            .iter()
            .find(|b| b["ip"] == "127.0.0.9")?
            .clone();
        Some(ban)
    });
    assert_eq!(
        on_b.expect("node B enforces node A's ban")["reason"],
        "abuse seen on node A"
    );
    // Node B closed the rig's session and refuses it at the door.
    while rig.recv_or_closed().await.is_some() {}
    let mut again = Client::tcp_from(rig_ip, b.tcp).await.unwrap();
    assert!(
        again.recv_or_closed().await.is_none(),
        "a banned address is refused"
    );

    // Lifted on B, lifted everywhere.
    let lifted = ureq::delete(&format!("http://{}/api/bans/127.0.0.9", b.api))
        .set("authorization", "Bearer s3cret")
        .call()
        .expect("unban on node B");
    assert!((200..300).contains(&lifted.status()), "{}", lifted.status());
    let gone = poll(Duration::from_secs(15), || {
        let bans = a.api_get("/api/bans");
        bans["bans"].as_array()?.is_empty().then_some(())
    });
    assert!(gone.is_some(), "{}", a.api_get("/api/bans"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_found_on_any_node_move_every_node_to_the_new_tip() {
    let Some(db) = TestDatabase::create("cluster_chain") else {
        return;
    };
    // A chain easy enough that every share is a block.
    let easy = ["--chain-difficulty", "1e-7", "--retarget-interval", "1000"];
    let (_dirs, [a, b], _) = start_nodes(&db, &easy);
    let mut on_a = Client::tcp(a.tcp).await;
    on_a.handshake("frank.a").await;
    let mut on_b = Client::tcp(b.tcp).await;
    on_b.handshake("frank.b").await;

    for round in 0..3u64 {
        // Alternate the finder: a block on one node must reach the other as a clean job.
        let (finder, follower) = if round % 2 == 0 {
            (&mut on_a, &mut on_b)
        } else {
            (&mut on_b, &mut on_a)
        };
        let worker = if round % 2 == 0 { "frank.a" } else { "frank.b" };
        let tip_before = follower.job.as_ref().unwrap().prevhash.to_string();
        let reply = finder.submit_valid(worker, round).await;
        assert_eq!(reply["result"], json!(true), "{reply}");
        let found = Instant::now();
        let clean = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let notify = follower.next_notification("mining.notify").await;
                if notify["params"][8] == json!(true) {
                    return notify;
                }
            }
        })
        .await
        .expect("the other node sends a clean job within a few seconds");
        eprintln!(
            "block {} found on one node: clean job on the other after {:?}",
            round + 1,
            found.elapsed()
        );
        assert_ne!(
            clean["params"][1].as_str(),
            Some(tip_before.as_str()),
            "the clean job builds on the new tip"
        );
        finder.job = None;
        while finder.job.is_none() {
            finder.next_notification("mining.notify").await;
        }
    }
    let heights = db.query("SELECT max(height) FROM chain");
    assert_eq!(heights, ["3"]);
    let nodes = db.query("SELECT string_agg(node::text, ',' ORDER BY height) FROM blocks");
    assert_eq!(
        nodes,
        ["0,1,0"],
        "each block records the node that found it"
    );
}

#[test]
fn a_node_with_other_settings_or_a_newer_schema_is_refused() {
    let Some(db) = TestDatabase::create("cluster_refuse") else {
        return;
    };
    let (first_dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = node(&db, "127.0.0.2", &first_dir, &[]);
    wait_for_ok_nodes(&first, 1);

    let error = PoolProcess::start_error(other_dir.path(), &args(&db, &["--pool-tag", "/other/"]));
    assert!(
        error.contains("settings differ from the cluster's") && error.contains("pool_tag"),
        "{error}"
    );

    let schema_before = db.query("SELECT version FROM quarry_schema");
    db.query("UPDATE quarry_schema SET version = 99 RETURNING version");
    let error = PoolProcess::start_error(other_dir.path(), &args(&db, &[]));
    assert!(
        error.contains("schema version 99") && error.contains("upgrade this node"),
        "{error}"
    );
    // Refusing wrote nothing: one node row, the schema version as it was left.
    assert_eq!(db.query("SELECT count(*) FROM nodes"), ["1"]);
    assert_eq!(db.query("SELECT version FROM quarry_schema"), ["99"]);
    db.query(&format!(
        "UPDATE quarry_schema SET version = {} RETURNING version",
        schema_before[0]
    ));
    drop(first);
}

/// A worker mining on node A shows its hashrate on node B, in the worker's numbers, the
/// pool's and the pool's chart: node B reads node A's minute rows once A has written them
/// (up to a minute and a half after the shares).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_one_node_shows_its_hashrate_on_every_node() {
    let Some(db) = TestDatabase::create("cluster_hashrate") else {
        return;
    };
    let (_dirs, [a, b], _) = start_nodes(&db, HARD_CHAIN);
    let mut client = Client::tcp(a.tcp).await;
    client.handshake("carol.rig").await;
    send_shares(&mut client, "carol.rig", 0, 200).await;
    let on_a = poll(Duration::from_secs(30), || {
        let worker = a.api_get("/api/workers/carol.rig");
        (worker["accepted"] == 200).then_some(worker)
    })
    .expect("node A acknowledges 200 shares");
    let difficulty = on_a["accepted_difficulty"].as_f64().unwrap();
    // Node B averages A's work over what A's rows cover: one to ten minutes.
    let (low, high) = (hashrate(difficulty, 600.0), hashrate(difficulty, 60.0));
    let started = Instant::now();
    let (worker, pool) = poll(Duration::from_secs(240), || {
        let workers = b.api_get("/api/workers");
        let carol = workers["workers"]
            .as_array()?
            .iter()
            .find(|w| w["worker"] == "carol.rig")?;
        let worker = carol["hashrate_10m"].as_f64()?;
        let pool = b.api_get("/api/pool")["hashrate_10m"].as_f64()?;
        let within = |rate: f64| (low..=high).contains(&rate);
        (within(worker) && within(pool)).then_some((worker, pool))
    })
    .unwrap_or_else(|| {
        panic!(
            "node B shows carol's hashrate from node A's rows ({low:.0}..{high:.0} H/s): {} {}",
            b.api_get("/api/workers"),
            b.api_get("/api/pool")
        )
    });
    println!(
        "node A's worker on node B after {:?}: worker {worker:.0} H/s, pool {pool:.0} H/s \
         (node A: {} H/s)",
        started.elapsed(),
        on_a["hashrate_10m"]
    );
    // The chart on node B holds all of A's work.
    let chart = b.api_get("/api/pool/history?range=1h");
    let work: f64 = chart["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["hashrate"].as_f64().unwrap() * p["seconds"].as_f64().unwrap())
        .sum::<f64>()
        / hashrate(1.0, 1.0);
    assert!(
        (work - difficulty).abs() / difficulty < 1e-6,
        "{work} vs {difficulty}: {chart}"
    );
    // Node A's heartbeat reports its own hashrate, node B's none.
    let nodes = b.api_get("/api/nodes");
    let rates: Vec<f64> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["hashrate"].as_f64().unwrap())
        .collect();
    assert_eq!(rates.iter().filter(|r| **r > 0.0).count(), 1, "{nodes}");
}
