//! A small load through the real pool and the real `quarry-load`: correctness
//! only (every miner gets every clean job, every honest share is acknowledged
//! and counted by the pool's API), never timings.

use std::process::Command;

use quarry_tests::{Killed, PoolProcess};
use serde_json::Value;

/// Runs `quarry-load args…` and returns its JSON report; fails on a non-zero exit.
fn load(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_quarry-load"))
        .args(args)
        .arg("--json")
        .output()
        .expect("running quarry-load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quarry-load {args:?} failed:\n{stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON report ({e}):\n{stderr}"))
}

/// A `hold` report in which all `miners` connected and stayed, and each of
/// `blocks` clean jobs reached every one of them.
fn every_miner_saw_every_block(report: &Value, miners: u64, blocks: usize) {
    assert_eq!(report["connected"], miners, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["closed"], 0, "{report:#}");
    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), blocks, "{report:#}");
    for round in rounds {
        assert_eq!(round["received"], miners, "{report:#}");
    }
}

/// Holds `miners` connections on `pool` over the URL `url` makes, for two blocks.
fn hold(miners: u64, url: impl Fn(&PoolProcess) -> String) {
    let dir = tempfile::tempdir().unwrap();
    // Blocks need ~4,300 hashes, so the load generator finds them at once.
    let pool = PoolProcess::start(
        dir.path(),
        &["--allow-cidr", "127.0.0.0/8", "--chain-difficulty", "1e-6"],
    );
    let report = load(&[
        "hold",
        "-o",
        &url(&pool),
        "-n",
        &miners.to_string(),
        "--blocks",
        "2",
    ]);

    every_miner_saw_every_block(&report, miners, 2);
    // The pool recorded both blocks, found by the trigger connection.
    let blocks = pool.api_get("/api/blocks");
    let blocks = blocks["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert!(
        blocks.iter().all(|b| b["worker"] == "load.trigger"),
        "{blocks:?}"
    );
}

#[test]
fn a_thousand_miners_each_receive_every_blocks_clean_job() {
    hold(1000, |pool| format!("stratum+tcp://{}", pool.tcp));
}

#[test]
fn v2_miners_each_receive_every_new_block() {
    hold(300, |pool| {
        format!("stratum2+tcp://{}/{}", pool.v2, pool.authority)
    });
}

/// Submits 4,000 honest shares from 20 workers over the URL `url` makes (and the
/// extra `quarry-load` options it needs); every one is acknowledged and counted.
fn every_honest_share_is_acknowledged_and_counted(url: impl Fn(&PoolProcess) -> Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    // Shares at a pinned difficulty of 1e-9 (about one hash each); a network
    // difficulty of 1000 keeps any of them from solving a block, which would
    // turn shares in flight stale.
    let pool = PoolProcess::start(
        dir.path(),
        &[
            "--allow-cidr",
            "127.0.0.0/8",
            "--chain-difficulty",
            "1000",
            "--start-difficulty",
            "1e-9",
            "--min-difficulty",
            "1e-9",
            "--max-difficulty",
            "1e-9",
        ],
    );
    let api = format!("http://{}", pool.api);
    let mut args = vec!["shares".to_owned(), "-o".to_owned()];
    args.extend(url(&pool));
    args.extend(
        [
            "-m",
            "20",
            "--shares",
            "4000",
            "--duration",
            "300",
            "--api",
            &api,
        ]
        .map(str::to_owned),
    );
    let report = load(&args.iter().map(String::as_str).collect::<Vec<_>>());

    assert_eq!(report["connected"], 20, "{report:#}");
    assert_eq!(report["submitted"], 4000, "{report:#}");
    assert_eq!(report["accepted"], 4000, "{report:#}");
    assert_eq!(report["unanswered"], 0, "{report:#}");
    assert_eq!(report["rejected"], serde_json::json!({}), "{report:#}");
    assert_eq!(report["api"]["counted"], 4000, "{report:#}");
    assert_eq!(
        report["api"]["mismatched"],
        serde_json::json!([]),
        "{report:#}"
    );
    // The pool's own totals agree.
    let totals = pool.api_get("/api/pool");
    assert_eq!(totals["accepted"], 4000, "{totals:#}");
}

#[test]
fn every_honest_share_over_tls_is_acknowledged_and_counted() {
    every_honest_share_is_acknowledged_and_counted(|pool| {
        vec![
            format!("stratum+ssl://{}", pool.tls),
            "--tls-fingerprint".to_owned(),
            pool.fingerprint.clone(),
        ]
    });
}

#[test]
fn every_honest_share_over_v2_is_acknowledged_and_counted() {
    every_honest_share_is_acknowledged_and_counted(|pool| {
        vec![format!("stratum2+tcp://{}/{}", pool.v2, pool.authority)]
    });
}

#[test]
fn the_fan_out_floor_serves_quarry_load_hold() {
    use std::io::BufRead;
    use std::process::Stdio;

    let mut floor = Killed(
        Command::new(env!("CARGO_BIN_EXE_quarry-floor"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting quarry-floor"),
    );
    let mut address = String::new();
    std::io::BufReader::new(floor.0.stdout.take().expect("stdout"))
        .read_line(&mut address)
        .expect("quarry-floor's address");
    let url = format!("stratum+tcp://{}", address.trim());
    let report = load(&["hold", "-o", &url, "-n", "200", "--blocks", "2"]);

    every_miner_saw_every_block(&report, 200, 2);
}
