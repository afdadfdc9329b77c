//! Serializing a job's `mining.notify` line, done once per job and shared by
//! every session.

use std::hint::black_box;

use bitcoin::hashes::Hash;
use criterion::{criterion_group, criterion_main, Criterion};
use quarry_protocol::fields::{HexBytes, HexU32Be, PrevHash, RawHash};
use quarry_protocol::jsonrpc::Id;
use quarry_protocol::messages::{Notify, ServerMessage};

fn notify(c: &mut Criterion) {
    let notify = Notify {
        job_id: "18f3a2b4c01".parse().expect("job id"),
        prevhash: PrevHash::from_block_hash(bitcoin::BlockHash::from_byte_array([7; 32])),
        coinb1: HexBytes(vec![0x01; 58]),
        coinb2: HexBytes(vec![0x02; 110]),
        merkle_branch: (0u8..12).map(|i| RawHash([i; 32])).collect(),
        version: HexU32Be(0x2000_0000),
        nbits: HexU32Be(0x1703_4219),
        ntime: HexU32Be(0x6560_a1b0),
        clean_jobs: true,
    };
    c.bench_function("notify: serialize with 12 merkle branches", |b| {
        b.iter(|| ServerMessage::Notify(black_box(notify.clone())).to_line(&Id::Null));
    });
}

criterion_group!(benches, notify);
criterion_main!(benches);
