//! PPLNS paid in the coinbase, on the embedded chain over real sockets: the current job's
//! coinbase divides the block's value among the window's accounts (their usernames are
//! regtest addresses) in proportion to their credited difficulty after the fee, the
//! published split is the coinbase the miners hash, and a found block records its payout
//! table and pays exactly it.

use std::time::Duration;

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Block, ScriptBuf};
use quarry_tests::miner::poll;
use quarry_tests::process::EASY_SHARES;
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};

/// A regtest address of our own making, and its script.
fn address(seed: u16) -> (String, ScriptBuf) {
    let address = quarry_tests::regtest::address(seed);
    (address.to_string(), address.script_pubkey())
}

/// Submits `count` shares for `worker` on the client's current job; all accepted.
async fn shares(client: &mut Client, worker: &str, first: u64, count: u64) {
    for i in first..first + count {
        let reply = client.submit_valid(worker, i).await;
        assert_eq!(reply["result"], json!(true), "{reply}");
    }
}

fn amount_to(payouts: &Value, payee: &str) -> u64 {
    payouts["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["to"] == payee)
        .map_or(0, |o| o["amount"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coinbase_pays_the_window_by_credited_difficulty_after_the_fee() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        &[
            "--reward",
            "pplns",
            "--pool-fee-bps",
            "150",
            "--job-interval",
            "0.2",
        ],
        EASY_SHARES,
    ];
    let pool = PoolProcess::start(dir.path(), &args.concat());
    let (alice, alice_script) = address(1);
    let (bob, bob_script) = address(2);
    let mut a = Client::tcp(pool.tcp).await;
    a.handshake(&format!("{alice}.rig")).await;
    let mut b = Client::tcp(pool.tcp).await;
    b.handshake(&format!("{bob}.rig")).await;
    // Shares need at most ~43 hashes, blocks ~430,000: no share here finds a block by
    // chance (one in 10,000 or fewer). An empty window: the operator's output takes the whole block.
    let first = pool.api_get("/api/payouts/current");
    assert_eq!(first["scheme"], json!("pplns"), "{first}");
    assert_eq!(first["outputs"].as_array().unwrap().len(), 1, "{first}");

    shares(&mut a, &format!("{alice}.rig"), 0, 3).await;
    shares(&mut b, &format!("{bob}.rig"), 0, 9).await;
    let credited = |name: &str| {
        pool.api_get(&format!("/api/workers/{name}.rig"))["accepted_difficulty"]
            .as_f64()
            .unwrap()
    };
    let (alice_credit, bob_credit) = (credited(&alice), credited(&bob));
    // A job made after all the shares splits by them.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b;
    let payouts = poll(Duration::from_secs(30), || {
        let payouts = pool.api_get("/api/payouts/current");
        let credit = |payee: &str| -> Option<f64> {
            payouts["payees"]
                .as_array()?
                .iter()
                .find(|l| l["payee"] == json!(payee))?["credit"]
                .as_f64()
        };
        (close(credit(&alice)?, alice_credit) && close(credit(&bob)?, bob_credit))
            .then_some(payouts)
    })
    .expect("a job whose split counts every share");
    let value = payouts["coinbase_value"].as_u64().unwrap();
    let outputs: u64 = payouts["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["amount"].as_u64().unwrap())
        .sum();
    assert_eq!(outputs, value, "{payouts}");
    let fee = value * 150 / 10_000;
    assert_eq!(amount_to(&payouts, "operator"), fee, "{payouts}");
    assert_eq!(payouts["operator_amount"], json!(fee), "{payouts}");
    let rest = (value - fee) as f64;
    let total = alice_credit + bob_credit;
    let (to_alice, to_bob) = (amount_to(&payouts, &alice), amount_to(&payouts, &bob));
    assert!(
        (to_alice as f64 - rest * alice_credit / total).abs() <= 2.0,
        "{payouts}"
    );
    assert!(
        (to_bob as f64 - rest * bob_credit / total).abs() <= 2.0,
        "{payouts}"
    );
    let alice_line = payouts["payees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["payee"] == json!(alice))
        .unwrap();
    assert!(close(alice_line["credit"].as_f64().unwrap(), alice_credit));
    // The published coinbase is the one the miners hash: its outputs are the split.
    let coinbase_hex = format!(
        "{}{}{}",
        payouts["coinb1"].as_str().unwrap(),
        "00".repeat(8),
        payouts["coinb2"].as_str().unwrap()
    );
    let coinbase: bitcoin::Transaction = deserialize_hex(&coinbase_hex).unwrap();
    let paid: Vec<(ScriptBuf, u64)> = coinbase
        .output
        .iter()
        .map(|o| (o.script_pubkey.clone(), o.value.to_sat()))
        .collect();
    assert!(paid.contains(&(alice_script.clone(), to_alice)), "{paid:?}");
    assert!(paid.contains(&(bob_script.clone(), to_bob)), "{paid:?}");

    // Bob finds a block on that job (a variant of it differs only in coinb2's first two
    // bytes): it pays what the split said, and records the table.
    let split_coinb2 = payouts["coinb2"].as_str().unwrap()[4..].to_owned();
    b.job_where(|job| job.coinb2.to_string()[4..] == split_coinb2)
        .await;
    let reply = b.submit_block(&format!("{bob}.rig"), 100).await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    let found = poll(Duration::from_secs(30), || {
        let blocks = pool.api_get("/api/blocks");
        let block = blocks["blocks"].as_array()?.first()?.clone();
        (!block["payouts"].as_array()?.is_empty()).then_some(block)
    })
    .unwrap_or_else(|| {
        panic!(
            "the found block with its payout table: {}",
            pool.api_get("/api/blocks")
        )
    });
    let block: Block = deserialize_hex(found["raw"].as_str().unwrap()).unwrap();
    let coinbase = &block.txdata[0];
    let total_out: u64 = coinbase.output.iter().map(|o| o.value.to_sat()).sum();
    assert_eq!(total_out, value);
    for line in found["payouts"].as_array().unwrap() {
        let (_, script) = if line["payee"] == json!(alice) {
            (alice.clone(), alice_script.clone())
        } else {
            (bob.clone(), bob_script.clone())
        };
        let paid = line["paid"].as_u64().unwrap();
        assert!(paid > 0, "{found}");
        assert!(
            coinbase
                .output
                .iter()
                .any(|o| o.script_pubkey == script && o.value.to_sat() == paid),
            "{line} in {:?}",
            coinbase.output
        );
        assert_eq!(line["owed_after"], json!(0), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_paid_to_the_address_the_operator_binds_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        &[
            "--reward",
            "pplns",
            "--admin-token",
            "s3cret",
            "--job-interval",
            "0.2",
        ],
        EASY_SHARES,
    ];
    let pool = PoolProcess::start(dir.path(), &args.concat());
    let mut carol = Client::tcp(pool.tcp).await;
    carol.handshake("carol.rig").await;
    shares(&mut carol, "carol.rig", 0, 3).await;
    let carol_line = |payouts: &Value| -> Option<Value> {
        payouts["payees"]
            .as_array()?
            .iter()
            .find(|l| l["payee"] == "carol")
            .cloned()
    };
    // Not an address: credited, but carried as owed.
    let carried = poll(Duration::from_secs(30), || {
        carol_line(&pool.api_get("/api/payouts/current"))
    })
    .expect("carol in the window");
    assert_eq!(carried["paid"], json!(0), "{carried}");
    assert!(carried["owed_after"].as_i64().unwrap() > 0, "{carried}");

    let path = "/api/accounts/carol/address";
    let (bound, bound_script) = address(7);
    let body = || Some(json!({ "address": bound }));
    assert_eq!(pool.api_request("PUT", path, None, body()).0, 401);
    assert_eq!(pool.api_request("PUT", path, Some("wrong"), body()).0, 401);
    let (status, reply) = pool.api_request(
        "PUT",
        path,
        Some("s3cret"),
        Some(json!({"address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"})),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("regtest"),
        "{reply}"
    );
    let (status, reply) = pool.api_request(
        "PUT",
        "/api/accounts/carol.rig/address",
        Some("s3cret"),
        body(),
    );
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = pool.api_request("PUT", path, Some("s3cret"), body());
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["payout_address"], json!(bound), "{reply}");
    assert_eq!(
        pool.api_get("/api/accounts/carol")["payout_address"],
        json!(bound)
    );

    // The next jobs pay carol's bound address what she earned and was owed.
    let payouts = poll(Duration::from_secs(30), || {
        let payouts = pool.api_get("/api/payouts/current");
        (amount_to(&payouts, "carol") > 0).then_some(payouts)
    })
    .expect("a job paying carol");
    let line = carol_line(&payouts).unwrap();
    assert_eq!(line["owed_after"], json!(0), "{line}");
    let script = payouts["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["to"] == "carol")
        .unwrap()["script"]
        .clone();
    assert_eq!(script, json!(bound_script.to_hex_string()), "{payouts}");

    // Unbound, she is carried again.
    let (status, reply) = pool.api_request("DELETE", path, Some("s3cret"), None);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["payout_address"], Value::Null, "{reply}");
    poll(Duration::from_secs(30), || {
        let payouts = pool.api_get("/api/payouts/current");
        (amount_to(&payouts, "carol") == 0 && carol_line(&payouts)?["paid"] == 0).then_some(())
    })
    .expect("carol carried again once unbound");
}
