//! The SQLite writer thread: group commit of everything queued, one immediate transaction
//! per batch, with cached prepared statements. It owns the only write connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::mpsc;

use super::history;
use crate::ledger::batch::{now_ms, sql_count, Batch, Command, Op, Shared, SharedError};
use crate::ledger::{FoundBlock, LedgerError, BLOCK_ACCEPTED};

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
     best_share_since_block = CASE WHEN best_share_epoch = (SELECT block_epoch FROM pool_state) \
     THEN max(best_share_since_block, ?9) ELSE ?9 END, \
     best_share_epoch = (SELECT block_epoch FROM pool_state), \
     last_share_ms = coalesce(max(last_share_ms, ?10), ?10, last_share_ms) \
     WHERE id = ?1";
const UPSERT_BLOCK: &str = "INSERT INTO blocks (hash, height, worker, time_ms, raw, status, node) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (hash) DO UPDATE SET height = excluded.height, worker = excluded.worker, \
     time_ms = excluded.time_ms, raw = excluded.raw, status = excluded.status, \
     node = excluded.node";
const SET_BLOCK_STATUS: &str = "UPDATE blocks SET status = ?2 WHERE hash = ?1";
const BLOCK_STATUS: &str = "SELECT status FROM blocks WHERE hash = ?1";
const DELETE_PAYOUTS: &str = "DELETE FROM block_payouts WHERE block_hash = ?1";
const INSERT_PAYOUT: &str = "INSERT INTO block_payouts \
     (block_hash, payee, credit, earned, owed_before, paid, owed_after) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/// Adds (`?2` = 1) or takes back (-1) a block's payouts in the owed balances.
const APPLY_OWED: &str = "INSERT INTO owed (payee, sats) \
     SELECT payee, ?2 * (earned - paid) FROM block_payouts WHERE block_hash = ?1 \
     ORDER BY payee ON CONFLICT (payee) DO UPDATE SET sats = owed.sats + excluded.sats";
/// A new block epoch: every worker's best share since the last block starts over.
const NEXT_EPOCH: &str = "UPDATE pool_state SET block_epoch = block_epoch + 1";
const CHAIN_NEXT: &str = "SELECT coalesce(max(height) + 1, 0) FROM chain";
const CHAIN_AT: &str = "SELECT raw FROM chain WHERE height = ?1";
const INSERT_CHAIN: &str = "INSERT INTO chain (height, raw) VALUES (?1, ?2)";
const PRUNE: &str = "DELETE FROM shares WHERE id IN \
     (SELECT id FROM shares WHERE time_ms < ?1 AND id < ?3 LIMIT ?2)";

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
    location: String,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    max_batch: usize,
    /// `None` keeps shares forever.
    retention_ms: Option<i64>,
    next_prune: Instant,
    cache: Cache,
    incoming: Vec<Command>,
    batch: Batch,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        path: &std::path::Path,
        rx: mpsc::Receiver<Command>,
        shared: Arc<Shared>,
        max_batch: usize,
        retention: Duration,
    ) -> Writer {
        Writer {
            conn,
            location: path.display().to_string(),
            rx,
            shared,
            max_batch: max_batch.max(1),
            retention_ms: i64::try_from(retention.as_millis()).ok(),
            next_prune: Instant::now(),
            cache: Cache::default(),
            incoming: Vec::new(),
            batch: Batch::default(),
        }
    }

    /// Runs until the queue is closed (by [`Command::Close`] or by dropping every sender)
    /// and drained.
    pub(super) fn run(mut self) {
        loop {
            let received = self
                .rx
                .blocking_recv_many(&mut self.incoming, self.max_batch);
            if received == 0 {
                break;
            }
            if self.batch.take(&mut self.incoming) {
                // Refuses new commands; the ones already queued are still received.
                self.rx.close();
            }
            // Failures were delivered to the batch's waiters already.
            let _ = self.commit_batch();
            self.maybe_prune();
        }
        // Rejects counted after the last command.
        let result = self.commit_batch();
        self.batch.answer_closers(&result, &self.location);
        tracing::debug!(ledger = %self.location, "ledger writer stopped");
    }

    /// Commits the batch and the pending rejects in one transaction and answers the waiters.
    fn commit_batch(&mut self) -> Result<(), SharedError> {
        self.batch.drain_rejects(&self.shared);
        if self.batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = apply(&mut self.conn, &mut self.cache, &self.batch)
            .map_err(|error| Arc::new(error) as SharedError);
        if result.is_err() {
            // The rollback undid rows the cache may describe.
            self.cache = Cache::default();
        }
        self.batch
            .finish(result, &self.location, &self.shared, started.elapsed())
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
        let deleted = self.conn.prepare_cached(PRUNE).and_then(|mut statement| {
            let below = self.shared.prune_below_id();
            statement.execute(params![cutoff, PRUNE_CHUNK as i64, below])
        });
        match deleted {
            // More may remain: continue after the next batch.
            Ok(deleted) if deleted >= PRUNE_CHUNK => {}
            Ok(deleted) => {
                if deleted > 0 {
                    tracing::debug!(ledger = %self.location, deleted, "pruned expired shares");
                }
                self.next_prune = now + PRUNE_INTERVAL;
            }
            Err(error) => {
                tracing::warn!(ledger = %self.location, %error, "pruning expired shares failed");
                self.next_prune = now + PRUNE_INTERVAL;
            }
        }
    }
}

/// Applies one batch in one immediate transaction and commits it; returns each op's own
/// outcome (`Some` for an op refused on its merits, which touched nothing).
fn apply(
    conn: &mut Connection,
    cache: &mut Cache,
    batch: &Batch,
) -> rusqlite::Result<Vec<Option<LedgerError>>> {
    if cache.worker_ids.len() > WORKER_CACHE_CAP {
        cache.worker_ids.clear();
    }
    let mut outcomes = Vec::with_capacity(batch.ops.len());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert_share = tx.prepare_cached(INSERT_SHARE)?;
        for op in &batch.ops {
            let outcome = match op {
                Op::Share(share) => {
                    let id = worker_id(&tx, &mut cache.worker_ids, &share.worker)?;
                    insert_share.execute(params![
                        id,
                        share.time_ms,
                        share.difficulty,
                        share.hash_difficulty
                    ])?;
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
                Op::Binding(account, address) => {
                    bind(&tx, account, address.as_deref())?;
                    None
                }
            };
            outcomes.push(outcome);
        }
        let mut update = tx.prepare_cached(UPDATE_WORKER)?;
        for (worker, delta) in batch.deltas() {
            let id = worker_id(&tx, &mut cache.worker_ids, worker)?;
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
                delta.last_share_ms()
            ])?;
        }
        // After the batch's shares: the share that found the block counts before it.
        if batch.ops.iter().any(Op::starts_block_epoch) {
            tx.prepare_cached(NEXT_EPOCH)?.execute([])?;
        }
    }
    tx.commit()?;
    Ok(outcomes)
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

fn put_block(tx: &Transaction<'_>, block: &FoundBlock) -> rusqlite::Result<Option<LedgerError>> {
    let Ok(height) = i64::try_from(block.height) else {
        return Ok(Some(LedgerError::HeightOutOfRange {
            height: block.height,
        }));
    };
    let hash = block.hash.to_byte_array();
    // Recorded again: its old payouts leave the owed balances first.
    if status_of(tx, &hash)?.as_deref() == Some(BLOCK_ACCEPTED) {
        tx.prepare_cached(APPLY_OWED)?.execute(params![hash, -1])?;
    }
    tx.prepare_cached(UPSERT_BLOCK)?.execute(params![
        hash,
        height,
        block.worker,
        block.time_ms,
        block.raw,
        block.status,
        block.node
    ])?;
    tx.prepare_cached(DELETE_PAYOUTS)?.execute(params![hash])?;
    let mut insert = tx.prepare_cached(INSERT_PAYOUT)?;
    for line in &block.payouts {
        insert.execute(params![
            hash,
            line.payee,
            line.credit,
            line.earned,
            line.owed_before,
            line.paid,
            line.owed_after
        ])?;
    }
    if block.status == BLOCK_ACCEPTED {
        tx.prepare_cached(APPLY_OWED)?.execute(params![hash, 1])?;
    }
    Ok(None)
}

fn status_of(tx: &Transaction<'_>, hash: &[u8; 32]) -> rusqlite::Result<Option<String>> {
    tx.prepare_cached(BLOCK_STATUS)?
        .query_row(params![hash], |row| row.get(0))
        .optional()
}

fn set_block_status(
    tx: &Transaction<'_>,
    hash: &BlockHash,
    status: &str,
) -> rusqlite::Result<Option<LedgerError>> {
    let bytes = hash.to_byte_array();
    let Some(old) = status_of(tx, &bytes)? else {
        return Ok(Some(LedgerError::UnknownBlock { hash: *hash }));
    };
    // Payouts count while the block is accepted: orphaning it takes them back.
    let (was, is) = (old == BLOCK_ACCEPTED, status == BLOCK_ACCEPTED);
    if was != is {
        let sign = if is { 1 } else { -1 };
        tx.prepare_cached(APPLY_OWED)?
            .execute(params![bytes, sign])?;
    }
    tx.prepare_cached(SET_BLOCK_STATUS)?
        .execute(params![bytes, status])?;
    Ok(None)
}

fn bind(tx: &Transaction<'_>, account: &str, address: Option<&str>) -> rusqlite::Result<()> {
    match address {
        Some(address) => tx
            .prepare_cached(
                "INSERT INTO account_addresses (account, address) VALUES (?1, ?2) \
                 ON CONFLICT (account) DO UPDATE SET address = excluded.address",
            )?
            .execute(params![account, address])?,
        None => tx
            .prepare_cached("DELETE FROM account_addresses WHERE account = ?1")?
            .execute(params![account])?,
    };
    Ok(())
}

fn append_chain(
    tx: &Transaction<'_>,
    chain_next: &mut Option<u64>,
    height: u64,
    raw: &[u8],
) -> rusqlite::Result<Option<LedgerError>> {
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
        return Ok(Some(LedgerError::ChainGap { height, next }));
    }
    let Ok(sql_height) = i64::try_from(height) else {
        return Ok(Some(LedgerError::HeightOutOfRange { height }));
    };
    if height < next {
        // Appending a block already stored is a no-op; replacing one is refused.
        let stored: Option<Vec<u8>> = tx
            .prepare_cached(CHAIN_AT)?
            .query_row(params![sql_height], |row| row.get(0))
            .optional()?;
        return Ok(
            (stored.as_deref() != Some(raw)).then_some(LedgerError::ChainConflict { height })
        );
    }
    tx.prepare_cached(INSERT_CHAIN)?
        .execute(params![sql_height, raw])?;
    *chain_next = Some(next + 1);
    Ok(None)
}
