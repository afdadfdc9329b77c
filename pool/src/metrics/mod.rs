//! Prometheus metrics at `GET /metrics`.
//!
//! Two kinds of numbers: live instruments the pool bumps as things happen
//! ([`Metrics`]: atomics and [`AtomicHistogram`]s, never a lock), and numbers
//! read at scrape time from where they already live (share counters from the
//! accounting, ledger counters, the current job, `/proc/self`). Reading the share
//! counters from the accounting makes `/metrics` and `/api/pool` agree exactly.
//!
//! Per-worker series are opt-in (`[metrics] per_worker`), to keep the number of
//! series bounded on pools with many workers.

pub mod histogram;
pub mod process;
pub mod scrape;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use histogram::AtomicHistogram;

use crate::limits::Refusal;
use crate::watch::webhook::Deliveries;

/// The listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Tcp,
    Tls,
    V2,
}

/// Live instruments, bumped where things happen.
#[derive(Debug)]
pub struct Metrics {
    /// Whether to expose per-worker series.
    pub per_worker: bool,
    /// Admitted connections: plain, TLS, Stratum V2.
    connections: [AtomicU64; 3],
    /// Connections refused at the door: banned, connection rate, per-IP cap.
    refused: [AtomicU64; 3],
    /// Messages over their budget: `mining.submit`, other.
    rate_limited: [AtomicU64; 2],
    tls_handshakes: AtomicU64,
    /// Failed TLS handshakes: error, timeout.
    tls_failures: [AtomicU64; 2],
    /// Stratum V2 Noise handshakes: completed, failed (error or timeout).
    sv2_handshakes: [AtomicU64; 2],
    /// Time to validate one share.
    pub share_validation: AtomicHistogram,
    /// Time from a new block's job to the last session it was written to.
    pub fanout: FanOut,
    /// What became of the webhook's events.
    pub webhook: Arc<Deliveries>,
}

impl Metrics {
    /// Instruments at zero.
    pub fn new(per_worker: bool) -> Metrics {
        Metrics {
            per_worker,
            connections: Default::default(),
            refused: Default::default(),
            rate_limited: Default::default(),
            tls_handshakes: AtomicU64::new(0),
            tls_failures: Default::default(),
            sv2_handshakes: Default::default(),
            share_validation: AtomicHistogram::new(histogram::LATENCY_SECONDS),
            fanout: FanOut::new(),
            webhook: Arc::default(),
        }
    }

    /// A connection was admitted on `listener`.
    pub fn connection(&self, listener: Listener) {
        self.connections[listener as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was refused at the door.
    pub fn refused(&self, refusal: &Refusal) {
        let slot = match refusal {
            Refusal::Banned(_) => 0,
            Refusal::ConnectionRate => 1,
            Refusal::PerIpCap => 2,
        };
        self.refused[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// A message went over its connection's budget.
    pub fn rate_limited(&self, is_submit: bool) {
        self.rate_limited[usize::from(!is_submit)].fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake finished: `Ok`, or failed (`timed_out` tells how).
    pub fn tls_handshake(&self, outcome: Result<(), bool>) {
        match outcome {
            Ok(()) => self.tls_handshakes.fetch_add(1, Ordering::Relaxed),
            Err(timed_out) => {
                self.tls_failures[usize::from(timed_out)].fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    /// A Stratum V2 Noise handshake completed (`true`) or failed.
    pub fn sv2_handshake(&self, completed: bool) {
        self.sv2_handshakes[usize::from(!completed)].fetch_add(1, Ordering::Relaxed);
    }
}

/// The fan-out time of the latest new-block job: the slowest session's write.
///
/// Each session reports when it has written a new block's notify; the first
/// report of a newer job closes the previous job's measurement into the histogram.
#[derive(Debug)]
pub struct FanOut {
    job: AtomicU64,
    slowest_nanos: AtomicU64,
    pub histogram: AtomicHistogram,
}

impl FanOut {
    fn new() -> FanOut {
        FanOut {
            job: AtomicU64::new(0),
            slowest_nanos: AtomicU64::new(0),
            histogram: AtomicHistogram::new(histogram::LATENCY_SECONDS),
        }
    }

    /// A session has written job `job` to its socket `elapsed` after publication.
    pub fn written(&self, job: u64, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let current = self.job.load(Ordering::Acquire);
        if job > current
            && self
                .job
                .compare_exchange(current, job, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let previous = self.slowest_nanos.swap(nanos, Ordering::AcqRel);
            if current != 0 {
                self.histogram
                    .observe_duration(Duration::from_nanos(previous));
            }
        } else if job == self.job.load(Ordering::Acquire) {
            self.slowest_nanos.fetch_max(nanos, Ordering::AcqRel);
        }
    }

    /// The slowest write so far of the latest job.
    pub fn latest(&self) -> Duration {
        Duration::from_nanos(self.slowest_nanos.load(Ordering::Acquire))
    }
}
