//! The optional HTTP API (`--api ADDR`): `GET /status` as JSON and `GET /metrics` in
//! the Prometheus/OpenMetrics text format.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use crate::stats::{Snapshot, Stats};

/// What the API serves: the counters, and the hashing kernel in use.
#[derive(Clone)]
struct Api {
    stats: Arc<Stats>,
    kernel: &'static str,
}

/// Starts serving on `addr`; returns the bound address.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<Stats>,
    kernel: &'static str,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the API on {addr}"))?;
    let bound = listener.local_addr().context("API address")?;
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(Api { stats, kernel });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "API server stopped");
        }
    });
    Ok(bound)
}

async fn status(State(api): State<Api>) -> Json<Value> {
    Json(status_json(&api.stats.snapshot(), api.kernel))
}

/// The `/status` document.
pub fn status_json(s: &Snapshot, kernel: &str) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "kernel": kernel,
        "uptime_seconds": s.uptime_seconds,
        "pool": s.link.pool,
        "connection": s.link.state.name(),
        "difficulty": s.link.difficulty,
        "hashrate": s.rates.iter().sum::<f64>(),
        "hashrate_per_thread": s.rates,
        "hashes": s.hashes.iter().sum::<u64>(),
        "accepted": s.accepted,
        "rejected": s.rejected_total(),
        "rejected_by_reason": s.rejected,
        "stale": s.stale,
        "acceptance_percent": s.acceptance_percent(),
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThreadLabels {
    thread: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShareLabels {
    result: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
    kernel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    state: String,
}

async fn metrics(State(api): State<Api>) -> Response {
    match metrics_text(&api.stats.snapshot(), api.kernel) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// The `/metrics` document, built from a snapshot.
///
/// # Errors
/// Formatting failures of the encoder.
pub fn metrics_text(s: &Snapshot, kernel: &str) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("quarry_miner");
    let info = Family::<InfoLabels, Gauge>::default();
    registry.register(
        "build",
        "The miner's version and hashing kernel (value 1)",
        info.clone(),
    );
    info.get_or_create(&InfoLabels {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: kernel.to_owned(),
    })
    .set(1);
    let hashrate = Family::<ThreadLabels, Gauge<f64, AtomicU64>>::default();
    registry.register("hashrate", "Hashes per second per thread", hashrate.clone());
    for (thread, rate) in s.rates.iter().enumerate() {
        hashrate
            .get_or_create(&ThreadLabels {
                thread: thread.to_string(),
            })
            .set(*rate);
    }
    let hashes = Family::<ThreadLabels, Counter>::default();
    registry.register("hashes", "Hashes done per thread", hashes.clone());
    for (thread, count) in s.hashes.iter().enumerate() {
        hashes
            .get_or_create(&ThreadLabels {
                thread: thread.to_string(),
            })
            .inc_by(*count);
    }
    let shares = Family::<ShareLabels, Counter>::default();
    registry.register("shares", "Shares by result", shares.clone());
    let share = |result: &str, reason: &str| ShareLabels {
        result: result.to_owned(),
        reason: reason.to_owned(),
    };
    shares
        .get_or_create(&share("accepted", ""))
        .inc_by(s.accepted);
    shares.get_or_create(&share("stale", "")).inc_by(s.stale);
    for (reason, count) in &s.rejected {
        shares
            .get_or_create(&share("rejected", reason))
            .inc_by(*count);
    }
    let uptime = Gauge::<f64, AtomicU64>::default();
    registry.register("uptime_seconds", "Seconds since start", uptime.clone());
    uptime.set(s.uptime_seconds);
    let difficulty = Gauge::<f64, AtomicU64>::default();
    registry.register(
        "difficulty",
        "Share difficulty being mined",
        difficulty.clone(),
    );
    difficulty.set(s.link.difficulty);
    let pool = Family::<PoolLabels, Gauge>::default();
    registry.register(
        "pool",
        "The pool and the connection state (value 1)",
        pool.clone(),
    );
    pool.get_or_create(&PoolLabels {
        pool: s.link.pool.clone().unwrap_or_default(),
        state: s.link.state.name().to_owned(),
    })
    .set(1);
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ConnState;

    #[test]
    fn metrics_and_status_carry_every_counter() {
        let stats = Stats::new(2);
        stats.add_hashes(1, 500);
        stats.accepted();
        stats.rejected("duplicate share");
        stats.set_link(Some("stratum+tcp://p:1".into()), ConnState::Mining);
        let snapshot = stats.snapshot();
        let text = metrics_text(&snapshot, "sha-ni").unwrap();
        assert!(
            text.contains(&format!(
                "quarry_miner_build{{version=\"{}\",kernel=\"sha-ni\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains("quarry_miner_hashes_total{thread=\"1\"} 500"),
            "{text}"
        );
        assert!(
            text.contains("quarry_miner_shares_total{result=\"accepted\",reason=\"\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("result=\"rejected\",reason=\"duplicate share\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("quarry_miner_pool{pool=\"stratum+tcp://p:1\",state=\"mining\"} 1"),
            "{text}"
        );
        assert!(text.contains("quarry_miner_uptime_seconds"), "{text}");
        let status = status_json(&snapshot, "sha-ni");
        assert_eq!(status["kernel"], "sha-ni");
        assert_eq!(status["accepted"], 1);
        assert_eq!(status["rejected_by_reason"]["duplicate share"], 1);
        assert_eq!(status["connection"], "mining");
        assert_eq!(status["hashes"], 500);
    }
}
