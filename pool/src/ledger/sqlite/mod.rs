//! The SQLite ledger: one file `quarry.sqlite3` in the data directory, the single-host
//! default.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so every commit fsyncs the
//! write-ahead log before a share is acknowledged: after a `kill -9` or a power loss, every
//! acknowledged share, block and chain block is on disk. All writes go through one writer
//! thread (a [`std::thread`], never an async task; `writer.rs`). Reads use a second,
//! read-only connection behind a mutex on the blocking pool; WAL lets it read the last
//! committed state while the writer commits.
//!
//! Versioned migrations (`PRAGMA user_version`) live in `schema.rs`. One process owns the
//! file at a time: the writer caches the chain height and worker ids.

mod history;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::batch::Queue;
use super::history::{Bucket, Scope};
use super::window::WindowFill;
use super::{
    Earning, FoundBlock, Ledger, LedgerError, LedgerOptions, PayoutLine, WindowCredits,
    WorkerTotals,
};
use writer::Writer;

/// The database file's name inside the data directory.
pub const FILE_NAME: &str = "quarry.sqlite3";

/// How long a connection waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite ledger.
pub struct SqliteLedger {
    path: PathBuf,
    queue: Queue,
    reader: Arc<Mutex<Connection>>,
    /// Taken (and joined) by the first [`Ledger::close`].
    writer: tokio::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SqliteLedger {
    /// Opens (creating) `dir/quarry.sqlite3`, runs migrations, starts the writer thread.
    ///
    /// Blocks; does not need a Tokio runtime.
    ///
    /// # Errors
    ///
    /// If the directory or database cannot be created or opened, WAL mode is unavailable,
    /// a migration fails or the schema is newer than this build, or the thread cannot start.
    pub fn open(dir: &Path, options: LedgerOptions) -> Result<SqliteLedger, LedgerError> {
        std::fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let location = path.display().to_string();
        let open_error = |operation| {
            let location = location.clone();
            move |source: rusqlite::Error| LedgerError::Open {
                location,
                operation,
                source: source.into(),
            }
        };

        let mut conn = Connection::open(&path).map_err(open_error("open for writing"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(open_error("set busy timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
            .map_err(open_error("set journal_mode=wal"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::NotWal { location, mode });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error("set synchronous=full"))?;
        conn.set_prepared_statement_cache_capacity(32);
        schema::migrate(&mut conn, &location)?;

        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error("open for reading"))?;
        reader
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(open_error("set busy timeout"))?;

        let (queue, rx) = Queue::new(location.clone(), options.queue_capacity);
        let writer = Writer::new(
            conn,
            &path,
            rx,
            queue.shared.clone(),
            options.max_batch,
            options.share_retention,
        );
        let handle = std::thread::Builder::new()
            .name("quarry-ledger".into())
            .spawn(move || writer.run())
            .map_err(|source| LedgerError::Spawn { location, source })?;
        tracing::info!(path = %path.display(), "opened ledger");
        Ok(SqliteLedger {
            path,
            queue,
            reader: Arc::new(Mutex::new(reader)),
            writer: tokio::sync::Mutex::new(Some(handle)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a query on the read connection, on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        what: &'static str,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let reader = self.reader.clone();
        let read_error = |source: super::BoxError| LedgerError::Read {
            location: self.queue.location().into(),
            what,
            source,
        };
        tokio::task::spawn_blocking(move || {
            let reader = reader.lock().unwrap_or_else(PoisonError::into_inner);
            query(&reader)
        })
        .await
        .map_err(|error| read_error(error.into()))?
        .map_err(|error| read_error(error.into()))
    }
}

#[async_trait::async_trait]
impl Ledger for SqliteLedger {
    fn queue(&self) -> &Queue {
        &self.queue
    }

    async fn chain_blocks(&self, from_height: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        let from = i64::try_from(from_height).unwrap_or(i64::MAX);
        self.read("chain blocks", move |conn| {
            let mut statement =
                conn.prepare_cached("SELECT raw FROM chain WHERE height >= ?1 ORDER BY height")?;
            let rows = statement.query_map(params![from], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn worker_totals(&self) -> Result<Vec<WorkerTotals>, LedgerError> {
        self.read("worker totals", |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT name, accepted, accepted_difficulty, rejected_stale, rejected_duplicate, \
                 rejected_low_difficulty, rejected_malformed, rejected_unauthorized, \
                 best_share_difficulty, last_share_ms, \
                 CASE WHEN best_share_epoch = (SELECT block_epoch FROM pool_state) \
                 THEN best_share_since_block ELSE 0 END FROM workers ORDER BY name",
            )?;
            let rows = statement.query_map([], |row| {
                Ok(WorkerTotals {
                    worker: row.get(0)?,
                    accepted: row.get(1)?,
                    accepted_difficulty: row.get(2)?,
                    rejected: [
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                    ],
                    best_share_difficulty: row.get(8)?,
                    last_share_ms: row.get(9)?,
                    best_share_since_block: row.get(10)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn shares_since(&self, since_ms: i64) -> Result<Vec<(String, i64, f64)>, LedgerError> {
        self.read("shares", move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT workers.name, shares.time_ms, shares.difficulty \
                 FROM shares JOIN workers ON workers.id = shares.worker_id \
                 WHERE shares.time_ms >= ?1 ORDER BY shares.time_ms, shares.id",
            )?;
            let rows = statement.query_map(params![since_ms], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn history(
        &self,
        scope: Scope,
        name: &str,
        since_ms: i64,
        until_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Bucket>, LedgerError> {
        let name = name.to_owned();
        self.read("hashrate history", move |conn| {
            history::query(conn, scope, &name, since_ms, until_ms, step_ms)
        })
        .await
    }

    async fn block(&self, hash: BlockHash) -> Result<Option<FoundBlock>, LedgerError> {
        self.read("a found block", move |conn| {
            conn.query_row(
                "SELECT height, worker, time_ms, raw, status, node FROM blocks WHERE hash = ?1",
                params![hash.to_byte_array()],
                |row| {
                    Ok(FoundBlock {
                        height: row.get(0)?,
                        hash,
                        worker: row.get(1)?,
                        time_ms: row.get(2)?,
                        raw: row.get(3)?,
                        status: row.get(4)?,
                        node: row.get(5)?,
                        payouts: Vec::new(),
                    })
                },
            )
            .optional()?
            .map(|block| with_payouts(conn, block))
            .transpose()
        })
        .await
    }

    async fn window_credits(&self, window: f64) -> Result<WindowCredits, LedgerError> {
        let credits = self
            .read("the PPLNS window", move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT shares.id, workers.name, shares.difficulty FROM shares \
                     JOIN workers ON workers.id = shares.worker_id ORDER BY shares.id DESC",
                )?;
                let mut rows = statement.query([])?;
                let mut window_fill = WindowFill::new(window);
                while let Some(row) = rows.next()? {
                    if window_fill.add(row.get(0)?, row.get(1)?, row.get(2)?) {
                        break;
                    }
                }
                Ok(window_fill.finish())
            })
            .await?;
        if let Some(id) = credits.oldest_id {
            self.queue.shared.keep_shares_from(id);
        }
        Ok(credits)
    }

    async fn earnings(&self, payee: &str, limit: usize) -> Result<Vec<Earning>, LedgerError> {
        let (payee, limit) = (payee.to_owned(), i64::try_from(limit).unwrap_or(i64::MAX));
        self.read("earnings", move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT blocks.height, blocks.hash, blocks.time_ms, blocks.status, \
                     p.payee, p.credit, p.earned, p.owed_before, p.paid, p.owed_after \
                     FROM block_payouts AS p JOIN blocks ON blocks.hash = p.block_hash \
                     WHERE p.payee = ?1 ORDER BY blocks.time_ms DESC, blocks.id DESC LIMIT ?2",
            )?;
            let rows = statement.query_map(params![payee, limit], |row| {
                let hash: [u8; 32] = row.get(1)?;
                Ok(Earning {
                    height: row.get(0)?,
                    hash: BlockHash::from_byte_array(hash),
                    time_ms: row.get(2)?,
                    status: row.get(3)?,
                    line: payout_line(row, 4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn owed(&self, payee: Option<&str>) -> Result<Vec<(String, i64)>, LedgerError> {
        let payee = payee.map(str::to_owned);
        self.read("owed balances", move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT payee, sats FROM owed WHERE ?1 IS NULL OR payee = ?1 ORDER BY payee",
            )?;
            let rows = statement.query_map(params![payee], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn bindings(&self) -> Result<Vec<(String, String)>, LedgerError> {
        self.read("account addresses", move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT account, address FROM account_addresses ORDER BY account",
            )?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn blocks(&self, limit: usize) -> Result<Vec<FoundBlock>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("found blocks", move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT height, hash, worker, time_ms, raw, status, node FROM blocks \
                 ORDER BY time_ms DESC, id DESC LIMIT ?1",
            )?;
            let rows = statement.query_map(params![limit], |row| {
                let hash: [u8; 32] = row.get(1)?;
                Ok(FoundBlock {
                    height: row.get(0)?,
                    hash: BlockHash::from_byte_array(hash),
                    worker: row.get(2)?,
                    time_ms: row.get(3)?,
                    raw: row.get(4)?,
                    status: row.get(5)?,
                    node: row.get(6)?,
                    payouts: Vec::new(),
                })
            })?;
            let blocks: Vec<FoundBlock> = rows.collect::<rusqlite::Result<_>>()?;
            blocks
                .into_iter()
                .map(|block| with_payouts(conn, block))
                .collect()
        })
        .await
    }

    async fn close(&self) -> Result<(), LedgerError> {
        let mut writer = self.writer.lock().await;
        let Some(handle) = writer.take() else {
            return Ok(());
        };
        let result = self.queue.close().await;
        let joined = tokio::task::spawn_blocking(move || handle.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            return Err(self.queue.writer_gone());
        }
        tracing::info!(path = %self.path.display(), "closed ledger");
        result
    }
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// `block` with its payout table, by payee.
fn with_payouts(conn: &Connection, mut block: FoundBlock) -> rusqlite::Result<FoundBlock> {
    let mut statement = conn.prepare_cached(
        "SELECT payee, credit, earned, owed_before, paid, owed_after FROM block_payouts \
         WHERE block_hash = ?1 ORDER BY payee",
    )?;
    let rows = statement.query_map(params![block.hash.to_byte_array()], |row| {
        payout_line(row, 0)
    })?;
    block.payouts = rows.collect::<rusqlite::Result<_>>()?;
    Ok(block)
}

/// A payout line from `row`'s columns `payee, credit, earned, owed_before, paid,
/// owed_after`, from column `first` on.
fn payout_line(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<PayoutLine> {
    Ok(PayoutLine {
        payee: row.get(first)?,
        credit: row.get(first + 1)?,
        earned: row.get(first + 2)?,
        owed_before: row.get(first + 3)?,
        paid: row.get(first + 4)?,
        owed_after: row.get(first + 5)?,
    })
}
