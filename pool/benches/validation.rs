//! Share validation as a session runs it: job lookup, coinbase with 12 merkle
//! branches, header hash, targets, duplicate check.

use std::hint::black_box;

use bitcoin::ScriptBuf;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quarry_pool::chain::{ChainParams, EmbeddedChain};
use quarry_pool::jobs::JobBook;
use quarry_pool::reward::JobPayouts;
use quarry_pool::validate::{validate, Proposal, SessionTerms};
use quarry_protocol::messages::ClientRequest;
use quarry_protocol::{Difficulty, Extranonce};
use serde_json::json;

fn share_validation(c: &mut Criterion) {
    let payout = ScriptBuf::from_bytes(vec![0x51]);
    let mut params = ChainParams::new(payout.clone());
    // No share comes near a block: the accept path is what is measured.
    params.initial_difficulty = 1e9;
    let chain = EmbeddedChain::open(params, Vec::new()).expect("chain");
    let mut template = chain.template(1_700_000_000, |value| JobPayouts::operator(value, &payout));
    // A block with a few thousand transactions: 12 merkle branches.
    template.merkle_branch = (0u8..12).map(|i| [i.wrapping_mul(37); 32]).collect();
    let book = JobBook::new(template);
    let job = book.current().job.notify.job_id.to_string();
    let ntime = format!("{:08x}", book.current().job.notify.ntime.0);
    let extranonce1 = Extranonce::from_counter(7, 4);
    // Every hash meets difficulty 1e-12, so each nonce is a new, valid share.
    let difficulty = Difficulty::new(1e-12).expect("difficulty");
    let difficulty_for = |_: u64| Some(difficulty);
    let terms = SessionTerms {
        extranonce1,
        extranonce2_size: 4,
        version_mask: 0,
        difficulty_for: &difficulty_for,
        current_difficulty: difficulty,
        payee: None,
        held: None,
    };
    let mut nonce = 0u32;
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("accepted share, 12 merkle branches", |b| {
        b.iter(|| {
            nonce = nonce.wrapping_add(1);
            let params = [
                json!("bench.worker"),
                json!(job),
                json!("00000001"),
                json!(ntime),
                json!(format!("{nonce:08x}")),
            ];
            let Ok(ClientRequest::Submit(submit)) = ClientRequest::parse("mining.submit", &params)
            else {
                panic!("submit parses");
            };
            let verdict = validate(&book, &Proposal::from(black_box(&submit)), &terms);
            assert!(verdict.outcome.is_ok());
            verdict
        });
    });
    group.finish();
}

criterion_group!(benches, share_validation);
criterion_main!(benches);
