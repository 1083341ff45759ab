use super::*;
use mio::net::{UdpSocket, UnixStream};
use std::io::{Read, Write};

struct Sock(UdpSocket);
impl Entry for Sock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.0
    }
}

fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap()
}

#[derive(Default)]
struct Rec {
    fired: Vec<u64>,
    events: Vec<Key>,
    wakes: usize,
}
impl Handler<Sock> for Rec {
    fn on_event(&mut self, _cx: &mut Ctx<Sock>, key: Key, _r: Ready) {
        self.events.push(key);
    }
    fn on_timer(&mut self, cx: &mut Ctx<Sock>, _key: Key, tag: u64) {
        self.fired.push(tag);
        if tag == 99 {
            cx.stop();
        }
    }
    fn on_wake(&mut self, _cx: &mut Ctx<Sock>) {
        self.wakes += 1;
    }
}

#[test]
fn timers_fire_in_order_and_cancel() {
    let mut r = Reactor::<Sock>::new(64).unwrap();
    let cx = r.cx();
    let now = Instant::now();
    cx.add_timer(now + Duration::from_millis(30), Key::NONE, 3);
    let c = cx.add_timer(now + Duration::from_millis(5), Key::NONE, 100);
    cx.add_timer(now + Duration::from_millis(10), Key::NONE, 1);
    cx.add_timer(now + Duration::from_millis(20), Key::NONE, 2);
    cx.add_timer(now + Duration::from_millis(40), Key::NONE, 99);
    assert!(cx.cancel_timer(c));
    let mut h = Rec::default();
    r.run(&mut h).unwrap();
    assert_eq!(h.fired, vec![1, 2, 3, 99]);
    assert!(Instant::now() >= now + Duration::from_millis(40));
}

#[test]
fn thousands_of_timers() {
    let mut r = Reactor::<Sock>::new(64).unwrap();
    let now = Instant::now();
    for i in 0..5000u64 {
        r.cx().add_timer(
            now + Duration::from_micros((5000 - i) * 3),
            Key::NONE,
            1000 + i,
        );
    }
    r.cx()
        .add_timer(now + Duration::from_millis(20), Key::NONE, 99);
    let mut h = Rec::default();
    r.run(&mut h).unwrap();
    assert_eq!(h.fired.len(), 5001);
    let expect: Vec<u64> = (1000..6000u64).rev().chain([99]).collect();
    assert_eq!(h.fired, expect);
}

#[test]
fn waker_wakes_from_another_thread() {
    let mut r = Reactor::<Sock>::new(64).unwrap();
    let handle = r.handle();
    let mb = Arc::new(Mailbox::new(r.handle()));
    let mb2 = mb.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        mb2.post(7u32);
        mb2.post(8u32);
    });
    let mut h = Rec::default();
    // No timers: this poll would block forever without the wake.
    while h.wakes == 0 {
        r.turn(&mut h, None).unwrap();
    }
    let mut got = vec![];
    mb.drain(&mut got);
    t.join().unwrap();
    mb.drain(&mut got);
    assert_eq!(got, vec![7, 8]);
    handle.stop();
    r.run(&mut h).unwrap();
}

#[test]
fn stale_token_of_reused_slot_is_ignored() {
    // Two readable sockets in the same epoll batch; whichever is dispatched first removes the
    // other and puts a new (silent) socket into the freed slot. The queued event for the
    // removed socket must not reach the new entry.
    struct Swap {
        seen: Vec<Key>,
        replaced: Option<(Key, Key)>,
    }
    impl Handler<Sock> for Swap {
        fn on_event(&mut self, cx: &mut Ctx<Sock>, key: Key, _r: Ready) {
            self.seen.push(key);
            if self.replaced.is_none() {
                let other = cx.slab.keys().into_iter().find(|k| *k != key).unwrap();
                drop(cx.remove(other));
                let new = cx.insert(Sock(udp()), Interest::READABLE).unwrap();
                assert_eq!(new.index(), other.index());
                self.replaced = Some((other, new));
            }
        }
    }
    let mut r = Reactor::<Sock>::new(64).unwrap();
    let a = udp();
    let b = udp();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(b"x", a.local_addr().unwrap()).unwrap();
    tx.send_to(b"y", b.local_addr().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    r.cx().insert(Sock(a), Interest::READABLE).unwrap();
    r.cx().insert(Sock(b), Interest::READABLE).unwrap();
    let mut h = Swap {
        seen: vec![],
        replaced: None,
    };
    r.turn(&mut h, Some(Duration::from_secs(2))).unwrap();
    let (old, new) = h.replaced.unwrap();
    assert_eq!(h.seen.len(), 1);
    assert!(!h.seen.contains(&new) && !h.seen.contains(&old));
    assert_eq!(r.stats().stale, 1);
    assert_ne!(old.token(), new.token());
}

struct Pipe(UnixStream);
impl Entry for Pipe {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.0
    }
}

#[test]
fn budget_keeps_a_busy_connection_from_starving_a_quiet_one() {
    // Connection 0 has 1 MiB waiting, connection 1 a few bytes. With a budget of 4 reads of
    // 1 KiB per turn, the quiet one must be served in the first turn and the busy one must be
    // deferred (zero-timeout polls) until drained.
    struct Drain {
        buf: Vec<u8>,
        got: [usize; 2],
        done_turn: [Option<u64>; 2],
        turn: u64,
        keys: [Option<Key>; 2],
    }
    impl Handler<Pipe> for Drain {
        fn on_event(&mut self, cx: &mut Ctx<Pipe>, key: Key, _r: Ready) {
            let i = if Some(key) == self.keys[0] { 0 } else { 1 };
            let mut budget = Budget::new(4, 1 << 20);
            let p = cx.slab.get_mut(key).unwrap();
            let mut n = 0;
            let st = drain_read(&mut p.0, &mut self.buf, &mut budget, |d| {
                n += d.len();
                true
            })
            .unwrap();
            self.got[i] += n;
            match st {
                Drained::Budget => cx.defer(key),
                _ => {
                    if self.done_turn[i].is_none() && (i == 1 || self.got[0] == 1 << 20) {
                        self.done_turn[i] = Some(self.turn);
                    }
                }
            }
        }
    }
    let mut r = Reactor::<Pipe>::new(64).unwrap();
    let (a, mut a_tx) = UnixStream::pair().unwrap();
    let (b, mut b_tx) = UnixStream::pair().unwrap();
    let ka = r.cx().insert(Pipe(a), Interest::READABLE).unwrap();
    let kb = r.cx().insert(Pipe(b), Interest::READABLE).unwrap();
    let writer = std::thread::spawn(move || {
        let data = vec![1u8; 1 << 20];
        let mut off = 0;
        while off < data.len() {
            match a_tx.write(&data[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        a_tx
    });
    std::thread::sleep(Duration::from_millis(50));
    b_tx.write_all(b"hello").unwrap();
    let mut h = Drain {
        buf: vec![0; 1024],
        got: [0; 2],
        done_turn: [None; 2],
        turn: 0,
        keys: [Some(ka), Some(kb)],
    };
    while h.done_turn[0].is_none() || h.done_turn[1].is_none() {
        h.turn += 1;
        r.turn(&mut h, Some(Duration::from_secs(5))).unwrap();
        assert!(h.turn < 100_000);
    }
    let _a_tx = writer.join().unwrap();
    assert_eq!(h.got, [1 << 20, 5]);
    assert!(h.done_turn[1].unwrap() < h.done_turn[0].unwrap());
    assert!(r.stats().deferred > 0);
    let mut x = [0u8; 1];
    assert!(b_tx.read(&mut x).is_err()); // nothing was written back; still open
}

#[test]
fn termination_signal_stops_run() {
    let mut r = Reactor::<Sock>::new(64).unwrap();
    r.watch_termination_signals().unwrap();
    r.cx()
        .add_timer_after(Duration::from_millis(20), Key::NONE, 1);
    struct Raise;
    impl Handler<Sock> for Raise {
        fn on_event(&mut self, _: &mut Ctx<Sock>, _: Key, _: Ready) {}
        fn on_timer(&mut self, _: &mut Ctx<Sock>, _: Key, _: u64) {
            crate::sys::signal::raise(libc::SIGTERM).unwrap();
        }
    }
    r.run(&mut Raise).unwrap();
    assert_eq!(crate::sys::signal::last_signal(), libc::SIGTERM);
}

#[test]
fn timers_always_due_do_not_starve_the_turn() {
    // A handler re-arming a timer that is already due (an interval shorter than its handling):
    // every turn still returns, having fired at most TIMERS_PER_TURN of them.
    struct Rearm(u64);
    impl Handler<Sock> for Rearm {
        fn on_event(&mut self, _: &mut Ctx<Sock>, _: Key, _: Ready) {}
        fn on_timer(&mut self, cx: &mut Ctx<Sock>, key: Key, tag: u64) {
            self.0 += 1;
            let now = cx.now();
            cx.add_timer(now, key, tag);
        }
    }
    let mut r = Reactor::<Sock>::new(64).unwrap();
    let now = Instant::now();
    r.cx().add_timer(now, Key::NONE, 1);
    let mut h = Rearm(0);
    for turn in 1..=3u64 {
        r.turn(&mut h, Some(Duration::from_millis(1))).unwrap();
        assert!(h.0 <= turn * TIMERS_PER_TURN as u64, "{}", h.0);
    }
    assert!(h.0 >= 3);
}
