//! One lean Stratum connection for load generation: bound to a chosen loopback
//! source address, plain or TLS, a small read buffer, and only the state a
//! miner needs (extranonce1, difficulty, current job).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use quarry_miner::url::PoolUrl;
use quarry_protocol::jsonrpc::{self, Id, Message, Response};
use quarry_protocol::messages::{Notify, ServerMessage, SubscribeResult};
use quarry_protocol::{Difficulty, Extranonce, LineCodec};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

/// Longest line accepted from the pool (a notify with a few merkle branches is ~1 KiB).
const MAX_LINE: usize = 64 * 1024;
/// Initial read buffer: one notify fits; it grows only if a line needs it.
const READ_BUFFER: usize = 2048;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Where and how to connect: the pool's address, TLS, and the source addresses
/// connections are spread over.
pub struct Endpoint {
    pub addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    sources: Vec<IpAddr>,
}

impl Endpoint {
    /// Resolves `url`; `connector` is required for a TLS URL.
    ///
    /// # Errors
    /// An unresolvable host, or a TLS URL without a connector.
    pub async fn new(
        url: &PoolUrl,
        connector: Option<TlsConnector>,
        sources: Vec<IpAddr>,
    ) -> anyhow::Result<Endpoint> {
        let addr = tokio::net::lookup_host(url.authority())
            .await
            .with_context(|| format!("resolving {}", url.authority()))?
            .next()
            .with_context(|| format!("{} resolves to no address", url.authority()))?;
        let tls = match (url.tls(), connector) {
            (false, _) => None,
            (true, Some(connector)) => {
                Some((connector, quarry_miner::tls::server_name(&url.host)?))
            }
            (true, None) => bail!("a stratum+ssl URL needs TLS trust settings"),
        };
        Ok(Endpoint { addr, tls, sources })
    }

    /// A TCP connection numbered `index`, from source address `index` modulo the range.
    ///
    /// # Errors
    /// Bind or connect failures.
    pub async fn tcp(&self, index: usize) -> anyhow::Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .context("creating a socket")?;
        if !self.sources.is_empty() {
            let source = self.sources[index % self.sources.len()];
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("binding to {source}"))?;
        }
        let tcp = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        Ok(tcp)
    }

    /// Opens V1 connection number `index`, plain or TLS.
    ///
    /// # Errors
    /// Bind, connect or TLS failures.
    pub async fn connect(&self, index: usize) -> anyhow::Result<Conn> {
        let tcp = self.tcp(index).await?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| anyhow::anyhow!(quarry_miner::tls::explain(&e)))?,
            ),
        };
        Ok(Conn {
            framed: Framed::with_capacity(stream, LineCodec::new(MAX_LINE), READ_BUFFER),
            next_id: 1,
            extranonce1: None,
            extranonce2_size: 0,
            difficulty: Difficulty::ONE,
            job_difficulty: Difficulty::ONE,
            job: None,
        })
    }
}

/// A line from the pool, with when it was read.
pub struct Received {
    pub at: Instant,
    pub message: Message,
}

/// A connection and what the pool has told it.
pub struct Conn {
    framed: Framed<Box<dyn Stream>, LineCodec>,
    next_id: u64,
    pub extranonce1: Option<Extranonce>,
    pub extranonce2_size: usize,
    /// The latest `mining.set_difficulty`.
    pub difficulty: Difficulty,
    /// The difficulty in force when the current job arrived.
    pub job_difficulty: Difficulty,
    pub job: Option<Notify>,
}

impl Conn {
    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queues a line without flushing.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn feed(&mut self, line: &str) -> anyhow::Result<()> {
        self.framed.feed(line).await.context("sending to the pool")
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        SinkExt::<&str>::flush(&mut self.framed)
            .await
            .context("sending to the pool")
    }

    /// The next message, timestamped when read, with difficulty and job tracked;
    /// `None` when the pool closed the connection.
    ///
    /// # Errors
    /// A read error, an over-long line, or a line that is not JSON-RPC.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        let Some(line) = self.framed.next().await else {
            return Ok(None);
        };
        let at = Instant::now();
        let line = line.context("reading from the pool")?;
        let message = jsonrpc::parse(&line)
            .with_context(|| format!("unparsable line from the pool: {line}"))?;
        if let Message::Notification(call) = &message {
            match call.server_message() {
                Ok(ServerMessage::SetDifficulty(d)) => self.difficulty = d,
                Ok(ServerMessage::Notify(n)) => {
                    self.job_difficulty = self.difficulty;
                    self.job = Some(n);
                }
                _ => {}
            }
        }
        Ok(Some(Received { at, message }))
    }

    /// The next line as read, timestamped, without parsing or tracking;
    /// `None` when the pool closed the connection.
    ///
    /// # Errors
    /// A read error or an over-long line.
    pub async fn recv_line(&mut self) -> anyhow::Result<Option<(Instant, String)>> {
        match self.framed.next().await {
            None => Ok(None),
            Some(line) => Ok(Some((
                Instant::now(),
                line.context("reading from the pool")?,
            ))),
        }
    }

    /// Sends a request and waits for its response (notifications meanwhile are tracked).
    async fn request(&mut self, method: &str, params: &str) -> anyhow::Result<Response> {
        let id = self.next_id();
        self.feed(&format!(
            r#"{{"id":{id},"method":"{method}","params":{params}}}"#
        ))
        .await?;
        self.flush().await?;
        loop {
            match self.recv().await? {
                None => bail!("the pool closed the connection during {method}"),
                Some(Received {
                    message: Message::Response(r),
                    ..
                }) if r.id == Id::Number(id.into()) => return Ok(r),
                Some(_) => {}
            }
        }
    }

    /// Subscribes, authorizes `worker`, and waits for the first job.
    ///
    /// # Errors
    /// A refusal, a malformed answer, or a closed connection.
    pub async fn handshake(&mut self, worker: &str) -> anyhow::Result<()> {
        let reply = self
            .request("mining.subscribe", r#"["quarry-load/1"]"#)
            .await?;
        let result = SubscribeResult::from_value(&reply.result)
            .with_context(|| format!("subscribe result {}", reply.result))?;
        self.extranonce1 = Some(result.extranonce1);
        self.extranonce2_size = result.extranonce2_size;
        let reply = self
            .request("mining.authorize", &format!(r#"["{worker}","x"]"#))
            .await?;
        if reply.result != serde_json::Value::Bool(true) {
            bail!("authorize {worker} refused: {}", reply.error);
        }
        while self.job.is_none() {
            if self.recv().await?.is_none() {
                bail!("the pool closed the connection before the first job");
            }
        }
        Ok(())
    }
}
