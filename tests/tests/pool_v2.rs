//! The pool's Stratum V2 port over real sockets, driven by a raw V2 client: the
//! handshake, set-up, standard and extended channels, shares judged and
//! acknowledged in batches (and counted like V1 shares), and every kind of bad
//! input closing only its own connection with a clear reason.

use std::time::Duration;

use quarry_protocol::sv2::binary_sv2::{Seq0255, Sv2Option, B064K, U256};
use quarry_protocol::sv2::common_messages_sv2::Protocol;
use quarry_protocol::sv2::mining_sv2::{CloseChannel, NewExtendedMiningJob, UpdateChannel};
use quarry_protocol::sv2::{AnyMessage, AuthorityKeypair, Mining};
use quarry_protocol::Difficulty;
use quarry_tests::grind::Grinder;
use quarry_tests::miner::worker;
use quarry_tests::v2::{as_notify, extranonce, garbage, target_difficulty, Reply, V2Client};
use quarry_tests::PoolProcess;

/// Shares at about 40,000 hashes each, blocks out of reach.
const POOL: &[&str] = &[
    "--start-difficulty",
    "1e-5",
    "--min-difficulty",
    "1e-5",
    "--chain-difficulty",
    "1000",
    "--handshake-timeout",
    "1",
];

fn pool(dir: &tempfile::TempDir) -> PoolProcess {
    PoolProcess::start(dir.path(), POOL)
}

async fn connected(pool: &PoolProcess) -> V2Client {
    V2Client::connect(pool.v2, &pool.authority)
        .await
        .expect("the pool proves its authority key")
}

/// An extended channel for `user`: its id, extranonce prefix and size, difficulty,
/// and its first job (announced as a future job, then activated) as a notify.
async fn extended(
    client: &mut V2Client,
    user: &str,
) -> (
    u32,
    Vec<u8>,
    usize,
    Difficulty,
    u32,
    quarry_protocol::Notify,
) {
    client.open_extended(1, user, 4).await;
    let (channel, prefix, size, target) = client
        .expect(|r| match r {
            Reply::Opened {
                channel,
                prefix,
                size,
                target,
            } => Some((*channel, prefix.clone(), *size, *target)),
            _ => None,
        })
        .await;
    let job = client
        .expect(|r| matches!(r, Reply::ExtendedJob { .. }).then(|| r.clone()))
        .await;
    let prev = client
        .expect(|r| matches!(r, Reply::PrevHash { .. }).then(|| r.clone()))
        .await;
    let (
        Reply::ExtendedJob {
            job: id, future, ..
        },
        Reply::PrevHash { job: activated, .. },
    ) = (&job, &prev)
    else {
        unreachable!()
    };
    assert!(*future, "a channel's first job waits for its prev hash");
    assert_eq!(id, activated, "SetNewPrevHash activates the job just sent");
    (
        channel,
        prefix,
        size,
        target_difficulty(&target),
        *id,
        as_notify(&job, &prev),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_channel_shares_are_judged_acknowledged_in_batches_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir);
    let mut client = connected(&pool).await;
    client.setup().await;
    let (channel, prefix, size, difficulty, job, notify) = extended(&mut client, "alice.v2").await;
    assert_eq!((prefix.len(), size), (4, 4), "4 bytes of prefix, 4 to roll");
    let en1 = quarry_protocol::Extranonce::new(&prefix).unwrap();
    let mut grinder = Grinder::new(&notify, en1, extranonce(size, 1), difficulty, 0);
    // Twenty shares written at once: acknowledged, in as few messages as the
    // ledger's commits allow, every sequence number covered.
    let shares: Vec<_> = (0..20).map(|_| grinder.next(true)).collect();
    for (sequence, share) in (1..).zip(&shares) {
        client.submit_extended(channel, sequence, job, share).await;
    }
    let mut acknowledged = 0;
    let mut messages = 0;
    while acknowledged < 20 {
        let (last, count) = client
            .expect(|r| match r {
                Reply::Success { last, count } => Some((*last, *count)),
                Reply::ShareError { .. } => panic!("a valid share was refused: {r:?}"),
                _ => None,
            })
            .await;
        acknowledged += count;
        messages += 1;
        assert!(
            last <= 20 && last >= acknowledged,
            "last {last}, {acknowledged} so far"
        );
    }
    assert_eq!(acknowledged, 20);
    eprintln!("20 shares acknowledged in {messages} SubmitShares.Success messages");
    let view = worker(&pool, "alice.v2").expect("the V2 worker in the API");
    assert_eq!(view["accepted"], 20, "{view}");

    // Each bad share gets its own error, under its sequence number.
    let cases: [(u32, u32, &quarry_tests::grind::Share, &str); 4] = [
        (channel, job, &shares[0], "duplicate-share"),
        (
            channel,
            job.wrapping_add(1000),
            &grinder.next(true),
            "invalid-job-id",
        ),
        (channel, job, &grinder.next(false), "difficulty-too-low"),
        (channel + 7, job, &grinder.next(true), "invalid-channel-id"),
    ];
    for (sequence, (channel, job, share, code)) in (21..).zip(cases) {
        client.submit_extended(channel, sequence, job, share).await;
        let got = client
            .expect(|r| match r {
                Reply::ShareError { sequence, code } => Some((*sequence, code.clone())),
                Reply::Success { .. } => panic!("a bad share was accepted: {code}"),
                _ => None,
            })
            .await;
        assert_eq!(got, (sequence, code.to_owned()));
    }
    let view = worker(&pool, "alice.v2").unwrap();
    assert_eq!(view["accepted"], 20);
    assert_eq!(view["rejected_by_reason"]["duplicate"], 1, "{view}");
    assert_eq!(view["rejected_by_reason"]["low_difficulty"], 1, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_channel_mines_on_the_merkle_root_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir);
    let mut client = connected(&pool).await;
    client.setup().await;
    client.open_standard(9, "bob.header-only").await;
    let (channel, target) = client
        .expect(|r| match r {
            Reply::Opened {
                channel,
                target,
                size: 0,
                ..
            } => Some((*channel, *target)),
            Reply::OpenError(code) => panic!("refused: {code}"),
            _ => None,
        })
        .await;
    let job = client
        .expect(|r| matches!(r, Reply::StandardJob { .. }).then(|| r.clone()))
        .await;
    let prev = client
        .expect(|r| matches!(r, Reply::PrevHash { .. }).then(|| r.clone()))
        .await;
    let (
        Reply::StandardJob {
            job: id,
            version,
            root,
            ..
        },
        Reply::PrevHash {
            prev, ntime, nbits, ..
        },
    ) = (&job, &prev)
    else {
        unreachable!()
    };
    // A header-only job: the notify's coinbase parts are not needed, only the root.
    let header_job = as_notify(
        &Reply::ExtendedJob {
            job: *id,
            future: true,
            version: *version,
            prefix: Vec::new(),
            suffix: Vec::new(),
            path: Vec::new(),
            ntime: None,
        },
        &Reply::PrevHash {
            job: *id,
            prev: *prev,
            ntime: *ntime,
            nbits: *nbits,
        },
    );
    let mut grinder = Grinder::with_root(&header_job, *root, target_difficulty(&target), 0);
    for sequence in 1..=5 {
        client
            .submit_standard(channel, sequence, *id, &grinder.next(true))
            .await;
    }
    let mut acknowledged = 0;
    while acknowledged < 5 {
        acknowledged += client
            .expect(|r| match r {
                Reply::Success { count, .. } => Some(*count),
                Reply::ShareError { .. } => panic!("refused: {r:?}"),
                _ => None,
            })
            .await;
    }
    assert_eq!(worker(&pool, "bob.header-only").unwrap()["accepted"], 5);

    // A closed channel takes no more shares.
    let close = CloseChannel {
        channel_id: channel,
        reason_code: "done".try_into().unwrap(),
    };
    client
        .send(AnyMessage::Mining(Mining::CloseChannel(close)))
        .await;
    client
        .submit_standard(channel, 6, *id, &grinder.next(true))
        .await;
    let refused = client
        .expect(|r| match r {
            Reply::ShareError { code, .. } => Some(code.clone()),
            _ => None,
        })
        .await;
    assert_eq!(refused, "invalid-channel-id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir);
    let mut client = connected(&pool).await;
    client.setup().await;
    // More extranonce than the pool's 4 bytes, and an invalid worker name.
    client.open_extended(1, "alice.big", 5).await;
    assert_eq!(
        client.recv().await,
        Some(Reply::OpenError("min-extranonce-size-too-large".into()))
    );
    client.open_extended(2, "has space", 4).await;
    assert_eq!(
        client.recv().await,
        Some(Reply::OpenError("unknown-user".into()))
    );
    // Updating a channel that does not exist.
    let max = [0xff; 32];
    let update = UpdateChannel {
        channel_id: 77,
        nominal_hash_rate: 1e6,
        maximum_target: U256::from(&max),
    };
    client
        .send(AnyMessage::Mining(Mining::UpdateChannel(update)))
        .await;
    assert_eq!(
        client.recv().await,
        Some(Reply::UpdateError("invalid-channel-id".into()))
    );
    // The connection is still good for a channel.
    let (_, _, _, _, _, _) = extended(&mut client, "alice.ok").await;
}

/// Waits for the acknowledgement of every share up to `last`.
async fn acknowledged(client: &mut V2Client, last: u32) {
    client
        .expect(|r| match r {
            Reply::Success { last: l, .. } if *l == last => Some(()),
            Reply::ShareError { .. } => panic!("a valid share was refused: {r:?}"),
            _ => None,
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_naming_their_workers_are_credited_to_them_once_negotiated() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir);
    let mut client = connected(&pool).await;
    client.setup().await;
    // Nothing the pool speaks: refused by name.
    client.request_extensions(7, &[0x4000, 7]).await;
    assert_eq!(
        client.recv().await,
        Some(Reply::ExtensionsRefused {
            request: 7,
            unsupported: vec![0x4000, 7]
        })
    );
    // Shares naming a worker before worker-specific hashrate tracking (2) is
    // negotiated are the channel's.
    let (channel, prefix, size, difficulty, job, notify) =
        extended(&mut client, "alice.proxy").await;
    let en1 = quarry_protocol::Extranonce::new(&prefix).unwrap();
    let mut grinder = Grinder::new(&notify, en1, extranonce(size, 1), difficulty, 0);
    let mut sequence = 0;
    let mut submit = |client: &mut V2Client, worker: Option<&str>| {
        sequence += 1;
        let bytes = client.encode_share_as(channel, sequence, job, &grinder.next(true), worker);
        (bytes, sequence)
    };
    let (bytes, last) = submit(&mut client, Some("alice.rig1"));
    client.send_raw(&bytes).await.unwrap();
    acknowledged(&mut client, last).await;
    client.request_extensions(8, &[1, 2, 0x4000]).await;
    assert_eq!(
        client
            .expect(|r| matches!(r, Reply::ExtensionsSupported { .. }).then(|| r.clone()))
            .await,
        Reply::ExtensionsSupported {
            request: 8,
            supported: vec![1, 2]
        }
    );
    // Now each share is its worker's, of the channel's account (as SRI's
    // translator names them, or whole): three for rig1, two for rig2, one
    // unnamed, one naming a worker no pool would authorize.
    for worker in [
        Some("rig1"),
        Some("alice.rig2"),
        Some("alice.rig1"),
        None,
        Some("rig2"),
        Some("rig1"),
        Some("has space"),
    ] {
        let (bytes, last) = submit(&mut client, worker);
        client.send_raw(&bytes).await.unwrap();
        acknowledged(&mut client, last).await;
    }
    for (name, accepted) in [("alice.proxy", 3), ("alice.rig1", 3), ("alice.rig2", 2)] {
        let view = worker(&pool, name).expect("the worker in the API");
        assert_eq!(view["accepted"], accepted, "{name}: {view}");
    }
    assert!(worker(&pool, "alice.has%20space").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir);
    let mut bystander = connected(&pool).await;
    bystander.setup().await;

    // A channel before SetupConnection.
    let mut early = connected(&pool).await;
    early.open_extended(1, "alice.early", 4).await;
    assert!(early.until_closed().await.is_empty());

    // SetupConnection for a protocol the pool does not serve: refused, then closed.
    let mut wrong = connected(&pool).await;
    wrong
        .setup_with(Protocol::TemplateDistributionProtocol, 0)
        .await;
    assert_eq!(
        wrong.until_closed().await,
        vec![Reply::SetupError("unsupported-protocol".into())]
    );

    // Work selection (custom jobs) is not offered.
    let mut custom = connected(&pool).await;
    custom.setup_with(Protocol::MiningProtocol, 1 << 1).await;
    assert_eq!(
        custom.until_closed().await,
        vec![Reply::SetupError("unsupported-feature-flags".into())]
    );

    // Bytes that do not decrypt after the handshake.
    let mut noisy = connected(&pool).await;
    noisy.send_raw(&garbage(200)).await.unwrap();
    assert!(noisy.until_closed().await.is_empty());

    // A frame larger than the pool reads (a 40 KB message where a miner's largest
    // is ~1.3 KB): closed before it is buffered.
    let mut huge = connected(&pool).await;
    let coinbase = vec![0u8; 40_000];
    let job = NewExtendedMiningJob {
        channel_id: 1,
        job_id: 1,
        min_ntime: Sv2Option::new(None),
        version: 0x2000_0000,
        version_rolling_allowed: false,
        merkle_path: Seq0255::new(Vec::new()).unwrap(),
        coinbase_tx_prefix: B064K::new(&coinbase).unwrap(),
        coinbase_tx_suffix: B064K::new(&coinbase[..1]).unwrap(),
    };
    huge.send(AnyMessage::Mining(Mining::NewExtendedMiningJob(job)))
        .await;
    assert!(huge.until_closed().await.is_empty());

    // A miner pinning another key never gets past the handshake.
    let other = AuthorityKeypair::generate().public.to_string();
    let refused = V2Client::connect(pool.v2, &other).await;
    assert!(refused.is_err(), "a pool with another key was trusted");

    // Silence instead of a handshake: dropped at the handshake timeout (1 s).
    let silent = tokio::net::TcpStream::connect(pool.v2).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 64];
        silent.readable().await.unwrap();
        silent.try_read(&mut buf)
    })
    .await
    .expect("a silent connection is dropped");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

    // The bystander never noticed.
    let (_, _, _, _, _, _) = extended(&mut bystander, "alice.bystander").await;
    let url = format!("http://{}/metrics", pool.api);
    let metrics = ureq::get(&url).call().unwrap().into_string().unwrap();
    let failed = metrics
        .lines()
        .find(|l| l.starts_with("quarry_sv2_handshakes_total{outcome=\"failed\"}"))
        .unwrap_or_else(|| panic!("no failed-handshake count:\n{metrics}"));
    assert!(!failed.ends_with(" 0"), "{failed}");
}
