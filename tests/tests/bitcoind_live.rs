//! The pool in front of a real Bitcoin Core regtest node, when `BITCOIND` names a
//! `bitcoind` binary: every block the pool finds is accepted, carries the mempool's
//! transactions and pays the payout address, the node's block count grows by exactly
//! the blocks the pool reports, a block mined on the node reaches the miner as a clean
//! job, and the pool survives the node restarting. Then the same with the real CPU
//! miners (`QUARRY_MINERD`, `QUARRY_CPUMINER_OPT`) doing the mining, the node
//! restarted mid-run: the node's height grows by exactly the blocks the pool reports
//! accepted, and every block it did not accept is reported with the node's reason.
//! Skipped when `BITCOIND` (or a miner's variable) is unset.

use std::path::Path;
use std::time::{Duration, Instant};

use bitcoin::{Address, Txid};
use quarry_tests::miner::poll;
use quarry_tests::peers::{Peer, CPUMINER_OPT, MINERD};
use quarry_tests::regtest::{
    anyone_can_spend, bitcoind, free_port, spend_coinbase, wait_for_count, Node,
};
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// A regtest node with 103 blocks paid to an anyone-can-spend address and three
/// of their coinbases spent into its mempool, and a pool in front of it.
struct Setup {
    node: Node,
    pool: PoolProcess,
    address: Address,
    mempool: Vec<Txid>,
}

fn set_up(binary: &Path, dir: &Path, extra: &[&str]) -> Setup {
    let datadir = dir.join("bitcoind");
    std::fs::create_dir_all(&datadir).unwrap();
    let node = Node::start(binary, &datadir, free_port());
    let (witness_script, address) = anyone_can_spend();
    node.call("generatetoaddress", json!([103, address.to_string()]));
    let mempool: Vec<Txid> = (1..=3)
        .map(|height| spend_coinbase(&node, height, &address, &witness_script))
        .collect();
    let pool = node.start_pool(&dir.join("pool"), &address, extra);
    Setup {
        node,
        pool,
        address,
        mempool,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_mines_a_real_regtest_chain() {
    let Some(binary) = bitcoind("the_pool_mines_a_real_regtest_chain") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let Setup {
        node,
        pool,
        address,
        mempool,
    } = tokio::task::spawn_blocking(move || {
        set_up(&binary, &path, &["--start-difficulty", "1e-9"])
    })
    .await
    .unwrap();
    let mut client = Client::tcp(pool.tcp).await;
    client.handshake("dave.rig").await;
    let start_count = node.block_count();

    // Three blocks from the pool; the first carries the mempool.
    const FOUND: u64 = 3;
    for i in 0..FOUND {
        let job = client.job.clone().unwrap();
        let reply = client.submit_valid("dave.rig", i + 1).await;
        assert_eq!(reply["result"], json!(true), "{reply}");
        wait_for_count(&node, start_count + i + 1);
        // The next job builds on the new block.
        while client.job.as_ref().unwrap().prevhash == job.prevhash {
            client.next_notification("mining.notify").await;
        }
        if i == 0 {
            let best = node.call("getbestblockhash", json!([]));
            let block = node.call("getblock", json!([best, 2]));
            let txids: Vec<&str> = block["tx"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["txid"].as_str().unwrap())
                .collect();
            for txid in &mempool {
                assert!(
                    txids.contains(&txid.to_string().as_str()),
                    "{txid} not in {txids:?}"
                );
            }
            let payout = &block["tx"][0]["vout"][0]["scriptPubKey"]["hex"];
            assert_eq!(
                payout.as_str().unwrap(),
                hex(address.script_pubkey().as_bytes())
            );
        }
    }
    assert_eq!(
        node.block_count(),
        start_count + FOUND,
        "exactly the pool's blocks"
    );
    // The pool records a block's verdict after the node has it: wait for the last.
    let statuses = |blocks: &Value| -> Vec<Value> {
        blocks["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["status"].clone())
            .collect()
    };
    let all_accepted = vec![json!("accepted"); FOUND as usize];
    let blocks = poll(Duration::from_secs(30), || {
        let blocks = pool.api_get("/api/blocks");
        (statuses(&blocks) == all_accepted).then_some(blocks)
    });
    let blocks = blocks.unwrap_or_else(|| pool.api_get("/api/blocks"));
    assert_eq!(statuses(&blocks), all_accepted, "{blocks}");
    assert_eq!(pool.api_get("/api/pool")["blocks_found"], json!(FOUND));

    // A block mined on the node reaches the miner as a clean job.
    let mined = Instant::now();
    node.call("generatetoaddress", json!([1, address.to_string()]));
    loop {
        let notify = client.next_notification("mining.notify").await;
        if notify["params"][8] == json!(true) {
            break;
        }
    }
    println!("node block to clean job: {:?}", mined.elapsed());

    // The node goes away and comes back; the pool mines on.
    let (binary, datadir, port) = node.stop();
    let node = tokio::task::spawn_blocking(move || Node::start(&binary, &datadir, port))
        .await
        .unwrap();
    let count = node.block_count();
    let deadline = Instant::now() + WAIT;
    for counter in 100.. {
        let reply = client.submit_valid("dave.rig", counter).await;
        if reply["result"] == json!(true) && node.block_count() > count {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no block after the node came back: {reply}"
        );
        client.next_notification("mining.notify").await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the pool says of its found blocks: hashes by status.
fn pool_blocks(pool: &PoolProcess) -> Vec<(String, String)> {
    pool.api_get("/api/blocks?limit=1000")["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .map(|b| {
            let field = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
            (field("hash"), field("status"))
        })
        .collect()
}

fn accepted(blocks: &[(String, String)]) -> usize {
    blocks.iter().filter(|(_, s)| s == "accepted").count()
}

/// `peer` mines on the pool in front of a real node, which restarts mid-run.
fn real_miner_on_a_real_node(peer: &Peer, test: &str) {
    let Some(bitcoind) = bitcoind(test) else {
        return;
    };
    let Some(miner_binary) = peer.binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A share every second or so; on regtest nearly every share is a block.
    let Setup {
        node,
        pool,
        address,
        mempool,
    } = set_up(
        &bitcoind,
        dir.path(),
        &["--start-difficulty", "0.004", "--share-interval", "1"],
    );
    let start_count = node.block_count();
    let url = format!("stratum+tcp://127.0.0.1:{}", pool.tcp.port());
    let cert = dir.path().join("unused-cert.pem");
    let miner = Peer::start(&miner_binary, &url, "erin.rig", &cert);
    let wait_accepted = |count: usize, what: &str| {
        let deadline = Instant::now() + 3 * WAIT;
        while accepted(&pool_blocks(&pool)) < count {
            assert!(
                Instant::now() < deadline,
                "{what}: {:?}\n{}",
                pool_blocks(&pool),
                miner.transcript()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_accepted(3, "three blocks");

    // The node restarts while the miner works on.
    let (binary, datadir, port) = node.stop();
    let node = Node::start(&binary, &datadir, port);
    let before = accepted(&pool_blocks(&pool));
    wait_accepted(before + 3, "three more blocks after the node restarted");
    drop(miner);

    // A block of the node's own moves the tip, so the pool checks which of
    // its blocks stayed in the best chain; then the counts must agree.
    node.call("generatetoaddress", json!([1, address.to_string()]));
    let deadline = Instant::now() + WAIT;
    let blocks = loop {
        let blocks = pool_blocks(&pool);
        let grown = node.block_count() - start_count - 1;
        if grown == accepted(&blocks) as u64 {
            break blocks;
        }
        assert!(
            Instant::now() < deadline,
            "the node grew by {grown}, the pool reports {} accepted: {blocks:?}",
            accepted(&blocks)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let not_accepted: Vec<&(String, String)> =
        blocks.iter().filter(|(_, s)| s != "accepted").collect();
    eprintln!(
        "{} on bitcoind: {} blocks accepted by the node, {} not: {not_accepted:?}",
        peer.name,
        accepted(&blocks),
        not_accepted.len()
    );
    // Every accepted block is in the best chain and pays the payout address.
    let payout = hex(address.script_pubkey().as_bytes());
    for (hash, _) in blocks.iter().filter(|(_, s)| s == "accepted") {
        let block = node.call("getblock", json!([hash, 2]));
        assert!(block["confirmations"].as_i64().unwrap_or(-1) >= 1, "{hash}");
        assert_eq!(
            block["tx"][0]["vout"][0]["scriptPubKey"]["hex"].as_str(),
            Some(payout.as_str()),
            "{hash}"
        );
    }
    // The mempool's transactions were mined (their outputs are confirmed coins).
    for txid in &mempool {
        let out = node.call("gettxout", json!([txid.to_string(), 0, false]));
        assert!(
            out["confirmations"].as_u64().unwrap_or(0) >= 1,
            "{txid}: {out}"
        );
    }
}

#[test]
fn minerd_mines_a_real_regtest_chain() {
    real_miner_on_a_real_node(&MINERD, "minerd_mines_a_real_regtest_chain");
}

#[test]
fn cpuminer_opt_mines_a_real_regtest_chain() {
    real_miner_on_a_real_node(&CPUMINER_OPT, "cpuminer_opt_mines_a_real_regtest_chain");
}
