//! What the load generator measures: latency percentiles, and a pool process's
//! memory and CPU time read from `/proc`.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of `samples` (sorted here); all zero when empty.
    pub fn of(samples: &mut [Duration]) -> Percentiles {
        samples.sort_unstable();
        let at = |p: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least p of them at or below it.
            let rank = (p * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1].as_secs_f64() * 1e3
        };
        Percentiles {
            count: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: at(1.0),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms (n = {})",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, fixed at 100 in
/// the Linux ABI on every architecture the pool targets).
const USER_HZ: f64 = 100.0;

/// A process observed through `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessProbe {
    pub pid: u32,
}

impl ProcessProbe {
    /// Resident set size in KiB (`VmRSS`).
    ///
    /// # Errors
    /// The process is gone or `/proc` is unreadable.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmRSS in {path}"))
    }

    /// User plus system CPU time of all the process's threads.
    ///
    /// # Errors
    /// The process is gone or its `stat` line is not as documented in proc(5).
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name may hold spaces; fields are counted after its ')'.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .with_context(|| format!("malformed {path}"))?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("malformed {path}"))
        };
        Ok(Duration::from_secs_f64(
            (ticks(11)? + ticks(12)?) as f64 / USER_HZ,
        ))
    }
}

/// This process's own CPU time.
///
/// # Errors
/// `/proc/self/stat` is unreadable.
pub fn own_cpu() -> anyhow::Result<Duration> {
    ProcessProbe {
        pid: std::process::id(),
    }
    .cpu()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=1000).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.p999_ms, 999.0);
        assert_eq!(p.max_ms, 1000.0);
        assert_eq!(Percentiles::of(&mut []).max_ms, 0.0);
    }

    #[test]
    fn reads_own_process() {
        let me = ProcessProbe {
            pid: std::process::id(),
        };
        assert!(me.rss_kib().unwrap() > 0);
        me.cpu().unwrap();
    }
}
