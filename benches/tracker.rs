//! Cost per datagram of the receiver's sequence tracker (`netcore::flow::tracker`).
//!
//! Each iteration feeds one batch of `BATCH` sequence numbers, offset so that successive batches
//! continue the same stream: the tracker (with the default 2 MiB window) is built once, and the
//! measured loop is only `record`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netcore::flow::tracker::{Tracker, DEFAULT_WINDOW};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;

const BATCH: u64 = 1 << 16;

/// 0, 1, 2, ...
fn in_order() -> Vec<u64> {
    (0..BATCH).collect()
}

/// 1, 0, 3, 2, ...: every other datagram reordered with extent 1.
fn pairs_swapped() -> Vec<u64> {
    (0..BATCH).map(|s| s ^ 1).collect()
}

/// Every 8th datagram held back 3 places: 1, 2, 3, 0, 4, 5, 6, 7, 9, 10, 11, 8, ...
fn every_8th_late() -> Vec<u64> {
    let mut v: Vec<u64> = (0..BATCH).collect();
    for chunk in v.chunks_mut(8) {
        chunk[..4].rotate_left(1);
    }
    v
}

/// In order with 1% of the sequence numbers missing at random (seeded).
fn gaps_1pct() -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(0x7e57);
    (0..BATCH).filter(|_| !rng.random_bool(0.01)).collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker");
    let cases: [(&str, Vec<u64>); 4] = [
        ("in_order", in_order()),
        ("reordered_pairs_swapped", pairs_swapped()),
        ("reordered_every_8th_late_3", every_8th_late()),
        ("gaps_1pct", gaps_1pct()),
    ];
    for (name, pattern) in cases {
        g.throughput(Throughput::Elements(pattern.len() as u64));
        let mut tracker = Tracker::new(DEFAULT_WINDOW);
        let mut base = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                for &s in &pattern {
                    black_box(tracker.record(base + s));
                }
                base += BATCH;
            })
        });
        let k = tracker.counts();
        assert_eq!(
            k.duplicate + k.too_late,
            0,
            "{name}: the bench stream must be clean"
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
