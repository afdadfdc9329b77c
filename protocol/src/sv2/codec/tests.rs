use super::*;
use common_messages_sv2::SetupConnectionSuccess;
use mining_sv2::{CloseChannel, SetNewPrevHash};
use parsers_sv2::{CommonMessages, Mining, Tlv};
use proptest::prelude::*;

const VALIDITY: Duration = Duration::from_secs(3600);
const MAX: usize = 4096;

/// Feeds `bytes` to `codec` and collects everything it yields.
fn feed(codec: &mut NoiseCodec, bytes: &[u8]) -> Result<Vec<Incoming>, Sv2Error> {
    let mut src = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(incoming) = codec.decode(&mut src)? {
        out.push(incoming);
    }
    Ok(out)
}

/// A pool and a miner codec after a completed handshake.
fn pair() -> (NoiseCodec, NoiseCodec) {
    let keys = AuthorityKeypair::generate();
    let mut pool = NoiseCodec::responder(&keys, VALIDITY, MAX).unwrap();
    let (mut miner, first) = NoiseCodec::initiator(keys.public, MAX).unwrap();
    let [Incoming::Reply(reply)] = &feed(&mut pool, &first).unwrap()[..] else {
        panic!("the pool did not answer the handshake");
    };
    assert!(matches!(
        feed(&mut miner, reply).unwrap()[..],
        [Incoming::Established]
    ));
    assert!(pool.is_established() && miner.is_established());
    (pool, miner)
}

fn success() -> AnyMessage<'static> {
    AnyMessage::Common(CommonMessages::SetupConnectionSuccess(
        SetupConnectionSuccess {
            used_version: 2,
            flags: 0,
        },
    ))
}

#[test]
fn frames_cross_in_both_directions_byte_by_byte() {
    let (mut pool, mut miner) = pair();
    let bytes = pool.encode(success()).unwrap();
    // One byte at a time: the codec keeps what it has and asks for more.
    let mut src = BytesMut::new();
    let mut got = None;
    for byte in bytes {
        src.extend_from_slice(&[byte]);
        if let Some(incoming) = miner.decode(&mut src).unwrap() {
            got = Some(incoming);
        }
    }
    let Some(Incoming::Frame(mut frame)) = got else {
        panic!("no frame");
    };
    assert!(matches!(
        frame.message().unwrap(),
        AnyMessage::Common(CommonMessages::SetupConnectionSuccess(
            SetupConnectionSuccess {
                used_version: 2,
                ..
            }
        ))
    ));
    let reason = "bye";
    let close = AnyMessage::Mining(Mining::CloseChannel(CloseChannel {
        channel_id: 7,
        reason_code: reason.as_bytes().try_into().unwrap(),
    }));
    let bytes = miner.encode(close).unwrap();
    let [Incoming::Frame(frame)] = &mut feed(&mut pool, &bytes).unwrap()[..] else {
        panic!("no frame");
    };
    match frame.message().unwrap() {
        AnyMessage::Mining(Mining::CloseChannel(close)) => {
            assert_eq!(close.channel_id, 7);
            assert_eq!(close.reason_code.as_bytes(), reason.as_bytes());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_miner_refuses_a_pool_with_another_authority_key() {
    let pool_keys = AuthorityKeypair::generate();
    let pinned = AuthorityKeypair::generate().public;
    let mut pool = NoiseCodec::responder(&pool_keys, VALIDITY, MAX).unwrap();
    let (mut miner, first) = NoiseCodec::initiator(pinned, MAX).unwrap();
    let [Incoming::Reply(reply)] = &feed(&mut pool, &first).unwrap()[..] else {
        panic!("no reply");
    };
    let err = feed(&mut miner, reply).unwrap_err();
    assert!(matches!(err, Sv2Error::Handshake(_)), "{err}");
    assert!(!miner.is_established());
    assert!(matches!(
        miner.encode(success()),
        Err(Sv2Error::NotEstablished)
    ));
}

#[test]
fn nothing_is_sent_before_the_handshake() {
    let keys = AuthorityKeypair::generate();
    let mut pool = NoiseCodec::responder(&keys, VALIDITY, MAX).unwrap();
    assert!(matches!(
        pool.encode(success()),
        Err(Sv2Error::NotEstablished)
    ));
}

#[test]
fn a_frame_over_the_limit_is_refused_before_it_is_buffered() {
    let (mut pool, mut miner) = pair();
    let big = vec![b'x'; 200];
    fn close(reason: &[u8]) -> AnyMessage<'_> {
        AnyMessage::Mining(Mining::CloseChannel(CloseChannel {
            channel_id: 1,
            reason_code: reason.try_into().unwrap(),
        }))
    }
    // Many frames in a row are fine; each is counted on its own.
    let mut bytes = Vec::new();
    for _ in 0..40 {
        bytes.extend(miner.encode(close(&big)).unwrap());
    }
    assert_eq!(feed(&mut pool, &bytes).unwrap().len(), 40);
    let keys = AuthorityKeypair::generate();
    let mut pool = NoiseCodec::responder(&keys, VALIDITY, 100).unwrap();
    let (mut miner, first) = NoiseCodec::initiator(keys.public, MAX).unwrap();
    let [Incoming::Reply(reply)] = &feed(&mut pool, &first).unwrap()[..] else {
        panic!("no reply");
    };
    feed(&mut miner, reply).unwrap();
    let err = feed(&mut pool, &miner.encode(close(&big)).unwrap()).unwrap_err();
    assert!(matches!(err, Sv2Error::FrameTooLarge { max: 100 }), "{err}");
    // The connection is over: nothing more is read.
    assert!(matches!(feed(&mut pool, &[0; 64]), Err(Sv2Error::Broken)));
}

fn prev_hash(channel_id: u32, job_id: u32, prev: &[u8; 32], nbits: u32) -> AnyMessage<'_> {
    AnyMessage::Mining(Mining::SetNewPrevHash(SetNewPrevHash {
        channel_id,
        job_id,
        prev_hash: prev.into(),
        min_ntime: 1_700_000_000,
        nbits,
    }))
}

/// What the miner reads of `bytes`: one frame's header and payload.
fn plaintext(miner: &mut NoiseCodec, bytes: &[u8]) -> (u8, Vec<u8>) {
    let [Incoming::Frame(frame)] = &feed(miner, bytes).unwrap()[..] else {
        panic!("not one frame");
    };
    (frame.msg_type(), frame.payload.clone())
}

#[test]
fn tlv_fields_travel_after_the_message_and_are_read_for_negotiated_extensions() {
    let (mut pool, mut miner) = pair();
    let identity = Tlv::new(2, 1, b"alice.rig7".to_vec());
    let other = Tlv::new(0x4000, 9, vec![1, 2, 3]);
    let close = AnyMessage::Mining(Mining::CloseChannel(CloseChannel {
        channel_id: 3,
        reason_code: "bye".try_into().unwrap(),
    }));
    let bytes = miner
        .encode_with_tlvs(close, &[identity.clone(), other])
        .unwrap();
    let [Incoming::Frame(frame)] = &mut feed(&mut pool, &bytes).unwrap()[..] else {
        panic!("no frame");
    };
    for (negotiated, wanted) in [(&[2u16][..], vec![identity]), (&[], vec![])] {
        let (message, tlvs) = frame.message_with_tlvs(negotiated).unwrap();
        assert!(matches!(
            message,
            AnyMessage::Mining(Mining::CloseChannel(CloseChannel { channel_id: 3, .. }))
        ));
        assert_eq!(tlvs, wanted);
    }
}

#[test]
fn only_channel_messages_are_shared() {
    assert!(matches!(
        SharedFrame::new(success()),
        Err(Sv2Error::Encode(_))
    ));
    let (mut pool, mut miner) = pair();
    let shared = SharedFrame::new(prev_hash(0, 5, &[3; 32], 0x207f_ffff)).unwrap();
    for channel in [1, 77] {
        let [Incoming::Frame(frame)] =
            &mut feed(&mut miner, &pool.encode_shared(&shared, channel).unwrap()).unwrap()[..]
        else {
            panic!("no frame");
        };
        match frame.message().unwrap() {
            AnyMessage::Mining(Mining::SetNewPrevHash(m)) => {
                assert_eq!((m.channel_id, m.job_id), (channel, 5));
                assert_eq!(m.prev_hash.to_array(), [3; 32]);
            }
            other => panic!("{other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A frame serialized once and sent on a channel is the frame serialized for it.
    #[test]
    fn a_shared_frame_is_the_message_on_each_channel(
        channel in any::<u32>(),
        job in any::<u32>(),
        prev in any::<[u8; 32]>(),
        nbits in any::<u32>(),
    ) {
        let (mut pool, mut miner) = pair();
        let shared = SharedFrame::new(prev_hash(0, job, &prev, nbits)).unwrap();
        let once = pool.encode_shared(&shared, channel).unwrap();
        let direct = pool.encode(prev_hash(channel, job, &prev, nbits)).unwrap();
        prop_assert_eq!(plaintext(&mut miner, &once), plaintext(&mut miner, &direct));
    }

    /// Arbitrary bytes in place of the handshake: an error or a wait, never a panic.
    #[test]
    fn arbitrary_handshake_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let keys = AuthorityKeypair::generate();
        let mut pool = NoiseCodec::responder(&keys, VALIDITY, MAX).unwrap();
        let _ = feed(&mut pool, &bytes);
        let (mut miner, _) = NoiseCodec::initiator(keys.public, MAX).unwrap();
        let _ = feed(&mut miner, &bytes);
    }

    /// Arbitrary bytes after the handshake: they do not decrypt, so an error (or a
    /// wait for more), never a panic, and never a frame.
    #[test]
    fn arbitrary_transport_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let (mut pool, _) = pair();
        if let Ok(frames) = feed(&mut pool, &bytes) {
            prop_assert!(frames.is_empty());
        }
    }

    /// Genuine frames with arbitrary payloads under any message type: parsing
    /// gives a message or an error, never a panic.
    #[test]
    fn arbitrary_payloads(msg_type in any::<u8>(), extension in 0u16..3, channel in any::<bool>(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (mut pool, mut miner) = pair();
        let State::Transport { encrypt, .. } = &mut miner.state else { unreachable!() };
        let bytes = miner.encoder.encode_transport(raw_frame(extension, msg_type, channel, &payload), encrypt).unwrap();
        let mut frames = feed(&mut pool, &bytes).unwrap();
        prop_assert_eq!(frames.len(), 1);
        let Incoming::Frame(frame) = &mut frames[0] else { unreachable!() };
        prop_assert_eq!(frame.msg_type(), msg_type);
        let _ = frame.message();
        let _ = frame.message_with_tlvs(&[1, 2]);
    }
}

/// A frame of any type and payload, as a hostile peer would send it: extension
/// type (with the channel bit), message type and 24-bit length, then the payload.
fn raw_frame(
    extension: u16,
    msg_type: u8,
    channel: bool,
    payload: &[u8],
) -> codec_sv2::SerializedFrame {
    let extension = if channel {
        extension | 0x8000
    } else {
        extension
    };
    let mut bytes = extension.to_le_bytes().to_vec();
    bytes.push(msg_type);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
    bytes.extend_from_slice(payload);
    codec_sv2::SerializedFrame::from_bytes(bytes).unwrap()
}
