//! What miners are paid: the current job's split and coinbase, and each account's
//! earnings block by block.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error;
use crate::accounting::{account_of, rfc3339};
use crate::context::Context;
use crate::ledger::BLOCK_ACCEPTED;
use crate::reward::{BindError, Scheme};
use crate::session::check_worker_name;

/// Whose coinbase `/api/payouts/current` shows.
#[derive(serde::Deserialize)]
pub(super) struct Whose {
    account: Option<String>,
}

/// What the current job's coinbase pays, and the coinbase itself: any miner can check
/// the split against the ledger's numbers and the coinbase it hashes. Under solo each
/// miner hashes a coinbase of its own: `?account=ADDRESS` shows that one (without it,
/// the job's own, everything to the operator, which no miner is handed).
pub(super) async fn current(
    State(ctx): State<Arc<Context>>,
    Query(whose): Query<Whose>,
) -> Response {
    let current = ctx.book.current();
    let job = &current.job;
    let payee = match (ctx.reward.scheme(), whose.account) {
        (Scheme::Solo, Some(account)) => match ctx.reward.payee(account_of(&account)) {
            Ok(payee) => Some(payee),
            Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
        },
        _ => None,
    };
    let face = job.face(payee.as_ref());
    let template = &job.template;
    let payouts = &face.payouts;
    Json(json!({
        "scheme": payouts.scheme.as_str(),
        "job_id": job.notify.job_id.to_string(),
        "height": template.height,
        "coinbase_value": template.coinbase_value.to_sat(),
        "fee_bps": payouts.fee_bps,
        "operator_amount": payouts.split.operator_amount().to_sat(),
        "network_difficulty": job.network_difficulty,
        "window": payouts.window,
        "outputs": payouts.split.outputs_json(),
        "payees": payouts.split.lines,
        "coinb1": hex::encode(&face.coinbase.coinb1),
        "coinb2": hex::encode(&face.coinbase.coinb2),
    }))
    .into_response()
}

/// Confirmations after which a coinbase output may be spent (Bitcoin's
/// `COINBASE_MATURITY`).
const COINBASE_MATURITY: u64 = 100;

/// What `account` was paid in each found block's coinbase, newest first: the amount, and
/// whether the block is immature, mature, orphaned (or was refused), so the miner can
/// check every amount on its own node; and what it is owed for later coinbases.
pub(super) async fn earnings(
    State(ctx): State<Arc<Context>>,
    Path(account): Path<String>,
) -> Response {
    let (earnings, owed) = match tokio::try_join!(
        ctx.ledger.earnings(&account, 1000),
        ctx.ledger.owed(Some(&account))
    ) {
        Ok(read) => read,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    // The job height is the next block's: the tip is one below.
    let tip = ctx.book.current().job.height().saturating_sub(1);
    let (mut mature, mut immature) = (0i64, 0i64);
    let blocks: Vec<Value> = earnings
        .iter()
        .map(|e| {
            let confirmations = (tip + 1).saturating_sub(e.height);
            let status = match e.status.as_str() {
                BLOCK_ACCEPTED if confirmations >= COINBASE_MATURITY => {
                    mature += e.line.paid;
                    "mature"
                }
                BLOCK_ACCEPTED => {
                    immature += e.line.paid;
                    "immature"
                }
                other => other,
            };
            json!({
                "height": e.height,
                "hash": e.hash.to_string(),
                "time": rfc3339(e.time_ms),
                "status": status,
                "credit": e.line.credit,
                "earned": e.line.earned,
                "paid": e.line.paid,
                "owed_after": e.line.owed_after,
            })
        })
        .collect();
    let owed = owed.first().map_or(0, |(_, sats)| *sats);
    Json(json!({
        "account": account,
        "payout_address": ctx.reward.payout_address(&account),
        "paid_mature": mature,
        "paid_immature": immature,
        "owed": owed,
        "blocks": blocks,
    }))
    .into_response()
}

/// The address to bind: `{"address": "..."}`.
#[derive(serde::Deserialize)]
pub(super) struct Binding {
    address: String,
}

/// Binds an address to an account (admin): the account's payouts, under PPLNS and solo,
/// go to it from the next job on.
pub(super) async fn bind(
    State(ctx): State<Arc<Context>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Json(binding): Json<Binding>,
) -> Response {
    change_binding(&ctx, &headers, account, Some(binding.address)).await
}

/// Removes an account's bound address (admin): it is paid to itself again when it is an
/// address, or carried as owed.
pub(super) async fn unbind(
    State(ctx): State<Arc<Context>>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Response {
    change_binding(&ctx, &headers, account, None).await
}

async fn change_binding(
    ctx: &Context,
    headers: &HeaderMap,
    account: String,
    address: Option<String>,
) -> Response {
    if let Some(denied) = super::refusal(ctx, headers) {
        return denied;
    }
    if let Err(reason) = check_worker_name(&account) {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    if account.contains('.') {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{account:?} is a worker name; an account has no dot"),
        );
    }
    match ctx.reward.bind(&account, address.as_deref()).await {
        Ok(()) => Json(json!({
            "account": account,
            "payout_address": ctx.reward.payout_address(&account),
        }))
        .into_response(),
        Err(BindError::Address(reason)) => error(StatusCode::BAD_REQUEST, reason),
        Err(BindError::Ledger(err)) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}
