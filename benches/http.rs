//! The HTTP hot path of `serve --proto http` without I/O: a request as wrk sends it, parsed
//! (httparse), routed and answered by the session; the parser alone; the client's response
//! parser (`load`). tools/callgrind-http.sh counts the same path end to end under a real
//! server.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netcore::proto::http::{parse_request, parse_response};
use netcore::proto::{Counters, Proto, Session, SessionConfig};
use std::hint::black_box;

/// What `wrk http://127.0.0.1:8080/` sends.
const WRK_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

fn bench(c: &mut Criterion) {
    let srv = Counters::local();
    let cfg = SessionConfig {
        proto: Proto::Http,
        ..SessionConfig::default()
    };
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Elements(1));
    let curl_get: &[u8] =
        b"GET /bytes/100 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
    for (name, req) in [("get_root", WRK_GET), ("get_bytes100_curl", curl_get)] {
        let mut s = Session::new(cfg);
        let mut out = Vec::with_capacity(1024);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(s.input(black_box(req), &mut out, &srv));
                black_box(out.len())
            })
        });
    }
    g.bench_function("parse_request", |b| {
        b.iter(|| black_box(parse_request(black_box(WRK_GET))))
    });
    let mut answer = Vec::new();
    Session::new(cfg).input(WRK_GET, &mut answer, &srv);
    g.bench_function("parse_response", |b| {
        b.iter(|| black_box(parse_response(black_box(&answer), false)))
    });
    // 16 pipelined requests in one read.
    let batch = WRK_GET.repeat(16);
    g.throughput(Throughput::Elements(16));
    let mut s = Session::new(cfg);
    let mut out = Vec::with_capacity(4096);
    g.bench_function("get_root_pipelined16", |b| {
        b.iter(|| {
            out.clear();
            black_box(s.input(black_box(&batch), &mut out, &srv));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
