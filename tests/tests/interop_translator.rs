//! Quarry's Stratum V2 port against programs nobody here wrote: SRI's
//! `translator_sv2` 0.6.0 (`QUARRY_TRANSLATOR_SV2`) in front of it, and the two most
//! used CPU miners (`QUARRY_MINERD`, `QUARRY_CPUMINER_OPT`) speaking V1 to the
//! translator, as a farm of V1 rigs moves onto a V2 pool. The translator proves
//! nothing about our V2 by agreeing with our own code: it is SRI's reference
//! implementation of the other end.
//!
//! - On the embedded chain, one extended channel per miner (so the pool credits each
//!   miner on a worker of its own): at least 99 % of each miner's non-stale shares
//!   are accepted by the pool, and the chain's blocks are found through V2.
//! - On a Bitcoin Core regtest node (`BITCOIND`): blocks found through the
//!   translator are accepted by the node and are in its best chain.
//! - Aggregating its miners onto one channel with worker-specific hashrate tracking
//!   (extension 2), the translator has each miner credited to its own worker.
//! - A translator requiring an extension the pool does not speak is told so by the
//!   pool's answer to its extension request, and fails over.
//!
//! Skipped when a program is missing, unless `QUARRY_REQUIRE_PEERS` is set.

use std::path::Path;
use std::time::{Duration, Instant};

use quarry_tests::mined::{accepted, funded_node, pool_blocks};
use quarry_tests::miner::{poll, worker};
use quarry_tests::peers::{Peer, PeerMiner, CPUMINER_OPT, MINERD};
use quarry_tests::regtest::bitcoind;
use quarry_tests::translator::{self, Setup, Translator};
use quarry_tests::PoolProcess;
use serde_json::json;

/// The account the translator's channels mine for; channel N is worker `alice.minerN`.
const ACCOUNT: &str = "alice";
/// Accepted shares each miner must reach, and blocks the run must span.
const SHARES: u64 = 100;
const BLOCKS: u64 = 2;
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Shares far easier than blocks (so no share is judged only as a block).
const SHARE_FLAGS: [&str; 8] = [
    "--start-difficulty",
    "0.0005",
    "--min-difficulty",
    "0.0001",
    "--max-difficulty",
    "0.005",
    "--share-interval",
    "1",
];

/// Samples the pool until every one of `workers` has `shares` accepted and
/// `also()` holds; panics after [`RUN_LIMIT`] with the counts and `context()`.
fn until_accepted(
    pool: &PoolProcess,
    workers: &[&str],
    shares: u64,
    also: impl Fn() -> bool,
    context: impl Fn() -> String,
) {
    let started = Instant::now();
    loop {
        let counts: Vec<u64> = workers
            .iter()
            .map(|name| worker(pool, name).map_or(0, |w| w["accepted"].as_u64().unwrap_or(0)))
            .collect();
        if counts.iter().all(|&c| c >= shares) && also() {
            return;
        }
        assert!(
            started.elapsed() < RUN_LIMIT,
            "accepted {counts:?} after {RUN_LIMIT:?}; {}",
            context()
        );
        // Sampling the pool's view, not waiting for an event.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The V1 miners this machine has, by name and binary.
fn peers() -> Vec<(&'static str, std::path::PathBuf)> {
    [&MINERD, &CPUMINER_OPT]
        .into_iter()
        .filter_map(|peer| peer.binary().map(|binary| (peer.name, binary)))
        .collect()
}

fn setup(pool: &PoolProcess, aggregate: bool) -> Setup<'_> {
    Setup {
        upstream: pool.v2,
        authority: &pool.authority,
        user_identity: ACCOUNT,
        aggregate,
        // The pool's channels have 4 bytes of extranonce; an aggregating translator
        // keeps 2 of them for its own index.
        extranonce2_size: if aggregate { 2 } else { 4 },
        // A one-thread CPU miner makes ~10 MH/s.
        miner_hashrate: 10_000_000.0,
        shares_per_minute: 60.0,
        required_extensions: &[],
    }
}

/// Starts each miner on the translator, one after the other, so that the N-th gets
/// channel N (worker `alice.minerN`) — the translator numbers channels as miners
/// arrive. Returns the miners with their workers.
fn start_miners(
    pool: &PoolProcess,
    translator: &Translator,
    dir: &Path,
    peers: &[(&'static str, std::path::PathBuf)],
) -> Vec<(&'static str, String, PeerMiner)> {
    let url = format!("stratum+tcp://{}", translator.downstream);
    let cert = dir.join("unused-cert.pem");
    let mut miners = Vec::new();
    for (n, (name, binary)) in peers.iter().enumerate() {
        let miner = Peer::start(binary, &url, &format!("{ACCOUNT}.rig{n}"), &cert);
        let worker_name = format!("{ACCOUNT}.miner{}", n + 1);
        poll(Duration::from_secs(60), || worker(pool, &worker_name)).unwrap_or_else(|| {
            panic!(
                "{name}'s channel never reached the pool as {worker_name}:\n{}\n{}",
                miner.transcript(),
                translator.transcript().join("\n")
            )
        });
        miners.push((*name, worker_name, miner));
    }
    miners
}

/// A translator that requires an extension the pool does not speak (0x4000, none
/// assigned) asks for it after set-up; the pool's `RequestExtensions.Error` names
/// it, and the translator, reading it, fails over as it should (here to no other
/// pool) instead of finding its connection cut.
#[test]
fn a_translator_requiring_an_extension_the_pool_lacks_is_told_so() {
    let Some(binary) = translator::binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(&dir.path().join("pool"), &[]);
    let setup = Setup {
        required_extensions: &[0x4000],
        ..setup(&pool, false)
    };
    let translator = Translator::start(&binary, dir.path(), &setup);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Ok(line) = translator
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        let done = line.contains("Server does not support our required extensions [16384]");
        seen.push(line);
        if done {
            break;
        }
    }
    let transcript = seen.join("\n");
    assert!(
        transcript
            .contains("Extension negotiation error: unsupported=[16384], required_by_server=[]"),
        "the translator did not read the pool's answer:\n{transcript}"
    );
    assert!(!transcript.contains("UnexpectedMessage"), "{transcript}");
}

/// With worker-specific hashrate tracking (extension 2) negotiated, a translator
/// aggregating its V1 miners onto one channel names each share's miner, and the
/// pool credits every miner's own worker, not the proxy's one channel.
#[test]
fn an_aggregating_translator_has_each_miner_credited_to_its_own_worker() {
    let Some(binary) = translator::binary() else {
        return;
    };
    let peers = peers();
    if peers.is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No blocks (none turns shares stale).
    let pool = PoolProcess::start(
        &dir.path().join("pool"),
        &[&SHARE_FLAGS[..], &["--chain-difficulty", "1000"]].concat(),
    );
    let setup = Setup {
        required_extensions: &[2],
        ..setup(&pool, true)
    };
    let translator = Translator::start(&binary, dir.path(), &setup);
    let url = format!("stratum+tcp://{}", translator.downstream);
    let cert = dir.path().join("unused-cert.pem");
    let miners: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(n, (name, binary))| {
            let worker_name = format!("{ACCOUNT}.rig{n}");
            let miner = Peer::start(binary, &url, &worker_name, &cert);
            (*name, worker_name, miner)
        })
        .collect();
    let names: Vec<&str> = miners.iter().map(|(_, name, _)| name.as_str()).collect();
    until_accepted(
        &pool,
        &names,
        30,
        || true,
        || {
            format!(
                "workers {}\n{}",
                pool.api_get("/api/workers"),
                translator.transcript().join("\n")
            )
        },
    );
    for (name, worker_name, _) in &miners {
        let view = worker(&pool, worker_name).expect("the worker");
        let accepted = view["accepted"].as_u64().unwrap_or(0);
        let rejected = view["rejected"].as_u64().unwrap_or(0);
        eprintln!(
            "{name} via an aggregating translator_sv2 as {worker_name}: pool accepted {accepted}, rejected {rejected} {}",
            view["rejected_by_reason"]
        );
        assert!(
            accepted * 100 >= (accepted + rejected) * 99,
            "{name}: {view}"
        );
    }
    // Every share named its miner: the proxy's own worker has none.
    let proxy =
        worker(&pool, &format!("{ACCOUNT}.translator-proxy")).expect("the channel's worker");
    assert_eq!(proxy["accepted"], 0, "{proxy}");
}

#[test]
fn v1_miners_mine_through_sris_translator_on_the_v2_port() {
    let Some(binary) = translator::binary() else {
        return;
    };
    let peers = peers();
    if peers.is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Blocks every few seconds, jobs often.
    let pool = PoolProcess::start(
        &dir.path().join("pool"),
        &[
            &SHARE_FLAGS[..],
            &[
                "--job-interval",
                "5",
                "--chain-difficulty",
                "0.2",
                "--block-time",
                "10",
            ],
        ]
        .concat(),
    );
    let translator = Translator::start(&binary, dir.path(), &setup(&pool, false));
    let miners = start_miners(&pool, &translator, dir.path(), &peers);

    let started = Instant::now();
    let blocks_found = || {
        pool.api_get("/api/pool")["blocks_found"]
            .as_u64()
            .unwrap_or(0)
    };
    let names: Vec<&str> = miners.iter().map(|(_, name, _)| name.as_str()).collect();
    until_accepted(
        &pool,
        &names,
        SHARES,
        || blocks_found() >= BLOCKS,
        || format!("{} blocks", blocks_found()),
    );
    let seconds = started.elapsed().as_secs_f64();
    let transcripts: Vec<String> = miners
        .into_iter()
        .map(|(_, _, miner)| {
            let transcript = miner.transcript();
            drop(miner);
            transcript
        })
        .collect();
    let translated = translator.transcript();
    let forwarded = translated
        .iter()
        .filter(|l| l.contains("valid share, forwarding it to upstream"))
        .count();
    let refused: Vec<&String> = translated
        .iter()
        .filter(|l| l.contains("Received: SubmitSharesError"))
        .collect();
    for line in &refused {
        eprintln!("refused: {line}");
    }
    let refused = refused.len();
    eprintln!(
        "translator: {forwarded} shares forwarded to the pool, {refused} refused by it; {} blocks in {seconds:.0} s",
        blocks_found()
    );
    for (((name, _), worker_name), transcript) in peers
        .iter()
        .zip((1..).map(|n| format!("{ACCOUNT}.miner{n}")))
        .zip(&transcripts)
    {
        let view = worker(&pool, &worker_name).expect("the worker");
        let accepted = view["accepted"].as_u64().unwrap_or(0);
        let rejected = view["rejected"].as_u64().unwrap_or(0);
        let stale = view["rejected_by_reason"]["stale"].as_u64().unwrap_or(0);
        let judged = accepted + rejected - stale;
        let own = transcript
            .lines()
            .rfind(|l| l.to_ascii_lowercase().contains("accepted"))
            .unwrap_or("(no result line)");
        // What the translator refused the miner (its own judgement, before the pool).
        for line in transcript
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("reject"))
        {
            eprintln!("{name}: {line}");
        }
        eprintln!(
            "{name} via translator_sv2 as {worker_name}: pool accepted {accepted} of {judged} non-stale ({:.2} %), {stale} stale, rejects {}; the miner's last word: {own}",
            100.0 * accepted as f64 / judged.max(1) as f64,
            view["rejected_by_reason"],
        );
        assert!(
            accepted * 100 >= judged * 99,
            "{name}: {accepted} of {judged} accepted, rejects {}",
            view["rejected_by_reason"]
        );
    }
    assert!(blocks_found() >= BLOCKS);
}

#[test]
fn blocks_found_through_sris_translator_are_accepted_by_bitcoind() {
    let Some(node_binary) =
        bitcoind("blocks_found_through_sris_translator_are_accepted_by_bitcoind")
    else {
        return;
    };
    let Some(binary) = translator::binary() else {
        return;
    };
    let peers = peers();
    if peers.is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, operator) = funded_node(&node_binary, dir.path());
    let pool = node.start_pool(
        &dir.path().join("pool"),
        &operator,
        &["--start-difficulty", "0.001", "--share-interval", "1"],
    );
    // The translator's default: all miners on one extended channel.
    let translator = Translator::start(&binary, dir.path(), &setup(&pool, true));
    let url = format!("stratum+tcp://{}", translator.downstream);
    let cert = dir.path().join("unused-cert.pem");
    let miners: Vec<PeerMiner> = peers
        .iter()
        .map(|(_, binary)| Peer::start(binary, &url, &format!("{ACCOUNT}.rig"), &cert))
        .collect();
    const WANTED: usize = 5;
    let found = poll(Duration::from_secs(300), || {
        let blocks = pool_blocks(&pool);
        let through_v2 = accepted(&blocks)
            .into_iter()
            .filter(|b| b["worker"].as_str().is_some_and(|w| w.starts_with(ACCOUNT)))
            .cloned()
            .collect::<Vec<_>>();
        (through_v2.len() >= WANTED).then_some(through_v2)
    })
    .unwrap_or_else(|| {
        panic!(
            "fewer than {WANTED} blocks through the translator:\n{}",
            translator.transcript().join("\n")
        )
    });
    drop(miners);
    for block in &found {
        let hash = block["hash"].as_str().expect("a block hash");
        let header = node.call("getblockheader", json!([hash]));
        assert!(
            header["confirmations"].as_i64().unwrap_or(-1) >= 1,
            "block {hash} is not in the node's best chain: {header}"
        );
    }
    eprintln!(
        "{} blocks found through translator_sv2 accepted by bitcoind (height {})",
        found.len(),
        node.block_count()
    );
}
