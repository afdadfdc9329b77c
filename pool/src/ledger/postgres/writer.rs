//! The PostgreSQL writer task: group commit of everything queued, one transaction per
//! batch, with each table's rows in one array-bound statement rather than one per row.
//!
//! Several nodes' writers update the same worker rows. Each transaction locks the worker
//! rows it changes in name order (and creates missing ones in that order), so two nodes'
//! transactions never wait on each other in a cycle.
//!
//! When the connection breaks, the batch in flight fails (its waiters are told, none is
//! acknowledged) and the next batch reconnects first. A batch that takes longer than
//! [`COMMIT_TIMEOUT`], e.g. against a server that stopped answering, is abandoned the same
//! way: its connection is dropped, so the server rolls it back.

use std::collections::HashMap;
use std::sync::atomic::AtomicI32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Statement, Transaction};

use super::{history, Target};
use crate::ledger::batch::{now_ms, sql_count, Batch, Command, Op, Shared, SharedError};
use crate::ledger::{BoxError, FoundBlock, LedgerError, LedgerOptions, BLOCK_ACCEPTED};

/// The longest a batch may take to apply and commit before its connection is dropped.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the writer deletes expired share rows.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows deleted per pruning statement.
const PRUNE_CHUNK: i64 = 10_000;
/// Worker ids cached at most; the cache is dropped when it grows past this.
const WORKER_CACHE_CAP: usize = 1 << 16;

const CREATE_WORKERS: &str = "INSERT INTO workers (name) \
     SELECT name FROM unnest($1::text[]) AS name ORDER BY name ON CONFLICT (name) DO NOTHING";
const WORKER_IDS: &str = "SELECT name, id FROM workers WHERE name = ANY($1::text[])";
const LOCK_WORKERS: &str =
    "SELECT id FROM workers WHERE id = ANY($1::int8[]) ORDER BY name FOR NO KEY UPDATE";
const INSERT_SHARES: &str = "INSERT INTO shares (worker_id, time_ms, difficulty, hash_difficulty) \
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::float8[], $4::float8[])";
const UPDATE_WORKERS: &str = "UPDATE workers AS w SET \
     accepted = w.accepted + d.accepted, \
     accepted_difficulty = w.accepted_difficulty + d.accepted_difficulty, \
     rejected_stale = w.rejected_stale + d.stale, \
     rejected_duplicate = w.rejected_duplicate + d.duplicate, \
     rejected_low_difficulty = w.rejected_low_difficulty + d.low, \
     rejected_malformed = w.rejected_malformed + d.malformed, \
     rejected_unauthorized = w.rejected_unauthorized + d.unauthorized, \
     best_share_difficulty = greatest(w.best_share_difficulty, d.best), \
     best_share_since_block = CASE WHEN w.best_share_epoch = e.epoch \
     THEN greatest(w.best_share_since_block, d.best) ELSE d.best END, \
     best_share_epoch = e.epoch, \
     last_share_ms = greatest(w.last_share_ms, d.last_ms) \
     FROM unnest($1::int8[], $2::int8[], $3::float8[], $4::int8[], $5::int8[], $6::int8[], \
     $7::int8[], $8::int8[], $9::float8[], $10::int8[]) \
     AS d(id, accepted, accepted_difficulty, stale, duplicate, low, malformed, unauthorized, \
     best, last_ms), (SELECT block_epoch AS epoch FROM pool_state) AS e WHERE w.id = d.id";
const UPSERT_BLOCK: &str = "INSERT INTO blocks (hash, height, worker, time_ms, raw, status, node) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (hash) DO UPDATE SET height = excluded.height, worker = excluded.worker, \
     time_ms = excluded.time_ms, raw = excluded.raw, status = excluded.status, \
     node = excluded.node";
/// Tells every node a block was found, at commit.
const NOTIFY_BLOCK: &str = "SELECT pg_notify('quarry_block', $1)";
/// Tells every node the embedded chain grew, at commit.
const NOTIFY_CHAIN: &str = "SELECT pg_notify('quarry_chain', $1)";
const SET_BLOCK_STATUS: &str = "UPDATE blocks SET status = $2 WHERE hash = $1";
const BLOCK_STATUS: &str = "SELECT status FROM blocks WHERE hash = $1 FOR UPDATE";
const DELETE_PAYOUTS: &str = "DELETE FROM block_payouts WHERE block_hash = $1";
const INSERT_PAYOUTS: &str = "INSERT INTO block_payouts \
     (block_hash, payee, credit, earned, owed_before, paid, owed_after) \
     SELECT $1, * FROM unnest($2::text[], $3::float8[], $4::int8[], $5::int8[], $6::int8[], \
     $7::int8[])";
/// Adds (`$2` = 1) or takes back (-1) a block's payouts in the owed balances, locking the
/// balances in payee order as every node does.
const APPLY_OWED: &str = "INSERT INTO owed (payee, sats) \
     SELECT payee, $2::int8 * (earned - paid) FROM block_payouts WHERE block_hash = $1 \
     ORDER BY payee ON CONFLICT (payee) DO UPDATE SET sats = owed.sats + excluded.sats";
/// A new block epoch: every worker's best share since the last block starts over.
const NEXT_EPOCH: &str = "UPDATE pool_state SET block_epoch = block_epoch + 1";
const CHAIN_NEXT: &str = "SELECT coalesce(max(height) + 1, 0)::int8 FROM chain";
const CHAIN_AT: &str = "SELECT raw FROM chain WHERE height = $1";
const INSERT_CHAIN: &str =
    "INSERT INTO chain (height, raw) VALUES ($1, $2) ON CONFLICT (height) DO NOTHING";
/// Serializes appends of every node: one extends the chain at a time.
const LOCK_CHAIN: &str = "SELECT pg_advisory_xact_lock(7177617268617769)";
const PRUNE: &str = "DELETE FROM shares WHERE id IN \
     (SELECT id FROM shares WHERE time_ms < $1 AND id < $3 LIMIT $2)";

/// The statements of every batch, prepared once per connection (a statement named by its
/// text alone would be parsed again on every use: one more round trip each).
struct Prepared {
    lock_workers: Statement,
    insert_shares: Statement,
    update_workers: Statement,
}

impl Prepared {
    async fn on(client: &Client) -> Result<Prepared, tokio_postgres::Error> {
        Ok(Prepared {
            lock_workers: client.prepare(LOCK_WORKERS).await?,
            insert_shares: client.prepare(INSERT_SHARES).await?,
            update_workers: client.prepare(UPDATE_WORKERS).await?,
        })
    }
}

/// The writer task's state.
pub(super) struct Writer {
    /// `None` after the connection broke, until the next batch reconnects.
    client: Option<(Client, Prepared)>,
    target: Target,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    max_batch: usize,
    /// `None` keeps shares forever.
    retention_ms: Option<i64>,
    next_prune: Instant,
    /// Worker ids by name; rows are never deleted, so ids stay valid across transactions.
    worker_ids: HashMap<Arc<str>, i64>,
    /// The connection `open` made and migrated with, used for the first batch.
    first: Option<Client>,
    /// The cluster node whose history rows this writer writes.
    node: Arc<AtomicI32>,
    incoming: Vec<Command>,
    batch: Batch,
}

impl Writer {
    pub(super) fn new(
        client: Client,
        target: Target,
        rx: mpsc::Receiver<Command>,
        shared: Arc<Shared>,
        node: Arc<AtomicI32>,
        options: &LedgerOptions,
    ) -> Writer {
        Writer {
            client: None,
            first: Some(client),
            node,
            target,
            rx,
            shared,
            max_batch: options.max_batch.max(1),
            retention_ms: i64::try_from(options.share_retention.as_millis()).ok(),
            next_prune: Instant::now(),
            worker_ids: HashMap::new(),
            incoming: Vec::new(),
            batch: Batch::default(),
        }
    }

    /// Runs until the queue is closed (by [`Command::Close`] or by dropping every sender)
    /// and drained.
    pub(super) async fn run(mut self) {
        loop {
            let received = self.rx.recv_many(&mut self.incoming, self.max_batch).await;
            if received == 0 {
                break;
            }
            if self.batch.take(&mut self.incoming) {
                self.rx.close();
            }
            let _ = self.commit_batch().await;
            self.maybe_prune().await;
        }
        let result = self.commit_batch().await;
        let location = self.target.location.clone();
        self.batch.answer_closers(&result, &location);
        tracing::debug!(ledger = %location, "ledger writer stopped");
    }

    /// Commits the batch and the pending rejects in one transaction and answers the waiters.
    async fn commit_batch(&mut self) -> Result<(), SharedError> {
        self.batch.drain_rejects(&self.shared);
        if self.batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(COMMIT_TIMEOUT, self.apply()).await {
            Ok(Ok(outcomes)) => Ok(outcomes),
            Ok(Err(error)) => Err(Arc::new(error) as SharedError),
            Err(_) => Err(SharedError::from(BoxError::from(format!(
                "no commit within {COMMIT_TIMEOUT:?}; the transaction was abandoned"
            )))),
        };
        if result.is_err() {
            // Rows the rollback removed may be cached.
            self.worker_ids.clear();
            // A broken or abandoned connection is not reused; a failed statement leaves a
            // healthy one usable (the transaction was rolled back when it was dropped).
            if self
                .client
                .as_ref()
                .is_none_or(|(client, _)| client.is_closed())
                || started.elapsed() >= COMMIT_TIMEOUT
            {
                self.client = None;
            }
        }
        self.batch.finish(
            result,
            &self.target.location,
            &self.shared,
            started.elapsed(),
        )
    }

    /// Applies the batch in one transaction and commits it.
    async fn apply(&mut self) -> Result<Vec<Option<LedgerError>>, tokio_postgres::Error> {
        if self.client.is_none() {
            let client = match self.first.take() {
                Some(client) => client,
                None => {
                    let client = self.target.connect().await?;
                    tracing::info!(ledger = %self.target.location, "ledger writer reconnected");
                    client
                }
            };
            let prepared = Prepared::on(&client).await?;
            self.client = Some((client, prepared));
        }
        let Some((client, prepared)) = self.client.as_mut() else {
            unreachable!("connected above");
        };
        if self.worker_ids.len() > WORKER_CACHE_CAP {
            self.worker_ids.clear();
        }
        let tx = client.transaction().await?;
        let deltas = self.batch.deltas();
        let names: Vec<&str> = deltas.keys().copied().collect();
        resolve_workers(&tx, &mut self.worker_ids, &names).await?;
        let ids: Vec<i64> = names.iter().map(|name| self.worker_ids[*name]).collect();

        let mut outcomes = Vec::with_capacity(self.batch.ops.len());
        let (mut share_workers, mut times, mut difficulties, mut hash_difficulties) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for op in &self.batch.ops {
            let outcome = match op {
                Op::Share(share) => {
                    share_workers.push(self.worker_ids[&share.worker]);
                    times.push(share.time_ms);
                    difficulties.push(share.difficulty);
                    hash_difficulties.push(share.hash_difficulty);
                    None
                }
                Op::Block(block) => put_block(&tx, block).await?,
                Op::BlockStatus(hash, status) => set_block_status(&tx, hash, status).await?,
                Op::ChainBlock(height, raw) => append_chain(&tx, *height, raw).await?,
                Op::History(rows, now_ms) => {
                    let node = self.node.load(std::sync::atomic::Ordering::Relaxed);
                    history::apply(&tx, rows, *now_ms, node).await?;
                    None
                }
                Op::Binding(account, address) => {
                    bind(&tx, account, address.as_deref()).await?;
                    None
                }
            };
            outcomes.push(outcome);
        }
        let mut columns = DeltaColumns::default();
        for ((_, delta), id) in deltas.iter().zip(&ids) {
            columns.push(*id, delta);
        }
        // The three statements go out together (tokio-postgres pipelines futures polled
        // together, in the order first polled) and run in that order: the worker rows are
        // locked in name order before anything else touches them.
        let insert = async {
            if share_workers.is_empty() {
                return Ok(0);
            }
            tx.execute(
                &prepared.insert_shares,
                &[&share_workers, &times, &difficulties, &hash_difficulties],
            )
            .await
        };
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
        let (locked, inserted, updated) = tokio::join!(
            tx.execute(&prepared.lock_workers, &lock_params),
            insert,
            columns.update(&tx, &prepared.update_workers),
        );
        // The first statement that failed is the cause: every later one in the
        // transaction only reports that it was aborted, and may come back first.
        locked?;
        inserted?;
        updated?;
        // After the batch's shares: the share that found the block counts before it.
        if self.batch.ops.iter().any(Op::starts_block_epoch) {
            tx.execute(NEXT_EPOCH, &[]).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Deletes share rows older than the retention, a chunk at a time, when due.
    async fn maybe_prune(&mut self) {
        let now = Instant::now();
        let (Some(retention_ms), Some((client, _))) = (self.retention_ms, self.client.as_ref())
        else {
            return;
        };
        if now < self.next_prune {
            return;
        }
        let cutoff = now_ms().saturating_sub(retention_ms);
        let below = self.shared.prune_below_id();
        match client
            .execute(PRUNE, &[&cutoff, &PRUNE_CHUNK, &below])
            .await
        {
            Ok(deleted) if deleted >= PRUNE_CHUNK as u64 => {}
            Ok(deleted) => {
                if deleted > 0 {
                    tracing::debug!(ledger = %self.target.location, deleted, "pruned expired shares");
                }
                self.next_prune = now + PRUNE_INTERVAL;
            }
            Err(error) => {
                tracing::warn!(ledger = %self.target.location, %error, "pruning expired shares failed");
                self.next_prune = now + PRUNE_INTERVAL;
            }
        }
    }
}

/// Fills `ids` for every name in `names` (sorted), creating missing worker rows in order.
async fn resolve_workers(
    tx: &Transaction<'_>,
    ids: &mut HashMap<Arc<str>, i64>,
    names: &[&str],
) -> Result<(), tokio_postgres::Error> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !ids.contains_key(*name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    tx.execute(CREATE_WORKERS, &[&missing]).await?;
    for row in tx.query(WORKER_IDS, &[&missing]).await? {
        let name: &str = row.get(0);
        ids.insert(Arc::from(name), row.get(1));
    }
    Ok(())
}

/// The batch's worker deltas as one array per column, for [`UPDATE_WORKERS`].
#[derive(Default)]
struct DeltaColumns {
    ids: Vec<i64>,
    accepted: Vec<i64>,
    accepted_difficulty: Vec<f64>,
    rejected: [Vec<i64>; 5],
    best: Vec<f64>,
    last_ms: Vec<Option<i64>>,
}

impl DeltaColumns {
    fn push(&mut self, id: i64, delta: &crate::ledger::batch::Delta) {
        self.ids.push(id);
        self.accepted.push(sql_count(delta.accepted));
        self.accepted_difficulty.push(delta.accepted_difficulty);
        for (column, count) in self.rejected.iter_mut().zip(delta.rejects.counts) {
            column.push(sql_count(count));
        }
        self.best.push(delta.best);
        self.last_ms.push(delta.last_share_ms());
    }

    async fn update(
        &self,
        tx: &Transaction<'_>,
        statement: &Statement,
    ) -> Result<u64, tokio_postgres::Error> {
        if self.ids.is_empty() {
            return Ok(0);
        }
        let [stale, duplicate, low, malformed, unauthorized] = &self.rejected;
        tx.execute(
            statement,
            &[
                &self.ids,
                &self.accepted,
                &self.accepted_difficulty,
                stale,
                duplicate,
                low,
                malformed,
                unauthorized,
                &self.best,
                &self.last_ms,
            ],
        )
        .await
    }
}

async fn put_block(
    tx: &Transaction<'_>,
    block: &FoundBlock,
) -> Result<Option<LedgerError>, tokio_postgres::Error> {
    let Ok(height) = i64::try_from(block.height) else {
        return Ok(Some(LedgerError::HeightOutOfRange {
            height: block.height,
        }));
    };
    let hash = block.hash.to_byte_array();
    let hash = hash.as_slice();
    // Recorded again: its old payouts leave the owed balances first.
    if status_of(tx, hash).await?.as_deref() == Some(BLOCK_ACCEPTED) {
        tx.execute(APPLY_OWED, &[&hash, &-1i64]).await?;
    }
    tx.execute(
        UPSERT_BLOCK,
        &[
            &hash,
            &height,
            &block.worker,
            &block.time_ms,
            &block.raw,
            &block.status,
            &block.node.map(i32::from),
        ],
    )
    .await?;
    tx.execute(DELETE_PAYOUTS, &[&hash]).await?;
    if !block.payouts.is_empty() {
        let lines = &block.payouts;
        let payees: Vec<&str> = lines.iter().map(|l| l.payee.as_str()).collect();
        let credits: Vec<f64> = lines.iter().map(|l| l.credit).collect();
        let column = |f: fn(&crate::ledger::PayoutLine) -> i64| -> Vec<i64> {
            lines.iter().map(f).collect()
        };
        tx.execute(
            INSERT_PAYOUTS,
            &[
                &hash,
                &payees,
                &credits,
                &column(|l| l.earned),
                &column(|l| l.owed_before),
                &column(|l| l.paid),
                &column(|l| l.owed_after),
            ],
        )
        .await?;
    }
    if block.status == BLOCK_ACCEPTED {
        tx.execute(APPLY_OWED, &[&hash, &1i64]).await?;
    }
    tx.execute(NOTIFY_BLOCK, &[&block.height.to_string()])
        .await?;
    Ok(None)
}

async fn status_of(
    tx: &Transaction<'_>,
    hash: &[u8],
) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(tx
        .query_opt(BLOCK_STATUS, &[&hash])
        .await?
        .map(|row| row.get(0)))
}

/// Sets a block's status; payouts count while it is accepted, so orphaning it takes
/// them back from the owed balances.
async fn set_block_status(
    tx: &Transaction<'_>,
    hash: &BlockHash,
    status: &str,
) -> Result<Option<LedgerError>, tokio_postgres::Error> {
    let bytes = hash.to_byte_array();
    let bytes = bytes.as_slice();
    let Some(old) = status_of(tx, bytes).await? else {
        return Ok(Some(LedgerError::UnknownBlock { hash: *hash }));
    };
    let (was, is) = (old == BLOCK_ACCEPTED, status == BLOCK_ACCEPTED);
    if was != is {
        let sign: i64 = if is { 1 } else { -1 };
        tx.execute(APPLY_OWED, &[&bytes, &sign]).await?;
    }
    tx.execute(SET_BLOCK_STATUS, &[&bytes, &status]).await?;
    Ok(None)
}

async fn bind(
    tx: &Transaction<'_>,
    account: &str,
    address: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    match address {
        Some(address) => {
            tx.execute(
                "INSERT INTO account_addresses (account, address) VALUES ($1, $2) \
                 ON CONFLICT (account) DO UPDATE SET address = excluded.address",
                &[&account, &address],
            )
            .await?
        }
        None => {
            tx.execute(
                "DELETE FROM account_addresses WHERE account = $1",
                &[&account],
            )
            .await?
        }
    };
    Ok(())
}

/// Appends at the chain's next height. Every node's append takes the same advisory lock
/// and reads the next height under it, so two nodes never both extend from one tip: the
/// second finds its height taken and gets [`LedgerError::ChainConflict`].
async fn append_chain(
    tx: &Transaction<'_>,
    height: u64,
    raw: &[u8],
) -> Result<Option<LedgerError>, tokio_postgres::Error> {
    tx.execute(LOCK_CHAIN, &[]).await?;
    let next: i64 = tx.query_one(CHAIN_NEXT, &[]).await?.get(0);
    let next = u64::try_from(next).unwrap_or(0);
    if height > next {
        return Ok(Some(LedgerError::ChainGap { height, next }));
    }
    let Ok(sql_height) = i64::try_from(height) else {
        return Ok(Some(LedgerError::HeightOutOfRange { height }));
    };
    if height < next {
        // Appending a block already stored is a no-op; replacing one is refused.
        let stored: Option<Vec<u8>> = tx
            .query_opt(CHAIN_AT, &[&sql_height])
            .await?
            .map(|row| row.get(0));
        return Ok(
            (stored.as_deref() != Some(raw)).then_some(LedgerError::ChainConflict { height })
        );
    }
    tx.execute(INSERT_CHAIN, &[&sql_height, &raw]).await?;
    tx.execute(NOTIFY_CHAIN, &[&height.to_string()]).await?;
    Ok(None)
}
