//! The pool's Stratum sessions over real TCP and TLS sockets: exact replies for
//! the whole flow and for every reject code.

use quarry_protocol::{Difficulty, Extranonce};
use quarry_tests::grind::grind;
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};

const WORKER: &str = "alice.rig1";

fn start(dir: &tempfile::TempDir) -> PoolProcess {
    // Share difficulty 1e-6 (~4,300 hashes a share); network difficulty 1 (no accidental blocks).
    PoolProcess::start(
        dir.path(),
        &["--start-difficulty", "1e-6", "--chain-difficulty", "1"],
    )
}

async fn flow(mut client: Client) {
    let reply = client
        .request(
            "mining.configure",
            json!([["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}]),
        )
        .await;
    assert_eq!(
        reply,
        json!({"id": 1, "result": {"version-rolling": true, "version-rolling.mask": "1fffe000"}, "error": null})
    );

    let reply = client
        .request("mining.subscribe", json!(["quarry-tests/1"]))
        .await;
    let result = &reply["result"];
    let session_id = result[0][1][1].as_str().expect("notify subscription id");
    assert_eq!(result[0][1][0], "mining.notify");
    assert_eq!(
        result[1].as_str().map(str::len),
        Some(8),
        "4-byte extranonce1: {reply}"
    );
    assert_eq!(result[1].as_str(), Some(session_id));
    assert_eq!(result[2], json!(4));

    // Work comes once the session is authorized: the reply, then
    // set_difficulty before the first notify, which is clean.
    assert!(client.pending.is_empty(), "no work before authorize");
    let reply = client
        .request("mining.authorize", json!([WORKER, "x"]))
        .await;
    assert_eq!(reply, json!({"id": 3, "result": true, "error": null}));
    let first = client.recv().await;
    assert_eq!(
        first,
        json!({"id": null, "method": "mining.set_difficulty", "params": [1e-6]})
    );
    let second = client.recv().await;
    assert_eq!(second["method"], "mining.notify");
    assert_eq!(second["params"][8], json!(true));
    let reply = client
        .request("mining.extranonce.subscribe", json!([]))
        .await;
    assert_eq!(reply, json!({"id": 4, "result": true, "error": null}));

    let en1: Extranonce = result[1].as_str().unwrap().parse().unwrap();
    let job = client.job.clone().expect("a job");
    let share = grind(
        &job,
        en1,
        Extranonce::from_counter(7, 4),
        client.job_difficulty,
        0,
        true,
    );
    let reply = client
        .request("mining.submit", share.params(WORKER, &job))
        .await;
    assert_eq!(reply, json!({"id": 5, "result": true, "error": null}));

    // With version rolling granted, a 6th parameter inside the mask is accepted.
    let mut fields = share.fields;
    fields.extranonce2 = Extranonce::from_counter(8, 4);
    fields.version = job.version.0 | 0x0000_2000;
    let rolled =
        grind_version(&job, fields, client.job_difficulty).expect("a share within 5M nonces");
    let mut params = rolled.params(WORKER, &job);
    let bits = rolled.fields.version & 0x1fff_e000;
    params
        .as_array_mut()
        .unwrap()
        .push(json!(format!("{bits:08x}")));
    let reply = client.request("mining.submit", params).await;
    assert_eq!(reply, json!({"id": 6, "result": true, "error": null}));

    let reply = client
        .request("mining.suggest_difficulty", json!(["0.5"]))
        .await;
    assert_eq!(reply, json!({"id": 7, "result": true, "error": null}));
    let reply = client.request("mining.get_transactions", json!([])).await;
    assert_eq!(
        reply,
        json!({"id": 8, "result": null, "error": [20, "unknown method \"mining.get_transactions\"", null]})
    );
    // An ESP-Miner style request-shaped pong is answered, not choked on.
    let reply = client.request("pong", json!([])).await;
    assert_eq!(reply, json!({"id": 9, "result": true, "error": null}));
}

/// Grinds nonces with a fixed rolled version.
fn grind_version(
    job: &quarry_protocol::Notify,
    fields: quarry_protocol::share::ShareFields,
    difficulty: Difficulty,
) -> Option<quarry_tests::grind::Share> {
    use quarry_protocol::share::header_hash;
    use quarry_protocol::target::meets_target;
    let root = job.merkle_root(&fields.extranonce1, &fields.extranonce2);
    let target = difficulty.to_target();
    let mut fields = fields;
    for nonce in 0..5_000_000u32 {
        fields.nonce = nonce;
        let hash = header_hash(&job.header_with_root(root, &fields));
        if meets_target(&hash, &target) {
            return Some(quarry_tests::grind::Share { fields, hash });
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_session_flow_over_tcp_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir);
    flow(Client::tcp(pool.tcp).await).await;
    flow(Client::tls(pool.tls, &pool.certificate_pem()).await).await;
    let worker = pool.api_get("/api/workers/alice.rig1");
    assert_eq!(worker["accepted"], json!(4), "{worker}");
    assert_eq!(worker["account"], json!("alice"));
}

fn error(id: u64, code: u64, message: &str) -> Value {
    json!({"id": id, "result": null, "error": [code, message, null]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reject_code() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir);
    let mut client = Client::tcp(pool.tcp).await;
    let params = json!([WORKER, "1", "00000000", "00000000", "00000000"]);

    let reply = client.request("mining.submit", params.clone()).await;
    assert_eq!(reply, error(1, 25, "not subscribed"));

    let reply = client.request("mining.subscribe", json!([])).await;
    let en1: Extranonce = reply["result"][1].as_str().unwrap().parse().unwrap();
    let reply = client.request("mining.submit", params.clone()).await;
    assert_eq!(reply, error(3, 24, "unauthorized worker"));

    let reply = client
        .request("mining.authorize", json!([WORKER, ""]))
        .await;
    assert_eq!(reply["result"], json!(true));
    while client.job.is_none() {
        client.next_notification("mining.notify").await;
    }
    let job = client.job.clone().unwrap();
    let job_id = job.job_id.to_string();
    let ntime = format!("{:08x}", job.ntime.0);

    let reply = client
        .request(
            "mining.submit",
            json!([WORKER, job_id, "0000", ntime, "00000000"]),
        )
        .await;
    assert_eq!(
        reply,
        error(
            5,
            20,
            "incorrect size of extranonce2: expected 4 bytes, got 2"
        )
    );
    let reply = client
        .request(
            "mining.submit",
            json!([WORKER, "ffffffff", "00000000", ntime, "00000000"]),
        )
        .await;
    assert_eq!(reply, error(6, 21, "job not found"));
    let early = format!("{:08x}", job.ntime.0 - 1);
    let reply = client
        .request(
            "mining.submit",
            json!([WORKER, job_id, "00000000", early, "00000000"]),
        )
        .await;
    assert_eq!(reply, error(7, 20, "ntime out of range"));
    let late = format!("{:08x}", job.ntime.0 + 7001);
    let reply = client
        .request(
            "mining.submit",
            json!([WORKER, job_id, "00000000", late, "00000000"]),
        )
        .await;
    assert_eq!(reply, error(8, 20, "ntime out of range"));
    let reply = client
        .request(
            "mining.submit",
            json!([WORKER, job_id, "00000000", ntime, "00000000", "00002000"]),
        )
        .await;
    assert_eq!(
        reply,
        error(
            9,
            20,
            "version bits 00002000 outside the negotiated mask 00000000"
        )
    );
    let reply = client
        .request(
            "mining.submit",
            json!([WORKER, job_id, "00000000", ntime, "0000000"]),
        )
        .await;
    assert_eq!(reply["error"][0], json!(20));
    assert!(
        reply["error"][1].as_str().unwrap().contains("\"0000000\""),
        "{reply}"
    );

    let miss = grind(
        &job,
        en1,
        Extranonce::from_counter(1, 4),
        client.job_difficulty,
        0,
        false,
    );
    let reply = client
        .request("mining.submit", miss.params(WORKER, &job))
        .await;
    assert_eq!(reply["error"][0], json!(23), "{reply}");
    assert!(reply["error"][1]
        .as_str()
        .unwrap()
        .starts_with("low difficulty share of "));

    let hit = grind(
        &job,
        en1,
        Extranonce::from_counter(2, 4),
        client.job_difficulty,
        0,
        true,
    );
    let reply = client
        .request("mining.submit", hit.params(WORKER, &job))
        .await;
    assert_eq!(reply, json!({"id": 12, "result": true, "error": null}));
    let reply = client
        .request("mining.submit", hit.params(WORKER, &job))
        .await;
    assert_eq!(reply, error(13, 22, "duplicate share"));
    // The same share with upper-case hex is the same header: still a duplicate.
    let mut upper = hit.params(WORKER, &job);
    for i in 2..5 {
        upper[i] = json!(upper[i].as_str().unwrap().to_uppercase());
    }
    let reply = client.request("mining.submit", upper).await;
    assert_eq!(reply, error(14, 22, "duplicate share"));

    let worker = pool.api_get("/api/workers/alice.rig1");
    assert_eq!(worker["accepted"], json!(1), "{worker}");
    assert_eq!(
        worker["rejected_by_reason"],
        json!({"duplicate": 2, "low_difficulty": 1, "malformed": 5, "stale": 1, "unauthorized": 0}),
        "{worker}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_get_errors_and_the_session_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir);
    let mut client = Client::tcp(pool.tcp).await;
    client.send_raw("this is not json").await;
    let reply = client.recv().await;
    assert_eq!(reply["id"], Value::Null);
    assert_eq!(reply["error"][0], json!(20));
    client
        .send_raw(r#"{"id":1,"method":"mining.suggest_difficulty","params":[-1]}"#)
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["error"][0], json!(20), "{reply}");
    client
        .send_raw(r#"{"id":2,"method":"mining.subscribe","params":{}}"#)
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["error"][0], json!(20), "{reply}");
    client.handshake(WORKER).await;
    // A line longer than the maximum closes the connection.
    client.send_raw(&"x".repeat(20_000)).await;
    while client.recv_or_closed().await.is_some() {}
}

/// A difficulty change reaches the miner at once, not with the next job (which
/// may be half a minute away): `set_difficulty`, then the same work under a new
/// job id. Shares on the old id are still judged (and credited) at the old
/// difficulty, shares on the new id at the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_difficulty_change_goes_out_at_once_with_the_work_under_a_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir);
    let mut client = Client::tcp(pool.tcp).await;
    client.handshake(WORKER).await;
    let old = client.job.clone().expect("a job");
    let en1 = client.extranonce1.expect("subscribed");
    let (low, high) = (
        Difficulty::new(1e-6).unwrap(),
        Difficulty::new(4e-6).unwrap(),
    );
    assert_eq!(client.job_difficulty, low);

    let reply = client
        .request("mining.suggest_difficulty", json!([4e-6]))
        .await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    let set = client.next_notification("mining.set_difficulty").await;
    assert_eq!(set["params"], json!([4e-6]));
    let notify = client.next_notification("mining.notify").await;
    assert_eq!(notify["params"][8], json!(false), "{notify}");
    let variant = client.job.clone().expect("the re-announced job");
    assert_ne!(variant.job_id, old.job_id);
    let same_work = quarry_protocol::Notify {
        job_id: old.job_id.clone(),
        clean_jobs: old.clean_jobs,
        coinb2: old.coinb2.clone(),
        ..variant.clone()
    };
    assert_eq!(
        same_work, old,
        "only the id, the clean flag and coinb2 differ"
    );
    // coinb2 only in the two variant bytes it starts with: new work even to
    // a miner that starts its search over.
    assert_ne!(variant.coinb2.0[..2], old.coinb2.0[..2]);
    assert_eq!(variant.coinb2.0[2..], old.coinb2.0[2..]);
    assert_eq!(client.job_difficulty, high);

    // The old id: a share at the old difficulty is still good.
    let share = grind(&old, en1, Extranonce::from_counter(1, 4), low, 0, true);
    let reply = client
        .request("mining.submit", share.params(WORKER, &old))
        .await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    // The new id: the same difficulty is not enough any more ...
    let mut grinder =
        quarry_tests::grind::Grinder::new(&variant, en1, Extranonce::from_counter(2, 4), low, 0);
    let only_low = std::iter::repeat_with(|| grinder.next(true))
        .find(|s| !quarry_protocol::target::meets_target(&s.hash, &high.to_target()))
        .expect("a hash between the two difficulties");
    let reply = client
        .request("mining.submit", only_low.params(WORKER, &variant))
        .await;
    assert_eq!(reply["error"][0], json!(23), "{reply}");
    // ... but the new difficulty is.
    let share = grind(&variant, en1, Extranonce::from_counter(3, 4), high, 0, true);
    let reply = client
        .request("mining.submit", share.params(WORKER, &variant))
        .await;
    assert_eq!(reply["result"], json!(true), "{reply}");

    let worker = pool.api_get("/api/workers/alice.rig1");
    assert_eq!(worker["accepted"], json!(2), "{worker}");
    let credited = worker["accepted_difficulty"].as_f64().expect("a number");
    assert!((credited - 5e-6).abs() < 1e-12, "{worker}");
}
