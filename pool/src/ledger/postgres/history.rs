//! The hashrate history table in PostgreSQL.

use tokio_postgres::{Client, Transaction};

use crate::ledger::history::{
    cutoffs, Bucket, HistoryRow, RecentWork, Scope, SpanWork, HOUR_MS, MINUTE_MS, SPANS_MS,
};

/// Minute rows are written whole: writing a minute again replaces it.
const UPSERT: &str = "INSERT INTO hashrate_history \
     (scope, name, width_ms, start_ms, difficulty, shares, node) \
     SELECT *, $7::int4 FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], \
     $5::float8[], $6::int8[]) \
     ON CONFLICT (scope, name, width_ms, start_ms, node) \
     DO UPDATE SET difficulty = excluded.difficulty, shares = excluded.shares";
/// Adds old minutes into their hours (adding, so an hour rolled up in parts is whole).
const ROLL_UP: &str = "INSERT INTO hashrate_history \
     (scope, name, width_ms, start_ms, difficulty, shares, node) \
     SELECT scope, name, $2::int8, (start_ms / $2::int8) * $2::int8, sum(difficulty), \
     sum(shares), node FROM hashrate_history WHERE width_ms = $3 AND start_ms < $1 \
     GROUP BY scope, name, (start_ms / $2::int8), node \
     ON CONFLICT (scope, name, width_ms, start_ms, node) DO UPDATE SET \
     difficulty = hashrate_history.difficulty + excluded.difficulty, \
     shares = hashrate_history.shares + excluded.shares";
const DELETE_BEFORE: &str = "DELETE FROM hashrate_history WHERE width_ms = $2 AND start_ms < $1";
const QUERY: &str = "SELECT (start_ms / $4::int8) * $4::int8 AS t, sum(difficulty), \
     sum(shares)::int8 FROM hashrate_history \
     WHERE scope = $1 AND name = $2 AND start_ms >= $3 AND start_ms < $5 \
     GROUP BY t ORDER BY t";

/// The other nodes' minute rows of the hour before `$1`, summed per worker (and for the
/// pool) over the last minute, ten minutes and hour.
const OTHERS: &str = "SELECT scope, name, \
     coalesce(sum(difficulty) FILTER (WHERE start_ms >= $1::int8 - $3::int8), 0), \
     coalesce(sum(difficulty) FILTER (WHERE start_ms >= $1::int8 - $4::int8), 0), \
     sum(difficulty), min(start_ms) FROM hashrate_history \
     WHERE width_ms = $6 AND start_ms >= $1::int8 - $5::int8 AND start_ms < $1 AND node <> $2 \
     AND scope IN ('worker', 'pool') GROUP BY scope, name";

/// Writes `node`'s `rows`, then rolls up and prunes what `now_ms` makes old.
pub(super) async fn apply(
    tx: &Transaction<'_>,
    rows: &[HistoryRow],
    now_ms: i64,
    node: i32,
) -> Result<(), tokio_postgres::Error> {
    if !rows.is_empty() {
        let scopes: Vec<&str> = rows.iter().map(|row| row.scope.as_str()).collect();
        let names: Vec<&str> = rows.iter().map(|row| row.name.as_str()).collect();
        let widths = vec![MINUTE_MS; rows.len()];
        let starts: Vec<i64> = rows.iter().map(|row| row.start_ms).collect();
        let difficulties: Vec<f64> = rows.iter().map(|row| row.difficulty).collect();
        let shares: Vec<i64> = rows
            .iter()
            .map(|row| i64::try_from(row.shares).unwrap_or(i64::MAX))
            .collect();
        tx.execute(
            UPSERT,
            &[
                &scopes,
                &names,
                &widths,
                &starts,
                &difficulties,
                &shares,
                &node,
            ],
        )
        .await?;
    }
    let (cutoff, hours_cutoff) = cutoffs(now_ms);
    tx.execute(ROLL_UP, &[&cutoff, &HOUR_MS, &MINUTE_MS])
        .await?;
    tx.execute(DELETE_BEFORE, &[&cutoff, &MINUTE_MS]).await?;
    tx.execute(DELETE_BEFORE, &[&hours_cutoff, &HOUR_MS])
        .await?;
    Ok(())
}

/// Buckets of `step_ms` in `[since_ms, until_ms)`, oldest first.
pub(super) async fn query(
    client: &Client,
    scope: Scope,
    name: &str,
    since_ms: i64,
    until_ms: i64,
    step_ms: i64,
) -> Result<Vec<Bucket>, tokio_postgres::Error> {
    let rows = client
        .query(
            QUERY,
            &[
                &scope.as_str(),
                &name,
                &since_ms,
                &step_ms.max(1),
                &until_ms,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let shares: i64 = row.get(2);
            (row.get(0), row.get(1), u64::try_from(shares).unwrap_or(0))
        })
        .collect())
}

/// The work of every node but `node` in the hour of minute rows before `until_ms`.
pub(super) async fn others(
    client: &Client,
    node: i32,
    until_ms: i64,
) -> Result<RecentWork, tokio_postgres::Error> {
    let [minute, ten, hour] = SPANS_MS;
    let rows = client
        .query(
            OTHERS,
            &[&until_ms, &node, &minute, &ten, &hour, &MINUTE_MS],
        )
        .await?;
    let mut work = RecentWork {
        until_ms,
        ..RecentWork::default()
    };
    for row in rows {
        let spans = SpanWork {
            difficulty: [row.get(2), row.get(3), row.get(4)],
            first_ms: row.get(5),
        };
        match row.get::<_, &str>(0) {
            "pool" => work.pool = spans,
            _ => {
                work.workers.insert(row.get(1), spans);
            }
        }
    }
    Ok(work)
}
