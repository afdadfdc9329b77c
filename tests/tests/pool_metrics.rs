//! `/metrics` of the real pool: valid Prometheus exposition (parsed by a real
//! text-format parser) whose share counters equal the JSON API's.

use std::collections::HashMap;
use std::time::Duration;

use quarry_protocol::Extranonce;
use quarry_tests::grind::grind;
use quarry_tests::{Client, PoolProcess};
use serde_json::Value;

const WORKER: &str = "frank.rig1";

fn scrape(pool: &PoolProcess) -> prometheus_parse::Scrape {
    let url = format!("http://{}/metrics", pool.api);
    let response = ureq::get(&url)
        .timeout(Duration::from_secs(30))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(
        response.content_type().contains("openmetrics-text"),
        "{}",
        response.content_type()
    );
    let text = response.into_string().expect("metrics text");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text exposition")
}

/// The value of `name` whose labels include every pair of `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name} is not a number: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_agree_with_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(
        dir.path(),
        &[
            "--start-difficulty",
            "1e-6",
            "--chain-difficulty",
            "1",
            "--metrics-per-worker",
            "true",
        ],
    );
    let mut client = Client::tcp(pool.tcp).await;
    client.handshake(WORKER).await;
    let en1 = client.extranonce1.expect("subscribed");
    let job = client.job.clone().expect("a job");
    let mut accepted = 0;
    for i in 0..5u64 {
        let share = grind(
            &job,
            en1,
            Extranonce::from_counter(i, 4),
            client.job_difficulty,
            0,
            true,
        );
        let reply = client
            .request("mining.submit", share.params(WORKER, &job))
            .await;
        assert_eq!(reply["result"], Value::Bool(true), "{reply}");
        accepted += 1;
        if i == 0 {
            // The same share again: a duplicate.
            let reply = client
                .request("mining.submit", share.params(WORKER, &job))
                .await;
            assert_eq!(reply["result"], Value::Null, "{reply}");
        }
    }
    // A share that misses the target: low difficulty.
    let low = grind(
        &job,
        en1,
        Extranonce::from_counter(99, 4),
        client.job_difficulty,
        0,
        false,
    );
    let reply = client
        .request("mining.submit", low.params(WORKER, &job))
        .await;
    assert_eq!(reply["result"], Value::Null, "{reply}");

    let api = pool.api_get("/api/pool");
    let worker = pool.api_get(&format!("/api/workers/{WORKER}"));
    let metrics = scrape(&pool);

    assert_eq!(api["accepted"], accepted);
    assert_eq!(
        value(&metrics, "quarry_shares_total", &[("result", "accepted")]),
        api["accepted"].as_f64().unwrap()
    );
    let mut rejected = 0.0;
    let by_reason: HashMap<String, Value> =
        serde_json::from_value(worker["rejected_by_reason"].clone()).unwrap();
    for (reason, count) in &by_reason {
        let metric = value(
            &metrics,
            "quarry_shares_total",
            &[("result", "rejected"), ("reason", reason)],
        );
        assert_eq!(metric, count.as_f64().unwrap(), "{reason}");
        rejected += metric;
    }
    assert_eq!(by_reason["duplicate"], 1);
    assert_eq!(by_reason["low_difficulty"], 1);
    assert_eq!(rejected, api["rejected"].as_f64().unwrap());
    assert_eq!(
        value(
            &metrics,
            "quarry_worker_accepted_total",
            &[("worker", WORKER)]
        ),
        worker["accepted"].as_f64().unwrap()
    );
    assert_eq!(
        value(&metrics, "quarry_blocks_found_total", &[]),
        api["blocks_found"].as_f64().unwrap()
    );
    assert_eq!(
        value(&metrics, "quarry_network_difficulty", &[]),
        api["network_difficulty"].as_f64().unwrap()
    );
    assert_eq!(value(&metrics, "quarry_sessions", &[]), 1.0);
    assert_eq!(
        value(&metrics, "quarry_connections_total", &[("listener", "tcp")]),
        1.0
    );
    // Every judged share went through the validation histogram.
    assert_eq!(
        value(&metrics, "quarry_share_validation_seconds_count", &[]),
        accepted as f64 + 2.0
    );
    // Accepted shares were committed by the store (plus the chain's genesis).
    assert!(value(&metrics, "quarry_store_commit_seconds_count", &[]) >= 1.0);
    assert!(value(&metrics, "quarry_store_batch_size_count", &[]) >= 1.0);
    assert_eq!(value(&metrics, "quarry_worker_difficulty_count", &[]), 1.0);
    // No webhook configured: its outcomes are exposed, all zero.
    for outcome in ["sent", "failed", "dropped"] {
        let labels = [("outcome", outcome)];
        assert_eq!(value(&metrics, "quarry_webhook_events_total", &labels), 0.0);
    }
    assert!(value(&metrics, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&metrics, "process_open_fds", &[]) > 0.0);
    assert!(value(&metrics, "process_cpu_seconds_total", &[]) >= 0.0);
}
