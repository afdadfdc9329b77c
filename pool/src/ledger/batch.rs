//! What both backends' writers share: the bounded command queue and its async front end
//! ([`Queue`]), reject counts aggregated between batches ([`Rejects`]), one batch's ops and
//! waiters ([`Batch`]) with each worker's net change ([`Delta`]), and the counters.
//!
//! A backend supplies only the transaction: it applies a [`Batch`]'s ops and deltas and
//! commits, and the batch answers its waiters from the outcome.

use std::collections::{BTreeMap, HashMap};
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::BlockHash;
use tokio::sync::{mpsc, oneshot};

use super::history::HistoryRow;
use super::{
    error_chain, AcceptedShare, FoundBlock, LedgerError, LedgerStats, RejectKind, BLOCK_ACCEPTED,
};
use crate::metrics::histogram::{self, AtomicHistogram};

/// A commit's failure, handed to every waiter of the batch.
pub(super) type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// Answers a command once its transaction has committed (or failed).
pub(super) type Done = oneshot::Sender<Result<(), LedgerError>>;

/// What the async side asks of the writer.
pub(super) enum Command {
    Write(Op, Done),
    /// Rejects are waiting in the shared [`Rejects`] and the queue may be empty.
    Wake,
    /// Stop accepting, commit everything queued, then answer.
    Close(Done),
}

/// A command's write, separated from its waiter.
pub(super) enum Op {
    Share(AcceptedShare),
    Block(FoundBlock),
    BlockStatus(BlockHash, String),
    ChainBlock(u64, Vec<u8>),
    /// Minutes of hashrate history, and the time that ages old buckets.
    History(Vec<HistoryRow>, i64),
    /// An account's payout address bound (`Some`) or unbound (`None`).
    Binding(String, Option<String>),
}

impl Op {
    /// Whether committing this op starts a new block epoch: a block the pool found that
    /// its chain accepted. Workers' best shares since the last block start over.
    pub(super) fn starts_block_epoch(&self) -> bool {
        matches!(self, Op::Block(block) if block.status == BLOCK_ACCEPTED)
    }
}

/// The async front end both backends hand out: queues commands and waits for their commit.
pub struct Queue {
    location: String,
    commands: mpsc::Sender<Command>,
    /// Set by [`Queue::close`]; later writes are refused instead of queued.
    closed: AtomicBool,
    pub(super) shared: Arc<Shared>,
}

/// State the front end and the writer both touch.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) rejects: Mutex<Rejects>,
    pub(super) counters: Counters,
    /// Id of the oldest share a PPLNS window needs (0: none); pruning keeps it and newer.
    window_floor: AtomicI64,
}

impl Shared {
    /// Keeps shares from `id` on, whatever their age, until a later window moves on.
    pub(super) fn keep_shares_from(&self, id: i64) {
        self.window_floor.store(id, Ordering::Relaxed);
    }

    /// Pruning may delete only shares with ids below this.
    pub(super) fn prune_below_id(&self) -> i64 {
        match self.window_floor.load(Ordering::Relaxed) {
            0 => i64::MAX,
            floor => floor,
        }
    }
}

impl Queue {
    /// A queue of `capacity` commands and the receiver its writer takes them from.
    pub(super) fn new(location: String, capacity: usize) -> (Queue, mpsc::Receiver<Command>) {
        let (commands, rx) = mpsc::channel(capacity.max(1));
        let queue = Queue {
            location,
            commands,
            closed: AtomicBool::new(false),
            shared: Arc::new(Shared::default()),
        };
        (queue, rx)
    }

    pub(super) fn location(&self) -> &str {
        &self.location
    }

    pub(super) async fn record_share(&self, share: AcceptedShare) -> Result<(), LedgerError> {
        share.check()?;
        self.write(Op::Share(share)).await
    }

    pub(super) fn record_reject(&self, worker: &str, kind: RejectKind, time_ms: i64) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if worker.contains('\0') {
            tracing::warn!(worker, "reject of a worker name with NUL not counted");
            return;
        }
        let first = {
            let mut rejects = lock(&self.shared.rejects);
            let first = rejects.is_empty();
            rejects.add(worker, kind, time_ms);
            first
        };
        // The writer drains all pending rejects with each batch. Only the first reject after
        // a drain must make sure a batch happens; if the queue is full, one will anyway.
        if first {
            let _ = self.commands.try_send(Command::Wake);
        }
    }

    /// Queues a write and waits for its commit.
    pub(super) async fn write(&self, op: Op) -> Result<(), LedgerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Write(op, done))
            .await
            .map_err(|_| self.closed_error())?;
        answer.await.unwrap_or_else(|_| Err(self.writer_gone()))
    }

    /// Refuses later writes and has the writer commit everything queued and stop.
    pub(super) async fn close(&self) -> Result<(), LedgerError> {
        self.closed.store(true, Ordering::Release);
        let (done, answer) = oneshot::channel();
        match self.commands.send(Command::Close(done)).await {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(self.writer_gone())),
            Err(_) => Err(self.writer_gone()),
        }
    }

    pub(super) fn stats(&self) -> LedgerStats {
        self.shared.counters.snapshot()
    }

    fn closed_error(&self) -> LedgerError {
        LedgerError::Closed {
            location: self.location.clone(),
        }
    }

    pub(super) fn writer_gone(&self) -> LedgerError {
        LedgerError::WriterGone {
            location: self.location.clone(),
        }
    }
}

/// Reject counts not yet committed, shared with [`Queue::record_reject`].
///
/// Rejects are not awaited, so they are aggregated here instead of queued: memory is bounded
/// by the number of distinct workers between two batches, and a full queue never drops one.
#[derive(Default)]
pub(super) struct Rejects {
    by_worker: HashMap<Box<str>, RejectDelta>,
}

/// A worker's reject counts by [`RejectKind`] and the latest reject's time.
#[derive(Default, Clone, Copy)]
pub(super) struct RejectDelta {
    pub(super) counts: [u64; RejectKind::ALL.len()],
    pub(super) last_ms: Option<i64>,
}

impl RejectDelta {
    fn merge(&mut self, other: &RejectDelta) {
        for (count, add) in self.counts.iter_mut().zip(other.counts) {
            *count = count.saturating_add(add);
        }
        self.last_ms = max_time(self.last_ms, other.last_ms);
    }
}

impl Rejects {
    fn is_empty(&self) -> bool {
        self.by_worker.is_empty()
    }

    fn add(&mut self, worker: &str, kind: RejectKind, time_ms: i64) {
        let mut delta = RejectDelta::default();
        delta.counts[kind as usize] = 1;
        delta.last_ms = Some(time_ms);
        match self.by_worker.get_mut(worker) {
            Some(existing) => existing.merge(&delta),
            None => {
                self.by_worker.insert(worker.into(), delta);
            }
        }
    }

    fn merge(&mut self, other: Rejects) {
        for (worker, delta) in other.by_worker {
            self.by_worker.entry(worker).or_default().merge(&delta);
        }
    }
}

/// One worker's net change within a batch, applied with a single update.
#[derive(Default)]
pub(super) struct Delta {
    pub(super) accepted: u64,
    pub(super) accepted_difficulty: f64,
    pub(super) rejects: RejectDelta,
    pub(super) best: f64,
    pub(super) last_ms: Option<i64>,
}

impl Delta {
    /// The latest accepted or rejected share's time.
    pub(super) fn last_share_ms(&self) -> Option<i64> {
        max_time(self.last_ms, self.rejects.last_ms)
    }
}

/// One batch: its ops in queue order with their waiters, and the rejects drained with it.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) ops: Vec<Op>,
    dones: Vec<Done>,
    closers: Vec<Done>,
    rejects: Rejects,
    failures: Failures,
}

/// Failed commits since the last logged one: while the database is down every batch
/// fails, and one line per [`FAILURE_LOG_INTERVAL`] says so.
#[derive(Default)]
struct Failures {
    logged: Option<Instant>,
    unlogged: u64,
    since_success: u64,
}

/// The least time between two log lines about failing commits.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Batch {
    /// Takes received commands into the batch; returns whether one asked to close.
    pub(super) fn take(&mut self, commands: &mut Vec<Command>) -> bool {
        let mut close = false;
        for command in commands.drain(..) {
            match command {
                Command::Write(op, done) => {
                    self.ops.push(op);
                    self.dones.push(done);
                }
                Command::Wake => {}
                Command::Close(done) => {
                    self.closers.push(done);
                    close = true;
                }
            }
        }
        close
    }

    /// Moves the rejects counted so far into the batch.
    pub(super) fn drain_rejects(&mut self, shared: &Shared) {
        let rejects = mem::take(&mut *lock(&shared.rejects));
        self.rejects.merge(rejects);
    }

    /// Nothing to write.
    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.rejects.is_empty()
    }

    /// Each worker's net change, by name in sorted order (the order rows are locked in, so
    /// two nodes' transactions never wait on each other in a cycle).
    pub(super) fn deltas(&self) -> BTreeMap<&str, Delta> {
        let mut deltas: BTreeMap<&str, Delta> = BTreeMap::new();
        for op in &self.ops {
            if let Op::Share(share) = op {
                let delta = deltas.entry(&share.worker).or_default();
                delta.accepted += 1;
                delta.accepted_difficulty += share.difficulty;
                delta.best = delta.best.max(share.hash_difficulty);
                delta.last_ms = max_time(delta.last_ms, Some(share.time_ms));
            }
        }
        for (worker, rejected) in &self.rejects.by_worker {
            deltas.entry(worker).or_default().rejects.merge(rejected);
        }
        deltas
    }

    /// Answers the waiters after the batch's fate is known and empties the batch.
    ///
    /// On `Ok`, `outcomes` holds one entry per op: `Some` for an op refused on its own merits
    /// (an unknown block, a chain gap), which touched nothing. On `Err`, nothing of the batch
    /// was stored: every waiter gets the error, and the rejects go back to be retried.
    pub(super) fn finish(
        &mut self,
        result: Result<Vec<Option<LedgerError>>, SharedError>,
        location: &str,
        shared: &Shared,
        elapsed: Duration,
    ) -> Result<(), SharedError> {
        let shares = self
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Share(_)))
            .count() as u64;
        let size = self.ops.len() as u64;
        let counters = &shared.counters;
        counters.commit_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        counters.last_batch.store(size, Ordering::Relaxed);
        counters.commit_latency.observe_duration(elapsed);
        counters.batch_sizes.observe(size as f64);
        self.ops.clear();
        match result {
            Ok(outcomes) => {
                if self.failures.since_success > 0 {
                    tracing::info!(
                        ledger = location,
                        failed_batches = self.failures.since_success,
                        "ledger commits succeed again"
                    );
                    self.failures = Failures::default();
                }
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.shares.fetch_add(shares, Ordering::Relaxed);
                let mut outcomes = outcomes.into_iter();
                for done in self.dones.drain(..) {
                    let _ = done.send(outcomes.next().flatten().map_or(Ok(()), Err));
                }
                self.rejects = Rejects::default();
                Ok(())
            }
            Err(source) => {
                counters.failed_commits.fetch_add(1, Ordering::Relaxed);
                let failures = &mut self.failures;
                failures.since_success += 1;
                let now = Instant::now();
                if failures
                    .logged
                    .is_none_or(|at| now.duration_since(at) >= FAILURE_LOG_INTERVAL)
                {
                    tracing::error!(
                        ledger = location,
                        error = %error_chain(&*source),
                        batch = size,
                        failed_since_last_line = failures.unlogged,
                        "ledger commit failed; the batch's shares are refused, not acknowledged"
                    );
                    failures.logged = Some(now);
                    failures.unlogged = 0;
                } else {
                    failures.unlogged += 1;
                }
                lock(&shared.rejects).merge(mem::take(&mut self.rejects));
                for done in self.dones.drain(..) {
                    let _ = done.send(Err(LedgerError::Commit {
                        location: location.into(),
                        source: source.clone(),
                    }));
                }
                Err(source)
            }
        }
    }

    /// Answers the close requests with the outcome of the last commit.
    pub(super) fn answer_closers(&mut self, result: &Result<(), SharedError>, location: &str) {
        for done in self.closers.drain(..) {
            let _ = done.send(result.clone().map_err(|source| LedgerError::Commit {
                location: location.into(),
                source,
            }));
        }
    }
}

/// Counters behind [`super::Ledger::stats`].
pub(super) struct Counters {
    commits: AtomicU64,
    failed_commits: AtomicU64,
    shares: AtomicU64,
    last_batch: AtomicU64,
    commit_nanos: AtomicU64,
    pub(super) commit_latency: AtomicHistogram,
    pub(super) batch_sizes: AtomicHistogram,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            commits: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            shares: AtomicU64::new(0),
            last_batch: AtomicU64::new(0),
            commit_nanos: AtomicU64::new(0),
            commit_latency: AtomicHistogram::new(histogram::LATENCY_SECONDS),
            batch_sizes: AtomicHistogram::new(histogram::SIZES),
        }
    }
}

impl Counters {
    fn snapshot(&self) -> LedgerStats {
        LedgerStats {
            commits: self.commits.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            shares_committed: self.shares.load(Ordering::Relaxed),
            last_batch: usize::try_from(self.last_batch.load(Ordering::Relaxed))
                .unwrap_or(usize::MAX),
            commit_time: Duration::from_nanos(self.commit_nanos.load(Ordering::Relaxed)),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn max_time(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A count as the databases' signed 64-bit integer.
pub(super) fn sql_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The current Unix time in milliseconds (0 if the clock is before 1970).
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
