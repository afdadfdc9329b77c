//! `shares`: M workers, one connection each, submit valid shares — ground with
//! the protocol crate's share math at the difficulty the pool set — at a fixed
//! total rate or as fast as the pool acknowledges them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::api::accepted_by_worker;
use super::event::{Answer, Event};
use super::link::Link;
use super::report::{own_cpu, Percentiles};
use super::{within, SharesArgs};
use crate::grind::Grinder;

/// How long one connection may take to connect, subscribe, authorize and get a job.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the answers to shares still in flight at the end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The API's counts against the acknowledgements.
#[derive(Debug, Serialize)]
pub struct ApiCheck {
    /// Shares acknowledged to this run, by the generator's count.
    pub acknowledged: u64,
    /// The growth of the workers' `accepted` counts in the API during the run.
    pub counted: u64,
    /// Workers whose API count differs from their acknowledgements.
    pub mismatched: Vec<String>,
}

/// The results of `shares`.
#[derive(Debug, Serialize)]
pub struct SharesResult {
    pub transport: &'static str,
    pub workers: usize,
    pub connected: usize,
    pub errors: Vec<String>,
    pub seconds: f64,
    pub submitted: u64,
    pub accepted: u64,
    /// Rejections by Stratum error code (`none` when the reply had no code).
    pub rejected: BTreeMap<String, u64>,
    /// Shares that never got an answer.
    pub unanswered: u64,
    pub accepted_per_second: f64,
    /// Share written → answer read.
    pub ack_latency: Percentiles,
    pub pool_cpu_seconds: Option<f64>,
    pub pool_cpu_us_per_share: Option<f64>,
    pub load_cpu_seconds: f64,
    pub api: Option<ApiCheck>,
}

impl SharesResult {
    /// Every worker connected, every share was acknowledged, and the API agrees.
    pub fn passed(&self) -> bool {
        self.connected == self.workers
            && self.errors.is_empty()
            && self.rejected.is_empty()
            && self.unanswered == 0
            && self.accepted == self.submitted
            && self
                .api
                .as_ref()
                .is_none_or(|a| a.mismatched.is_empty() && a.counted == a.acknowledged)
    }
}

impl fmt::Display for SharesResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "shares over {}: {}/{} workers, {:.1} s, {} submitted, {} accepted ({:.0}/s), {} unanswered, rejected {:?}",
            self.transport,
            self.connected,
            self.workers,
            self.seconds,
            self.submitted,
            self.accepted,
            self.accepted_per_second,
            self.unanswered,
            self.rejected
        )?;
        for error in &self.errors {
            writeln!(f, "  error: {error}")?;
        }
        writeln!(f, "  ack latency: {}", self.ack_latency)?;
        if let (Some(cpu), Some(per)) = (self.pool_cpu_seconds, self.pool_cpu_us_per_share) {
            writeln!(f, "  pool CPU: {cpu:.2} s, {per:.2} µs per accepted share")?;
        }
        writeln!(f, "  load generator CPU: {:.2} s", self.load_cpu_seconds)?;
        if let Some(api) = &self.api {
            writeln!(
                f,
                "  API: {} counted, {} acknowledged, {} workers differ",
                api.counted,
                api.acknowledged,
                api.mismatched.len()
            )?;
        }
        Ok(())
    }
}

/// What every worker needs to know about the run.
struct Plan {
    end: Instant,
    /// Shares left to submit over all workers.
    quota: AtomicU64,
    /// Between one worker's shares, in rate mode.
    interval: Option<Duration>,
    window: usize,
}

impl Plan {
    fn take_one(&self) -> bool {
        Instant::now() < self.end
            && self
                .quota
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
    }
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    submitted: u64,
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
    unanswered: u64,
    error: Option<String>,
}

/// Runs `shares`.
///
/// # Errors
/// The API cannot be read.
pub async fn run(args: &SharesArgs) -> anyhow::Result<SharesResult> {
    let common = &args.common;
    let endpoint = Arc::new(common.endpoint().await?);
    let pool = common.pool();
    let connecting = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let mut opening = JoinSet::new();
    let scheme = common.url.scheme;
    for index in 0..args.workers {
        let (endpoint, connecting, worker) =
            (endpoint.clone(), connecting.clone(), common.worker(index));
        opening.spawn(async move {
            let _permit = connecting.acquire_owned().await?;
            within(HANDSHAKE_TIMEOUT, "handshake", async {
                let link = endpoint.open(index, &worker, scheme).await?;
                Ok((worker, link))
            })
            .await
        });
    }
    let mut conns = Vec::with_capacity(args.workers);
    let mut errors = Vec::new();
    while let Some(opened) = opening.join_next().await {
        match opened.context("connection task")? {
            Ok(pair) => conns.push(pair),
            Err(error) => errors.push(format!("{error:#}")),
        }
    }
    let connected = conns.len();
    let before = match &common.api {
        Some(api) => Some(accepted_by_worker(api, &common.worker_prefix).await?),
        None => None,
    };

    let per_worker_rate = (args.rate > 0.0).then(|| args.rate / connected.max(1) as f64);
    let started = Instant::now();
    let plan = Arc::new(Plan {
        end: started + Duration::from_secs_f64(args.duration),
        quota: AtomicU64::new(args.shares.unwrap_or(u64::MAX)),
        interval: per_worker_rate.map(|r| Duration::from_secs_f64(1.0 / r)),
        window: args.window.max(1),
    });
    let pool_cpu_start = pool.map(|p| p.cpu()).transpose()?;
    let load_cpu_start = own_cpu()?;
    let mut working = JoinSet::new();
    for (worker, conn) in conns {
        let plan = plan.clone();
        working.spawn(async move {
            let tally = work(conn, &worker, &plan).await;
            (worker, tally)
        });
    }
    let mut tallies = HashMap::with_capacity(connected);
    while let Some(done) = working.join_next().await {
        let (worker, tally) = done.context("worker task")?;
        tallies.insert(worker, tally);
    }
    let seconds = started.elapsed().as_secs_f64();
    let pool_cpu = match (pool, pool_cpu_start) {
        (Some(p), Some(start)) => Some(p.cpu()?.saturating_sub(start).as_secs_f64()),
        _ => None,
    };
    let load_cpu = own_cpu()?.saturating_sub(load_cpu_start).as_secs_f64();

    let mut latencies = Vec::new();
    let (mut submitted, mut accepted, mut unanswered) = (0, 0, 0);
    let mut rejected = BTreeMap::new();
    for tally in tallies.values_mut() {
        submitted += tally.submitted;
        accepted += tally.accepted;
        unanswered += tally.unanswered;
        for (code, n) in &tally.rejected {
            *rejected.entry(code.clone()).or_insert(0) += n;
        }
        latencies.append(&mut tally.latencies);
        errors.extend(tally.error.take());
    }
    let api = match (&common.api, before) {
        (Some(api), Some(before)) => {
            let after = accepted_by_worker(api, &common.worker_prefix).await?;
            let mut mismatched = Vec::new();
            let mut counted = 0;
            for (worker, tally) in &tallies {
                let count =
                    |counts: &HashMap<String, u64>| counts.get(worker).copied().unwrap_or(0);
                let grew = count(&after).saturating_sub(count(&before));
                counted += grew;
                if grew != tally.accepted {
                    mismatched.push(format!(
                        "{worker}: API {grew}, acknowledged {}",
                        tally.accepted
                    ));
                }
            }
            mismatched.sort();
            Some(ApiCheck {
                acknowledged: accepted,
                counted,
                mismatched,
            })
        }
        _ => None,
    };
    Ok(SharesResult {
        transport: common.transport(),
        workers: args.workers,
        connected,
        errors,
        seconds,
        submitted,
        accepted,
        rejected,
        unanswered,
        accepted_per_second: accepted as f64 / seconds,
        ack_latency: Percentiles::of(&mut latencies),
        pool_cpu_seconds: pool_cpu,
        pool_cpu_us_per_share: pool_cpu
            .filter(|_| accepted > 0)
            .map(|c| c * 1e6 / accepted as f64),
        load_cpu_seconds: load_cpu,
        api,
    })
}

/// One worker: keeps up to `window` shares in flight until the plan ends, then
/// waits for the last answers.
async fn work(mut link: Link, worker: &str, plan: &Plan) -> Tally {
    let mut tally = Tally::default();
    // Shares in flight by token (request id, or V2 sequence number), in order.
    let mut pending: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut grinder: Option<(String, Grinder)> = None;
    let mut ticker = plan.interval.map(|every| {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    let mut allowance = 0usize;
    let mut submitting = true;
    let end = tokio::time::Instant::from_std(plan.end);
    // Set when submitting stops: the last answers must come before it.
    let mut drain_end = end + DRAIN_TIMEOUT;
    let result: anyhow::Result<()> = async {
        loop {
            if submitting {
                let mut sent = false;
                while pending.len() < plan.window && (ticker.is_none() || allowance > 0) {
                    if !plan.take_one() {
                        submitting = false;
                        drain_end = tokio::time::Instant::now() + DRAIN_TIMEOUT;
                        break;
                    }
                    allowance = allowance.saturating_sub(1);
                    let current = link.job_id().context("no job")?;
                    if grinder.as_ref().is_none_or(|(id, _)| *id != current) {
                        grinder = Some(link.grinder(None)?);
                    }
                    let (job_id, grinder) = grinder.as_mut().context("grinder")?;
                    let share = grinder.next(true);
                    let token = link.queue(worker, job_id, &share).await?;
                    pending.insert(token, Instant::now());
                    tally.submitted += 1;
                    sent = true;
                }
                if sent {
                    link.flush().await?;
                }
            }
            if !submitting && pending.is_empty() {
                return Ok(());
            }
            let received = tokio::select! {
                () = async { ticker.as_mut().expect("guarded").tick().await; }, if submitting && ticker.is_some() => {
                    allowance += 1;
                    continue;
                }
                () = tokio::time::sleep_until(end), if submitting => {
                    submitting = false;
                    drain_end = end + DRAIN_TIMEOUT;
                    continue;
                }
                // The shares still pending are reported unanswered.
                () = tokio::time::sleep_until(drain_end), if !submitting => return Ok(()),
                received = link.next() => received?,
            };
            let Some((at, event)) = received else {
                anyhow::bail!("{worker}: the pool closed the connection");
            };
            match event {
                Event::Answer(Answer::One { token, result }) => {
                    let Some(sent) = pending.remove(&token) else {
                        anyhow::bail!("{worker}: an answer to a share never sent: {token}");
                    };
                    tally.latencies.push(at.duration_since(sent));
                    match result {
                        Ok(()) => tally.accepted += 1,
                        Err(code) => *tally.rejected.entry(code).or_insert(0) += 1,
                    }
                }
                Event::Answer(Answer::Batch { last, count }) => {
                    // The oldest shares up to `last` that are still pending.
                    let covered: Vec<u64> = pending
                        .range(..=last)
                        .map(|(token, _)| *token)
                        .take(usize::try_from(count).unwrap_or(usize::MAX))
                        .collect();
                    if covered.len() as u64 != count {
                        anyhow::bail!("{worker}: {count} shares up to {last} acknowledged, {} pending", covered.len());
                    }
                    for token in covered {
                        if let Some(sent) = pending.remove(&token) {
                            tally.latencies.push(at.duration_since(sent));
                            tally.accepted += 1;
                        }
                    }
                }
                Event::NewTip(_) | Event::Other => {}
            }
        }
    }
    .await;
    tally.unanswered = pending.len() as u64;
    if let Err(error) = result {
        tally.error = Some(format!("{worker}: {error:#}"));
    }
    tally
}
