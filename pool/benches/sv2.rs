//! Stratum V2's costs next to V1's: the CPU of a Noise handshake next to the pool's
//! TLS handshake (its own self-signed certificate, rustls on both sides), and the
//! bytes each protocol puts on the wire per job and per share (printed once, from the
//! real encoders: V1's lines, V2's encrypted frames).

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use quarry_pool::jobs::V2Frames;
use quarry_pool::session::v2::frames;
use quarry_pool::tls::{CertSource, Tls};
use quarry_protocol::fields::{HexBytes, HexU32Be, PrevHash, RawHash};
use quarry_protocol::jsonrpc::{result_line, Id};
use quarry_protocol::messages::{ClientRequest, Notify, ServerMessage, Submit};
use quarry_protocol::sv2::binary_sv2::B032;
use quarry_protocol::sv2::mining_sv2::{SubmitSharesExtended, SubmitSharesSuccess};
use quarry_protocol::sv2::{AnyMessage, AuthorityKeypair, Incoming, Mining, NoiseCodec};
use quarry_protocol::Extranonce;
use tokio_util::codec::Decoder;

const VALIDITY: Duration = Duration::from_secs(3600);
const MAX_FRAME: usize = 1 << 16;
/// TLS 1.3 adds this to every record: a 5-byte header, the inner content type and
/// a 16-byte AEAD tag (RFC 8446 §5.2); one write is one record here.
const TLS_RECORD_OVERHEAD: usize = 22;

/// A connected pool (responder) and miner (initiator).
fn connected(keys: &AuthorityKeypair) -> (NoiseCodec, NoiseCodec) {
    let mut pool = NoiseCodec::responder(keys, VALIDITY, MAX_FRAME).unwrap();
    let (mut miner, first) = NoiseCodec::initiator(keys.public, MAX_FRAME).unwrap();
    let Some(Incoming::Reply(reply)) = pool.decode(&mut BytesMut::from(&first[..])).unwrap() else {
        panic!("no reply");
    };
    let established = miner.decode(&mut BytesMut::from(&reply[..])).unwrap();
    assert!(matches!(established, Some(Incoming::Established)));
    (pool, miner)
}

fn handshake(c: &mut Criterion) {
    let keys = AuthorityKeypair::generate();
    // Per connection the pool makes fresh ephemeral and static keys, signs a
    // certificate and answers the miner's first message: all of it is measured.
    c.bench_function("sv2: the pool's side of one Noise handshake", |b| {
        b.iter_batched(
            || {
                let (_, first) = NoiseCodec::initiator(keys.public, MAX_FRAME).unwrap();
                BytesMut::from(&first[..])
            },
            |mut first| {
                let mut pool = NoiseCodec::responder(&keys, VALIDITY, MAX_FRAME).unwrap();
                pool.decode(&mut first).unwrap()
            },
            BatchSize::SmallInput,
        );
    });
    c.bench_function("sv2: a whole Noise handshake, both sides", |b| {
        b.iter(|| connected(black_box(&keys)));
    });
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::load(CertSource::SelfSigned {
        dir: dir.path().to_owned(),
    })
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(dir.path()));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function(
        "tls: a whole TLS 1.3 handshake, both sides (V1 over TLS)",
        |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let (server, client) = tokio::io::duplex(16 * 1024);
                    let (accepted, connected) = tokio::join!(
                        tls.acceptor().accept(server),
                        connector.connect(name.clone(), client)
                    );
                    accepted.unwrap();
                    connected.unwrap();
                });
            });
        },
    );
}

/// The job of the notify benchmark: 12 merkle branches, a 168-byte coinbase.
fn notify() -> Notify {
    Notify {
        job_id: "18f3a2b4c01".parse().expect("job id"),
        prevhash: PrevHash::from_block_hash(bitcoin::BlockHash::from_byte_array([7; 32])),
        coinb1: HexBytes(vec![0x01; 58]),
        coinb2: HexBytes(vec![0x02; 110]),
        merkle_branch: (0u8..12).map(|i| RawHash([i; 32])).collect(),
        version: HexU32Be(0x2000_0000),
        nbits: HexU32Be(0x1703_4219),
        ntime: HexU32Be(0x6560_a1b0),
        clean_jobs: true,
    }
}

/// The bytes one channel is sent for `job`: the pool's frames, encrypted.
fn v2_job(codec: &mut NoiseCodec, frames: &V2Frames, new_tip: bool) -> usize {
    if new_tip {
        codec.encode_shared(&frames.future_job, 1).unwrap().len()
            + codec.encode_shared(&frames.prev_hash, 1).unwrap().len()
    } else {
        codec.encode_shared(&frames.job, 1).unwrap().len()
    }
}

fn v2_frames(job: &Notify) -> V2Frames {
    frames(7, job, &bitcoin::BlockHash::from_byte_array([7; 32]))
}

/// Prints the bytes on the wire per job and per share, V1 (plain and TLS) and V2.
fn wire_sizes() {
    let keys = AuthorityKeypair::generate();
    let (mut pool, mut miner) = connected(&keys);
    let job = notify();
    let v1_job = ServerMessage::Notify(job.clone())
        .to_line(&Id::Null)
        .as_bytes()
        .len();
    let submit = ClientRequest::Submit(Submit {
        worker: "alice.rig1".to_owned(),
        job_id: "18f3a2b4c01".parse().unwrap(),
        extranonce2: Extranonce::new(&[0, 0, 0, 7]).unwrap(),
        ntime: HexU32Be(0x6560_a1b0),
        nonce: HexU32Be(0x1234_5678),
        version_bits: Some(HexU32Be(0x0000_2000)),
    })
    .to_line(&Id::Number(4321.into()))
    .as_bytes()
    .len();
    let ack = result_line(&Id::Number(4321.into()), &serde_json::Value::Bool(true))
        .as_bytes()
        .len();
    let extranonce = [0u8, 0, 0, 7];
    let share = SubmitSharesExtended {
        channel_id: 1,
        sequence_number: 4321,
        job_id: 7,
        nonce: 0x1234_5678,
        ntime: 0x6560_a1b0,
        version: 0x2000_2000,
        extranonce: B032::new(&extranonce).unwrap(),
    };
    let v2_share = miner
        .encode(AnyMessage::Mining(Mining::SubmitSharesExtended(share)))
        .unwrap()
        .len();
    let success = SubmitSharesSuccess {
        channel_id: 1,
        last_sequence_number: 4321,
        new_submits_accepted_count: 1,
        new_shares_sum: 1,
    };
    let v2_ack = pool
        .encode(AnyMessage::Mining(Mining::SubmitSharesSuccess(success)))
        .unwrap()
        .len();
    let tls = |bytes: usize| bytes + TLS_RECORD_OVERHEAD;
    println!("bytes on the wire (12 merkle branches, 168-byte coinbase, 4-byte extranonce2):");
    println!(
        "  new-block job: V1 {v1_job}, V1/TLS {}, V2 {}",
        tls(v1_job),
        v2_job(&mut pool, &v2_frames(&job), true)
    );
    println!(
        "  refresh job:   V1 {v1_job}, V1/TLS {}, V2 {}",
        tls(v1_job),
        v2_job(&mut pool, &v2_frames(&job), false)
    );
    println!(
        "  share + ack:   V1 {} ({submit} + {ack}), V1/TLS {}, V2 {} ({v2_share} + {v2_ack}; one ack per commit batch)",
        submit + ack,
        tls(submit) + tls(ack),
        v2_share + v2_ack
    );
}

fn sizes(_: &mut Criterion) {
    wire_sizes();
}

/// What one connection costs the pool per new block before the kernel: a V2
/// channel's frames encrypted (they are serialized once per job), a V1 session's
/// line (serialized once per job) sealed into a TLS record.
fn fanout(c: &mut Criterion) {
    let keys = AuthorityKeypair::generate();
    let (mut pool, _miner) = connected(&keys);
    let job = notify();
    let frames = v2_frames(&job);
    c.bench_function("sv2: one channel's new-block job, encrypted", |b| {
        b.iter(|| v2_job(&mut pool, black_box(&frames), true));
    });
    let line = ServerMessage::Notify(job).to_line(&Id::Null);
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _client) = tls_pair(dir.path());
    let mut wire = Vec::with_capacity(4096);
    c.bench_function("tls: one session's new-block job, encrypted", |b| {
        b.iter(|| {
            server
                .writer()
                .write_all(black_box(line.as_bytes()))
                .unwrap();
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            wire.len()
        });
    });
}

/// A pool-side TLS connection (the pool's own certificate) and its client, after
/// the handshake.
fn tls_pair(dir: &std::path::Path) -> (rustls::ServerConnection, rustls::ClientConnection) {
    let tls = Tls::load(CertSource::SelfSigned {
        dir: dir.to_owned(),
    })
    .unwrap();
    let mut server = rustls::ServerConnection::new(tls.acceptor().config().clone()).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client_config(dir), name).unwrap();
    while server.is_handshaking() || client.is_handshaking() {
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).unwrap();
        }
        server.read_tls(&mut &bytes[..]).unwrap();
        server.process_new_packets().unwrap();
        bytes.clear();
        while server.wants_write() {
            server.write_tls(&mut bytes).unwrap();
        }
        client.read_tls(&mut &bytes[..]).unwrap();
        client.process_new_packets().unwrap();
    }
    (server, client)
}

/// A client trusting the certificate the pool made in `dir`.
fn client_config(dir: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(dir.join("tls-cert.pem")).unwrap();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

criterion_group!(benches, sizes, handshake, fanout);
criterion_main!(benches);
