//! Counters shared by the hashing threads, the network task, the summary line and the
//! API: hashes per thread, share outcomes, and what the miner is connected to.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The state of the connection to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    /// Subscribed and authorized.
    Mining,
    Disconnected,
}

impl ConnState {
    /// The lower-case name used in logs and the API.
    pub fn name(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Mining => "mining",
            ConnState::Disconnected => "disconnected",
        }
    }
}

/// What the network task last reported.
#[derive(Debug, Clone)]
pub struct Link {
    pub pool: Option<String>,
    pub state: ConnState,
    pub difficulty: f64,
}

/// Shared counters.
#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    hashes: Vec<AtomicU64>,
    accepted: AtomicU64,
    /// Shares found but never sent: their job was void by the time they could be.
    stale: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    link: Mutex<Link>,
    /// The last sample: when, and each thread's hash count then.
    last_sample: Mutex<(Instant, Vec<u64>)>,
    rates: Mutex<Vec<f64>>,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uptime_seconds: f64,
    pub hashes: Vec<u64>,
    /// Hashes per second per thread over the last sampling period.
    pub rates: Vec<f64>,
    pub accepted: u64,
    pub rejected: BTreeMap<String, u64>,
    pub stale: u64,
    pub link: Link,
}

impl Snapshot {
    /// Total rejected shares.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Accepted as a percentage of all answered shares (100 with none answered).
    pub fn acceptance_percent(&self) -> f64 {
        let answered = self.accepted + self.rejected_total();
        if answered == 0 {
            100.0
        } else {
            self.accepted as f64 * 100.0 / answered as f64
        }
    }
}

impl Stats {
    /// Counters for `threads` hashing threads.
    pub fn new(threads: usize) -> Stats {
        let now = Instant::now();
        Stats {
            started: now,
            hashes: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            accepted: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            rejected: Mutex::new(BTreeMap::new()),
            link: Mutex::new(Link {
                pool: None,
                state: ConnState::Connecting,
                difficulty: 1.0,
            }),
            last_sample: Mutex::new((now, vec![0; threads])),
            rates: Mutex::new(vec![0.0; threads]),
        }
    }

    /// Adds `count` hashes done by `thread`.
    pub fn add_hashes(&self, thread: usize, count: u64) {
        if let Some(counter) = self.hashes.get(thread) {
            counter.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Counts an accepted share.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a rejected share under `reason` (the pool's text, so both its length
    /// and the number of distinct reasons kept are bounded).
    pub fn rejected(&self, reason: &str) {
        const MAX_REASONS: usize = 32;
        let mut rejected = lock(&self.rejected);
        let mut reason: String = reason.chars().take(80).collect();
        if rejected.len() >= MAX_REASONS && !rejected.contains_key(&reason) {
            reason = "other".to_owned();
        }
        *rejected.entry(reason).or_default() += 1;
    }

    /// Counts a share dropped locally because its job was void.
    pub fn stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the connection state and pool.
    pub fn set_link(&self, pool: Option<String>, state: ConnState) {
        let mut link = lock(&self.link);
        link.pool = pool;
        link.state = state;
    }

    /// Records the share difficulty now being mined.
    pub fn set_difficulty(&self, difficulty: f64) {
        lock(&self.link).difficulty = difficulty;
    }

    /// Updates the per-thread rates from the hashes done since the previous sample.
    pub fn sample(&self) {
        let now = Instant::now();
        let counts: Vec<u64> = self
            .hashes
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect();
        let mut last = lock(&self.last_sample);
        let seconds = now.duration_since(last.0).as_secs_f64();
        if seconds > 0.0 {
            let rates = counts
                .iter()
                .zip(&last.1)
                .map(|(now, then)| now.saturating_sub(*then) as f64 / seconds)
                .collect();
            *lock(&self.rates) = rates;
        }
        *last = (now, counts);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            hashes: self
                .hashes
                .iter()
                .map(|h| h.load(Ordering::Relaxed))
                .collect(),
            rates: lock(&self.rates).clone(),
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: lock(&self.rejected).clone(),
            stale: self.stale.load(Ordering::Relaxed),
            link: lock(&self.link).clone(),
        }
    }
}

/// A poisoned lock only means a thread panicked mid-update of a counter; keep going.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A hash rate with a unit: H/s, kH/s, MH/s or GH/s.
#[derive(Debug, Clone, Copy)]
pub struct Rate(pub f64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (value, unit) = match self.0 {
            r if r >= 1e9 => (r / 1e9, "GH/s"),
            r if r >= 1e6 => (r / 1e6, "MH/s"),
            r if r >= 1e3 => (r / 1e3, "kH/s"),
            r => (r, "H/s"),
        };
        write!(f, "{value:.2} {unit}")
    }
}

impl fmt::Display for Snapshot {
    /// The summary line: hashrate, per thread, shares, difficulty and pool.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: f64 = self.rates.iter().sum();
        let threads: Vec<String> = self.rates.iter().map(|r| Rate(*r).to_string()).collect();
        write!(
            f,
            "hashrate {} [{}]; accepted {} rejected {} ({:.1}%)",
            Rate(total),
            threads.join(", "),
            self.accepted,
            self.rejected_total(),
            self.acceptance_percent()
        )?;
        if !self.rejected.is_empty() {
            let reasons: Vec<String> = self
                .rejected
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect();
            write!(f, " [{}]", reasons.join(", "))?;
        }
        if self.stale > 0 {
            write!(f, "; stale {}", self.stale)?;
        }
        write!(
            f,
            "; difficulty {}; pool {} ({})",
            self.link.difficulty,
            self.link.pool.as_deref().unwrap_or("none"),
            self.link.state.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_units() {
        assert_eq!(Rate(12.0).to_string(), "12.00 H/s");
        assert_eq!(Rate(1_500.0).to_string(), "1.50 kH/s");
        assert_eq!(Rate(33_500_000.0).to_string(), "33.50 MH/s");
        assert_eq!(Rate(2e9).to_string(), "2.00 GH/s");
    }

    #[test]
    fn reject_reasons_from_the_pool_are_bounded() {
        let stats = Stats::new(1);
        for i in 0..100 {
            stats.rejected(&format!("reason {i} {}", "x".repeat(200)));
        }
        let rejected = stats.snapshot().rejected;
        assert_eq!(rejected.len(), 33);
        assert_eq!(rejected["other"], 68);
        assert!(rejected.keys().all(|k| k.chars().count() <= 80));
    }

    #[test]
    fn summary_line_names_reasons_and_percentage() {
        let stats = Stats::new(2);
        stats.accepted();
        stats.accepted();
        stats.accepted();
        stats.rejected("duplicate share");
        stats.set_link(Some("stratum+tcp://p:1".into()), ConnState::Mining);
        stats.set_difficulty(0.5);
        let line = stats.snapshot().to_string();
        assert!(line.contains("accepted 3 rejected 1 (75.0%)"), "{line}");
        assert!(line.contains("[duplicate share: 1]"), "{line}");
        assert!(
            line.contains("difficulty 0.5; pool stratum+tcp://p:1 (mining)"),
            "{line}"
        );
    }
}
