//! Blocks on the embedded chain: a share that meets the network target becomes
//! a consensus-valid block, the next job is clean, and old jobs turn stale.

use bitcoin::consensus::deserialize;
use bitcoin::hashes::Hash;
use bitcoin::Block;
use std::time::Duration;

use quarry_protocol::target::{hash_difficulty, network_difficulty};
use quarry_protocol::{Difficulty, Extranonce};
use quarry_tests::grind::grind;
use quarry_tests::miner::poll;
use quarry_tests::{Client, PoolProcess};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_share_extends_the_chain_and_makes_old_jobs_stale() {
    let dir = tempfile::tempdir().unwrap();
    // Blocks need ~43,000 hashes, shares ~43: both found quickly by the test itself.
    let pool = PoolProcess::start(
        dir.path(),
        &["--chain-difficulty", "1e-5", "--start-difficulty", "1e-8"],
    );
    let mut client = Client::tcp(pool.tcp).await;
    client.handshake("bob.rig").await;
    let job = client.job.clone().unwrap();
    let en1 = client.extranonce1.unwrap();
    let network = Difficulty::new(network_difficulty(job.nbits.0)).unwrap();
    let block_share = grind(&job, en1, Extranonce::from_counter(1, 4), network, 0, true);
    let reply = client
        .request("mining.submit", block_share.params("bob.rig", &job))
        .await;
    assert_eq!(reply["result"], json!(true), "{reply}");

    // The next job builds on the new block and is clean.
    let notify = loop {
        let notify = client.next_notification("mining.notify").await;
        if notify["params"][8] == json!(true) {
            break notify;
        }
    };
    let mut block_hash = block_share.hash;
    block_hash.reverse();
    assert_ne!(notify["params"][1], json!(job.prevhash.to_string()));

    // A share on the old job is now stale.
    let old = grind(
        &job,
        en1,
        Extranonce::from_counter(2, 4),
        client.job_difficulty,
        0,
        true,
    );
    let reply = client
        .request("mining.submit", old.params("bob.rig", &job))
        .await;
    assert_eq!(reply["error"], json!([21, "stale", null]), "{reply}");

    // The block the API reports passes an independent consensus check.
    let blocks = pool.api_get("/api/blocks");
    let found = &blocks["blocks"][0];
    assert_eq!(found["height"], json!(1));
    assert_eq!(found["worker"], json!("bob.rig"));
    assert_eq!(found["hash"], json!(hex(&block_hash)));
    let raw = decode_hex(found["raw"].as_str().unwrap());
    let block: Block = deserialize(&raw).expect("a consensus-encoded block");
    assert_eq!(block.block_hash().to_byte_array(), block_share.hash);
    assert!(block.check_merkle_root());
    block
        .header
        .validate_pow(block.header.target())
        .expect("proof of work meets its bits");
    assert!(block.txdata[0].is_coinbase());
    assert_eq!(block.txdata.len(), 1);
    assert_eq!(block.header.prev_blockhash, job.prevhash.to_block_hash());
    let script_sig = block.txdata[0].input[0].script_sig.as_bytes();
    assert_eq!(
        &script_sig[..2],
        &[0x51, 0x0a],
        "BIP34 height 1 (OP_1), then the push of the extranonce and the variant"
    );
    assert_eq!(&script_sig[2..6], en1.as_bytes());
    assert_eq!(&script_sig[10..12], &[0, 0], "the job as first announced");

    let state = pool.api_get("/api/pool");
    assert_eq!(state["height"], json!(2), "{state}");
    assert_eq!(state["blocks_found"], json!(1));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Dave connects and submits one share (extranonce2 from `counter`); returns the
/// difficulty its hash achieved.
async fn dave_submits(pool: &PoolProcess, counter: u64) -> f64 {
    let mut dave = Client::tcp(pool.tcp).await;
    dave.handshake("dave.rig").await;
    let share = dave.grind_valid(counter);
    let params = share.params("dave.rig", dave.job.as_ref().unwrap());
    let reply = dave.request("mining.submit", params).await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    hash_difficulty(&share.hash)
}

/// The best share since the last block, per worker and account: a block the pool finds
/// starts it over for every worker (its own share counts before it), the best ever stays,
/// and the API, the accounts and `/metrics` agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_starts_every_best_share_since_block_over() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(
        dir.path(),
        &[
            "--chain-difficulty",
            "1e-5",
            "--start-difficulty",
            "1e-8",
            "--metrics-per-worker",
            "true",
        ],
    );
    let best = |worker: &str| {
        let view = pool.api_get(&format!("/api/workers/{worker}"));
        (
            view["best_share_since_block"].as_f64().unwrap(),
            view["best_share_difficulty"].as_f64().unwrap(),
        )
    };
    let first = dave_submits(&pool, 1).await;
    assert_eq!(best("dave.rig"), (first, first));
    let account = pool.api_get("/api/accounts/dave");
    assert_eq!(account["account"]["best_share_since_block"], json!(first));
    assert_eq!(
        pool.api_get("/api/pool")["best_share_since_block"],
        json!(first)
    );

    // Erin finds a block.
    let mut erin = Client::tcp(pool.tcp).await;
    erin.handshake("erin.rig").await;
    let job = erin.job.clone().unwrap();
    let network = Difficulty::new(network_difficulty(job.nbits.0)).unwrap();
    let block_share = grind(
        &job,
        erin.extranonce1.unwrap(),
        Extranonce::from_counter(2, 4),
        network,
        0,
        true,
    );
    let reply = erin
        .request("mining.submit", block_share.params("erin.rig", &job))
        .await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    let block = hash_difficulty(&block_share.hash);
    let after = poll(Duration::from_secs(30), || {
        let state = pool.api_get("/api/pool");
        (state["blocks_found"] == json!(1)).then_some(state)
    })
    .expect("the block is found");
    assert_eq!(after["best_share_since_block"], json!(0.0), "{after}");
    assert_eq!(after["best_share_difficulty"], json!(block), "{after}");
    assert_eq!(best("dave.rig"), (0.0, first));
    assert_eq!(best("erin.rig"), (0.0, block));
    let metrics = ureq::get(&format!("http://{}/metrics", pool.api))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("quarry_worker_best_share_since_block_difficulty{worker=\"dave.rig\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nquarry_best_share_since_block_difficulty 0"),
        "{metrics}"
    );

    // Dave's next share is his best since the block.
    let next = dave_submits(&pool, 3).await;
    assert_eq!(best("dave.rig"), (next, first.max(next)));
}
