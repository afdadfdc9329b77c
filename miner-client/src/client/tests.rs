//! The connection loop against scripted pools on loopback sockets.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quarry_protocol::{Difficulty, LineCodec, ServerMessage};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use super::*;
use crate::job::Job;

const PREVHASH: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const TIMEOUT: Duration = Duration::from_secs(10);

/// One scripted pool connection.
struct Peer(Framed<TcpStream, LineCodec>);

impl Peer {
    async fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = tokio::time::timeout(TIMEOUT, listener.accept())
            .await
            .expect("the miner connects in time")
            .unwrap();
        Peer(Framed::new(stream, LineCodec::new(1 << 16)))
    }

    async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(TIMEOUT, self.0.next())
            .await
            .expect("a line in time")
            .expect("open")
            .expect("a line");
        serde_json::from_str(&line).unwrap()
    }

    async fn send(&mut self, value: Value) {
        self.0.send(value.to_string()).await.unwrap();
    }

    /// Answers subscribe and authorize, then sends a difficulty and a clean job.
    async fn handshake(&mut self, session_id: &str) -> Value {
        let subscribe = self.recv().await;
        assert_eq!(subscribe["method"], "mining.subscribe");
        let authorize = self.recv().await;
        assert_eq!(authorize["method"], "mining.authorize");
        self.send(json!({"id": subscribe["id"], "result": [[["mining.notify", session_id]], "01020304", 4], "error": null}))
            .await;
        self.send(json!({"id": authorize["id"], "result": true, "error": null}))
            .await;
        self.send(json!({"id": null, "method": "mining.set_difficulty", "params": [0.5]}))
            .await;
        self.send(json!({"id": null, "method": "mining.notify", "params": notify_params("j1")}))
            .await;
        subscribe
    }
}

fn notify_params(job_id: &str) -> Value {
    json!([
        job_id,
        PREVHASH,
        "01000000",
        "ffffffff",
        [],
        "20000000",
        "1d00ffff",
        "6553f100",
        true
    ])
}

fn config(pools: Vec<PoolUrl>) -> MineConfig {
    MineConfig {
        pools,
        user: "t.w".into(),
        pass: "x".into(),
        trust: crate::tls::Trust::Insecure,
        version_mask: None,
        extranonce_subscribe: false,
        pool_timeout: Duration::from_secs(1),
        failback_interval: Duration::from_secs(30),
        share_interval: None,
        sv2_channel: crate::session_v2::ChannelKind::Extended,
        print_interval: Duration::from_secs(30),
        api: None,
    }
}

fn url(listener: &TcpListener) -> PoolUrl {
    format!("stratum+tcp://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap()
}

#[tokio::test]
async fn reconnects_when_silent_resumes_resubmits_and_follows_redirects() {
    let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let board = Arc::new(Board::default());
    let (shares, rx) = mpsc::channel(16);
    let stats = Arc::new(Stats::new(1));
    let client = Client::new(
        config(vec![url(&first)]),
        Arc::clone(&board),
        rx,
        Arc::clone(&stats),
    )
    .unwrap();
    let task = tokio::spawn(client.run());

    // Connection 1: a job, then silence past the pool timeout.
    let mut peer = Peer::accept(&first).await;
    peer.handshake("s1").await;

    // Connection 2 resumes the session.
    let mut peer = Peer::accept(&first).await;
    let subscribe = peer.recv().await;
    assert_eq!(
        subscribe["params"],
        json!([crate::session::USER_AGENT, "s1"])
    );
    // A share found on connection 1's job while reconnecting: same pool, same
    // extranonce1, same previous block, so it is submitted once a job arrives.
    let ServerMessage::Notify(notify) =
        ServerMessage::parse("mining.notify", notify_params("j1").as_array().unwrap()).unwrap()
    else {
        panic!("not a notify")
    };
    let old = Arc::new(Job::new(
        1 << 32 | 1,
        1,
        notify,
        "01020304".parse().unwrap(),
        4,
        Difficulty::new(0.5).unwrap(),
        0,
    ));
    let unit = old.unit(3).unwrap();
    shares
        .send(FoundShare {
            job: old,
            unit,
            ntime: 0x6553_f100,
            nonce: 42,
        })
        .await
        .unwrap();
    let authorize = peer.recv().await;
    peer.send(json!({"id": subscribe["id"], "result": [[["mining.notify", "s1"]], "01020304", 4], "error": null}))
        .await;
    peer.send(json!({"id": authorize["id"], "result": true, "error": null}))
        .await;
    peer.send(json!({"id": null, "method": "mining.notify", "params": notify_params("j2")}))
        .await;
    let submit = peer.recv().await;
    assert_eq!(submit["method"], "mining.submit");
    assert_eq!(
        submit["params"],
        json!(["t.w", "j1", "03000000", "6553f100", "0000002a"])
    );
    peer.send(json!({"id": submit["id"], "result": null, "error": [21, "job not found", null]}))
        .await;

    // client.reconnect to another port.
    let port = second.local_addr().unwrap().port();
    peer.send(json!({"id": null, "method": "client.reconnect", "params": ["127.0.0.1", port, 0]}))
        .await;
    let mut peer = Peer::accept(&second).await;
    assert_eq!(peer.recv().await["method"], "mining.subscribe");

    let snapshot = stats.snapshot();
    assert_eq!(snapshot.rejected.get("job not found"), Some(&1));
    assert_eq!(board_job_id(&board), "j2");
    task.abort();
}

fn board_job_id(board: &Board) -> String {
    board
        .peek()
        .expect("a published job")
        .notify
        .job_id
        .to_string()
}

#[test]
fn backoff_retries_quickly_then_doubles_to_a_minute_with_jitter() {
    let mut backoff = Backoff::new();
    let pauses: Vec<f64> = (0..13).map(|_| backoff.pause().as_secs_f64()).collect();
    for (pause, base) in pauses.iter().zip([
        1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0,
    ]) {
        assert!(
            (base * 0.8..=base * 1.2).contains(pause),
            "{pause} vs {base}"
        );
    }
    backoff.reset();
    assert!(backoff.pause() <= Duration::from_millis(1200));
}
