//! The two most used CPU miners, run as they are, on the real pool: pooler's
//! cpuminer 2.5.1 (`minerd`, named by `QUARRY_MINERD`) and cpuminer-opt 26.1
//! (`cpuminer`, named by `QUARRY_CPUMINER_OPT`), each over plain TCP and over
//! TLS (`stratum+tcps`, trusting the pool's certificate). Each run spans
//! vardiff changes up (the miner starts too low), down (the miner is paused
//! with SIGSTOP, as a throttled rig is, until a job lowers its difficulty) and
//! up again, and at least two blocks of the embedded chain (clean jobs). The
//! pool judges every share: at least 99 % of each miner's non-stale shares must
//! be accepted, and the rejects are reported by reason.
//!
//! cpuminer-opt restarts its search on every notify, and drops the connection
//! on a blank line; pooler's cpuminer applies a new difficulty from the next
//! job. Skipped when a variable is unset, unless `QUARRY_REQUIRE_PEERS` is set
//! (as CI sets it where the programs are installed).

use std::path::Path;
use std::time::{Duration, Instant};

use quarry_tests::peers::{Peer, CPUMINER_OPT, MINERD};
use quarry_tests::PoolProcess;
use serde_json::Value;

const WORKER: &str = "alice.rig1";
/// Valid shares and found blocks a run must span.
const SHARES: u64 = 120;
const BLOCKS: u64 = 2;
/// How long a run may take at most.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// What the pool saw of one run.
#[derive(Debug)]
struct Outcome {
    accepted: u64,
    rejected: u64,
    stale: u64,
    by_reason: Value,
    difficulties: Vec<f64>,
    blocks: u64,
    seconds: f64,
}

impl Outcome {
    fn changes(&self) -> (usize, usize) {
        let pairs = self.difficulties.windows(2);
        let ups = pairs.clone().filter(|w| w[1] > w[0]).count();
        let downs = pairs.filter(|w| w[1] < w[0]).count();
        (ups, downs)
    }
}

fn start_pool(dir: &tempfile::TempDir) -> PoolProcess {
    // A one-thread CPU miner makes tens of MH/s: it starts far below its
    // difficulty (up), a paused one is lowered at the next job (down), and the
    // chain's blocks come every few seconds.
    PoolProcess::start(
        dir.path(),
        &[
            "--start-difficulty",
            "0.0002",
            "--min-difficulty",
            "0.0001",
            "--share-interval",
            "0.5",
            "--job-interval",
            "2",
            "--chain-difficulty",
            "0.02",
            "--block-time",
            "10",
        ],
    )
}

fn worker_view(pool: &PoolProcess) -> Option<Value> {
    quarry_tests::miner::worker(pool, WORKER)
}

/// Mines with `binary` on `pool` until the run has spanned everything it
/// must; returns what the pool counted.
fn mine(binary: &Path, pool: &PoolProcess, dir: &tempfile::TempDir, tls: bool) -> Outcome {
    let url = if tls {
        // The certificate names localhost.
        format!("stratum+tcps://localhost:{}", pool.tls.port())
    } else {
        format!("stratum+tcp://127.0.0.1:{}", pool.tcp.port())
    };
    let cert = dir.path().join("pool-cert.pem");
    std::fs::write(&cert, pool.certificate_pem()).expect("writing the certificate");
    let miner = Peer::start(binary, &url, WORKER, &cert);
    let transcript = || miner.transcript();

    let started = Instant::now();
    let blocks_before = pool.api_get("/api/pool")["blocks_found"]
        .as_u64()
        .unwrap_or(0);
    let mut difficulties: Vec<f64> = Vec::new();
    let mut paused_at: Option<Instant> = None;
    let mut resumed = false;
    loop {
        assert!(
            started.elapsed() < RUN_LIMIT,
            "the run did not span its changes in time: difficulties {difficulties:?}\n{}",
            transcript()
        );
        let view = worker_view(pool);
        let blocks = pool.api_get("/api/pool")["blocks_found"]
            .as_u64()
            .unwrap_or(0)
            - blocks_before;
        let (accepted, difficulty) = view.as_ref().map_or((0, None), |v| {
            (
                v["accepted"].as_u64().unwrap_or(0),
                v["difficulty"].as_f64(),
            )
        });
        if let Some(d) = difficulty {
            if difficulties.last() != Some(&d) {
                difficulties.push(d);
            }
        }
        let ups = difficulties.windows(2).filter(|w| w[1] > w[0]).count();
        match paused_at {
            // Up first; then a pause until the difficulty comes down.
            None if ups >= 1 && accepted >= 20 => {
                miner.signal("STOP");
                paused_at = Some(Instant::now());
            }
            Some(at) if !resumed => {
                let down = difficulties.windows(2).last().is_some_and(|w| w[1] < w[0]);
                if down {
                    miner.signal("CONT");
                    resumed = true;
                    eprintln!(
                        "paused {:.1} s until the difficulty came down",
                        at.elapsed().as_secs_f64()
                    );
                }
            }
            Some(_) if ups >= 2 && accepted >= SHARES && blocks >= BLOCKS => break,
            _ => {}
        }
        // Sampling the pool's view, not waiting for an event.
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(miner);
    let seconds = started.elapsed().as_secs_f64();
    // The miner is gone and every share it sent was answered before its
    // connection closed; the pool's counts are final.
    let view = worker_view(pool).expect("the worker");
    let by_reason = view["rejected_by_reason"].clone();
    Outcome {
        accepted: view["accepted"].as_u64().unwrap_or(0),
        rejected: view["rejected"].as_u64().unwrap_or(0),
        stale: by_reason["stale"].as_u64().unwrap_or(0),
        by_reason,
        difficulties,
        blocks: pool.api_get("/api/pool")["blocks_found"]
            .as_u64()
            .unwrap_or(0)
            - blocks_before,
        seconds,
    }
}

fn run(peer: &Peer, tls: bool) {
    let Some(binary) = peer.binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pool = start_pool(&dir);
    let outcome = mine(&binary, &pool, &dir, tls);
    let (ups, downs) = outcome.changes();
    let judged = outcome.accepted + outcome.rejected - outcome.stale;
    let transport = if tls { "TLS" } else { "TCP" };
    eprintln!(
        "{} over {transport}: {} accepted of {judged} non-stale ({:.2} %), {} stale, rejects {}, \
         {:.0} s, {} blocks, difficulty up {ups} down {downs}: {:?}",
        peer.name,
        outcome.accepted,
        100.0 * outcome.accepted as f64 / judged.max(1) as f64,
        outcome.stale,
        outcome.by_reason,
        outcome.seconds,
        outcome.blocks,
        outcome.difficulties,
    );
    assert!(ups >= 2 && downs >= 1, "vardiff did not move both ways");
    assert!(outcome.blocks >= BLOCKS);
    assert!(
        outcome.accepted * 100 >= judged * 99,
        "{} over {transport}: {} of {judged} accepted, rejects {}",
        peer.name,
        outcome.accepted,
        outcome.by_reason
    );
}

#[test]
fn minerd_over_tcp() {
    run(&MINERD, false);
}

#[test]
fn minerd_over_tls() {
    run(&MINERD, true);
}

#[test]
fn cpuminer_opt_over_tcp() {
    run(&CPUMINER_OPT, false);
}

#[test]
fn cpuminer_opt_over_tls() {
    run(&CPUMINER_OPT, true);
}
