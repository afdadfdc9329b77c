//! One load-generating miner over either protocol: a V1 [`Conn`] (JSON lines, plain
//! or TLS) or a [`V2Conn`] (Noise frames, one extended channel). `hold` and
//! `shares` drive a [`Link`] and never look at the wire themselves.

use std::time::Instant;

use quarry_miner::url::Scheme;
use quarry_protocol::messages::Notify;
use quarry_protocol::Difficulty;

use super::conn::{Conn, Endpoint};
use super::conn_v2::V2Conn;
use super::event::Event;
use crate::grind::{Grinder, Share};

/// A miner's connection, set up and holding a job.
pub enum Link {
    V1(Box<Conn>),
    V2(Box<V2Conn>),
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
                V2Conn::open(self, index, worker, authority).await?,
            ))),
            Scheme::Tcp | Scheme::Tls => {
                let mut conn = self.connect(index).await?;
                conn.handshake(worker).await?;
                Ok(Link::V1(Box::new(conn)))
            }
        }
    }
}

impl Link {
    /// The next event, timestamped when read; `None` when the pool closed the
    /// connection.
    ///
    /// # Errors
    /// A read error or a line that is not JSON-RPC.
    pub async fn next(&mut self) -> anyhow::Result<Option<(Instant, Event)>> {
        match self {
            Link::V1(conn) => conn.next().await,
            Link::V2(conn) => Ok(conn.next().await),
        }
    }

    /// The next new-tip job's id and when it was read, `None` when the pool closed
    /// the connection: all a held connection needs, read as cheaply as the
    /// protocol allows.
    ///
    /// # Errors
    /// A read error.
    pub async fn next_new_tip(&mut self) -> anyhow::Result<Option<(Instant, String)>> {
        match self {
            Link::V1(conn) => conn.next_new_tip().await,
            Link::V2(conn) => Ok(conn.next_new_tip().await),
        }
    }

    /// The current job's id, as new-tip events name it.
    pub fn job_id(&self) -> Option<String> {
        match self {
            Link::V1(conn) => conn.job_id(),
            Link::V2(conn) => conn.job_id(),
        }
    }

    /// A grinder for the current job at `difficulty` (the job's own when `None`),
    /// and the job's id.
    ///
    /// # Errors
    /// No job yet.
    pub fn grinder(&self, difficulty: Option<Difficulty>) -> anyhow::Result<(String, Grinder)> {
        match self {
            Link::V1(conn) => conn.grinder(difficulty),
            Link::V2(conn) => conn.grinder(difficulty),
        }
    }

    /// The current job's network difficulty.
    pub fn network_difficulty(&self) -> Option<f64> {
        let notify: &Notify = match self {
            Link::V1(conn) => conn.notify()?,
            Link::V2(conn) => conn.notify()?,
        };
        Some(quarry_protocol::target::network_difficulty(notify.nbits.0))
    }

    /// Queues `share` on job `job_id` as `worker`'s; returns its token (request id or
    /// sequence number). Nothing is written before [`Link::flush`].
    ///
    /// # Errors
    /// The connection failed, or `job_id` is not the protocol's.
    pub async fn queue(
        &mut self,
        worker: &str,
        job_id: &str,
        share: &Share,
    ) -> anyhow::Result<u64> {
        match self {
            Link::V1(conn) => conn.queue(worker, job_id, share).await,
            Link::V2(conn) => conn.queue(job_id, share),
        }
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Link::V1(conn) => conn.flush().await,
            Link::V2(conn) => conn.flush().await,
        }
    }
}
