//! Quarry's CPU miner: SHA-256d nonce scanning for Stratum V1 pools over TCP or TLS
//! and Stratum V2 pools over Noise, with failover across both.
//!
//! # Layout
//! - [`config`]: the command line, `QUARRY_MINER_*` variables and the TOML file,
//!   merged and checked into a [`config::MinerConfig`].
//! - [`url`]: `stratum+tcp://` / `stratum+ssl://` / `stratum2+tcp://` pool URLs.
//! - [`tls`]: which server certificates to trust (platform roots, CA file, pinned
//!   fingerprint) and the TLS connector.
//! - [`session`]: the sans-IO Stratum V1 client session: pool lines in, actions out.
//! - [`session_v2`]: the sans-IO Stratum V2 client session: one channel, pool
//!   messages in, the same actions out.
//! - [`job`]: a job as the threads hash it, and its disjoint work units.
//! - [`hasher`]: the hashing threads and the job board they poll.
//! - [`kernel`]: per-job precomputation ([`kernel::PreparedWork`]), the nonce-scanning
//!   kernels (portable, SHA-NI, AVX2, AVX-512), run-time selection of the fastest one
//!   the CPU supports, and the final [`kernel::verify`] of every candidate.
//! - [`client`]: connections (V1 lines, V2 Noise with the pinned authority key),
//!   reconnects with backoff, failover and failback.
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
pub mod session_v2;
pub mod stats;
pub mod tls;
pub mod url;
