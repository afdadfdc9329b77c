//! Quarry's Stratum V1 pool.
//!
//! # Layout
//! - [`chain`]: the embedded chain, the default job source.
//! - [`coinbase`]: coinbase transactions with an extranonce slot, and block assembly.
//! - [`store`]: the SQLite store with group commit (shares, blocks, chain, totals).

pub mod chain;
pub mod coinbase;
pub mod store;
