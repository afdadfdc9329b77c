//! The store's group commit: many sessions' shares, each acknowledged only once
//! its transaction is durable (WAL, `synchronous=FULL`).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::future::join_all;
use quarry_pool::ledger::{sqlite::SqliteLedger, AcceptedShare, Ledger, LedgerOptions};

/// Shares in flight at once, as from many connections.
const CONCURRENT: usize = 1000;

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteLedger::open(dir.path(), LedgerOptions::default()).expect("store");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let workers: Vec<Arc<str>> = (0..100).map(|i| format!("bench.w{i}").into()).collect();
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.sample_size(20);
    group.bench_function("1000 concurrent shares, durably committed", |b| {
        b.iter(|| {
            runtime
                .block_on(join_all((0..CONCURRENT).map(|i| {
                    store.record_share(AcceptedShare {
                        worker: workers[i % workers.len()].clone(),
                        difficulty: 1.0,
                        hash_difficulty: 2.0,
                        time_ms: 1_700_000_000_000 + i as i64,
                    })
                })))
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
                .expect("committed")
        });
    });
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
