//! The real `quarry-miner` against the real `quarry-pool`: TLS with a pinned
//! certificate, a wrong pin, failover to a backup and back, and the benchmark.

use std::time::Duration;

use quarry_tests::miner::{accepted_above, worker, POOL_ARGS};
use quarry_tests::{MinerProcess, PoolProcess};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn mines_over_tls_with_a_pinned_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(dir.path(), POOL_ARGS);
    let url = format!("stratum+ssl://{}", pool.tls);
    let mut miner = MinerProcess::start(&[
        "-o",
        &url,
        "-u",
        "tls.rig1",
        "-t",
        "1",
        "--tls-fingerprint",
        &pool.fingerprint.to_uppercase(),
        "--api",
        "127.0.0.1:0",
    ]);
    let api = miner.api_address(WAIT);
    assert!(
        miner.wait_for(&["share accepted"], WAIT).is_some(),
        "{}",
        miner.transcript()
    );
    let accepted = accepted_above(&pool, "tls.rig1", 2, WAIT).expect("three accepted shares");
    let view = worker(&pool, "tls.rig1").expect("worker known to the pool");
    assert!(accepted >= 3, "{view}");
    assert_eq!(view["rejected_by_reason"]["malformed"], 0, "{view}");
    assert_eq!(view["rejected_by_reason"]["low_difficulty"], 0, "{view}");
    assert!(miner.printed(&format!("authorized; mining pool={url}")));

    let status: serde_json::Value = ureq::get(&format!("http://{api}/status"))
        .call()
        .expect("GET /status")
        .into_json()
        .expect("JSON status");
    assert!(status["accepted"].as_u64() >= Some(1), "{status}");
    assert_eq!(status["connection"], "mining", "{status}");
    assert_eq!(status["pool"], url, "{status}");
    let metrics = ureq::get(&format!("http://{api}/metrics"))
        .call()
        .expect("GET /metrics")
        .into_string()
        .expect("metrics text");
    assert!(
        metrics.contains(r#"quarry_miner_shares_total{result="accepted",reason=""}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"quarry_miner_hashrate{thread="0"}"#),
        "{metrics}"
    );
}

#[test]
fn refuses_a_pool_whose_certificate_does_not_match_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(dir.path(), POOL_ARGS);
    let wrong = "ab".repeat(32);
    assert_ne!(pool.fingerprint, wrong);
    let mut miner = MinerProcess::start(&[
        "-o",
        &format!("stratum+ssl://{}", pool.tls),
        "-u",
        "pinned.rig1",
        "-t",
        "1",
        "--tls-fingerprint",
        &wrong,
    ]);
    let expected = format!(
        "server certificate fingerprint {} does not match the pinned {wrong}",
        pool.fingerprint
    );
    for _ in 0..2 {
        assert!(
            miner.wait_for(&[&expected], WAIT).is_some(),
            "{}",
            miner.transcript()
        );
    }
    assert!(!miner.printed("authorized"), "{}", miner.transcript());
    assert_eq!(worker(&pool, "pinned.rig1"), None);
}

#[test]
fn fails_over_to_the_backup_and_returns_to_the_primary() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = PoolProcess::start(dir_a.path(), POOL_ARGS);
    let backup = PoolProcess::start(dir_b.path(), POOL_ARGS);
    let primary_url = format!("stratum+tcp://{}", primary.tcp);
    let mut miner = MinerProcess::start(&[
        "-o",
        &primary_url,
        "-o",
        &format!("stratum+tcp://{}", backup.tcp),
        "-u",
        "fail.rig1",
        "-t",
        "1",
        "--failback-interval",
        "1",
    ]);
    let before = accepted_above(&primary, "fail.rig1", 0, WAIT).expect("shares on the primary");

    let primary_addr = primary.tcp.to_string();
    primary.kill9();
    accepted_above(&backup, "fail.rig1", 0, Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "no shares on the backup within 10 s\n{}",
            miner.transcript()
        )
    });

    let primary = PoolProcess::start_on(dir_a.path(), &primary_addr, POOL_ARGS);
    assert!(
        miner
            .wait_for(&["primary pool answers again; switching back to it"], WAIT)
            .is_some(),
        "{}",
        miner.transcript()
    );
    let restored = worker(&primary, "fail.rig1").map_or(0, |v| v["accepted"].as_u64().unwrap_or(0));
    assert!(restored >= before, "the restarted primary kept its totals");
    accepted_above(&primary, "fail.rig1", restored, WAIT)
        .unwrap_or_else(|| panic!("no new shares on the primary\n{}", miner.transcript()));
}

#[test]
fn benchmark_prints_one_json_object() {
    let out = std::process::Command::new(quarry_tests::process::binary(
        "quarry-miner",
        "quarry-miner",
    ))
    .args(["--benchmark", "-t", "2", "--seconds", "0.5", "--json"])
    .output()
    .expect("running quarry-miner --benchmark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let mut keys: Vec<&str> = result
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "hashes",
            "hashes_per_second",
            "kernel",
            "per_thread",
            "seconds",
            "threads"
        ]
    );
    assert_eq!(result["threads"], 2);
    assert_eq!(result["per_thread"].as_array().unwrap().len(), 2);
    assert!(result["hashes"].as_u64().unwrap() > 0, "{result}");
}
