use super::*;
use crate::job::tests::block_100000;
use crate::job::WorkUnit;
use quarry_protocol::hash::sha256d;
use quarry_protocol::merkle::root_from_branch;
use quarry_protocol::sv2::binary_sv2::{Seq0255, Sv2Option, B064K};
use quarry_protocol::sv2::common_messages_sv2::{SetupConnectionError, SetupConnectionSuccess};
use quarry_protocol::sv2::mining_sv2::{
    OpenExtendedMiningChannelSuccess, OpenMiningChannelError, OpenStandardMiningChannelSuccess,
    SetTarget, SubmitSharesError, SubmitSharesSuccess,
};

/// Block 100000's hash, in internal byte order.
fn block_100000_hash() -> [u8; 32] {
    let mut hash: [u8; 32] =
        hex::decode("000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506")
            .unwrap()
            .try_into()
            .unwrap();
    hash.reverse();
    hash
}

const NONCE: u32 = 274_148_111;
const CHANNEL: u32 = 7;

fn config(channel: ChannelKind, version_mask: Option<u32>) -> SessionConfig {
    SessionConfig {
        user: "al.rig".into(),
        channel,
        version_mask,
        nominal_hash_rate: 1e6,
        endpoint_host: "pool.example".into(),
        endpoint_port: 3336,
    }
}

fn handle(session: &mut Session, message: AnyMessage<'_>) -> Vec<Action<Request>> {
    session.handle(message, "test message")
}

/// A session whose channel is open: block 100000's extranonce1 as the prefix and
/// 4 extranonce bytes on an extended channel.
fn opened(channel: ChannelKind) -> Session {
    opened_in_group(channel, 0, "044c8604")
}

/// A session whose channel is open in group `group`, with extranonce prefix `prefix`.
fn opened_in_group(channel: ChannelKind, group: u32, prefix: &str) -> Session {
    let mut session = Session::new(config(channel, Some(BIP320_MASK)), 1);
    session.start();
    let success = SetupConnectionSuccess {
        used_version: 2,
        flags: 0,
    };
    handle(
        &mut session,
        AnyMessage::Common(CommonMessages::SetupConnectionSuccess(success)),
    );
    let target = [0xff; 32];
    let prefix = hex::decode(prefix).unwrap();
    let opened = match channel {
        ChannelKind::Extended => handle(
            &mut session,
            AnyMessage::Mining(Mining::OpenExtendedMiningChannelSuccess(
                OpenExtendedMiningChannelSuccess {
                    request_id: 1,
                    channel_id: CHANNEL,
                    target: U256::from(&target),
                    extranonce_size: 4,
                    extranonce_prefix: B032::new(&prefix).unwrap(),
                    group_channel_id: group,
                },
            )),
        ),
        ChannelKind::Standard => handle(
            &mut session,
            AnyMessage::Mining(Mining::OpenStandardMiningChannelSuccess(
                OpenStandardMiningChannelSuccess {
                    request_id: 1,
                    channel_id: CHANNEL,
                    target: U256::from(&target),
                    extranonce_prefix: B032::new(&prefix).unwrap(),
                    group_channel_id: group,
                },
            )),
        ),
    };
    assert_eq!(opened, vec![Action::Authorized]);
    session
}

/// Block 100000's job as a future extended job `job_id`.
fn extended_job(
    session: &mut Session,
    job_id: u32,
    min_ntime: Option<u32>,
) -> Vec<Action<Request>> {
    extended_job_to(session, CHANNEL, job_id, min_ntime)
}

/// Block 100000's job as extended job `job_id` sent to channel `to`.
fn extended_job_to(
    session: &mut Session,
    to: u32,
    job_id: u32,
    min_ntime: Option<u32>,
) -> Vec<Action<Request>> {
    let notify = block_100000();
    let path: Vec<[u8; 32]> = notify.merkle_branch.iter().map(|h| h.0).collect();
    let message = NewExtendedMiningJob {
        channel_id: to,
        job_id,
        min_ntime: Sv2Option::new(min_ntime),
        version: 1,
        version_rolling_allowed: true,
        merkle_path: Seq0255::new(path.iter().map(U256::from).collect()).unwrap(),
        coinbase_tx_prefix: B064K::new(&notify.coinb1.0).unwrap(),
        coinbase_tx_suffix: B064K::new(&notify.coinb2.0).unwrap(),
    };
    handle(
        session,
        AnyMessage::Mining(Mining::NewExtendedMiningJob(message)),
    )
}

/// Block 99999 as the previous block, activating `job_id`.
fn prev_hash(session: &mut Session, job_id: u32) -> Vec<Action<Request>> {
    prev_hash_to(session, CHANNEL, job_id)
}

/// Block 99999 as the previous block, activating `job_id`, sent to channel `to`.
fn prev_hash_to(session: &mut Session, to: u32, job_id: u32) -> Vec<Action<Request>> {
    let notify = block_100000();
    let prev = notify.prevhash.header_bytes();
    let message = SetNewPrevHash {
        channel_id: to,
        job_id,
        prev_hash: U256::from(&prev),
        min_ntime: notify.ntime.0,
        nbits: notify.nbits.0,
    };
    handle(session, AnyMessage::Mining(Mining::SetNewPrevHash(message)))
}

fn only_job(actions: Vec<Action<Request>>) -> Arc<Job> {
    match actions.as_slice() {
        [Action::Job(job)] => Arc::clone(job),
        other => panic!("expected one job, got {other:?}"),
    }
}

/// The hash of `job`'s header for `unit` at block 100000's ntime and nonce.
fn block_hash(job: &Job, unit: &WorkUnit) -> [u8; 32] {
    let mut header = job.header(unit, job.notify.ntime.0);
    header[76..].copy_from_slice(&NONCE.to_le_bytes());
    sha256d(&header)
}

fn share(job: &Arc<Job>, unit: WorkUnit) -> FoundShare {
    FoundShare {
        job: Arc::clone(job),
        unit,
        ntime: job.notify.ntime.0,
        nonce: NONCE,
    }
}

fn block_unit() -> WorkUnit {
    WorkUnit {
        extranonce2: "1b020602".parse().unwrap(),
        version_bits: 0,
    }
}

#[test]
fn setup_asks_for_rolling_and_standard_jobs_as_configured() {
    let flags = |channel, mask| match Session::new(config(channel, mask), 1).start().as_slice() {
        [Action::Send(Request::SetupConnection { flags, .. })] => *flags,
        other => panic!("{other:?}"),
    };
    assert_eq!(flags(ChannelKind::Extended, Some(BIP320_MASK)), 0b100);
    assert_eq!(flags(ChannelKind::Standard, Some(BIP320_MASK)), 0b101);
    assert_eq!(flags(ChannelKind::Extended, None), 0);
    assert_eq!(flags(ChannelKind::Standard, None), 0b001);
}

#[test]
fn setup_success_opens_one_channel_as_the_worker() {
    let mut session = Session::new(config(ChannelKind::Extended, None), 1);
    session.start();
    let success = || {
        AnyMessage::Common(CommonMessages::SetupConnectionSuccess(
            SetupConnectionSuccess {
                used_version: 2,
                flags: 0,
            },
        ))
    };
    assert_eq!(
        handle(&mut session, success()),
        vec![Action::Send(Request::OpenChannel {
            kind: ChannelKind::Extended,
            user: "al.rig".into(),
            nominal_hash_rate: 1e6,
        })]
    );
    assert!(
        matches!(
            handle(&mut session, success()).as_slice(),
            [Action::Ignored(_)]
        ),
        "a second success opens nothing"
    );
}

#[test]
fn refusals_end_the_connection() {
    let mut session = Session::new(config(ChannelKind::Extended, None), 1);
    let refused = handle(
        &mut session,
        AnyMessage::Common(CommonMessages::SetupConnectionError(SetupConnectionError {
            flags: 0,
            error_code: "unsupported-feature-flags".try_into().unwrap(),
        })),
    );
    assert_eq!(
        refused,
        vec![Action::SubscribeFailed(
            "SetupConnection refused: unsupported-feature-flags".into()
        )]
    );
    let refused = handle(
        &mut session,
        AnyMessage::Mining(Mining::OpenMiningChannelError(OpenMiningChannelError {
            request_id: 1,
            error_code: "unknown-user".try_into().unwrap(),
        })),
    );
    assert_eq!(
        refused,
        vec![Action::Unauthorized("channel refused: unknown-user".into())]
    );
}

#[test]
fn extended_job_builds_block_100000_from_prefix_extranonce_and_suffix() {
    let mut session = opened(ChannelKind::Extended);
    assert_eq!(
        extended_job(&mut session, 5, None),
        vec![],
        "a future job waits"
    );
    assert!(session.last_job().is_none());
    let job = only_job(prev_hash(&mut session, 5));
    assert!(
        job.notify.clean_jobs,
        "a new previous block voids older jobs"
    );
    assert_eq!(job.notify.job_id.as_str(), "5");
    assert_eq!(job.version_mask, BIP320_MASK);
    assert_eq!(job.extranonce2_size, 4);
    assert_eq!(block_hash(&job, &block_unit()), block_100000_hash());
    // The same header as the V1 path (the pool's coinbase and merkle code) builds.
    let fields = quarry_protocol::share::ShareFields {
        extranonce1: "044c8604".parse().unwrap(),
        extranonce2: block_unit().extranonce2,
        ntime: job.notify.ntime.0,
        nonce: NONCE,
        version: 1,
    };
    let mut header = job.header(&block_unit(), job.notify.ntime.0);
    header[76..].copy_from_slice(&NONCE.to_le_bytes());
    assert_eq!(
        header,
        quarry_protocol::share::header_bytes(&block_100000().header(&fields))
    );
}

#[test]
fn standard_job_hashes_the_pools_merkle_root() {
    let notify = block_100000();
    let coinbase = notify.coinbase(&"044c8604".parse().unwrap(), &block_unit().extranonce2);
    let branch: Vec<[u8; 32]> = notify.merkle_branch.iter().map(|h| h.0).collect();
    let root = root_from_branch(sha256d(&coinbase), &branch);
    let mut session = opened(ChannelKind::Standard);
    let message = NewMiningJob {
        channel_id: CHANNEL,
        job_id: 9,
        min_ntime: Sv2Option::new(None),
        version: 1,
        merkle_root: U256::from(&root),
    };
    assert_eq!(
        handle(
            &mut session,
            AnyMessage::Mining(Mining::NewMiningJob(message))
        ),
        vec![]
    );
    let job = only_job(prev_hash(&mut session, 9));
    assert_eq!((job.extranonce2_size, job.merkle_root), (0, Some(root)));
    let unit = job.unit(0).unwrap();
    assert_eq!(block_hash(&job, &unit), block_100000_hash());
    assert_eq!(
        job.unit(1).unwrap().version_bits,
        0x2000,
        "units roll version bits"
    );
    let submit = session.submit(&share(&job, unit)).unwrap();
    assert_eq!(
        submit,
        Request::Submit {
            channel_id: CHANNEL,
            sequence_number: 0,
            job_id: 9,
            nonce: NONCE,
            ntime: job.notify.ntime.0,
            version: 1,
            extranonce: None,
        }
    );
    assert!(matches!(
        submit.message().unwrap(),
        AnyMessage::Mining(Mining::SubmitSharesStandard(_))
    ));
}

#[test]
fn jobs_with_min_ntime_are_active_at_once_on_the_current_block() {
    let mut session = opened(ChannelKind::Extended);
    assert!(
        matches!(
            extended_job(&mut session, 1, Some(5)).as_slice(),
            [Action::Ignored(_)]
        ),
        "no previous block yet"
    );
    extended_job(&mut session, 2, None);
    let first = only_job(prev_hash(&mut session, 2));
    let refresh = only_job(extended_job(&mut session, 3, Some(0x4d1b_2300)));
    assert!(!refresh.notify.clean_jobs);
    assert_eq!(refresh.notify.ntime.0, 0x4d1b_2300);
    assert_eq!(refresh.notify.prevhash, first.notify.prevhash);
    assert!(refresh.generation > first.generation);
    assert!(
        session.submit(&share(&first, block_unit())).is_some(),
        "shares of the first job are still good"
    );
    assert!(
        matches!(prev_hash(&mut session, 77).as_slice(), [Action::Ignored(_)]),
        "an unknown job"
    );
    assert!(
        session.submit(&share(&refresh, block_unit())).is_none(),
        "a new previous block voids the jobs before it"
    );
}

#[test]
fn set_target_reissues_the_job_under_the_exact_target() {
    let mut session = opened(ChannelKind::Extended);
    extended_job(&mut session, 2, None);
    let first = only_job(prev_hash(&mut session, 2));
    assert_eq!(first.target, [0xff; 32]);
    let mut target = [0u8; 32];
    target[27] = 0x12;
    target[3] = 0x34;
    let message = SetTarget {
        channel_id: CHANNEL,
        maximum_target: U256::from(&target),
    };
    let job = only_job(handle(
        &mut session,
        AnyMessage::Mining(Mining::SetTarget(message)),
    ));
    assert_eq!(job.target, target);
    assert!(!job.notify.clean_jobs, "the same work, a new target");
    assert_eq!(
        job.received, first.received,
        "ntime rolls on from the job's arrival"
    );
    assert!(job.generation > first.generation);
    assert!((job.difficulty.get() - 65_535.0 / 4_608.0).abs() < 1e-3);
    let other = SetTarget {
        channel_id: CHANNEL + 1,
        maximum_target: U256::from(&[0u8; 32]),
    };
    assert!(matches!(
        handle(&mut session, AnyMessage::Mining(Mining::SetTarget(other))).as_slice(),
        [Action::Ignored(_)]
    ));
}

#[test]
fn shares_carry_increasing_sequences_and_the_rolled_extranonce() {
    let mut session = opened(ChannelKind::Extended);
    extended_job(&mut session, 2, None);
    let job = only_job(prev_hash(&mut session, 2));
    let rolled = job.unit(0x1_0000_0003).unwrap();
    assert_eq!(rolled.version_bits, 0x2000);
    let first = session.submit(&share(&job, block_unit())).unwrap();
    let second = session.submit(&share(&job, rolled)).unwrap();
    let Request::Submit {
        sequence_number,
        extranonce,
        version,
        ..
    } = &first
    else {
        panic!("{first:?}")
    };
    assert_eq!((*sequence_number, *version), (0, 1));
    assert_eq!(*extranonce, Some(block_unit().extranonce2));
    let Request::Submit {
        sequence_number,
        extranonce,
        version,
        ..
    } = &second
    else {
        panic!("{second:?}")
    };
    assert_eq!((*sequence_number, *version), (1, 0x2001));
    assert_eq!(extranonce.unwrap().to_string(), "03000000");
    match second.message().unwrap() {
        AnyMessage::Mining(Mining::SubmitSharesExtended(submit)) => {
            assert_eq!(submit.extranonce.as_bytes(), [3, 0, 0, 0]);
            assert_eq!((submit.channel_id, submit.job_id), (CHANNEL, 2));
        }
        other => panic!("{other:?}"),
    }
    let mut elsewhere = (*job).clone();
    elsewhere.connection = 2;
    assert!(
        session
            .submit(&share(&Arc::new(elsewhere), rolled))
            .is_none(),
        "a share of another connection's channel is void"
    );
}

#[test]
fn batched_success_and_errors_count_each_share_once() {
    let mut session = opened(ChannelKind::Extended);
    extended_job(&mut session, 2, None);
    let job = only_job(prev_hash(&mut session, 2));
    for _ in 0..4 {
        session.submit(&share(&job, block_unit())).unwrap();
    }
    let success = |last, count| {
        AnyMessage::Mining(Mining::SubmitSharesSuccess(SubmitSharesSuccess {
            channel_id: CHANNEL,
            last_sequence_number: last,
            new_submits_accepted_count: count,
            new_shares_sum: 0,
        }))
    };
    let accepted = |actions: &[Action<Request>]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::ShareAccepted { job_id, .. } if job_id == "2"))
            .count()
    };
    // Sequences 0 and 1 acknowledged together.
    assert_eq!(accepted(&handle(&mut session, success(1, 2))), 2);
    let error = SubmitSharesError {
        channel_id: CHANNEL,
        sequence_number: 2,
        error_code: "difficulty-too-low".try_into().unwrap(),
    };
    assert_eq!(
        handle(
            &mut session,
            AnyMessage::Mining(Mining::SubmitSharesError(error))
        ),
        vec![Action::ShareRejected {
            job_id: "2".into(),
            code: None,
            reason: "difficulty-too-low".into(),
        }]
    );
    // A pool claiming more than was sent is believed only for what was sent.
    let out = handle(&mut session, success(10, 5));
    assert_eq!(accepted(&out), 1);
    assert!(matches!(out.last(), Some(Action::Ignored(_))));
    assert_eq!(
        accepted(&handle(&mut session, success(3, 1))),
        0,
        "answered already"
    );
}

#[test]
fn requests_build_their_messages() {
    let session = opened(ChannelKind::Extended);
    let setup = Session::new(config(ChannelKind::Extended, None), 1).start();
    let [Action::Send(setup)] = setup.as_slice() else {
        panic!("{setup:?}")
    };
    match setup.message().unwrap() {
        AnyMessage::Common(CommonMessages::SetupConnection(setup)) => {
            assert_eq!((setup.min_version, setup.max_version), (2, 2));
            assert_eq!(setup.protocol, Protocol::MiningProtocol);
            assert_eq!(setup.endpoint_port, 3336);
        }
        other => panic!("{other:?}"),
    }
    for kind in [ChannelKind::Extended, ChannelKind::Standard] {
        let open = Request::OpenChannel {
            kind,
            user: "al.rig".into(),
            nominal_hash_rate: 5.0,
        };
        match open.message().unwrap() {
            AnyMessage::Mining(Mining::OpenExtendedMiningChannel(open)) => {
                assert_eq!(kind, ChannelKind::Extended);
                assert_eq!(open.max_target.as_array(), &[0xff; 32]);
                assert_eq!(open.user_identity.as_utf8_or_hex(), "al.rig");
            }
            AnyMessage::Mining(Mining::OpenStandardMiningChannel(open)) => {
                assert_eq!(kind, ChannelKind::Standard);
                assert_eq!(open.nominal_hash_rate, 5.0);
            }
            other => panic!("{other:?}"),
        }
    }
    let long = Request::OpenChannel {
        kind: ChannelKind::Extended,
        user: "x".repeat(256),
        nominal_hash_rate: 0.0,
    };
    assert!(long.message().is_err(), "a worker name over 255 bytes");
    assert!(session.last_job().is_none());
}

#[test]
fn jobs_sent_to_the_channels_group_are_its_jobs() {
    const GROUP: u32 = 1;
    // SRI's pool sends jobs and new blocks to the group; a standard channel's prefix
    // is the whole extranonce (block 100000's extranonce1 and extranonce2).
    for (kind, prefix, unit) in [
        (ChannelKind::Extended, "044c8604", block_unit()),
        (
            ChannelKind::Standard,
            "044c86041b020602",
            WorkUnit {
                extranonce2: Extranonce::default(),
                version_bits: 0,
            },
        ),
    ] {
        let mut session = opened_in_group(kind, GROUP, prefix);
        assert!(extended_job_to(&mut session, GROUP, 7, None).is_empty());
        let job = only_job(prev_hash_to(&mut session, GROUP, 7));
        assert_eq!(block_hash(&job, &unit), block_100000_hash(), "{kind:?}");
        // Another channel's or group's messages are not this channel's.
        assert!(matches!(
            extended_job_to(&mut session, GROUP + 5, 8, Some(1))[..],
            [Action::Ignored(_)]
        ));
    }
}
