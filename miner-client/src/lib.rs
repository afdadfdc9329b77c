//! Quarry's CPU miner: SHA-256d nonce scanning for Stratum V1 jobs.
//!
//! # Layout
//! - [`kernel`]: per-job precomputation ([`kernel::PreparedWork`]), the nonce-scanning
//!   kernels (portable, SHA-NI, AVX2, AVX-512), run-time selection of the fastest one
//!   the CPU supports, and the final [`kernel::verify`] of every candidate.

pub mod kernel;
