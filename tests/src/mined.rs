//! A pool mining on a real regtest node with real miners, for the reward tests: the
//! miners (quarry-miner at one, two and four threads, and minerd and cpuminer-opt where
//! this machine has them), each mining to an address of its own, the blocks the pool
//! found, and what the node says of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bitcoin::Address;
use serde_json::{json, Value};

use crate::miner::poll;
use crate::peers::{Peer, PeerMiner, CPUMINER_OPT, MINERD};
use crate::regtest::{address, anyone_can_spend, free_port, Node};
use crate::{MinerProcess, PoolProcess};

/// A regtest node in `dir` whose first 101 blocks pay the operator's address (returned),
/// an address anyone can spend from.
pub fn funded_node(binary: &Path, dir: &Path) -> (Node, Address) {
    let datadir = dir.join("bitcoind");
    std::fs::create_dir_all(&datadir).unwrap();
    let node = Node::start(binary, &datadir, free_port());
    let (_, operator) = anyone_can_spend();
    node.call("generatetoaddress", json!([101, operator.to_string()]));
    (node, operator)
}

/// Miners at different hashrates, each paid to its own address.
pub struct Miners {
    /// Each miner's address (its account; its worker is `ADDRESS.rig`) and name.
    pub payees: BTreeMap<String, String>,
    quarry: Vec<MinerProcess>,
    peers: Vec<PeerMiner>,
}

impl Miners {
    /// Starts every miner on `pool`'s plain Stratum port.
    pub fn start(pool: &PoolProcess, dir: &Path) -> Miners {
        let stratum = format!("stratum+tcp://127.0.0.1:{}", pool.tcp.port());
        let mut miners = Miners {
            payees: BTreeMap::new(),
            quarry: Vec::new(),
            peers: Vec::new(),
        };
        for (seed, threads) in [(1, "1"), (2, "2"), (3, "4")] {
            let payee = address(seed).to_string();
            miners.quarry.push(MinerProcess::start(&[
                "-o",
                &stratum,
                "-u",
                &format!("{payee}.rig"),
                "-t",
                threads,
            ]));
            miners
                .payees
                .insert(payee, format!("quarry-miner -t {threads}"));
        }
        let cert = dir.join("unused-cert.pem");
        for (seed, peer) in [(4, &MINERD), (5, &CPUMINER_OPT)] {
            if let Some(binary) = peer.binary() {
                let payee = address(seed).to_string();
                let worker = format!("{payee}.rig");
                miners
                    .peers
                    .push(Peer::start(&binary, &stratum, &worker, &cert));
                miners.payees.insert(payee, peer.name.to_owned());
            }
        }
        miners
    }

    /// Mines until the node accepted at least `blocks` of the pool's blocks and every
    /// miner found one (at most ten minutes), stops the miners, says who found how many,
    /// and returns the pool's blocks.
    pub fn mine(&mut self, pool: &PoolProcess, blocks: usize) -> Vec<Value> {
        let started = Instant::now();
        let found = poll(Duration::from_secs(600), || {
            let found = pool_blocks(pool);
            let everyone = self.payees.keys().all(|payee| found_by(&found, payee) > 0);
            (accepted(&found).len() >= blocks && everyone).then_some(())
        });
        self.quarry.clear();
        self.peers.clear();
        let found_blocks = pool_blocks(pool);
        assert!(
            found.is_some(),
            "{blocks} accepted blocks, one at least found by each miner: {found_blocks:?}"
        );
        eprintln!(
            "{} blocks accepted by the node in {:?}",
            accepted(&found_blocks).len(),
            started.elapsed()
        );
        for (payee, name) in &self.payees {
            eprintln!(
                "{name:<24} found {} of them",
                found_by(&found_blocks, payee)
            );
        }
        found_blocks
    }
}

/// Sats of a node's BTC amount.
pub fn sats(btc: &Value) -> u64 {
    (btc.as_f64().unwrap() * 1e8).round() as u64
}

/// The pool's found blocks (at most 1000), newest first.
pub fn pool_blocks(pool: &PoolProcess) -> Vec<Value> {
    pool.api_get("/api/blocks?limit=1000")["blocks"]
        .as_array()
        .unwrap()
        .clone()
}

/// The blocks among `blocks` the pool counts as accepted.
pub fn accepted(blocks: &[Value]) -> Vec<&Value> {
    blocks
        .iter()
        .filter(|b| b["status"] == "accepted")
        .collect()
}

/// How many accepted blocks among `blocks` the worker `payee.rig` found.
pub fn found_by(blocks: &[Value], payee: &str) -> usize {
    accepted(blocks)
        .iter()
        .filter(|b| b["worker"] == json!(format!("{payee}.rig")))
        .count()
}

/// Has the node orphan the pool's highest accepted block (invalidated, and two blocks of
/// its own to `operator` on top), and waits until the pool says so; returns its hash.
pub fn orphan_highest(node: &Node, pool: &PoolProcess, operator: &Address) -> Value {
    let highest = accepted(&pool_blocks(pool))
        .iter()
        .max_by_key(|b| b["height"].as_u64().unwrap())
        .map(|b| b["hash"].clone())
        .unwrap();
    node.call("invalidateblock", json!([highest]));
    node.call("generatetoaddress", json!([2, operator.to_string()]));
    poll(Duration::from_secs(60), || {
        pool_blocks(pool)
            .iter()
            .any(|b| b["hash"] == highest && b["status"] == "orphaned")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{highest} never orphaned: {:?}", pool_blocks(pool)));
    highest
}

/// Matures every block (101 more to `operator`) and waits until every block the pool
/// still counts as accepted is on the node's chain (blocks found on a stale job can reach
/// the node after a new tip, as side blocks the pool checks at the next tip); returns the
/// pool's blocks then.
pub fn matured_blocks(node: &Node, pool: &PoolProcess, operator: &Address) -> Vec<Value> {
    node.call("generatetoaddress", json!([101, operator.to_string()]));
    poll(Duration::from_secs(30), || {
        let blocks = pool_blocks(pool);
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
            pool_blocks(pool)
        )
    })
}

/// The outputs of `block`'s coinbase as the node has it (`getblock` verbosity 2).
pub fn coinbase_outputs(node: &Node, block: &Value) -> Vec<Value> {
    let on_node = node.call("getblock", json!([block["hash"], 2]));
    assert!(
        on_node["confirmations"].as_i64().unwrap_or(-1) >= 1,
        "{block}"
    );
    on_node["tx"][0]["vout"].as_array().unwrap().clone()
}

/// What `address` holds on the node.
pub fn held(node: &Node, address: &str) -> u64 {
    let scan = node.call(
        "scantxoutset",
        json!(["start", [format!("addr({address})")]]),
    );
    sats(&scan["total_amount"])
}

/// `account`'s earnings once nothing is immature any more.
pub fn mature_earnings(pool: &PoolProcess, account: &str) -> Value {
    poll(Duration::from_secs(30), || {
        let earnings = pool.api_get(&format!("/api/accounts/{account}/earnings"));
        (earnings["paid_immature"] == json!(0)).then_some(earnings)
    })
    .expect("every accepted block mature")
}
