//! Miner configuration: every option settable by flag, by `QUARRY_MINER_*` environment
//! variable, or by a TOML file (`--config FILE`), with flag > env > file > default.
//!
//! Clap resolves flag and environment; the file fills what both left unset;
//! [`MinerConfig::resolve`] applies the defaults and checks every value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser};
pub use quarry_protocol::logging::LogFormat;
use serde::Deserialize;

use crate::kernel::Kernel;
use crate::session_v2::ChannelKind;
use crate::tls::{Fingerprint, Trust};
use crate::url::PoolUrl;

/// Command line of `quarry-miner`.
#[derive(Debug, Parser)]
#[command(
    name = "quarry-miner",
    version,
    about = "Quarry's SHA-256d CPU miner for Stratum V1 and V2 pools",
    after_help = "Example: quarry-miner -o stratum+ssl://pool.example:3334 -u alice.rig1 --tls-fingerprint 3f2a…"
)]
pub struct Cli {
    #[command(flatten)]
    pub options: Options,
}

/// Every option; unset means "take it from the config file, else the default".
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// TOML config file (see config/miner.toml).
    #[arg(long, env = "QUARRY_MINER_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Pool URL; repeat for failover, in order of preference (stratum+tcp://,
    /// stratum+ssl://, stratum+tls://, stratum+tcps://, or Stratum V2 as
    /// stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY; V1 and V2 mix).
    #[arg(
        short = 'o',
        long = "url",
        env = "QUARRY_MINER_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub url: Vec<String>,
    /// Worker name, usually ACCOUNT.WORKER.
    #[arg(short, long, env = "QUARRY_MINER_USER")]
    pub user: Option<String>,
    /// Worker password [default: x].
    #[arg(short, long, env = "QUARRY_MINER_PASS")]
    pub pass: Option<String>,
    /// Hashing threads [default: the number of CPUs].
    #[arg(short, long, env = "QUARRY_MINER_THREADS")]
    pub threads: Option<usize>,
    /// Hashing kernel: avx512, sha-ni, avx2 or portable [default: the fastest supported].
    #[arg(long, env = "QUARRY_MINER_KERNEL", value_name = "K")]
    pub kernel: Option<String>,

    /// Trust the CA certificates in this PEM file instead of the platform's roots.
    #[arg(long, env = "QUARRY_MINER_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint (hex; colons and case ignored).
    #[arg(long, env = "QUARRY_MINER_TLS_FINGERPRINT", value_name = "SHA256HEX")]
    pub tls_fingerprint: Option<String>,
    /// Accept any TLS certificate (no authentication of the pool).
    #[arg(long, env = "QUARRY_MINER_INSECURE")]
    pub insecure: bool,

    /// Do not ask for BIP310 version rolling.
    #[arg(long, env = "QUARRY_MINER_NO_VERSION_ROLLING")]
    pub no_version_rolling: bool,
    /// Version-rolling mask to request, hex [default: 1fffe000].
    #[arg(long, env = "QUARRY_MINER_VERSION_MASK", value_name = "HEX")]
    pub version_mask: Option<String>,
    /// Send mining.extranonce.subscribe (NiceHash's `#xnsub`).
    #[arg(long, env = "QUARRY_MINER_EXTRANONCE_SUBSCRIBE")]
    pub extranonce_subscribe: bool,
    /// Reconnect when the pool has sent nothing for this many seconds [default: 120].
    #[arg(long, env = "QUARRY_MINER_POOL_TIMEOUT", value_name = "SECONDS")]
    pub pool_timeout: Option<f64>,
    /// While on a backup pool, probe the primary this often, in seconds [default: 30].
    #[arg(long, env = "QUARRY_MINER_FAILBACK_INTERVAL", value_name = "SECONDS")]
    pub failback_interval: Option<f64>,
    /// At connect, suggest the difficulty that gives one share every this many
    /// seconds at the measured hash rate (mining.suggest_difficulty); 0 suggests
    /// nothing [default: 2].
    #[arg(long, env = "QUARRY_MINER_SHARE_INTERVAL", value_name = "SECONDS")]
    pub share_interval: Option<f64>,
    /// The Stratum V2 channel to open: extended (the miner rolls an extranonce in
    /// the coinbase) or standard (header-only) [default: extended].
    #[arg(
        long,
        env = "QUARRY_MINER_SV2_CHANNEL",
        value_enum,
        value_name = "KIND"
    )]
    pub sv2_channel: Option<ChannelKind>,

    /// Seconds between hashrate/shares summary lines [default: 30].
    #[arg(long, env = "QUARRY_MINER_PRINT_INTERVAL", value_name = "SECONDS")]
    pub print_interval: Option<f64>,
    /// Only warnings and errors.
    #[arg(short, long, env = "QUARRY_MINER_QUIET")]
    pub quiet: bool,
    /// Log format [default: text]. Verbosity also follows RUST_LOG.
    #[arg(long, env = "QUARRY_MINER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve GET /status (JSON) and /metrics (Prometheus) on this address.
    #[arg(long, env = "QUARRY_MINER_API", value_name = "ADDR")]
    pub api: Option<String>,
    /// Serve tokio-console here, e.g. 127.0.0.1:6669 (a build with the `console`
    /// feature only; keep it on loopback and tunnel over SSH) [default: off].
    #[arg(long, env = "QUARRY_MINER_CONSOLE", value_name = "ADDR")]
    pub console: Option<String>,

    /// Hash a synthetic job offline and report the speed, instead of mining.
    #[arg(long)]
    #[serde(skip)]
    pub benchmark: bool,
    /// Benchmark duration in seconds [default: 10].
    #[arg(long, value_name = "S", requires = "benchmark")]
    #[serde(skip)]
    pub seconds: Option<f64>,
    /// Benchmark: print exactly one JSON object on stdout.
    #[arg(long, requires = "benchmark")]
    #[serde(skip)]
    pub json: bool,
}

impl Options {
    /// Fills every option still unset from `file`.
    fn or(self, file: Options) -> Options {
        macro_rules! merge {
            ($($field:ident),* ; $($flag:ident),*) => {
                Options {
                    url: if self.url.is_empty() { file.url } else { self.url },
                    config: self.config,
                    benchmark: self.benchmark,
                    seconds: self.seconds,
                    json: self.json,
                    $($field: self.$field.or(file.$field),)*
                    $($flag: self.$flag || file.$flag,)*
                }
            };
        }
        merge!(
            user, pass, threads, kernel, ca_file, tls_fingerprint, version_mask,
            pool_timeout, failback_interval, share_interval, sv2_channel, print_interval,
            log_format, api, console;
            insecure, no_version_rolling, extranonce_subscribe, quiet
        )
    }
}

/// Mining, or measuring the hash rate offline.
#[derive(Debug, Clone)]
pub enum Mode {
    Mine(Box<MineConfig>),
    Benchmark { seconds: Duration, json: bool },
}

/// What mining needs beyond the shared settings.
#[derive(Debug, Clone)]
pub struct MineConfig {
    /// Pools in order of preference; the first is the primary.
    pub pools: Vec<PoolUrl>,
    pub user: String,
    pub pass: String,
    pub trust: Trust,
    /// The version-rolling mask to ask for; `None` to not ask.
    pub version_mask: Option<u32>,
    pub extranonce_subscribe: bool,
    pub pool_timeout: Duration,
    pub failback_interval: Duration,
    /// The share interval suggested difficulties aim at; `None`: suggest nothing.
    pub share_interval: Option<Duration>,
    /// The channel a Stratum V2 connection opens.
    pub sv2_channel: ChannelKind,
    pub print_interval: Duration,
    pub api: Option<SocketAddr>,
}

/// The resolved, checked configuration.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    pub mode: Mode,
    pub threads: usize,
    pub kernel: Kernel,
    pub quiet: bool,
    pub log_format: LogFormat,
    /// Where tokio-console connects; `None`: nothing listens.
    pub console: Option<SocketAddr>,
}

fn seconds(name: &str, value: Option<f64>, default: f64) -> anyhow::Result<Duration> {
    let value = value.unwrap_or(default);
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{name}: {value} is not a positive number of seconds"))
}

impl MinerConfig {
    /// Resolves command-line/env options over the config file and the defaults.
    ///
    /// # Errors
    /// An unreadable or invalid config file, or any invalid value, named.
    pub fn resolve(options: Options) -> anyhow::Result<MinerConfig> {
        let options = match &options.config {
            Some(path) => {
                let file = read_file(path)?;
                options.or(file)
            }
            None => options,
        };
        let threads = match options.threads {
            Some(0) => bail!("threads: must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let kernel = match &options.kernel {
            Some(name) => Kernel::by_name(name).context("kernel")?,
            None => Kernel::fastest(),
        };
        let mode = if options.benchmark {
            Mode::Benchmark {
                seconds: seconds("seconds", options.seconds, 10.0)?,
                json: options.json,
            }
        } else {
            Mode::Mine(Box::new(mine_config(&options)?))
        };
        Ok(MinerConfig {
            mode,
            threads,
            kernel,
            quiet: options.quiet,
            log_format: options.log_format.unwrap_or_default(),
            console: address("console", options.console.as_deref(), "127.0.0.1:6669")?,
        })
    }
}

fn mine_config(options: &Options) -> anyhow::Result<MineConfig> {
    if options.url.is_empty() {
        bail!("no pool given: pass -o stratum+tcp://HOST:PORT (or url in the config file)");
    }
    let pools = options
        .url
        .iter()
        .map(|u| u.parse::<PoolUrl>())
        .collect::<Result<Vec<_>, _>>()?;
    let user = options
        .user
        .clone()
        .context("no worker given: pass -u ACCOUNT.WORKER (or user in the config file)")?;
    let trust = match (&options.ca_file, &options.tls_fingerprint, options.insecure) {
        (None, None, false) => Trust::Platform,
        (Some(path), None, false) => Trust::CaFile(path.clone()),
        (None, Some(fp), false) => Trust::Pinned(Fingerprint::parse(fp)?),
        (None, None, true) => Trust::Insecure,
        _ => bail!("--ca-file, --tls-fingerprint and --insecure exclude each other: give one"),
    };
    let version_mask = match (&options.version_mask, options.no_version_rolling) {
        (_, true) => None,
        (None, false) => Some(0x1fff_e000),
        (Some(text), false) => Some(
            u32::from_str_radix(text.trim_start_matches("0x"), 16)
                .with_context(|| format!("version_mask: {text:?} is not 8 hex digits"))?,
        ),
    };
    let api = address("api", options.api.as_deref(), "127.0.0.1:9100")?;
    Ok(MineConfig {
        pools,
        user,
        pass: options.pass.clone().unwrap_or_else(|| "x".to_owned()),
        trust,
        version_mask,
        extranonce_subscribe: options.extranonce_subscribe,
        pool_timeout: seconds("pool_timeout", options.pool_timeout, 120.0)?,
        failback_interval: seconds("failback_interval", options.failback_interval, 30.0)?,
        share_interval: match options.share_interval {
            Some(0.0) => None,
            given => Some(seconds("share_interval", given, 2.0)?),
        },
        sv2_channel: options.sv2_channel.unwrap_or_default(),
        print_interval: seconds("print_interval", options.print_interval, 30.0)?,
        api,
    })
}

/// Parses an optional listen address; `example` shows the expected form.
fn address(name: &str, value: Option<&str>, example: &str) -> anyhow::Result<Option<SocketAddr>> {
    value
        .map(|a| {
            a.parse()
                .with_context(|| format!("{name}: {a:?} is not an address like {example}"))
        })
        .transpose()
}

fn read_file(path: &Path) -> anyhow::Result<Options> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mine(config: MinerConfig) -> MineConfig {
        match config.mode {
            Mode::Mine(m) => *m,
            Mode::Benchmark { .. } => panic!("benchmark mode"),
        }
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("miner.toml");
        std::fs::write(
            &file,
            "url = [\"stratum+tcp://file:1\"]\nuser = \"file.w\"\nprint_interval = 7.0\npool_timeout = 9.0\nfailback_interval = 11.0\n",
        )
        .unwrap();
        // Only this test uses these variables.
        std::env::set_var("QUARRY_MINER_POOL_TIMEOUT", "5");
        std::env::set_var("QUARRY_MINER_FAILBACK_INTERVAL", "6");
        let cli = Cli::try_parse_from([
            "quarry-miner",
            "--config",
            file.to_str().unwrap(),
            "--pool-timeout",
            "3",
        ])
        .unwrap();
        std::env::remove_var("QUARRY_MINER_POOL_TIMEOUT");
        std::env::remove_var("QUARRY_MINER_FAILBACK_INTERVAL");
        let config = mine(MinerConfig::resolve(cli.options).unwrap());
        assert_eq!(config.pool_timeout, Duration::from_secs(3), "flag over env");
        assert_eq!(
            config.failback_interval,
            Duration::from_secs(6),
            "env over file"
        );
        assert_eq!(
            config.print_interval,
            Duration::from_secs(7),
            "file over default"
        );
        assert_eq!(config.pools[0].host, "file");
        assert_eq!(config.user, "file.w");
        assert_eq!(config.pass, "x", "default");
        assert_eq!(config.version_mask, Some(0x1fff_e000));
        assert_eq!(config.trust, Trust::Platform);
    }

    #[test]
    fn console_flag_beats_env_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("miner.toml");
        std::fs::write(
            &file,
            "url = [\"stratum+tcp://a:1\"]\nuser = \"a.b\"\nconsole = \"127.0.0.1:6669\"\n",
        )
        .unwrap();
        let console = |args: &[&str]| {
            let mut all = vec!["quarry-miner", "--config", file.to_str().unwrap()];
            all.extend_from_slice(args);
            MinerConfig::resolve(Cli::try_parse_from(all).unwrap().options)
                .unwrap()
                .console
                .map(|addr| addr.port())
        };
        assert_eq!(console(&[]), Some(6669), "file");
        // Only this test uses this variable.
        std::env::set_var("QUARRY_MINER_CONSOLE", "127.0.0.1:6670");
        let from_env = console(&[]);
        let from_flag = console(&["--console", "127.0.0.1:6671"]);
        std::env::remove_var("QUARRY_MINER_CONSOLE");
        assert_eq!(from_env, Some(6670), "env over file");
        assert_eq!(from_flag, Some(6671), "flag over env");
        let err = MinerConfig::resolve(
            Cli::try_parse_from(["quarry-miner", "--benchmark", "--console", "6669"])
                .unwrap()
                .options,
        )
        .unwrap_err();
        assert!(err.to_string().contains("console"), "{err}");
    }

    #[test]
    fn cpuminer_style_flags() {
        let cli = Cli::try_parse_from([
            "quarry-miner",
            "-o",
            "stratum+ssl://a:1",
            "-o",
            "stratum+tcp://b:2",
            "-u",
            "al.rig",
            "-p",
            "pw",
            "-t",
            "3",
            "--tls-fingerprint",
            "AA:".repeat(32).trim_end_matches(':'),
            "--no-version-rolling",
        ])
        .unwrap();
        let config = MinerConfig::resolve(cli.options).unwrap();
        assert_eq!(config.threads, 3);
        let mine = mine(config);
        assert_eq!(mine.pools.len(), 2);
        assert!(mine.pools[0].tls() && !mine.pools[1].tls());
        assert_eq!((mine.user.as_str(), mine.pass.as_str()), ("al.rig", "pw"));
        assert_eq!(mine.trust, Trust::Pinned(Fingerprint([0xaa; 32])));
        assert_eq!(mine.version_mask, None);
    }

    #[test]
    fn v1_and_v2_pools_mix_and_the_channel_kind_is_chosen() {
        let key = quarry_protocol::sv2::AuthorityKeypair::generate().public;
        let v2 = format!("stratum2+tcp://a:3336/{key}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("miner.toml");
        std::fs::write(&file, "sv2_channel = \"standard\"\n").unwrap();
        let resolve = |args: &[&str]| {
            let mut all = vec![
                "quarry-miner",
                "-o",
                &v2,
                "-o",
                "stratum+tcp://b:1",
                "-u",
                "w",
            ];
            all.extend_from_slice(args);
            MinerConfig::resolve(Cli::try_parse_from(all).unwrap().options).map(mine)
        };
        let config = resolve(&[]).unwrap();
        assert_eq!(config.pools[0].scheme, crate::url::Scheme::V2(key));
        assert_eq!(config.pools[1].scheme, crate::url::Scheme::Tcp);
        assert_eq!(config.sv2_channel, ChannelKind::Extended, "default");
        let from_file = resolve(&["--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(from_file.sv2_channel, ChannelKind::Standard);
        let from_flag = resolve(&[
            "--sv2-channel",
            "extended",
            "--config",
            file.to_str().unwrap(),
        ]);
        assert_eq!(from_flag.unwrap().sv2_channel, ChannelKind::Extended);
        let err = MinerConfig::resolve(
            Cli::try_parse_from(["quarry-miner", "-o", "stratum2+tcp://a:1", "-u", "w"])
                .unwrap()
                .options,
        )
        .unwrap_err();
        assert!(err.to_string().contains("authority public key"), "{err}");
    }

    #[test]
    fn benchmark_needs_no_pool() {
        let cli = Cli::try_parse_from(["quarry-miner", "--benchmark", "--seconds", "2", "--json"])
            .unwrap();
        let config = MinerConfig::resolve(cli.options).unwrap();
        assert!(matches!(config.mode, Mode::Benchmark { json: true, .. }));
    }

    #[test]
    fn bad_values_are_named() {
        let parse = |args: &[&str]| {
            let mut all = vec!["quarry-miner"];
            all.extend_from_slice(args);
            MinerConfig::resolve(Cli::try_parse_from(all).unwrap().options)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(parse(&["-u", "a"]).contains("no pool"));
        assert!(parse(&["-o", "x:1"]).contains("no worker"));
        assert!(parse(&["-o", "http://x:1", "-u", "a"]).contains("http"));
        assert!(
            parse(&["-o", "x:1", "-u", "a", "--insecure", "--ca-file", "c"]).contains("exclude")
        );
        assert!(parse(&["-o", "x:1", "-u", "a", "-t", "0"]).contains("threads"));
        assert!(parse(&["--benchmark", "--kernel", "nope"]).contains("kernel"));
    }

    #[test]
    fn documented_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/miner.toml");
        let options = Options {
            config: Some(path),
            ..Options::default()
        };
        let config = mine(MinerConfig::resolve(options).unwrap());
        assert!(!config.pools.is_empty());
    }
}
