//! The network side: connects to the pools in order of preference (plain TCP, TLS, or
//! Stratum V2 over Noise, [`v2`]), drives a [`Session`] (or a V2
//! [`crate::session_v2::Session`]) over the connection, publishes its jobs to the
//! hashing threads and submits their shares; reconnects with exponential backoff and
//! jitter, fails over down the pool list, and returns to the primary once it answers
//! again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use crate::config::MineConfig;
use crate::hasher::{Board, FoundShare};
use crate::session::{Action, Session, SessionConfig};
use crate::stats::{ConnState, Stats};
use crate::tls;
use crate::url::{PoolUrl, Scheme};
use quarry_protocol::target::difficulty_for;
use quarry_protocol::{Difficulty, LineCodec};

/// The longest line accepted from a pool: a notify with a large coinbase and many
/// merkle branches is a few KB; anything near this is hostile.
pub const MAX_LINE: usize = 1 << 20;
/// How long a TCP connect or TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shares that arrive before a new connection has a job wait here (at most this many).
const MAX_HELD: usize = 256;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Reconnect pauses: 1 s for the first [`Backoff::QUICK`] tries, so a pool that
/// is just starting is reached within a second or two of answering, then
/// doubling to 60 s; each pause jittered by ±20 %.
#[derive(Debug)]
pub struct Backoff {
    quick_left: u32,
    next: Duration,
}

impl Backoff {
    const QUICK: u32 = 5;
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    /// Starts with the quick tries.
    pub fn new() -> Backoff {
        Backoff {
            quick_left: Self::QUICK,
            next: Self::MIN * 2,
        }
    }

    /// Back to the start (after a connection that worked).
    pub fn reset(&mut self) {
        *self = Backoff::new();
    }

    /// The next pause.
    pub fn pause(&mut self) -> Duration {
        let base = if self.quick_left > 0 {
            self.quick_left -= 1;
            Self::MIN
        } else {
            let base = self.next;
            self.next = (self.next * 2).min(Self::MAX);
            base
        };
        base.mul_f64(rand::rng().random_range(0.8..=1.2))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Why a connection ended.
enum Ended {
    /// Lost or refused; `mined` says whether it had got as far as mining.
    Lost { reason: String, mined: bool },
    /// The pool asked us to go elsewhere (or reconnect) after a pause.
    Redirect { url: PoolUrl, wait: Duration },
    /// On a backup, and the primary answers again.
    Failback,
}

/// Everything that outlives one connection.
pub struct Client {
    config: MineConfig,
    board: Arc<Board>,
    shares: mpsc::Receiver<FoundShare>,
    stats: Arc<Stats>,
    connector: Option<tokio_rustls::TlsConnector>,
    connection: u64,
    /// Session ids to resume, per pool.
    resume: HashMap<PoolUrl, String>,
    /// The previous connection and its pool: its shares may still be valid.
    previous: Option<(u64, PoolUrl)>,
    /// Hashes per second measured before mining, for the first suggestion.
    calibrated: f64,
}

impl Client {
    /// A client for `config`, publishing to `board` and taking shares from `shares`.
    ///
    /// # Errors
    /// No pool, or a TLS trust setting that cannot be loaded (only when some pool
    /// uses TLS).
    pub fn new(
        config: MineConfig,
        board: Arc<Board>,
        shares: mpsc::Receiver<FoundShare>,
        stats: Arc<Stats>,
    ) -> anyhow::Result<Client> {
        anyhow::ensure!(!config.pools.is_empty(), "no pool to connect to");
        let connector = if config.pools.iter().any(PoolUrl::tls) {
            Some(tls::connector(&config.trust)?)
        } else {
            None
        };
        Ok(Client {
            config,
            board,
            shares,
            stats,
            connector,
            connection: 0,
            resume: HashMap::new(),
            previous: None,
            calibrated: 0.0,
        })
    }

    /// Suggests difficulties for `hashes_per_second` (measured before mining)
    /// until the hashing threads have measured themselves.
    pub fn calibrated(mut self, hashes_per_second: f64) -> Client {
        self.calibrated = hashes_per_second;
        self
    }

    /// The difficulty to suggest at connect: one share per `share_interval`
    /// at the rate the threads hash at (or were calibrated at, before that).
    fn suggestion(&self) -> Option<Difficulty> {
        let interval = self.config.share_interval?;
        difficulty_for(self.hash_rate(), interval.as_secs_f64())
    }

    /// Hashes per second: as the threads measured themselves, or as calibrated
    /// before mining; 0 when neither is known.
    fn hash_rate(&self) -> f64 {
        let mining: f64 = self.stats.snapshot().rates.iter().sum();
        if mining > 0.0 {
            mining
        } else {
            self.calibrated
        }
    }

    /// Submits the shares found while there was no job to submit them on (a
    /// reconnect); a share of a job that is void by now is counted stale.
    fn release_held<R>(
        &self,
        held: &mut Vec<FoundShare>,
        mut submit: impl FnMut(&FoundShare) -> Option<R>,
    ) -> Vec<Action<R>> {
        let mut actions = Vec::with_capacity(held.len());
        for share in held.drain(..) {
            match submit(&share) {
                Some(request) => actions.push(Action::Send(request)),
                None => {
                    tracing::debug!(job = %share.job.notify.job_id, "share of a void job not submitted");
                    self.stats.stale();
                }
            }
        }
        actions
    }

    /// Mines forever: connect, mine, reconnect.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut index = 0;
        let mut redirect: Option<PoolUrl> = None;
        loop {
            let url = redirect
                .take()
                .unwrap_or_else(|| self.config.pools[index].clone());
            self.stats
                .set_link(Some(url.to_string()), ConnState::Connecting);
            tracing::info!(pool = %url, "connecting");
            let ended = match connect(&url, self.connector.as_ref()).await {
                Ok(stream) => match url.scheme {
                    Scheme::V2(key) => self.mine_v2(stream, &url, key, index).await,
                    Scheme::Tcp | Scheme::Tls => self.mine(stream, &url, index).await,
                },
                Err(error) => Ended::Lost {
                    reason: format!("{error:#}"),
                    mined: false,
                },
            };
            self.stats
                .set_link(Some(url.to_string()), ConnState::Disconnected);
            match ended {
                Ended::Failback => {
                    index = 0;
                    backoff.reset();
                }
                Ended::Redirect { url: target, wait } => {
                    tracing::info!(pool = %url, to = %target, wait_seconds = wait.as_secs(), "pool asked to reconnect");
                    tokio::time::sleep(wait).await;
                    redirect = Some(target);
                }
                Ended::Lost { reason, mined } => {
                    tracing::warn!(pool = %url, "connection failed: {reason}");
                    if mined {
                        backoff.reset();
                    }
                    index = (index + 1) % self.config.pools.len();
                    if index == 0 {
                        let pause = backoff.pause();
                        tracing::info!("retrying in {:.1} s", pause.as_secs_f64());
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }

    async fn mine(&mut self, stream: Box<dyn Stream>, url: &PoolUrl, index: usize) -> Ended {
        self.connection += 1;
        let connection = self.connection;
        let mut framed = Framed::new(stream, LineCodec::new(MAX_LINE));
        let mut session = Session::new(
            SessionConfig {
                user: self.config.user.clone(),
                pass: self.config.pass.clone(),
                version_mask: self.config.version_mask,
                extranonce_subscribe: self.config.extranonce_subscribe,
                suggest_difficulty: self.suggestion(),
            },
            connection,
        );
        let previous = self.previous.replace((connection, url.clone()));
        let mut mined = false;
        let mut held: Vec<FoundShare> = Vec::new();
        let (_probe, mut primary_answers) = self.probe(index);
        let mut probing = index != 0;
        let mut actions = session.start(self.resume.get(url).cloned());
        loop {
            for action in actions.drain(..) {
                match self.act(action, &mut framed, url, &mut mined).await {
                    Ok(()) => {}
                    Err(ended) => return self.end(ended, &session, url),
                }
            }
            if session.last_job().is_some() && !held.is_empty() {
                actions = self.release_held(&mut held, |share| {
                    let same_pool = previous
                        .as_ref()
                        .is_some_and(|(c, u)| *c == share.job.connection && u == url);
                    session.submit(share, same_pool)
                });
                continue;
            }
            tokio::select! {
                line = tokio::time::timeout(self.config.pool_timeout, framed.next()) => match line {
                    Ok(Some(Ok(line))) => actions = session.handle_line(&line),
                    Ok(Some(Err(error))) => return self.end(lost(format!("reading from the pool: {error}"), mined), &session, url),
                    Ok(None) => return self.end(lost("connection closed by the pool".into(), mined), &session, url),
                    Err(_) => return self.end(lost(format!("pool silent for {} s", self.config.pool_timeout.as_secs()), mined), &session, url),
                },
                Some(share) = self.shares.recv() => {
                    if held.len() < MAX_HELD {
                        held.push(share);
                    } else {
                        self.stats.stale();
                    }
                },
                answered = &mut primary_answers, if probing => {
                    probing = false;
                    if answered.is_ok() {
                        tracing::info!(primary = %self.config.pools[0], "primary pool answers again; switching back to it");
                        return self.end(Ended::Failback, &session, url);
                    }
                }
            }
        }
    }

    /// On a backup (`index` > 0), a task that probes the primary and signals once it
    /// answers; dropping the guard (when the connection ends) stops it.
    fn probe(&self, index: usize) -> (Option<AbortOnDrop>, oneshot::Receiver<()>) {
        let (primary_back, primary_answers) = oneshot::channel();
        let probe = (index != 0).then(|| {
            AbortOnDrop(tokio::spawn(probe_primary(
                self.config.pools[0].clone(),
                self.connector.clone(),
                self.config.failback_interval,
                primary_back,
            )))
        });
        (probe, primary_answers)
    }

    fn end(&mut self, ended: Ended, session: &Session, url: &PoolUrl) -> Ended {
        if let Some(id) = session.session_id() {
            self.resume.insert(url.clone(), id.to_owned());
        }
        ended
    }

    async fn act(
        &mut self,
        action: Action,
        framed: &mut Framed<Box<dyn Stream>, LineCodec>,
        url: &PoolUrl,
        mined: &mut bool,
    ) -> Result<(), Ended> {
        let Some(line) = self.outcome(action, url, mined)? else {
            return Ok(());
        };
        tracing::trace!(%line, "send");
        // A pool that stops reading is as dead as one that stops writing.
        match tokio::time::timeout(self.config.pool_timeout, framed.send(line)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(lost(format!("writing to the pool: {error}"), *mined)),
            Err(_) => Err(lost("the pool stopped reading".into(), *mined)),
        }
    }

    /// Carries out every action but sending (the same for V1 and V2); returns what
    /// is to be sent.
    fn outcome<Out>(
        &mut self,
        action: Action<Out>,
        url: &PoolUrl,
        mined: &mut bool,
    ) -> Result<Option<Out>, Ended> {
        match action {
            Action::Send(out) => return Ok(Some(out)),
            Action::Job(job) => {
                tracing::debug!(job = %job.notify.job_id, clean = job.notify.clean_jobs, difficulty = job.difficulty.get(), "new job");
                self.stats.set_difficulty(job.difficulty.get());
                self.board.publish(job);
            }
            Action::Authorized => {
                *mined = true;
                self.stats
                    .set_link(Some(url.to_string()), ConnState::Mining);
                tracing::info!(pool = %url, worker = %self.config.user, "authorized; mining");
            }
            Action::Unauthorized(reason) => {
                tracing::error!(pool = %url, worker = %self.config.user, "pool refused the worker: {reason}");
                return Err(lost(format!("worker refused: {reason}"), false));
            }
            Action::SubscribeFailed(reason) => {
                return Err(lost(format!("subscribe failed: {reason}"), false));
            }
            Action::Closed(reason) => return Err(lost(reason, *mined)),
            Action::ShareAccepted { job_id, difficulty } => {
                self.stats.accepted();
                let s = self.stats.snapshot();
                tracing::info!(job = %job_id, difficulty, "share accepted ({}/{}, {:.1}%)", s.accepted, s.accepted + s.rejected_total(), s.acceptance_percent());
            }
            Action::ShareRejected {
                job_id,
                code,
                reason,
            } => {
                self.stats.rejected(&reason);
                let code = code.map_or_else(String::new, |c| format!(" (code {c})"));
                tracing::warn!(job = %job_id, "share rejected: {reason}{code}");
            }
            Action::Reconnect(target) => {
                let url = url.redirect(target.host.as_deref(), target.port);
                let wait = Duration::from_secs(target.wait_seconds.min(3600));
                return Err(Ended::Redirect { url, wait });
            }
            Action::ShowMessage(text) => {
                tracing::info!(pool = %url, "message from the pool: {text}")
            }
            Action::Ignored(what) => tracing::debug!(pool = %url, "ignored: {what}"),
        }
        Ok(None)
    }
}

/// Opens a connection to `url`: TCP, then TLS if the scheme asks for it.
async fn connect(
    url: &PoolUrl,
    connector: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<Box<dyn Stream>> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(url.authority()))
        .await
        .context("TCP connect timed out")?
        .with_context(|| format!("connecting to {}", url.authority()))?;
    let _ = tcp.set_nodelay(true);
    if !url.tls() {
        return Ok(Box::new(tcp));
    }
    let connector = connector.context("no TLS connector for a TLS pool")?;
    let name = tls::server_name(&url.host)?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .context("TLS handshake timed out")?
        .map_err(|error| anyhow::anyhow!("TLS handshake failed: {}", tls::explain(&error)))?;
    Ok(Box::new(stream))
}

/// Every `interval`, tries to connect to `primary`; signals `back` once it answers
/// (a V2 primary: once it proves its authority key).
async fn probe_primary(
    primary: PoolUrl,
    connector: Option<tokio_rustls::TlsConnector>,
    interval: Duration,
    back: oneshot::Sender<()>,
) {
    loop {
        tokio::time::sleep(interval).await;
        let answered = match connect(&primary, connector.as_ref()).await {
            Ok(stream) => match primary.scheme {
                Scheme::V2(key) => v2::handshake(stream, key).await.map(drop),
                Scheme::Tcp | Scheme::Tls => Ok(()),
            },
            Err(error) => Err(format!("{error:#}")),
        };
        match answered {
            Ok(()) => {
                let _ = back.send(());
                return;
            }
            Err(error) => tracing::debug!(%primary, "primary still unavailable: {error}"),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lost(reason: String, mined: bool) -> Ended {
    Ended::Lost { reason, mined }
}

mod v2;

#[cfg(test)]
mod tests;
