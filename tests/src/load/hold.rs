//! `hold`: N miners connect, subscribe and authorize and then sit idle, the way
//! most of a pool's connections do. One extra connection finds blocks, and the
//! clean job each block causes (V1's clean `mining.notify`, V2's `SetNewPrevHash`;
//! "clean job" below means either) is timestamped as it arrives on every socket.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use quarry_miner::url::Scheme;
use quarry_protocol::Difficulty;
use serde::Serialize;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::conn::Endpoint;
use super::event::{Answer, Event as LinkEvent};
use super::link::Link;
use super::report::{own_cpu, Percentiles};
use super::{within, HoldArgs};

/// How long one connection may take to connect, subscribe, authorize and get a job.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// The highest network difficulty the trigger grinds blocks at (~43 million hashes).
const MAX_BLOCK_DIFFICULTY: f64 = 0.01;
/// Failure messages kept for the report.
const KEEP_FAILURES: usize = 10;

/// What the connection tasks tell the coordinator (clean jobs go to [`Arrivals`]).
enum Event {
    Ready(Result<Duration, String>),
    Closed(String),
}

/// Where held connections record the clean jobs they read: one slot each,
/// written without waking the coordinator until the last expected arrival,
/// so the measuring side adds as little as possible to what it measures.
struct Arrivals {
    base: Instant,
    /// Per connection: the key of the latest clean job's id, and when it was read
    /// (nanoseconds after `base`).
    job: Vec<AtomicU64>,
    at: Vec<AtomicU64>,
    count: AtomicUsize,
    expected: AtomicUsize,
    complete: Notify,
}

impl Arrivals {
    fn new(connections: usize) -> Arrivals {
        Arrivals {
            base: Instant::now(),
            job: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            at: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(0),
            expected: AtomicUsize::new(usize::MAX),
            complete: Notify::new(),
        }
    }

    /// Starts a round in which `expected` connections will report.
    fn expect(&self, expected: usize) {
        self.count.store(0, Ordering::SeqCst);
        self.expected.store(expected, Ordering::SeqCst);
    }

    /// Lowers the round's expectation (a connection closed); true when it is met.
    fn lower(&self, expected: usize) -> bool {
        self.expected.store(expected, Ordering::SeqCst);
        self.count.load(Ordering::SeqCst) >= expected
    }

    fn record(&self, index: usize, job: &str, at: Instant) {
        let nanos = u64::try_from(at.duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        self.job[index].store(job_key(job), Ordering::SeqCst);
        self.at[index].store(nanos, Ordering::SeqCst);
        if self.count.fetch_add(1, Ordering::SeqCst) + 1 == self.expected.load(Ordering::SeqCst) {
            self.complete.notify_one();
        }
    }

    /// When each connection that has `job` as its latest clean job read it.
    fn of(&self, job: &str) -> Vec<Instant> {
        let key = job_key(job);
        self.job
            .iter()
            .zip(&self.at)
            .filter(|(j, _)| j.load(Ordering::SeqCst) == key)
            .map(|(_, at)| self.base + Duration::from_nanos(at.load(Ordering::SeqCst)))
            .collect()
    }
}

fn job_key(job: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    job.hash(&mut hasher);
    // 0 marks a slot with no clean job yet.
    hasher.finish().max(1)
}

/// One block and the clean job it caused.
#[derive(Debug, Serialize)]
pub struct Round {
    pub job_id: String,
    /// Connections that received the clean job in time.
    pub received: usize,
    /// Block share written → clean job read, per connection.
    pub from_trigger: Percentiles,
    /// First connection's arrival → each connection's arrival.
    pub spread: Percentiles,
}

/// The results of `hold`.
#[derive(Debug, Serialize)]
pub struct HoldResult {
    pub transport: &'static str,
    pub connections: usize,
    pub connected: usize,
    pub failed: usize,
    pub failures: Vec<String>,
    /// Connections the pool closed while they were held.
    pub closed: usize,
    /// Connect (+ TLS) + subscribe + authorize + first job, per connection.
    pub handshake: Percentiles,
    pub connect_all_seconds: f64,
    pub rounds: Vec<Round>,
    pub from_trigger: Percentiles,
    pub spread: Percentiles,
    pub pool_rss_kib_before: Option<u64>,
    pub pool_rss_kib_connected: Option<u64>,
    pub pool_rss_kib_after_jobs: Option<u64>,
    /// (RSS after the jobs went out − RSS before connecting) / connections held.
    pub pool_rss_kib_per_connection: Option<f64>,
    pub pool_cpu_seconds: Option<f64>,
    /// The pool's CPU time from the first block's trigger until the last block's
    /// job arrived, per connection held and block: what fanning a job out costs.
    pub pool_fanout_cpu_us: Option<f64>,
    pub load_cpu_seconds: f64,
    /// The same for this process, which reads (and for V2 decrypts) every job.
    pub load_fanout_cpu_us: f64,
}

impl HoldResult {
    /// Every connection came up, stayed up and received every block's clean job.
    pub fn passed(&self) -> bool {
        self.failed == 0
            && self.closed == 0
            && self.rounds.iter().all(|r| r.received == self.connected)
    }
}

impl fmt::Display for HoldResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "hold over {}: {}/{} connected in {:.1} s, {} failed, {} closed by the pool",
            self.transport,
            self.connected,
            self.connections,
            self.connect_all_seconds,
            self.failed,
            self.closed
        )?;
        for failure in &self.failures {
            writeln!(f, "  failure: {failure}")?;
        }
        writeln!(f, "  handshake:         {}", self.handshake)?;
        for (i, round) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "  block {} (job {}): {}/{} got the clean job; from trigger p50 {:.1} p99 {:.1} max {:.1} ms",
                i + 1,
                round.job_id,
                round.received,
                self.connected,
                round.from_trigger.p50_ms,
                round.from_trigger.p99_ms,
                round.from_trigger.max_ms
            )?;
        }
        writeln!(f, "  fan-out from trigger: {}", self.from_trigger)?;
        writeln!(f, "  fan-out spread:       {}", self.spread)?;
        if let (Some(before), Some(connected), Some(after), Some(per)) = (
            self.pool_rss_kib_before,
            self.pool_rss_kib_connected,
            self.pool_rss_kib_after_jobs,
            self.pool_rss_kib_per_connection,
        ) {
            writeln!(
                f,
                "  pool RSS: {before} KiB before, {connected} KiB connected, {after} KiB after the jobs: {per:.2} KiB per connection"
            )?;
        }
        if let Some(cpu) = self.pool_cpu_seconds {
            writeln!(f, "  pool CPU: {cpu:.2} s")?;
        }
        if let Some(fanout) = self.pool_fanout_cpu_us {
            writeln!(
                f,
                "  pool CPU per connection per block during fan-out: {fanout:.2} µs"
            )?;
        }
        writeln!(f, "  load generator CPU: {:.2} s", self.load_cpu_seconds)?;
        writeln!(
            f,
            "  load generator CPU per connection per block during fan-out: {:.2} µs",
            self.load_fanout_cpu_us
        )
    }
}

/// Runs `hold`.
///
/// # Errors
/// The trigger connection cannot be set up or a block is not accepted.
pub async fn run(args: &HoldArgs) -> anyhow::Result<HoldResult> {
    let common = &args.common;
    let endpoint = Arc::new(common.endpoint().await?);
    let pool = common.pool();
    let load_cpu_start = own_cpu()?;
    // The trigger connects first, so the baseline includes it.
    let scheme = common.url.scheme;
    let mut trigger = within(
        HANDSHAKE_TIMEOUT,
        "the trigger connection",
        endpoint.open(args.connections, &args.worker(None), scheme),
    )
    .await?;
    let pool_cpu_start = pool.map(|p| p.cpu()).transpose()?;
    let rss_before = pool.map(|p| p.rss_kib()).transpose()?;

    let (events, mut inbox) = mpsc::unbounded_channel();
    let arrivals = Arc::new(Arrivals::new(args.connections));
    let stop = CancellationToken::new();
    let connecting = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let started = Instant::now();
    for index in 0..args.connections {
        tokio::spawn(hold_one(
            endpoint.clone(),
            scheme,
            index,
            args.worker(Some(index)),
            connecting.clone(),
            events.clone(),
            arrivals.clone(),
            stop.clone(),
        ));
    }
    drop(events);

    let mut handshakes = Vec::with_capacity(args.connections);
    let mut failures = Vec::new();
    let mut failed = 0;
    let mut closed = 0;
    while handshakes.len() + failed < args.connections {
        match inbox.recv().await.context("connection tasks ended")? {
            Event::Ready(Ok(took)) => handshakes.push(took),
            Event::Ready(Err(error)) => {
                failed += 1;
                if failures.len() < KEEP_FAILURES {
                    failures.push(error);
                }
            }
            Event::Closed(reason) => closed_by_pool(&mut closed, &mut failures, reason),
        }
    }
    let connect_all = started.elapsed();
    let connected = handshakes.len();
    let rss_connected = pool.map(|p| p.rss_kib()).transpose()?;

    let fanout_cpu_start = (pool.map(|p| p.cpu()).transpose()?, own_cpu()?);
    let mut rounds = Vec::with_capacity(args.blocks);
    let (mut all_from_trigger, mut all_spread) = (Vec::new(), Vec::new());
    for _ in 0..args.blocks {
        arrivals.expect(connected - closed);
        let (job_id, triggered) = next_block(
            &mut trigger,
            &args.worker(None),
            args.trigger_command.as_deref(),
        )
        .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.fanout_timeout);
        loop {
            tokio::select! {
                () = arrivals.complete.notified() => break,
                event = inbox.recv() => {
                    if let Event::Closed(reason) = event.context("connection tasks ended")? {
                        closed_by_pool(&mut closed, &mut failures, reason);
                        if arrivals.lower(connected - closed) {
                            break;
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let arrived = arrivals.of(&job_id);
        let first = arrived.iter().min().copied().unwrap_or(triggered);
        let mut from_trigger: Vec<Duration> = arrived
            .iter()
            .map(|at| at.duration_since(triggered))
            .collect();
        let mut spread: Vec<Duration> = arrived.iter().map(|at| at.duration_since(first)).collect();
        all_from_trigger.extend_from_slice(&from_trigger);
        all_spread.extend_from_slice(&spread);
        rounds.push(Round {
            job_id,
            received: arrived.len(),
            from_trigger: Percentiles::of(&mut from_trigger),
            spread: Percentiles::of(&mut spread),
        });
    }
    let per_job = |cpu: Duration| {
        let jobs = (args.blocks * connected).max(1);
        cpu.as_secs_f64() * 1e6 / jobs as f64
    };
    let load_fanout_cpu_us = per_job(own_cpu()?.saturating_sub(fanout_cpu_start.1));
    let pool_cpu_now = pool.map(|p| p.cpu()).transpose()?;
    let pool_fanout_cpu_us = pool_cpu_now
        .zip(fanout_cpu_start.0)
        .map(|(now, start)| per_job(now.saturating_sub(start)));
    let rss_after = pool.map(|p| p.rss_kib()).transpose()?;
    let pool_cpu = pool_cpu_now
        .zip(pool_cpu_start)
        .map(|(now, start)| now.saturating_sub(start).as_secs_f64());
    if args.hold > 0.0 {
        // Holding the connections is the workload here, not a synchronization.
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    }
    while let Ok(event) = inbox.try_recv() {
        if let Event::Closed(reason) = event {
            closed_by_pool(&mut closed, &mut failures, reason);
        }
    }
    stop.cancel();
    let per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if connected > 0 => {
            Some((after as f64 - before as f64) / connected as f64)
        }
        _ => None,
    };
    Ok(HoldResult {
        transport: common.transport(),
        connections: args.connections,
        connected,
        failed,
        failures,
        closed,
        handshake: Percentiles::of(&mut handshakes),
        connect_all_seconds: connect_all.as_secs_f64(),
        rounds,
        from_trigger: Percentiles::of(&mut all_from_trigger),
        spread: Percentiles::of(&mut all_spread),
        pool_rss_kib_before: rss_before,
        pool_rss_kib_connected: rss_connected,
        pool_rss_kib_after_jobs: rss_after,
        pool_rss_kib_per_connection: per_connection,
        pool_cpu_seconds: pool_cpu,
        pool_fanout_cpu_us,
        load_cpu_seconds: own_cpu()?.saturating_sub(load_cpu_start).as_secs_f64(),
        load_fanout_cpu_us,
    })
}

fn closed_by_pool(closed: &mut usize, failures: &mut Vec<String>, reason: String) {
    *closed += 1;
    if failures.len() < KEEP_FAILURES {
        failures.push(reason);
    }
}

/// One held connection: handshake under the connect limit, then report every
/// clean job until told to stop.
#[allow(clippy::too_many_arguments)]
async fn hold_one(
    endpoint: Arc<Endpoint>,
    scheme: Scheme,
    index: usize,
    worker: String,
    connecting: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    arrivals: Arc<Arrivals>,
    stop: CancellationToken,
) {
    let Ok(permit) = connecting.acquire_owned().await else {
        return;
    };
    let started = Instant::now();
    let opened = within(
        HANDSHAKE_TIMEOUT,
        "handshake",
        endpoint.open(index, &worker, scheme),
    )
    .await;
    drop(permit);
    let mut link = match opened {
        Ok(conn) => {
            let _ = events.send(Event::Ready(Ok(started.elapsed())));
            conn
        }
        Err(error) => {
            let _ = events.send(Event::Ready(Err(format!("{worker}: {error:#}"))));
            return;
        }
    };
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = link.next_new_tip() => received,
        };
        let reason = match received {
            Ok(Some((at, job))) => {
                arrivals.record(index, &job, at);
                continue;
            }
            Ok(None) => format!("{worker}: closed by the pool"),
            Err(error) => format!("{worker}: {error:#}"),
        };
        let _ = events.send(Event::Closed(reason));
        return;
    }
}

/// Makes the next block: the trigger connection submits one at the network
/// difficulty, or `command` (e.g. `bitcoin-cli generatetoaddress 1 …`) mines one
/// outside the pool. Returns the clean job it caused, as the trigger reads it,
/// and when the block was made (the share written, or the command started).
async fn next_block(
    trigger: &mut Link,
    worker: &str,
    command: Option<&str>,
) -> anyhow::Result<(String, Instant)> {
    let old = trigger.job_id().context("the trigger has no job")?;
    let (triggered, token) = match command {
        Some(command) => (run_command(command).await?, None),
        None => {
            let (triggered, token) = submit_block(trigger, worker).await?;
            (triggered, Some(token))
        }
    };
    let (mut answer, mut new_job) = (None, None);
    let waited = within(HANDSHAKE_TIMEOUT, "the new job after a block", async {
        while token.is_some() && answer.is_none() || new_job.is_none() {
            let Some((_, event)) = trigger.next().await? else {
                bail!("the pool closed the trigger connection");
            };
            match event {
                LinkEvent::Answer(Answer::One { token: t, result }) if Some(t) == token => {
                    answer = Some(result);
                }
                LinkEvent::Answer(Answer::Batch { last, .. })
                    if token.is_some_and(|t| t <= last) =>
                {
                    answer = Some(Ok(()));
                }
                LinkEvent::NewTip(job) if job != old => new_job = Some(job),
                _ => {}
            }
        }
        Ok(())
    })
    .await;
    if let Err(error) = waited {
        bail!("{error:#} (the block share was answered {answer:?})");
    }
    Ok((new_job.context("new job")?, triggered))
}

/// Grinds a block on the trigger's job and submits it; returns when it was
/// written and the share's token.
async fn submit_block(trigger: &mut Link, worker: &str) -> anyhow::Result<(Instant, u64)> {
    let network = trigger
        .network_difficulty()
        .context("the trigger has no job")?;
    if network > MAX_BLOCK_DIFFICULTY {
        bail!("network difficulty {network} is too high to find blocks here; start the pool with a fractional --chain-difficulty such as 1e-6, or make blocks with --trigger-command");
    }
    let difficulty = Difficulty::new(network).context("network difficulty")?;
    let (job_id, mut grinder) = trigger.grinder(Some(difficulty))?;
    let share = tokio::task::spawn_blocking(move || grinder.next(true))
        .await
        .context("grinding a block")?;
    let token = trigger.queue(worker, &job_id, &share).await?;
    let triggered = Instant::now();
    trigger.flush().await?;
    Ok((triggered, token))
}

/// Runs `command` with `sh -c`; returns when it started.
async fn run_command(command: &str) -> anyhow::Result<Instant> {
    let command = command.to_owned();
    let triggered = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("running {command:?}"))
    })
    .await
    .context("the trigger command's task")??;
    if !status.success() {
        bail!("the trigger command failed: {status}");
    }
    Ok(triggered)
}
