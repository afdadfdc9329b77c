//! Blocks on the embedded chain: a share that meets the network target becomes
//! a consensus-valid block, the next job is clean, and old jobs turn stale.

use bitcoin::consensus::deserialize;
use bitcoin::hashes::Hash;
use bitcoin::Block;
use quarry_protocol::target::network_difficulty;
use quarry_protocol::{Difficulty, Extranonce};
use quarry_tests::grind::grind;
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
