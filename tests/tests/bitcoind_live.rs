//! The pool in front of a real Bitcoin Core regtest node, when `BITCOIND` names a
//! `bitcoind` binary: every block the pool finds is accepted, carries the mempool's
//! transactions and pays the payout address, the node's block count grows by exactly
//! the blocks the pool reports, a block mined on the node reaches the miner as a clean
//! job, and the pool survives the node restarting. Skipped when `BITCOIND` is unset.

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
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// A regtest bitcoind on loopback in a temporary data directory.
struct Node {
    binary: PathBuf,
    datadir: PathBuf,
    port: u16,
    child: Child,
}

impl Node {
    fn start(binary: &Path, datadir: &Path, port: u16) -> Node {
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

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn cookie(&self) -> PathBuf {
        self.datadir.join("regtest/.cookie")
    }

    fn try_call(&self, method: &str, params: Value) -> Result<Value, String> {
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

    fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    fn block_count(&self) -> u64 {
        self.call("getblockcount", json!([])).as_u64().unwrap()
    }

    /// Stops the node and waits for it to exit.
    fn stop(mut self) -> (PathBuf, PathBuf, u16) {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `OP_TRUE` in P2WSH: spendable without keys, and standard to spend.
fn anyone_can_spend() -> (ScriptBuf, Address) {
    let witness_script = ScriptBuf::from_bytes(vec![0x51]);
    let address = Address::p2wsh(Script::from_bytes(&[0x51]), Network::Regtest);
    (witness_script, address)
}

/// Spends the coinbase of block `height` back to `address`; returns the txid.
fn spend_coinbase(node: &Node, height: u64, address: &Address, witness_script: &ScriptBuf) -> Txid {
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
fn wait_for_count(node: &Node, count: u64) {
    let deadline = Instant::now() + WAIT;
    while node.block_count() < count {
        assert!(
            Instant::now() < deadline,
            "block count never reached {count}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_mines_a_real_regtest_chain() {
    let Some(binary) = std::env::var_os("BITCOIND").map(PathBuf::from) else {
        eprintln!(
            "skipping the_pool_mines_a_real_regtest_chain: set BITCOIND to the path of a \
             bitcoind binary (Bitcoin Core v26 or later) to run it"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("bitcoind");
    std::fs::create_dir_all(&datadir).unwrap();
    let node = Node::start(&binary, &datadir, free_port());
    let (witness_script, address) = anyone_can_spend();
    node.call("generatetoaddress", json!([103, address.to_string()]));
    let mempool: Vec<Txid> = (1..=3)
        .map(|height| spend_coinbase(&node, height, &address, &witness_script))
        .collect();

    let pool_dir = dir.path().join("pool");
    let args = [
        "--chain".to_owned(),
        "bitcoind".into(),
        "--bitcoind-url".into(),
        node.url(),
        "--bitcoind-cookie".into(),
        node.cookie().display().to_string(),
        "--payout-address".into(),
        address.to_string(),
        "--start-difficulty".into(),
        "1e-9".into(),
    ];
    let pool = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        PoolProcess::start(&pool_dir, &args)
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
    let blocks = pool.api_get("/api/blocks");
    let statuses: Vec<&Value> = blocks["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["status"])
        .collect();
    assert_eq!(
        statuses,
        vec![&json!("accepted"); FOUND as usize],
        "{blocks}"
    );
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
