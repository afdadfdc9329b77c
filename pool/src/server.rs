//! Starting and stopping the whole pool: ledger, job source, job book, listeners, API.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bitcoin::{Address, Network, ScriptBuf};
use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounting::{now_ms, Accounting};
use crate::bitcoind::gbt::CoinbaseConfig;
use crate::bitcoind::rpc::RpcClient;
use crate::bitcoind::{BitcoindSource, Settings};
use crate::chain::{ChainParams, EmbeddedChain};
use crate::cluster::{Beat, Cluster};
use crate::config::{BitcoindConfig, PoolConfig};
use crate::context::Context;
use crate::extranonce::Allocator;
use crate::history::HistoryWriter;
use crate::jobs::JobBook;
use crate::ledger::{Database, Ledger, LedgerOptions};
use crate::limits::Guard;
use crate::listener::{accept_loop, Transport};
use crate::metrics::Metrics;
use crate::reward::Reward;
use crate::source::{paid_template, EmbeddedSource, JobSource, Outlets};
use crate::tls::{CertSource, Tls};
use crate::watch::monitor::Monitor;
use crate::watch::webhook::Webhook;

/// Extranonce1 size in bytes.
pub const EXTRANONCE1_SIZE: usize = 4;
/// Solved blocks waiting for the job source.
const SOLVED_QUEUE: usize = 1024;

/// A running pool.
pub struct Pool {
    pub stratum_tcp: Option<SocketAddr>,
    pub stratum_tls: Option<SocketAddr>,
    pub stratum_v2: Option<SocketAddr>,
    pub api: Option<SocketAddr>,
    pub tls: Option<Arc<Tls>>,
    pub ctx: Arc<Context>,
    tracker: TaskTracker,
    background: TaskTracker,
}

/// The script block rewards pay to: the payout address, or `OP_TRUE` by default.
fn payout_script(address: Option<&str>) -> anyhow::Result<ScriptBuf> {
    match address {
        None => Ok(ScriptBuf::from_bytes(vec![
            bitcoin::opcodes::OP_TRUE.to_u8()
        ])),
        Some(text) => {
            let address: Address<_> = text
                .parse()
                .with_context(|| format!("payout address {text:?} is not an address"))?;
            let address = address
                .require_network(Network::Regtest)
                .with_context(|| format!("payout address {text:?} is not a regtest address"))?;
            Ok(address.script_pubkey())
        }
    }
}

/// The embedded chain, opened from the ledger (or created), and its first job.
async fn embedded_source(
    config: &PoolConfig,
    ledger: &Arc<dyn Ledger>,
    outlets: impl Fn(&Arc<JobBook>, &Arc<Reward>) -> Outlets,
    cluster: Option<&Cluster>,
) -> anyhow::Result<(Arc<JobBook>, JobSource, Arc<Reward>)> {
    let operator = payout_script(config.payout_address.as_deref())?;
    let reward = Arc::new(Reward::new(
        config.reward,
        operator.clone(),
        Network::Regtest,
        ledger.clone(),
    ));
    let params = ChainParams {
        initial_difficulty: config.chain_difficulty,
        block_time: config.block_time,
        retarget_interval: config.retarget_interval,
        payout: operator,
        pool_tag: config.pool_tag.as_bytes().to_vec(),
        extranonce_len: EXTRANONCE1_SIZE + config.extranonce2_size,
    };
    let stored = ledger
        .chain_blocks(0)
        .await
        .context("reading the stored chain")?;
    let fresh = stored.is_empty();
    let chain = EmbeddedChain::open(params, stored).context("opening the embedded chain")?;
    if fresh {
        let genesis = bitcoin::consensus::serialize(chain.genesis());
        ledger
            .append_chain_block(0, genesis)
            .await
            .context("storing the genesis block")?;
    }
    tracing::info!(height = chain.height(), tip = %chain.tip_hash(), difficulty = chain.network_difficulty(), "embedded chain ready");
    let chain = Mutex::new(chain);
    let book = Arc::new(JobBook::new(paid_template(&chain, &reward).await));
    let source = Arc::new(EmbeddedSource {
        chain,
        out: outlets(&book, &reward),
        node: cluster.map(Cluster::id),
        chain_changed: cluster.map(Cluster::chain_changed),
    });
    Ok((book, JobSource::Embedded(source), reward))
}

/// Bitcoin Core: waits for a node, checks the payout address against its network, and
/// takes its first template.
async fn bitcoind_source(
    config: &PoolConfig,
    bitcoind: &BitcoindConfig,
    ledger: &Arc<dyn Ledger>,
    outlets: impl Fn(&Arc<JobBook>, &Arc<Reward>) -> Outlets,
    cluster: Option<&Cluster>,
) -> anyhow::Result<(Arc<JobBook>, JobSource, Arc<Reward>)> {
    // Long polls wake at once for a new block but only every minute or so for mempool
    // changes, so their timeout must be well above a minute.
    let long_poll_timeout = bitcoind.timeout.max(Duration::from_secs(180));
    let rpc = RpcClient::new(
        bitcoind.urls.clone(),
        bitcoind.auth.clone(),
        bitcoind.timeout,
        long_poll_timeout,
    );
    let connected = crate::bitcoind::connect(rpc).await?;
    let address = config.payout_address.as_deref().unwrap_or_default();
    let reward = Arc::new(Reward::new(
        config.reward,
        crate::bitcoind::payout_script(address, connected.network)?,
        connected.network,
        ledger.clone(),
    ));
    let coinbase = CoinbaseConfig {
        pool_tag: config.pool_tag.as_bytes().to_vec(),
        extranonce_len: EXTRANONCE1_SIZE + config.extranonce2_size,
    };
    let first = crate::bitcoind::job_template(&connected.first, &coinbase, &reward)
        .await
        .context("turning bitcoind's first template into a job")?;
    let book = Arc::new(JobBook::new(first));
    let settings = Settings {
        poll_interval: bitcoind.poll_interval,
        refresh_interval: config.job_interval,
        max_job_age: bitcoind.max_job_age,
    };
    let source = BitcoindSource::new(
        connected,
        coinbase,
        settings,
        outlets(&book, &reward),
        cluster,
    )
    .await?;
    Ok((book, JobSource::Bitcoind(Arc::new(source)), reward))
}

/// What this node reports with each cluster heartbeat.
fn heartbeat(ctx: Arc<Context>, pool: &Pool) -> impl Fn() -> Beat + Send + 'static {
    let address = [
        pool.stratum_tcp.map(|addr| format!("stratum+tcp://{addr}")),
        pool.stratum_tls.map(|addr| format!("stratum+ssl://{addr}")),
        pool.stratum_v2.map(|addr| format!("stratum2+tcp://{addr}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    move || {
        let current = ctx.book.current();
        Beat {
            address: address.clone(),
            job_height: current.job.height(),
            job_id: current.job.notify.job_id.to_string(),
            sessions: ctx.sessions.len() as u64,
            hashrate: ctx.accounting.node_hashrate(now_ms(), 600_000),
        }
    }
}

/// Heartbeats between reads of the other nodes' recent work: their minute rows change
/// once a minute per node.
const OTHERS_WORK_EVERY: u64 = 5;

/// Takes the cluster's worker totals from the ledger every heartbeat, and the other nodes'
/// recent work every [`OTHERS_WORK_EVERY`] heartbeats, so this node's API, metrics and
/// dashboard count every node's shares and hashrate.
async fn follow_cluster_totals(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(crate::cluster::HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for beat in 0u64.. {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match ctx.ledger.worker_totals().await {
            Ok(totals) => ctx.accounting.adopt_totals(totals),
            Err(err) => tracing::debug!(%err, "cannot read the cluster's worker totals"),
        }
        if beat % OTHERS_WORK_EVERY == 0 {
            let until = crate::history::written_through(now_ms());
            match ctx.ledger.others_recent_work(until).await {
                Ok(work) => ctx.accounting.adopt_others_work(work),
                Err(err) => tracing::debug!(%err, "cannot read the other nodes' work"),
            }
        }
    }
}

/// Closes this node's sessions from an address another node banned.
fn kicker(ctx: Arc<Context>) -> impl Fn(std::net::IpAddr) + Send + 'static {
    move |ip| {
        for session in ctx.sessions.iter() {
            if session.peer.ip().to_canonical() == ip {
                session.kick.cancel();
            }
        }
    }
}

async fn bind(addr: Option<SocketAddr>, what: &str) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("binding the {what} listener to {addr}")),
    }
}

impl Pool {
    /// Opens the ledger and chain, binds every listener and starts serving.
    ///
    /// # Errors
    /// Unusable data directory, invalid chain data, certificates, or addresses in use.
    pub async fn start(config: PoolConfig) -> anyhow::Result<Pool> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let options = LedgerOptions {
            share_retention: config.share_retention,
            ..LedgerOptions::default()
        };
        let ledger = crate::ledger::open(&config.database, options)
            .await
            .context("opening the share ledger")?;
        let cluster = match &config.database {
            Database::Postgres { url } => {
                let cluster = Cluster::join(url, crate::cluster::settings::shared(&config))
                    .await
                    .context("joining the cluster")?;
                ledger.set_node(cluster.id());
                Some(Arc::new(cluster))
            }
            Database::Sqlite { .. } => None,
        };

        // Hashrate windows are this node's own: in a cluster the recent shares in the
        // ledger are every node's, so they are not replayed.
        let recent = match cluster {
            None => ledger
                .shares_since(now_ms() - 3_600_000)
                .await
                .context("reading recent shares")?,
            Some(_) => Vec::new(),
        };
        let accounting = Arc::new(Accounting::restore(
            ledger
                .worker_totals()
                .await
                .context("reading worker totals")?,
            recent,
        ));
        let metrics = Arc::new(Metrics::new(config.metrics_per_worker));
        let webhook = match &config.watch.webhook {
            Some(url) => Some(Arc::new(
                Webhook::start(url.clone(), metrics.webhook.clone())
                    .context("starting the webhook sender")?,
            )),
            None => None,
        };
        let outlets = |book: &Arc<JobBook>, reward: &Arc<Reward>| Outlets {
            book: book.clone(),
            ledger: ledger.clone(),
            accounting: accounting.clone(),
            reward: reward.clone(),
            webhook: webhook.clone(),
        };
        let (book, source, reward) = match &config.bitcoind {
            None => embedded_source(&config, &ledger, outlets, cluster.as_deref()).await?,
            Some(bitcoind) => {
                bitcoind_source(&config, bitcoind, &ledger, outlets, cluster.as_deref()).await?
            }
        };
        let authority = match config.stratum_v2 {
            None => None,
            Some(_) => Some(
                crate::authority::load_or_create(
                    config.sv2_authority_key.as_deref(),
                    &config.data_dir,
                )
                .context("loading the Stratum V2 authority key")?,
            ),
        };
        let shutdown = CancellationToken::new();
        let (solved_tx, solved_rx) = tokio::sync::mpsc::channel(SOLVED_QUEUE);
        let ctx = Arc::new(Context {
            config: Arc::new(config.clone()),
            book: book.clone(),
            accounting: accounting.clone(),
            ledger: ledger.clone(),
            reward,
            extranonces: cluster
                .as_deref()
                .map_or_else(Allocator::default, |cluster| {
                    Allocator::for_node(cluster.id())
                }),
            blocks: solved_tx,
            shutdown: shutdown.clone(),
            next_session: AtomicU64::new(1),
            guard: Guard::new(config.limits.clone()),
            sessions: DashMap::new(),
            metrics,
            cluster: cluster.clone(),
            authority,
        });
        if cluster.is_some() {
            ctx.guard.share_bans();
        }

        let tracker = TaskTracker::new();
        let background = TaskTracker::new();
        background.spawn({
            let (guard, shutdown) = (ctx.guard.clone(), shutdown.clone());
            async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        _ = tick.tick() => guard.tidy(),
                    }
                }
            }
        });
        background.spawn(source.run(solved_rx, config.job_interval, shutdown.clone()));
        let history = HistoryWriter::new(ctx.accounting.clone(), ctx.ledger.clone(), now_ms());
        background.spawn(history.run(shutdown.clone()));
        let monitor = Monitor::new(ctx.accounting.clone(), config.watch.clone(), webhook);
        background.spawn(monitor.run(shutdown.clone()));

        let tls = match config.stratum_tls {
            None => None,
            Some(_) => {
                let cert_source = match &config.tls_cert {
                    Some((cert, key)) => CertSource::Files {
                        cert: cert.clone(),
                        key: key.clone(),
                    },
                    None => CertSource::SelfSigned {
                        dir: config.data_dir.clone(),
                    },
                };
                Some(Arc::new(
                    Tls::load(cert_source).context("loading the TLS certificate")?,
                ))
            }
        };

        let tcp = bind(config.stratum_tcp, "Stratum TCP").await?;
        let tls_listener = bind(config.stratum_tls, "Stratum TLS").await?;
        let v2_listener = bind(config.stratum_v2, "Stratum V2").await?;
        let api = bind(config.api, "API").await?;
        let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        let mut pool = Pool {
            stratum_tcp: local(&tcp),
            stratum_tls: local(&tls_listener),
            stratum_v2: local(&v2_listener),
            api: local(&api),
            tls: tls.clone(),
            ctx: ctx.clone(),
            tracker: tracker.clone(),
            background: background.clone(),
        };
        if let Some(listener) = tcp {
            background.spawn(accept_loop(
                listener,
                Transport::Plain,
                ctx.clone(),
                tracker.clone(),
            ));
        }
        if let (Some(listener), Some(tls)) = (tls_listener, tls) {
            background.spawn(accept_loop(
                listener,
                Transport::Tls(tls),
                ctx.clone(),
                tracker.clone(),
            ));
        }
        if let Some(listener) = v2_listener {
            background.spawn(accept_loop(
                listener,
                Transport::V2,
                ctx.clone(),
                tracker.clone(),
            ));
        }
        if let Some(listener) = api {
            let router = crate::api::router(ctx.clone());
            let shutdown = shutdown.clone();
            background.spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await })
                    .await;
                if let Err(err) = served {
                    tracing::error!(%err, "API server failed");
                }
            });
        }
        if let Some(cluster) = &cluster {
            background.spawn(follow_cluster_totals(ctx.clone()));
            background.spawn(cluster.clone().run(
                heartbeat(ctx.clone(), &pool),
                ctx.guard.clone(),
                kicker(ctx.clone()),
                shutdown.clone(),
            ));
        }
        pool.tracker = tracker;
        Ok(pool)
    }

    /// Stops accepting, lets sessions answer their in-flight shares, closes the
    /// store — all within `deadline`, after which remaining sessions are dropped.
    pub async fn shutdown(self, deadline: std::time::Duration) {
        self.ctx.shutdown.cancel();
        self.tracker.close();
        self.background.close();
        let finished = tokio::time::timeout(deadline, async {
            self.tracker.wait().await;
            self.background.wait().await;
        })
        .await;
        if finished.is_err() {
            tracing::warn!("shutdown deadline passed with sessions still open");
        }
        if let Err(err) = self.ctx.ledger.close().await {
            tracing::error!(%err, "closing the ledger");
        }
    }
}
