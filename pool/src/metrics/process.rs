//! The pool process's own numbers from `/proc/self`: CPU time, resident memory,
//! open file descriptors.

/// Clock ticks per second of `/proc/*/stat` times: Linux's `USER_HZ`, fixed at
/// 100 in the kernel's user-space ABI.
const USER_HZ: f64 = 100.0;

/// A snapshot of the process; fields are `None` where `/proc` could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads the current process's numbers.
    pub fn read() -> ProcessStats {
        ProcessStats {
            cpu_seconds: std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|stat| cpu_seconds(&stat)),
            resident_bytes: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|status| resident_bytes(&status)),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
        }
    }
}

/// User plus system time from the text of `/proc/<pid>/stat`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is parenthesized and may hold spaces: split after it.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// `VmRSS` from the text of `/proc/<pid>/status`, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let stat = "4242 (quarry pool) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 2000 300";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        let status = "Name:\tquarry-pool\nVmRSS:\t   10240 kB\nThreads:\t9\n";
        assert_eq!(resident_bytes(status), Some(10 * 1024 * 1024));
        assert_eq!(cpu_seconds("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.is_some_and(|b| b > 0));
        assert!(stats.open_fds.is_some_and(|n| n >= 3));
        assert!(stats.cpu_seconds.is_some());
    }
}
