//! Solo mining on the embedded chain over real sockets: the username is the miner's
//! address, checked against the chain's network at authorize (error 24 otherwise); every
//! miner's jobs carry a coinbase paying its own address less the fee, the same one for
//! every connection of that address; a block found pays its finder exactly that, the
//! operator's webhook hears of it with its payout table, and the finder's earnings show
//! it while nobody else's do.

use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Block, ScriptBuf, Transaction};
use quarry_protocol::Notify;
use quarry_tests::miner::poll;
use quarry_tests::process::EASY_SHARES;
use quarry_tests::regtest::address;
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The pool's fee, in basis points.
const FEE_BPS: u64 = 200;

fn solo_pool(dir: &tempfile::TempDir, extra: &[&str]) -> PoolProcess {
    let solo: &[&str] = &["--reward", "solo", "--pool-fee-bps", "200"];
    PoolProcess::start(dir.path(), &[solo, EASY_SHARES, extra].concat())
}

/// A webhook receiver on loopback: its URL, and the events it is POSTed.
async fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/events",
        post(move |Json(event): Json<Value>| async move {
            let _ = tx.send(event);
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// The outputs of `job`'s coinbase (with zero extranonces): script and amount.
fn outputs(job: &Notify) -> Vec<(ScriptBuf, u64)> {
    let hex = format!("{}{}{}", job.coinb1, "00".repeat(8), job.coinb2);
    let tx: Transaction = deserialize_hex(&hex).unwrap();
    tx.output
        .into_iter()
        .map(|o| (o.script_pubkey, o.value.to_sat()))
        .collect()
}

/// The reply to `mining.authorize` of `worker` on a fresh subscribed connection.
async fn authorize(client: &mut Client, worker: &str) -> Value {
    client
        .request("mining.subscribe", json!(["quarry-tests/1"]))
        .await;
    client
        .request("mining.authorize", json!([worker, "x"]))
        .await
}

fn refused(reply: &Value, containing: &str) {
    assert_eq!(reply["result"], Value::Null, "{reply}");
    assert_eq!(reply["error"][0], json!(24), "{reply}");
    let message = reply["error"][1].as_str().unwrap();
    assert!(message.contains(containing), "{message:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usernames_must_be_addresses_of_the_chains_network() {
    let dir = tempfile::tempdir().unwrap();
    let pool = solo_pool(&dir, &[]);
    let mut client = Client::tcp(pool.tcp).await;
    let reply = authorize(&mut client, "alice.rig").await;
    refused(&reply, "\"alice\" is not a bitcoin address");
    // A mainnet address on a regtest chain.
    let reply = client
        .request(
            "mining.authorize",
            json!(["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq.rig", "x"]),
        )
        .await;
    refused(&reply, "is not an address of this pool's network (regtest)");
    // One connection mines for one address.
    let alice = address(1).to_string();
    let reply = client
        .request("mining.authorize", json!([format!("{alice}.a"), "x"]))
        .await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    let bob = address(2).to_string();
    let reply = client
        .request("mining.authorize", json!([format!("{bob}.b"), "x"]))
        .await;
    refused(&reply, &format!("this connection mines solo for {alice}"));
    let reply = client
        .request("mining.authorize", json!([format!("{alice}.second"), "x"]))
        .await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    // The API refuses to show a coinbase for what is not an address, as authorize does.
    let (status, body) = pool.api_request("GET", "/api/payouts/current?account=alice", None, None);
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_address_mines_its_own_coinbase_and_the_finder_takes_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let (webhook, mut events) = webhook_receiver().await;
    let pool = solo_pool(&dir, &["--webhook", &webhook]);
    let (alice, bob) = (address(1), address(2));
    let (alice_worker, bob_worker) = (format!("{alice}.rig"), format!("{bob}.rig"));
    let mut a1 = Client::tcp(pool.tcp).await;
    a1.handshake(&alice_worker).await;
    let mut a2 = Client::tcp(pool.tcp).await;
    a2.handshake(&format!("{alice}.other")).await;
    let mut b = Client::tcp(pool.tcp).await;
    b.handshake(&bob_worker).await;

    let (job_a1, job_a2, job_b) = (
        a1.job.clone().unwrap(),
        a2.job.clone().unwrap(),
        b.job.clone().unwrap(),
    );
    let operator = ScriptBuf::from_bytes(vec![0x51]);
    let value: u64 = outputs(&job_b).iter().map(|(_, sats)| sats).sum();
    let fee = value * FEE_BPS / 10_000;
    assert_eq!(
        outputs(&job_a1),
        [
            (operator.clone(), fee),
            (alice.script_pubkey(), value - fee)
        ]
    );
    assert_eq!(
        outputs(&job_b),
        [(operator.clone(), fee), (bob.script_pubkey(), value - fee)]
    );
    // Both of Alice's connections were handed the same coinbase for the same job.
    if job_a1.job_id == job_a2.job_id {
        assert_eq!(
            (&job_a1.coinb1, &job_a1.coinb2),
            (&job_a2.coinb1, &job_a2.coinb2)
        );
    }
    // The API shows each miner the coinbase it hashes.
    let shown = pool.api_get(&format!("/api/payouts/current?account={alice}"));
    assert_eq!(shown["scheme"], json!("solo"), "{shown}");
    assert_eq!(shown["operator_amount"], json!(fee), "{shown}");
    assert_eq!(
        shown["outputs"][1]["to"],
        json!(alice.to_string()),
        "{shown}"
    );
    assert_eq!(shown["outputs"][1]["amount"], json!(value - fee), "{shown}");

    // Shares are judged on each miner's own coinbase.
    for i in 0..3 {
        let reply = a1.submit_valid(&alice_worker, i).await;
        assert_eq!(reply["result"], json!(true), "{reply}");
        let reply = b.submit_valid(&bob_worker, i).await;
        assert_eq!(reply["result"], json!(true), "{reply}");
    }
    // Bob finds a block: it pays him the value less the fee, and the operator the fee.
    let reply = b.submit_block(&bob_worker, 100).await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    let found = poll(Duration::from_secs(30), || {
        let blocks = pool.api_get("/api/blocks");
        blocks["blocks"].as_array()?.first().cloned()
    })
    .unwrap_or_else(|| panic!("the found block: {}", pool.api_get("/api/blocks")));
    let block: Block = deserialize_hex(found["raw"].as_str().unwrap()).unwrap();
    let paid: Vec<(ScriptBuf, u64)> = block.txdata[0]
        .output
        .iter()
        .map(|o| (o.script_pubkey.clone(), o.value.to_sat()))
        .collect();
    assert_eq!(
        paid,
        [(operator, fee), (bob.script_pubkey(), value - fee)],
        "{found}"
    );
    let table = found["payouts"].as_array().unwrap();
    assert_eq!(table.len(), 1, "{found}");
    assert_eq!(table[0]["payee"], json!(bob.to_string()), "{found}");
    assert_eq!(table[0]["paid"], json!(value - fee), "{found}");

    // The webhook carries the same table, and the coinbase's outputs.
    let event = loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("a block_found event within 30 s")
            .unwrap();
        if event["event"] == "block_found" {
            break event;
        }
    };
    assert_eq!(event["hash"], found["hash"], "{event}");
    assert_eq!(event["worker"], json!(bob_worker), "{event}");
    assert_eq!(event["account"], json!(bob.to_string()), "{event}");
    assert_eq!(event["payouts"], found["payouts"], "{event}");
    let outputs: Vec<(&str, u64)> = event["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["to"].as_str().unwrap(), o["amount"].as_u64().unwrap()))
        .collect();
    let bob_text = bob.to_string();
    assert_eq!(
        outputs,
        [("operator", fee), (bob_text.as_str(), value - fee)],
        "{event}"
    );

    let earnings = pool.api_get(&format!("/api/accounts/{bob}/earnings"));
    assert_eq!(earnings["paid_immature"], json!(value - fee), "{earnings}");
    assert_eq!(earnings["blocks"][0]["status"], json!("immature"));
    let earnings = pool.api_get(&format!("/api/accounts/{alice}/earnings"));
    assert_eq!(earnings["paid_immature"], json!(0), "{earnings}");
    assert_eq!(earnings["blocks"], json!([]), "{earnings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_with_a_bound_address_mines_solo_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let pool = solo_pool(&dir, &["--admin-token", "s3cret"]);
    let mut before = Client::tcp(pool.tcp).await;
    refused(
        &authorize(&mut before, "dave.rig").await,
        "\"dave\" is not a bitcoin address",
    );
    let bound = address(9);
    let (status, reply) = pool.api_request(
        "PUT",
        "/api/accounts/dave/address",
        Some("s3cret"),
        Some(json!({ "address": bound.to_string() })),
    );
    assert_eq!(status, 200, "{reply}");
    let mut dave = Client::tcp(pool.tcp).await;
    dave.handshake("dave.rig").await;
    let job = dave.job.clone().unwrap();
    let paid = outputs(&job);
    assert_eq!(paid[1].0, bound.script_pubkey(), "{paid:?}");
    let reply = dave.submit_valid("dave.rig", 0).await;
    assert_eq!(reply["result"], json!(true), "{reply}");
}
