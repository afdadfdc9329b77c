//! The share ledger: accepted shares, reject counts, found blocks, the embedded chain,
//! every worker's totals and the hashrate history, behind one interface, [`Ledger`].
//!
//! Two backends implement it:
//! - [`sqlite`]: one file in the data directory, the single-host default, nothing to install;
//! - [`postgres`]: a PostgreSQL database that several pool nodes share as one pool.
//!
//! Sessions, validation and accounting hold an `Arc<dyn Ledger>` and never know which one
//! they talk to. Every backend passes the same conformance suite (`conformance.rs`).
//!
//! # Durability
//!
//! [`Ledger::record_share`] resolves `Ok` only once the transaction holding the share has
//! committed durably (SQLite: WAL with `synchronous=FULL`; PostgreSQL: `synchronous_commit`
//! on). Only then may the share be acknowledged to the miner. Writes are group-committed:
//! one writer per process takes everything queued, up to [`LedgerOptions::max_batch`]
//! commands, and commits it as one transaction, a worker's totals in the same transaction as
//! its shares. If a commit fails, every waiter of that batch gets the error; none is told
//! "committed". The queue is bounded ([`LedgerOptions::queue_capacity`]): when the writer
//! falls behind, senders wait, which slows acknowledgements rather than growing memory.

mod batch;
pub mod history;
pub mod postgres;
pub mod sqlite;
mod window;

#[cfg(test)]
mod conformance;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::BlockHash;

use crate::metrics::histogram::AtomicHistogram;
use batch::Op;
pub use batch::Queue;
use history::{Bucket, HistoryRow, RecentWork, Scope};

/// An error of a backend's driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the ledger lives: the `--database` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// `quarry.sqlite3` in this directory (the data directory by default).
    Sqlite { dir: PathBuf },
    /// A PostgreSQL connection URL (`postgres://user:password@host:port/dbname?sslmode=…`).
    Postgres { url: String },
}

impl Database {
    /// The ledger `--database` names, or SQLite in `data_dir` when it names none.
    ///
    /// # Errors
    ///
    /// A value that is neither a `postgres://`/`postgresql://` URL nor `sqlite`.
    pub fn from_setting(setting: Option<&str>, data_dir: &Path) -> Result<Database, String> {
        match setting.map(str::trim) {
            None | Some("" | "sqlite") => Ok(Database::Sqlite {
                dir: data_dir.to_path_buf(),
            }),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Database::Postgres { url: url.into() })
            }
            Some(other) => Err(format!(
                "database {:?} is neither `sqlite` nor a postgres:// URL",
                postgres::redact(other)
            )),
        }
    }
}

/// Opens the ledger `database` names, migrating its schema, and starts its writer.
///
/// # Errors
///
/// If it cannot be reached or opened, its schema is newer than this build or a migration
/// fails.
pub async fn open(
    database: &Database,
    options: LedgerOptions,
) -> Result<Arc<dyn Ledger>, LedgerError> {
    Ok(match database {
        Database::Sqlite { dir } => {
            let dir = dir.clone();
            let opened =
                tokio::task::spawn_blocking(move || sqlite::SqliteLedger::open(&dir, options))
                    .await
                    .map_err(|source| LedgerError::Spawn {
                        location: "sqlite".into(),
                        source: std::io::Error::other(source),
                    })??;
            Arc::new(opened)
        }
        Database::Postgres { url } => Arc::new(postgres::PostgresLedger::open(url, options).await?),
    })
}

/// An error and its sources, joined: drivers keep the server's message in a source.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The ledger's interface; see the module docs for the durability every backend keeps.
///
/// Writes are the same for every backend: each queues its commands for its own writer,
/// which commits them; a backend provides the queue, its reads and its close.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync + fmt::Debug {
    /// The queue of this ledger's writer.
    #[doc(hidden)]
    fn queue(&self) -> &Queue;

    /// Where the ledger is, for logs: a file path, or a URL without its password.
    fn location(&self) -> &str {
        self.queue().location()
    }

    /// Names the cluster node writing through this ledger, whose hashrate history is kept
    /// apart from the other nodes' (and summed with theirs when read). A single-node
    /// ledger has no other writers and ignores it.
    fn set_node(&self, _node: u8) {}

    /// Stores an accepted share and adds it to its worker's totals, in one transaction.
    ///
    /// Resolves once that transaction has committed: only then may the share be
    /// acknowledged. Waits while the queue is full. Dropping the future after it was queued
    /// does not withdraw the share.
    ///
    /// # Errors
    ///
    /// [`LedgerError::InvalidShare`] for a NaN, infinite or negative difficulty or a worker
    /// name with a NUL character (nothing is queued), [`LedgerError::Closed`] after
    /// [`Ledger::close`], [`LedgerError::Commit`] if the batch's transaction failed.
    async fn record_share(&self, share: AcceptedShare) -> Result<(), LedgerError> {
        self.queue().record_share(share).await
    }

    /// Counts a reject in the worker's totals with the next batch; never waits.
    ///
    /// Rejects counted after [`Ledger::close`] are dropped.
    fn record_reject(&self, worker: &str, kind: RejectKind, time_ms: i64) {
        self.queue().record_reject(worker, kind, time_ms);
    }

    /// Stores a found block (replacing a block recorded with the same hash).
    ///
    /// # Errors
    ///
    /// [`LedgerError::HeightOutOfRange`], [`LedgerError::Closed`], [`LedgerError::Commit`].
    async fn record_block(&self, block: FoundBlock) -> Result<(), LedgerError> {
        self.queue().write(Op::Block(block)).await
    }

    /// Updates a stored block's status (e.g. later [`BLOCK_ORPHANED`]).
    ///
    /// # Errors
    ///
    /// [`LedgerError::UnknownBlock`] if no block has this hash, [`LedgerError::Closed`],
    /// [`LedgerError::Commit`].
    async fn set_block_status(&self, hash: BlockHash, status: &str) -> Result<(), LedgerError> {
        self.queue()
            .write(Op::BlockStatus(hash, status.to_owned()))
            .await
    }

    /// Appends a block of the pool's own embedded chain (genesis is height 0).
    ///
    /// Resolves once committed. Appending the block already stored at `height` again is a
    /// no-op, so a restart may replay its tip.
    ///
    /// # Errors
    ///
    /// [`LedgerError::ChainGap`] if `height` is past the next height,
    /// [`LedgerError::ChainConflict`] if other bytes are stored at `height`,
    /// [`LedgerError::Closed`], [`LedgerError::Commit`].
    async fn append_chain_block(&self, height: u64, raw: Vec<u8>) -> Result<(), LedgerError> {
        self.queue().write(Op::ChainBlock(height, raw)).await
    }

    /// Stores minutes of hashrate history (replacing the same minutes), rolls up and prunes
    /// old buckets as of `now_ms`. Resolves once committed.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Closed`], [`LedgerError::Commit`].
    async fn record_history(&self, rows: Vec<HistoryRow>, now_ms: i64) -> Result<(), LedgerError> {
        self.queue().write(Op::History(rows, now_ms)).await
    }

    /// Binds `address` to `account` (replacing any earlier binding), or unbinds it with
    /// `None`: payouts to the account go to the address. Resolves once committed.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Closed`], [`LedgerError::Commit`].
    async fn bind_address(&self, account: &str, address: Option<&str>) -> Result<(), LedgerError> {
        self.queue()
            .write(Op::Binding(account.to_owned(), address.map(str::to_owned)))
            .await
    }

    /// Every account's bound address, by account.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails.
    async fn bindings(&self) -> Result<Vec<(String, String)>, LedgerError>;

    /// The raw bytes of the stored chain blocks from `from_height` on, in height order (for
    /// restart, and for following another node's blocks).
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails.
    async fn chain_blocks(&self, from_height: u64) -> Result<Vec<Vec<u8>>, LedgerError>;

    /// Every worker's totals, by worker name.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails or a stored count is negative.
    async fn worker_totals(&self) -> Result<Vec<WorkerTotals>, LedgerError>;

    /// Accepted shares at or after `since_ms` as `(worker, time_ms, difficulty)`, oldest
    /// first, to rebuild hashrate windows on restart.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails.
    async fn shares_since(&self, since_ms: i64) -> Result<Vec<(String, i64, f64)>, LedgerError>;

    /// Hashrate history of one worker, account or the pool (`name` empty) as buckets of
    /// `step_ms` in `[since_ms, until_ms)`, oldest first.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails.
    async fn history(
        &self,
        scope: Scope,
        name: &str,
        since_ms: i64,
        until_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Bucket>, LedgerError>;

    /// The other cluster nodes' accepted work in the minute rows they stored before
    /// `until_ms` (the last hour of them), so a node can show the cluster's hashrates. A
    /// single-node ledger has no other nodes: nothing.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails.
    async fn others_recent_work(&self, until_ms: i64) -> Result<RecentWork, LedgerError> {
        Ok(RecentWork {
            until_ms,
            ..RecentWork::default()
        })
    }

    /// Credited difficulty per worker of the newest shares adding up to `window` (the
    /// oldest one counted only in part), for PPLNS. From then on, share pruning keeps the
    /// window's shares whatever their age.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails.
    async fn window_credits(&self, window: f64) -> Result<WindowCredits, LedgerError>;

    /// The owed balance in sats (negative: paid ahead) of `payee`, or of every payee, by
    /// payee.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails.
    async fn owed(&self, payee: Option<&str>) -> Result<Vec<(String, i64)>, LedgerError>;

    /// `payee`'s lines in found blocks' payout tables, newest block first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails.
    async fn earnings(&self, payee: &str, limit: usize) -> Result<Vec<Earning>, LedgerError>;

    /// The found block with this hash.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails.
    async fn block(&self, hash: BlockHash) -> Result<Option<FoundBlock>, LedgerError>;

    /// Found blocks, newest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Read`] if the query fails or a stored hash is not 32 bytes.
    async fn blocks(&self, limit: usize) -> Result<Vec<FoundBlock>, LedgerError>;

    /// Stops accepting writes, commits everything queued (and pending rejects) and stops the
    /// writer. Reads keep working. Calling it again is a no-op.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Commit`] if the final commit fails, [`LedgerError::WriterGone`] if the
    /// writer stopped without answering.
    async fn close(&self) -> Result<(), LedgerError>;

    /// The writer's counters.
    fn stats(&self) -> LedgerStats {
        self.queue().stats()
    }

    /// Time to apply and commit each batch.
    fn commit_latency(&self) -> &AtomicHistogram {
        &self.queue().shared.counters.commit_latency
    }

    /// Commands in each batch.
    fn batch_sizes(&self) -> &AtomicHistogram {
        &self.queue().shared.counters.batch_sizes
    }
}

/// Errors of the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened, reached or configured.
    #[error("cannot open ledger {location} ({operation})")]
    Open {
        location: String,
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    /// SQLite refused WAL mode (e.g. on a file system without shared memory).
    #[error("ledger {location} is in journal mode {mode:?}, not wal")]
    NotWal { location: String, mode: String },
    /// A schema migration failed; the database stays at the previous version.
    #[error("cannot migrate ledger {location} to schema version {version}")]
    Migrate {
        location: String,
        version: usize,
        #[source]
        source: BoxError,
    },
    /// The database was written by a newer build of Quarry.
    #[error(
        "ledger {location} has schema version {found}, this build knows versions up to \
         {supported}: upgrade this node to the cluster's release"
    )]
    SchemaTooNew {
        location: String,
        found: i64,
        supported: usize,
    },
    /// The writer could not be started.
    #[error("cannot start the ledger writer for {location}")]
    Spawn {
        location: String,
        #[source]
        source: std::io::Error,
    },
    /// The batch's transaction failed and was rolled back (or its outcome is unknown because
    /// the connection broke); it was not acknowledged.
    #[error("cannot commit to ledger {location}")]
    Commit {
        location: String,
        /// Shared by every waiter of the failed batch.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A read query failed.
    #[error("cannot read {what} from ledger {location}")]
    Read {
        location: String,
        what: &'static str,
        #[source]
        source: BoxError,
    },
    /// The ledger was closed; nothing more is written.
    #[error("ledger {location} is closed")]
    Closed { location: String },
    /// The writer went away without answering (it panicked).
    #[error("ledger writer for {location} stopped without answering")]
    WriterGone { location: String },
    /// A share's numbers or worker name cannot be stored.
    #[error("invalid share from worker {worker:?}: {problem}")]
    InvalidShare { worker: String, problem: String },
    /// A height beyond the databases' signed 64-bit integers.
    #[error("height {height} is out of range")]
    HeightOutOfRange { height: u64 },
    /// [`Ledger::set_block_status`] for a block that was never recorded.
    #[error("no found block {hash} in the ledger")]
    UnknownBlock { hash: BlockHash },
    /// [`Ledger::append_chain_block`] skipped heights.
    #[error("chain block at height {height} does not extend the stored chain, whose next height is {next}")]
    ChainGap { height: u64, next: u64 },
    /// [`Ledger::append_chain_block`] with other bytes than the block stored at that height.
    #[error(
        "chain block at height {height} differs from the stored one; the chain is append-only"
    )]
    ChainConflict { height: u64 },
}

/// Tuning of the ledger's writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerOptions {
    /// Commands queued for the writer before senders wait; the backpressure bound.
    pub queue_capacity: usize,
    /// Commands committed per transaction at most; bounds one commit's latency.
    pub max_batch: usize,
    /// Share rows older than this (by their `time_ms`) are deleted by the writer; totals are
    /// kept. It checks about once a minute while there is traffic. `Duration::MAX` (anything
    /// beyond `i64::MAX` milliseconds) keeps shares forever.
    pub share_retention: Duration,
}

impl Default for LedgerOptions {
    fn default() -> LedgerOptions {
        LedgerOptions {
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

impl AcceptedShare {
    /// Refuses what no backend can store faithfully: NaN, infinite or negative difficulties
    /// (SQLite turns NaN into NULL) and NUL in the worker name (PostgreSQL text has none).
    fn check(&self) -> Result<(), LedgerError> {
        let invalid = |problem: String| LedgerError::InvalidShare {
            worker: self.worker.to_string(),
            problem,
        };
        for (field, value) in [
            ("difficulty", self.difficulty),
            ("hash_difficulty", self.hash_difficulty),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(invalid(format!("{field} is {value}")));
            }
        }
        if self.worker.contains('\0') {
            return Err(invalid("the worker name contains NUL".into()));
        }
        Ok(())
    }
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
    /// E.g. [`BLOCK_ACCEPTED`], later [`BLOCK_ORPHANED`].
    pub status: String,
    /// The cluster node whose miner found it (`None` on a single-node pool).
    pub node: Option<u8>,
    /// What its coinbase pays each payee (empty when it pays the operator alone). While
    /// the block is accepted, each line's `earned - paid` is added to its payee's owed
    /// balance; orphaning the block takes it back.
    pub payouts: Vec<PayoutLine>,
}

/// One payee's line of a coinbase's payout table (see [`crate::reward::split`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PayoutLine {
    pub payee: String,
    /// Credited difficulty in the window.
    pub credit: f64,
    /// What it earned in this block's window, in sats (before owed balances).
    pub earned: i64,
    /// Owed going in (negative: paid ahead).
    pub owed_before: i64,
    /// Paid in this coinbase.
    pub paid: i64,
    /// Owed afterwards: `earned + owed_before - paid`.
    pub owed_after: i64,
}

/// One found block's line for one payee.
#[derive(Debug, Clone, PartialEq)]
pub struct Earning {
    pub height: u64,
    pub hash: BlockHash,
    pub time_ms: i64,
    /// The block's status (see [`FoundBlock::status`]).
    pub status: String,
    pub line: PayoutLine,
}

/// The newest shares whose credited difficulty fills a PPLNS window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowCredits {
    /// Credited difficulty per worker (the oldest share counted only in part).
    pub workers: Vec<(String, f64)>,
    /// Id of the oldest share in the window: pruning keeps it and all newer ones.
    pub oldest_id: Option<i64>,
}

/// The status of a found block its chain accepted.
pub const BLOCK_ACCEPTED: &str = "accepted";
/// The status of an accepted block that left the best chain.
pub const BLOCK_ORPHANED: &str = "orphaned";

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
    /// The same since the pool's last accepted block.
    pub best_share_since_block: f64,
    /// The latest time of an accepted or rejected share, in Unix milliseconds.
    pub last_share_ms: Option<i64>,
}

/// The writer's counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerStats {
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
