//! The operator's HTTP API (JSON): per-worker shares and hashrate, found blocks,
//! pool totals.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use subtle::ConstantTimeEq;

use crate::accounting::{now_ms, rfc3339};
use crate::context::Context;
use crate::history::Range;
use crate::ledger::history::Scope;

mod payouts;

/// The API routes.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/api/workers", get(workers))
        .route("/api/workers/{worker}", get(worker))
        .route("/api/blocks", get(blocks))
        .route("/api/pool", get(pool))
        .route("/api/payouts/current", get(payouts::current))
        .route("/api/nodes", get(nodes))
        .route("/api/bans", get(bans).post(add_ban))
        .route("/api/bans/{ip}", delete(remove_ban))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}/kick", post(kick))
        .route("/metrics", get(metrics))
        .route("/api/workers/{worker}/history", get(worker_history))
        .route("/api/accounts", get(accounts))
        .route("/api/accounts/{account}", get(account))
        .route("/api/accounts/{account}/history", get(account_history))
        .route("/api/accounts/{account}/earnings", get(payouts::earnings))
        .route(
            "/api/accounts/{account}/address",
            put(payouts::bind).delete(payouts::unbind),
        )
        .route("/api/pool/history", get(pool_history))
        .route("/api/blocks/{hash}/raw", get(raw_block))
        .merge(crate::dashboard::router())
        .with_state(ctx)
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    let text = crate::metrics::scrape::render(ctx);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Deserialize)]
struct HistoryQuery {
    range: Option<String>,
}

async fn history(ctx: Arc<Context>, scope: Scope, name: String, query: HistoryQuery) -> Response {
    let text = query.range.unwrap_or_else(|| "1h".to_owned());
    let Some(range) = Range::parse(&text) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("range {text:?} is not one of 1h, 24h, 7d, 30d"),
        );
    };
    let read =
        crate::history::read(&ctx.accounting, &*ctx.ledger, scope, &name, range, now_ms()).await;
    match read {
        Ok(points) => Json(json!({
            "range": text,
            "step_seconds": range.step_ms / 1000,
            "points": points,
        }))
        .into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

async fn worker_history(
    State(ctx): State<Arc<Context>>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    if !ctx.accounting.knows(&name) {
        return error(StatusCode::NOT_FOUND, format!("no worker named {name:?}"));
    }
    history(ctx, Scope::Worker, name, query).await
}

async fn account_history(
    State(ctx): State<Arc<Context>>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    history(ctx, Scope::Account, name, query).await
}

async fn pool_history(
    State(ctx): State<Arc<Context>>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    history(ctx, Scope::Pool, String::new(), query).await
}

/// The found block's raw bytes as hex, for resubmitting or inspecting.
async fn raw_block(State(ctx): State<Arc<Context>>, Path(hash): Path<String>) -> Response {
    let Ok(parsed) = hash.parse::<bitcoin::BlockHash>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{hash:?} is not a block hash"),
        );
    };
    match ctx.ledger.block(parsed).await {
        Ok(Some(block)) => hex::encode(block.raw).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no found block {hash}")),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
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

async fn accounts(State(ctx): State<Arc<Context>>) -> Json<Value> {
    let workers = ctx.accounting.workers(None);
    Json(json!({ "accounts": crate::accounts::accounts(&workers) }))
}

async fn account(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    let workers = ctx.accounting.workers(Some(&name));
    match crate::accounts::accounts(&workers).pop() {
        Some(view) => Json(json!({
            "account": view,
            "workers": workers,
            "payout_address": ctx.reward.payout_address(&name),
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no account named {name:?}")),
    }
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
    match ctx.ledger.blocks(limit).await {
        Ok(blocks) => {
            let blocks: Vec<Value> = blocks
                .into_iter()
                .map(|b| {
                    json!({
                        "height": b.height,
                        "hash": b.hash.to_string(),
                        "worker": b.worker,
                        "time": rfc3339(b.time_ms),
                        "status": b.status,
                        "payouts": b.payouts,
                        "raw": hex::encode(&b.raw),
                    })
                })
                .collect();
            Json(json!({ "blocks": blocks })).into_response()
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// The cluster's nodes with their status, as of this node's last heartbeat.
async fn nodes(State(ctx): State<Arc<Context>>) -> Json<Value> {
    Json(match &ctx.cluster {
        Some(cluster) => json!({
            "cluster": true,
            "node": cluster.id(),
            "nodes": *cluster.nodes(),
        }),
        None => json!({ "cluster": false, "node": null, "nodes": [] }),
    })
}

async fn pool(State(ctx): State<Arc<Context>>) -> Json<Value> {
    let accounting = &ctx.accounting;
    let totals = &accounting.totals;
    let job = ctx.book.current();
    let now = now_ms();
    let all = crate::accounts::total(&accounting.workers(None));
    Json(json!({
        "accepted": totals.accepted.load(Ordering::Relaxed),
        "accepted_difficulty": accounting.accepted_difficulty(),
        "rejected": totals.rejected.load(Ordering::Relaxed),
        "sessions": totals.sessions.load(Ordering::Relaxed),
        "workers": all.workers,
        "blocks_found": totals.blocks.load(Ordering::Relaxed),
        "best_share_since_block": all.best_share_since_block,
        "best_share_difficulty": all.best_share_difficulty,
        "hashrate_1m": accounting.pool_hashrate(now, 60_000),
        "hashrate_10m": accounting.pool_hashrate(now, 600_000),
        "hashrate_1h": accounting.pool_hashrate(now, 3_600_000),
        // What the hashrates average over while the pool is younger than their spans.
        "observed_seconds": accounting.observed_ms(now, 3_600_000) / 1000,
        "height": job.job.height(),
        "network_difficulty": job.job.network_difficulty,
    }))
}

/// Checks the bearer token of a mutating request, in constant time;
/// returns the refusal when it is missing or wrong.
fn refusal(ctx: &Context, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &ctx.config.admin_token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "no admin token is configured; mutating endpoints are disabled".into(),
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ))
    }
}

async fn bans(State(ctx): State<Arc<Context>>) -> Json<Value> {
    let bans: Vec<Value> = ctx
        .guard
        .bans()
        .into_iter()
        .map(|(ip, ban)| {
            let until_ms = ban
                .until
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            json!({"ip": ip.to_string(), "reason": ban.reason, "until": rfc3339(until_ms)})
        })
        .collect();
    Json(json!({ "bans": bans }))
}

#[derive(Deserialize)]
struct NewBan {
    ip: IpAddr,
    reason: Option<String>,
    seconds: Option<u64>,
}

async fn add_ban(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Json(ban): Json<NewBan>,
) -> Response {
    if let Some(denied) = refusal(&ctx, &headers) {
        return denied;
    }
    let duration = ban
        .seconds
        .map_or(ctx.guard.config.ban_duration, Duration::from_secs);
    let reason = ban
        .reason
        .unwrap_or_else(|| "banned by the operator".into());
    if !ctx.guard.ban(ban.ip, &reason, duration) {
        return error(
            StatusCode::CONFLICT,
            format!("{} is on the allow-list", ban.ip),
        );
    }
    // Close the address's live sessions too.
    for entry in ctx.sessions.iter() {
        if entry.peer.ip().to_canonical() == ban.ip.to_canonical() {
            entry.kick.cancel();
        }
    }
    (
        StatusCode::CREATED,
        Json(json!({"ip": ban.ip.to_string(), "reason": reason})),
    )
        .into_response()
}

async fn remove_ban(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Path(ip): Path<String>,
) -> Response {
    if let Some(denied) = refusal(&ctx, &headers) {
        return denied;
    }
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{ip:?} is not an IP address"),
        );
    };
    if ctx.guard.unban(ip) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("{ip} is not banned"))
    }
}

async fn sessions(State(ctx): State<Arc<Context>>) -> Json<Value> {
    let mut sessions: Vec<(u64, Value)> = ctx
        .sessions
        .iter()
        .map(|e| (*e.key(), json!({"id": e.key(), "peer": e.peer.to_string(), "connected": e.connected, "workers": e.workers})))
        .collect();
    sessions.sort_by_key(|(id, _)| *id);
    Json(json!({ "sessions": sessions.into_iter().map(|(_, v)| v).collect::<Vec<_>>() }))
}

async fn kick(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    if let Some(denied) = refusal(&ctx, &headers) {
        return denied;
    }
    match ctx.sessions.get(&id) {
        Some(session) => {
            session.kick.cancel();
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no session {id}")),
    }
}
