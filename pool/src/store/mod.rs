//! The durable store: accepted shares, found blocks, the embedded chain and every worker's
//! totals, in one SQLite database `quarry.sqlite3` under the data directory.
//!
//! # Durability
//!
//! A share is acknowledged only once the transaction holding it has committed. All writes go
//! through one writer thread (a [`std::thread`], never an async task) that takes everything
//! queued, up to [`StoreOptions::max_batch`] commands, and commits it as one transaction
//! (group commit). The database runs in WAL mode with `synchronous=FULL`, so every commit
//! fsyncs the write-ahead log before [`Store::record_share`] resolves: after a `kill -9` or a
//! power loss, every acknowledged share, block and chain block is on disk, and each worker's
//! totals match its rows because both change in the same transaction. If a commit fails,
//! every waiter of that batch gets the error; none is told "committed".
//!
//! The queue is bounded ([`StoreOptions::queue_capacity`]): when the writer falls behind,
//! senders wait, which slows share acknowledgements rather than growing memory.
//!
//! # Reads
//!
//! Reads use a second, read-only connection behind a mutex; WAL lets it read the last
//! committed state while the writer commits.
//!
//! # Schema
//!
//! Versioned migrations (`PRAGMA user_version`) live in `schema.rs`. One process owns
//! the database at a time: the writer caches the chain height and worker ids.

pub mod history;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use writer::{Command, Counters, Rejects, Writer};

/// The database file's name inside the data directory.
pub const FILE_NAME: &str = "quarry.sqlite3";

/// How long a connection waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store; cheap to clone, every clone talks to the same writer thread.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    commands: mpsc::Sender<Command>,
    /// Set by [`Store::close`]; later writes are refused instead of queued.
    closed: AtomicBool,
    rejects: Arc<Mutex<Rejects>>,
    reader: Mutex<Connection>,
    /// Taken (and joined) by the first [`Store::close`].
    writer: tokio::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    counters: Arc<Counters>,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened or configured.
    #[error("cannot open database {} ({operation})", path.display())]
    Open {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite refused WAL mode (e.g. on a file system without shared memory).
    #[error("database {} is in journal mode {mode:?}, not wal", path.display())]
    NotWal { path: PathBuf, mode: String },
    /// A schema migration failed; the database stays at the previous version.
    #[error("cannot migrate database {} to schema version {version}", path.display())]
    Migrate {
        path: PathBuf,
        version: usize,
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer build of Quarry.
    #[error(
        "database {} has schema version {found}, this build knows versions up to {supported}",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: usize,
    },
    /// The writer thread could not be started.
    #[error("cannot start the store writer thread for {}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The batch's transaction failed and was rolled back; nothing of it was stored.
    #[error("cannot commit to database {}", path.display())]
    Commit {
        path: PathBuf,
        /// Shared by every waiter of the failed batch.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// A read query failed.
    #[error("cannot read {what} from database {}", path.display())]
    Read {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The store was closed; nothing more is written.
    #[error("store {} is closed", path.display())]
    Closed { path: PathBuf },
    /// The writer thread went away without answering (it panicked).
    #[error("store writer for {} stopped without answering", path.display())]
    WriterGone { path: PathBuf },
    /// A share's numbers cannot be stored (SQLite turns NaN into NULL).
    #[error("invalid share from worker {worker:?}: {field} is {value}")]
    InvalidShare {
        worker: String,
        field: &'static str,
        value: f64,
    },
    /// A height beyond SQLite's signed 64-bit integers.
    #[error("height {height} is out of range")]
    HeightOutOfRange { height: u64 },
    /// [`Store::set_block_status`] for a block that was never recorded.
    #[error("no found block {hash} in the store")]
    UnknownBlock { hash: BlockHash },
    /// [`Store::append_chain_block`] skipped heights.
    #[error("chain block at height {height} does not extend the stored chain, whose next height is {next}")]
    ChainGap { height: u64, next: u64 },
    /// [`Store::append_chain_block`] with other bytes than the block stored at that height.
    #[error(
        "chain block at height {height} differs from the stored one; the chain is append-only"
    )]
    ChainConflict { height: u64 },
}

/// Tuning of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Commands queued for the writer before senders wait; the backpressure bound.
    pub queue_capacity: usize,
    /// Commands committed per transaction at most; bounds one commit's latency.
    pub max_batch: usize,
    /// Share rows older than this (by their `time_ms`) are deleted by the writer; totals are
    /// kept. It checks about once a minute while there is traffic. `Duration::MAX` (anything
    /// beyond `i64::MAX` milliseconds) keeps shares forever.
    pub share_retention: Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            queue_capacity: 16_384,
            max_batch: 4_096,
            share_retention: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

/// Why a share was rejected, for the per-worker counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    Stale,
    Duplicate,
    LowDifficulty,
    Malformed,
    Unauthorized,
}

impl RejectKind {
    /// Every kind, in the order of [`WorkerTotals::rejected`].
    pub const ALL: [RejectKind; 5] = [
        RejectKind::Stale,
        RejectKind::Duplicate,
        RejectKind::LowDifficulty,
        RejectKind::Malformed,
        RejectKind::Unauthorized,
    ];

    /// The kind's name in metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Stale => "stale",
            RejectKind::Duplicate => "duplicate",
            RejectKind::LowDifficulty => "low_difficulty",
            RejectKind::Malformed => "malformed",
            RejectKind::Unauthorized => "unauthorized",
        }
    }
}

/// An accepted share, as stored.
#[derive(Debug, Clone)]
pub struct AcceptedShare {
    /// `account.worker`; shared with the session, which sends many shares.
    pub worker: Arc<str>,
    /// The difficulty credited (the session's share difficulty).
    pub difficulty: f64,
    /// The difficulty the hash achieved; the worker's best share is the maximum of these.
    pub hash_difficulty: f64,
    /// Unix time in milliseconds.
    pub time_ms: i64,
}

/// A block found by a miner.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundBlock {
    pub height: u64,
    pub hash: BlockHash,
    pub worker: String,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    /// The block's full consensus serialization, so it can be resubmitted.
    pub raw: Vec<u8>,
    /// E.g. `"accepted"`, later `"orphaned"`.
    pub status: String,
}

/// A worker's totals since its first share, kept across restarts and share pruning.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerTotals {
    pub worker: String,
    pub accepted: u64,
    /// Sum of the credited difficulty of accepted shares.
    pub accepted_difficulty: f64,
    /// Indexed by [`RejectKind`] as `usize`.
    pub rejected: [u64; 5],
    /// The highest difficulty an accepted share's hash achieved.
    pub best_share_difficulty: f64,
    /// The latest time of an accepted or rejected share, in Unix milliseconds.
    pub last_share_ms: Option<i64>,
}

/// The writer's counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: u64,
    /// Transactions that failed and were rolled back.
    pub failed_commits: u64,
    /// Shares in committed transactions.
    pub shares_committed: u64,
    /// Commands in the last batch, committed or not.
    pub last_batch: usize,
    /// Time spent applying and committing batches.
    pub commit_time: Duration,
}

impl Store {
    /// Opens (creating) `dir/quarry.sqlite3`, runs migrations, starts the writer thread.
    ///
    /// Does not need a Tokio runtime.
    ///
    /// # Errors
    ///
    /// If the directory or database cannot be created or opened, WAL mode is unavailable,
    /// a migration fails or the schema is newer than this build, or the thread cannot start.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let open_error = |operation| {
            let path = path.clone();
            move |source| StoreError::Open {
                path,
                operation,
                source,
            }
        };

        let mut conn = Connection::open(&path).map_err(open_error("open for writing"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(open_error("set busy timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
            .map_err(open_error("set journal_mode=wal"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal { path, mode });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error("set synchronous=full"))?;
        conn.set_prepared_statement_cache_capacity(32);
        schema::migrate(&mut conn, &path)?;

        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error("open for reading"))?;
        reader
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(open_error("set busy timeout"))?;

        let (commands, rx) = mpsc::channel(options.queue_capacity.max(1));
        let rejects = Arc::new(Mutex::new(Rejects::default()));
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(
            conn,
            path.clone(),
            rx,
            rejects.clone(),
            counters.clone(),
            options.max_batch,
            options.share_retention,
        );
        let handle = std::thread::Builder::new()
            .name("quarry-store".into())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Spawn {
                path: path.clone(),
                source,
            })?;
        tracing::info!(path = %path.display(), "opened store");
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                commands,
                closed: AtomicBool::new(false),
                rejects,
                reader: Mutex::new(reader),
                writer: tokio::sync::Mutex::new(Some(handle)),
                counters,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stores an accepted share and adds it to its worker's totals, in the same transaction.
    ///
    /// Resolves once that transaction has committed: only then may the share be acknowledged
    /// to the miner. Waits while the queue is full. Dropping the future after it was queued
    /// does not withdraw the share.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidShare`] for a NaN, infinite or negative difficulty (nothing is
    /// queued), [`StoreError::Closed`] after [`Store::close`], [`StoreError::Commit`] if the
    /// batch's transaction failed.
    pub async fn record_share(&self, share: AcceptedShare) -> Result<(), StoreError> {
        for (field, value) in [
            ("difficulty", share.difficulty),
            ("hash_difficulty", share.hash_difficulty),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(StoreError::InvalidShare {
                    worker: share.worker.to_string(),
                    field,
                    value,
                });
            }
        }
        self.request(|done| Command::Share(share, done)).await
    }

    /// Counts a reject in the worker's totals with the next batch; never waits.
    ///
    /// Rejects counted after [`Store::close`] are dropped.
    pub fn record_reject(&self, worker: &str, kind: RejectKind, time_ms: i64) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        let first = {
            let mut rejects = self
                .inner
                .rejects
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let first = rejects.is_empty();
            rejects.add(worker, kind, time_ms);
            first
        };
        // The writer drains all pending rejects with each batch. Only the first reject after
        // a drain must make sure a batch happens; if the queue is full, one will anyway.
        if first {
            let _ = self.inner.commands.try_send(Command::Wake);
        }
    }

    /// Stores a found block (replacing a block recorded with the same hash).
    ///
    /// # Errors
    ///
    /// [`StoreError::HeightOutOfRange`], [`StoreError::Closed`], [`StoreError::Commit`].
    pub async fn record_block(&self, block: FoundBlock) -> Result<(), StoreError> {
        self.request(|done| Command::Block(block, done)).await
    }

    /// Updates a stored block's status (e.g. later `"orphaned"`).
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownBlock`] if no block has this hash, [`StoreError::Closed`],
    /// [`StoreError::Commit`].
    pub async fn set_block_status(&self, hash: BlockHash, status: &str) -> Result<(), StoreError> {
        let status = status.to_owned();
        self.request(|done| Command::BlockStatus(hash, status, done))
            .await
    }

    /// Appends a block of the pool's own embedded chain (genesis is height 0).
    ///
    /// Resolves once committed. Appending the block already stored at `height` again is a
    /// no-op, so a restart may replay its tip.
    ///
    /// # Errors
    ///
    /// [`StoreError::ChainGap`] if `height` is past the next height,
    /// [`StoreError::ChainConflict`] if other bytes are stored at `height`,
    /// [`StoreError::Closed`], [`StoreError::Commit`].
    pub async fn append_chain_block(&self, height: u64, raw: Vec<u8>) -> Result<(), StoreError> {
        self.request(|done| Command::ChainBlock(height, raw, done))
            .await
    }

    /// All stored chain blocks' raw bytes in height order (for restart).
    ///
    /// # Errors
    ///
    /// [`StoreError::Read`] if the query fails.
    pub fn chain_blocks(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read("chain blocks", |conn| {
            let mut statement = conn.prepare_cached("SELECT raw FROM chain ORDER BY height")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect()
        })
    }

    /// Every worker's totals, by worker name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Read`] if the query fails or a stored count is negative.
    pub fn worker_totals(&self) -> Result<Vec<WorkerTotals>, StoreError> {
        self.read("worker totals", |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT name, accepted, accepted_difficulty, rejected_stale, rejected_duplicate, \
                 rejected_low_difficulty, rejected_malformed, rejected_unauthorized, \
                 best_share_difficulty, last_share_ms FROM workers ORDER BY name",
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
                })
            })?;
            rows.collect()
        })
    }

    /// Accepted shares at or after `since_ms` as `(worker, time_ms, difficulty)`, oldest
    /// first, to rebuild hashrate windows on restart.
    ///
    /// # Errors
    ///
    /// [`StoreError::Read`] if the query fails.
    pub fn shares_since(&self, since_ms: i64) -> Result<Vec<(String, i64, f64)>, StoreError> {
        self.read("shares", |conn| {
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
    }

    /// Stores minutes of hashrate history (replacing the same minutes), rolls up
    /// and prunes old buckets as of `now_ms`. Resolves once committed.
    ///
    /// # Errors
    ///
    /// [`StoreError::Closed`], [`StoreError::Commit`].
    pub async fn record_history(
        &self,
        rows: Vec<history::HistoryRow>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.request(|done| Command::History(rows, now_ms, done))
            .await
    }

    /// Hashrate history of one worker, account or the pool (`name` empty) as
    /// buckets of `step_ms` in `[since_ms, until_ms)`, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Read`] if the query fails.
    pub fn history(
        &self,
        scope: history::Scope,
        name: &str,
        since_ms: i64,
        until_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<history::Bucket>, StoreError> {
        self.read("hashrate history", |conn| {
            history::query(conn, scope, name, since_ms, until_ms, step_ms)
        })
    }

    /// The found block with this hash.
    ///
    /// # Errors
    ///
    /// [`StoreError::Read`] if the query fails.
    pub fn block(&self, hash: BlockHash) -> Result<Option<FoundBlock>, StoreError> {
        self.read("a found block", |conn| {
            conn.query_row(
                "SELECT height, worker, time_ms, raw, status FROM blocks WHERE hash = ?1",
                params![hash.to_byte_array()],
                |row| {
                    Ok(FoundBlock {
                        height: row.get(0)?,
                        hash,
                        worker: row.get(1)?,
                        time_ms: row.get(2)?,
                        raw: row.get(3)?,
                        status: row.get(4)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Found blocks, newest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Read`] if the query fails or a stored hash is not 32 bytes.
    pub fn blocks(&self, limit: usize) -> Result<Vec<FoundBlock>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("found blocks", |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT height, hash, worker, time_ms, raw, status FROM blocks \
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
                })
            })?;
            rows.collect()
        })
    }

    /// Stops accepting writes, commits everything queued (and pending rejects), and joins
    /// the writer thread. Reads keep working. Calling it again is a no-op.
    ///
    /// # Errors
    ///
    /// [`StoreError::Commit`] if the final commit fails, [`StoreError::WriterGone`] if the
    /// writer thread panicked.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.inner.closed.store(true, Ordering::Release);
        let mut writer = self.inner.writer.lock().await;
        let Some(handle) = writer.take() else {
            return Ok(());
        };
        let (done, answer) = oneshot::channel();
        let result = match self.inner.commands.send(Command::Close(done)).await {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(self.writer_gone())),
            Err(_) => Err(self.writer_gone()),
        };
        let joined = tokio::task::spawn_blocking(move || handle.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            return Err(self.writer_gone());
        }
        tracing::info!(path = %self.inner.path.display(), "closed store");
        result
    }

    /// The writer's counters.
    pub fn stats(&self) -> StoreStats {
        self.inner.counters.snapshot()
    }

    /// Time to apply and commit each batch.
    pub fn commit_latency(&self) -> &crate::metrics::AtomicHistogram {
        &self.inner.counters.commit_latency
    }

    /// Commands in each batch.
    pub fn batch_sizes(&self) -> &crate::metrics::AtomicHistogram {
        &self.inner.counters.batch_sizes
    }

    /// Queues a command and waits for its commit.
    async fn request(
        &self,
        command: impl FnOnce(writer::Done) -> Command,
    ) -> Result<(), StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(self.closed());
        }
        let (done, answer) = oneshot::channel();
        self.inner
            .commands
            .send(command(done))
            .await
            .map_err(|_| self.closed())?;
        answer.await.unwrap_or_else(|_| Err(self.writer_gone()))
    }

    fn read<T>(
        &self,
        what: &'static str,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let reader = self
            .inner
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        query(&reader).map_err(|source| StoreError::Read {
            path: self.inner.path.clone(),
            what,
            source,
        })
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            path: self.inner.path.clone(),
        }
    }

    fn writer_gone(&self) -> StoreError {
        StoreError::WriterGone {
            path: self.inner.path.clone(),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
