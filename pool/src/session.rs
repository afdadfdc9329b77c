//! One Stratum connection, from first line to close, generic over the stream so
//! plain TCP, TLS and in-memory pipes run the same code.
//!
//! Data flows one way: socket → codec → [`Session::handle_line`] → validation →
//! ledger → reply. Share acknowledgements are pipelined: a share is answered
//! `true` only once its ledger transaction has committed, while the connection
//! keeps reading (up to [`MAX_IN_FLIGHT`] unanswered shares).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use quarry_protocol::jsonrpc::{self, error_line, result_line, Call, Id, Message, WireLine};
use quarry_protocol::messages::{
    Authorize, ClientRequest, ConfigureResult, ServerMessage, Subscribe, SubscribeResult,
};
use quarry_protocol::reject::{ErrorCode, StratumError};
use quarry_protocol::{Difficulty, LineCodec};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tracing::Instrument;

use crate::accounting::{account_of, now_ms, Accounting, WorkerStats};
use crate::context::{Context, SessionInfo};
use crate::extranonce::Lease;
use crate::jobs::{Announcement, Face};
use crate::ledger::{AcceptedShare, LedgerError, RejectKind};
use crate::limits::Budgets;
use crate::reward::{Payee, Scheme};
use crate::validate::{validate, SessionTerms, Solved};
use crate::vardiff::{Vardiff, VardiffConfig};

/// The most shares a connection may have waiting for their commit.
pub const MAX_IN_FLIGHT: usize = 256;
/// The most worker names one connection may authorize.
const MAX_WORKERS: usize = 64;
/// A peer that does not take our writes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection we close keeps draining the peer's input, so our
/// last lines (the reason for the close) arrive instead of a reset.
const LINGER: Duration = Duration::from_secs(1);
/// A session's first read buffer: a subscribe, an authorize or a submit fits.
const READ_BUFFER: usize = 512;
/// The most input a lingering close reads and discards.
const LINGER_BYTES: usize = 1 << 20;

/// Removes the session from the registry when it ends.
struct Registered {
    id: u64,
    ctx: Arc<Context>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.ctx.sessions.remove(&self.id);
    }
}

impl Context {
    fn vardiff_config(&self) -> VardiffConfig {
        let c = &self.config;
        VardiffConfig {
            share_interval: c.share_interval,
            window: c.vardiff_window,
            min: Difficulty::new(c.min_difficulty).unwrap_or(Difficulty::ONE),
            max: Difficulty::new(c.max_difficulty).unwrap_or(Difficulty::ONE),
        }
    }
}

/// An outgoing line: the job notify is shared by every session, replies are
/// owned. Either way a [`WireLine`], so every write is whole JSON lines.
enum Line {
    Owned(WireLine),
    Shared(Arc<WireLine>),
}

impl Line {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Line::Owned(line) => line.as_bytes(),
            Line::Shared(line) => line.as_bytes(),
        }
    }
}

impl From<WireLine> for Line {
    fn from(line: WireLine) -> Line {
        Line::Owned(line)
    }
}

/// A share whose commit is under way.
type PendingAck = Pin<Box<dyn Future<Output = AckDone> + Send>>;

struct AckDone {
    id: Id,
    result: Result<(), LedgerError>,
    worker: Arc<WorkerStats>,
    difficulty: f64,
    hash_difficulty: f64,
    time_ms: i64,
}

/// Counts the session in the pool totals for as long as it lives.
struct SessionCount(Arc<Accounting>);

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.totals.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Session {
    ctx: Arc<Context>,
    id: u64,
    peer: SocketAddr,
    /// `None` for allow-listed peers.
    budgets: Option<Budgets>,
    /// Over-budget messages so far.
    violations: u32,
    /// Shares judged, and how many of them were invalid (low difficulty,
    /// duplicate, malformed), for the invalid-share ban.
    judged: u64,
    invalid: u64,
    /// Set when the session must end (ban, policy); the reason is logged.
    close: Option<String>,
    connected_at: Instant,
    subscribed_at: Option<Instant>,
    /// The last authorization or accepted share, for the idle timeout.
    active_at: Option<Instant>,
    lease: Option<Lease>,
    version_mask: u32,
    workers: Vec<Arc<WorkerStats>>,
    vardiff: Vardiff,
    /// The difficulty announced with the latest job (before the first job: the
    /// one the first `set_difficulty` will carry).
    difficulty: Difficulty,
    /// The job sent last (none before the first), and the face of it sent.
    last_job: Option<Arc<Announcement>>,
    face: Option<Arc<Face>>,
    /// Whom this session's coinbases pay when the pool mines solo: its first worker's
    /// account, an address.
    payee: Option<Payee>,
    out: Vec<Line>,
    acks: FuturesUnordered<PendingAck>,
    _count: SessionCount,
}

/// Serves one connection until it closes, errs, or the pool shuts down.
pub async fn serve<S>(stream: S, peer: SocketAddr, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let id = ctx.next_session.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", id, %peer, worker = tracing::field::Empty);
    async move {
        tracing::debug!("connected");
        match run(stream, peer, id, ctx).await {
            Ok(()) => tracing::debug!("closed"),
            Err(reason) => tracing::info!(%reason, "disconnected"),
        }
    }
    .instrument(span)
    .await;
}

async fn run<S>(stream: S, peer: SocketAddr, id: u64, ctx: Arc<Context>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let kick = ctx.shutdown.child_token();
    ctx.sessions.insert(
        id,
        SessionInfo {
            peer,
            connected: crate::accounting::rfc3339(now_ms()),
            workers: Vec::new(),
            kick: kick.clone(),
        },
    );
    let _registered = Registered {
        id,
        ctx: ctx.clone(),
    };
    ctx.accounting
        .totals
        .sessions
        .fetch_add(1, Ordering::Relaxed);
    let start = Difficulty::new(ctx.config.start_difficulty).unwrap_or(Difficulty::ONE);
    let mut session = Session {
        id,
        peer,
        budgets: ctx.guard.budgets(peer.ip()),
        violations: 0,
        judged: 0,
        invalid: 0,
        close: None,
        connected_at: Instant::now(),
        subscribed_at: None,
        active_at: None,
        vardiff: Vardiff::new(ctx.vardiff_config(), start, Instant::now()),
        difficulty: start,
        lease: None,
        version_mask: 0,
        workers: Vec::new(),
        last_job: None,
        face: None,
        payee: None,
        out: Vec::new(),
        acks: FuturesUnordered::new(),
        _count: SessionCount(ctx.accounting.clone()),
        ctx: ctx.clone(),
    };
    // Reads go through a small buffer that grows only for a long line; writes go
    // straight to the stream (see `flush`), so an idle session holds no buffers.
    let mut framed = FramedRead::with_capacity(
        stream,
        LineCodec::new(ctx.config.max_line_length),
        READ_BUFFER,
    );
    let mut jobs = ctx.book.subscribe();
    jobs.borrow_and_update();

    // Made once and re-armed, not rebuilt on every message: with many
    // thousands of sessions woken by one job, every iteration counts.
    let kicked = kick.cancelled();
    tokio::pin!(kicked);
    let timeout = tokio::time::sleep_until(session.deadline().0);
    tokio::pin!(timeout);
    let result = loop {
        // A new block's job written by this turn's flush, for the fan-out metric.
        let mut new_block = None;
        let deadline = session.deadline().0;
        if timeout.deadline() != deadline {
            timeout.as_mut().reset(deadline);
        }
        tokio::select! {
            biased;
            () = &mut kicked => break Err(if ctx.shutdown.is_cancelled() { "shutting down" } else { "kicked by the operator" }.to_owned()),
            () = &mut timeout => break Err(session.deadline().1.to_owned()),
            Some(done) = session.acks.next(), if !session.acks.is_empty() => {
                session.finish_ack(done);
                // One group commit completes many of this session's shares at
                // once: answer all of them with one write.
                while let Some(Some(done)) = session.acks.next().now_or_never() {
                    session.finish_ack(done);
                }
            }
            changed = jobs.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                let announcement = jobs.borrow_and_update().clone();
                if session.on_job(&announcement) {
                    new_block = Some(announcement);
                }
            }
            line = framed.next(), if session.acks.len() < MAX_IN_FLIGHT => match line {
                None => break Ok(()),
                Some(Err(err)) => break Err(err.to_string()),
                Some(Ok(line)) => session.handle_line(&line),
            },
        }
        if let Err(reason) = flush(framed.get_mut(), &mut session.out).await {
            break Err(reason);
        }
        if let Some(job) = new_block {
            ctx.metrics
                .fanout
                .written(job.job.id, job.published.elapsed());
        }
        if let Some(reason) = session.close.take() {
            break Err(reason);
        }
    };
    // Answer every share already on its way to the ledger before closing.
    while let Some(done) = session.acks.next().await {
        session.finish_ack(done);
    }
    let flushed = flush(framed.get_mut(), &mut session.out).await;
    for worker in &session.workers {
        ctx.accounting.session_closed(worker);
    }
    if result.is_err() && flushed.is_ok() {
        linger(framed.into_inner()).await;
    }
    result
}

/// Closes our side and discards the peer's unread input for a moment: closing
/// a socket with unread input resets the connection, and a reset throws away
/// what we wrote last but the peer has not yet taken.
async fn linger<S>(mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drain = async {
        stream.shutdown().await?;
        // On the heap: an array here would be part of every session's task.
        let mut buf = vec![0u8; 4096];
        let mut read = 0;
        while read < LINGER_BYTES {
            match stream.read(&mut buf).await? {
                0 => break,
                n => read += n,
            }
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Writes the queued lines: a single line (the common case: a job, or an
/// answer) straight from where it lives, several joined into one write.
async fn flush<S>(stream: &mut S, out: &mut Vec<Line>) -> Result<(), String>
where
    S: AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    if out.is_empty() {
        return Ok(());
    }
    let write = async {
        match out.as_slice() {
            [line] => stream.write_all(line.as_bytes()).await?,
            lines => {
                let mut joined = Vec::with_capacity(lines.iter().map(|l| l.as_bytes().len()).sum());
                for line in lines {
                    joined.extend_from_slice(line.as_bytes());
                }
                stream.write_all(&joined).await?;
            }
        }
        out.clear();
        stream.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("peer is not reading".to_owned()),
    }
}

impl Session {
    fn reply(&mut self, id: &Id, result: Value) {
        if !id.is_null() {
            self.out.push(result_line(id, &result).into());
        }
    }

    fn reply_error(
        &mut self,
        id: &Id,
        code: ErrorCode,
        message: impl Into<std::borrow::Cow<'static, str>>,
    ) {
        if !id.is_null() {
            self.out
                .push(error_line(id, &StratumError::new(code, message)).into());
        }
    }

    /// Spends one message of the right budget; `false` (with the ban done, or
    /// the error sent to `answer` when the message expects one) when the peer
    /// is over it.
    fn within_budget(&mut self, answer: Option<&Id>, is_submit: bool) -> bool {
        let Some(budgets) = &self.budgets else {
            return true;
        };
        if budgets.spend(is_submit) {
            return true;
        }
        self.violations += 1;
        self.ctx.metrics.rate_limited(is_submit);
        if self.violations >= self.ctx.guard.config.violations_before_ban {
            self.ban("kept exceeding the message rate limit".to_owned());
        } else if let Some(id) = answer {
            let error = StratumError::new(ErrorCode::Other, "rate limit exceeded");
            self.out.push(error_line(id, &error).into());
        }
        false
    }

    /// Bans the peer's address and ends the session.
    fn ban(&mut self, reason: String) {
        let limits = &self.ctx.guard.config;
        self.ctx
            .guard
            .ban(self.peer.ip(), &reason, limits.ban_duration);
        self.close = Some(format!("banned: {reason}"));
    }

    /// When the session times out next, and why.
    fn deadline(&self) -> (Instant, &'static str) {
        let limits = &self.ctx.guard.config;
        match (self.subscribed_at, self.active_at) {
            (None, _) => (
                self.connected_at + limits.subscribe_timeout,
                "no mining.subscribe in time",
            ),
            (Some(at), None) => (at + limits.authorize_timeout, "no mining.authorize in time"),
            (Some(_), Some(at)) => (at + limits.idle_timeout, "idle: no share for too long"),
        }
    }

    fn handle_line(&mut self, line: &str) {
        let parsed = jsonrpc::parse(line);
        let is_submit = matches!(&parsed, Ok(Message::Request(c) | Message::Notification(c)) if c.method == "mining.submit");
        // Requests are answered, and so are lines that do not parse (under
        // their id when it can be read, else null); notifications and
        // responses are not.
        let answer = match &parsed {
            Ok(Message::Request(call)) => Some(call.id.clone()),
            Ok(Message::Notification(_) | Message::Response(_)) => None,
            Err(err) => Some(err.id.clone()),
        };
        if !self.within_budget(answer.as_ref(), is_submit) {
            return;
        }
        let call = match parsed {
            Ok(Message::Request(call) | Message::Notification(call)) => call,
            // Answers to our own requests (none need acting on).
            Ok(Message::Response(_)) => return,
            Err(err) => {
                let error = StratumError::new(ErrorCode::Other, err.to_string());
                self.out.push(error_line(&err.id, &error).into());
                return;
            }
        };
        match call.client_request() {
            Ok(request) => self.handle_request(call.id, request),
            Err(err) => {
                if call.method == "mining.submit" {
                    self.count_malformed(&call);
                }
                self.reply_error(&call.id, ErrorCode::Other, err.to_string());
            }
        }
    }

    fn count_malformed(&self, call: &Call) {
        let name = call.params.first().and_then(Value::as_str);
        if let Some(worker) = self.workers.iter().find(|w| Some(&*w.name) == name) {
            self.ctx
                .accounting
                .record_reject(worker, RejectKind::Malformed);
            self.ctx
                .ledger
                .record_reject(&worker.name, RejectKind::Malformed, now_ms());
        }
    }

    fn handle_request(&mut self, id: Id, request: ClientRequest) {
        match request {
            ClientRequest::Configure(configure) => {
                let result = ConfigureResult::negotiate(&configure, self.ctx.config.version_mask);
                if let Some(mask) = result.version_rolling {
                    self.version_mask = mask;
                }
                if let Some(minimum) = configure.minimum_difficulty() {
                    self.suggest(minimum);
                }
                self.reply(&id, result.to_value());
            }
            ClientRequest::Subscribe(subscribe) => self.subscribe(&id, subscribe),
            ClientRequest::Authorize(authorize) => self.authorize(&id, authorize),
            ClientRequest::Submit(submit) => self.submit(id, submit),
            ClientRequest::SuggestDifficulty(difficulty) => {
                self.suggest(difficulty);
                self.reply(&id, Value::Bool(true));
            }
            ClientRequest::ExtranonceSubscribe | ClientRequest::Pong => {
                self.reply(&id, Value::Bool(true));
            }
        }
    }

    fn subscribe(&mut self, id: &Id, subscribe: Subscribe) {
        if self.lease.is_none() {
            let lease = self.ctx.extranonces.lease(subscribe.session_id.as_deref());
            // A resumed session goes on at the difficulty it had.
            if let Some(difficulty) = lease.last_difficulty() {
                self.difficulty = self.vardiff.set(difficulty, Instant::now());
            }
            self.lease = Some(lease);
            self.subscribed_at = Some(Instant::now());
        }
        let Some(lease) = &self.lease else { return };
        let result = SubscribeResult {
            session_id: lease.session_id(),
            extranonce1: lease.extranonce(),
            extranonce2_size: self.ctx.config.extranonce2_size,
        };
        self.reply(id, result.to_value());
        self.first_job();
    }

    /// The first job goes out once the session is both subscribed and
    /// authorized (as ckpool does): a difficulty suggested before then, in
    /// either order or in the password, is the one it starts at.
    fn first_job(&mut self) {
        if self.last_job.is_none() {
            let current = self.ctx.book.current();
            self.on_job(&current);
        }
    }

    fn authorize(&mut self, id: &Id, authorize: Authorize) {
        if let Err(reason) = check_worker_name(&authorize.username) {
            self.reply_error(id, ErrorCode::Unauthorized, reason);
            return;
        }
        if let Err(reason) = self.solo_payee(&authorize.username) {
            self.reply_error(id, ErrorCode::Unauthorized, reason);
            return;
        }
        if !self.workers.iter().any(|w| *w.name == *authorize.username) {
            if self.workers.len() >= MAX_WORKERS {
                self.reply_error(
                    id,
                    ErrorCode::Unauthorized,
                    "too many workers on one connection",
                );
                return;
            }
            let worker = self.ctx.accounting.worker(&authorize.username);
            self.ctx.accounting.session_opened(&worker);
            self.ctx
                .accounting
                .set_difficulty(&worker, self.difficulty.get());
            if self.workers.is_empty() {
                tracing::Span::current().record("worker", &*authorize.username);
                self.active_at = Some(Instant::now());
            }
            if let Some(mut info) = self.ctx.sessions.get_mut(&self.id) {
                info.workers.push(authorize.username.clone());
            }
            self.workers.push(worker);
        }
        // The password may carry a difficulty, "d=0.01", as many pools accept.
        if let Some(difficulty) = authorize.password.as_deref().and_then(password_difficulty) {
            self.suggest(difficulty);
        }
        self.reply(id, Value::Bool(true));
        self.first_job();
    }

    /// Under solo mining, whom `username`'s shares pay: the session's payee, set by its
    /// first worker. Every worker of a connection mines for one address, since all get
    /// the same jobs.
    fn solo_payee(&mut self, username: &str) -> Result<(), String> {
        if self.ctx.reward.scheme() != Scheme::Solo {
            return Ok(());
        }
        let account = account_of(username);
        match &self.payee {
            Some(payee) if *payee.account == *account => Ok(()),
            Some(payee) => Err(format!(
                "this connection mines solo for {}; a worker of another address needs a connection of its own",
                payee.account
            )),
            None => {
                self.payee = Some(self.ctx.reward.payee(account)?);
                Ok(())
            }
        }
    }

    fn suggest(&mut self, difficulty: Difficulty) {
        let clamped = self.vardiff.set(difficulty, Instant::now());
        if self.last_job.is_some() {
            self.announce_difficulty_now();
        } else {
            // Before the first job it is simply the start.
            self.difficulty = clamped;
        }
    }

    /// Sends `announcement`'s job; true when it went out as a clean job on a new tip.
    /// The session sees only the latest of jobs published in quick succession, so a
    /// job is clean for this miner when its tip differs from the last job it was sent,
    /// whatever the announcement says: a block followed at once by a refresh still
    /// reaches the miner as a clean job.
    fn on_job(&mut self, announcement: &Arc<Announcement>) -> bool {
        let Some(lease) = &self.lease else {
            return false;
        };
        if self.workers.is_empty() {
            return false;
        }
        let new_tip = self
            .last_job
            .as_ref()
            .is_none_or(|last| !last.job.template.same_tip(&announcement.job.template));
        let resuming = self.last_job.is_none() && lease.resumed();
        self.vardiff.on_tick(Instant::now());
        // set_difficulty precedes the first notify, and any notify after a change.
        if self.last_job.is_none() || self.vardiff.current() != self.difficulty {
            self.send_difficulty();
        }
        let face = announcement.job.face(self.payee.as_ref());
        if resuming {
            // The miner may have searched this job under this extranonce1
            // before the reconnect: it gets a variant of it, new work.
            self.send_variant(&face, true);
        } else {
            self.remember(announcement.job.id);
            let line = if new_tip {
                &face.clean_line
            } else {
                &face.line
            };
            self.out.push(Line::Shared(line.clone()));
        }
        self.last_job = Some(announcement.clone());
        self.face = Some(face);
        new_tip
    }

    /// Hands the miner `face`'s job as a variant never handed to its extranonce1
    /// before.
    fn send_variant(&mut self, face: &Face, clean_jobs: bool) {
        let Some(lease) = &mut self.lease else {
            return;
        };
        let (wire_id, line) = face.variant(lease.next_variant(), clean_jobs);
        self.remember(wire_id);
        self.out.push(line.into());
    }

    /// Sends the difficulty vardiff wants now rather than with the next job
    /// (which may be half a minute away): `set_difficulty`, then a variant of
    /// the job the miner has, since some miners apply a new difficulty only
    /// from the next notify. A fast miner that starts far too low is raised
    /// before its share rate trips the rate limit. Nothing is sent when the
    /// difficulty did not change, and the job is not re-announced once it is
    /// void (retired or stale): the next job carries the change.
    fn announce_difficulty_now(&mut self) {
        let (Some(job), Some(face)) = (self.last_job.clone(), self.face.clone()) else {
            return;
        };
        if self.vardiff.current() == self.difficulty {
            return;
        }
        self.send_difficulty();
        if self.ctx.book.is_live(&job.job) {
            self.send_variant(&face, false);
        }
    }

    /// Queues `set_difficulty` with the difficulty vardiff wants.
    fn send_difficulty(&mut self) {
        let wanted = self.vardiff.current();
        self.difficulty = wanted;
        self.vardiff.announced(Instant::now());
        self.out.push(
            ServerMessage::SetDifficulty(wanted)
                .to_line(&Id::Null)
                .into(),
        );
        for worker in &self.workers {
            self.ctx.accounting.set_difficulty(worker, wanted.get());
        }
    }

    /// Remembers that shares on wire job id `job` are judged at the current difficulty.
    fn remember(&mut self, job: u64) {
        if let Some(lease) = &mut self.lease {
            lease.remember(job, self.difficulty);
        }
    }

    fn submit(&mut self, id: Id, submit: quarry_protocol::Submit) {
        let Some(lease) = &self.lease else {
            self.reply_error(&id, ErrorCode::NotSubscribed, "not subscribed");
            return;
        };
        let Some(worker) = self
            .workers
            .iter()
            .find(|w| *w.name == *submit.worker)
            .cloned()
        else {
            if self.ctx.accounting.knows(&submit.worker) {
                let worker = self.ctx.accounting.worker(&submit.worker);
                self.ctx
                    .accounting
                    .record_reject(&worker, RejectKind::Unauthorized);
                self.ctx
                    .ledger
                    .record_reject(&worker.name, RejectKind::Unauthorized, now_ms());
            }
            self.reply_error(&id, ErrorCode::Unauthorized, "unauthorized worker");
            return;
        };
        let difficulty_for = |job: u64| lease.difficulty_for(job);
        let terms = SessionTerms {
            extranonce1: lease.extranonce(),
            extranonce2_size: self.ctx.config.extranonce2_size,
            version_mask: self.version_mask,
            difficulty_for: &difficulty_for,
            current_difficulty: self.difficulty,
            payee: self.payee.as_ref(),
            held: self.face.as_ref(),
        };
        let started = std::time::Instant::now();
        let verdict = validate(&self.ctx.book, &submit, &terms);
        self.ctx
            .metrics
            .share_validation
            .observe_duration(started.elapsed());
        if let Some(block) = verdict.block {
            tracing::info!(worker = %worker.name, hash = %quarry_protocol::share::block_hash(&block.header), "share solves a block");
            let solved = Solved {
                worker: worker.name.clone(),
                candidate: block,
            };
            if let Err(err) = self.ctx.blocks.try_send(solved) {
                tracing::error!(%err, "block candidate dropped: the job source is not keeping up");
            }
        }
        self.judged += 1;
        if let Err((RejectKind::LowDifficulty | RejectKind::Duplicate | RejectKind::Malformed, _)) =
            &verdict.outcome
        {
            self.invalid += 1;
        }
        let limits = &self.ctx.guard.config;
        if self.budgets.is_some()
            && self.judged >= limits.invalid_share_minimum
            && self.invalid as f64 * 100.0 >= limits.invalid_share_percent * self.judged as f64
        {
            let reason = format!("{} of {} shares invalid", self.invalid, self.judged);
            self.ban(reason);
        }
        match verdict.outcome {
            Err((kind, error)) => {
                self.ctx.accounting.record_reject(&worker, kind);
                self.ctx.ledger.record_reject(&worker.name, kind, now_ms());
                if !id.is_null() {
                    self.out.push(error_line(&id, &error).into());
                }
            }
            Ok(accepted) => {
                let ledger = self.ctx.ledger.clone();
                let time_ms = now_ms();
                let share = AcceptedShare {
                    worker: worker.name.clone(),
                    difficulty: accepted.difficulty,
                    hash_difficulty: accepted.hash_difficulty,
                    time_ms,
                };
                self.acks.push(Box::pin(async move {
                    let result = ledger.record_share(share).await;
                    AckDone {
                        id,
                        result,
                        worker,
                        difficulty: accepted.difficulty,
                        hash_difficulty: accepted.hash_difficulty,
                        time_ms,
                    }
                }));
            }
        }
    }

    fn finish_ack(&mut self, done: AckDone) {
        match done.result {
            Ok(()) => {
                self.ctx.accounting.record_accept(
                    &done.worker,
                    done.difficulty,
                    done.hash_difficulty,
                    done.time_ms,
                );
                self.active_at = Some(Instant::now());
                self.reply(&done.id, Value::Bool(true));
                if self
                    .vardiff
                    .on_share(Instant::now(), done.difficulty)
                    .is_some()
                {
                    self.announce_difficulty_now();
                }
            }
            Err(err) => {
                // The ledger logs the failed commit itself, at most every few seconds.
                tracing::debug!(%err, "share could not be stored; not acknowledged");
                self.reply_error(
                    &done.id,
                    ErrorCode::Other,
                    "share not recorded: pool storage error",
                );
            }
        }
    }
}

/// Checks an `account.worker` name: 1..=128 printable ASCII characters without
/// quotes, slashes or backslashes, not starting with `.` or `_`.
pub(crate) fn check_worker_name(name: &str) -> Result<(), String> {
    let excerpt: String = name.chars().take(40).collect();
    if name.is_empty() || name.len() > 128 {
        return Err(format!(
            "invalid worker name {excerpt:?}: must be 1..=128 characters"
        ));
    }
    if name.starts_with(['.', '_']) {
        return Err(format!(
            "invalid worker name {excerpt:?}: must not start with '.' or '_'"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'/'))
    {
        return Err(format!(
            "invalid worker name {excerpt:?}: only printable ASCII without quotes or slashes"
        ));
    }
    Ok(())
}

/// Reads `d=<difficulty>` from a comma-separated password.
fn password_difficulty(password: &str) -> Option<Difficulty> {
    password
        .split(',')
        .find_map(|part| part.trim().strip_prefix("d="))
        .and_then(|d| d.parse::<f64>().ok())
        .and_then(|d| Difficulty::new(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names() {
        assert!(check_worker_name("alice.rig1").is_ok());
        assert!(check_worker_name("bc1qxyz.worker-2").is_ok());
        for bad in ["", ".x", "_x", "a b", "a/b", "a\"b", &"x".repeat(129), "ä"] {
            assert!(check_worker_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_options() {
        assert_eq!(password_difficulty("x"), None);
        assert_eq!(password_difficulty("d=0.5").map(Difficulty::get), Some(0.5));
        assert_eq!(
            password_difficulty("foo, d=8").map(Difficulty::get),
            Some(8.0)
        );
        assert_eq!(password_difficulty("d=-1"), None);
    }
}
