//! SRI's `translator_sv2` 0.6.0 (named by `QUARRY_TRANSLATOR_SV2`), run as it is: a
//! Stratum V1 port for V1 miners in front of a Stratum V2 pool. Built outside the
//! repository; a test that needs it skips without it, unless `QUARRY_REQUIRE_PEERS`
//! is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::process::{forward, Killed};
use crate::regtest::free_port;

/// The variable naming the translator's binary.
pub const VARIABLE: &str = "QUARRY_TRANSLATOR_SV2";

/// A running translator; killed on drop.
pub struct Translator {
    pub process: Killed,
    /// Where V1 miners connect.
    pub downstream: SocketAddr,
    pub lines: mpsc::Receiver<String>,
}

/// How the translator opens channels upstream.
pub struct Setup<'a> {
    pub upstream: SocketAddr,
    pub authority: &'a str,
    pub user_identity: &'a str,
    /// One extended channel for all miners (`true`) or one per miner.
    pub aggregate: bool,
    /// The extranonce2 its V1 miners get.
    pub extranonce2_size: u16,
    /// The hashrate it assumes per miner, and the share rate it aims at downstream.
    pub miner_hashrate: f64,
    pub shares_per_minute: f64,
    /// Extensions it requires of the pool (and so asks for after set-up).
    pub required_extensions: &'a [u16],
}

/// The binary, or `None` (having said why) when the variable is unset.
pub fn binary() -> Option<PathBuf> {
    let binary = std::env::var_os(VARIABLE).map(PathBuf::from);
    if binary.is_none() {
        crate::skip_unless_required(
            "QUARRY_REQUIRE_PEERS",
            &format!("{VARIABLE} is not set (the path of SRI's translator_sv2 0.6.0)"),
        );
    }
    binary
}

impl Translator {
    /// Writes a config into `dir` (loopback only, no telemetry scan) and starts the
    /// translator; returns once it listens for V1 miners.
    pub fn start(binary: &Path, dir: &Path, setup: &Setup<'_>) -> Translator {
        let port = free_port();
        let extensions = setup.required_extensions;
        let config = format!(
            "downstream_address = \"127.0.0.1\"\n\
             downstream_port = {port}\n\
             max_supported_version = 2\n\
             min_supported_version = 2\n\
             downstream_extranonce2_size = {}\n\
             verify_payout = false\n\
             aggregate_channels = {}\n\
             supported_extensions = {extensions:?}\n\
             required_extensions = {extensions:?}\n\
             \n\
             [downstream_difficulty_config]\n\
             min_individual_miner_hashrate = {:.1}\n\
             shares_per_minute = {:.1}\n\
             enable_vardiff = true\n\
             job_keepalive_interval_secs = 60\n\
             \n\
             [[upstreams]]\n\
             address = \"{}\"\n\
             port = {}\n\
             authority_pubkey = \"{}\"\n\
             user_identity = \"{}\"\n",
            setup.extranonce2_size,
            setup.aggregate,
            setup.miner_hashrate,
            setup.shares_per_minute,
            setup.upstream.ip(),
            setup.upstream.port(),
            setup.authority,
            setup.user_identity,
        );
        let path = dir.join("tproxy.toml");
        std::fs::write(&path, config).expect("writing the translator config");
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning translator_sv2");
        let (tx, lines) = mpsc::channel();
        forward(child.stdout.take().expect("stdout"), tx.clone());
        forward(child.stderr.take().expect("stderr"), tx);
        let process = Killed(child);
        let mut seen = Vec::new();
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("translator_sv2 did not start:\n{}", seen.join("\n")));
            if line.contains("Translator Proxy: listening on") {
                break;
            }
            seen.push(line);
        }
        Translator {
            process,
            downstream: SocketAddr::from(([127, 0, 0, 1], port)),
            lines,
        }
    }

    /// Everything it printed since start-up, for failure messages and counts.
    pub fn transcript(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}
