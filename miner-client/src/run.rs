//! `quarry-miner`: logging, then either the benchmark or mining (hashing threads,
//! network client, summary lines, optional API) until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quarry_protocol::logging::{self, Logging};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::config::{MineConfig, MinerConfig, Mode, Options};
use crate::hasher::Hashers;
use crate::kernel::Kernel;
use crate::stats::{Rate, Stats};

/// Verified shares waiting for the network task, at most.
const SHARE_QUEUE: usize = 1024;
/// How long the threads hash before the first connection, to suggest a
/// difficulty that suits them.
const CALIBRATION: Duration = Duration::from_millis(300);

/// Resolves the options and runs.
///
/// # Errors
/// Invalid configuration, or a failure to start.
pub fn run(options: Options) -> anyhow::Result<()> {
    let config = MinerConfig::resolve(options)?;
    logging::init(&Logging {
        program: env!("CARGO_PKG_NAME"),
        format: config.log_format,
        default_filter: if config.quiet { "warn" } else { "info" },
        forced: config.quiet,
        console: config.console,
    })?;
    match config.mode {
        Mode::Benchmark { seconds, json } => {
            benchmark(config.threads, config.kernel, seconds, json)
        }
        Mode::Mine(mine) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(mine_until_signal(*mine, config.threads, config.kernel))
        }
    }
}

fn benchmark(threads: usize, kernel: Kernel, seconds: Duration, json: bool) -> anyhow::Result<()> {
    if !json {
        eprintln!(
            "benchmarking the {} kernel on {threads} thread(s) for {:.0} s",
            kernel.kind(),
            seconds.as_secs_f64()
        );
    }
    let result = crate::benchmark::run(threads, kernel, seconds);
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        let per_thread: Vec<String> = result
            .per_thread
            .iter()
            .map(|r| Rate(*r).to_string())
            .collect();
        println!(
            "{} kernel, {} thread(s): {} in {:.1} s = {} [{}]",
            result.kernel,
            result.threads,
            result.hashes,
            result.seconds,
            Rate(result.hashes_per_second),
            per_thread.join(", ")
        );
    }
    Ok(())
}

async fn mine_until_signal(
    config: MineConfig,
    threads: usize,
    kernel: Kernel,
) -> anyhow::Result<()> {
    let calibrated = if config.share_interval.is_some() {
        tokio::task::spawn_blocking(move || {
            crate::benchmark::run(threads, kernel, CALIBRATION).hashes_per_second
        })
        .await
        .context("measuring the hash rate")?
    } else {
        0.0
    };
    let stats = Arc::new(Stats::new(threads));
    let (shares_tx, shares_rx) = mpsc::channel(SHARE_QUEUE);
    let hashers = Hashers::start(threads, kernel, Arc::clone(&stats), shares_tx);
    tracing::info!(threads, kernel = %kernel.kind(), pools = config.pools.len(), hashrate = %Rate(calibrated), "quarry-miner {} starting", env!("CARGO_PKG_VERSION"));
    if let Some(addr) = config.api {
        let bound = crate::api::serve(addr, Arc::clone(&stats), kernel.kind().name()).await?;
        tracing::info!("API on http://{bound}/status and http://{bound}/metrics");
    }
    let reporter = tokio::spawn(report(Arc::clone(&stats), config.print_interval));
    let client = match Client::new(config, hashers.board(), shares_rx, Arc::clone(&stats)) {
        Ok(client) => client.calibrated(calibrated),
        Err(error) => {
            hashers.stop();
            return Err(error);
        }
    };
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        () = client.run() => {}
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    reporter.abort();
    tracing::info!("stopping");
    tokio::task::spawn_blocking(move || hashers.stop())
        .await
        .context("stopping the hashing threads")?;
    stats.sample();
    tracing::info!("{}", stats.snapshot());
    Ok(())
}

/// Logs the summary line every `interval`.
async fn report(stats: Arc<Stats>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        stats.sample();
        tracing::info!("{}", stats.snapshot());
    }
}
