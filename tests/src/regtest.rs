//! A real Bitcoin Core regtest node for the tests that drive one: started on loopback in a
//! temporary data directory from the binary `BITCOIND` names, called over JSON-RPC with its
//! cookie, and some coins made spendable without keys.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, Network, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Txid, Witness,
};
use serde_json::{json, Value};

use crate::process::PoolProcess;

/// A regtest address of our own making (P2WSH of a script made from `seed`), one per
/// seed.
pub fn address(seed: u16) -> Address {
    let script = ScriptBuf::from_bytes(seed.to_le_bytes().to_vec());
    Address::p2wsh(&script, Network::Regtest)
}

/// How long the node may take to start or reach a height.
const WAIT: Duration = Duration::from_secs(60);

/// A regtest bitcoind on loopback in a temporary data directory.
pub struct Node {
    binary: PathBuf,
    datadir: PathBuf,
    port: u16,
    child: Child,
}

impl Node {
    pub fn start(binary: &Path, datadir: &Path, port: u16) -> Node {
        Node::start_with(binary, datadir, port, &[])
    }

    /// As [`Node::start`], with `extra` options (e.g. `-ipcbind=unix` for a
    /// `bitcoin-node` built with IPC).
    pub fn start_with(binary: &Path, datadir: &Path, port: u16, extra: &[&str]) -> Node {
        let child = Command::new(binary)
            .arg("-regtest")
            .arg(format!("-datadir={}", datadir.display()))
            .arg(format!("-rpcport={port}"))
            .args(["-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1", "-listen=0"])
            .args([
                "-dnsseed=0",
                "-fixedseeds=0",
                "-discover=0",
                "-printtoconsole=0",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting bitcoind");
        let node = Node {
            binary: binary.to_owned(),
            datadir: datadir.to_owned(),
            port,
            child,
        };
        let deadline = Instant::now() + WAIT;
        while node.try_call("getblockchaininfo", json!([])).is_err() {
            assert!(Instant::now() < deadline, "bitcoind did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    /// A pool in front of this node, its data in `dir`, paying `payout`, with `extra`
    /// options.
    pub fn start_pool(&self, dir: &Path, payout: &Address, extra: &[&str]) -> PoolProcess {
        let (url, cookie, payout) = (
            self.url(),
            self.cookie().display().to_string(),
            payout.to_string(),
        );
        let mut args = vec![
            "--chain",
            "bitcoind",
            "--bitcoind-url",
            &url,
            "--bitcoind-cookie",
            &cookie,
            "--payout-address",
            &payout,
        ];
        args.extend(extra);
        PoolProcess::start(dir, &args)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cookie(&self) -> PathBuf {
        self.datadir.join("regtest/.cookie")
    }

    pub fn try_call(&self, method: &str, params: Value) -> Result<Value, String> {
        let cookie = std::fs::read_to_string(self.cookie()).map_err(|e| e.to_string())?;
        let auth = base64::engine::general_purpose::STANDARD.encode(cookie.trim());
        let reply: Value = ureq::post(&self.url())
            .set("Authorization", &format!("Basic {auth}"))
            .timeout(Duration::from_secs(30))
            .send_json(json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params}))
            .map_err(|e| e.to_string())?
            .into_json()
            .map_err(|e| e.to_string())?;
        Ok(reply["result"].clone())
    }

    pub fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    pub fn block_count(&self) -> u64 {
        self.call("getblockcount", json!([])).as_u64().unwrap()
    }

    /// Stops the node and waits for it to exit.
    pub fn stop(mut self) -> (PathBuf, PathBuf, u16) {
        self.call("stop", json!([]));
        self.child.wait().unwrap();
        (self.binary.clone(), self.datadir.clone(), self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `OP_TRUE` in P2WSH: spendable without keys, and standard to spend.
pub fn anyone_can_spend() -> (ScriptBuf, Address) {
    let witness_script = ScriptBuf::from_bytes(vec![0x51]);
    let address = Address::p2wsh(Script::from_bytes(&[0x51]), Network::Regtest);
    (witness_script, address)
}

/// Spends the coinbase of block `height` back to `address`; returns the txid.
pub fn spend_coinbase(
    node: &Node,
    height: u64,
    address: &Address,
    witness_script: &ScriptBuf,
) -> Txid {
    let hash = node.call("getblockhash", json!([height]));
    let block = node.call("getblock", json!([hash, 2]));
    let coinbase = &block["tx"][0];
    let txid: Txid = coinbase["txid"].as_str().unwrap().parse().unwrap();
    let value = Amount::from_btc(coinbase["vout"][0]["value"].as_f64().unwrap()).unwrap();
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid, vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[witness_script.as_bytes()]),
        }],
        output: vec![TxOut {
            value: value - Amount::from_sat(10_000),
            script_pubkey: address.script_pubkey(),
        }],
    };
    let hex = bitcoin::consensus::encode::serialize_hex(&tx);
    node.call("sendrawtransaction", json!([hex]))
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until the node's block count reaches `count`.
pub fn wait_for_count(node: &Node, count: u64) {
    let deadline = Instant::now() + WAIT;
    while node.block_count() < count {
        assert!(
            Instant::now() < deadline,
            "block count never reached {count}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `bitcoind` binary named by `BITCOIND`, or `None` (having said why).
pub fn bitcoind(test: &str) -> Option<PathBuf> {
    let binary = std::env::var_os("BITCOIND").map(PathBuf::from);
    if binary.is_none() {
        eprintln!(
            "skipping {test}: set BITCOIND to the path of a bitcoind binary \
             (Bitcoin Core v26 or later) to run it"
        );
    }
    binary
}
