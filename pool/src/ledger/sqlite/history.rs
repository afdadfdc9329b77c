//! The hashrate history table in SQLite.

use rusqlite::{params, Transaction};

use crate::ledger::history::{cutoffs, Bucket, HistoryRow, Scope, HOUR_MS, MINUTE_MS};

/// Minute rows are written whole: writing a minute again replaces it.
const UPSERT: &str =
    "INSERT INTO hashrate_history (scope, name, width_ms, start_ms, difficulty, shares) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (scope, name, width_ms, start_ms) \
     DO UPDATE SET difficulty = excluded.difficulty, shares = excluded.shares";
/// Adds old minutes into their hours (adding, so an hour rolled up in parts is whole).
const ROLL_UP: &str = "INSERT INTO hashrate_history (scope, name, width_ms, start_ms, difficulty, shares) \
     SELECT scope, name, ?2, (start_ms / ?2) * ?2, sum(difficulty), sum(shares) \
     FROM hashrate_history WHERE width_ms = ?3 AND start_ms < ?1 GROUP BY scope, name, start_ms / ?2 \
     ON CONFLICT (scope, name, width_ms, start_ms) \
     DO UPDATE SET difficulty = difficulty + excluded.difficulty, shares = shares + excluded.shares";
const DELETE_BEFORE: &str = "DELETE FROM hashrate_history WHERE width_ms = ?2 AND start_ms < ?1";
const QUERY: &str = "SELECT (start_ms / ?4) * ?4 AS t, sum(difficulty), sum(shares) \
     FROM hashrate_history WHERE scope = ?1 AND name = ?2 AND start_ms >= ?3 AND start_ms < ?5 \
     GROUP BY t ORDER BY t";

/// Writes `rows`, then rolls up and prunes what `now_ms` makes old.
pub(super) fn apply(
    tx: &Transaction<'_>,
    rows: &[HistoryRow],
    now_ms: i64,
) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(UPSERT)?;
    for row in rows {
        upsert.execute(params![
            row.scope.as_str(),
            row.name,
            MINUTE_MS,
            row.start_ms,
            row.difficulty,
            i64::try_from(row.shares).unwrap_or(i64::MAX)
        ])?;
    }
    let (cutoff, hours_cutoff) = cutoffs(now_ms);
    tx.prepare_cached(ROLL_UP)?
        .execute(params![cutoff, HOUR_MS, MINUTE_MS])?;
    tx.prepare_cached(DELETE_BEFORE)?
        .execute(params![cutoff, MINUTE_MS])?;
    tx.prepare_cached(DELETE_BEFORE)?
        .execute(params![hours_cutoff, HOUR_MS])?;
    Ok(())
}

/// Buckets of `step_ms` in `[since_ms, until_ms)`, oldest first.
pub(super) fn query(
    conn: &rusqlite::Connection,
    scope: Scope,
    name: &str,
    since_ms: i64,
    until_ms: i64,
    step_ms: i64,
) -> rusqlite::Result<Vec<Bucket>> {
    let mut statement = conn.prepare_cached(QUERY)?;
    let rows = statement.query_map(
        params![scope.as_str(), name, since_ms, step_ms.max(1), until_ms],
        |row| {
            let shares: i64 = row.get(2)?;
            Ok((row.get(0)?, row.get(1)?, u64::try_from(shares).unwrap_or(0)))
        },
    )?;
    rows.collect()
}
