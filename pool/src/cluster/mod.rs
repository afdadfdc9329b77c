//! Several pool nodes acting as one pool on one PostgreSQL database: node-id leases,
//! heartbeats, node status, shared bans, and the notifications that move every node to a
//! new block at once. Absent when the pool runs alone (on SQLite).
//!
//! # Node ids
//!
//! A node takes the lowest id (0..=255) whose lease has expired, in a transaction that
//! locks the `nodes` table, so two live nodes never hold one id. The id is the high byte of
//! every extranonce1 the node hands out, so no two nodes hand out the same work.
//!
//! # Leases and partitions
//!
//! Every [`HEARTBEAT`] the node renews its lease to [`LEASE`] from the database's now and
//! reports its job, sessions and hashrate. It counts the lease as its own only until
//! [`LEASE`] minus [`LEASE_MARGIN`] after the start of its last successful renewal (by its
//! own monotonic clock), which is before the database lets another node take the id. A node
//! cut off from the database that long stops serving ([`Cluster::lost`]) before any other
//! node may take its id. A shorter outage of the database (a restart) ends no lease.
//!
//! - `status.rs`: ok, lagging or dead, from the heartbeats.
//! - `settings.rs`: the settings every node must share.
//! - `bans.rs`: bans made on any node, enforced on every node.

pub mod bans;
pub mod settings;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::ledger::postgres::Target;
use crate::ledger::{BoxError, LedgerError};
use crate::limits::Guard;
pub use status::{Health, NodeStatus};

/// How often a node renews its lease and reports.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a renewed lease lasts, by the database's clock.
pub const LEASE: Duration = Duration::from_secs(60);
/// How much sooner than [`LEASE`] a node stops counting on an unrenewed lease.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Node ids: the high byte of an extranonce1.
const NODE_IDS: i32 = 256;

/// This node's membership of the cluster.
pub struct Cluster {
    id: u8,
    /// Who holds the lease: unique to this process.
    holder: String,
    target: Target,
    /// The last successful renewal's deadline, set by [`Cluster::join`].
    joined_until: Instant,
    nodes: ArcSwap<Vec<NodeStatus>>,
    lost: CancellationToken,
    chain_changed: Arc<Notify>,
    block_found: Arc<Notify>,
}

/// What a node reports with each heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Beat {
    /// Where its miners connect.
    pub address: String,
    pub job_height: u64,
    pub job_id: String,
    pub sessions: u64,
    pub hashrate: f64,
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The database could not be reached or refused a query.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// All 256 node ids are leased by live nodes.
    #[error("every node id (0..=255) is held by a live node of the cluster")]
    Full,
    /// This node's settings are not the live cluster's.
    #[error(
        "this node's settings differ from the cluster's (stored by node {set_by} at {set_at}); \
         start it with the cluster's settings, or stop every node to change them:\n  {}",
        differences.join("\n  ")
    )]
    Settings {
        set_by: i32,
        set_at: String,
        differences: Vec<String>,
    },
}

const TAKEN_IDS: &str = "SELECT id FROM nodes WHERE lease_until > now()";
const STORED_SETTINGS: &str = "SELECT settings, set_by, \
     to_char(set_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM cluster_settings";
const STORE_SETTINGS: &str = "INSERT INTO cluster_settings (settings, set_by, set_at) \
     VALUES ($1, $2, now()) ON CONFLICT (singleton) DO UPDATE SET settings = excluded.settings, \
     set_by = excluded.set_by, set_at = excluded.set_at";
const CLAIM: &str =
    "INSERT INTO nodes (id, holder, lease_until, started_at, heartbeat_at, version) \
     VALUES ($1, $2, now() + make_interval(secs => $3), now(), now(), $4) \
     ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until, \
     started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
     version = excluded.version, address = '', job_height = NULL, job_id = NULL, \
     sessions = 0, hashrate = 0";
const RENEW: &str = "UPDATE nodes SET lease_until = now() + make_interval(secs => $3), \
     heartbeat_at = now(), address = $4, job_height = $5, job_id = $6, sessions = $7, \
     hashrate = $8 WHERE id = $1 AND holder = $2";
/// A node that leaves cleanly leaves no row: its id is free, and it is not dead.
const RELEASE: &str = "DELETE FROM nodes WHERE id = $1 AND holder = $2";
const NODES: &str = "SELECT id, address, version, job_height, job_id, sessions, hashrate, \
     (extract(epoch FROM now() - heartbeat_at) * 1000)::int8, \
     to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
     to_char(heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
     lease_until > now() FROM nodes WHERE heartbeat_at > now() - interval '1 day' ORDER BY id";

impl Cluster {
    /// Joins the cluster on the database `url` names: checks `settings` against the
    /// cluster's and takes a node id.
    ///
    /// # Errors
    ///
    /// [`JoinError::Settings`] if live nodes run with other settings, [`JoinError::Full`],
    /// or [`JoinError::Ledger`] if the database cannot be used.
    pub async fn join(url: &str, settings: Value) -> Result<Cluster, JoinError> {
        let target = Target::parse(url)?;
        let started = Instant::now();
        let db_error = |operation: &'static str| {
            let location = target.location.clone();
            move |source: tokio_postgres::Error| LedgerError::Open {
                location,
                operation,
                source: BoxError::from(source),
            }
        };
        let mut client = target.connect().await.map_err(db_error("connect"))?;
        let holder = holder();
        let tx = client
            .transaction()
            .await
            .map_err(db_error("take a node id"))?;
        tx.batch_execute("LOCK TABLE nodes IN SHARE ROW EXCLUSIVE MODE")
            .await
            .map_err(db_error("take a node id"))?;
        let taken: Vec<i32> = tx
            .query(TAKEN_IDS, &[])
            .await
            .map_err(db_error("take a node id"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let id = (0..NODE_IDS)
            .find(|id| !taken.contains(id))
            .ok_or(JoinError::Full)?;
        let stored = tx
            .query_opt(STORED_SETTINGS, &[])
            .await
            .map_err(db_error("read the cluster's settings"))?;
        match stored {
            Some(row) if row.get::<_, Value>(0) != settings && !taken.is_empty() => {
                return Err(JoinError::Settings {
                    set_by: row.get(1),
                    set_at: row.get(2),
                    differences: settings::differences(&settings, &row.get(0)),
                });
            }
            Some(row) if row.get::<_, Value>(0) == settings => {}
            _ => {
                tx.execute(STORE_SETTINGS, &[&settings, &id])
                    .await
                    .map_err(db_error("store the cluster's settings"))?;
            }
        }
        tx.execute(
            CLAIM,
            &[
                &id,
                &holder,
                &LEASE.as_secs_f64(),
                &env!("CARGO_PKG_VERSION"),
            ],
        )
        .await
        .map_err(db_error("take a node id"))?;
        tx.commit().await.map_err(db_error("take a node id"))?;
        let id = u8::try_from(id).map_err(|_| JoinError::Full)?;
        tracing::info!(node = id, ledger = %target.location, "joined the cluster");
        Ok(Cluster {
            id,
            holder,
            target,
            joined_until: started + LEASE - LEASE_MARGIN,
            nodes: ArcSwap::from_pointee(Vec::new()),
            lost: CancellationToken::new(),
            chain_changed: Arc::new(Notify::new()),
            block_found: Arc::new(Notify::new()),
        })
    }

    /// This node's id, the high byte of its extranonce1s.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Every node seen in the last day with its status, as of the last heartbeat.
    pub fn nodes(&self) -> Arc<Vec<NodeStatus>> {
        self.nodes.load_full()
    }

    /// Cancelled when this node no longer holds its id: it must stop serving.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Woken when another node extended the embedded chain.
    pub fn chain_changed(&self) -> Arc<Notify> {
        self.chain_changed.clone()
    }

    /// Woken when a node recorded a found block.
    pub fn block_found(&self) -> Arc<Notify> {
        self.block_found.clone()
    }

    /// Renews the lease and reports `beat()` every [`HEARTBEAT`], reads the nodes' status,
    /// and shares bans through `guard` (calling `kick` for each address banned elsewhere),
    /// until `shutdown`, when it gives up the id; or until the lease is lost.
    pub async fn run(
        self: Arc<Self>,
        beat: impl Fn() -> Beat + Send + 'static,
        guard: Arc<Guard>,
        kick: impl Fn(std::net::IpAddr) + Send + 'static,
        shutdown: CancellationToken,
    ) {
        tokio::spawn(self.clone().listen(shutdown.clone()));
        // The first heartbeat connects; a broken connection is dropped and made again.
        let mut client: Option<Client> = None;
        let mut valid_until = self.joined_until;
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing_since: Option<Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if Instant::now() >= valid_until {
                tracing::error!(
                    node = self.id,
                    "lease not renewed in time: another node may take this id, so this node stops serving"
                );
                self.lost.cancel();
                return;
            }
            let started = Instant::now();
            let attempt = tokio::time::timeout(
                HEARTBEAT * 2,
                self.heartbeat(&mut client, beat(), &guard, &kick),
            )
            .await;
            match attempt {
                Ok(Ok(true)) => {
                    valid_until = started + LEASE - LEASE_MARGIN;
                    if let Some(since) = failing_since.take() {
                        tracing::info!(node = self.id, after = ?since.elapsed(), "heartbeats resumed");
                    }
                }
                Ok(Ok(false)) => {
                    tracing::error!(
                        node = self.id,
                        "another node holds this id now; this node stops serving"
                    );
                    self.lost.cancel();
                    return;
                }
                Ok(Err(error)) => {
                    client = None;
                    if failing_since.is_none() {
                        tracing::warn!(node = self.id, error = %crate::ledger::error_chain(&error), "heartbeat failed; retrying");
                        failing_since = Some(started);
                    }
                }
                Err(_) => {
                    client = None;
                    if failing_since.is_none() {
                        tracing::warn!(node = self.id, "heartbeat timed out; retrying");
                        failing_since = Some(started);
                    }
                }
            }
        }
        self.leave(client).await;
    }

    /// One renewal: `false` if the id is no longer ours.
    async fn heartbeat(
        &self,
        client: &mut Option<Client>,
        beat: Beat,
        guard: &Guard,
        kick: &impl Fn(std::net::IpAddr),
    ) -> Result<bool, tokio_postgres::Error> {
        if client.is_none() {
            *client = Some(self.target.connect().await?);
        }
        let Some(db) = client.as_ref() else {
            unreachable!("connected above");
        };
        let id = i32::from(self.id);
        let renewed = db
            .execute(
                RENEW,
                &[
                    &id,
                    &self.holder,
                    &LEASE.as_secs_f64(),
                    &beat.address,
                    &i64::try_from(beat.job_height).unwrap_or(i64::MAX),
                    &beat.job_id,
                    &i64::try_from(beat.sessions).unwrap_or(i64::MAX),
                    &beat.hashrate,
                ],
            )
            .await?;
        if renewed == 0 {
            return Ok(false);
        }
        let mut nodes: Vec<NodeStatus> = db
            .query(NODES, &[])
            .await?
            .iter()
            .map(|row| NodeStatus {
                id: u8::try_from(row.get::<_, i32>(0)).unwrap_or(u8::MAX),
                status: Health::Ok,
                address: row.get(1),
                version: row.get(2),
                job_height: row
                    .get::<_, Option<i64>>(3)
                    .and_then(|h| u64::try_from(h).ok()),
                job_id: row.get(4),
                sessions: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
                hashrate: row.get(6),
                heartbeat_age_ms: row.get(7),
                started: row.get(8),
                last_heartbeat: row.get(9),
                lease_held: row.get(10),
            })
            .collect();
        status::classify(&mut nodes);
        self.nodes.store(Arc::new(nodes));
        bans::sync(db, guard, self.id, kick).await?;
        Ok(true)
    }

    /// Gives up the id at a clean shutdown, so a restarted node can take it at once and
    /// no one counts this node as dead.
    async fn leave(&self, client: Option<Client>) {
        let client = match client {
            Some(client) => client,
            None => match self.target.connect().await {
                Ok(client) => client,
                Err(_) => return,
            },
        };
        let released = client
            .execute(RELEASE, &[&i32::from(self.id), &self.holder])
            .await;
        if released.is_ok() {
            tracing::info!(node = self.id, "left the cluster");
        }
    }

    /// Wakes [`Cluster::chain_changed`] and [`Cluster::block_found`] on the database's
    /// notifications, reconnecting when the connection drops (and waking both then, since
    /// notifications may have been missed).
    async fn listen(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let listening = async {
                let (client, mut notes) = self.target.connect_listening(64).await?;
                client
                    .batch_execute("LISTEN quarry_chain; LISTEN quarry_block")
                    .await?;
                self.chain_changed.notify_one();
                self.block_found.notify_one();
                while let Some((channel, _)) = notes.recv().await {
                    match channel.as_str() {
                        "quarry_chain" => self.chain_changed.notify_one(),
                        "quarry_block" => self.block_found.notify_one(),
                        _ => {}
                    }
                }
                drop(client);
                Ok::<(), tokio_postgres::Error>(())
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                result = listening => {
                    if let Err(error) = result {
                        tracing::debug!(error = %crate::ledger::error_chain(&error), "notification connection failed");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(HEARTBEAT / 2) => {}
            }
        }
    }
}

/// A lease holder name unique to this process: pid and start time.
fn holder() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("pid{}-{nanos:x}", std::process::id())
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
