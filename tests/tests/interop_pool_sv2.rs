//! quarry-miner's Stratum V2 mode against an independent V2 server: SRI's
//! `pool_sv2` 0.7.0 (`QUARRY_POOL_SV2`), taking templates from Bitcoin Core v30 or
//! later over IPC (`QUARRY_BITCOIN_NODE`: a `bitcoin-node` built with
//! `-DENABLE_IPC=ON`), on a regtest chain. Nothing here was written by us but the
//! miner: the handshake, the jobs (SRI's pool sends them to the channel's group),
//! targets and acknowledgements are SRI's. On regtest every share is also a block,
//! so the node's chain grows with the miner's work.
//!
//! ckpool's tree was passed over as the independent server: its V2 support is not in
//! a release, and pool_sv2 is the reference implementation the translator also speaks.
//!
//! Skipped without the two programs, unless `QUARRY_REQUIRE_PEERS` is set.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use quarry_tests::miner::poll;
use quarry_tests::process::{forward, Killed};
use quarry_tests::regtest::{anyone_can_spend, free_port, Node};
use quarry_tests::MinerProcess;
use serde_json::{json, Value};

/// SRI's example authority pair (their configs and tests use it).
const PUBLIC: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
const SECRET: &str = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n";
const SHARES: u64 = 20;
const WAIT: Duration = Duration::from_secs(120);

fn program(variable: &str, what: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable).map(PathBuf::from);
    if path.is_none() {
        quarry_tests::skip_unless_required(
            "QUARRY_REQUIRE_PEERS",
            &format!("{variable} is not set (the path of {what})"),
        );
    }
    path
}

/// The IPC interface pool_sv2 0.7.0 is to speak to `node`: it knows Bitcoin Core
/// v30's and v31's, and a later node still serves v31's (its mining interface only
/// gained methods since).
fn ipc_version(node: &Node) -> u64 {
    let version = node.call("getnetworkinfo", json!([]))["version"]
        .as_u64()
        .expect("the node's version");
    (version / 10_000).min(31)
}

/// Starts pool_sv2 in `dir` on a free loopback port, templates from `node`, whose
/// data directory is `datadir`; returns once it accepts connections.
fn start_pool_sv2(
    binary: &PathBuf,
    dir: &std::path::Path,
    node: &Node,
    datadir: &std::path::Path,
) -> (Killed, u16, mpsc::Receiver<String>) {
    let port = free_port();
    let (_, payout) = anyone_can_spend();
    let config = format!(
        "authority_public_key = \"{PUBLIC}\"\n\
         authority_secret_key = \"{SECRET}\"\n\
         cert_validity_sec = 3600\n\
         listen_address = \"127.0.0.1:{port}\"\n\
         coinbase_reward_script = \"addr({payout})\"\n\
         server_id = 1\n\
         pool_signature = \"SRI Pool\"\n\
         shares_per_minute = 60.0\n\
         share_batch_size = 1\n\
         \n\
         [template_provider_type.BitcoinCoreIpc]\n\
         version = {}\n\
         network = \"regtest\"\n\
         data_dir = \"{}\"\n\
         fee_threshold = 100\n\
         min_interval = 5\n",
        ipc_version(node),
        datadir.display()
    );
    let path = dir.join("pool-sv2.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning pool_sv2");
    let (tx, lines) = mpsc::channel();
    forward(child.stdout.take().unwrap(), tx.clone());
    forward(child.stderr.take().unwrap(), tx);
    let process = Killed(child);
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("pool_sv2 never got ready:\n{}", seen.join("\n")));
        if line.contains("ready to accept connections") {
            break;
        }
        seen.push(line);
    }
    (process, port, lines)
}

fn status(api: &str) -> Value {
    ureq::get(&format!("http://{api}/status"))
        .timeout(Duration::from_secs(10))
        .call()
        .expect("GET /status")
        .into_json()
        .expect("JSON status")
}

fn mine_on_pool_sv2(channel: &str) {
    let (Some(pool_binary), Some(node_binary)) = (
        program("QUARRY_POOL_SV2", "SRI's pool_sv2 0.7.0"),
        program(
            "QUARRY_BITCOIN_NODE",
            "a Bitcoin Core v30 bitcoin-node built with IPC",
        ),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("btc");
    std::fs::create_dir_all(&datadir).unwrap();
    let node = Node::start_with(&node_binary, &datadir, free_port(), &["-ipcbind=unix"]);
    let (_, address) = anyone_can_spend();
    // Out of initial block download, so that the node hands out templates.
    node.call("generatetoaddress", json!([110, address.to_string()]));
    let (_pool, port, pool_lines) = start_pool_sv2(&pool_binary, dir.path(), &node, &datadir);

    let url = format!("stratum2+tcp://127.0.0.1:{port}/{PUBLIC}");
    let worker = format!("sri.{channel}");
    let mut miner = MinerProcess::start(&[
        "-o",
        &url,
        "-u",
        &worker,
        "-t",
        "1",
        "--sv2-channel",
        channel,
        "--api",
        "127.0.0.1:0",
    ]);
    let api = miner.api_address(Duration::from_secs(60));
    let done = poll(WAIT, || {
        let view = status(&api);
        (view["accepted"].as_u64().unwrap_or(0) >= SHARES).then_some(view)
    });
    let view = done.unwrap_or_else(|| {
        panic!(
            "{SHARES} shares not accepted by pool_sv2 in {WAIT:?}: {}\n{}\n{}",
            status(&api),
            miner.transcript(),
            pool_lines.try_iter().collect::<Vec<_>>().join("\n")
        )
    });
    drop(miner);
    let accepted = view["accepted"].as_u64().unwrap();
    let rejected = view["rejected"].as_u64().unwrap_or(0);
    // Every share is a block here, so a share found while the last one's block
    // reaches the node races the new job: the pool refuses it as stale, which is
    // the race, not a fault of the miner. (A share the miner drops itself, its job
    // already replaced, counts in the API's `stale`.)
    let stale = view["rejected_by_reason"]["stale-share"]
        .as_u64()
        .unwrap_or(0);
    let invalid = rejected.saturating_sub(stale);
    let dropped = view["stale"].as_u64().unwrap_or(0);
    let height = node.block_count();
    eprintln!(
        "quarry-miner, {channel} channel, on SRI's pool_sv2: {accepted} accepted, {invalid} rejected as invalid, {stale} rejected as stale, {dropped} dropped as stale; the node's chain went from 110 to {height}"
    );
    assert!(
        accepted * 100 >= (accepted + invalid) * 99,
        "{accepted} accepted, {invalid} rejected as invalid: {view}"
    );
    assert!(height > 110, "no block of the miner's reached the node");
}

#[test]
fn quarry_miner_mines_an_extended_channel_of_sris_pool() {
    mine_on_pool_sv2("extended");
}

#[test]
fn quarry_miner_mines_a_standard_channel_of_sris_pool() {
    mine_on_pool_sv2("standard");
}
