//! `quarry-load`: drives a running pool with many connections and measures it.
//!
//! # Layout
//! - [`link`]: one miner over either protocol, as `hold` and `shares` see it.
//! - [`event`]: what a connection reads, in words both protocols share.
//! - [`conn`]: one lean V1 connection (source address, TLS, handshake, tracking).
//! - [`conn_v2`]: one lean V2 connection (Noise, setup, one extended channel).
//! - [`hold`]: `hold`, N idle miners; handshake latency, job fan-out, RSS per connection.
//! - [`shares`]: `shares`, M workers submitting valid shares; throughput and ack latency.
//! - [`api`]: the pool's per-worker counts, to check against the acknowledgements.
//! - [`report`]: percentiles, and a process's RSS and CPU time from `/proc`.

pub mod api;
pub mod conn;
pub mod conn_v2;
pub mod event;
pub mod hold;
pub mod link;
pub mod report;
pub mod shares;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use quarry_miner::tls::{Fingerprint, Trust};
use quarry_miner::url::PoolUrl;

use conn::Endpoint;
use report::ProcessProbe;

/// Command line of `quarry-load`.
#[derive(Debug, Parser)]
#[command(
    name = "quarry-load",
    version,
    about = "Load generator for Stratum pools (V1, V1 over TLS, V2): many miners, measured"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hold N subscribed, authorized connections; measure handshakes, job
    /// fan-out to all of them, and the pool's memory per connection.
    Hold(HoldArgs),
    /// M workers submit valid shares; measure acknowledged shares/s and latency.
    Shares(SharesArgs),
}

/// Options both subcommands share.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Pool URL: stratum+tcp://HOST:PORT, stratum+ssl://HOST:PORT or
    /// stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY.
    #[arg(short = 'o', long)]
    pub url: PoolUrl,
    /// TLS: accept any certificate.
    #[arg(long, conflicts_with_all = ["ca_file", "tls_fingerprint"])]
    pub insecure: bool,
    /// TLS: trust the CA certificates in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// TLS: trust exactly the certificate with this SHA-256 fingerprint.
    #[arg(long, value_name = "SHA256HEX")]
    pub tls_fingerprint: Option<String>,
    /// Worker names are PREFIX.0, PREFIX.1, …; PREFIX is the API's account.
    #[arg(long, default_value = "load", value_parser = worker_prefix)]
    pub worker_prefix: String,
    /// Source addresses to spread connections over, round robin, FIRST-LAST
    /// (IPv4), or `none` to let the system choose [default: 127.0.0.2-127.0.0.254
    /// for a loopback pool, else none].
    #[arg(long, value_name = "FIRST-LAST|none")]
    pub sources: Option<String>,
    /// The pool's process id, to read its RSS and CPU time from /proc.
    #[arg(long, value_name = "PID")]
    pub pool_pid: Option<u32>,
    /// The pool's HTTP API base URL (http://HOST:PORT), to check its counts.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Connections opening at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Print the results as JSON on stdout (the summary goes to stderr regardless).
    #[arg(long)]
    pub json: bool,
}

/// Options of `hold`.
#[derive(Debug, Clone, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to hold.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: usize,
    /// Blocks to find, one after another, each fanning a clean job out to all N.
    #[arg(long, default_value_t = 3)]
    pub blocks: usize,
    /// Seconds to keep holding after the last block (e.g. to watch the pool).
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Seconds to wait for all N to see a block's clean job.
    #[arg(long, default_value_t = 120.0)]
    pub fanout_timeout: f64,
    /// Make each block with this shell command (e.g. `bitcoin-cli -regtest
    /// generatetoaddress 1 ADDR`, for a pool in front of a node) instead of a
    /// share from the trigger connection; fan-out is then timed from the
    /// command's start, for any pool alike.
    #[arg(long, value_name = "CMD")]
    pub trigger_command: Option<String>,
    /// For a pool mining solo: workers are ADDRESS.0, ADDRESS.1, … over this many regtest
    /// addresses in turn (1: all share one; N: each its own), the trigger mines to the first.
    #[arg(long, value_name = "COUNT", value_parser = clap::value_parser!(u16).range(1..))]
    pub solo_addresses: Option<u16>,
}

impl HoldArgs {
    /// The name of worker `index` (`None`: the trigger).
    pub fn worker(&self, index: Option<usize>) -> String {
        let name = index.map_or_else(|| "trigger".to_owned(), |i| i.to_string());
        match self.solo_addresses {
            None => format!("{}.{name}", self.common.worker_prefix),
            Some(count) => {
                let seed = index.map_or(0, |i| (i % usize::from(count)) as u16);
                format!("{}.{name}", crate::regtest::address(seed))
            }
        }
    }
}

/// Options of `shares`.
#[derive(Debug, Clone, Args)]
pub struct SharesArgs {
    #[command(flatten)]
    pub common: Common,
    /// Workers, one connection each.
    #[arg(short = 'm', long, default_value_t = 64)]
    pub workers: usize,
    /// Total shares per second over all workers; 0 submits flat out.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds to submit for (`--shares` may end the run earlier).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many shares in total.
    #[arg(long)]
    pub shares: Option<u64>,
    /// Unanswered shares a connection may have at once.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
}

fn worker_prefix(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        && !text.starts_with('_');
    ok.then(|| text.to_owned()).ok_or_else(|| {
        format!("worker prefix {text:?}: use 1..=64 of [A-Za-z0-9_-], not starting with '_'")
    })
}

impl Common {
    fn trust(&self) -> anyhow::Result<Trust> {
        Ok(
            match (&self.ca_file, &self.tls_fingerprint, self.insecure) {
                (Some(path), _, _) => Trust::CaFile(path.clone()),
                (None, Some(fp), _) => Trust::Pinned(Fingerprint::parse(fp)?),
                (None, None, true) => Trust::Insecure,
                (None, None, false) => Trust::Platform,
            },
        )
    }

    fn source_addresses(&self, loopback_pool: bool) -> anyhow::Result<Vec<IpAddr>> {
        let spec = match self.sources.as_deref() {
            Some("none") => return Ok(Vec::new()),
            Some(spec) => spec,
            None if loopback_pool => "127.0.0.2-127.0.0.254",
            None => return Ok(Vec::new()),
        };
        let (first, last) = spec
            .split_once('-')
            .with_context(|| format!("--sources {spec:?}: expected FIRST-LAST"))?;
        let parse = |s: &str| -> anyhow::Result<u32> {
            Ok(u32::from(s.trim().parse::<Ipv4Addr>().with_context(
                || format!("--sources {spec:?}: {s:?} is not an IPv4 address"),
            )?))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if last < first || last - first >= 1 << 16 {
            bail!("--sources {spec:?}: FIRST must not exceed LAST, at most 65536 addresses");
        }
        Ok((first..=last)
            .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
            .collect())
    }

    /// The endpoint connections are opened to.
    ///
    /// # Errors
    /// Bad TLS trust settings, source range or host.
    pub async fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let connector = if self.url.tls() {
            Some(quarry_miner::tls::connector(&self.trust()?)?)
        } else {
            None
        };
        let probe = Endpoint::new(&self.url, connector.clone(), Vec::new()).await?;
        let sources = self.source_addresses(probe.addr.ip().is_loopback())?;
        Endpoint::new(&self.url, connector, sources).await
    }

    /// The transport, as reports name it.
    pub fn transport(&self) -> &'static str {
        match self.url.scheme {
            quarry_miner::url::Scheme::Tcp => "tcp",
            quarry_miner::url::Scheme::Tls => "tls",
            quarry_miner::url::Scheme::V2(_) => "v2",
        }
    }

    /// The pool process, when `--pool-pid` was given.
    pub fn pool(&self) -> Option<ProcessProbe> {
        self.pool_pid.map(|pid| ProcessProbe { pid })
    }

    /// The name of worker `index`.
    pub fn worker(&self, index: usize) -> String {
        format!("{}.{index}", self.worker_prefix)
    }
}

/// Raises this process's open-files soft limit to its hard limit: every
/// connection is a descriptor.
///
/// # Errors
/// The limit cannot be read or set.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    let (_, hard) = rlimit::Resource::NOFILE
        .get()
        .context("reading RLIMIT_NOFILE")?;
    rlimit::increase_nofile_limit(hard).context("raising RLIMIT_NOFILE")
}

/// Runs a subcommand; the results are printed, and an error means the run
/// failed its own checks or could not be carried out.
///
/// # Errors
/// Setup failures, connection failures, or counts that do not add up.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let open_files = raise_open_files_limit()?;
    let (common, json, passed) = match cli.command {
        Command::Hold(args) => {
            let common = args.common.clone();
            let needed = args.connections as u64 + 64;
            if open_files < needed {
                bail!(
                    "{} connections need about {needed} open files; the limit is {open_files}",
                    args.connections
                );
            }
            let result = hold::run(&args).await?;
            eprint!("{result}");
            let passed = result.passed();
            (common, serde_json::to_string_pretty(&result)?, passed)
        }
        Command::Shares(args) => {
            let common = args.common.clone();
            let result = shares::run(&args).await?;
            eprint!("{result}");
            let passed = result.passed();
            (common, serde_json::to_string_pretty(&result)?, passed)
        }
    };
    if common.json {
        println!("{json}");
    }
    if !passed {
        bail!("the run failed its checks (see above)");
    }
    Ok(())
}

/// Waits `timeout` for `future`, naming `what` when it does not finish.
///
/// # Errors
/// The timeout passed, or the future's own error.
pub async fn within<T>(
    timeout: Duration,
    what: &str,
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {timeout:?}"))?
}
