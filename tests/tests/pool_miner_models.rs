//! The three ways miners in the field take a difficulty change, modelled over
//! real sockets (TCP and TLS) while vardiff moves the difficulty up and a
//! suggestion moves it down: each must get at least 99 % of its shares
//! accepted. (The real programs are driven in interop_cpuminer.rs.)

use std::collections::BTreeMap;

use quarry_protocol::messages::{Notify, ServerMessage};
use quarry_protocol::{Difficulty, Extranonce, Message};
use quarry_tests::grind::Grinder;
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};

const WORKER: &str = "alice.rig1";
const SHARES: usize = 300;
/// Every this many shares the model asks for the lowest difficulty again.
const SUGGEST_EVERY: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    /// Starts its search over (extranonce2 0, nonce 0) on every notify: cpuminer-opt.
    RestartsOnNotify,
    /// Applies `set_difficulty` to the work it already has: cgminer, bfgminer, ESP-Miner.
    AppliesAtOnce,
    /// Applies `set_difficulty` from the next notify: pooler's cpuminer.
    AppliesNextJob,
}

struct Miner {
    model: Model,
    client: Client,
    job: Option<Notify>,
    /// The difficulty the miner hashes at, and one announced but not yet applied.
    difficulty: Difficulty,
    announced: Difficulty,
    grinder: Option<Grinder>,
    extranonce2: u64,
    changes: Vec<Difficulty>,
}

impl Miner {
    /// Acts on every notification that has arrived.
    fn take_notifications(&mut self) {
        while let Some(value) = self.client.pending.pop_front() {
            let Ok(Message::Notification(call)) =
                quarry_protocol::jsonrpc::parse(&value.to_string())
            else {
                continue;
            };
            match call.server_message() {
                Ok(ServerMessage::SetDifficulty(d)) => {
                    self.announced = d;
                    self.changes.push(d);
                    if self.model == Model::AppliesAtOnce {
                        self.difficulty = d;
                        if let Some(grinder) = &mut self.grinder {
                            grinder.retarget(d);
                        }
                    }
                }
                Ok(ServerMessage::Notify(notify)) => {
                    self.difficulty = self.announced;
                    if self.model == Model::RestartsOnNotify {
                        self.extranonce2 = 0;
                    } else {
                        self.extranonce2 += 1;
                    }
                    self.job = Some(notify);
                    self.grinder = None;
                }
                _ => {}
            }
        }
    }

    fn next_share(&mut self) -> Value {
        let job = self.job.clone().expect("a job");
        let difficulty = self.difficulty;
        let en1 = self.client.extranonce1.expect("subscribed");
        let en2 = Extranonce::from_counter(self.extranonce2, self.client.extranonce2_size);
        let grinder = self.grinder.get_or_insert_with(|| {
            // The nonce carries on where the last share was found, on the same work.
            Grinder::new(&job, en1, en2, difficulty, 0)
        });
        grinder.next(true).params(WORKER, &job)
    }
}

async fn mine(model: Model, client: Client) {
    let mut miner = Miner {
        model,
        client,
        job: None,
        difficulty: Difficulty::ONE,
        announced: Difficulty::ONE,
        grinder: None,
        extranonce2: 0,
        changes: Vec::new(),
    };
    let reply = miner
        .client
        .request("mining.subscribe", json!(["quarry-tests/1"]))
        .await;
    miner.client.extranonce1 = reply["result"][1].as_str().and_then(|s| s.parse().ok());
    miner.client.extranonce2_size = 4;
    let reply = miner
        .client
        .request("mining.authorize", json!([WORKER, "x"]))
        .await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    while miner.job.is_none() {
        let notify = miner.client.next_notification("mining.notify").await;
        miner.client.pending.push_back(notify);
        miner.take_notifications();
    }

    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for n in 1..=SHARES {
        if n % SUGGEST_EVERY == 0 {
            let reply = miner
                .client
                .request("mining.suggest_difficulty", json!([1e-6]))
                .await;
            assert_eq!(reply["result"], json!(true), "{reply}");
        }
        miner.take_notifications();
        let share = miner.next_share();
        let reply = miner.client.request("mining.submit", share).await;
        let outcome = if reply["result"] == json!(true) {
            "accepted".to_owned()
        } else {
            format!("{}", reply["error"])
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let accepted = outcomes.get("accepted").copied().unwrap_or(0);
    let ups = miner.changes.windows(2).filter(|w| w[1] > w[0]).count();
    let downs = miner.changes.windows(2).filter(|w| w[1] < w[0]).count();
    eprintln!(
        "{model:?}: {accepted}/{SHARES} accepted, difficulty changes up {ups} down {downs}, outcomes {outcomes:?}"
    );
    assert!(
        ups >= 2 && downs >= 2,
        "vardiff did not move both ways: {:?}",
        miner.changes
    );
    assert!(
        accepted * 100 >= SHARES * 99,
        "{model:?}: {accepted}/{SHARES} accepted: {outcomes:?}"
    );
}

fn start(dir: &tempfile::TempDir) -> PoolProcess {
    // Shares from ~4,300 hashes; vardiff aims at 2 a second, so it raises the
    // difficulty at once, up to the cap (~43,000 hashes a share).
    PoolProcess::start(
        dir.path(),
        &[
            "--start-difficulty",
            "1e-6",
            "--min-difficulty",
            "1e-6",
            "--max-difficulty",
            "1e-5",
            "--share-interval",
            "0.5",
            "--chain-difficulty",
            "1",
        ],
    )
}

async fn run(model: Model) {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(&dir);
    mine(model, Client::tcp(pool.tcp).await).await;
    mine(model, Client::tls(pool.tls, &pool.certificate_pem()).await).await;
    let totals = pool.api_get("/api/pool");
    eprintln!("pool totals: {totals}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_that_restarts_its_search_on_every_notify_loses_nothing() {
    run(Model::RestartsOnNotify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_that_applies_a_difficulty_at_once_loses_nothing() {
    run(Model::AppliesAtOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_that_applies_a_difficulty_from_the_next_job_loses_nothing() {
    run(Model::AppliesNextJob).await;
}
