//! Session parse + execute per request (no I/O): one request line in, one response out.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netcore::proto::{Counters, Proto, Session, SessionConfig};
use netcore::server::timing::RequestClock;
use std::hint::black_box;
use std::time::Instant;

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
    // `echo` as a driver runs it with `serve --metrics`: the request clock told of the read
    // (at the turn's time, as epoll does) and of the hand-off (one clock read, two atomic
    // adds); and without --metrics (the clock's bookkeeping only). Against `echo` above.
    let line = b"ECHO hello world, this is a request\n";
    for (name, counters) in [
        ("echo_timed", Counters::local().timing_requests()),
        ("echo_untimed_clock", Counters::local()),
    ] {
        let mut s = Session::new(SessionConfig::default());
        let mut clock = RequestClock::default();
        let turn = Instant::now();
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(s.input(black_box(line), &mut out, &counters));
                clock.read(&s, turn);
                clock.handed_off(&s, &counters);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
