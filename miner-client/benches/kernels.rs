//! Single-threaded SHA-256d throughput of every kernel the CPU supports, in hashes
//! (criterion "elements") per second.
//!
//! `cargo bench -p quarry-miner --bench kernels -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quarry_miner::kernel::{Kernel, KernelKind, PreparedWork};
use quarry_protocol::target::target_from_nbits;

/// Nonces per iteration: large enough that per-call overhead vanishes.
const NONCES: u32 = 1 << 18;

fn kernels(c: &mut Criterion) {
    // Block 100000's header (STRATUM.md §11 b); which header is hashed does not matter.
    let header: [u8; 80] = hex::decode(
        "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000006657a9252a\
         acd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f337221b4d4c86041b0f2b5710",
    )
    .expect("hex")
    .try_into()
    .expect("80 bytes");
    let work = PreparedWork::new(&header);
    // A difficulty-1 share target, as when mining on a pool.
    let target = target_from_nbits(0x1d00_ffff).to_le_bytes();
    let mut group = c.benchmark_group("sha256d_scan");
    group.throughput(Throughput::Elements(NONCES.into()));
    for kind in KernelKind::ALL {
        let Ok(kernel) = Kernel::new(kind) else {
            println!("skipping the {kind} kernel: this CPU does not support it");
            continue;
        };
        let mut found = Vec::new();
        group.bench_function(kind.name(), |b| {
            b.iter(|| {
                found.clear();
                kernel.scan(&work, black_box(0), NONCES, &target, &mut found)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = kernels
}
criterion_main!(benches);
