//! `--benchmark`: the hashing threads on a synthetic job, offline, for a fixed time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_protocol::messages::Notify;
use quarry_protocol::{Difficulty, Extranonce};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::hasher::Hashers;
use crate::job::Job;
use crate::kernel::Kernel;
use crate::stats::Stats;

/// What a benchmark measured; serialized as the `--json` output.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkResult {
    pub threads: usize,
    pub seconds: f64,
    pub hashes: u64,
    pub hashes_per_second: f64,
    pub per_thread: Vec<f64>,
    pub kernel: String,
}

/// Hashes a synthetic job on `threads` threads with `kernel` for `duration`.
pub fn run(threads: usize, kernel: Kernel, duration: Duration) -> BenchmarkResult {
    let stats = Arc::new(Stats::new(threads));
    // Shares are impossible at this difficulty; the channel only keeps the API uniform.
    let (shares, _unused) = mpsc::channel(16);
    let hashers = Hashers::start(threads, kernel, Arc::clone(&stats), shares);
    let started = Instant::now();
    hashers.board().publish(Arc::new(synthetic_job()));
    std::thread::sleep(duration);
    hashers.stop();
    let seconds = started.elapsed().as_secs_f64();
    let per_thread_hashes = stats.snapshot().hashes;
    let hashes = per_thread_hashes.iter().sum();
    BenchmarkResult {
        threads,
        seconds,
        hashes,
        hashes_per_second: hashes as f64 / seconds,
        per_thread: per_thread_hashes
            .iter()
            .map(|h| *h as f64 / seconds)
            .collect(),
        kernel: kernel.kind().name().to_owned(),
    }
}

fn synthetic_job() -> Job {
    let notify = Notify {
        job_id: "bench".parse().expect("valid job id"),
        prevhash: "00".repeat(32).parse().expect("valid prevhash"),
        coinb1:
            "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff08"
                .parse()
                .expect("valid hex"),
        coinb2: "ffffffff0100f2052a01000000015100000000"
            .parse()
            .expect("valid hex"),
        merkle_branch: Vec::new(),
        version: quarry_protocol::HexU32Be(0x2000_0000),
        nbits: quarry_protocol::HexU32Be(0x1d00_ffff),
        ntime: quarry_protocol::HexU32Be(0x6553_f100),
        clean_jobs: true,
    };
    let difficulty = Difficulty::new(1e15).expect("positive");
    Job::new(
        0,
        0,
        notify,
        Extranonce::from_counter(1, 4),
        4,
        difficulty,
        0x1fff_e000,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_benchmark_counts_every_thread() {
        let result = run(2, Kernel::fastest(), Duration::from_millis(200));
        assert_eq!(result.threads, 2);
        assert_eq!(result.per_thread.len(), 2);
        assert!(result.per_thread.iter().all(|r| *r > 0.0), "{result:?}");
        assert!(result.hashes > 0);
        let json = serde_json::to_value(&result).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "{json}");
    }
}
