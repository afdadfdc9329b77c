//! Solo mining on a real Bitcoin Core regtest node (`BITCOIND`), mined by real miners:
//! three `quarry-miner`s with one, two and four threads, and minerd and cpuminer-opt when
//! `QUARRY_MINERD` and `QUARRY_CPUMINER_OPT` name them, each mining to its own address.
//! Every block the node accepts pays its finder the block's value less the 1 % fee, and
//! the operator the fee; once mature, each address holds exactly what the blocks it
//! found paid it (and an address that mined nothing holds nothing), as its earnings say;
//! a block the node orphans shows as orphaned in its finder's earnings.

use std::collections::BTreeMap;

use quarry_tests::mined::{
    accepted, coinbase_outputs, found_by, funded_node, held, mature_earnings, matured_blocks,
    orphan_highest, sats, Miners,
};
use quarry_tests::regtest::{address, bitcoind};
use quarry_tests::Client;
use serde_json::{json, Value};

/// Blocks the pool must find before the miners stop.
const BLOCKS: usize = 30;
/// The pool's fee, in basis points.
const FEE_BPS: u64 = 100;

#[test]
fn solo_pays_each_real_miner_the_blocks_it_found_on_a_real_node() {
    let Some(binary) = bitcoind("solo_pays_each_real_miner_the_blocks_it_found_on_a_real_node")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (node, operator) = funded_node(&binary, dir.path());
    let operator_text = operator.to_string();
    let pool = node.start_pool(
        &dir.path().join("pool"),
        &operator,
        &[
            "--reward",
            "solo",
            "--pool-fee-bps",
            &FEE_BPS.to_string(),
            "--start-difficulty",
            "0.001",
            "--share-interval",
            "1",
        ],
    );
    // A miner that connects with an address of its own but never submits a share.
    let idle = address(6).to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _idle_session = runtime.block_on(async {
        let mut client = Client::tcp(pool.tcp).await;
        client.handshake(&format!("{idle}.rig")).await;
        client
    });
    let mut miners = Miners::start(&pool, dir.path());
    miners.mine(&pool, BLOCKS);

    let orphan = orphan_highest(&node, &pool, &operator);
    let blocks = matured_blocks(&node, &pool, &operator);

    // Every accepted block pays its finder the value less the fee, and the operator the
    // fee: nobody else.
    let mut paid_to: BTreeMap<String, u64> = BTreeMap::new();
    for block in accepted(&blocks) {
        let finder = block["worker"].as_str().unwrap().trim_end_matches(".rig");
        let outputs: Vec<Value> = coinbase_outputs(&node, block)
            .into_iter()
            .filter(|o| o["value"].as_f64() != Some(0.0))
            .collect();
        let value: u64 = outputs.iter().map(|o| sats(&o["value"])).sum();
        let fee = value * FEE_BPS / 10_000;
        let paid: Vec<(&str, u64)> = outputs
            .iter()
            .map(|o| {
                (
                    o["scriptPubKey"]["address"].as_str().unwrap(),
                    sats(&o["value"]),
                )
            })
            .collect();
        assert_eq!(
            paid,
            [(operator_text.as_str(), fee), (finder, value - fee)],
            "{block}"
        );
        assert_eq!(
            block["payouts"],
            json!([{
                "payee": finder,
                "credit": 1.0,
                "earned": value - fee,
                "owed_before": 0,
                "paid": value - fee,
                "owed_after": 0,
            }]),
            "{block}"
        );
        *paid_to.entry(finder.to_owned()).or_default() += value - fee;
    }

    for (payee, name) in &miners.payees {
        let held = held(&node, payee);
        assert_eq!(held, paid_to[payee], "{name}: held vs the blocks it found");
        let earnings = mature_earnings(&pool, payee);
        assert_eq!(earnings["paid_mature"], json!(held), "{earnings}");
        let lists_orphan = earnings["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["hash"] == orphan && b["status"] == "orphaned");
        let found_orphan = blocks
            .iter()
            .any(|b| b["hash"] == orphan && b["worker"] == json!(format!("{payee}.rig")));
        assert_eq!(lists_orphan, found_orphan, "{earnings}");
        eprintln!(
            "{name:<24} holds {held} sats from {} blocks, as its earnings say",
            found_by(&blocks, payee)
        );
    }
    assert_eq!(held(&node, &idle), 0, "an address that found nothing");
    let earnings = mature_earnings(&pool, &idle);
    assert_eq!(earnings["blocks"], json!([]), "{earnings}");
}
