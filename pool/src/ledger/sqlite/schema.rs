//! The SQLite ledger's schema and its versioned migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version`: the number of entries of
//! [`MIGRATIONS`] applied so far. Each migration runs in its own immediate transaction
//! together with the `user_version` bump, so a crash leaves the database at a whole version.
//! Migrations are append-only: never edit a shipped one, add the next.

use rusqlite::{Connection, TransactionBehavior};

use crate::ledger::LedgerError;

/// The migrations in order; entry `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

/// Version 1: workers with their totals, accepted shares, found blocks, the embedded chain.
///
/// Shares reference their worker by id rather than name to keep the hot table narrow.
/// Block hashes are stored as their 32 bytes in consensus (internal) order.
const V1: &str = "
CREATE TABLE workers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    accepted INTEGER NOT NULL DEFAULT 0,
    accepted_difficulty REAL NOT NULL DEFAULT 0,
    rejected_stale INTEGER NOT NULL DEFAULT 0,
    rejected_duplicate INTEGER NOT NULL DEFAULT 0,
    rejected_low_difficulty INTEGER NOT NULL DEFAULT 0,
    rejected_malformed INTEGER NOT NULL DEFAULT 0,
    rejected_unauthorized INTEGER NOT NULL DEFAULT 0,
    best_share_difficulty REAL NOT NULL DEFAULT 0,
    last_share_ms INTEGER
) STRICT;

CREATE TABLE shares (
    id INTEGER PRIMARY KEY,
    worker_id INTEGER NOT NULL REFERENCES workers (id),
    time_ms INTEGER NOT NULL,
    difficulty REAL NOT NULL,
    hash_difficulty REAL NOT NULL
) STRICT;

CREATE INDEX shares_time_ms ON shares (time_ms);

CREATE TABLE blocks (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    height INTEGER NOT NULL,
    worker TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    raw BLOB NOT NULL,
    status TEXT NOT NULL
) STRICT;

CREATE INDEX blocks_time_ms ON blocks (time_ms);

CREATE TABLE chain (
    height INTEGER PRIMARY KEY,
    raw BLOB NOT NULL
) STRICT;
";

/// Version 2: hashrate history, accepted work per minute (hour, once old) of every
/// worker, account and the pool.
const V2: &str = "
CREATE TABLE hashrate_history (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    width_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    difficulty REAL NOT NULL,
    shares INTEGER NOT NULL,
    PRIMARY KEY (scope, name, width_ms, start_ms)
) STRICT, WITHOUT ROWID;

CREATE INDEX hashrate_history_age ON hashrate_history (width_ms, start_ms);
";

/// Version 3: which cluster node found a block (always NULL here; kept so that both
/// backends store the same block).
const V3: &str = "ALTER TABLE blocks ADD COLUMN node INTEGER;";

/// Version 4: each worker's best share since the pool's last block. The pool's block
/// epoch counts its accepted blocks; a worker's best counts only in the epoch it was set.
const V4: &str = "
CREATE TABLE pool_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    block_epoch INTEGER NOT NULL
) STRICT;
INSERT INTO pool_state (id, block_epoch) VALUES (0, 0);
ALTER TABLE workers ADD COLUMN best_share_since_block REAL NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN best_share_epoch INTEGER NOT NULL DEFAULT 0;
";

/// Version 5: PPLNS in the coinbase: each found block's payout table, and every payee's
/// owed balance in sats (the sum of `earned - paid` over its accepted blocks).
const V5: &str = "
CREATE TABLE block_payouts (
    block_hash BLOB NOT NULL,
    payee TEXT NOT NULL,
    credit REAL NOT NULL,
    earned INTEGER NOT NULL,
    owed_before INTEGER NOT NULL,
    paid INTEGER NOT NULL,
    owed_after INTEGER NOT NULL,
    PRIMARY KEY (block_hash, payee)
) STRICT;
CREATE INDEX block_payouts_payee ON block_payouts (payee);
CREATE TABLE owed (
    payee TEXT PRIMARY KEY,
    sats INTEGER NOT NULL
) STRICT;
";

/// Version 6: the addresses the operator bound to accounts whose names are not
/// addresses, which their payouts go to.
const V6: &str = "
CREATE TABLE account_addresses (
    account TEXT PRIMARY KEY,
    address TEXT NOT NULL
) STRICT;
";

/// Brings the database at `location` up to the newest schema version.
///
/// The version is read inside each migration's immediate transaction, so two processes
/// migrating the same file at once apply every migration exactly once.
///
/// # Errors
///
/// [`LedgerError::SchemaTooNew`] if the file was written by a newer build,
/// [`LedgerError::Open`] if the version cannot be read, and [`LedgerError::Migrate`] if a
/// migration fails.
pub(super) fn migrate(conn: &mut Connection, location: &str) -> Result<(), LedgerError> {
    loop {
        let found = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .and_then(|tx| {
                let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
                Ok((tx, found))
            });
        let (tx, found) = found.map_err(|source| LedgerError::Open {
            location: location.into(),
            operation: "read the schema version",
            source: source.into(),
        })?;
        let current = usize::try_from(found)
            .ok()
            .filter(|&version| version <= MIGRATIONS.len())
            .ok_or_else(|| LedgerError::SchemaTooNew {
                location: location.into(),
                found,
                supported: MIGRATIONS.len(),
            })?;
        let Some(sql) = MIGRATIONS.get(current) else {
            return Ok(());
        };
        let version = current + 1;
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version as i64))
            .and_then(|()| tx.commit())
            .map_err(|source| migrate_error(location, version, source))?;
        tracing::info!(ledger = location, version, "migrated ledger schema");
    }
}

fn migrate_error(location: &str, version: usize, source: rusqlite::Error) -> LedgerError {
    LedgerError::Migrate {
        location: location.into(),
        version,
        source: source.into(),
    }
}
