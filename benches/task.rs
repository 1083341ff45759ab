//! Session parse + execute per request (no I/O): one request line in, one response out.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netcore::proto::{Counters, Proto, Session, SessionConfig};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let srv = Counters::local();
    let mut g = c.benchmark_group("session");
    let cases: [(&str, &[u8]); 5] = [
        ("echo", b"ECHO hello world, this is a request\n"),
        ("upper", b"UPPER hello world, this is a request\n"),
        ("sum", b"SUM 1 2 3 4 5 6 7 8 9 10\n"),
        ("hash100", b"HASH 100 hello\n"),
        ("error", b"NOPE x\n"),
    ];
    for (name, line) in cases {
        g.throughput(Throughput::Elements(1));
        let mut s = Session::new(SessionConfig::default());
        let mut out = Vec::with_capacity(256);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(s.input(black_box(line), &mut out, &srv));
                black_box(out.len())
            })
        });
    }
    // 16 pipelined requests in one read.
    let batch = b"ECHO hello world, this is a request\n".repeat(16);
    g.throughput(Throughput::Elements(16));
    let mut s = Session::new(SessionConfig::default());
    let mut out = Vec::with_capacity(4096);
    g.bench_function("echo_pipelined16", |b| {
        b.iter(|| {
            out.clear();
            black_box(s.input(black_box(&batch), &mut out, &srv));
        })
    });
    // Raw echo protocol, 64-byte chunk.
    g.throughput(Throughput::Elements(1));
    let mut s = Session::new(SessionConfig {
        proto: Proto::Echo,
        ..SessionConfig::default()
    });
    let chunk = [7u8; 64];
    g.bench_function("raw_echo64", |b| {
        b.iter(|| {
            out.clear();
            black_box(s.input(black_box(&chunk), &mut out, &srv));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
