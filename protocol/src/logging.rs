//! The binaries' shared logging set-up (feature `logging`; not sans-IO, so the
//! pool and the miner opt in and nothing else pulls it in): log lines on stderr
//! as text or JSON, and the optional tokio-console endpoint (`--console ADDR`).
//!
//! The console is a gRPC server that `tokio-console` connects to, to watch the
//! runtime's tasks in a live pool or miner. It exists only in a build with the
//! `console` feature and `RUSTFLAGS="--cfg tokio_unstable"`; in any other build,
//! asking for it is an error that says how to rebuild. Nothing listens unless it
//! is asked for. It has no authentication and shows task names, fields and
//! source locations, so keep it on loopback and reach it through SSH:
//! `ssh -L 6669:127.0.0.1:6669 HOST`, then `tokio-console http://127.0.0.1:6669`.

use std::io::IsTerminal;
use std::net::SocketAddr;

use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How a binary logs.
#[derive(Debug, Clone)]
pub struct Logging {
    /// The binary's name, for the console's rebuild hint (`CARGO_PKG_NAME`).
    pub program: &'static str,
    pub format: LogFormat,
    /// The level filter; RUST_LOG, when set, is used in its place unless `forced`.
    pub default_filter: &'static str,
    /// `default_filter` wins over RUST_LOG (the miner's `--quiet`).
    pub forced: bool,
    /// Serve tokio-console here.
    pub console: Option<SocketAddr>,
}

/// The console was asked for and cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "--console {addr}: this {program} was built without tokio-console support; rebuild it \
         with RUSTFLAGS=\"--cfg tokio_unstable\" cargo build --release -p {program} --features console"
    )]
    NotBuilt {
        addr: SocketAddr,
        program: &'static str,
    },
    #[error("console: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Installs the global subscriber: the console's layer first (it sees the
/// runtime's spans whatever the filter says), then filtered lines on stderr.
/// A second call leaves the first subscriber in place.
///
/// # Errors
/// The console is asked for and cannot be served.
pub fn init(logging: &Logging) -> Result<(), ConsoleError> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) if !logging.forced => filter,
        _ => EnvFilter::new(logging.default_filter),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match logging.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let console = logging
        .console
        .map(|addr| console::spawn(addr, logging.program))
        .transpose()?;
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(fmt.with_filter(filter))
        .try_init();
    if let Some(addr) = logging.console {
        tracing::info!("tokio-console on {addr}: tokio-console http://{addr}");
    }
    Ok(())
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

#[cfg(all(feature = "console", tokio_unstable))]
mod console {
    use super::*;

    pub fn spawn(addr: SocketAddr, _program: &'static str) -> Result<BoxedLayer, ConsoleError> {
        // The server binds on its own thread and only panics there; find a bad or
        // busy address here, where it can stop the program with a message.
        drop(
            std::net::TcpListener::bind(addr)
                .map_err(|source| ConsoleError::Bind { addr, source })?,
        );
        Ok(console_subscriber::ConsoleLayer::builder()
            .server_addr(addr)
            .spawn()
            .boxed())
    }
}

#[cfg(not(all(feature = "console", tokio_unstable)))]
mod console {
    use super::*;

    pub fn spawn(addr: SocketAddr, program: &'static str) -> Result<BoxedLayer, ConsoleError> {
        Err(ConsoleError::NotBuilt { addr, program })
    }
}
