//! A battery of malformed input nobody here wrote: every string of the Big List
//! of Naughty Strings (tests/fixtures/blns) as a raw line and in every position
//! of every Stratum request, against the real pool. Each request gets one
//! well-formed reply, the pool keeps answering, and an honest miner on another
//! connection keeps getting its shares acknowledged.

use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};

const HONEST: &str = "honest.rig";

fn naughty_strings() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/blns/blns.json");
    let text = std::fs::read_to_string(path).expect("the naughty strings fixture");
    serde_json::from_str(&text).expect("a JSON array of strings")
}

/// Every message built around `s`: as a raw line, a method, an id, and each
/// parameter of each client request.
fn messages(s: &str) -> Vec<String> {
    let calls = [
        json!({"id": 1, "method": s, "params": []}),
        json!({"id": s, "method": "mining.extranonce.subscribe", "params": []}),
        json!({"id": 2, "method": "mining.subscribe", "params": [s, s]}),
        json!({"id": 3, "method": "mining.authorize", "params": [s, s]}),
        json!({"id": 4, "method": "mining.suggest_difficulty", "params": [s]}),
        json!({"id": 5, "method": "mining.configure", "params": [[s], {s: s}]}),
        json!({"id": 6, "method": "mining.submit", "params": [s, s, s, s, s]}),
        json!({"id": 7, "method": "mining.submit", "params": [HONEST, s, "00000000", "00000000", "00000000", s]}),
        json!({"id": 8, "method": "mining.submit", "params": [HONEST, "1", s, "00000000", s]}),
        json!({"id": 9, "method": s, "params": s}),
    ];
    std::iter::once(s.to_owned())
        .chain(calls.iter().map(Value::to_string))
        .collect()
}

/// A reply is a JSON-RPC response whose error, if any, is `[code, message, null]`
/// with a Stratum code.
fn assert_well_formed(reply: &Value, input: &str) {
    if reply.get("method").is_some() {
        return; // a notification (a job, a difficulty)
    }
    let error = &reply["error"];
    if !error.is_null() {
        let code = error[0].as_i64().unwrap_or_default();
        assert!(
            (20..=25).contains(&code) && error[1].is_string() && error[2].is_null(),
            "reply {reply} to {input:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naughty_strings_in_every_position_leave_the_pool_answering() {
    let dir = tempfile::tempdir().unwrap();
    // Exempt from rate limits: this is about content, not volume.
    let pool = PoolProcess::start(
        dir.path(),
        &[
            "--allow-cidr",
            "127.0.0.0/8",
            "--start-difficulty",
            "1e-7",
            "--max-difficulty",
            "1e-7",
            "--chain-difficulty",
            "1",
        ],
    );
    let mut honest = Client::tcp(pool.tcp).await;
    honest.handshake(HONEST).await;

    let mut attacker = Client::tcp(pool.tcp).await;
    let mut reconnects = 0;
    let strings = naughty_strings();
    for (n, s) in strings.iter().enumerate() {
        for line in messages(s) {
            if attacker.send_raw_checked(&line).await.is_err() {
                attacker = Client::tcp(pool.tcp).await;
                reconnects += 1;
            }
        }
        // The pool answers a probe after everything above, with every reply
        // before it well formed.
        let probe = json!({"id": "probe", "method": "mining.extranonce.subscribe", "params": []});
        if attacker.send_raw_checked(&probe.to_string()).await.is_err() {
            attacker = Client::tcp(pool.tcp).await;
            reconnects += 1;
            attacker.send_raw(&probe.to_string()).await;
        }
        loop {
            let Some(reply) = attacker.recv_or_closed().await else {
                panic!("the pool closed the connection after {s:?}");
            };
            assert_well_formed(&reply, s);
            if reply["id"] == json!("probe") && reply.get("method").is_none() {
                assert_eq!(reply["result"], json!(true));
                break;
            }
        }
        // Meanwhile an honest miner mines on.
        if n % 25 == 0 {
            let reply = honest.submit_valid(HONEST, n as u64).await;
            assert_eq!(
                reply["result"],
                json!(true),
                "honest share after {s:?}: {reply}"
            );
        }
    }
    eprintln!("{} naughty strings, {reconnects} reconnects", strings.len());
    let worker = pool.api_get("/api/workers/honest.rig");
    assert_eq!(worker["rejected"], json!(0), "{worker}");
    assert_eq!(
        worker["accepted"],
        json!(strings.len().div_ceil(25)),
        "{worker}"
    );
}
