//! The scrape: every metric encoded fresh from where it lives, in the OpenMetrics text
//! format.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::histogram::{self, AtomicHistogram};
use super::process;
use crate::cluster::Health;
use crate::context::Context;
use crate::ledger::RejectKind;
use crate::watch::Status;

/// Upper bounds of the share-difficulty distribution: powers of ten.
const DIFFICULTY_BOUNDS: &[f64] = &[
    1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6,
];

/// What a scrape reads; encodes everything fresh on each scrape.
struct Scrape(Arc<Context>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

/// Renders every metric in the OpenMetrics text format.
pub fn render(ctx: Arc<Context>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(ctx)));
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        // Writing to a String cannot fail; keep the output well-formed regardless.
        text.clear();
        let _ = writeln!(text, "# EOF");
    }
    text
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn counter_f64(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// One metric with a value per label set.
fn family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    rows: &[(L, f64)],
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in rows {
        let mut series = metric.encode_family(labels)?;
        match metric_type {
            MetricType::Counter => series.encode_counter::<NoLabelSet, _, u64>(value, None)?,
            _ => series.encode_gauge(value)?,
        }
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &AtomicHistogram,
) -> fmt::Result {
    histogram.encode(enc.encode_descriptor(name, help, None, MetricType::Histogram)?)
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let ctx = &self.0;
        let metrics = &ctx.metrics;
        let totals = &ctx.accounting.totals;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;

        let mut shares = vec![(
            [("result", "accepted"), ("reason", "")],
            load(&totals.accepted),
        )];
        shares.extend(RejectKind::ALL.iter().map(|kind| {
            (
                [("result", "rejected"), ("reason", kind.as_str())],
                totals.rejected_of(*kind) as f64,
            )
        }));
        family(
            &mut enc,
            "quarry_shares",
            "Shares judged, by result and reject reason.",
            MetricType::Counter,
            &shares,
        )?;
        counter_f64(
            &mut enc,
            "quarry_accepted_difficulty",
            "Sum of the difficulty of accepted shares.",
            ctx.accounting.accepted_difficulty(),
        )?;
        counter(
            &mut enc,
            "quarry_blocks_found",
            "Blocks found by the pool's miners.",
            totals.blocks.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "quarry_sessions",
            "Open Stratum sessions.",
            load(&totals.sessions),
        )?;
        family(
            &mut enc,
            "quarry_connections",
            "Connections admitted, by listener.",
            MetricType::Counter,
            &[
                ([("listener", "tcp")], load(&metrics.connections[0])),
                ([("listener", "tls")], load(&metrics.connections[1])),
                ([("listener", "v2")], load(&metrics.connections[2])),
            ],
        )?;
        counter(
            &mut enc,
            "quarry_tls_handshakes",
            "TLS handshakes completed.",
            metrics.tls_handshakes.load(Ordering::Relaxed),
        )?;
        family(
            &mut enc,
            "quarry_tls_handshake_failures",
            "TLS handshakes that failed, by reason.",
            MetricType::Counter,
            &[
                ([("reason", "error")], load(&metrics.tls_failures[0])),
                ([("reason", "timeout")], load(&metrics.tls_failures[1])),
            ],
        )?;
        family(
            &mut enc,
            "quarry_sv2_handshakes",
            "Stratum V2 Noise handshakes, by outcome: completed, or failed (error, timeout, or a peer that closed).",
            MetricType::Counter,
            &[
                ([("outcome", "completed")], load(&metrics.sv2_handshakes[0])),
                ([("outcome", "failed")], load(&metrics.sv2_handshakes[1])),
            ],
        )?;
        family(
            &mut enc,
            "quarry_webhook_events",
            "Worker events for the webhook, by outcome: sent, failed (the POST failed) or dropped (queue full).",
            MetricType::Counter,
            &[
                ([("outcome", "sent")], load(&metrics.webhook.sent)),
                ([("outcome", "failed")], load(&metrics.webhook.failed)),
                ([("outcome", "dropped")], load(&metrics.webhook.dropped)),
            ],
        )?;
        family(
            &mut enc,
            "quarry_rate_limited",
            "Connections refused and messages rejected by the limits, by kind.",
            MetricType::Counter,
            &[
                ([("kind", "banned")], load(&metrics.refused[0])),
                ([("kind", "connection_rate")], load(&metrics.refused[1])),
                ([("kind", "per_ip_cap")], load(&metrics.refused[2])),
                ([("kind", "submit")], load(&metrics.rate_limited[0])),
                ([("kind", "message")], load(&metrics.rate_limited[1])),
            ],
        )?;
        counter(
            &mut enc,
            "quarry_bans",
            "Addresses banned (by the limits or the operator).",
            ctx.guard.bans_made(),
        )?;
        gauge(
            &mut enc,
            "quarry_banned_addresses",
            "Addresses banned right now.",
            ctx.guard.bans().len() as f64,
        )?;

        let job = ctx.book.current();
        gauge(
            &mut enc,
            "quarry_network_difficulty",
            "Network difficulty of the current job.",
            job.job.network_difficulty,
        )?;
        gauge(
            &mut enc,
            "quarry_block_height",
            "Height of the block the current job builds.",
            job.job.height() as f64,
        )?;
        histogram(
            &mut enc,
            "quarry_share_validation_seconds",
            "Time to validate a share.",
            &metrics.share_validation,
        )?;
        histogram(
            &mut enc,
            "quarry_job_fanout_seconds",
            "Time from a new block's job to the last session written.",
            &metrics.fanout.histogram,
        )?;
        gauge(
            &mut enc,
            "quarry_job_fanout_latest_seconds",
            "Fan-out time of the latest new block so far.",
            metrics.fanout.latest().as_secs_f64(),
        )?;

        let store = ctx.ledger.stats();
        counter(
            &mut enc,
            "quarry_store_commits",
            "Store transactions committed.",
            store.commits,
        )?;
        counter(
            &mut enc,
            "quarry_store_failed_commits",
            "Store transactions that failed and were rolled back.",
            store.failed_commits,
        )?;
        histogram(
            &mut enc,
            "quarry_store_commit_seconds",
            "Time to apply and commit one ledger batch.",
            ctx.ledger.commit_latency(),
        )?;
        histogram(
            &mut enc,
            "quarry_store_batch_size",
            "Commands per ledger batch.",
            ctx.ledger.batch_sizes(),
        )?;
        if let Some(cluster) = &ctx.cluster {
            gauge(
                &mut enc,
                "quarry_cluster_node_id",
                "This node's id in the cluster (the high byte of its extranonce1s).",
                f64::from(cluster.id()),
            )?;
            let nodes = cluster.nodes();
            let rows: Vec<([(&str, &str); 1], f64)> = Health::ALL
                .iter()
                .map(|health| {
                    let count = nodes.iter().filter(|n| n.status == *health).count();
                    ([("status", health.as_str())], count as f64)
                })
                .collect();
            family(
                &mut enc,
                "quarry_cluster_nodes",
                "Nodes of the cluster seen in the last day, by status (ok, lagging, dead).",
                MetricType::Gauge,
                &rows,
            )?;
        }

        let workers = ctx.accounting.workers(None);
        let (buckets, count) = histogram::cumulative(
            DIFFICULTY_BOUNDS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .enumerate()
                .map(|(i, bound)| {
                    let lower = i.checked_sub(1).map_or(0.0, |j| DIFFICULTY_BOUNDS[j]);
                    let n = workers
                        .iter()
                        .filter(|w| w.sessions > 0 && w.difficulty > lower && w.difficulty <= bound)
                        .count();
                    (bound, n as u64)
                }),
        );
        let sum = workers
            .iter()
            .filter(|w| w.sessions > 0)
            .map(|w| w.difficulty)
            .sum();
        enc.encode_descriptor(
            "quarry_worker_difficulty",
            "Share difficulty of the connected workers (a snapshot at scrape time).",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        let by_status: Vec<([(&str, &str); 1], f64)> = Status::ALL
            .iter()
            .map(|status| {
                let n = workers
                    .iter()
                    .filter(|w| w.status == status.as_str())
                    .count();
                ([("status", status.as_str())], n as f64)
            })
            .collect();
        family(
            &mut enc,
            "quarry_workers",
            "Workers known to the pool, by status (offline and drop are flags).",
            MetricType::Gauge,
            &by_status,
        )?;
        let all = crate::accounts::total(&workers);
        gauge(
            &mut enc,
            "quarry_best_share_since_block_difficulty",
            "Highest difficulty any share achieved since the pool's last block.",
            all.best_share_since_block,
        )?;
        gauge(
            &mut enc,
            "quarry_best_share_difficulty",
            "Highest difficulty any share achieved, ever.",
            all.best_share_difficulty,
        )?;

        if metrics.per_worker {
            let per = |f: &dyn Fn(&crate::accounting::WorkerView) -> f64| -> Vec<([(&str, &str); 1], f64)> {
                workers
                    .iter()
                    .map(|w| ([("worker", w.worker.as_str())], f(w)))
                    .collect()
            };
            family(
                &mut enc,
                "quarry_worker_accepted",
                "Accepted shares per worker.",
                MetricType::Counter,
                &per(&|w| w.accepted as f64),
            )?;
            family(
                &mut enc,
                "quarry_worker_rejected",
                "Rejected shares per worker.",
                MetricType::Counter,
                &per(&|w| w.rejected as f64),
            )?;
            family(
                &mut enc,
                "quarry_worker_hashrate_10m",
                "Hashes per second per worker over the last 10 minutes.",
                MetricType::Gauge,
                &per(&|w| w.hashrate_10m),
            )?;
            family(
                &mut enc,
                "quarry_worker_best_share_difficulty",
                "Highest difficulty a share of the worker achieved, ever.",
                MetricType::Gauge,
                &per(&|w| w.best_share_difficulty),
            )?;
            family(
                &mut enc,
                "quarry_worker_best_share_since_block_difficulty",
                "Highest difficulty a share of the worker achieved since the pool's last block.",
                MetricType::Gauge,
                &per(&|w| w.best_share_since_block),
            )?;
        }

        let process = process::ProcessStats::read();
        if let Some(seconds) = process.cpu_seconds {
            counter_f64(
                &mut enc,
                "process_cpu_seconds",
                "User and system CPU time spent.",
                seconds,
            )?;
        }
        if let Some(bytes) = process.resident_bytes {
            gauge(
                &mut enc,
                "process_resident_memory_bytes",
                "Resident memory.",
                bytes as f64,
            )?;
        }
        if let Some(fds) = process.open_fds {
            gauge(
                &mut enc,
                "process_open_fds",
                "Open file descriptors.",
                fds as f64,
            )?;
        }
        Ok(())
    }
}
