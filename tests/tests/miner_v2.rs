//! The real `quarry-miner` against the real `quarry-pool` over Stratum V2: an
//! extended and a standard channel, a pool that cannot prove the pinned authority
//! key, and failover lists that mix V1 and V2.

use std::time::Duration;

use quarry_protocol::sv2::AuthorityKeypair;
use quarry_tests::miner::{accepted_above, poll, worker, POOL_ARGS};
use quarry_tests::{MinerProcess, PoolProcess};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn v2_url(pool: &PoolProcess, key: &str) -> String {
    format!("stratum2+tcp://{}/{key}", pool.v2)
}

fn status(api: &str) -> Value {
    ureq::get(&format!("http://{api}/status"))
        .timeout(Duration::from_secs(10))
        .call()
        .expect("GET /status")
        .into_json()
        .expect("JSON status")
}

/// Mines on `pool` over V2 with `extra` miner arguments until the pool has accepted
/// at least three shares and the miner's count is the pool's; returns that count.
fn mines_over_v2(name: &str, extra: &[&str]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(dir.path(), POOL_ARGS);
    let url = v2_url(&pool, &pool.authority);
    let mut args = vec!["-o", &url, "-u", name, "-t", "1", "--api", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut miner = MinerProcess::start(&args);
    let api = miner.api_address(WAIT);
    assert!(
        miner.wait_for(&["share accepted"], WAIT).is_some(),
        "{}",
        miner.transcript()
    );
    accepted_above(&pool, name, 2, WAIT)
        .unwrap_or_else(|| panic!("three accepted shares\n{}", miner.transcript()));
    // Shares keep coming; between two of them both sides have counted the same.
    let agreed = poll(WAIT, || {
        let mine = status(&api);
        let view = worker(&pool, name)?;
        (mine["accepted"] == view["accepted"]).then_some((mine, view))
    });
    let (mine, view) = agreed.unwrap_or_else(|| {
        panic!(
            "the miner's and the pool's counts never agreed: {} vs {}\n{}",
            status(&api),
            worker(&pool, name).unwrap_or_default(),
            miner.transcript()
        )
    });
    assert_eq!(view["rejected"], 0, "{view}");
    assert_eq!(mine["rejected"], 0, "{mine}");
    assert_eq!(mine["connection"], "mining", "{mine}");
    assert_eq!(mine["pool"], url, "{mine}");
    assert!(miner.printed(&format!("authorized; mining pool={url}")));
    let accepted = mine["accepted"].as_u64().unwrap();
    eprintln!(
        "{name}: {accepted} shares accepted by both, {} rejected",
        view["rejected"]
    );
    accepted
}

#[test]
fn mines_on_an_extended_channel() {
    assert!(mines_over_v2("v2.extended", &[]) >= 3);
}

#[test]
fn mines_on_a_standard_channel() {
    assert!(mines_over_v2("v2.standard", &["--sv2-channel", "standard"]) >= 3);
}

#[test]
fn refuses_a_pool_that_does_not_prove_the_pinned_key() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(dir.path(), POOL_ARGS);
    let wrong = AuthorityKeypair::generate().public.to_string();
    assert_ne!(wrong, pool.authority);
    let url = v2_url(&pool, &wrong);
    let mut miner = MinerProcess::start(&["-o", &url, "-u", "v2.pinned", "-t", "1"]);
    let refusal = "refusing the pool: it did not prove the authority key in its URL";
    for attempt in 0..2 {
        let line = miner
            .wait_for(&[refusal], WAIT)
            .unwrap_or_else(|| panic!("refusal {attempt}\n{}", miner.transcript()));
        assert!(line.contains(&url), "the log names the URL: {line}");
    }
    assert!(!miner.printed("authorized"), "{}", miner.transcript());
    assert!(!miner.printed("share accepted"), "{}", miner.transcript());
    assert_eq!(worker(&pool, "v2.pinned"), None, "no channel was opened");
}

#[test]
fn fails_over_from_a_v2_pool_with_the_wrong_key_to_v1() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(dir.path(), POOL_ARGS);
    let wrong = v2_url(&pool, &AuthorityKeypair::generate().public.to_string());
    let v1 = format!("stratum+tcp://{}", pool.tcp);
    let mut miner = MinerProcess::start(&["-o", &wrong, "-o", &v1, "-u", "mix.v1", "-t", "1"]);
    let accepted = accepted_above(&pool, "mix.v1", 2, WAIT)
        .unwrap_or_else(|| panic!("shares over V1\n{}", miner.transcript()));
    miner.drain();
    assert!(miner.printed("refusing the pool"), "{}", miner.transcript());
    assert!(miner.printed(&format!("authorized; mining pool={v1}")));
    let view = worker(&pool, "mix.v1").unwrap();
    assert_eq!(view["rejected"], 0, "{view}");
    eprintln!("mix.v1: {accepted} shares accepted over V1 after refusing the V2 pool");
}

#[test]
fn fails_over_from_an_unreachable_v1_pool_to_v2() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(dir.path(), POOL_ARGS);
    // A port nothing listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let v1 = format!("stratum+tcp://{closed}");
    let v2 = v2_url(&pool, &pool.authority);
    let mut miner = MinerProcess::start(&["-o", &v1, "-o", &v2, "-u", "mix.v2", "-t", "1"]);
    let accepted = accepted_above(&pool, "mix.v2", 2, WAIT)
        .unwrap_or_else(|| panic!("shares over V2\n{}", miner.transcript()));
    miner.drain();
    assert!(miner.printed(&format!("authorized; mining pool={v2}")));
    let view = worker(&pool, "mix.v2").unwrap();
    assert_eq!(view["rejected"], 0, "{view}");
    eprintln!("mix.v2: {accepted} shares accepted over V2 after the V1 pool failed");
}
