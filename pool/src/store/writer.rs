//! The writer thread: group commit of everything queued, one transaction per batch.
//!
//! The writer owns the only write connection. It takes everything queued (up to
//! `max_batch` commands), applies it in one immediate transaction with cached prepared
//! statements, commits, and only then answers each command's waiter. If anything in the
//! transaction fails, the transaction rolls back and every waiter of the batch gets the error,
//! so no waiter is ever told "committed" for a row that is not on disk.

use crate::metrics::histogram::{self, AtomicHistogram};
use std::collections::HashMap;
use std::mem;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::history::{self, HistoryRow};
use super::{AcceptedShare, FoundBlock, RejectKind, StoreError, StoreStats};

/// Answers a command once its transaction has committed (or failed).
pub(super) type Done = oneshot::Sender<Result<(), StoreError>>;

/// What the async side asks of the writer.
pub(super) enum Command {
    Share(AcceptedShare, Done),
    Block(FoundBlock, Done),
    BlockStatus(BlockHash, String, Done),
    ChainBlock(u64, Vec<u8>, Done),
    /// Minutes of hashrate history, and the time that ages old buckets.
    History(Vec<HistoryRow>, i64, Done),
    /// Rejects are waiting in the shared [`Rejects`] and the queue may be empty.
    Wake,
    /// Stop accepting, commit everything queued, then answer.
    Close(Done),
}

/// A command's write, separated from its waiter.
enum Op {
    Share(AcceptedShare),
    Block(FoundBlock),
    BlockStatus(BlockHash, String),
    ChainBlock(u64, Vec<u8>),
    History(Vec<HistoryRow>, i64),
}

/// Reject counts not yet committed, shared with [`super::Store::record_reject`].
///
/// Rejects are not awaited, so they are aggregated here instead of queued: memory is bounded
/// by the number of distinct workers between two batches, and a full queue never drops one.
#[derive(Default)]
pub(super) struct Rejects {
    by_worker: HashMap<Box<str>, RejectDelta>,
}

#[derive(Default, Clone, Copy)]
struct RejectDelta {
    counts: [u64; RejectKind::ALL.len()],
    last_ms: Option<i64>,
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
    pub(super) fn is_empty(&self) -> bool {
        self.by_worker.is_empty()
    }

    pub(super) fn add(&mut self, worker: &str, kind: RejectKind, time_ms: i64) {
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

/// Counters behind [`super::Store::stats`].
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
    pub(super) fn snapshot(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            shares_committed: self.shares.load(Ordering::Relaxed),
            last_batch: usize::try_from(self.last_batch.load(Ordering::Relaxed))
                .unwrap_or(usize::MAX),
            commit_time: Duration::from_nanos(self.commit_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// How often the writer deletes expired share rows.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows deleted per pruning transaction, so pruning never stalls share commits for long.
const PRUNE_CHUNK: usize = 10_000;
/// Worker ids cached at most; the cache is dropped when it grows past this.
const WORKER_CACHE_CAP: usize = 1 << 16;

const INSERT_SHARE: &str =
    "INSERT INTO shares (worker_id, time_ms, difficulty, hash_difficulty) VALUES (?1, ?2, ?3, ?4)";
const WORKER_ID: &str = "INSERT INTO workers (name) VALUES (?1) \
     ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id";
// `max(a, NULL)` is NULL in SQLite, hence the coalesce for the nullable time.
const UPDATE_WORKER: &str = "UPDATE workers SET \
     accepted = accepted + ?2, \
     accepted_difficulty = accepted_difficulty + ?3, \
     rejected_stale = rejected_stale + ?4, \
     rejected_duplicate = rejected_duplicate + ?5, \
     rejected_low_difficulty = rejected_low_difficulty + ?6, \
     rejected_malformed = rejected_malformed + ?7, \
     rejected_unauthorized = rejected_unauthorized + ?8, \
     best_share_difficulty = max(best_share_difficulty, ?9), \
     last_share_ms = coalesce(max(last_share_ms, ?10), ?10, last_share_ms) \
     WHERE id = ?1";
const UPSERT_BLOCK: &str =
    "INSERT INTO blocks (hash, height, worker, time_ms, raw, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (hash) DO UPDATE SET height = excluded.height, worker = excluded.worker, \
     time_ms = excluded.time_ms, raw = excluded.raw, status = excluded.status";
const SET_BLOCK_STATUS: &str = "UPDATE blocks SET status = ?2 WHERE hash = ?1";
const CHAIN_NEXT: &str = "SELECT coalesce(max(height) + 1, 0) FROM chain";
const CHAIN_AT: &str = "SELECT raw FROM chain WHERE height = ?1";
const INSERT_CHAIN: &str = "INSERT INTO chain (height, raw) VALUES (?1, ?2)";
const PRUNE: &str =
    "DELETE FROM shares WHERE id IN (SELECT id FROM shares WHERE time_ms < ?1 LIMIT ?2)";

/// One worker's changes within a batch, applied with a single `UPDATE`.
#[derive(Default)]
struct Delta {
    accepted: u64,
    accepted_difficulty: f64,
    rejects: RejectDelta,
    best: f64,
    last_ms: Option<i64>,
}

/// What the writer remembers between batches; reset whenever a transaction rolls back.
#[derive(Default)]
struct Cache {
    worker_ids: HashMap<Arc<str>, i64>,
    /// The height the next chain block must have; `None` until read inside a transaction.
    chain_next: Option<u64>,
}

/// The writer thread's state.
pub(super) struct Writer {
    conn: Connection,
    path: PathBuf,
    rx: mpsc::Receiver<Command>,
    rejects: Arc<Mutex<Rejects>>,
    counters: Arc<Counters>,
    max_batch: usize,
    /// `None` keeps shares forever.
    retention_ms: Option<i64>,
    next_prune: Instant,
    cache: Cache,
    // Scratch buffers reused across batches.
    incoming: Vec<Command>,
    ops: Vec<Op>,
    dones: Vec<Done>,
    outcomes: Vec<Option<StoreError>>,
    deltas: HashMap<i64, Delta>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        path: PathBuf,
        rx: mpsc::Receiver<Command>,
        rejects: Arc<Mutex<Rejects>>,
        counters: Arc<Counters>,
        max_batch: usize,
        retention: Duration,
    ) -> Writer {
        Writer {
            conn,
            path,
            rx,
            rejects,
            counters,
            max_batch: max_batch.max(1),
            retention_ms: i64::try_from(retention.as_millis()).ok(),
            next_prune: Instant::now(),
            cache: Cache::default(),
            incoming: Vec::new(),
            ops: Vec::new(),
            dones: Vec::new(),
            outcomes: Vec::new(),
            deltas: HashMap::new(),
        }
    }

    /// Runs until the queue is closed (by [`Command::Close`] or by dropping every sender)
    /// and drained.
    pub(super) fn run(mut self) {
        let mut closers = Vec::new();
        loop {
            let received = self
                .rx
                .blocking_recv_many(&mut self.incoming, self.max_batch);
            if received == 0 {
                break;
            }
            for command in self.incoming.drain(..) {
                let (op, done) = match command {
                    Command::Share(share, done) => (Op::Share(share), done),
                    Command::Block(block, done) => (Op::Block(block), done),
                    Command::BlockStatus(hash, status, done) => {
                        (Op::BlockStatus(hash, status), done)
                    }
                    Command::ChainBlock(height, raw, done) => (Op::ChainBlock(height, raw), done),
                    Command::History(rows, now_ms, done) => (Op::History(rows, now_ms), done),
                    Command::Wake => continue,
                    Command::Close(done) => {
                        // Refuses new commands; the ones already queued are still received.
                        self.rx.close();
                        closers.push(done);
                        continue;
                    }
                };
                self.ops.push(op);
                self.dones.push(done);
            }
            // Failures were delivered to the batch's waiters already.
            let _ = self.commit_batch();
            self.maybe_prune();
        }
        // Rejects counted after the last command.
        let result = self.commit_batch();
        for done in closers {
            let _ = done.send(result.clone().map_err(|source| self.commit_error(source)));
        }
        tracing::debug!(path = %self.path.display(), "store writer stopped");
    }

    fn commit_error(&self, source: Arc<rusqlite::Error>) -> StoreError {
        StoreError::Commit {
            path: self.path.clone(),
            source,
        }
    }

    /// Commits the collected ops and the pending rejects in one transaction and answers
    /// the waiters.
    fn commit_batch(&mut self) -> Result<(), Arc<rusqlite::Error>> {
        let rejects = mem::take(&mut *self.rejects.lock().unwrap_or_else(PoisonError::into_inner));
        if self.ops.is_empty() && rejects.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.outcomes.clear();
        let result = apply(
            &mut self.conn,
            &mut self.cache,
            &self.ops,
            &rejects,
            &mut self.outcomes,
            &mut self.deltas,
        );
        let elapsed = started.elapsed();
        let shares = self
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Share(_)))
            .count() as u64;
        let batch = self.ops.len() as u64;
        self.ops.clear();
        let counters = &self.counters;
        counters.commit_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        counters.last_batch.store(batch, Ordering::Relaxed);
        counters.commit_latency.observe_duration(elapsed);
        counters.batch_sizes.observe(batch as f64);
        match result {
            Ok(()) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.shares.fetch_add(shares, Ordering::Relaxed);
                let mut outcomes = self.outcomes.drain(..);
                for done in self.dones.drain(..) {
                    let answer = match outcomes.next().flatten() {
                        Some(error) => Err(error),
                        None => Ok(()),
                    };
                    let _ = done.send(answer);
                }
                Ok(())
            }
            Err(source) => {
                counters.failed_commits.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    path = %self.path.display(),
                    error = %source,
                    batch,
                    "store commit failed; the batch's waiters get the error"
                );
                // The rollback undid rows the cache may describe.
                self.cache = Cache::default();
                self.rejects
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .merge(rejects);
                let source = Arc::new(source);
                self.outcomes.clear();
                for done in mem::take(&mut self.dones) {
                    let _ = done.send(Err(self.commit_error(source.clone())));
                }
                Err(source)
            }
        }
    }

    /// Deletes share rows older than the retention, a chunk at a time, when due.
    fn maybe_prune(&mut self) {
        let now = Instant::now();
        let Some(retention_ms) = self.retention_ms else {
            return;
        };
        if now < self.next_prune {
            return;
        }
        let cutoff = now_ms().saturating_sub(retention_ms);
        let deleted = self
            .conn
            .prepare_cached(PRUNE)
            .and_then(|mut statement| statement.execute(params![cutoff, PRUNE_CHUNK as i64]));
        match deleted {
            // More may remain: continue after the next batch.
            Ok(deleted) if deleted >= PRUNE_CHUNK => {}
            Ok(deleted) => {
                if deleted > 0 {
                    tracing::debug!(path = %self.path.display(), deleted, "pruned expired shares");
                }
                self.next_prune = now + PRUNE_INTERVAL;
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "pruning expired shares failed");
                self.next_prune = now + PRUNE_INTERVAL;
            }
        }
    }
}

/// Applies one batch in one immediate transaction and commits it.
///
/// `outcomes` gets one entry per op: `Some` for an op refused on its own merits (an unknown
/// block, a chain gap), which touches nothing and does not fail the batch.
fn apply(
    conn: &mut Connection,
    cache: &mut Cache,
    ops: &[Op],
    rejects: &Rejects,
    outcomes: &mut Vec<Option<StoreError>>,
    deltas: &mut HashMap<i64, Delta>,
) -> rusqlite::Result<()> {
    deltas.clear();
    if cache.worker_ids.len() > WORKER_CACHE_CAP {
        cache.worker_ids.clear();
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert_share = tx.prepare_cached(INSERT_SHARE)?;
        for op in ops {
            let outcome = match op {
                Op::Share(share) => {
                    let id = worker_id(&tx, &mut cache.worker_ids, &share.worker)?;
                    insert_share.execute(params![
                        id,
                        share.time_ms,
                        share.difficulty,
                        share.hash_difficulty
                    ])?;
                    let delta = deltas.entry(id).or_default();
                    delta.accepted += 1;
                    delta.accepted_difficulty += share.difficulty;
                    delta.best = delta.best.max(share.hash_difficulty);
                    delta.last_ms = max_time(delta.last_ms, Some(share.time_ms));
                    None
                }
                Op::Block(block) => put_block(&tx, block)?,
                Op::BlockStatus(hash, status) => set_block_status(&tx, hash, status)?,
                Op::ChainBlock(height, raw) => {
                    append_chain(&tx, &mut cache.chain_next, *height, raw)?
                }
                Op::History(rows, now_ms) => {
                    history::apply(&tx, rows, *now_ms)?;
                    None
                }
            };
            outcomes.push(outcome);
        }
        for (worker, rejected) in &rejects.by_worker {
            let id = worker_id(&tx, &mut cache.worker_ids, worker)?;
            deltas.entry(id).or_default().rejects.merge(rejected);
        }
        let mut update = tx.prepare_cached(UPDATE_WORKER)?;
        for (id, delta) in deltas.iter() {
            let last_ms = max_time(delta.last_ms, delta.rejects.last_ms);
            let [stale, duplicate, low, malformed, unauthorized] =
                delta.rejects.counts.map(sql_count);
            update.execute(params![
                id,
                sql_count(delta.accepted),
                delta.accepted_difficulty,
                stale,
                duplicate,
                low,
                malformed,
                unauthorized,
                delta.best,
                last_ms
            ])?;
        }
    }
    tx.commit()
}

/// The id of the worker row named `name`, creating the row if needed.
fn worker_id(
    tx: &Transaction<'_>,
    ids: &mut HashMap<Arc<str>, i64>,
    name: &str,
) -> rusqlite::Result<i64> {
    if let Some(&id) = ids.get(name) {
        return Ok(id);
    }
    let id = tx
        .prepare_cached(WORKER_ID)?
        .query_row(params![name], |row| row.get(0))?;
    ids.insert(Arc::from(name), id);
    Ok(id)
}

fn put_block(tx: &Transaction<'_>, block: &FoundBlock) -> rusqlite::Result<Option<StoreError>> {
    let Ok(height) = i64::try_from(block.height) else {
        return Ok(Some(StoreError::HeightOutOfRange {
            height: block.height,
        }));
    };
    let hash = block.hash.to_byte_array();
    tx.prepare_cached(UPSERT_BLOCK)?.execute(params![
        hash,
        height,
        block.worker,
        block.time_ms,
        block.raw,
        block.status
    ])?;
    Ok(None)
}

fn set_block_status(
    tx: &Transaction<'_>,
    hash: &BlockHash,
    status: &str,
) -> rusqlite::Result<Option<StoreError>> {
    let changed = tx
        .prepare_cached(SET_BLOCK_STATUS)?
        .execute(params![hash.to_byte_array(), status])?;
    Ok((changed == 0).then_some(StoreError::UnknownBlock { hash: *hash }))
}

fn append_chain(
    tx: &Transaction<'_>,
    chain_next: &mut Option<u64>,
    height: u64,
    raw: &[u8],
) -> rusqlite::Result<Option<StoreError>> {
    let next = match *chain_next {
        Some(next) => next,
        None => {
            let next: i64 = tx
                .prepare_cached(CHAIN_NEXT)?
                .query_row([], |row| row.get(0))?;
            let next = u64::try_from(next)
                .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, next))?;
            *chain_next = Some(next);
            next
        }
    };
    if height > next {
        return Ok(Some(StoreError::ChainGap { height, next }));
    }
    let Ok(sql_height) = i64::try_from(height) else {
        return Ok(Some(StoreError::HeightOutOfRange { height }));
    };
    if height < next {
        // Appending a block already stored is a no-op; replacing one is refused.
        let stored: Option<Vec<u8>> = tx
            .prepare_cached(CHAIN_AT)?
            .query_row(params![sql_height], |row| row.get(0))
            .optional()?;
        return Ok((stored.as_deref() != Some(raw)).then_some(StoreError::ChainConflict { height }));
    }
    tx.prepare_cached(INSERT_CHAIN)?
        .execute(params![sql_height, raw])?;
    *chain_next = Some(next + 1);
    Ok(None)
}

fn sql_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn max_time(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The current Unix time in milliseconds (0 if the clock is before 1970).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
