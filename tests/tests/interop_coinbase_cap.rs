//! The largest coinbase PPLNS makes by default: 110 accounts in the window, so the output
//! cap (100, the operator's included) binds, and pooler's cpuminer (`QUARRY_MINERD`) and
//! cpuminer-opt (`QUARRY_CPUMINER_OPT`) mine on it with their shares accepted. Skipped
//! when a variable is unset, unless `QUARRY_REQUIRE_PEERS` is set.

use std::time::Duration;

use quarry_tests::miner::{accepted_above, poll};
use quarry_tests::peers::{Peer, CPUMINER_OPT, MINERD};
use quarry_tests::regtest::address;
use quarry_tests::{Client, PoolProcess};
use serde_json::json;

/// Accounts credited before the miners start: more than the cap pays.
const ACCOUNTS: u16 = 110;
/// The default `--max-coinbase-outputs`.
const CAP: usize = 100;
/// Workers one connection may authorize.
const PER_CONNECTION: u16 = 55;

/// A pool whose current coinbase has `CAP` outputs.
async fn pool_at_the_cap(dir: &tempfile::TempDir) -> PoolProcess {
    let pool = PoolProcess::start(
        dir.path(),
        &[
            "--reward",
            "pplns",
            "--pool-fee-bps",
            "100",
            // No block during the run: the window stays as credited.
            "--chain-difficulty",
            "1",
            // One share difficulty for all: every account earns the same, far above the
            // dust threshold.
            "--start-difficulty",
            "1e-4",
            "--min-difficulty",
            "1e-4",
            "--max-difficulty",
            "1e-4",
            "--job-interval",
            "1",
            "--allow-cidr",
            "127.0.0.1/32",
        ],
    );
    for first in (0..ACCOUNTS).step_by(usize::from(PER_CONNECTION)) {
        let mut client = Client::tcp(pool.tcp).await;
        client.handshake(&format!("{}.rig", address(first))).await;
        for seed in first..first + PER_CONNECTION {
            let worker = format!("{}.rig", address(seed));
            let reply = client
                .request("mining.authorize", json!([worker, "x"]))
                .await;
            assert_eq!(reply["result"], json!(true), "{reply}");
            let reply = client.submit_valid(&worker, u64::from(seed)).await;
            assert_eq!(reply["result"], json!(true), "{reply}");
        }
    }
    let payouts = poll(Duration::from_secs(30), || {
        let payouts = pool.api_get("/api/payouts/current");
        let outputs = payouts["outputs"].as_array()?.len();
        let payees = payouts["payees"].as_array()?.len();
        (outputs == CAP && payees == usize::from(ACCOUNTS)).then_some(payouts)
    })
    .unwrap_or_else(|| panic!("{CAP} outputs: {}", pool.api_get("/api/payouts/current")));
    let carried = payouts["payees"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["paid"] == json!(0))
        .count();
    assert_eq!(
        carried,
        usize::from(ACCOUNTS) + 1 - CAP,
        "beyond the cap: carried"
    );
    eprintln!(
        "coinbase with {CAP} outputs: coinb2 {} bytes",
        payouts["coinb2"].as_str().unwrap().len() / 2
    );
    pool
}

fn run(peer: &Peer) {
    let Some(binary) = peer.binary() else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool = runtime.block_on(pool_at_the_cap(&dir));
    let url = format!("stratum+tcp://127.0.0.1:{}", pool.tcp.port());
    let cert = dir.path().join("unused-cert.pem");
    let miner = Peer::start(&binary, &url, "carol.rig", &cert);
    let accepted = accepted_above(&pool, "carol.rig", 9, Duration::from_secs(120));
    let view = quarry_tests::miner::worker(&pool, "carol.rig");
    assert!(
        accepted.is_some(),
        "{} on a {CAP}-output coinbase: {view:?}\n{}",
        peer.name,
        miner.transcript()
    );
    let outputs = pool.api_get("/api/payouts/current")["outputs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(outputs, CAP, "still at the cap");
    let view = view.unwrap();
    eprintln!(
        "{} on a {CAP}-output coinbase: {} accepted, {} rejected",
        peer.name, view["accepted"], view["rejected"]
    );
    assert_eq!(view["rejected"], json!(0), "{view}");
}

#[test]
fn minerd_mines_the_largest_coinbase() {
    run(&MINERD);
}

#[test]
fn cpuminer_opt_mines_the_largest_coinbase() {
    run(&CPUMINER_OPT);
}
