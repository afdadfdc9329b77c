//! The operator's HTTP API (JSON): per-worker shares and hashrate, found blocks,
//! pool totals.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounting::rfc3339;
use crate::session::Context;

/// The API routes.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/api/workers", get(workers))
        .route("/api/workers/{worker}", get(worker))
        .route("/api/blocks", get(blocks))
        .route("/api/pool", get(pool))
        .with_state(ctx)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[derive(Deserialize)]
struct WorkersQuery {
    account: Option<String>,
}

async fn workers(
    State(ctx): State<Arc<Context>>,
    Query(query): Query<WorkersQuery>,
) -> Json<Value> {
    Json(json!({ "workers": ctx.accounting.workers(query.account.as_deref()) }))
}

async fn worker(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    match ctx.accounting.worker_view(&name) {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no worker named {name:?}")),
    }
}

#[derive(Deserialize)]
struct BlocksQuery {
    limit: Option<usize>,
}

async fn blocks(State(ctx): State<Arc<Context>>, Query(query): Query<BlocksQuery>) -> Response {
    let limit = query.limit.unwrap_or(100).min(1000);
    let store = ctx.store.clone();
    let found = tokio::task::spawn_blocking(move || store.blocks(limit)).await;
    match found {
        Ok(Ok(blocks)) => {
            let blocks: Vec<Value> = blocks
                .into_iter()
                .map(|b| {
                    json!({
                        "height": b.height,
                        "hash": b.hash.to_string(),
                        "worker": b.worker,
                        "time": rfc3339(b.time_ms),
                        "status": b.status,
                        "raw": hex::encode(&b.raw),
                    })
                })
                .collect();
            Json(json!({ "blocks": blocks })).into_response()
        }
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

async fn pool(State(ctx): State<Arc<Context>>) -> Json<Value> {
    let accounting = &ctx.accounting;
    let totals = &accounting.totals;
    let job = ctx.book.current();
    Json(json!({
        "accepted": totals.accepted.load(Ordering::Relaxed),
        "accepted_difficulty": accounting.accepted_difficulty(),
        "rejected": totals.rejected.load(Ordering::Relaxed),
        "sessions": totals.sessions.load(Ordering::Relaxed),
        "workers": accounting.workers(None).len(),
        "blocks_found": totals.blocks.load(Ordering::Relaxed),
        "hashrate_1m": accounting.pool_hashrate(60_000),
        "hashrate_10m": accounting.pool_hashrate(600_000),
        "hashrate_1h": accounting.pool_hashrate(3_600_000),
        "height": job.job.height(),
        "network_difficulty": job.job.network_difficulty,
    }))
}
