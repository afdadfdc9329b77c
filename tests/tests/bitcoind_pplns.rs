//! PPLNS paid in the coinbase on a real Bitcoin Core regtest node (`BITCOIND`), mined by
//! real miners: three `quarry-miner`s with one, two and four threads, and minerd and
//! cpuminer-opt when `QUARRY_MINERD` and `QUARRY_CPUMINER_OPT` name them. Every block the
//! pool finds is accepted by the node and its coinbase pays exactly its stored payout
//! table; a block the node orphans shows as orphaned (in the earnings too); once mature,
//! each miner's address holds exactly what the tables of the accepted blocks paid it and
//! what its earnings say, in proportion to its credited difficulty.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quarry_tests::miner::poll;
use quarry_tests::peers::{Peer, PeerMiner, CPUMINER_OPT, MINERD};
use quarry_tests::regtest::{address, anyone_can_spend, bitcoind, free_port, Node};
use quarry_tests::{MinerProcess, PoolProcess};
use serde_json::{json, Value};

/// Blocks the pool must find before the miners stop.
const BLOCKS: usize = 40;

fn sats(btc: &Value) -> u64 {
    (btc.as_f64().unwrap() * 1e8).round() as u64
}

/// The pool's found blocks (at most 1000), newest first.
fn pool_blocks(pool: &PoolProcess) -> Vec<Value> {
    pool.api_get("/api/blocks?limit=1000")["blocks"]
        .as_array()
        .unwrap()
        .clone()
}

fn accepted(blocks: &[Value]) -> Vec<&Value> {
    blocks
        .iter()
        .filter(|b| b["status"] == "accepted")
        .collect()
}

#[test]
fn pplns_pays_real_miners_in_the_coinbase_on_a_real_node() {
    let Some(binary) = bitcoind("pplns_pays_real_miners_in_the_coinbase_on_a_real_node") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("bitcoind");
    std::fs::create_dir_all(&datadir).unwrap();
    let node = Node::start(&binary, &datadir, free_port());
    let (_, operator) = anyone_can_spend();
    node.call("generatetoaddress", json!([101, operator.to_string()]));
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
    let stratum = format!("stratum+tcp://127.0.0.1:{}", pool.tcp.port());
    let mut miners: BTreeMap<String, String> = BTreeMap::new();
    let mut quarry = Vec::new();
    for (seed, threads) in [(1u16, "1"), (2, "2"), (3, "4")] {
        let payee = address(seed).to_string();
        quarry.push(MinerProcess::start(&[
            "-o",
            &stratum,
            "-u",
            &format!("{payee}.rig"),
            "-t",
            threads,
        ]));
        miners.insert(payee, format!("quarry-miner -t {threads}"));
    }
    let cert = dir.path().join("unused-cert.pem");
    let mut peers: Vec<PeerMiner> = Vec::new();
    for (seed, peer) in [(4u16, &MINERD), (5, &CPUMINER_OPT)] {
        if let Some(binary) = peer.binary() {
            let payee = address(seed).to_string();
            peers.push(Peer::start(
                &binary,
                &stratum,
                &format!("{payee}.rig"),
                &cert,
            ));
            miners.insert(payee, peer.name.to_owned());
        }
    }

    let started = Instant::now();
    // Until every miner has found a block the node accepted (each share is one here).
    let found_by = |blocks: &[Value], payee: &str| {
        accepted(blocks)
            .iter()
            .filter(|b| b["worker"] == json!(format!("{payee}.rig")))
            .count()
    };
    let found = poll(Duration::from_secs(600), || {
        let blocks = pool_blocks(&pool);
        let everyone = miners.keys().all(|payee| found_by(&blocks, payee) > 0);
        (accepted(&blocks).len() >= BLOCKS && everyone).then_some(())
    });
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
    drop(quarry);
    drop(peers);
    assert!(
        found.is_some(),
        "{BLOCKS} accepted blocks, one at least found by each miner: {:?}",
        pool_blocks(&pool)
    );
    let blocks = pool_blocks(&pool);
    eprintln!(
        "{} blocks accepted by the node in {:?}",
        accepted(&blocks).len(),
        started.elapsed()
    );
    for (payee, name) in &miners {
        eprintln!("{name:<24} found {} of them", found_by(&blocks, payee));
    }

    // The node orphans the pool's highest block, and two blocks of its own make a tip
    // above all of the pool's: the pool says so. Then (as after every new tip) it has
    // checked all its blocks below the tip: those that lost a race for their height to
    // another miner's block are orphaned too.
    let highest = accepted(&blocks)
        .iter()
        .max_by_key(|b| b["height"].as_u64().unwrap())
        .map(|b| b["hash"].clone())
        .unwrap();
    node.call("invalidateblock", json!([highest]));
    node.call("generatetoaddress", json!([2, operator.to_string()]));
    poll(Duration::from_secs(60), || {
        pool_blocks(&pool)
            .iter()
            .any(|b| b["hash"] == highest && b["status"] == "orphaned")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{highest} never orphaned: {:?}", pool_blocks(&pool)));

    // Matured, every miner's address holds what the accepted blocks' tables paid it.
    node.call("generatetoaddress", json!([101, operator.to_string()]));
    // Blocks found on a stale job can reach the node after a new tip, as side blocks the
    // pool checks at the next tip: once it has, every block still accepted is on the
    // node's chain, and its coinbase pays exactly its table.
    let blocks = poll(Duration::from_secs(30), || {
        let blocks = pool_blocks(&pool);
        accepted(&blocks)
            .iter()
            .all(|b| {
                let on_node = node.call("getblock", json!([b["hash"], 1]));
                on_node["confirmations"].as_i64().unwrap_or(-1) >= 1
            })
            .then_some(blocks)
    })
    .unwrap_or_else(|| {
        panic!(
            "accepted blocks off the node's chain: {:?}",
            pool_blocks(&pool)
        )
    });
    let orphaned = blocks.iter().filter(|b| b["status"] == "orphaned").count();
    eprintln!("orphaned: {orphaned} (the invalidated one, and any that lost a race)");
    for block in accepted(&blocks) {
        let on_node = node.call("getblock", json!([block["hash"], 2]));
        assert!(
            on_node["confirmations"].as_i64().unwrap_or(-1) >= 1,
            "{block}"
        );
        let outputs = on_node["tx"][0]["vout"].as_array().unwrap();
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
        .keys()
        .map(|p| credits.get(p).copied().unwrap_or(0.0))
        .sum();
    let mut balances = BTreeMap::new();
    for payee in miners.keys() {
        let scan = node.call("scantxoutset", json!(["start", [format!("addr({payee})")]]));
        let held = sats(&scan["total_amount"]);
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
        let earnings = poll(Duration::from_secs(30), || {
            let earnings = pool.api_get(&format!("/api/accounts/{payee}/earnings"));
            (earnings["paid_immature"] == json!(0)).then_some(earnings)
        })
        .expect("every accepted block mature");
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
            miners[payee],
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
            miners[payee],
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
