//! Quarry's CPU miner: SHA-256d nonce scanning for Stratum V1 pools, over TCP or TLS,
//! with failover.
//!
//! # Layout
//! - [`config`]: the command line, `QUARRY_MINER_*` variables and the TOML file,
//!   merged and checked into a [`config::MinerConfig`].
//! - [`url`]: `stratum+tcp://` / `stratum+ssl://` pool URLs.
//! - [`tls`]: which server certificates to trust (platform roots, CA file, pinned
//!   fingerprint) and the TLS connector.
//! - [`session`]: the sans-IO client session: pool lines in, actions out.
//! - [`job`]: a job as the threads hash it, and its disjoint work units.
//! - [`hasher`]: the hashing threads and the job board they poll.
//! - [`kernel`]: per-job precomputation ([`kernel::PreparedWork`]), the nonce-scanning
//!   kernels (portable, SHA-NI, AVX2, AVX-512), run-time selection of the fastest one
//!   the CPU supports, and the final [`kernel::verify`] of every candidate.
//! - [`client`]: connections, reconnects with backoff, failover and failback.
//! - [`stats`]: hash and share counters and the summary line.
//! - [`api`]: the optional `/status` and `/metrics` HTTP endpoints.
//! - [`benchmark`]: `--benchmark`, offline hashing of a synthetic job.
//! - [`run`]: logging and the top level of the binary.

pub mod api;
pub mod benchmark;
pub mod client;
pub mod config;
pub mod hasher;
pub mod job;
pub mod kernel;
pub mod run;
pub mod session;
pub mod stats;
pub mod tls;
pub mod url;
