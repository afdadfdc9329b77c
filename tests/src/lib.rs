//! Harness for Quarry's end-to-end tests: runs the real `quarry-pool` binary on
//! loopback ports it picks itself, speaks raw Stratum lines to it over TCP
//! or TLS, runs the real `quarry-miner` against it, and stands in for Bitcoin Core
//! with the replies of a real node. [`load`] is the `quarry-load` load generator
//! (see BENCHMARKS.md).

pub mod client;
pub mod grind;
pub mod load;
pub mod miner;
pub mod node;
pub mod process;

pub use client::Client;
pub use miner::MinerProcess;
pub use process::{Killed, PoolProcess};
