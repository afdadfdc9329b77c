//! What the whole pool shares while it runs: the configuration, the job book, accounting,
//! the ledger, limits, live sessions and counters. Sessions, the API and the metrics scrape
//! read it; [`crate::server`] builds it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use dashmap::DashMap;
use quarry_protocol::sv2::AuthorityKeypair;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::accounting::Accounting;
use crate::cluster::Cluster;
use crate::config::PoolConfig;
use crate::extranonce::Allocator;
use crate::jobs::JobBook;
use crate::ledger::Ledger;
use crate::limits::Guard;
use crate::metrics::Metrics;
use crate::reward::Reward;
use crate::validate::Solved;

/// What every session shares.
pub struct Context {
    pub config: Arc<PoolConfig>,
    pub book: Arc<JobBook>,
    pub accounting: Arc<Accounting>,
    pub ledger: Arc<dyn Ledger>,
    /// Who blocks pay: the scheme, and solo miners' addresses.
    pub reward: Arc<Reward>,
    pub extranonces: Allocator,
    /// Shares that solve a block go here, to the job source, at once.
    pub blocks: mpsc::Sender<Solved>,
    pub shutdown: CancellationToken,
    pub next_session: AtomicU64,
    pub guard: Arc<Guard>,
    /// Live sessions by id, for listing and kicking.
    pub sessions: DashMap<u64, SessionInfo>,
    pub metrics: Arc<Metrics>,
    /// This node's membership of a cluster (`None` when the pool runs alone).
    pub cluster: Option<Arc<Cluster>>,
    /// The key Stratum V2 connections prove (`None` when V2 is off).
    pub authority: Option<AuthorityKeypair>,
}

/// What the API shows of a live session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub peer: SocketAddr,
    pub connected: String,
    pub workers: Vec<String>,
    #[serde(skip)]
    pub kick: CancellationToken,
}
