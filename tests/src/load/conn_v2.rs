//! One lean Stratum V2 connection for load generation: bound to a chosen loopback
//! source address, the Noise handshake pinning the pool's authority key, and one
//! extended channel with only the state a miner needs (extranonce prefix, target,
//! the future job and the active one).

use std::time::Instant;

use anyhow::{bail, Context};
use quarry_protocol::messages::Notify;
use quarry_protocol::sv2::AuthorityPublicKey;
use quarry_protocol::{Difficulty, Extranonce};

use super::conn::Endpoint;
use super::event::{Answer, Event};
use crate::grind::{Grinder, Share};
use crate::v2::{as_notify, target_difficulty, Reply, V2Client};

/// A V2 connection with one extended channel and what the pool told it.
pub struct V2Conn {
    client: V2Client,
    channel: u32,
    prefix: Extranonce,
    size: usize,
    target: [u8; 32],
    /// The last future job, until a `SetNewPrevHash` activates it.
    future: Option<Reply>,
    /// The active job: its id, the notify to grind it as, and the target it had
    /// (the pool judges a share by its job's target).
    job: Option<(u32, Notify, [u8; 32])>,
    next_sequence: u32,
    /// Shares encrypted and not yet written.
    out: Vec<u8>,
}

impl V2Conn {
    /// Opens connection `index`, sets it up and opens an extended channel for
    /// `worker`, up to its first job (a future job and the `SetNewPrevHash` naming it).
    ///
    /// # Errors
    /// Connect, handshake or set-up failures, or a refusal.
    pub async fn open(
        endpoint: &Endpoint,
        index: usize,
        worker: &str,
        authority: AuthorityPublicKey,
    ) -> anyhow::Result<V2Conn> {
        let tcp = endpoint.tcp(index).await?;
        let mut client = V2Client::over(tcp, authority)
            .await
            .map_err(|e| anyhow::anyhow!("V2 handshake: {e}"))?;
        client.try_setup().await?;
        client.open_extended(1, worker, 0).await;
        let mut conn = V2Conn {
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
        while conn.job.is_none() {
            match conn.client.next_reply().await {
                None => bail!("the pool closed the connection before the first job"),
                Some(Reply::OpenError(code)) => bail!("channel for {worker} refused: {code}"),
                Some(reply) => {
                    conn.track(reply);
                }
            }
        }
        Ok(conn)
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
                    let tip = Reply::PrevHash {
                        job,
                        prev: current.prevhash.header_bytes(),
                        ntime,
                        nbits: current.nbits.0,
                    };
                    self.job = Some((job, as_notify(&reply, &tip), self.target));
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

    /// The next message as an event, timestamped when read, with the channel's
    /// state tracked; `None` when the pool closed the connection.
    pub async fn next(&mut self) -> Option<(Instant, Event)> {
        let reply = self.client.next_reply().await?;
        let at = Instant::now();
        Some((at, self.track(reply)))
    }

    /// The next new-tip job's id and when it was read; `None` when the pool
    /// closed the connection.
    pub async fn next_new_tip(&mut self) -> Option<(Instant, String)> {
        loop {
            if let (at, Event::NewTip(job)) = self.next().await? {
                return Some((at, job));
            }
        }
    }

    /// The active job's id, as new-tip events name it.
    pub fn job_id(&self) -> Option<String> {
        self.job.as_ref().map(|(id, _, _)| id.to_string())
    }

    /// The active job as a notify, to read its network target from.
    pub fn notify(&self) -> Option<&Notify> {
        self.job.as_ref().map(|(_, notify, _)| notify)
    }

    /// A grinder for the active job at `difficulty` (the job's target's when
    /// `None`), and the job's id.
    ///
    /// # Errors
    /// No job yet.
    pub fn grinder(&self, difficulty: Option<Difficulty>) -> anyhow::Result<(String, Grinder)> {
        let (id, job, target) = self.job.as_ref().context("no job")?;
        let en2 = Extranonce::from_counter(0, self.size);
        let difficulty = difficulty.unwrap_or_else(|| target_difficulty(target));
        Ok((
            id.to_string(),
            Grinder::new(job, self.prefix, en2, difficulty, 0),
        ))
    }

    /// Encrypts `share` on job `job_id` as a `SubmitSharesExtended` to write with
    /// the next [`V2Conn::flush`]; returns its sequence number.
    ///
    /// # Errors
    /// `job_id` is not a V2 job id.
    pub fn queue(&mut self, job_id: &str, share: &Share) -> anyhow::Result<u64> {
        let job: u32 = job_id.parse().context("a V2 job id")?;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let bytes = self.client.encode_share(self.channel, sequence, job, share);
        self.out.extend_from_slice(&bytes);
        Ok(u64::from(sequence))
    }

    /// Writes every share queued.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.client
            .send_raw(&self.out)
            .await
            .context("sending to the pool")?;
        self.out.clear();
        Ok(())
    }
}
