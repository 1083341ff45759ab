//! Hot paths of the UDP test: the wire header (encode, per-datagram stamp, decode), the
//! VERIFY payload (fill + checksum), and the pacer's per-batch arithmetic.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

use netcore::flow::pacer::Pacer;
use netcore::flow::udp::wire::{self, Header};

fn wire_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    let mut d = wire::build(1472, 0xabcdef, 0, 0, false);
    let h = Header::decode(&d).unwrap();
    g.bench_function("encode_header", |b| {
        let mut buf = [0u8; 64];
        b.iter(|| black_box(&h).encode(black_box(&mut buf)))
    });
    g.bench_function("stamp_seq_and_time", |b| {
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            wire::stamp(black_box(&mut d), seq, seq << 3);
        })
    });
    let d = wire::build(1472, 0xabcdef, 12345, 999, false);
    g.bench_function("decode_header", |b| {
        b.iter(|| Header::decode(black_box(&d)).unwrap())
    });
    let v = wire::build(1472, 0xabcdef, 12345, 999, true);
    let vh = Header::decode(&v).unwrap();
    g.bench_function("verify_payload_1472", |b| {
        b.iter(|| wire::check_payload(black_box(&vh), black_box(&v)).unwrap())
    });
    g.bench_function("fill_verified_1472", |b| {
        b.iter_batched_ref(
            || vec![0u8; 1472],
            |buf| wire::fill_verified(buf, 7),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn pacer_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("pacer");
    g.throughput(Throughput::Elements(1));
    g.bench_function("allowance_consume", |b| {
        let mut p = Pacer::new(1e6, 64, 0);
        let mut now = 0u64;
        b.iter(|| {
            now += 64_000;
            let n = p.allowance(black_box(now), 64);
            p.consume(n);
            n
        })
    });
    g.finish();
}

criterion_group!(benches, wire_benches, pacer_benches);
criterion_main!(benches);
