//! One load-generating miner over either protocol: a V1 [`Conn`] (JSON lines, plain
//! or TLS) or a V2 connection (Noise frames, one extended channel). `hold` and
//! `shares` drive a [`Link`] and never look at the wire themselves.

use std::time::Instant;

use anyhow::{bail, Context};
use quarry_miner::url::Scheme;
use quarry_protocol::jsonrpc::{Id, Message};
use quarry_protocol::messages::Notify;
use quarry_protocol::reject::Reply as V1Reply;
use quarry_protocol::sv2::AuthorityPublicKey;
use quarry_protocol::{Difficulty, Extranonce};

use super::conn::{Conn, Endpoint, Received};
use crate::grind::{Grinder, Share};
use crate::v2::{as_notify, target_difficulty, Reply, V2Client};

/// A miner's connection, set up and holding a job.
pub enum Link {
    V1(Box<Conn>),
    V2(Box<V2Link>),
}

/// A V2 connection with one extended channel and what the pool told it.
pub struct V2Link {
    client: V2Client,
    channel: u32,
    prefix: Extranonce,
    size: usize,
    target: [u8; 32],
    /// The last future job, until a `SetNewPrevHash` activates it.
    future: Option<Reply>,
    /// The active job: its id, the notify to grind it as, and the target it had.
    job: Option<(u32, Notify, [u8; 32])>,
    next_sequence: u32,
    out: Vec<u8>,
}

/// What the pool said of shares.
pub enum Answer {
    /// One share (V1 request id, or V2 sequence number): accepted, or the code.
    One {
        token: u64,
        result: Result<(), String>,
    },
    /// V2: `count` of the shares with sequence numbers up to `last` were accepted.
    Batch { last: u64, count: u64 },
}

/// Something a link read, with when it was read.
pub enum Event {
    /// A job on a new tip (a clean notify, a `SetNewPrevHash`): its id.
    NewTip(String),
    Answer(Answer),
    Other,
}

impl Endpoint {
    /// Opens connection `index` over the URL's protocol and sets `worker` up on it,
    /// up to its first job.
    ///
    /// # Errors
    /// Connect, handshake or set-up failures, or a refusal.
    pub async fn open(&self, index: usize, worker: &str, scheme: Scheme) -> anyhow::Result<Link> {
        match scheme {
            Scheme::V2(authority) => Ok(Link::V2(Box::new(
                V2Link::open(self, index, worker, authority).await?,
            ))),
            Scheme::Tcp | Scheme::Tls => {
                let mut conn = self.connect(index).await?;
                conn.handshake(worker).await?;
                Ok(Link::V1(Box::new(conn)))
            }
        }
    }
}

impl V2Link {
    async fn open(
        endpoint: &Endpoint,
        index: usize,
        worker: &str,
        authority: AuthorityPublicKey,
    ) -> anyhow::Result<V2Link> {
        let tcp = endpoint.tcp(index).await?;
        let mut client = V2Client::over(tcp, authority)
            .await
            .map_err(|e| anyhow::anyhow!("V2 handshake: {e}"))?;
        client.try_setup().await?;
        client.open_extended(1, worker, 0).await;
        let mut link = V2Link {
            client,
            channel: 0,
            prefix: Extranonce::default(),
            size: 0,
            target: [0xff; 32],
            future: None,
            job: None,
            next_sequence: 1,
            out: Vec::new(),
        };
        while link.job.is_none() {
            match link.client.next_reply().await {
                None => bail!("the pool closed the connection before the first job"),
                Some(Reply::OpenError(code)) => bail!("channel for {worker} refused: {code}"),
                Some(reply) => {
                    link.track(reply);
                }
            }
        }
        Ok(link)
    }

    /// Keeps what `reply` changes; returns it as an event.
    fn track(&mut self, reply: Reply) -> Event {
        match reply {
            Reply::Opened {
                channel,
                target,
                prefix,
                size,
            } => {
                self.channel = channel;
                self.target = target;
                self.prefix = Extranonce::new(&prefix).unwrap_or_default();
                self.size = size;
                Event::Other
            }
            Reply::Target(target) => {
                self.target = target;
                Event::Other
            }
            Reply::ExtendedJob { future: true, .. } => {
                self.future = Some(reply);
                Event::Other
            }
            Reply::ExtendedJob {
                job,
                ntime: Some(ntime),
                ..
            } => {
                // A refresh on the current tip, active at once.
                if let Some((_, current, _)) = &self.job {
                    let mut notify = as_notify(
                        &reply,
                        &Reply::PrevHash {
                            job,
                            prev: current.prevhash.header_bytes(),
                            ntime,
                            nbits: current.nbits.0,
                        },
                    );
                    notify.ntime.0 = ntime;
                    self.job = Some((job, notify, self.target));
                }
                Event::Other
            }
            Reply::PrevHash { job, .. } => match self.future.take() {
                Some(future) => {
                    let notify = as_notify(&future, &reply);
                    self.job = Some((job, notify, self.target));
                    Event::NewTip(job.to_string())
                }
                None => Event::Other,
            },
            Reply::Success { last, count } => Event::Answer(Answer::Batch {
                last: u64::from(last),
                count: u64::from(count),
            }),
            Reply::ShareError { sequence, code } => Event::Answer(Answer::One {
                token: u64::from(sequence),
                result: Err(code),
            }),
            _ => Event::Other,
        }
    }
}

impl Link {
    /// The next event, `None` when the pool closed the connection.
    ///
    /// # Errors
    /// A read error or a line that is not JSON-RPC.
    pub async fn next(&mut self) -> anyhow::Result<Option<(Instant, Event)>> {
        match self {
            Link::V1(conn) => {
                let Some(Received { at, message }) = conn.recv().await? else {
                    return Ok(None);
                };
                let event = match message {
                    Message::Response(response) => match &response.id {
                        Id::Number(n) => Event::Answer(Answer::One {
                            token: n.as_u64().unwrap_or(0),
                            result: match V1Reply::from_response(&response) {
                                V1Reply::Accepted(_) => Ok(()),
                                V1Reply::Rejected { code, .. } => {
                                    Err(code.map_or_else(|| "none".to_owned(), |c| c.to_string()))
                                }
                            },
                        }),
                        _ => Event::Other,
                    },
                    Message::Notification(call) if call.method == "mining.notify" => {
                        match &conn.job {
                            Some(job) if job.clean_jobs => NewTip(job.job_id.to_string()),
                            _ => Event::Other,
                        }
                    }
                    _ => Event::Other,
                };
                Ok(Some((at, event)))
            }
            Link::V2(link) => {
                let Some(reply) = link.client.next_reply().await else {
                    return Ok(None);
                };
                let at = Instant::now();
                Ok(Some((at, link.track(reply))))
            }
        }
    }

    /// The next new-tip job's id and when it was read, `None` when the pool closed
    /// the connection. Held connections only need this, so a V1 line is not decoded
    /// beyond its method and two parameters: at tens of thousands of connections, the
    /// receiving side's cost per line is part of the fan-out it measures.
    ///
    /// # Errors
    /// A read error.
    pub async fn next_new_tip(&mut self) -> anyhow::Result<Option<(Instant, String)>> {
        loop {
            match self {
                Link::V1(conn) => match conn.recv_line().await? {
                    None => return Ok(None),
                    Some((at, line)) => {
                        if let Some(job) = clean_job(&line) {
                            return Ok(Some((at, job)));
                        }
                    }
                },
                Link::V2(_) => match self.next().await? {
                    None => return Ok(None),
                    Some((at, Event::NewTip(job))) => return Ok(Some((at, job))),
                    Some(_) => {}
                },
            }
        }
    }

    /// The current job's id, as new-tip events name it.
    pub fn job_id(&self) -> Option<String> {
        match self {
            Link::V1(conn) => conn.job.as_ref().map(|j| j.job_id.to_string()),
            Link::V2(link) => link.job.as_ref().map(|(id, _, _)| id.to_string()),
        }
    }

    /// A grinder for the current job at `difficulty` (the job's own when `None`),
    /// and the job's id.
    pub fn grinder(&self, difficulty: Option<Difficulty>) -> anyhow::Result<(String, Grinder)> {
        match self {
            Link::V1(conn) => {
                let job = conn.job.as_ref().context("no job")?;
                let en1 = conn.extranonce1.context("not subscribed")?;
                let en2 = Extranonce::from_counter(0, conn.extranonce2_size);
                let difficulty = difficulty.unwrap_or(conn.job_difficulty);
                Ok((
                    job.job_id.to_string(),
                    Grinder::new(job, en1, en2, difficulty, 0),
                ))
            }
            Link::V2(link) => {
                let (id, job, target) = link.job.as_ref().context("no job")?;
                let en2 = Extranonce::from_counter(0, link.size);
                let difficulty = difficulty.unwrap_or_else(|| target_difficulty(target));
                Ok((
                    id.to_string(),
                    Grinder::new(job, link.prefix, en2, difficulty, 0),
                ))
            }
        }
    }

    /// The current job's network difficulty.
    pub fn network_difficulty(&self) -> Option<f64> {
        let nbits = match self {
            Link::V1(conn) => conn.job.as_ref()?.nbits.0,
            Link::V2(link) => link.job.as_ref()?.1.nbits.0,
        };
        Some(quarry_protocol::target::network_difficulty(nbits))
    }

    /// Queues `share` on job `job_id` as `worker`'s; returns its token (request id or
    /// sequence number). Nothing is written before [`Link::flush`].
    ///
    /// # Errors
    /// The connection failed.
    pub async fn queue(
        &mut self,
        worker: &str,
        job_id: &str,
        share: &Share,
    ) -> anyhow::Result<u64> {
        match self {
            Link::V1(conn) => {
                let id = conn.next_id();
                conn.feed(&format!(
                    r#"{{"id":{id},"method":"mining.submit","params":["{worker}","{job_id}","{}","{:08x}","{:08x}"]}}"#,
                    share.fields.extranonce2, share.fields.ntime, share.fields.nonce
                ))
                .await?;
                Ok(id)
            }
            Link::V2(link) => {
                let sequence = link.next_sequence;
                link.next_sequence += 1;
                let job: u32 = job_id.parse().context("a V2 job id")?;
                let bytes = link.client.encode_share(link.channel, sequence, job, share);
                link.out.extend_from_slice(&bytes);
                Ok(u64::from(sequence))
            }
        }
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Link::V1(conn) => conn.flush().await,
            Link::V2(link) => {
                let out = std::mem::take(&mut link.out);
                link.client
                    .send_raw(&out)
                    .await
                    .context("sending to the pool")
            }
        }
    }
}

use Event::NewTip;

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
