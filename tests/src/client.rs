//! A raw Stratum client for tests: JSON lines in, JSON lines out, over TCP or TLS.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quarry_protocol::jsonrpc::{self, Message};
use quarry_protocol::messages::{Notify, ServerMessage, SubscribeResult};
use quarry_protocol::target::network_difficulty;
use quarry_protocol::{Difficulty, Extranonce, LineCodec};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::grind::{grind, Share};

/// How long any expected line may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What a [`Client`] can speak over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One Stratum connection.
pub struct Client {
    framed: Framed<Box<dyn Stream>, LineCodec>,
    next_id: u64,
    /// Notifications received while waiting for a reply.
    pub pending: VecDeque<Value>,
    pub extranonce1: Option<quarry_protocol::Extranonce>,
    pub extranonce2_size: usize,
    pub difficulty: Difficulty,
    /// The difficulty announced before the most recent notify.
    pub job_difficulty: Difficulty,
    pub job: Option<Notify>,
}

impl Client {
    /// A client over any stream (e.g. a [`crate::wire::Recorded`] one).
    pub fn over(stream: impl Stream + 'static) -> Client {
        Client::new(Box::new(stream))
    }

    fn new(stream: Box<dyn Stream>) -> Client {
        Client {
            framed: Framed::new(stream, LineCodec::new(1 << 20)),
            next_id: 1,
            pending: VecDeque::new(),
            extranonce1: None,
            extranonce2_size: 0,
            difficulty: Difficulty::ONE,
            job_difficulty: Difficulty::ONE,
            job: None,
        }
    }

    /// Connects over plain TCP.
    pub async fn tcp(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client::new(Box::new(stream))
    }

    /// Connects over plain TCP from the loopback address `local` (e.g. 127.0.0.2),
    /// so tests can play clients on different addresses.
    pub async fn tcp_from(local: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<Client> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(local, 0))?;
        let stream = socket.connect(addr).await?;
        Ok(Client::new(Box::new(stream)))
    }

    /// Connects over TLS, trusting exactly `cert_pem`, as `localhost`.
    pub async fn tls(addr: SocketAddr, cert_pem: &[u8]) -> Client {
        Client::new(Box::new(tls_stream(addr, cert_pem).await))
    }

    /// Sends one raw line.
    pub async fn send_raw(&mut self, line: &str) {
        self.framed.send(line).await.expect("send");
    }

    /// Sends one raw line; an error once the pool has closed the connection.
    pub async fn send_raw_checked(
        &mut self,
        line: &str,
    ) -> Result<(), quarry_protocol::CodecError> {
        self.framed.send(line).await
    }

    /// The next line as JSON, failing the test after [`TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
        self.recv_within(TIMEOUT)
            .await
            .expect("a line from the pool in time")
    }

    /// The next line as JSON, or `None` when none came within `timeout` (for a test
    /// that says what it knows when the pool falls silent).
    pub async fn recv_within(&mut self, timeout: Duration) -> Option<Value> {
        let line = tokio::time::timeout(timeout, self.framed.next())
            .await
            .ok()?
            .expect("connection open")
            .expect("a valid line");
        let value: Value = serde_json::from_str(&line).expect("JSON from the pool");
        self.observe(&value);
        Some(value)
    }

    /// `None` when the pool closed the connection (or reset it).
    pub async fn recv_or_closed(&mut self) -> Option<Value> {
        match tokio::time::timeout(TIMEOUT, self.framed.next())
            .await
            .expect("pool answered or closed in time")
        {
            Some(Ok(line)) => {
                let value: Value = serde_json::from_str(&line).expect("JSON from the pool");
                self.observe(&value);
                Some(value)
            }
            _ => None,
        }
    }

    fn observe(&mut self, value: &Value) {
        let Ok(Message::Notification(call)) = jsonrpc::parse(&value.to_string()) else {
            return;
        };
        match call.server_message() {
            Ok(ServerMessage::SetDifficulty(d)) => self.difficulty = d,
            Ok(ServerMessage::Notify(n)) => {
                self.job_difficulty = self.difficulty;
                self.job = Some(n);
            }
            _ => {}
        }
    }

    /// Sends a request and returns its reply; notifications meanwhile go to `pending`.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_raw(&json!({"id": id, "method": method, "params": params}).to_string())
            .await;
        self.reply_to(json!(id)).await
    }

    /// Waits for the reply with `id`.
    pub async fn reply_to(&mut self, id: Value) -> Value {
        loop {
            let value = self.recv().await;
            if value.get("method").is_none() && value["id"] == id {
                return value;
            }
            self.pending.push_back(value);
        }
    }

    /// The next notification with `method` (from `pending` first).
    pub async fn next_notification(&mut self, method: &str) -> Value {
        if let Some(pos) = self.pending.iter().position(|v| v["method"] == method) {
            return self.pending.remove(pos).expect("position is valid");
        }
        loop {
            let value = self.recv().await;
            if value["method"] == method {
                return value;
            }
            self.pending.push_back(value);
        }
    }

    /// Reads notifications until a `mining.notify` whose job satisfies `wanted`, which
    /// becomes the client's current job.
    pub async fn job_where(&mut self, wanted: impl Fn(&Notify) -> bool) -> Notify {
        loop {
            let value = self.next_notification("mining.notify").await;
            let Ok(Message::Notification(call)) = jsonrpc::parse(&value.to_string()) else {
                continue;
            };
            if let Ok(ServerMessage::Notify(notify)) = call.server_message() {
                if wanted(&notify) {
                    self.job = Some(notify.clone());
                    return notify;
                }
            }
        }
    }

    /// `mining.submit` params for `worker` of a valid share ground on the
    /// current job at its difficulty, extranonce2 from `counter`.
    pub fn valid_share(&self, worker: &str, counter: u64) -> Value {
        let job = self.job.as_ref().expect("a job from the pool");
        self.grind_valid(counter).params(worker, job)
    }

    /// A share that meets the current job's difficulty, extranonce2 from `counter`.
    pub fn grind_valid(&self, counter: u64) -> Share {
        let job = self.job.as_ref().expect("a job from the pool");
        let en1 = self.extranonce1.expect("subscribed");
        let en2 = Extranonce::from_counter(counter, self.extranonce2_size);
        grind(job, en1, en2, self.job_difficulty, 0, true)
    }

    /// Submits for `worker` a share of the current job that solves its block (ground at
    /// the job's network difficulty, which must be low enough to grind here), extranonce2
    /// from `counter`; returns the reply.
    pub async fn submit_block(&mut self, worker: &str, counter: u64) -> Value {
        let job = self.job.clone().expect("a job from the pool");
        let network = Difficulty::new(network_difficulty(job.nbits.0)).expect("a difficulty");
        let en1 = self.extranonce1.expect("subscribed");
        let en2 = Extranonce::from_counter(counter, self.extranonce2_size);
        let share = grind(&job, en1, en2, network, 0, true);
        self.request("mining.submit", share.params(worker, &job))
            .await
    }

    /// Submits [`Client::valid_share`]; returns the reply.
    pub async fn submit_valid(&mut self, worker: &str, counter: u64) -> Value {
        let params = self.valid_share(worker, counter);
        self.request("mining.submit", params).await
    }

    /// Subscribes and authorizes `worker`; returns once the first job has arrived.
    pub async fn handshake(&mut self, worker: &str) {
        let reply = self
            .request("mining.subscribe", json!(["quarry-tests/1"]))
            .await;
        let result = SubscribeResult::from_value(&reply["result"]).expect("subscribe result");
        self.extranonce1 = Some(result.extranonce1);
        self.extranonce2_size = result.extranonce2_size;
        let reply = self.request("mining.authorize", json!([worker, "x"])).await;
        assert_eq!(reply["result"], json!(true), "{reply}");
        while self.job.is_none() {
            self.next_notification("mining.notify").await;
        }
        // What arrived so far is reflected in `job` and `difficulty`.
        self.pending.clear();
    }
}

/// A TLS connection to `addr` trusting exactly `cert_pem`, as `localhost`.
pub async fn tls_stream(
    addr: SocketAddr,
    cert_pem: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &cert_pem[..]) {
        roots
            .add(cert.expect("PEM certificate"))
            .expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}
