//! `quarry-pool run`: logging, limits, start-up banner, signals.

use anyhow::Context;
use quarry_protocol::logging::{self, Logging};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{PoolConfig, RunArgs};
use crate::server::Pool;

/// Runs the pool until SIGINT or SIGTERM; SIGHUP reloads the TLS certificate.
///
/// # Errors
/// Invalid configuration or a failure to start.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = PoolConfig::resolve(args)?;
    logging::init(&Logging {
        program: env!("CARGO_PKG_NAME"),
        format: config.log_format,
        default_filter: "info",
        forced: false,
        console: config.console,
    })?;
    raise_open_files_limit();
    let shutdown_timeout = config.shutdown_timeout;
    let pool = Pool::start(config).await?;
    print_banner(&pool);

    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let lost = pool.ctx.cluster.as_ref().map(|cluster| cluster.lost());
    let watched = lost.clone();
    let lease_lost = async move {
        match watched {
            Some(lost) => lost.cancelled_owned().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lease_lost);
    loop {
        tokio::select! {
            () = &mut lease_lost => break,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => match &pool.tls {
                Some(tls) => match tls.reload() {
                    Ok(()) => tracing::info!(fingerprint = %tls.fingerprint(), "TLS certificate reloaded"),
                    Err(err) => tracing::error!(err = format!("{err:#}"), "TLS reload failed; keeping the old certificate"),
                },
                None => tracing::info!("SIGHUP: no TLS listener to reload"),
            },
        }
    }
    tracing::info!("shutting down");
    pool.shutdown(shutdown_timeout).await;
    if lost.is_some_and(|lost| lost.is_cancelled()) {
        anyhow::bail!("this node lost its cluster id lease and stopped serving");
    }
    println!("quarry-pool: stopped");
    Ok(())
}

/// Raises the open-files soft limit to the hard limit: each miner is a descriptor.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(open_files) => {
            tracing::info!(open_files, "open-files limit raised to the hard limit");
        }
        Err(err) => tracing::warn!(%err, "could not raise the open-files limit"),
    }
}

/// Tells the operator where the pool listens and how a miner connects.
fn print_banner(pool: &Pool) {
    let host = |addr: std::net::SocketAddr| {
        if addr.ip().is_unspecified() {
            format!("<this-host>:{}", addr.port())
        } else {
            addr.to_string()
        }
    };
    if let Some(addr) = pool.stratum_tcp {
        println!("quarry-pool: listening on stratum+tcp://{addr}");
        println!(
            "  miners connect with: quarry-miner -o stratum+tcp://{} -u ACCOUNT.WORKER",
            host(addr)
        );
    }
    if let (Some(addr), Some(tls)) = (pool.stratum_tls, &pool.tls) {
        let fingerprint = tls.fingerprint();
        println!("quarry-pool: listening on stratum+ssl://{addr}");
        println!("  TLS certificate SHA-256 fingerprint: {fingerprint}");
        println!(
            "  miners connect with: quarry-miner -o stratum+ssl://{} -u ACCOUNT.WORKER --tls-fingerprint {fingerprint}",
            host(addr)
        );
    }
    if let (Some(addr), Some(authority)) = (pool.stratum_v2, &pool.ctx.authority) {
        let public = authority.public;
        let en2 = pool.ctx.config.extranonce2_size;
        println!("quarry-pool: listening on stratum2+tcp://{addr}");
        println!("  Stratum V2 authority public key: {public}");
        println!(
            "  miners connect with: quarry-miner -o stratum2+tcp://{}/{public} -u ACCOUNT.WORKER",
            host(addr)
        );
        println!("  SRI translator_sv2 (tproxy.toml; leave out [miner_telemetry]):");
        // An aggregating translator takes 2 bytes of the channel's extranonce for
        // its own index; what is left is its miners' extranonce2.
        println!(
            "    downstream_extranonce2_size = {}",
            en2.saturating_sub(2).max(2)
        );
        // Worker-specific hashrate tracking: an aggregating translator names each
        // share's miner, and the pool credits that miner's worker.
        println!("    supported_extensions = [2]");
        println!("    required_extensions = [2]");
        println!("    [[upstreams]]");
        println!(
            "    address = \"{}\"",
            host(addr)
                .rsplit_once(':')
                .map_or("", |(h, _)| h)
                .to_owned()
        );
        println!("    port = {}", addr.port());
        println!("    authority_pubkey = \"{public}\"");
        println!("    user_identity = \"ACCOUNT.WORKER\"");
    }
    if let Some(addr) = pool.api {
        println!("quarry-pool: API on http://{addr}/api/pool");
        println!("quarry-pool: dashboard on http://{addr}/");
    }
}
