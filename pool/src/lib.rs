//! Quarry's Stratum V1 pool.
//!
//! Data flows one way: socket → codec → session → validator → ledger/accounting →
//! reply. Jobs flow the other way: chain → job source → job book → one
//! pre-serialized notify → every session.
//!
//! # Layout
//! - [`config`]: options from flags, `QUARRY_POOL_*` env and the TOML file.
//! - [`server`]: starting and stopping the pool; [`run`]: the `run` command.
//! - [`listener`]: plain and TLS accept loops; [`tls`]: certificates and reload.
//! - [`context`]: what the running pool shares (job book, accounting, ledger, limits).
//! - [`session`]: one Stratum connection.
//! - [`extranonce`]: extranonce1 leases.
//! - [`validate`]: share validation.
//! - [`vardiff`]: per-connection difficulty.
//! - [`limits`]: connection caps, rate limits, bans, the allow-list.
//! - [`jobs`]: the job book and the fan-out of jobs.
//! - [`source`]: the job source (embedded chain or Bitcoin Core) and found blocks.
//! - [`chain`]: the embedded chain.
//! - [`bitcoind`]: Bitcoin Core as the job source.
//! - [`coinbase`]: coinbase transactions with an extranonce slot, block assembly.
//! - [`accounting`]: per-worker and pool numbers in memory; [`atomic`]: lock-free cells;
//!   [`accounts`]: accounts as the sum of their workers.
//! - [`metrics`]: Prometheus metrics; process numbers from `/proc/self`.
//! - [`ledger`]: the share ledger behind one interface, on SQLite or PostgreSQL, with
//!   group commit.
//! - [`cluster`]: nodes of one pool on PostgreSQL: leases, heartbeats, status, bans.
//! - [`history`]: hashrate history per minute, written to the ledger.
//! - [`watch`]: offline and hashrate-drop detection, the webhook.
//! - [`dashboard`]: the operator's web page at `/`, embedded.
//! - [`api`]: the HTTP API; [`cli`]: the `workers`, `blocks` and `nodes` commands.

pub mod accounting;
pub mod accounts;
pub mod api;
pub mod atomic;
pub mod authority;
pub mod bitcoind;
pub mod chain;
pub mod cli;
pub mod cluster;
pub mod coinbase;
pub mod config;
pub mod context;
pub mod dashboard;
pub mod extranonce;
pub mod history;
pub mod jobs;
pub mod ledger;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod reward;
pub mod run;
pub mod server;
pub mod session;
pub mod source;
pub mod tls;
pub mod validate;
pub mod vardiff;
pub mod watch;
