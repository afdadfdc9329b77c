//! Per-worker and pool-wide share accounting in memory, without a global lock:
//! counters are atomics, each worker's hashrate window has its own small lock.
//!
//! The durable copy lives in the ledger; this is what the API reads, rebuilt from
//! the ledger on start.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use quarry_protocol::target::hashrate;

use crate::atomic::AtomicF64;
use crate::ledger::history::{RecentWork, SpanWork, MINUTE_MS, SPANS_MS};
use crate::ledger::{RejectKind, WorkerTotals};
use crate::watch::detect::{Evidence, RateEvidence, RECENT_SECONDS};
use crate::watch::Status;

/// Width of one hashrate bucket.
const BUCKET_MS: i64 = 10_000;
/// Buckets kept: one hour.
const BUCKETS: usize = 360;

/// Accepted difficulty and shares per bucket (two arrays: no padding).
#[derive(Debug)]
struct Buckets {
    work: [f64; BUCKETS],
    shares: [u32; BUCKETS],
}

/// Accepted difficulty and shares per 10-second bucket over the last hour.
#[derive(Debug)]
struct Window {
    /// Allocated with the first share: most of a big pool's workers at any
    /// moment are idle connections that have not submitted yet.
    buckets: Option<Box<Buckets>>,
    /// Index (time / BUCKET_MS) of the newest bucket written.
    newest: i64,
}

impl Window {
    fn new() -> Window {
        Window {
            buckets: None,
            newest: 0,
        }
    }

    fn advance(&mut self, index: i64) {
        if index <= self.newest {
            return;
        }
        if let Some(buckets) = &mut self.buckets {
            let gap = (index - self.newest).min(BUCKETS as i64);
            for i in 1..=gap {
                let slot = ((self.newest + i) as usize) % BUCKETS;
                buckets.work[slot] = 0.0;
                buckets.shares[slot] = 0;
            }
        }
        self.newest = index;
    }

    fn add(&mut self, time_ms: i64, difficulty: f64) {
        let index = time_ms.div_euclid(BUCKET_MS);
        self.advance(index);
        if self.newest - index < BUCKETS as i64 {
            let buckets = self.buckets.get_or_insert_with(|| {
                Box::new(Buckets {
                    work: [0.0; BUCKETS],
                    shares: [0; BUCKETS],
                })
            });
            let slot = (index as usize) % BUCKETS;
            buckets.work[slot] += difficulty;
            buckets.shares[slot] += 1;
        }
    }

    /// Accepted difficulty over the last `span_ms` (whole buckets).
    fn sum(&mut self, now_ms: i64, span_ms: i64) -> f64 {
        self.advance(now_ms.div_euclid(BUCKET_MS));
        let count = (span_ms / BUCKET_MS).clamp(1, BUCKETS as i64);
        self.range_of(self.newest - count + 1, self.newest).0
    }

    /// Accepted difficulty and shares in `[start_ms, start_ms + span_ms)`, as far as
    /// the window still holds it (whole buckets; `now_ms` ages the window first).
    fn range(&mut self, now_ms: i64, start_ms: i64, span_ms: i64) -> (f64, u64) {
        self.advance(now_ms.div_euclid(BUCKET_MS));
        let first = start_ms.div_euclid(BUCKET_MS);
        let last = (start_ms + span_ms - 1).div_euclid(BUCKET_MS);
        self.range_of(first, last)
    }

    /// Totals of the buckets with indices `first..=last` that the window holds.
    fn range_of(&self, first: i64, last: i64) -> (f64, u64) {
        let Some(buckets) = &self.buckets else {
            return (0.0, 0);
        };
        let first = first.max(self.newest - BUCKETS as i64 + 1);
        let last = last.min(self.newest);
        (first..=last).fold((0.0, 0), |(work, shares), index| {
            let slot = index.rem_euclid(BUCKETS as i64) as usize;
            (
                work + buckets.work[slot],
                shares + u64::from(buckets.shares[slot]),
            )
        })
    }
}

/// One worker's live numbers.
#[derive(Debug)]
pub struct WorkerStats {
    pub name: Arc<str>,
    accepted: AtomicU64,
    accepted_difficulty: AtomicF64,
    rejected: [AtomicU64; 5],
    best_share: AtomicF64,
    /// The best share since the pool's last block.
    best_since_block: AtomicF64,
    last_share_ms: AtomicI64,
    sessions: AtomicU64,
    difficulty: AtomicF64,
    /// When this process first saw the worker, to avoid under-reporting a young window.
    first_seen_ms: i64,
    window: Mutex<Window>,
    /// [`Status`] as `u8`, set by the monitor.
    status: AtomicU8,
}

/// A snapshot of a worker for the API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerView {
    pub worker: String,
    pub account: String,
    pub accepted: u64,
    pub accepted_difficulty: f64,
    pub rejected: u64,
    pub rejected_by_reason: std::collections::BTreeMap<&'static str, u64>,
    pub hashrate_1m: f64,
    pub hashrate_10m: f64,
    pub hashrate_1h: f64,
    pub best_share_difficulty: f64,
    /// The best share since the pool's last accepted block.
    pub best_share_since_block: f64,
    pub last_share: Option<String>,
    pub sessions: u64,
    pub difficulty: f64,
    /// `waiting`, `online`, `offline` or `drop` (see [`crate::watch`]).
    pub status: &'static str,
}

/// The account of `account.worker` (the whole name when it has no dot).
pub fn account_of(worker: &str) -> &str {
    worker
        .split_once('.')
        .map_or(worker, |(account, _)| account)
}

impl WorkerStats {
    fn new(name: Arc<str>, now_ms: i64) -> WorkerStats {
        WorkerStats {
            name,
            accepted: AtomicU64::new(0),
            accepted_difficulty: AtomicF64::default(),
            rejected: Default::default(),
            best_share: AtomicF64::default(),
            best_since_block: AtomicF64::default(),
            last_share_ms: AtomicI64::new(i64::MIN),
            sessions: AtomicU64::new(0),
            difficulty: AtomicF64::default(),
            first_seen_ms: now_ms,
            window: Mutex::new(Window::new()),
            status: AtomicU8::new(Status::Waiting as u8),
        }
    }

    /// When this process first saw the worker (the distant past for one
    /// restored from the store).
    pub fn first_seen_ms(&self) -> i64 {
        self.first_seen_ms
    }

    /// Hashrate over the last `span_ms`, in hashes per second.
    fn hashrate(&self, now_ms: i64, span_ms: i64) -> f64 {
        let sum = self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sum(now_ms, span_ms);
        let observed = (now_ms - self.first_seen_ms).clamp(BUCKET_MS, span_ms);
        hashrate(sum, observed as f64 / 1000.0)
    }

    /// The worker's numbers; its hashrates add `others`' (the other cluster nodes').
    fn view(&self, now_ms: i64, others: Option<&RecentWork>) -> WorkerView {
        let theirs = others.and_then(|o| Some((o.until_ms, o.workers.get(&*self.name)?)));
        let rate = |span_ms: i64| {
            self.hashrate(now_ms, span_ms)
                + theirs.map_or(0.0, |(until, work)| others_rate(work, until, span_ms))
        };
        let rejected: Vec<u64> = self
            .rejected
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect();
        let last = self.last_share_ms.load(Ordering::Relaxed);
        WorkerView {
            worker: self.name.to_string(),
            account: account_of(&self.name).to_owned(),
            accepted: self.accepted.load(Ordering::Relaxed),
            accepted_difficulty: self.accepted_difficulty.load(),
            rejected: rejected.iter().sum(),
            rejected_by_reason: RejectKind::ALL
                .iter()
                .map(|k| (k.as_str(), rejected[*k as usize]))
                .collect(),
            hashrate_1m: rate(60_000),
            hashrate_10m: rate(600_000),
            hashrate_1h: rate(3_600_000),
            best_share_difficulty: self.best_share.load(),
            best_share_since_block: self.best_since_block.load(),
            last_share: (last != i64::MIN).then(|| rfc3339(last)),
            sessions: self.sessions.load(Ordering::Relaxed),
            difficulty: self.difficulty.load(),
            status: self.status().as_str(),
        }
    }

    /// Accepted difficulty and shares in `[start_ms, start_ms + span_ms)` (last hour only).
    pub fn work_in(&self, now_ms: i64, start_ms: i64, span_ms: i64) -> (f64, u64) {
        self.window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .range(now_ms, start_ms, span_ms)
    }

    /// The status the monitor last gave the worker.
    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Relaxed))
    }

    /// Sets the worker's status.
    pub fn set_status(&self, status: Status) {
        self.status.store(status as u8, Ordering::Relaxed);
    }

    /// What the monitor needs to judge the worker at `now_ms`.
    pub fn sample(&self, now_ms: i64) -> Sample {
        let (hour, recent) = {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            (
                window.sum(now_ms, 3_600_000),
                window.sum(now_ms, (RECENT_SECONDS * 1000.0) as i64),
            )
        };
        let span_ms = (now_ms - self.first_seen_ms).clamp(BUCKET_MS, 3_600_000);
        let difficulty = self.difficulty.load();
        let last = self.last_share_ms.load(Ordering::Relaxed);
        Sample {
            last_share_ms: (last != i64::MIN).then_some(last),
            evidence: RateEvidence {
                hour: Evidence::from_work(hour, difficulty, span_ms as f64 / 1000.0),
                recent: Evidence::from_work(
                    recent,
                    difficulty,
                    (span_ms as f64 / 1000.0).min(RECENT_SECONDS),
                ),
            },
        }
    }
}

/// A worker's share evidence at one moment, for [`crate::watch::monitor`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub last_share_ms: Option<i64>,
    /// Shares (at the current difficulty) over the last hour (or since first
    /// seen) and the last ten minutes.
    pub evidence: RateEvidence,
}

/// Formats unix milliseconds as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The hashrate of `work` over `span_ms` (one of [`SPANS_MS`], else nothing) before
/// `until_ms`; averaged, like a young worker's, over the part since its first minute.
fn others_rate(work: &SpanWork, until_ms: i64, span_ms: i64) -> f64 {
    let Some(index) = SPANS_MS.iter().position(|span| *span == span_ms) else {
        return 0.0;
    };
    let observed = (until_ms - work.first_ms).clamp(MINUTE_MS, span_ms);
    hashrate(work.difficulty[index], observed as f64 / 1000.0)
}

/// Pool-wide totals.
#[derive(Debug, Default)]
pub struct PoolTotals {
    pub accepted: AtomicU64,
    accepted_difficulty: AtomicF64,
    pub rejected: AtomicU64,
    /// Rejects by [`RejectKind`] as `usize`.
    rejected_by: [AtomicU64; 5],
    pub sessions: AtomicU64,
    pub blocks: AtomicU64,
    /// What the node answered to `submitblock`, for metrics.
    pub submissions: BlockSubmissions,
}

/// Outcomes of the blocks sent to a node with `submitblock`.
#[derive(Debug, Default)]
pub struct BlockSubmissions {
    /// Accepted (`null`), or already known to the node (`duplicate`, `inconclusive`).
    pub accepted: AtomicU64,
    /// Refused with a reason (`high-hash`, `bad-txnmrklroot`, …).
    pub rejected: AtomicU64,
    /// No node could be asked (all unreachable or answering errors).
    pub failed: AtomicU64,
    /// Accepted, later found off the best chain.
    pub orphaned: AtomicU64,
}

impl PoolTotals {
    /// Rejected shares of one kind.
    pub fn rejected_of(&self, kind: RejectKind) -> u64 {
        self.rejected_by[kind as usize].load(Ordering::Relaxed)
    }
}

/// All workers' numbers.
#[derive(Debug, Default)]
pub struct Accounting {
    workers: DashMap<Arc<str>, Arc<WorkerStats>>,
    pub totals: PoolTotals,
    window: Mutex<Option<Window>>,
    started_ms: AtomicI64,
    /// In a cluster, the other nodes' recent work (this node's is in the windows).
    others: ArcSwapOption<RecentWork>,
}

impl Accounting {
    /// Accounting restored from the store's totals and recent shares.
    pub fn restore(totals: Vec<WorkerTotals>, recent: Vec<(String, i64, f64)>) -> Accounting {
        let now = now_ms();
        let accounting = Accounting::default();
        // The pool's numbers cover this run and the shares restored with it.
        let oldest = recent.iter().map(|(_, at, _)| *at).min().unwrap_or(now);
        accounting
            .started_ms
            .store(oldest.min(now), Ordering::Relaxed);
        accounting.adopt_totals(totals);
        for (worker, time_ms, difficulty) in recent {
            let stats = accounting.worker_seen_since(&worker, i64::MIN / 2);
            stats
                .window
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(time_ms, difficulty);
            accounting.pool_window(|w| w.add(time_ms, difficulty));
        }
        accounting
    }

    /// Takes every worker's totals (and the pool's, their sums) from the ledger: at start,
    /// and in a cluster every heartbeat, so any node shows the whole cluster's counts.
    pub fn adopt_totals(&self, totals: Vec<WorkerTotals>) {
        let (mut accepted, mut difficulty, mut rejected_by) = (0u64, 0.0, [0u64; 5]);
        for t in totals {
            // Restored history covers the past: no young-window correction for these.
            let stats = self.worker_seen_since(&t.worker, i64::MIN / 2);
            stats.accepted.store(t.accepted, Ordering::Relaxed);
            stats.accepted_difficulty.store(t.accepted_difficulty);
            for (slot, value) in stats.rejected.iter().zip(t.rejected) {
                slot.store(value, Ordering::Relaxed);
            }
            stats.best_share.store(t.best_share_difficulty);
            stats.best_since_block.store(t.best_share_since_block);
            stats
                .last_share_ms
                .store(t.last_share_ms.unwrap_or(i64::MIN), Ordering::Relaxed);
            accepted += t.accepted;
            difficulty += t.accepted_difficulty;
            for (sum, value) in rejected_by.iter_mut().zip(t.rejected) {
                *sum += value;
            }
        }
        let totals = &self.totals;
        totals.accepted.store(accepted, Ordering::Relaxed);
        totals.accepted_difficulty.store(difficulty);
        totals
            .rejected
            .store(rejected_by.iter().sum(), Ordering::Relaxed);
        for (slot, value) in totals.rejected_by.iter().zip(rejected_by) {
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// Takes the other cluster nodes' recent work, added to every hashrate shown.
    pub fn adopt_others_work(&self, work: RecentWork) {
        self.others.store(Some(Arc::new(work)));
    }

    /// The other cluster nodes' recent work, once known (never on a single node).
    pub fn others_work(&self) -> Option<Arc<RecentWork>> {
        self.others.load_full()
    }

    fn pool_window<R>(&self, f: impl FnOnce(&mut Window) -> R) -> R {
        let mut guard = self.window.lock().unwrap_or_else(|e| e.into_inner());
        f(guard.get_or_insert_with(Window::new))
    }

    /// The stats of `worker`, created on first use.
    pub fn worker(&self, worker: &str) -> Arc<WorkerStats> {
        self.worker_seen_since(worker, now_ms())
    }

    fn worker_seen_since(&self, worker: &str, first_seen_ms: i64) -> Arc<WorkerStats> {
        if let Some(stats) = self.workers.get(worker) {
            return stats.clone();
        }
        let name: Arc<str> = worker.into();
        self.workers
            .entry(name.clone())
            .or_insert_with(|| Arc::new(WorkerStats::new(name, first_seen_ms)))
            .clone()
    }

    /// Whether the worker is known.
    pub fn knows(&self, worker: &str) -> bool {
        self.workers.contains_key(worker)
    }

    /// Counts an acknowledged share.
    pub fn record_accept(
        &self,
        stats: &WorkerStats,
        difficulty: f64,
        hash_difficulty: f64,
        time_ms: i64,
    ) {
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.accepted_difficulty.add(difficulty);
        stats.best_share.max(hash_difficulty);
        stats.best_since_block.max(hash_difficulty);
        stats.last_share_ms.fetch_max(time_ms, Ordering::Relaxed);
        stats
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(time_ms, difficulty);
        self.totals.accepted.fetch_add(1, Ordering::Relaxed);
        self.totals.accepted_difficulty.add(difficulty);
        self.pool_window(|w| w.add(time_ms, difficulty));
    }

    /// Counts a block the pool found and its chain accepted: every worker's best share
    /// since the last block starts over (as the ledger's does when it records the block).
    pub fn block_found(&self) {
        self.totals.blocks.fetch_add(1, Ordering::Relaxed);
        for worker in &self.workers {
            worker.best_since_block.store(0.0);
        }
    }

    /// Counts a rejected share.
    pub fn record_reject(&self, stats: &WorkerStats, kind: RejectKind) {
        stats.rejected[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.totals.rejected.fetch_add(1, Ordering::Relaxed);
        self.totals.rejected_by[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A session authorized as this worker.
    pub fn session_opened(&self, stats: &WorkerStats) {
        stats.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// A session of this worker closed.
    pub fn session_closed(&self, stats: &WorkerStats) {
        let _ = stats
            .sessions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Records the difficulty last sent to this worker.
    pub fn set_difficulty(&self, stats: &WorkerStats, difficulty: f64) {
        stats.difficulty.store(difficulty);
    }

    /// Snapshots of all workers (optionally of one account), sorted by name.
    pub fn workers(&self, account: Option<&str>) -> Vec<WorkerView> {
        let now = now_ms();
        let others = self.others_work();
        let mut views: Vec<WorkerView> = self
            .workers
            .iter()
            .filter(|e| account.is_none_or(|a| account_of(e.key()) == a))
            .map(|e| e.value().view(now, others.as_deref()))
            .collect();
        views.sort_by(|a, b| a.worker.cmp(&b.worker));
        views
    }

    /// Every worker's live stats.
    pub fn all(&self) -> Vec<Arc<WorkerStats>> {
        self.workers.iter().map(|e| e.value().clone()).collect()
    }

    /// A snapshot of one worker.
    pub fn worker_view(&self, worker: &str) -> Option<WorkerView> {
        let others = self.others_work();
        self.workers
            .get(worker)
            .map(|s| s.view(now_ms(), others.as_deref()))
    }

    /// Pool hashrate over the last `span_ms` as of `now_ms`, or over the time
    /// observed when that is shorter: this node's, plus the other cluster nodes'.
    pub fn pool_hashrate(&self, now_ms: i64, span_ms: i64) -> f64 {
        let others = self.others_work();
        self.node_hashrate(now_ms, span_ms)
            + others.map_or(0.0, |o| others_rate(&o.pool, o.until_ms, span_ms))
    }

    /// This node's share of [`Accounting::pool_hashrate`].
    pub fn node_hashrate(&self, now_ms: i64, span_ms: i64) -> f64 {
        let sum = self.pool_window(|w| w.sum(now_ms, span_ms));
        hashrate(sum, self.observed_ms(now_ms, span_ms) as f64 / 1000.0)
    }

    /// How much of the last `span_ms` the pool's numbers cover (at least one
    /// bucket): what the pool's hashrates are averaged over.
    pub fn observed_ms(&self, now_ms: i64, span_ms: i64) -> i64 {
        (now_ms - self.observed_since()).clamp(BUCKET_MS, span_ms)
    }

    /// When the pool's numbers start (Unix ms): this run's start or the oldest
    /// share restored with it; the distant past for a default `Accounting`.
    pub fn observed_since(&self) -> i64 {
        self.started_ms.load(Ordering::Relaxed)
    }

    /// Pool-wide accepted difficulty and shares in `[start_ms, start_ms + span_ms)`
    /// (last hour only).
    pub fn pool_work_in(&self, now_ms: i64, start_ms: i64, span_ms: i64) -> (f64, u64) {
        self.pool_window(|w| w.range(now_ms, start_ms, span_ms))
    }

    /// Total accepted difficulty.
    pub fn accepted_difficulty(&self) -> f64 {
        self.totals.accepted_difficulty.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_views() {
        let accounting = Accounting::default();
        let alice = accounting.worker("alice.rig1");
        accounting.record_accept(&alice, 2.0, 3.5, now_ms());
        accounting.record_accept(&alice, 2.0, 1e9, now_ms());
        accounting.record_reject(&alice, RejectKind::Stale);
        accounting.worker("bob");
        let view = accounting.worker_view("alice.rig1").unwrap();
        assert_eq!(view.account, "alice");
        assert_eq!(view.accepted, 2);
        assert_eq!(view.accepted_difficulty, 4.0);
        assert_eq!(view.rejected, 1);
        assert_eq!(view.rejected_by_reason["stale"], 1);
        assert_eq!(view.best_share_difficulty, 1e9);
        assert!(view.hashrate_1m > 0.0);
        assert_eq!(accounting.workers(Some("alice")).len(), 1);
        assert_eq!(accounting.workers(None).len(), 2);
        assert_eq!(accounting.totals.accepted.load(Ordering::Relaxed), 2);
    }

    /// In a cluster, hashrates add the other nodes' work to this node's: over each span
    /// before the minute their rows reach, averaged over the part since their first minute.
    #[test]
    fn hashrates_add_the_other_nodes_work() {
        let accounting = Accounting::default();
        let now = now_ms();
        let alice = accounting.worker("alice.rig");
        accounting.record_accept(&alice, 6.0, 6.0, now);
        let node_only = accounting.worker_view("alice.rig").unwrap();
        let node_pool = accounting.pool_hashrate(now, 600_000);
        assert!(node_only.hashrate_10m > 0.0);

        let until = now - 30_000;
        let elsewhere = |ten_minutes: f64, first_minutes_before: i64| SpanWork {
            difficulty: [ten_minutes / 10.0, ten_minutes, ten_minutes],
            first_ms: until - first_minutes_before * MINUTE_MS,
        };
        accounting.adopt_others_work(RecentWork {
            until_ms: until,
            workers: [
                ("alice.rig".to_owned(), elsewhere(600.0, 60)),
                ("bob.rig".to_owned(), elsewhere(60.0, 2)),
            ]
            .into(),
            pool: elsewhere(660.0, 60),
        });
        let rate = |difficulty: f64, seconds: f64| hashrate(difficulty, seconds);
        let alice = accounting.worker_view("alice.rig").unwrap();
        let expected = node_only.hashrate_10m + rate(600.0, 600.0);
        assert!((alice.hashrate_10m - expected).abs() / expected < 1e-9);
        assert!((alice.hashrate_1m - node_only.hashrate_1m - rate(60.0, 60.0)).abs() < 1e-3);
        // Bob mines only elsewhere, and only for the last two minutes of their rows.
        accounting.worker("bob.rig");
        let bob = accounting.worker_view("bob.rig").unwrap();
        assert!((bob.hashrate_1h - rate(60.0, 120.0)).abs() / bob.hashrate_1h < 1e-9);
        let pool = accounting.pool_hashrate(now, 600_000);
        assert!((pool - node_pool - rate(660.0, 600.0)).abs() / pool < 1e-9);
        // What this node reports in its heartbeat stays its own.
        assert_eq!(accounting.node_hashrate(now, 600_000), node_pool);
    }

    #[test]
    fn an_idle_window_allocates_nothing() {
        let mut window = Window::new();
        assert_eq!(window.sum(1_000_000_000, 600_000), 0.0);
        assert!(window.buckets.is_none());
        window.add(1_000_000_000, 1.0);
        assert_eq!(window.sum(1_000_000_000, 600_000), 1.0);
    }

    #[test]
    fn window_sums_only_its_span() {
        let mut window = Window::new();
        let now = 1_000_000_000;
        window.add(now - 3_000_000, 5.0);
        window.add(now - 120_000, 2.0);
        window.add(now - 1_000, 1.0);
        assert_eq!(window.sum(now, 60_000), 1.0);
        assert_eq!(window.sum(now, 600_000), 3.0);
        assert_eq!(window.sum(now, 3_600_000), 8.0);
        assert_eq!(window.range(now, now - 120_000, 60_000), (2.0, 1));
        assert_eq!(window.range(now, now - 3_600_000, 3_600_000), (8.0, 3));
        // Far in the future everything has aged out.
        assert_eq!(window.sum(now + 4_000_000, 3_600_000), 0.0);
        assert_eq!(
            window.range(now + 4_000_000, now - 120_000, 60_000),
            (0.0, 0)
        );
    }

    #[test]
    fn restore_rebuilds_totals_and_windows() {
        let now = now_ms();
        let totals = vec![WorkerTotals {
            worker: "carol.a".into(),
            accepted: 7,
            accepted_difficulty: 14.0,
            rejected: [1, 0, 0, 0, 0],
            best_share_difficulty: 9.0,
            best_share_since_block: 4.0,
            last_share_ms: Some(now),
        }];
        let accounting = Accounting::restore(totals, vec![("carol.a".into(), now - 5_000, 14.0)]);
        let view = accounting.worker_view("carol.a").unwrap();
        assert_eq!((view.accepted, view.rejected), (7, 1));
        assert_eq!(
            (view.best_share_difficulty, view.best_share_since_block),
            (9.0, 4.0)
        );
        let expected = hashrate(14.0, 60.0);
        assert!((view.hashrate_1m - expected).abs() / expected < 1e-9);
        // A block starts the best since the last block over; a share sets it again.
        accounting.block_found();
        assert_eq!(
            accounting
                .worker_view("carol.a")
                .unwrap()
                .best_share_since_block,
            0.0
        );
        let carol = accounting.worker("carol.a");
        accounting.record_accept(&carol, 1.0, 2.5, now);
        let view = accounting.worker_view("carol.a").unwrap();
        assert_eq!(
            (view.best_share_difficulty, view.best_share_since_block),
            (9.0, 2.5)
        );
    }
}
