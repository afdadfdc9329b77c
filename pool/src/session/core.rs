//! What every Stratum connection does whatever its framing: it is registered and
//! counted while it lives, spends the peer's message budgets, bans abuse, authorizes
//! workers, judges shares, and hands each acknowledgement back only once the ledger
//! has committed the share. V1 (JSON lines) and V2 (Noise frames) adapt this to
//! their wire; a miner's difficulty and jobs remembered live in [`Terms`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use quarry_protocol::reject::{ErrorCode, StratumError};
use quarry_protocol::Difficulty;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::accounting::{account_of, now_ms, Accounting, WorkerStats};
use crate::context::{Context, SessionInfo};
use crate::extranonce::Lease;
use crate::jobs::{Announcement, Face};
use crate::ledger::{AcceptedShare, LedgerError, RejectKind};
use crate::limits::Budgets;
use crate::reward::{Payee, Scheme};
use crate::validate::{validate, Proposal, SessionTerms, Solved};
use crate::vardiff::{Vardiff, VardiffConfig};

/// The most shares a connection may have waiting for their commit.
pub const MAX_IN_FLIGHT: usize = 256;

/// A share whose commit is under way; `R` says where its answer goes.
pub(crate) type PendingAck<R> = Pin<Box<dyn Future<Output = AckDone<R>> + Send>>;

/// A share whose commit finished, one way or the other.
pub(crate) struct AckDone<R> {
    pub reply: R,
    pub result: Result<(), LedgerError>,
    pub worker: Arc<WorkerStats>,
    pub difficulty: f64,
    pub hash_difficulty: f64,
    time_ms: i64,
}

/// What spending one message of the peer's budget came to.
pub(crate) enum Spent {
    Within,
    /// Over budget: the message is refused (answer it if it expects an answer).
    Over,
    /// Over budget too often: the peer is banned and the session closing.
    Banned,
}

/// Removes the session from the registry and the pool's count when it ends.
struct Registered {
    id: u64,
    ctx: Arc<Context>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.ctx.sessions.remove(&self.id);
        self.ctx
            .accounting
            .totals
            .sessions
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection's protocol-independent state.
pub(crate) struct Core<R> {
    pub ctx: Arc<Context>,
    pub id: u64,
    pub peer: SocketAddr,
    /// `None` for allow-listed peers.
    budgets: Option<Budgets>,
    /// Over-budget messages so far.
    violations: u32,
    /// Shares judged, and how many of them were invalid (low difficulty,
    /// duplicate, malformed), for the invalid-share ban.
    judged: u64,
    invalid: u64,
    /// Set when the session must end (ban, policy); the reason is logged.
    pub close: Option<String>,
    pub acks: FuturesUnordered<PendingAck<R>>,
    /// Every worker the connection authorized (for the session count per worker).
    workers: Vec<Arc<WorkerStats>>,
    /// Cancelled to end the session (the operator's kick, a ban elsewhere, shutdown).
    pub kick: CancellationToken,
    _registered: Registered,
}

impl<R: Send + 'static> Core<R> {
    /// Registers session `id` from `peer`.
    pub fn new(ctx: Arc<Context>, id: u64, peer: SocketAddr) -> Core<R> {
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
        ctx.accounting
            .totals
            .sessions
            .fetch_add(1, Ordering::Relaxed);
        Core {
            budgets: ctx.guard.budgets(peer.ip()),
            violations: 0,
            judged: 0,
            invalid: 0,
            close: None,
            acks: FuturesUnordered::new(),
            workers: Vec::new(),
            kick,
            _registered: Registered {
                id,
                ctx: ctx.clone(),
            },
            id,
            peer,
            ctx,
        }
    }

    /// Spends one message of the right budget.
    pub fn spend(&mut self, is_submit: bool) -> Spent {
        let Some(budgets) = &self.budgets else {
            return Spent::Within;
        };
        if budgets.spend(is_submit) {
            return Spent::Within;
        }
        self.violations += 1;
        self.ctx.metrics.rate_limited(is_submit);
        if self.violations >= self.ctx.guard.config.violations_before_ban {
            self.ban("kept exceeding the message rate limit".to_owned());
            Spent::Banned
        } else {
            Spent::Over
        }
    }

    /// Bans the peer's address and ends the session.
    pub fn ban(&mut self, reason: String) {
        let limits = &self.ctx.guard.config;
        self.ctx
            .guard
            .ban(self.peer.ip(), &reason, limits.ban_duration);
        self.close = Some(format!("banned: {reason}"));
    }

    /// Authorizes `username` for `terms`, which may have up to `max_workers`: a
    /// valid name, and under solo mining an address of this pool's network (one
    /// per set of terms, since all its workers get the same jobs). Returns the
    /// worker, new or already known to `terms`.
    pub fn authorize(
        &mut self,
        terms: &mut Terms,
        username: &str,
        max_workers: usize,
    ) -> Result<Arc<WorkerStats>, String> {
        check_worker_name(username)?;
        self.solo_payee(terms, username)?;
        if let Some(worker) = terms.workers.iter().find(|w| *w.name == *username) {
            return Ok(worker.clone());
        }
        if terms.workers.len() >= max_workers {
            return Err(format!("more than {max_workers} workers"));
        }
        let accounting = &self.ctx.accounting;
        let worker = accounting.worker(username);
        accounting.session_opened(&worker);
        accounting.set_difficulty(&worker, terms.difficulty.get());
        if self.workers.is_empty() {
            tracing::Span::current().record("worker", username);
        }
        if terms.workers.is_empty() {
            terms.active_at = Some(Instant::now());
        }
        if let Some(mut info) = self.ctx.sessions.get_mut(&self.id) {
            info.workers.push(username.to_owned());
        }
        terms.workers.push(worker.clone());
        self.workers.push(worker.clone());
        Ok(worker)
    }

    fn solo_payee(&mut self, terms: &mut Terms, username: &str) -> Result<(), String> {
        if self.ctx.reward.scheme() != Scheme::Solo {
            return Ok(());
        }
        let account = account_of(username);
        match &terms.payee {
            Some(payee) if *payee.account == *account => Ok(()),
            Some(payee) => Err(format!(
                "this connection mines solo for {}; a worker of another address needs a connection of its own",
                payee.account
            )),
            None => {
                terms.payee = Some(self.ctx.reward.payee(account)?);
                Ok(())
            }
        }
    }

    /// Counts a share from a worker this connection never authorized.
    pub fn unauthorized(&self, worker: &str) {
        if self.ctx.accounting.knows(worker) {
            let stats = self.ctx.accounting.worker(worker);
            self.ctx
                .accounting
                .record_reject(&stats, RejectKind::Unauthorized);
            self.ctx
                .ledger
                .record_reject(&stats.name, RejectKind::Unauthorized, now_ms());
        }
    }

    /// Judges `submit` by `worker` under `terms`. An accepted share goes to the
    /// ledger and its acknowledgement to `reply` once committed (`Ok`); a rejected
    /// one is counted and its error returned. A share that solves a block goes to
    /// the job source at once, accepted or not.
    pub fn judge(
        &mut self,
        worker: Arc<WorkerStats>,
        submit: &Proposal,
        terms: &Terms,
        extranonce2_size: usize,
        reply: R,
    ) -> Result<(), (RejectKind, StratumError)> {
        let Some(lease) = &terms.lease else {
            return Err((
                RejectKind::Malformed,
                StratumError::new(ErrorCode::NotSubscribed, "not subscribed"),
            ));
        };
        let difficulty_for = |job: u64| lease.difficulty_for(job);
        let session_terms = SessionTerms {
            extranonce1: lease.extranonce(),
            extranonce2_size,
            version_mask: terms.version_mask,
            difficulty_for: &difficulty_for,
            current_difficulty: terms.difficulty,
            payee: terms.payee.as_ref(),
            held: terms.face.as_ref(),
        };
        let started = std::time::Instant::now();
        let verdict = validate(&self.ctx.book, submit, &session_terms);
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
                Err((kind, error))
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
                        reply,
                        result,
                        worker,
                        difficulty: accepted.difficulty,
                        hash_difficulty: accepted.hash_difficulty,
                        time_ms,
                    }
                }));
                Ok(())
            }
        }
    }

    /// Counts a committed share; `false` when the commit failed (the share must
    /// not be acknowledged; the ledger logs the failure itself).
    pub fn committed(&self, done: &AckDone<R>) -> bool {
        match &done.result {
            Ok(()) => {
                self.ctx.accounting.record_accept(
                    &done.worker,
                    done.difficulty,
                    done.hash_difficulty,
                    done.time_ms,
                );
                true
            }
            Err(err) => {
                tracing::debug!(%err, "share could not be stored; not acknowledged");
                false
            }
        }
    }
}

impl<R> Drop for Core<R> {
    fn drop(&mut self) {
        for worker in &self.workers {
            self.ctx.accounting.session_closed(worker);
        }
    }
}

/// The terms one miner works under (a V1 session, a V2 channel): its extranonce1
/// and the jobs and difficulties handed out under it, vardiff, its workers, whom
/// its coinbases pay, and the job it holds.
pub(crate) struct Terms {
    pub lease: Option<Lease>,
    pub version_mask: u32,
    pub vardiff: Vardiff,
    /// The difficulty announced with the latest job (before the first job: the
    /// one the first announcement will carry).
    pub difficulty: Difficulty,
    pub workers: Vec<Arc<WorkerStats>>,
    /// The last authorization or accepted share, for the idle timeout.
    pub active_at: Option<Instant>,
    /// Under solo mining, whom the coinbases pay: the first worker's account.
    pub payee: Option<Payee>,
    /// The job sent last (none before the first), and the face of it sent.
    pub last_job: Option<Arc<Announcement>>,
    pub face: Option<Arc<Face>>,
}

impl Terms {
    /// Fresh terms at the pool's start difficulty.
    pub fn new(ctx: &Context) -> Terms {
        let start = Difficulty::new(ctx.config.start_difficulty).unwrap_or(Difficulty::ONE);
        Terms {
            lease: None,
            version_mask: 0,
            vardiff: Vardiff::new(vardiff_config(ctx), start, Instant::now()),
            difficulty: start,
            workers: Vec::new(),
            active_at: None,
            payee: None,
            last_job: None,
            face: None,
        }
    }

    /// Takes vardiff's wanted difficulty as the announced one and tells accounting.
    pub fn announce_difficulty(&mut self, accounting: &Accounting) -> Difficulty {
        let wanted = self.vardiff.current();
        self.difficulty = wanted;
        self.vardiff.announced(Instant::now());
        for worker in &self.workers {
            accounting.set_difficulty(worker, wanted.get());
        }
        wanted
    }

    /// Remembers that shares on wire job id `job` are judged at the current difficulty.
    pub fn remember(&mut self, job: u64) {
        if let Some(lease) = &mut self.lease {
            lease.remember(job, self.difficulty);
        }
    }

    /// Whether `announcement` builds on another tip than the job sent last (or none was).
    pub fn new_tip(&self, announcement: &Announcement) -> bool {
        self.last_job
            .as_ref()
            .is_none_or(|last| !last.job.template.same_tip(&announcement.job.template))
    }

    /// Counts an accepted share for vardiff and the idle timeout; `true` when the
    /// difficulty should change now.
    pub fn accepted(&mut self, difficulty: f64) -> bool {
        let now = Instant::now();
        self.active_at = Some(now);
        self.vardiff.on_share(now, difficulty).is_some()
    }
}

fn vardiff_config(ctx: &Context) -> VardiffConfig {
    let c = &ctx.config;
    VardiffConfig {
        share_interval: c.share_interval,
        window: c.vardiff_window,
        min: Difficulty::new(c.min_difficulty).unwrap_or(Difficulty::ONE),
        max: Difficulty::new(c.max_difficulty).unwrap_or(Difficulty::ONE),
    }
}

/// The most worker names one V1 connection (or V2 channel) may authorize.
pub const MAX_WORKERS: usize = 64;

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
}
