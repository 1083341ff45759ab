//! The TCP data path over loopback (`netcore::flow::tcp_engine::stream`): one writer thread and one
//! reader thread moving 64 MiB per iteration, the reader reading into its one reused buffer and
//! counting every byte. Write sizes 16 KiB and 128 KiB (the default); the reader's buffer is the
//! write size (at least 64 KiB).

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netcore::flow::control::Plan;
use netcore::flow::rxwait::RxWait;
use netcore::flow::streams::Dir;
use netcore::flow::tcp_engine::stream::{start, DataConn, Job, Stops};

const BYTES: u64 = 64 << 20;

fn move_bytes(len: usize, sendfile: bool) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let job = |write| Job {
        write,
        plan: Plan::Count(BYTES / len as u64),
        len,
        rate_bps: None,
        zerocopy: false,
        sendfile,
        cpu: None,
        wait: RxWait::Poll,
    };
    let conn = |sock, write| DataConn {
        sock,
        id: 0,
        dir: Dir::Up,
        job: job(write),
    };
    let conns = vec![conn(a, true), conn(b, false)];
    let (ends, _, _) = start(conns, &Stops::one(&stop), false)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(ends[0].bytes, ends[1].bytes);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tcp_loopback");
    g.throughput(Throughput::Bytes(BYTES));
    g.sample_size(10);
    for len in [16 << 10, 128 << 10] {
        g.bench_function(format!("{}KiB_writes", len >> 10), |b| {
            b.iter(|| move_bytes(len, false))
        });
    }
    // sendfile(2) from an in-memory file: the pages go to the socket by reference.
    g.bench_function("128KiB_sendfile", |b| {
        b.iter(|| move_bytes(128 << 10, true))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
