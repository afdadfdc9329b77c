//! The hashing threads: each takes the newest published job, scans disjoint work units
//! in short chunks, checks between chunks whether a newer job was published, re-checks
//! every candidate with [`kernel::verify`], and hands shares to the network task.
//!
//! Thread `i` of `n` takes the work units `i, i + n, i + 2n, …` of a job
//! ([`Job::unit`]), so no two threads ever hash the same header. Chunks are sized from
//! each thread's measured speed to last about [`CHUNK_TIME`], so a new job reaches every
//! thread well within 10 ms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::job::{Job, WorkUnit};
use crate::kernel::{self, Kernel, PreparedWork};
use crate::stats::Stats;

/// How long one chunk of nonces should take.
pub const CHUNK_TIME: Duration = Duration::from_millis(2);
const MIN_CHUNK: u32 = 1 << 10;
const MAX_CHUNK: u32 = 1 << 22;

/// A share a thread found and verified.
#[derive(Debug, Clone)]
pub struct FoundShare {
    pub job: Arc<Job>,
    pub unit: WorkUnit,
    pub ntime: u32,
    pub nonce: u32,
}

/// The newest job and a generation counter the threads poll between chunks.
#[derive(Debug, Default)]
pub struct Board {
    generation: AtomicU64,
    current: Mutex<Option<Arc<Job>>>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Board {
    /// Makes `job` the one every thread works on from its next chunk.
    pub fn publish(&self, job: Arc<Job>) {
        let mut current = self.lock();
        *current = Some(job);
        self.generation.fetch_add(1, Ordering::Release);
        self.wake.notify_all();
    }

    /// The job being worked on, for tests.
    #[cfg(test)]
    pub(crate) fn peek(&self) -> Option<Arc<Job>> {
        self.lock().clone()
    }

    fn stop(&self) {
        let _guard = self.lock();
        self.stop.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    fn changed(&self, seen: u64) -> bool {
        self.generation.load(Ordering::Acquire) != seen || self.stop.load(Ordering::Acquire)
    }

    /// Blocks until a job newer than generation `seen` exists; `None` when stopping.
    fn wait_newer(&self, seen: u64) -> Option<(u64, Arc<Job>)> {
        let mut current = self.lock();
        loop {
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            let generation = self.generation.load(Ordering::Acquire);
            if generation != seen {
                if let Some(job) = current.as_ref() {
                    return Some((generation, Arc::clone(job)));
                }
            }
            current = self
                .wake
                .wait(current)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Job>>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running hashing threads.
pub struct Hashers {
    board: Arc<Board>,
    handles: Vec<JoinHandle<()>>,
}

impl Hashers {
    /// Starts `threads` threads running `kernel`, counting into `stats` and sending
    /// verified shares to `shares` (a full channel drops the share as stale).
    pub fn start(
        threads: usize,
        kernel: Kernel,
        stats: Arc<Stats>,
        shares: mpsc::Sender<FoundShare>,
    ) -> Hashers {
        let board = Arc::new(Board::default());
        let handles = (0..threads)
            .map(|index| {
                let worker = Worker {
                    index,
                    threads,
                    kernel,
                    board: Arc::clone(&board),
                    stats: Arc::clone(&stats),
                    shares: shares.clone(),
                    dropping: false,
                };
                std::thread::Builder::new()
                    .name(format!("hasher-{index}"))
                    .spawn(move || worker.run())
                    .expect("spawning a hashing thread")
            })
            .collect();
        Hashers { board, handles }
    }

    /// The job board the network task publishes to.
    pub fn board(&self) -> Arc<Board> {
        Arc::clone(&self.board)
    }

    /// Stops every thread after its current chunk and waits for it.
    pub fn stop(self) {
        self.board.stop();
        for handle in self.handles {
            let _ = handle.join();
        }
    }
}

/// The global unit index of a thread's `local`-th unit: disjoint across threads.
pub fn unit_index(thread: usize, threads: usize, local: u64) -> u64 {
    local
        .saturating_mul(threads as u64)
        .saturating_add(thread as u64)
}

struct Worker {
    index: usize,
    threads: usize,
    kernel: Kernel,
    board: Arc<Board>,
    stats: Arc<Stats>,
    shares: mpsc::Sender<FoundShare>,
    /// Shares are being dropped because the queue is full.
    dropping: bool,
}

impl Worker {
    fn run(mut self) {
        let mut seen = 0;
        let mut local = 0u64;
        let mut chunk = 1u32 << 14;
        let mut previous: Option<Arc<Job>> = None;
        let mut found = Vec::new();
        'jobs: while let Some((generation, job)) = self.board.wait_newer(seen) {
            seen = generation;
            // Units continue across refreshes of the same work so no header repeats;
            // a clean job or a new extranonce1 starts a fresh space.
            let fresh = previous.as_ref().is_none_or(|p| {
                job.notify.clean_jobs
                    || p.extranonce1 != job.extranonce1
                    || p.extranonce2_size != job.extranonce2_size
                    || p.version_mask != job.version_mask
            });
            if fresh {
                local = 0;
            }
            previous = Some(Arc::clone(&job));
            loop {
                let Some(unit) = job.unit(unit_index(self.index, self.threads, local)) else {
                    tracing::warn!(thread = self.index, job = %job.notify.job_id, "work space of the job exhausted; waiting for a new job");
                    continue 'jobs;
                };
                local += 1;
                let ntime = job.ntime();
                let header = job.header(&unit, ntime);
                let work = PreparedWork::new(&header);
                let mut next: u64 = 0;
                while next <= u64::from(u32::MAX) {
                    if self.board.changed(seen) {
                        continue 'jobs;
                    }
                    let count = u64::from(chunk).min((1u64 << 32) - next) as u32;
                    let started = Instant::now();
                    found.clear();
                    self.kernel
                        .scan(&work, next as u32, count, &job.target, &mut found);
                    chunk = resize(chunk, count, started.elapsed());
                    self.stats.add_hashes(self.index, u64::from(count));
                    for &nonce in &found {
                        if kernel::verify(&header, nonce, &job.target) {
                            self.send(FoundShare {
                                job: Arc::clone(&job),
                                unit,
                                ntime,
                                nonce,
                            });
                        }
                    }
                    next += u64::from(count);
                }
            }
        }
    }

    fn send(&mut self, share: FoundShare) {
        match self.shares.try_send(share) {
            Ok(()) => self.dropping = false,
            Err(_) => {
                // Once per episode (e.g. while the pool connection is down), not per share.
                if !self.dropping {
                    tracing::warn!(
                        thread = self.index,
                        "share queue full (no pool is taking shares); dropping shares until it drains"
                    );
                    self.dropping = true;
                }
                self.stats.stale();
            }
        }
    }
}

/// The next chunk size: `count` nonces took `elapsed`; aim for [`CHUNK_TIME`].
fn resize(chunk: u32, count: u32, elapsed: Duration) -> u32 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 || count < chunk {
        return chunk;
    }
    let ideal = f64::from(count) / seconds * CHUNK_TIME.as_secs_f64();
    (ideal as u32).clamp(MIN_CHUNK, MAX_CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    use crate::job::tests::job;

    #[test]
    fn threads_take_disjoint_units() {
        let job = job(2, 0x1fff_e000);
        let threads = 3;
        let mut seen = HashSet::new();
        for thread in 0..threads {
            for local in 0..50_000 {
                let unit = job.unit(unit_index(thread, threads, local)).unwrap();
                let version = job.version(&unit);
                assert!(
                    seen.insert((unit.extranonce2, version)),
                    "thread {thread} repeats a unit"
                );
            }
        }
        assert_eq!(seen.len(), 150_000);
    }

    #[test]
    fn chunks_follow_the_measured_speed() {
        // 1M nonces in 100 ms is 10 MH/s: 2 ms is 20 000 nonces.
        assert_eq!(resize(1 << 20, 1 << 20, Duration::from_millis(100)), 20_971);
        assert_eq!(resize(1 << 14, 1 << 14, Duration::from_secs(10)), MIN_CHUNK);
        assert_eq!(resize(1 << 14, 1 << 14, Duration::from_nanos(1)), MAX_CHUNK);
        assert_eq!(resize(1 << 14, 5, Duration::from_nanos(1)), 1 << 14);
    }

    #[test]
    fn threads_find_verified_shares_and_switch_jobs() {
        let stats = Arc::new(Stats::new(2));
        let (tx, mut rx) = mpsc::channel(64);
        let hashers = Hashers::start(2, Kernel::fastest(), Arc::clone(&stats), tx);
        let mut easy = job(4, 0x1fff_e000);
        easy.difficulty = quarry_protocol::Difficulty::new(1e-6).unwrap();
        easy.target = easy.difficulty.to_target().to_le_bytes();
        hashers.board().publish(Arc::new(easy.clone()));
        let share = rx.blocking_recv().unwrap();
        let mut header = share.job.header(&share.unit, share.ntime);
        header[76..].copy_from_slice(&share.nonce.to_le_bytes());
        let hash = quarry_protocol::hash::sha256d(&header);
        assert!(quarry_protocol::target::meets_target(
            &hash,
            &easy.difficulty.to_target()
        ));
        easy.generation = 2;
        hashers.board().publish(Arc::new(easy));
        let switched = Instant::now();
        loop {
            let share = rx.blocking_recv().unwrap();
            if share.job.generation == 2 {
                break;
            }
            assert!(switched.elapsed() < Duration::from_secs(5));
        }
        // Every thread hashes and counts as it goes; on a loaded machine one may be
        // scheduled only after the other found the shares above.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stats.snapshot().hashes.iter().all(|h| *h > 0) {
            assert!(
                Instant::now() < deadline,
                "a thread never hashed: {:?}",
                stats.snapshot().hashes
            );
            std::thread::yield_now();
        }
        hashers.stop();
        assert!(stats.snapshot().hashes.iter().all(|h| *h > 0));
    }
}
