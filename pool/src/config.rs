//! Pool configuration: every option settable by file (`--config FILE`), by
//! `QUARRY_POOL_*` environment variable, or by flag, with flag > env > file > default.
//!
//! Clap resolves flag and environment; the TOML file fills what both left unset;
//! [`PoolConfig::resolve`] applies the defaults and checks every value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
pub use quarry_protocol::logging::LogFormat;
use serde::Deserialize;

use crate::bitcoind::rpc::Auth;
use crate::ledger::Database;
use crate::limits::LimitsConfig;
use crate::reward::split::Rules;
use crate::reward::{RewardConfig, Scheme};
use crate::watch::WatchConfig;

/// Command line of `quarry-pool`.
#[derive(Debug, Parser)]
#[command(
    name = "quarry-pool",
    version,
    about = "Quarry: a Stratum V1 mining pool",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What to do; `run` when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pool (the default).
    Run(Box<RunArgs>),
    /// Print per-worker shares and hashrate from a running pool's API.
    Workers(crate::cli::WorkersArgs),
    /// Print the blocks a running pool has found.
    Blocks(crate::cli::BlocksArgs),
    /// Print the nodes of a running pool's cluster with their status.
    Nodes(crate::cli::ApiArgs),
}

/// Where jobs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// The pool's own chain: no node needed.
    #[default]
    Embedded,
    /// Bitcoin Core's `getblocktemplate`, on whatever network the node runs.
    Bitcoind,
}

/// Options of `quarry-pool run`. Every field is optional here: unset means
/// "take it from the config file, else the default" (defaults shown in `--help`).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunArgs {
    /// TOML config file (see config/pool.toml).
    #[arg(long, env = "QUARRY_POOL_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Plain Stratum listen address, or `off` [default: 0.0.0.0:3333].
    #[arg(long, env = "QUARRY_POOL_STRATUM_TCP", value_name = "ADDR|off")]
    pub stratum_tcp: Option<String>,
    /// Stratum over TLS listen address, or `off` [default: 0.0.0.0:3334].
    #[arg(long, env = "QUARRY_POOL_STRATUM_TLS", value_name = "ADDR|off")]
    pub stratum_tls: Option<String>,
    /// TLS certificate chain (PEM). Without it the pool makes a self-signed one.
    #[arg(
        long,
        env = "QUARRY_POOL_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(
        long,
        env = "QUARRY_POOL_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Stratum V2 (Noise-encrypted) listen address, or `off` [default: 0.0.0.0:3336].
    #[arg(long, env = "QUARRY_POOL_STRATUM_V2", value_name = "ADDR|off")]
    pub stratum_v2: Option<String>,
    /// Stratum V2 authority secret key file (SRI's base58check form). Without it the
    /// pool makes one in the data directory on first start.
    #[arg(long, env = "QUARRY_POOL_SV2_AUTHORITY_KEY", value_name = "FILE")]
    pub sv2_authority_key: Option<PathBuf>,
    /// HTTP API listen address, or `off` [default: 127.0.0.1:8080].
    #[arg(long, env = "QUARRY_POOL_API", value_name = "ADDR|off")]
    pub api: Option<String>,
    /// Where shares, blocks, the chain and the TLS certificate live [default: ./quarry-data].
    #[arg(long, env = "QUARRY_POOL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The share ledger: `sqlite` (a file in the data directory) or a PostgreSQL URL,
    /// postgres://USER:PASSWORD@HOST:PORT/DB[?sslmode=require], shared by every node of a
    /// cluster [default: sqlite].
    #[arg(long, env = "QUARRY_POOL_DATABASE", value_name = "sqlite|URL")]
    pub database: Option<String>,
    /// Days each accepted share's row is kept in the ledger; older rows are deleted, their
    /// work staying in the workers' totals and the per-minute hashrate history [default: 7].
    #[arg(long, env = "QUARRY_POOL_SHARE_RETENTION_DAYS", value_name = "DAYS")]
    pub share_retention_days: Option<f64>,

    /// Job source: the embedded chain, or Bitcoin Core nodes [default: embedded].
    #[arg(long, env = "QUARRY_POOL_CHAIN", value_enum)]
    pub chain: Option<ChainKind>,
    /// Bitcoin Core RPC URL, http://HOST:PORT (repeatable: later ones are failovers).
    #[arg(
        long = "bitcoind-url",
        env = "QUARRY_POOL_BITCOIND_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub bitcoind_url: Option<Vec<String>>,
    /// Bitcoin Core RPC user (with --bitcoind-password).
    #[arg(long, env = "QUARRY_POOL_BITCOIND_USER", value_name = "USER")]
    pub bitcoind_user: Option<String>,
    /// Bitcoin Core RPC password.
    #[arg(
        long,
        env = "QUARRY_POOL_BITCOIND_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub bitcoind_password: Option<String>,
    /// Bitcoin Core's `.cookie` file, instead of user and password.
    #[arg(long, env = "QUARRY_POOL_BITCOIND_COOKIE", value_name = "FILE")]
    pub bitcoind_cookie: Option<PathBuf>,
    /// Seconds between getbestblockhash polls, besides the long poll [default: 0.1].
    #[arg(
        long,
        env = "QUARRY_POOL_BITCOIND_POLL_INTERVAL",
        value_name = "SECONDS"
    )]
    pub bitcoind_poll_interval: Option<f64>,
    /// Seconds each Bitcoin Core call may take before the next node is tried [default: 10].
    #[arg(long, env = "QUARRY_POOL_BITCOIND_TIMEOUT", value_name = "SECONDS")]
    pub bitcoind_timeout: Option<f64>,
    /// Seconds jobs are served while no node answers; then miners must wait [default: 120].
    #[arg(long, env = "QUARRY_POOL_MAX_JOB_AGE", value_name = "SECONDS")]
    pub max_job_age: Option<f64>,
    /// Initial network difficulty of the embedded chain; fractional allowed [default: 0.001].
    #[arg(long, env = "QUARRY_POOL_CHAIN_DIFFICULTY", value_name = "DIFF")]
    pub chain_difficulty: Option<f64>,
    /// Target block time of the embedded chain, in seconds [default: 60].
    #[arg(long, env = "QUARRY_POOL_BLOCK_TIME", value_name = "SECONDS")]
    pub block_time: Option<f64>,
    /// Blocks between difficulty retargets of the embedded chain [default: 60].
    #[arg(long, env = "QUARRY_POOL_RETARGET_INTERVAL", value_name = "BLOCKS")]
    pub retarget_interval: Option<u32>,
    /// Address block rewards pay to: regtest format on the embedded chain [default: a
    /// fixed script]; required with bitcoind, on the node's network.
    #[arg(long, env = "QUARRY_POOL_PAYOUT_ADDRESS", value_name = "ADDRESS")]
    pub payout_address: Option<String>,
    /// Tag written into every coinbase [default: /quarry/].
    #[arg(long, env = "QUARRY_POOL_POOL_TAG", value_name = "TEXT")]
    pub pool_tag: Option<String>,
    /// Who blocks pay: `operator` (the payout address), `solo` (the finder's address, the
    /// username ADDRESS[.worker]) or `pplns` (the miners of the last shares, in the
    /// coinbase; usernames are ADDRESS[.worker]) [default: operator].
    #[arg(long, env = "QUARRY_POOL_REWARD", value_name = "SCHEME")]
    pub reward: Option<crate::reward::Scheme>,
    /// The operator's fee under solo and pplns, in basis points (100 = 1 %) [default: 0].
    #[arg(long, env = "QUARRY_POOL_POOL_FEE_BPS", value_name = "BPS")]
    pub pool_fee_bps: Option<u32>,
    /// The PPLNS window, in multiples of the network difficulty [default: 2].
    #[arg(long, env = "QUARRY_POOL_PPLNS_WINDOW", value_name = "MULTIPLE")]
    pub pplns_window: Option<f64>,
    /// Payouts below this many sats are carried as owed to a later coinbase [default: 1000].
    #[arg(long, env = "QUARRY_POOL_DUST_SATS", value_name = "SATS")]
    pub dust_sats: Option<u64>,
    /// Most coinbase outputs paying anyone (the operator's included); the rest are carried
    /// as owed [default: 100].
    #[arg(long, env = "QUARRY_POOL_MAX_COINBASE_OUTPUTS", value_name = "COUNT")]
    pub max_coinbase_outputs: Option<usize>,
    /// Seconds between non-clean job refreshes [default: 30].
    #[arg(long, env = "QUARRY_POOL_JOB_INTERVAL", value_name = "SECONDS")]
    pub job_interval: Option<f64>,

    /// Vardiff: the share interval each connection is steered to, in seconds [default: 10].
    #[arg(long, env = "QUARRY_POOL_SHARE_INTERVAL", value_name = "SECONDS")]
    pub share_interval: Option<f64>,
    /// Starting share difficulty [default: 1].
    #[arg(long, env = "QUARRY_POOL_START_DIFFICULTY", value_name = "DIFF")]
    pub start_difficulty: Option<f64>,
    /// Lowest share difficulty; down to 1e-12 [default: 1e-12].
    #[arg(long, env = "QUARRY_POOL_MIN_DIFFICULTY", value_name = "DIFF")]
    pub min_difficulty: Option<f64>,
    /// Highest share difficulty [default: 1e15].
    #[arg(long, env = "QUARRY_POOL_MAX_DIFFICULTY", value_name = "DIFF")]
    pub max_difficulty: Option<f64>,
    /// Vardiff retarget window in seconds [default: 6 share intervals].
    #[arg(long, env = "QUARRY_POOL_VARDIFF_WINDOW", value_name = "SECONDS")]
    pub vardiff_window: Option<f64>,
    /// Extranonce2 size in bytes, 2..=8 [default: 4].
    #[arg(long, env = "QUARRY_POOL_EXTRANONCE2_SIZE", value_name = "BYTES")]
    pub extranonce2_size: Option<usize>,
    /// BIP310 version-rolling mask the pool allows, hex [default: 1fffe000].
    #[arg(long, env = "QUARRY_POOL_VERSION_MASK", value_name = "HEX")]
    pub version_mask: Option<String>,

    /// Longest accepted Stratum line in bytes [default: 16384].
    #[arg(long, env = "QUARRY_POOL_MAX_LINE_LENGTH", value_name = "BYTES")]
    pub max_line_length: Option<usize>,
    /// Seconds a TLS or Noise handshake may take [default: 10].
    #[arg(long, env = "QUARRY_POOL_HANDSHAKE_TIMEOUT", value_name = "SECONDS")]
    pub handshake_timeout: Option<f64>,
    /// Seconds to finish in-flight work on SIGINT/SIGTERM [default: 10].
    #[arg(long, env = "QUARRY_POOL_SHUTDOWN_TIMEOUT", value_name = "SECONDS")]
    pub shutdown_timeout: Option<f64>,
    /// Log format [default: text]. Verbosity comes from RUST_LOG.
    #[arg(long, env = "QUARRY_POOL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve tokio-console here, e.g. 127.0.0.1:6669 (a build with the `console`
    /// feature only; keep it on loopback and tunnel over SSH) [default: off].
    #[arg(long, env = "QUARRY_POOL_CONSOLE", value_name = "ADDR")]
    pub console: Option<String>,
    /// Bearer token for the API's mutating endpoints (bans, kicks); unset disables them.
    #[arg(
        long,
        env = "QUARRY_POOL_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// The `[limits]` section: protection for a public host.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsArgs {
    /// CIDR exempt from every limit and ban (repeatable) [default: none].
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    pub allow: Option<Vec<ipnet::IpNet>>,
    /// New connections per second per IP [default: 5].
    #[arg(long, env = "QUARRY_POOL_CONNECTION_RATE", value_name = "PER_SECOND")]
    pub connection_rate: Option<f64>,
    /// Burst of new connections per IP [default: 20].
    #[arg(long, env = "QUARRY_POOL_CONNECTION_BURST", value_name = "N")]
    pub connection_burst: Option<u32>,
    /// Concurrent connections per IP [default: 256].
    #[arg(long, env = "QUARRY_POOL_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<u32>,
    /// Concurrent connections in total [default: 19000].
    #[arg(long, env = "QUARRY_POOL_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// mining.submit messages per second per connection [default: 100].
    #[arg(long, env = "QUARRY_POOL_SUBMIT_RATE", value_name = "PER_SECOND")]
    pub submit_rate: Option<f64>,
    /// Burst of mining.submit per connection [default: 500].
    #[arg(long, env = "QUARRY_POOL_SUBMIT_BURST", value_name = "N")]
    pub submit_burst: Option<u32>,
    /// Other messages per second per connection [default: 5].
    #[arg(long, env = "QUARRY_POOL_MESSAGE_RATE", value_name = "PER_SECOND")]
    pub message_rate: Option<f64>,
    /// Burst of other messages per connection [default: 20].
    #[arg(long, env = "QUARRY_POOL_MESSAGE_BURST", value_name = "N")]
    pub message_burst: Option<u32>,
    /// Over-limit messages before the connection is dropped and its IP banned [default: 100].
    #[arg(long, env = "QUARRY_POOL_VIOLATIONS_BEFORE_BAN", value_name = "N")]
    pub violations_before_ban: Option<u32>,
    /// Seconds a ban lasts [default: 600].
    #[arg(long, env = "QUARRY_POOL_BAN_DURATION", value_name = "SECONDS")]
    pub ban_duration: Option<f64>,
    /// Ban a connection whose shares are at least this % invalid... [default: 50]
    #[arg(
        long,
        env = "QUARRY_POOL_INVALID_SHARE_PERCENT",
        value_name = "PERCENT"
    )]
    pub invalid_share_percent: Option<f64>,
    /// ...over at least this many shares [default: 100].
    #[arg(long, env = "QUARRY_POOL_INVALID_SHARE_MINIMUM", value_name = "N")]
    pub invalid_share_minimum: Option<u64>,
    /// Seconds from connect to mining.subscribe [default: 30].
    #[arg(long, env = "QUARRY_POOL_SUBSCRIBE_TIMEOUT", value_name = "SECONDS")]
    pub subscribe_timeout: Option<f64>,
    /// Seconds from subscribe to a successful mining.authorize [default: 30].
    #[arg(long, env = "QUARRY_POOL_AUTHORIZE_TIMEOUT", value_name = "SECONDS")]
    pub authorize_timeout: Option<f64>,
    /// Seconds without an accepted share before a session is closed [default: 900].
    #[arg(long, env = "QUARRY_POOL_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<f64>,
}

impl LimitsArgs {
    fn or(self, file: LimitsArgs) -> LimitsArgs {
        macro_rules! merge {
            ($($field:ident),* $(,)?) => {
                LimitsArgs { $($field: self.$field.or(file.$field),)* }
            };
        }
        merge!(
            allow,
            connection_rate,
            connection_burst,
            max_connections_per_ip,
            max_connections,
            submit_rate,
            submit_burst,
            message_rate,
            message_burst,
            violations_before_ban,
            ban_duration,
            invalid_share_percent,
            invalid_share_minimum,
            subscribe_timeout,
            authorize_timeout,
            idle_timeout,
        )
    }

    fn resolve(self) -> anyhow::Result<LimitsConfig> {
        let d = LimitsConfig::default();
        let count = |name: &str, value: Option<u32>, default: u32| -> anyhow::Result<u32> {
            match value.unwrap_or(default) {
                0 => bail!("limits.{name} must be at least 1"),
                n => Ok(n),
            }
        };
        let percent = self
            .invalid_share_percent
            .unwrap_or(d.invalid_share_percent);
        if !(0.0..=100.0).contains(&percent) {
            bail!("limits.invalid_share_percent: {percent} is not a percentage");
        }
        Ok(LimitsConfig {
            allow: self.allow.unwrap_or_default(),
            connection_rate: positive(
                "limits.connection_rate",
                self.connection_rate,
                d.connection_rate,
            )?,
            connection_burst: count(
                "connection_burst",
                self.connection_burst,
                d.connection_burst,
            )?,
            max_connections_per_ip: count(
                "max_connections_per_ip",
                self.max_connections_per_ip,
                d.max_connections_per_ip,
            )?,
            max_connections: self.max_connections.unwrap_or(d.max_connections).max(1),
            submit_rate: positive("limits.submit_rate", self.submit_rate, d.submit_rate)?,
            submit_burst: count("submit_burst", self.submit_burst, d.submit_burst)?,
            message_rate: positive("limits.message_rate", self.message_rate, d.message_rate)?,
            message_burst: count("message_burst", self.message_burst, d.message_burst)?,
            violations_before_ban: count(
                "violations_before_ban",
                self.violations_before_ban,
                d.violations_before_ban,
            )?,
            ban_duration: seconds(
                "limits.ban_duration",
                self.ban_duration,
                d.ban_duration.as_secs_f64(),
            )?,
            invalid_share_percent: percent,
            invalid_share_minimum: self
                .invalid_share_minimum
                .unwrap_or(d.invalid_share_minimum)
                .max(1),
            subscribe_timeout: seconds(
                "limits.subscribe_timeout",
                self.subscribe_timeout,
                d.subscribe_timeout.as_secs_f64(),
            )?,
            authorize_timeout: seconds(
                "limits.authorize_timeout",
                self.authorize_timeout,
                d.authorize_timeout.as_secs_f64(),
            )?,
            idle_timeout: seconds(
                "limits.idle_timeout",
                self.idle_timeout,
                d.idle_timeout.as_secs_f64(),
            )?,
        })
    }
}

/// The `[metrics]` section.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsArgs {
    /// Per-worker series at /metrics (one set per worker: mind big pools) [default: false].
    #[arg(
        long = "metrics-per-worker",
        id = "metrics_per_worker",
        env = "QUARRY_POOL_METRICS_PER_WORKER",
        value_name = "BOOL"
    )]
    pub per_worker: Option<bool>,
}

/// The `[watch]` section: offline and hashrate-drop detection, and their webhook.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchArgs {
    /// Chance that a healthy worker is flagged, per flag decision [default: 1e-4].
    #[arg(long, env = "QUARRY_POOL_FALSE_ALARM", value_name = "PROBABILITY")]
    pub false_alarm: Option<f64>,
    /// A drop is a 10-minute hashrate below this fraction of the 1-hour one [default: 0.5].
    #[arg(long, env = "QUARRY_POOL_DROP_FRACTION", value_name = "FRACTION")]
    pub drop_fraction: Option<f64>,
    /// Seconds between checks of every worker [default: 5].
    #[arg(long, env = "QUARRY_POOL_CHECK_INTERVAL", value_name = "SECONDS")]
    pub check_interval: Option<f64>,
    /// URL that receives worker status changes and found and orphaned blocks (with their
    /// payout tables) as JSON POSTs [default: none].
    #[arg(long, env = "QUARRY_POOL_WEBHOOK", value_name = "URL")]
    pub webhook: Option<String>,
}

impl WatchArgs {
    fn or(self, file: WatchArgs) -> WatchArgs {
        WatchArgs {
            false_alarm: self.false_alarm.or(file.false_alarm),
            drop_fraction: self.drop_fraction.or(file.drop_fraction),
            check_interval: self.check_interval.or(file.check_interval),
            webhook: self.webhook.or(file.webhook),
        }
    }

    fn resolve(self) -> anyhow::Result<WatchConfig> {
        let d = WatchConfig::default();
        let false_alarm = self.false_alarm.unwrap_or(d.false_alarm);
        if !(false_alarm > 0.0 && false_alarm < 0.5) {
            bail!("watch.false_alarm: {false_alarm} must be a probability between 0 and 0.5");
        }
        let drop_fraction = self.drop_fraction.unwrap_or(d.drop_fraction);
        if !(drop_fraction > 0.0 && drop_fraction < 1.0) {
            bail!("watch.drop_fraction: {drop_fraction} must be between 0 and 1");
        }
        let webhook = self.webhook.filter(|url| !url.is_empty());
        if let Some(url) = &webhook {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("watch.webhook: {url:?} is not an http:// or https:// URL");
            }
        }
        Ok(WatchConfig {
            false_alarm,
            drop_fraction,
            check_interval: seconds(
                "watch.check_interval",
                self.check_interval,
                d.check_interval.as_secs_f64(),
            )?,
            webhook,
        })
    }
}

impl RunArgs {
    /// Fills every option still unset from `file`.
    fn or(self, file: RunArgs) -> RunArgs {
        macro_rules! merge {
            ($($field:ident),* $(,)?) => {
                RunArgs {
                    config: self.config,
                    limits: self.limits.or(file.limits),
                    metrics: MetricsArgs {
                        per_worker: self.metrics.per_worker.or(file.metrics.per_worker),
                    },
                    watch: self.watch.or(file.watch),
                    $($field: self.$field.or(file.$field),)*
                }
            };
        }
        merge!(
            stratum_tcp,
            stratum_tls,
            stratum_v2,
            sv2_authority_key,
            tls_cert,
            tls_key,
            api,
            data_dir,
            database,
            share_retention_days,
            chain,
            bitcoind_url,
            bitcoind_user,
            bitcoind_password,
            bitcoind_cookie,
            bitcoind_poll_interval,
            bitcoind_timeout,
            max_job_age,
            chain_difficulty,
            block_time,
            retarget_interval,
            payout_address,
            pool_tag,
            reward,
            pool_fee_bps,
            pplns_window,
            dust_sats,
            max_coinbase_outputs,
            job_interval,
            share_interval,
            start_difficulty,
            min_difficulty,
            max_difficulty,
            vardiff_window,
            extranonce2_size,
            version_mask,
            max_line_length,
            handshake_timeout,
            shutdown_timeout,
            log_format,
            console,
            admin_token,
        )
    }
}

/// A listener address, or none.
pub type Listen = Option<SocketAddr>;

/// The resolved, checked configuration.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub stratum_tcp: Listen,
    pub stratum_tls: Listen,
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    pub stratum_v2: Listen,
    /// The V2 authority secret key file (`None`: the data directory's).
    pub sv2_authority_key: Option<PathBuf>,
    pub api: Listen,
    pub data_dir: PathBuf,
    /// Where the share ledger lives.
    pub database: Database,
    /// How long share rows are kept.
    pub share_retention: Duration,
    /// `Some` with `--chain bitcoind`.
    pub bitcoind: Option<BitcoindConfig>,
    pub chain_difficulty: f64,
    pub block_time: Duration,
    pub retarget_interval: u32,
    pub payout_address: Option<String>,
    pub pool_tag: String,
    pub reward: RewardConfig,
    pub job_interval: Duration,
    pub share_interval: Duration,
    pub start_difficulty: f64,
    pub min_difficulty: f64,
    pub max_difficulty: f64,
    pub vardiff_window: Duration,
    pub extranonce2_size: usize,
    pub version_mask: u32,
    pub max_line_length: usize,
    pub handshake_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    /// Where tokio-console connects; `None`: nothing listens.
    pub console: Listen,
    pub admin_token: Option<String>,
    pub limits: LimitsConfig,
    /// Per-worker series at `/metrics`.
    pub metrics_per_worker: bool,
    pub watch: WatchConfig,
}

/// How to reach Bitcoin Core.
#[derive(Debug, Clone)]
pub struct BitcoindConfig {
    pub urls: Vec<String>,
    pub auth: Auth,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub max_job_age: Duration,
}

fn bitcoind(args: &RunArgs) -> anyhow::Result<Option<BitcoindConfig>> {
    if args.chain.unwrap_or_default() == ChainKind::Embedded {
        return Ok(None);
    }
    let urls = args.bitcoind_url.clone().unwrap_or_default();
    if urls.is_empty() {
        bail!("chain = bitcoind needs at least one bitcoind_url (http://HOST:PORT)");
    }
    for url in &urls {
        match reqwest::Url::parse(url) {
            Ok(parsed) if parsed.scheme() == "http" && parsed.host().is_some() => {}
            _ => bail!("bitcoind_url: {url:?} is not an http://HOST:PORT URL"),
        }
    }
    let auth = match (
        &args.bitcoind_user,
        &args.bitcoind_password,
        &args.bitcoind_cookie,
    ) {
        (Some(user), Some(password), None) => Auth::Password {
            user: user.clone(),
            password: password.clone(),
        },
        (None, None, Some(cookie)) => Auth::Cookie(cookie.clone()),
        _ => bail!(
            "chain = bitcoind needs either bitcoind_user and bitcoind_password, or bitcoind_cookie"
        ),
    };
    if args.payout_address.is_none() {
        bail!("chain = bitcoind needs a payout_address on the node's network");
    }
    Ok(Some(BitcoindConfig {
        urls,
        auth,
        poll_interval: seconds("bitcoind_poll_interval", args.bitcoind_poll_interval, 0.1)?,
        timeout: seconds("bitcoind_timeout", args.bitcoind_timeout, 10.0)?,
        max_job_age: seconds("max_job_age", args.max_job_age, 120.0)?,
    }))
}

fn listen(name: &str, value: Option<String>, default: &str) -> anyhow::Result<Listen> {
    let value = value.unwrap_or_else(|| default.to_owned());
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value.parse().map(Some).with_context(|| {
        format!("{name}: {value:?} is neither an address like 0.0.0.0:3333 nor `off`")
    })
}

fn seconds(name: &str, value: Option<f64>, default: f64) -> anyhow::Result<Duration> {
    let value = value.unwrap_or(default);
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{name}: {value} is not a positive number of seconds"))
}

/// The most coinbase outputs `max_coinbase_outputs` may allow.
pub const MAX_COINBASE_OUTPUTS: usize = 1_000;

/// The reward settings, checked.
fn reward(args: &RunArgs) -> anyhow::Result<RewardConfig> {
    let fee_bps = args.pool_fee_bps.unwrap_or(0);
    if fee_bps > 10_000 {
        bail!("pool_fee_bps: {fee_bps} is above 10000 (100 %)");
    }
    let max_outputs = args.max_coinbase_outputs.unwrap_or(100);
    if !(2..=MAX_COINBASE_OUTPUTS).contains(&max_outputs) {
        bail!("max_coinbase_outputs: {max_outputs} must be 2..={MAX_COINBASE_OUTPUTS}");
    }
    Ok(RewardConfig {
        scheme: args.reward.unwrap_or(Scheme::Operator),
        window: positive("pplns_window", args.pplns_window, 2.0)?,
        rules: Rules {
            fee_bps,
            dust: bitcoin::Amount::from_sat(args.dust_sats.unwrap_or(1_000)),
            max_outputs,
        },
    })
}

fn positive(name: &str, value: Option<f64>, default: f64) -> anyhow::Result<f64> {
    let value = value.unwrap_or(default);
    if !(value.is_finite() && value > 0.0) {
        bail!("{name}: {value} must be a finite number above zero");
    }
    Ok(value)
}

impl PoolConfig {
    /// Resolves command-line/env options over the config file and the defaults.
    ///
    /// # Errors
    /// An unreadable or invalid config file, or any out-of-range value, named.
    pub fn resolve(args: RunArgs) -> anyhow::Result<PoolConfig> {
        let args = match &args.config {
            Some(path) => {
                let file = read_file(path)?;
                args.or(file)
            }
            None => args,
        };
        let bitcoind = bitcoind(&args)?;
        let reward = reward(&args)?;
        let share_interval = seconds("share_interval", args.share_interval, 10.0)?;
        let min_difficulty = positive("min_difficulty", args.min_difficulty, 1e-12)?;
        let max_difficulty = positive("max_difficulty", args.max_difficulty, 1e15)?;
        if min_difficulty > max_difficulty {
            bail!("min_difficulty {min_difficulty} is above max_difficulty {max_difficulty}");
        }
        let extranonce2_size = args.extranonce2_size.unwrap_or(4);
        if !(2..=8).contains(&extranonce2_size) {
            bail!("extranonce2_size: {extranonce2_size} must be 2..=8 bytes (cgminer refuses less than 2)");
        }
        let version_mask = match args.version_mask {
            None => 0x1fff_e000,
            Some(text) => u32::from_str_radix(text.trim_start_matches("0x"), 16)
                .with_context(|| format!("version_mask: {text:?} is not 8 hex digits"))?,
        };
        let max_line_length = args.max_line_length.unwrap_or(16 * 1024);
        if !(512..=1 << 20).contains(&max_line_length) {
            bail!("max_line_length: {max_line_length} must be 512..=1048576 bytes");
        }
        let pool_tag = args.pool_tag.unwrap_or_else(|| "/quarry/".to_owned());
        if pool_tag.len() > 40 {
            bail!(
                "pool_tag: {} bytes is too long for a coinbase (at most 40)",
                pool_tag.len()
            );
        }
        let data_dir = args
            .data_dir
            .unwrap_or_else(|| PathBuf::from("quarry-data"));
        let retarget_interval = args.retarget_interval.unwrap_or(60);
        if retarget_interval == 0 {
            bail!("retarget_interval must be at least 1 block");
        }
        Ok(PoolConfig {
            bitcoind,
            stratum_tcp: listen("stratum_tcp", args.stratum_tcp, "0.0.0.0:3333")?,
            stratum_tls: listen("stratum_tls", args.stratum_tls, "0.0.0.0:3334")?,
            tls_cert: args.tls_cert.zip(args.tls_key),
            stratum_v2: listen("stratum_v2", args.stratum_v2, "0.0.0.0:3336")?,
            sv2_authority_key: args.sv2_authority_key,
            api: listen("api", args.api, "127.0.0.1:8080")?,
            database: Database::from_setting(args.database.as_deref(), &data_dir)
                .map_err(anyhow::Error::msg)?,
            data_dir,
            share_retention: seconds(
                "share_retention_days",
                args.share_retention_days.map(|days| days * 86_400.0),
                7.0 * 86_400.0,
            )?,
            chain_difficulty: positive("chain_difficulty", args.chain_difficulty, 0.001)?,
            block_time: seconds("block_time", args.block_time, 60.0)?,
            retarget_interval,
            payout_address: args.payout_address,
            pool_tag,
            reward,
            job_interval: seconds("job_interval", args.job_interval, 30.0)?,
            share_interval,
            start_difficulty: positive("start_difficulty", args.start_difficulty, 1.0)?
                .clamp(min_difficulty, max_difficulty),
            min_difficulty,
            max_difficulty,
            vardiff_window: seconds(
                "vardiff_window",
                args.vardiff_window,
                share_interval.as_secs_f64() * 6.0,
            )?,
            extranonce2_size,
            version_mask,
            max_line_length,
            handshake_timeout: seconds("handshake_timeout", args.handshake_timeout, 10.0)?,
            shutdown_timeout: seconds("shutdown_timeout", args.shutdown_timeout, 10.0)?,
            log_format: args.log_format.unwrap_or_default(),
            console: listen("console", args.console, "off")?,
            admin_token: args.admin_token.filter(|t| !t.is_empty()),
            limits: args.limits.resolve()?,
            metrics_per_worker: args.metrics.per_worker.unwrap_or(false),
            watch: args.watch.resolve()?,
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<RunArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pool.toml");
        std::fs::write(
            &file,
            "share_interval = 5.0\nstart_difficulty = 8.0\napi = \"off\"\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(file),
            start_difficulty: Some(2.0),
            ..RunArgs::default()
        };
        let config = PoolConfig::resolve(args).unwrap();
        assert_eq!(config.start_difficulty, 2.0);
        assert_eq!(config.share_interval, Duration::from_secs(5));
        assert_eq!(config.api, None);
        assert_eq!(config.stratum_tcp, Some("0.0.0.0:3333".parse().unwrap()));
    }

    #[test]
    fn console_is_off_unless_asked_for() {
        assert_eq!(
            PoolConfig::resolve(RunArgs::default()).unwrap().console,
            None
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pool.toml");
        std::fs::write(&file, "console = \"127.0.0.1:6669\"\n").unwrap();
        let from_file = RunArgs {
            config: Some(file),
            ..RunArgs::default()
        };
        let config = PoolConfig::resolve(from_file.clone()).unwrap();
        assert_eq!(config.console, Some("127.0.0.1:6669".parse().unwrap()));
        let flag = RunArgs {
            console: Some("127.0.0.1:7000".into()),
            ..from_file
        };
        let config = PoolConfig::resolve(flag).unwrap();
        assert_eq!(config.console, Some("127.0.0.1:7000".parse().unwrap()));
    }

    #[test]
    fn limits_section_and_allow_list() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pool.toml");
        std::fs::write(
            &file,
            "[limits]\nallow = [\"10.0.0.0/8\"]\nsubmit_rate = 7.5\n",
        )
        .unwrap();
        let mut args = RunArgs {
            config: Some(file),
            ..RunArgs::default()
        };
        let config = PoolConfig::resolve(args.clone()).unwrap();
        assert_eq!(
            config.limits.allow,
            vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]
        );
        assert_eq!(config.limits.submit_rate, 7.5);
        args.limits.allow = Some(vec!["192.168.0.0/16".parse().unwrap()]);
        let config = PoolConfig::resolve(args).unwrap();
        assert_eq!(
            config.limits.allow,
            vec!["192.168.0.0/16".parse::<ipnet::IpNet>().unwrap()]
        );
    }

    #[test]
    fn documented_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/pool.toml");
        let args = RunArgs {
            config: Some(path),
            ..RunArgs::default()
        };
        PoolConfig::resolve(args).unwrap();
    }

    #[test]
    fn bad_values_are_named() {
        let args = RunArgs {
            extranonce2_size: Some(1),
            ..RunArgs::default()
        };
        let err = PoolConfig::resolve(args).unwrap_err().to_string();
        assert!(err.contains("extranonce2_size"), "{err}");
        let args = RunArgs {
            stratum_tcp: Some("nowhere".into()),
            ..RunArgs::default()
        };
        let err = format!("{:#}", PoolConfig::resolve(args).unwrap_err());
        assert!(err.contains("nowhere"), "{err}");
    }

    #[test]
    fn bitcoind_needs_urls_credentials_and_a_payout_address() {
        let complete = RunArgs {
            chain: Some(ChainKind::Bitcoind),
            bitcoind_url: Some(vec!["http://127.0.0.1:18443".into()]),
            bitcoind_cookie: Some("/tmp/.cookie".into()),
            payout_address: Some("bcrt1qk4jfh24av5se4a4tdauzpxd8jah4ah8rgk4gwn".into()),
            ..RunArgs::default()
        };
        let config = PoolConfig::resolve(complete.clone()).unwrap();
        let bitcoind = config.bitcoind.unwrap();
        assert_eq!(bitcoind.auth, Auth::Cookie("/tmp/.cookie".into()));
        assert_eq!(bitcoind.poll_interval, Duration::from_millis(100));

        let broken = [
            (
                RunArgs {
                    bitcoind_url: None,
                    ..complete.clone()
                },
                "bitcoind_url",
            ),
            (
                RunArgs {
                    bitcoind_url: Some(vec!["127.0.0.1:18443".into()]),
                    ..complete.clone()
                },
                "127.0.0.1:18443",
            ),
            (
                RunArgs {
                    bitcoind_user: Some("u".into()),
                    ..complete.clone()
                },
                "bitcoind_cookie",
            ),
            (
                RunArgs {
                    payout_address: None,
                    ..complete.clone()
                },
                "payout_address",
            ),
        ];
        for (args, named) in broken {
            let err = PoolConfig::resolve(args).unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
    }
}
