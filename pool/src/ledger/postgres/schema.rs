//! The PostgreSQL ledger's schema and its versioned migrations.
//!
//! The version is the row of `quarry_schema`: the number of entries of [`MIGRATIONS`]
//! applied. Each migration runs in its own transaction with the version bump, under a
//! transaction-scoped advisory lock, so nodes starting together apply each exactly once and
//! a crash leaves the database at a whole version. Migrations are append-only: never edit a
//! shipped one, add the next. A node whose build knows fewer versions than the database
//! refuses to start, before it writes anything.

use tokio_postgres::Client;

use crate::ledger::LedgerError;

/// The migrations in order; entry `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

/// The advisory lock key migrations hold (`quarry` in ASCII).
const MIGRATION_LOCK: i64 = 0x7175_6172_7279;

/// Version 1: the single-node tables of the SQLite ledger, in PostgreSQL types.
///
/// Shares reference their worker by id to keep the hot table narrow; block hashes are their
/// 32 bytes in consensus (internal) order.
const V1: &str = "
CREATE TABLE workers (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    accepted BIGINT NOT NULL DEFAULT 0,
    accepted_difficulty DOUBLE PRECISION NOT NULL DEFAULT 0,
    rejected_stale BIGINT NOT NULL DEFAULT 0,
    rejected_duplicate BIGINT NOT NULL DEFAULT 0,
    rejected_low_difficulty BIGINT NOT NULL DEFAULT 0,
    rejected_malformed BIGINT NOT NULL DEFAULT 0,
    rejected_unauthorized BIGINT NOT NULL DEFAULT 0,
    best_share_difficulty DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_share_ms BIGINT
);

CREATE TABLE shares (
    id BIGSERIAL PRIMARY KEY,
    worker_id BIGINT NOT NULL REFERENCES workers (id),
    time_ms BIGINT NOT NULL,
    difficulty DOUBLE PRECISION NOT NULL,
    hash_difficulty DOUBLE PRECISION NOT NULL
);

CREATE INDEX shares_time_ms ON shares (time_ms);

CREATE TABLE blocks (
    id BIGSERIAL PRIMARY KEY,
    hash BYTEA NOT NULL UNIQUE,
    height BIGINT NOT NULL,
    worker TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    raw BYTEA NOT NULL,
    status TEXT NOT NULL
);

CREATE INDEX blocks_time_ms ON blocks (time_ms);

CREATE TABLE chain (
    height BIGINT PRIMARY KEY,
    raw BYTEA NOT NULL
);

CREATE TABLE hashrate_history (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    width_ms BIGINT NOT NULL,
    start_ms BIGINT NOT NULL,
    difficulty DOUBLE PRECISION NOT NULL,
    shares BIGINT NOT NULL,
    PRIMARY KEY (scope, name, width_ms, start_ms)
);

CREATE INDEX hashrate_history_age ON hashrate_history (width_ms, start_ms);
";

/// Version 2: the cluster. Node-id leases with each node's heartbeat, bans every node
/// enforces, the settings every node must share, and which node found each block.
const V2: &str = "
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY CHECK (id BETWEEN 0 AND 255),
    holder TEXT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    version TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    job_height BIGINT,
    job_id TEXT,
    sessions BIGINT NOT NULL DEFAULT 0,
    hashrate DOUBLE PRECISION NOT NULL DEFAULT 0
);

CREATE TABLE cluster_settings (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    settings JSONB NOT NULL,
    set_by INTEGER NOT NULL,
    set_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE bans (
    address TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    node INTEGER NOT NULL,
    changed_ms BIGINT NOT NULL
);

ALTER TABLE blocks ADD COLUMN node INTEGER;
";

/// Version 3: each node writes its own minutes of hashrate history (reads sum them).
const V3: &str = "
ALTER TABLE hashrate_history ADD COLUMN node INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hashrate_history DROP CONSTRAINT hashrate_history_pkey;
ALTER TABLE hashrate_history ADD PRIMARY KEY (scope, name, width_ms, start_ms, node);
";

/// Version 4: each worker's best share since the pool's last block. The pool's block
/// epoch counts its accepted blocks; a worker's best counts only in the epoch it was set.
/// Batches read the epoch without locking it, so a block never waits on worker rows.
const V4: &str = "
CREATE TABLE pool_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    block_epoch BIGINT NOT NULL
);
INSERT INTO pool_state (id, block_epoch) VALUES (0, 0);
ALTER TABLE workers ADD COLUMN best_share_since_block DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN best_share_epoch BIGINT NOT NULL DEFAULT 0;
";

/// Version 5: PPLNS in the coinbase: each found block's payout table, and every payee's
/// owed balance in sats (the sum of `earned - paid` over its accepted blocks).
const V5: &str = "
CREATE TABLE block_payouts (
    block_hash BYTEA NOT NULL,
    payee TEXT NOT NULL,
    credit DOUBLE PRECISION NOT NULL,
    earned BIGINT NOT NULL,
    owed_before BIGINT NOT NULL,
    paid BIGINT NOT NULL,
    owed_after BIGINT NOT NULL,
    PRIMARY KEY (block_hash, payee)
);
CREATE INDEX block_payouts_payee ON block_payouts (payee);
CREATE TABLE owed (
    payee TEXT PRIMARY KEY,
    sats BIGINT NOT NULL
);
";

/// Version 6: the addresses the operator bound to accounts whose names are not
/// addresses, which their payouts go to.
const V6: &str = "
CREATE TABLE account_addresses (
    account TEXT PRIMARY KEY,
    address TEXT NOT NULL
);
";

/// Brings the database up to the newest schema version.
///
/// # Errors
///
/// [`LedgerError::SchemaTooNew`] if a newer build migrated it, [`LedgerError::Open`] if the
/// version cannot be read, [`LedgerError::Migrate`] if a migration fails.
pub(super) async fn migrate(client: &mut Client, location: &str) -> Result<(), LedgerError> {
    let open_error = |source: tokio_postgres::Error| LedgerError::Open {
        location: location.into(),
        operation: "read the schema version",
        source: source.into(),
    };
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK}); \
             CREATE TABLE IF NOT EXISTS quarry_schema (version BIGINT NOT NULL); \
             INSERT INTO quarry_schema (version) SELECT 0 \
             WHERE NOT EXISTS (SELECT 1 FROM quarry_schema); COMMIT"
        ))
        .await
        .map_err(open_error)?;
    loop {
        let tx = client.transaction().await.map_err(open_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(open_error)?;
        let found: i64 = tx
            .query_one("SELECT version FROM quarry_schema", &[])
            .await
            .map_err(open_error)?
            .get(0);
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
        let migrate_error = |source: tokio_postgres::Error| LedgerError::Migrate {
            location: location.into(),
            version,
            source: source.into(),
        };
        tx.batch_execute(sql).await.map_err(migrate_error)?;
        tx.execute(
            "UPDATE quarry_schema SET version = $1",
            &[&(version as i64)],
        )
        .await
        .map_err(migrate_error)?;
        tx.commit().await.map_err(migrate_error)?;
        tracing::info!(ledger = location, version, "migrated ledger schema");
    }
}
