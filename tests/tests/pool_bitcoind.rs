//! The pool in front of Bitcoin Core, with a node that serves the replies a real v30.0
//! regtest node gave (`tests/fixtures/bitcoind`): jobs match the templates, found blocks are
//! consistent with them and reach the node, new tips arrive by long poll, and the pool
//! copes with nodes that fail, refuse the password, or are still syncing.

use std::time::{Duration, Instant};

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::Block;
use quarry_tests::node::{fixture, FixtureNode};
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};

const PAYOUT: &str = "bcrt1qk4jfh24av5se4a4tdauzpxd8jah4ah8rgk4gwn";
const PAYOUT_SCRIPT: &str = "0014b5649baabd65219af6ab6f782099a7976f5edce3";
const WAIT: Duration = Duration::from_secs(30);

async fn start_pool(dir: &std::path::Path, urls: &[&str], extra: &[&str]) -> PoolProcess {
    let mut args: Vec<String> = vec!["--chain".into(), "bitcoind".into()];
    for url in urls {
        args.extend(["--bitcoind-url".into(), url.to_string()]);
    }
    args.extend(
        [
            "--bitcoind-user",
            "quarry",
            "--bitcoind-password",
            "secret",
            "--payout-address",
            PAYOUT,
            "--start-difficulty",
            "1e-9",
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|a| a.to_string()));
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        PoolProcess::start(&dir, &args)
    })
    .await
    .unwrap()
}

/// Waits until the API's newest block has `status`.
async fn newest_block_status(pool: &PoolProcess, status: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let blocks = pool.api_get("/api/blocks");
        let newest = blocks["blocks"][0].clone();
        if newest["status"] == json!(status) {
            return newest;
        }
        assert!(
            Instant::now() < deadline,
            "no block with status {status}: {blocks}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next clean `mining.notify`.
async fn next_clean_job(client: &mut Client) -> Value {
    loop {
        let notify = client.next_notification("mining.notify").await;
        if notify["params"][8] == json!(true) {
            return notify;
        }
    }
}

/// A template on top of `prev` at `height`, with no transactions.
fn empty_template_on(prev: &str, height: u64) -> Value {
    let mut template = fixture("gbt-empty.json");
    template["previousblockhash"] = json!(prev);
    template["height"] = json!(height);
    template["longpollid"] = json!(format!("{prev}1"));
    template
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_blocks_are_consistent_with_bitcoind_templates() {
    let node = FixtureNode::start("quarry", "secret").await;
    let dir = tempfile::tempdir().unwrap();
    // Only the long poll can notice new tips here.
    let pool = start_pool(
        dir.path(),
        &[&node.url],
        &["--bitcoind-poll-interval", "3600"],
    )
    .await;
    let facts = fixture("block-from-gbt-many.json");
    let gbt = fixture("gbt-many.json");

    let mut client = Client::tcp(pool.tcp).await;
    client.handshake("alice.rig").await;
    let job = client.job.clone().unwrap();
    assert_eq!(
        job.prevhash.to_string(),
        facts["stratum"]["prevhash"].as_str().unwrap()
    );
    let branch: Vec<String> = job.merkle_branch.iter().map(|b| b.to_string()).collect();
    assert_eq!(json!(branch), facts["merkle_branch"]);
    assert_eq!(format!("{:08x}", job.nbits.0), "207fffff");
    assert_eq!(format!("{:08x}", job.version.0), "20000000");
    assert_eq!(u64::from(job.ntime.0), gbt["curtime"].as_u64().unwrap());

    // Regtest blocks are so easy that a share is a block.
    let reply = client.submit_valid("alice.rig", 1).await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    node.wait_for(WAIT, "submit the block", |calls| {
        calls.iter().any(|(m, _)| m == "submitblock")
    })
    .await;
    let block: Block = deserialize_hex(&node.submitted()[0]).unwrap();
    assert!(block.check_merkle_root());
    assert!(block.check_witness_commitment());
    assert_eq!(block.bip34_block_height().unwrap(), 142);
    assert_eq!(
        block.header.prev_blockhash.to_string(),
        gbt["previousblockhash"].as_str().unwrap()
    );
    block.header.validate_pow(block.header.target()).unwrap();
    let coinbase = &block.txdata[0];
    assert_eq!(
        hex(coinbase.output[0].script_pubkey.as_bytes()),
        PAYOUT_SCRIPT
    );
    assert_eq!(
        coinbase.output[0].value.to_sat(),
        gbt["coinbasevalue"].as_u64().unwrap()
    );
    assert_eq!(
        hex(coinbase.output[1].script_pubkey.as_bytes()),
        gbt["default_witness_commitment"].as_str().unwrap()
    );
    let txids: Vec<String> = block.txdata[1..]
        .iter()
        .map(|tx| tx.compute_txid().to_string())
        .collect();
    let expected: Vec<&str> = gbt["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tx| tx["txid"].as_str().unwrap())
        .collect();
    assert_eq!(txids, expected);
    let hash = block.block_hash().to_string();
    let found = newest_block_status(&pool, "accepted").await;
    assert_eq!(found["height"], json!(142));
    assert_eq!(found["hash"], json!(hash));

    // A new block on the node reaches the miner as a clean job through the long poll.
    node.set_block_hash(142, &hash);
    let published = Instant::now();
    node.set_template(empty_template_on(&hash, 143));
    let notify = next_clean_job(&mut client).await;
    println!(
        "new block to clean job (long poll): {:?}",
        published.elapsed()
    );
    let job = client.job.clone().unwrap();
    assert_eq!(job.prevhash.to_block_hash().to_string(), hash);
    assert_eq!(
        notify["params"][4],
        json!([]),
        "no transactions: empty branch"
    );

    // The node's verdict is stored and shown.
    node.push_submit_reply(json!("bad-txnmrklroot"));
    let reply = client.submit_valid("alice.rig", 2).await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    let rejected = newest_block_status(&pool, "rejected:bad-txnmrklroot").await;
    assert_eq!(rejected["height"], json!(143));

    // A later tip whose block 142 is another one orphans the pool's block.
    node.set_block_hash(142, &"11".repeat(32));
    node.set_template(empty_template_on(&"22".repeat(32), 144));
    next_clean_job(&mut client).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let blocks = pool.api_get("/api/blocks");
        let ours = blocks["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["hash"] == json!(hash))
            .cloned();
        if ours
            .as_ref()
            .is_some_and(|b| b["status"] == json!("orphaned"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "block never orphaned: {blocks}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.api_get("/api/pool")["blocks_found"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_named() {
    let node = FixtureNode::start("quarry", "other").await;
    let dir = tempfile::tempdir().unwrap();
    let url = node.url.clone();
    let path = dir.path().to_owned();
    let stderr = tokio::task::spawn_blocking(move || {
        PoolProcess::start_error(
            &path,
            &[
                "--chain",
                "bitcoind",
                "--bitcoind-url",
                &url,
                "--bitcoind-user",
                "quarry",
                "--bitcoind-password",
                "secret",
                "--payout-address",
                PAYOUT,
            ],
        )
    })
    .await
    .unwrap();
    assert!(
        stderr.contains("refused the credentials (HTTP 401)"),
        "{stderr}"
    );
    assert!(stderr.contains(&node.url), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_waits_out_sync_fails_over_and_survives_the_node_going_away() {
    let broken = FixtureNode::start("quarry", "secret").await;
    broken.set_failing(true);
    let node = FixtureNode::start("quarry", "secret").await;
    node.set_chain_info("initialblockdownload", json!(true));
    let dir = tempfile::tempdir().unwrap();
    let pool = {
        let urls = [broken.url.clone(), node.url.clone()];
        let dir = dir.path().to_owned();
        tokio::spawn(async move {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            start_pool(
                &dir,
                &urls,
                &["--bitcoind-poll-interval", "0.05", "--max-job-age", "1"],
            )
            .await
        })
    };
    // Still syncing: asked, but no template taken.
    node.wait_for(WAIT, "ask the syncing node", |calls| {
        calls.iter().any(|(m, _)| m == "getblockchaininfo")
    })
    .await;
    assert!(!node.calls().iter().any(|(m, _)| m == "getblocktemplate"));
    assert!(!broken.calls().is_empty(), "the first URL was tried");
    node.set_chain_info("initialblockdownload", json!(false));
    let pool = pool.await.unwrap();

    let mut client = Client::tcp(pool.tcp).await;
    client.handshake("carol.rig").await;
    let job = client.job.clone().unwrap();

    // The node goes away: after max_job_age, shares are stale and miners must wait.
    node.set_failing(true);
    let mut counter = 1;
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = client.submit_valid("carol.rig", counter).await;
        counter += 1;
        if reply["error"][0] == json!(21) {
            break;
        }
        assert!(Instant::now() < deadline, "jobs never retired: {reply}");
        // Each round is one tip poll apart at most.
        node.wait_for(WAIT, "poll again", {
            let seen = node.calls().len();
            move |calls| calls.len() > seen
        })
        .await;
    }

    // The node comes back: a fresh job, and shares count again. (A vardiff
    // change may have re-announced the job before the node went away: forget
    // the notifies read so far; any such re-announcement came before the last
    // reply, and none is sent for a retired job.)
    client
        .pending
        .retain(|message| message["method"] != "mining.notify");
    node.set_failing(false);
    let notify = client.next_notification("mining.notify").await;
    assert_eq!(notify["params"][1], json!(job.prevhash.to_string()));
    let reply = client.submit_valid("carol.rig", counter).await;
    assert_eq!(reply["result"], json!(true), "{reply}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
