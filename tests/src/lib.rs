//! Harness for Quarry's end-to-end tests: runs the real `quarry-pool` binary on
//! loopback ports it picks itself, speaks raw Stratum lines to it over TCP
//! or TLS, runs the real `quarry-miner` against it, and stands in for Bitcoin Core
//! with the replies of a real node. [`load`] is the `quarry-load` load generator
//! (see BENCHMARKS.md).

pub mod client;
pub mod grind;
pub mod load;
pub mod mined;
pub mod miner;
pub mod node;
pub mod peers;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod regtest;
pub mod translator;
pub mod v2;
pub mod wire;
pub mod workspace;

pub use client::Client;
pub use miner::MinerProcess;
pub use process::{Killed, PoolProcess};

/// For a test that needs an outside program: says why it skips, or fails when
/// the environment variable `required` is set (as CI sets it), so it cannot
/// skip where it must run.
pub fn skip_unless_required(required: &str, why: &str) {
    assert!(
        std::env::var_os(required).is_none(),
        "{required} is set but {why}"
    );
    eprintln!("SKIPPED: {why}");
}
