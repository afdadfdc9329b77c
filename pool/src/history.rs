//! Hashrate history: every minute, each worker's, account's and the pool's
//! accepted work of the minute that just ended goes from the accounting's
//! in-memory window to the ledger ([`crate::ledger::history`] keeps 7 days of
//! minutes, then hours). Reads join the stored minutes with the last few minutes
//! still in memory, so charts are live.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quarry_protocol::target::hashrate;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::accounting::{account_of, now_ms, rfc3339, Accounting};
use crate::ledger::history::{HistoryRow, Scope, MINUTE_MS};
use crate::ledger::{Ledger, LedgerError};

/// How long after a minute ends it is written: shares are counted when their
/// commit is acknowledged, a moment after they arrive.
const GRACE_MS: i64 = 15_000;
/// Minutes read from memory rather than the store (the store has them too, or
/// is about to); must stay well inside the accounting's one-hour window.
const LIVE_MINUTES: i64 = 5;

/// How often the writer flushes.
const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The start of the minute after the newest one every node has written by `now_ms`
/// (each writes a minute within [`GRACE_MS`] plus one flush after it ends): in a
/// cluster, the stored rows before it are complete, and charts and hashrates read the
/// other nodes' work from them.
pub fn written_through(now_ms: i64) -> i64 {
    minute_of(now_ms - MINUTE_MS - GRACE_MS - FLUSH_EVERY.as_millis() as i64) + MINUTE_MS
}

/// Writes finished minutes to the store.
pub struct HistoryWriter {
    accounting: Arc<Accounting>,
    ledger: Arc<dyn Ledger>,
    /// Start of the last minute written.
    written_ms: i64,
}

/// The minute containing `ms`.
fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

impl HistoryWriter {
    /// A writer that starts with the minutes still in memory (the last hour,
    /// restored from stored shares after a restart), as of `now_ms`.
    pub fn new(accounting: Arc<Accounting>, ledger: Arc<dyn Ledger>, now_ms: i64) -> HistoryWriter {
        HistoryWriter {
            accounting,
            ledger,
            written_ms: minute_of(now_ms) - 60 * MINUTE_MS,
        }
    }

    /// Flushes every ten seconds until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(err) = self.flush(now_ms()).await {
                        tracing::warn!(%err, "hashrate history not written; retrying");
                    }
                }
            }
        }
    }

    /// Writes every minute that ended at least [`GRACE_MS`] before `now_ms`.
    ///
    /// # Errors
    /// The store refused the write; the minutes are written on the next call.
    pub async fn flush(&mut self, now_ms: i64) -> Result<(), LedgerError> {
        let mut rows = Vec::new();
        let mut minute = self.written_ms + MINUTE_MS;
        while minute + MINUTE_MS + GRACE_MS <= now_ms {
            rows.extend(minute_rows(&self.accounting, now_ms, minute));
            minute += MINUTE_MS;
        }
        let last = minute - MINUTE_MS;
        if last > self.written_ms {
            self.ledger.record_history(rows, now_ms).await?;
            self.written_ms = last;
        }
        Ok(())
    }
}

/// The rows of one minute: every worker and account with shares in it, and the pool.
pub fn minute_rows(accounting: &Accounting, now_ms: i64, minute: i64) -> Vec<HistoryRow> {
    let mut accounts: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut rows = Vec::new();
    for stats in accounting.all() {
        let (difficulty, shares) = stats.work_in(now_ms, minute, MINUTE_MS);
        if shares == 0 {
            continue;
        }
        let account = accounts
            .entry(account_of(&stats.name).to_owned())
            .or_default();
        account.0 += difficulty;
        account.1 += shares;
        rows.push(HistoryRow {
            scope: Scope::Worker,
            name: stats.name.to_string(),
            start_ms: minute,
            difficulty,
            shares,
        });
    }
    rows.extend(
        accounts
            .into_iter()
            .map(|(name, (difficulty, shares))| HistoryRow {
                scope: Scope::Account,
                name,
                start_ms: minute,
                difficulty,
                shares,
            }),
    );
    let (difficulty, shares) = accounting.pool_work_in(now_ms, minute, MINUTE_MS);
    rows.push(HistoryRow {
        scope: Scope::Pool,
        name: String::new(),
        start_ms: minute,
        difficulty,
        shares,
    });
    rows
}

/// A range the API serves, and its bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub span_ms: i64,
    pub step_ms: i64,
}

impl Range {
    /// `1h`, `24h`, `7d` or `30d`.
    pub fn parse(text: &str) -> Option<Range> {
        let (span_ms, step_ms) = match text {
            "1h" => (3_600_000, MINUTE_MS),
            "24h" => (86_400_000, 5 * MINUTE_MS),
            "7d" => (7 * 86_400_000, 3_600_000),
            "30d" => (30 * 86_400_000, 6 * 3_600_000),
            _ => return None,
        };
        Some(Range { span_ms, step_ms })
    }
}

/// One point of a hashrate chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Start of the bucket, Unix milliseconds and RFC 3339.
    pub t: i64,
    pub time: String,
    /// Hashes per second over `seconds`.
    pub hashrate: f64,
    /// What the hashrate averages over: the bucket, less any part before the
    /// worker, account or pool was first seen in this run and any part still
    /// to come (the current bucket is partial). The same rule as the
    /// accounting's 1m/10m/1h hashrates, so chart and cards agree.
    pub seconds: f64,
    pub shares: u64,
}

/// The history of `name` (a worker, an account, or the pool when empty) over
/// `range` as of `now_ms`: stored buckets, then the live minutes from memory. In a
/// cluster the stored rows are read up to [`written_through`] (they hold the other
/// nodes' work), and only the minutes since from memory.
///
/// # Errors
/// The ledger cannot be read.
pub async fn read(
    accounting: &Accounting,
    ledger: &dyn Ledger,
    scope: Scope,
    name: &str,
    range: Range,
    now_ms: i64,
) -> Result<Vec<Point>, LedgerError> {
    let live_from = match accounting.others_work() {
        Some(_) => written_through(now_ms),
        None => minute_of(now_ms) - (LIVE_MINUTES - 1) * MINUTE_MS,
    };
    let since = (now_ms - range.span_ms).div_euclid(range.step_ms) * range.step_ms;
    let mut buckets: BTreeMap<i64, (f64, u64)> = ledger
        .history(scope, name, since, live_from, range.step_ms)
        .await?
        .into_iter()
        .map(|(t, difficulty, shares)| (t, (difficulty, shares)))
        .collect();
    let members: Vec<_> = accounting
        .all()
        .into_iter()
        .filter(|w| match scope {
            Scope::Pool => false,
            Scope::Worker => *w.name == *name,
            Scope::Account => account_of(&w.name) == name,
        })
        .collect();
    let observed_since = match scope {
        Scope::Pool => accounting.observed_since(),
        Scope::Worker | Scope::Account => members
            .iter()
            .map(|w| w.first_seen_ms())
            .min()
            .unwrap_or(i64::MIN),
    };
    for minute in (live_from..=now_ms).step_by(MINUTE_MS as usize) {
        let (difficulty, shares) = match scope {
            Scope::Pool => accounting.pool_work_in(now_ms, minute, MINUTE_MS),
            Scope::Worker | Scope::Account => members
                .iter()
                .map(|w| w.work_in(now_ms, minute, MINUTE_MS))
                .fold((0.0, 0), |(d, s), (d2, s2)| (d + d2, s + s2)),
        };
        let bucket = buckets
            .entry(minute.div_euclid(range.step_ms) * range.step_ms)
            .or_default();
        bucket.0 += difficulty;
        bucket.1 += shares;
    }
    Ok(buckets
        .into_iter()
        .map(|(t, (difficulty, shares))| {
            let end = (t + range.step_ms).min(now_ms);
            // A bucket that ended before then is an earlier run's, whole.
            let start = if observed_since < end {
                t.max(observed_since)
            } else {
                t
            };
            let seconds = (end - start).max(0) as f64 / 1000.0;
            Point {
                t,
                time: rfc3339(t),
                hashrate: hashrate(difficulty, seconds),
                seconds,
                shares,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Database, LedgerOptions};

    async fn ledger(dir: &tempfile::TempDir) -> Arc<dyn Ledger> {
        let database = Database::Sqlite {
            dir: dir.path().to_path_buf(),
        };
        crate::ledger::open(&database, LedgerOptions::default())
            .await
            .unwrap()
    }

    /// Shares at known times (an injected clock, no sleeping): each minute's
    /// bucket holds exactly its shares, across workers, accounts and the pool,
    /// and a read joins stored minutes with live ones.
    #[tokio::test]
    async fn minutes_are_bucketed_stored_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = ledger(&dir).await;
        let accounting = Arc::new(Accounting::default());
        let t0 = minute_of(now_ms()) - 30 * MINUTE_MS;
        let a = accounting.worker("gina.a");
        let b = accounting.worker("gina.b");
        let c = accounting.worker("hank");
        // Minute 0: a 2 shares (diff 1), b 1 share (diff 4). Minute 1: c 3 shares (diff 2).
        accounting.record_accept(&a, 1.0, 1.0, t0 + 1_000);
        accounting.record_accept(&a, 1.0, 1.0, t0 + 59_999);
        accounting.record_accept(&b, 4.0, 4.0, t0 + 30_000);
        for s in 0..3 {
            accounting.record_accept(&c, 2.0, 2.0, t0 + MINUTE_MS + s * 10_000);
        }
        let mut writer = HistoryWriter::new(accounting.clone(), store.clone(), t0);
        // Minute 1 is not written until its grace has passed.
        writer
            .flush(t0 + 2 * MINUTE_MS + GRACE_MS - 1)
            .await
            .unwrap();
        let range = Range::parse("1h").unwrap();
        let now = t0 + 20 * MINUTE_MS;
        let stored = store
            .history(Scope::Pool, "", t0, now, MINUTE_MS)
            .await
            .unwrap();
        assert_eq!(stored, vec![(t0, 6.0, 3)]);
        writer.flush(now).await.unwrap();
        assert_eq!(
            store
                .history(Scope::Account, "gina", t0, now, MINUTE_MS)
                .await
                .unwrap(),
            vec![(t0, 6.0, 3)]
        );
        assert_eq!(
            store
                .history(Scope::Worker, "hank", t0, now, MINUTE_MS)
                .await
                .unwrap(),
            vec![(t0 + MINUTE_MS, 6.0, 3)]
        );
        // Flushing again writes nothing new and changes nothing.
        writer.flush(now).await.unwrap();
        let pool = read(&accounting, &*store, Scope::Pool, "", range, now)
            .await
            .unwrap();
        let minute0 = pool.iter().find(|p| p.t == t0).unwrap();
        assert_eq!(minute0.shares, 3);
        assert_eq!(minute0.hashrate, hashrate(6.0, 60.0));
        assert_eq!(pool.iter().map(|p| p.shares).sum::<u64>(), 6);
        // A share now shows at once, from memory.
        accounting.record_accept(&a, 8.0, 8.0, now - 1_000);
        let worker = read(&accounting, &*store, Scope::Worker, "gina.a", range, now)
            .await
            .unwrap();
        assert_eq!(worker.iter().map(|p| p.shares).sum::<u64>(), 3);
        let live = worker.iter().find(|p| p.t == minute_of(now - 1_000));
        assert_eq!(live.map(|p| p.shares), Some(1));
    }

    /// A young pool's (or worker's) chart averages each bucket over the part
    /// it was observed, as the cards do: the chart's points, weighted by what
    /// they cover, give exactly the card's number.
    #[tokio::test]
    async fn chart_and_cards_agree_while_young() {
        let dir = tempfile::tempdir().unwrap();
        let store = ledger(&dir).await;
        let accounting = Accounting::restore(Vec::new(), Vec::new());
        let started = accounting.observed_since();
        let worker = accounting.worker("jane.rig");
        let mut shares = [(1_000, 2.0), (25_000, 3.0), (70_000, 5.0)]
            .into_iter()
            .peekable();
        let range = Range::parse("1h").unwrap();
        for now in [started + 30_000, started + 90_000, started + 200_000] {
            // The shares up to `now` (the windows hold no future).
            while let Some((at, difficulty)) = shares.next_if(|(at, _)| started + at <= now) {
                accounting.record_accept(&worker, difficulty, difficulty, started + at);
            }
            let card = accounting.pool_hashrate(now, 600_000);
            for (scope, name, since) in [
                (Scope::Pool, "", started),
                (Scope::Worker, "jane.rig", worker.first_seen_ms()),
            ] {
                let points = read(&accounting, &*store, scope, name, range, now)
                    .await
                    .unwrap();
                // The buckets since the scope was first seen (those before are empty).
                let seen: Vec<&Point> = points.iter().filter(|p| p.t + MINUTE_MS > since).collect();
                let covered: f64 = seen.iter().map(|p| p.seconds).sum();
                let work: f64 = seen.iter().map(|p| p.hashrate * p.seconds).sum();
                assert!((covered - (now - since) as f64 / 1000.0).abs() < 1e-9);
                let chart = work / covered;
                if scope == Scope::Pool {
                    assert!((chart - card).abs() / card < 1e-9, "{chart} vs {card}");
                }
                let last = seen.last().unwrap();
                assert!(last.seconds < 60.0, "the current minute is partial");
            }
        }
        store.close().await.unwrap();
    }
}
