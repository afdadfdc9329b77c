//! CPU miners nobody here wrote, run as they are: pooler's cpuminer 2.5.1
//! (`minerd`, named by `QUARRY_MINERD`) and cpuminer-opt 26.1 (named by
//! `QUARRY_CPUMINER_OPT`). They are built outside the repository; a test that
//! needs one skips without it, unless `QUARRY_REQUIRE_PEERS` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::process::{forward, Killed};

/// A miner program and the variable that names its binary.
pub struct Peer {
    pub name: &'static str,
    pub variable: &'static str,
}

/// pooler's cpuminer: applies a new difficulty from the next job.
pub const MINERD: Peer = Peer {
    name: "pooler cpuminer (minerd)",
    variable: "QUARRY_MINERD",
};

/// cpuminer-opt: restarts its search on every notify, and drops the
/// connection on a blank line.
pub const CPUMINER_OPT: Peer = Peer {
    name: "cpuminer-opt",
    variable: "QUARRY_CPUMINER_OPT",
};

/// A running miner; killed on drop. Its stdout and stderr lines arrive on `lines`.
pub struct PeerMiner {
    pub process: Killed,
    pub lines: mpsc::Receiver<String>,
}

impl PeerMiner {
    /// Sends the process signal `name` (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.process.0.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{name}");
    }

    /// Everything it printed so far, for failure messages.
    pub fn transcript(&self) -> String {
        self.lines.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Peer {
    /// The binary, or `None` (having said why) when the variable is unset.
    pub fn binary(&self) -> Option<PathBuf> {
        let binary = std::env::var_os(self.variable).map(PathBuf::from);
        if binary.is_none() {
            crate::skip_unless_required(
                "QUARRY_REQUIRE_PEERS",
                &format!("{} is not set (the path of {})", self.variable, self.name),
            );
        }
        binary
    }

    /// Starts `binary` mining SHA-256d on one thread at `url` as `worker`,
    /// trusting `cert` for `stratum+tcps` URLs.
    pub fn start(binary: &Path, url: &str, worker: &str, cert: &Path) -> PeerMiner {
        let mut child = Command::new(binary)
            .args([
                "-a", "sha256d", "-t", "1", "-o", url, "-u", worker, "-p", "x",
            ])
            .arg(format!("--cert={}", cert.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the miner");
        let (tx, lines) = mpsc::channel();
        forward(child.stdout.take().expect("stdout"), tx.clone());
        forward(child.stderr.take().expect("stderr"), tx);
        PeerMiner {
            process: Killed(child),
            lines,
        }
    }
}
