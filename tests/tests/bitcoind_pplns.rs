//! PPLNS paid in the coinbase on a real Bitcoin Core regtest node (`BITCOIND`), mined by
//! real miners: three `quarry-miner`s with one, two and four threads, and minerd and
//! cpuminer-opt when `QUARRY_MINERD` and `QUARRY_CPUMINER_OPT` name them. Every block the
//! pool finds is accepted by the node and its coinbase pays exactly its stored payout
//! table; a block the node orphans shows as orphaned (in the earnings too); once mature,
//! each miner's address holds exactly what the tables of the accepted blocks paid it and
//! what its earnings say, in proportion to its credited difficulty.

use std::collections::BTreeMap;

use quarry_tests::mined::{
    accepted, coinbase_outputs, funded_node, held, mature_earnings, matured_blocks, orphan_highest,
    sats, Miners,
};
use quarry_tests::regtest::bitcoind;
use serde_json::json;

/// Blocks the pool must find before the miners stop.
const BLOCKS: usize = 60;

#[test]
fn pplns_pays_real_miners_in_the_coinbase_on_a_real_node() {
    let Some(binary) = bitcoind("pplns_pays_real_miners_in_the_coinbase_on_a_real_node") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (node, operator) = funded_node(&binary, dir.path());
    let operator_text = operator.to_string();
    // Shares about once a second per connection (vardiff), every one of them a block;
    // the window holds roughly the last half minute of shares.
    let pool = node.start_pool(
        &dir.path().join("pool"),
        &operator,
        &[
            "--reward",
            "pplns",
            "--pool-fee-bps",
            "100",
            "--pplns-window",
            "3e8",
            "--start-difficulty",
            "0.001",
            "--share-interval",
            "1",
        ],
    );
    let mut miners = Miners::start(&pool, dir.path());
    // Until every miner has found a block the node accepted (each share is one here).
    miners.mine(&pool, BLOCKS);
    let credits: BTreeMap<String, f64> = pool.api_get("/api/accounts")["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["account"].as_str().unwrap().to_owned(),
                a["accepted_difficulty"].as_f64().unwrap(),
            )
        })
        .collect();
    // The node orphans the pool's highest block: the pool says so. Then (as after every
    // new tip) it has checked all its blocks below the tip: those that lost a race for
    // their height to another miner's block are orphaned too.
    let highest = orphan_highest(&node, &pool, &operator);

    // Matured, every block still accepted is on the node's chain, and its coinbase pays
    // exactly its table.
    let blocks = matured_blocks(&node, &pool, &operator);
    let orphaned = blocks.iter().filter(|b| b["status"] == "orphaned").count();
    eprintln!("orphaned: {orphaned} (the invalidated one, and any that lost a race)");
    for block in accepted(&blocks) {
        let outputs = coinbase_outputs(&node, block);
        let total: u64 = outputs.iter().map(|o| sats(&o["value"])).sum();
        let paid: u64 = block["payouts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["paid"].as_u64().unwrap())
            .sum();
        let to_operator: u64 = outputs
            .iter()
            .filter(|o| o["scriptPubKey"]["address"] == json!(operator_text))
            .map(|o| sats(&o["value"]))
            .sum();
        assert_eq!(total, paid + to_operator, "{block}");
        for line in block["payouts"].as_array().unwrap() {
            let amount = line["paid"].as_u64().unwrap();
            if amount > 0 {
                assert!(
                    outputs
                        .iter()
                        .any(|o| o["scriptPubKey"]["address"] == line["payee"]
                            && sats(&o["value"]) == amount),
                    "{line} in {outputs:?}"
                );
            }
        }
    }

    let total_credit: f64 = miners
        .payees
        .keys()
        .map(|p| credits.get(p).copied().unwrap_or(0.0))
        .sum();
    let mut balances = BTreeMap::new();
    for payee in miners.payees.keys() {
        let held = held(&node, payee);
        let paid: u64 = accepted(&blocks)
            .iter()
            .flat_map(|b| b["payouts"].as_array().unwrap().iter())
            .filter(|l| l["payee"] == json!(payee))
            .map(|l| l["paid"].as_u64().unwrap())
            .sum();
        assert_eq!(
            held, paid,
            "{payee}: held on the node vs paid by the tables"
        );
        // The account's earnings say the same, all of it mature, and name the orphan.
        let earnings = mature_earnings(&pool, payee);
        assert_eq!(earnings["paid_mature"], json!(held), "{earnings}");
        let orphan_listed = earnings["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["hash"] == highest && b["status"] == "orphaned");
        let paid_by_orphan = blocks
            .iter()
            .filter(|b| b["hash"] == highest)
            .flat_map(|b| b["payouts"].as_array().unwrap().iter())
            .any(|l| l["payee"] == json!(payee));
        assert_eq!(orphan_listed, paid_by_orphan, "{earnings}");
        eprintln!(
            "{:<24} earnings: {} sats mature, in {} blocks; owed {}",
            miners.payees[payee],
            earnings["paid_mature"],
            earnings["blocks"].as_array().unwrap().len(),
            earnings["owed"]
        );
        balances.insert(payee.clone(), held);
    }
    let total_held: u64 = balances.values().sum();
    for (payee, held) in &balances {
        let credit_share = credits.get(payee).copied().unwrap_or(0.0) / total_credit;
        let held_share = *held as f64 / total_held as f64;
        eprintln!(
            "{:<24} credited {:5.1} % of the difficulty, holds {:5.1} % ({held} sats)",
            miners.payees[payee],
            credit_share * 100.0,
            held_share * 100.0
        );
        // The run is about as long as the window, and vardiff raises each miner's share
        // difficulty as it goes: the shares of the whole run and those of each block's
        // window differ by that much at most.
        assert!(
            (credit_share - held_share).abs() < 0.2,
            "{payee}: credited {credit_share:.3}, holds {held_share:.3}"
        );
    }
}
