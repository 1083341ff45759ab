//! Reactor round trips: a 64-byte ping-pong over a Unix socketpair driven by the reactor
//! (one side in the reactor, the peer in the same thread), a timer turn, and a cross-thread
//! waker/mailbox turn.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mio::net::UnixStream;
use mio::Interest;
use netcore::reactor::{Ctx, Entry, Handler, Key, Mailbox, Reactor, Ready};

struct S(UnixStream);
impl Entry for S {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.0
    }
}

/// Echoes whatever arrives.
struct Echo {
    buf: [u8; 256],
    fired: u64,
    woke: u64,
}
impl Handler<S> for Echo {
    fn on_event(&mut self, cx: &mut Ctx<S>, key: Key, _r: Ready) {
        let s = cx.slab.get_mut(key).unwrap();
        while let Ok(n) = s.0.read(&mut self.buf) {
            if n == 0 {
                break;
            }
            s.0.write_all(&self.buf[..n]).unwrap();
        }
    }
    fn on_timer(&mut self, _cx: &mut Ctx<S>, _key: Key, _tag: u64) {
        self.fired += 1;
    }
    fn on_wake(&mut self, _cx: &mut Ctx<S>) {
        self.woke += 1;
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("reactor");
    g.throughput(Throughput::Elements(1));

    let mut r = Reactor::<S>::new(64).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let mut peer = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(b));
    peer.set_nonblocking(false).unwrap();
    r.cx().insert(S(a), Interest::READABLE).unwrap();
    let mut h = Echo {
        buf: [0; 256],
        fired: 0,
        woke: 0,
    };
    let msg = [1u8; 64];
    let mut back = [0u8; 64];
    g.bench_function("socketpair_ping_pong_64B", |bch| {
        bch.iter(|| {
            peer.write_all(&msg).unwrap();
            r.turn(&mut h, Some(Duration::from_secs(1))).unwrap();
            peer.read_exact(&mut back).unwrap();
        })
    });

    g.bench_function("timer_turn", |bch| {
        bch.iter(|| {
            let now = std::time::Instant::now();
            r.cx().add_timer(now, Key::NONE, 1);
            r.turn(&mut h, Some(Duration::from_secs(1))).unwrap();
        })
    });

    let mb = Arc::new(Mailbox::new(r.handle()));
    let mut got = Vec::new();
    g.bench_function("mailbox_post_wake_drain", |bch| {
        bch.iter(|| {
            mb.post(1u64);
            r.turn(&mut h, Some(Duration::from_secs(1))).unwrap();
            got.clear();
            mb.drain(&mut got);
        })
    });
    g.finish();
    assert!(h.fired > 0 && h.woke > 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
