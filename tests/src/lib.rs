//! Harness for Quarry's end-to-end tests: runs the real `quarry-pool` binary on
//! loopback ports it picks itself, and speaks raw Stratum lines to it over TCP
//! or TLS.

pub mod client;
pub mod grind;
pub mod process;

pub use client::Client;
pub use process::PoolProcess;
