//! One lean Stratum V1 connection for load generation: bound to a chosen loopback
//! source address, plain or TLS, a small read buffer, and only the state a
//! miner needs (extranonce1, difficulty, current job). [`Endpoint`] also opens the
//! TCP connections V2 runs over.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use quarry_miner::url::PoolUrl;
use quarry_protocol::jsonrpc::{self, Id, Message, Response};
use quarry_protocol::messages::{Notify, ServerMessage, SubscribeResult};
use quarry_protocol::reject::Reply;
use quarry_protocol::{Difficulty, Extranonce, LineCodec};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

use super::event::{Answer, Event};
use crate::grind::{Grinder, Share};

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
struct Received {
    at: Instant,
    message: Message,
}

/// A connection and what the pool has told it.
pub struct Conn {
    framed: Framed<Box<dyn Stream>, LineCodec>,
    next_id: u64,
    extranonce1: Option<Extranonce>,
    extranonce2_size: usize,
    /// The latest `mining.set_difficulty`.
    difficulty: Difficulty,
    /// The difficulty in force when the current job arrived (the pool judges a
    /// share at its job's difficulty).
    job_difficulty: Difficulty,
    job: Option<Notify>,
}

impl Conn {
    /// A fresh request id.
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queues a line without flushing.
    ///
    /// # Errors
    /// The connection failed.
    async fn feed(&mut self, line: &str) -> anyhow::Result<()> {
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
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
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

    /// The next message as an event, timestamped when read, with difficulty and
    /// job tracked; `None` when the pool closed the connection.
    ///
    /// # Errors
    /// A read error, an over-long line, or a line that is not JSON-RPC.
    pub async fn next(&mut self) -> anyhow::Result<Option<(Instant, Event)>> {
        let Some(Received { at, message }) = self.recv().await? else {
            return Ok(None);
        };
        let event = match message {
            Message::Response(response) => match &response.id {
                Id::Number(n) => Event::Answer(Answer::One {
                    token: n.as_u64().unwrap_or(0),
                    result: match Reply::from_response(&response) {
                        Reply::Accepted(_) => Ok(()),
                        Reply::Rejected { code, .. } => {
                            Err(code.map_or_else(|| "none".to_owned(), |c| c.to_string()))
                        }
                    },
                }),
                _ => Event::Other,
            },
            Message::Notification(call) if call.method == "mining.notify" => match &self.job {
                Some(job) if job.clean_jobs => Event::NewTip(job.job_id.to_string()),
                _ => Event::Other,
            },
            _ => Event::Other,
        };
        Ok(Some((at, event)))
    }

    /// The next clean job's id and when it was read, `None` when the pool closed
    /// the connection. Held connections only need this, so a line is not decoded
    /// beyond its method and two parameters (nor tracked): at tens of thousands of
    /// connections, the receiving side's cost per line is part of the fan-out it
    /// measures.
    ///
    /// # Errors
    /// A read error or an over-long line.
    pub async fn next_new_tip(&mut self) -> anyhow::Result<Option<(Instant, String)>> {
        while let Some(line) = self.framed.next().await {
            let at = Instant::now();
            if let Some(job) = clean_job(&line.context("reading from the pool")?) {
                return Ok(Some((at, job)));
            }
        }
        Ok(None)
    }

    /// The current job's id.
    pub fn job_id(&self) -> Option<String> {
        self.job.as_ref().map(|job| job.job_id.to_string())
    }

    /// The current job.
    pub fn notify(&self) -> Option<&Notify> {
        self.job.as_ref()
    }

    /// A grinder for the current job at `difficulty` (the job's own when `None`),
    /// and the job's id.
    ///
    /// # Errors
    /// Not subscribed, or no job yet.
    pub fn grinder(&self, difficulty: Option<Difficulty>) -> anyhow::Result<(String, Grinder)> {
        let job = self.job.as_ref().context("no job")?;
        let en1 = self.extranonce1.context("not subscribed")?;
        let en2 = Extranonce::from_counter(0, self.extranonce2_size);
        let difficulty = difficulty.unwrap_or(self.job_difficulty);
        Ok((
            job.job_id.to_string(),
            Grinder::new(job, en1, en2, difficulty, 0),
        ))
    }

    /// Queues `share` on job `job_id` as `worker`'s `mining.submit`, written with
    /// the next [`Conn::flush`]; returns its request id.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn queue(
        &mut self,
        worker: &str,
        job_id: &str,
        share: &Share,
    ) -> anyhow::Result<u64> {
        let id = self.next_id();
        self.feed(&format!(
            r#"{{"id":{id},"method":"mining.submit","params":["{worker}","{job_id}","{}","{:08x}","{:08x}"]}}"#,
            share.fields.extranonce2, share.fields.ntime, share.fields.nonce
        ))
        .await?;
        Ok(id)
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

/// The method and parameters of a line, the parameters unparsed.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    method: Option<&'a str>,
    #[serde(borrow)]
    params: Option<Vec<&'a serde_json::value::RawValue>>,
}

/// The job id of a `mining.notify` with `clean_jobs = true`.
fn clean_job(line: &str) -> Option<String> {
    let peek: Peek<'_> = serde_json::from_str(line).ok()?;
    let params = peek.params?;
    if peek.method != Some("mining.notify") || params.get(8)?.get() != "true" {
        return None;
    }
    serde_json::from_str(params.first()?.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_clean_notifies_only() {
        let notify = |clean: bool| {
            format!(
                r#"{{"id":null,"method":"mining.notify","params":["1a2b","00","01","02",[],"20000000","1d00ffff","6560a1b0",{clean}]}}"#
            )
        };
        assert_eq!(clean_job(&notify(true)).as_deref(), Some("1a2b"));
        assert_eq!(clean_job(&notify(false)), None);
        assert_eq!(clean_job(r#"{"id":3,"result":true,"error":null}"#), None);
        assert_eq!(clean_job("not json"), None);
    }
}
