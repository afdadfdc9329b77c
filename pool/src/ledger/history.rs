//! Hashrate history in the ledger: accepted work per minute for every worker,
//! account and the pool, rolled up into hours after [`MINUTES_KEPT_MS`] and
//! deleted after [`HOURS_KEPT_MS`]. Each backend keeps it in a table of its own SQL.

/// How long minute buckets are kept before they are rolled up into hours: 7 days.
pub const MINUTES_KEPT_MS: i64 = 7 * 24 * HOUR_MS;
/// How long hour buckets are kept: 400 days.
pub const HOURS_KEPT_MS: i64 = 400 * 24 * HOUR_MS;
/// One minute bucket.
pub const MINUTE_MS: i64 = 60_000;
pub(super) const HOUR_MS: i64 = 3_600_000;

/// Whose history a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Worker,
    Account,
    Pool,
}

impl Scope {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Scope::Worker => "worker",
            Scope::Account => "account",
            Scope::Pool => "pool",
        }
    }
}

/// One minute of accepted work.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub scope: Scope,
    /// The worker or account; empty for the pool.
    pub name: String,
    pub start_ms: i64,
    /// Sum of the difficulty of the shares accepted in the minute.
    pub difficulty: f64,
    pub shares: u64,
}

/// A bucket as read back: start, accepted difficulty, shares.
pub type Bucket = (i64, f64, u64);

/// The ages, as of `now_ms`, before which minute buckets are rolled up into hours and
/// hour buckets deleted. Whole hours only, so a rolled-up hour never gets minutes later.
pub(super) fn cutoffs(now_ms: i64) -> (i64, i64) {
    (
        (now_ms - MINUTES_KEPT_MS).div_euclid(HOUR_MS) * HOUR_MS,
        now_ms - HOURS_KEPT_MS,
    )
}

/// What the spans of [`RecentWork`] cover: the last minute, ten minutes and hour.
pub const SPANS_MS: [i64; 3] = [MINUTE_MS, 10 * MINUTE_MS, HOUR_MS];

/// Accepted work over each of [`SPANS_MS`] before some minute, and the start of the
/// oldest minute with work in the hour (what a young worker's rate averages over).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpanWork {
    pub difficulty: [f64; 3],
    pub first_ms: i64,
}

/// The other cluster nodes' accepted work, from their stored minute rows before
/// `until_ms`: per worker, and for the pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentWork {
    pub until_ms: i64,
    pub workers: std::collections::HashMap<String, SpanWork>,
    pub pool: SpanWork,
}
