//! Every byte the pool writes, through every path, is whole JSON lines: one
//! non-empty object per `\n` (a strict miner such as cpuminer-opt drops the
//! connection on anything else). Error replies carry the request's id whenever
//! it can be read. A resumed session is handed work it never had.

use std::sync::{Arc, Mutex};

use quarry_protocol::Extranonce;
use quarry_tests::client::tls_stream;
use quarry_tests::grind::grind;
use quarry_tests::miner::poll;
use quarry_tests::wire::{whole_json_lines, Recorded};
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};
use tokio::net::TcpStream;

const WORKER: &str = "alice.rig1";

type Recording = Arc<Mutex<Vec<u8>>>;

async fn recorded_tcp(pool: &PoolProcess) -> (Client, Recording) {
    let (stream, seen) = Recorded::new(TcpStream::connect(pool.tcp).await.expect("connect"));
    (Client::over(stream), seen)
}

async fn recorded_tls(pool: &PoolProcess) -> (Client, Recording) {
    let (stream, seen) = Recorded::new(tls_stream(pool.tls, &pool.certificate_pem()).await);
    (Client::over(stream), seen)
}

/// Reads until the pool answers `probe`, so everything the pool sent before
/// it is in the recording.
async fn settle(client: &mut Client) {
    let reply = client.request("mining.ping", json!([])).await;
    assert!(
        reply["error"].is_array(),
        "unknown method answered: {reply}"
    );
}

/// Every path a session can take: configure, subscribe, authorize, extranonce
/// subscribe, vardiff up (fast shares) and down (a suggestion), new blocks
/// (clean jobs), each reject, malformed lines, unknown methods.
async fn every_path(mut client: Client) -> Client {
    client
        .request(
            "mining.configure",
            json!([["version-rolling"], {"version-rolling.mask": "1fffe000"}]),
        )
        .await;
    client.handshake(WORKER).await;
    client
        .request("mining.extranonce.subscribe", json!([]))
        .await;
    let first_prev = client.job.as_ref().expect("a job").prevhash;

    // Shares until two blocks were found and vardiff has raised the difficulty.
    // A share sent before the clean job of a block found by the one before it
    // reached us is stale, at most once per block.
    let mut counter = 0;
    let mut blocks = 0;
    let mut stale = 0;
    let mut last_prev = first_prev;
    while blocks < 2 || client.difficulty.get() <= 1e-6 {
        counter += 1;
        assert!(counter < 5_000, "no two blocks and no vardiff change");
        let reply = client.submit_valid(WORKER, counter).await;
        if reply["error"][0] == json!(21) {
            stale += 1;
            while client.job.as_ref().expect("a job").prevhash == last_prev {
                client.next_notification("mining.notify").await;
            }
        } else {
            assert_eq!(reply["result"], json!(true), "{reply}");
        }
        let prev = client.job.as_ref().expect("a job").prevhash;
        if prev != last_prev {
            blocks += 1;
            last_prev = prev;
        }
        assert!(stale <= blocks, "{stale} stale shares for {blocks} blocks");
    }
    // Vardiff down: a suggestion below the current difficulty.
    let reply = client
        .request("mining.suggest_difficulty", json!([1e-6]))
        .await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    client.next_notification("mining.set_difficulty").await;
    client.next_notification("mining.notify").await;

    // Each reject.
    let share = client.valid_share(WORKER, 1_000_000);
    let reply = client.request("mining.submit", share.clone()).await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    let reply = client.request("mining.submit", share.clone()).await;
    assert_eq!(reply["error"][0], json!(22), "{reply}");
    let mut stale = share.clone();
    stale[1] = json!("00");
    let reply = client.request("mining.submit", stale).await;
    assert_eq!(reply["error"][0], json!(21), "{reply}");
    let mut unauthorized = share.clone();
    unauthorized[0] = json!("mallory.rig");
    let reply = client.request("mining.submit", unauthorized).await;
    assert_eq!(reply["error"][0], json!(24), "{reply}");
    let mut short = share.clone();
    short[2] = json!("00");
    let reply = client.request("mining.submit", short).await;
    assert_eq!(reply["error"][0], json!(20), "{reply}");
    let job = client.job.clone().expect("a job");
    let en1 = client.extranonce1.expect("subscribed");
    let en2 = Extranonce::from_counter(2_000_000, client.extranonce2_size);
    let low = grind(&job, en1, en2, client.difficulty, 0, false).params(WORKER, &job);
    let reply = client.request("mining.submit", low).await;
    assert_eq!(reply["error"][0], json!(23), "{reply}");

    // Malformed lines and unknown methods.
    for line in [
        "not json",
        "{}",
        "[1,2,3]",
        r#"{"id":7,"method":"mining.subscribe","params":"x"}"#,
        r#"{"id":8,"method":5,"params":[]}"#,
        r#"{"id":9,"method":"mining.submit","params":[1,2]}"#,
        r#"{"id":10,"method":"no.such.method","params":[]}"#,
    ] {
        client.send_raw(line).await;
    }
    settle(&mut client).await;
    client
}

async fn assert_every_line_whole(client: Client, seen: Recording) {
    let mut client = every_path(client).await;
    settle(&mut client).await;
    let bytes = seen.lock().expect("recording").clone();
    let lines = whole_json_lines(&bytes);
    let count = |method: &str| lines.iter().filter(|l| l["method"] == method).count();
    // The paths above were all taken: several difficulties, two new blocks.
    assert!(count("mining.set_difficulty") >= 3, "{lines:?}");
    assert!(count("mining.notify") >= 4, "{lines:?}");
    let errors = lines.iter().filter(|l| l["error"].is_array()).count();
    assert!(errors >= 12, "{errors} error replies");
}

fn start(dir: &tempfile::TempDir, chain_difficulty: &str) -> PoolProcess {
    PoolProcess::start(
        dir.path(),
        &[
            "--start-difficulty",
            "1e-6",
            "--chain-difficulty",
            chain_difficulty,
            "--share-interval",
            "1",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_the_pool_writes_is_one_json_object_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir, "2e-5");
    let (client, seen) = recorded_tcp(&pool).await;
    assert_every_line_whole(client, seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_the_pool_writes_is_one_json_object_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir, "2e-5");
    let (client, seen) = recorded_tls(&pool).await;
    assert_every_line_whole(client, seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_keep_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir, "1");
    let mut client = Client::tcp(pool.tcp).await;
    for line in [
        r#"{"id":7,"method":"mining.subscribe","params":"x"}"#,
        r#"{"id":7,"method":"mining.subscribe","params":{"a":1}}"#,
        r#"{"id":7,"method":5,"params":[]}"#,
        r#"{"id":7}"#,
        r#"{"id":7,"method":"mining.submit","params":[]}"#,
        r#"{"id":7,"method":"mining.authorize","params":[5]}"#,
        r#"{"id":7,"method":"mining.suggest_difficulty","params":[-1]}"#,
        r#"{"id":7,"method":"no.such.method","params":[]}"#,
    ] {
        client.send_raw(line).await;
        let reply = client.recv().await;
        assert_eq!(reply["id"], json!(7), "{line} -> {reply}");
        assert!(reply["error"].is_array(), "{line} -> {reply}");
        assert_eq!(reply["result"], Value::Null, "{line} -> {reply}");
    }
    // Only when the id itself cannot be read is it null.
    for line in ["not json", r#"{"id":{"x":7},"method":"m"}"#, "[7]"] {
        client.send_raw(line).await;
        let reply = client.recv().await;
        assert_eq!(reply["id"], Value::Null, "{line} -> {reply}");
        assert!(reply["error"].is_array(), "{line} -> {reply}");
    }
}

/// A miner that starts its search over (extranonce2 0, nonce 0) on every
/// notify, as cpuminer-opt does: after a reconnect that resumes its session
/// (same extranonce1), the work it is handed is new, so it finds no
/// duplicates; and a share it found before the reconnect still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_is_handed_new_work_and_keeps_its_old() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir, "1");
    let mut first = Client::tcp(pool.tcp).await;
    let reply = first
        .request("mining.subscribe", json!(["quarry-tests/1"]))
        .await;
    let session_id = reply["result"][1].as_str().expect("session id").to_owned();
    first.extranonce1 = session_id.parse().ok();
    first.extranonce2_size = 4;
    first
        .request("mining.authorize", json!([WORKER, "x"]))
        .await;
    while first.job.is_none() {
        first.next_notification("mining.notify").await;
    }
    let from_zero = |client: &Client, nth: u32| {
        let job = client.job.clone().expect("a job");
        let en1 = client.extranonce1.expect("subscribed");
        let en2 = Extranonce::from_counter(0, 4);
        let mut grinder =
            quarry_tests::grind::Grinder::new(&job, en1, en2, client.job_difficulty, 0);
        let share = (0..nth).map(|_| grinder.next(true)).last().expect("nth");
        share.params(WORKER, &job)
    };
    let mined = [from_zero(&first, 1), from_zero(&first, 2)];
    let reply = first.request("mining.submit", mined[0].clone()).await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    // The second share is "in flight" when the connection drops. A live session cannot
    // be resumed: wait until the pool has closed it (its lease is parked by then).
    drop(first);
    let closed = poll(std::time::Duration::from_secs(30), || {
        pool.api_get("/api/sessions")["sessions"]
            .as_array()?
            .is_empty()
            .then_some(())
    });
    assert!(closed.is_some(), "{}", pool.api_get("/api/sessions"));

    let (mut resumed, seen) = recorded_tcp(&pool).await;
    let reply = resumed
        .request("mining.subscribe", json!(["quarry-tests/1", session_id]))
        .await;
    assert_eq!(reply["result"][1], json!(session_id), "resumed: {reply}");
    resumed.extranonce1 = session_id.parse().ok();
    resumed.extranonce2_size = 4;
    resumed
        .request("mining.authorize", json!([WORKER, "x"]))
        .await;
    while resumed.job.is_none() {
        resumed.next_notification("mining.notify").await;
    }
    let job = resumed.job.clone().expect("a job");
    assert!(job.clean_jobs, "the first job of a session is clean");
    assert_ne!(
        job.job_id.to_string(),
        mined[0][1],
        "a variant, not the job as it was"
    );

    let reply = resumed.request("mining.submit", mined[1].clone()).await;
    assert_eq!(
        reply["result"],
        json!(true),
        "the share from before: {reply}"
    );
    for nth in 1..=20 {
        let share = from_zero(&resumed, nth);
        let reply = resumed.request("mining.submit", share).await;
        assert_eq!(
            reply["result"],
            json!(true),
            "restarted search, share {nth}: {reply}"
        );
    }
    let totals = pool.api_get("/api/pool");
    assert_eq!(totals["rejected"], json!(0), "{totals}");
    // The reconnect path writes whole lines too.
    settle(&mut resumed).await;
    let lines = whole_json_lines(&seen.lock().expect("recording"));
    assert!(lines.iter().any(|l| l["method"] == "mining.notify"));
}
