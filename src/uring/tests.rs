//! Ring tests on real sockets. Where the kernel refuses io_uring they check the message and
//! stop (the serve integration tests force that path explicitly).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::*;

fn ring(bufs: Option<(u16, usize)>) -> Option<Ring> {
    match Ring::new(64, bufs) {
        Ok(r) => Some(r),
        Err(e) => {
            assert!(e.to_string().starts_with("io_uring unavailable: "), "{e}");
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// Turns until `n` completions arrived (at most 5 s).
fn wait(r: &mut Ring, n: usize) -> Vec<Completion> {
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while out.len() < n && Instant::now() < end {
        r.flush_buffers();
        r.submit_and_wait(Some(Duration::from_millis(100))).unwrap();
        r.reap(&mut out);
    }
    out
}

#[test]
fn setup_errors_name_the_cause() {
    let e = Unavailable::from_setup(&std::io::Error::from_raw_os_error(libc::ENOSYS));
    assert!(e.to_string().contains("ENOSYS"), "{e}");
    let e = Unavailable::from_setup(&std::io::Error::from_raw_os_error(libc::ENOMEM));
    assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}");
    let e = Unavailable::from_setup(&std::io::Error::from_raw_os_error(libc::EPERM));
    let s = e.to_string();
    assert!(
        s.contains("io_uring_disabled") || s.contains("seccomp"),
        "{s}"
    );
    assert_eq!(s.lines().count(), 1);
}

#[test]
fn timeout_fires_and_batches_in_one_enter() {
    let Some(mut r) = ring(None) else { return };
    let t0 = Instant::now();
    r.timeout(Duration::from_millis(30), 7);
    r.timeout(Duration::from_millis(10), 8);
    let before = r.stats().enters;
    let c = wait(&mut r, 2);
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|c| c.res == -libc::ETIME && !c.more));
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert!(r.stats().enters - before <= 4, "{:?}", r.stats());
    assert_eq!(r.in_flight(), 0);
}

#[test]
fn recv_and_send_own_their_buffers() {
    let Some(mut r) = ring(None) else { return };
    let (a, mut b) = UnixStream::pair().unwrap();
    let rid = r.recv(a.as_raw_fd(), vec![0u8; 64], 1);
    let _ = r.send(a.as_raw_fd(), b"ping".to_vec(), 0, 2);
    let c = wait(&mut r, 1);
    assert_eq!((c[0].tag, c[0].res), (2, 4));
    assert_eq!(c[0].buf.as_deref(), Some(&b"ping"[..]));
    let mut got = [0u8; 4];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    b.write_all(b"pong").unwrap();
    let c = wait(&mut r, 1);
    assert_eq!((c[0].id, c[0].res), (rid, 4));
    assert_eq!(&c[0].buf.as_ref().unwrap()[..4], b"pong");
}

#[test]
fn a_cancelled_op_keeps_its_buffer_until_its_completion() {
    let Some(mut r) = ring(None) else { return };
    let (a, _b) = UnixStream::pair().unwrap();
    let id = r.recv(a.as_raw_fd(), vec![0xAB; 4096], 1);
    r.submit_and_wait(Some(Duration::ZERO)).unwrap();
    assert_eq!(r.in_flight(), 1);
    r.cancel(id);
    assert_eq!(r.in_flight(), 1, "cancel must not free the slot");
    let c = wait(&mut r, 1);
    assert_eq!(c[0].res, -libc::ECANCELED);
    let buf = c[0].buf.as_ref().unwrap();
    assert!(buf.len() == 4096 && buf.iter().all(|&x| x == 0xAB));
    assert_eq!(r.in_flight(), 0);
}

/// Issue #17: a slot freed by `reap` serves the next operation; the id of the finished one must
/// not name it. Cancelling by the old id (what a driver does when it handles the completion
/// late) used to cancel the new, unrelated operation.
#[test]
fn a_stale_id_does_not_name_the_next_operation_in_its_slot() {
    let Some(mut r) = ring(None) else { return };
    let old = r.timeout(Duration::from_millis(1), 1);
    let c = wait(&mut r, 1);
    assert_eq!((c[0].id, c[0].res), (old, -libc::ETIME));
    let new = r.timeout(Duration::from_millis(300), 2);
    assert_ne!(new, old, "a reused slot must carry a new generation");
    r.cancel(old); // stale: must be a no-op
    let t0 = Instant::now();
    let c = wait(&mut r, 1);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].id, c[0].tag, c[0].res),
        (new, 2, -libc::ETIME),
        "the new timeout was cancelled by the stale id"
    );
    assert!(t0.elapsed() >= Duration::from_millis(250));
    assert_eq!(r.in_flight(), 0);
}

#[test]
fn multishot_recv_ends_with_enobufs_and_rearms() {
    let Some(mut r) = ring(Some((2, 16))) else {
        return;
    };
    if !r.caps().multishot_recv {
        eprintln!("skipping: no multishot recv");
        return;
    }
    let (a, mut b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    r.recv_multi(fd, 9);
    r.submit_and_wait(Some(Duration::ZERO)).unwrap();
    let mut seen = Vec::new();
    let mut held = Vec::new();
    // Three messages, two buffers, nothing recycled: the third ends the multishot.
    for msg in [&b"one"[..], b"two", b"three"] {
        b.write_all(msg).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        for c in wait(&mut r, 1) {
            if c.res > 0 {
                let bid = c.bid.unwrap();
                seen.push(r.provided(bid, c.res as usize).to_vec());
                held.push(bid);
                assert!(c.more);
            } else {
                assert_eq!(c.res, -libc::ENOBUFS);
                assert!(!c.more);
            }
        }
    }
    assert_eq!(seen, vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(r.in_flight(), 0, "ENOBUFS must end the multishot recv");
    for bid in held {
        r.recycle(bid);
    }
    r.recv_multi(fd, 9);
    let c = wait(&mut r, 1);
    assert_eq!(r.provided(c[0].bid.unwrap(), c[0].res as usize), b"three");
}

#[test]
fn accept_multishot_or_single() {
    let Some(mut r) = ring(None) else { return };
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    r.accept(l.as_raw_fd(), 5);
    let _c1 = std::net::TcpStream::connect(addr).unwrap();
    let c = wait(&mut r, 1);
    assert!(c[0].res >= 0, "{c:?}");
    assert_eq!(c[0].more, r.caps().multishot_accept);
    let fd = c[0]
        .accepted
        .as_ref()
        .expect("an accept completion carries its fd");
    assert_eq!(fd.as_raw_fd(), c[0].res);
}

#[test]
fn dropping_the_ring_drains_live_operations() {
    let Some(mut r) = ring(Some((4, 64))) else {
        return;
    };
    let (a, _b) = UnixStream::pair().unwrap();
    r.recv(a.as_raw_fd(), vec![0u8; 128], 1);
    if r.caps().multishot_recv {
        let (c, _d) = UnixStream::pair().unwrap();
        r.recv_multi(c.as_raw_fd(), 2);
        r.timeout(Duration::from_secs(60), 3);
        assert!(r.drain(Duration::from_secs(2)));
        assert_eq!(r.in_flight(), 0);
    }
    r.recv(a.as_raw_fd(), vec![0u8; 128], 4);
    let t0 = Instant::now();
    drop(r);
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn notifier_wakes_an_eventfd_read() {
    let Some(mut r) = ring(None) else { return };
    let n = std::sync::Arc::new(Notifier::<u32>::new().unwrap());
    r.read(n.fd(), vec![0u8; 8], 1);
    r.submit_and_wait(Some(Duration::ZERO)).unwrap();
    let n2 = n.clone();
    let t = std::thread::spawn(move || {
        n2.post(1);
        n2.post(2);
    });
    let c = wait(&mut r, 1);
    t.join().unwrap();
    assert_eq!(c[0].res, 8);
    let mut got = Vec::new();
    n.drain(&mut got);
    assert_eq!(got, vec![1, 2]);
}

/// Linked `SEND`s on a connected UDP socket arrive in order through one multishot `RECVMSG`;
/// the send buffers come back with their completions.
#[test]
fn linked_sends_and_multishot_recvmsg_on_udp() {
    linked_sends(false, false);
}

/// The same on the ring's registered (fixed) file.
#[test]
fn linked_sends_on_a_registered_file() {
    linked_sends(false, true);
}

/// The same with `SEND_ZC`: each send's result comes first (with `more`), the buffer only
/// with the notification after it.
#[test]
fn linked_send_zc_hands_the_buffer_back_with_the_notification() {
    linked_sends(true, false);
    linked_sends(true, true);
}

fn linked_sends(zerocopy: bool, fixed: bool) {
    let Some(mut r) = ring(Some((8, 4096))) else {
        return;
    };
    if !r.caps().multishot_recv || (zerocopy && !r.caps().send_zc) {
        eprintln!("skipping: no multishot recv or no SEND_ZC");
        return;
    }
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let target = if fixed {
        let t = r.register_file(tx.as_raw_fd()).unwrap();
        assert!(
            r.register_file(tx.as_raw_fd()).is_err(),
            "one file per ring"
        );
        t
    } else {
        Target::Fd(tx.as_raw_fd())
    };
    r.recvmsg_multi(rx.as_raw_fd(), 0, 64, 100);
    for i in 0..3u8 {
        let buf = vec![i; 100 + i as usize];
        let send = LinkedSend {
            len: 50 + i as usize,
            link: i < 2,
            zerocopy,
        };
        r.send_linked(target, buf, send, i as u64);
    }
    let done = wait(&mut r, if zerocopy { 9 } else { 6 });
    let mut got = Vec::new();
    let (mut results, mut notifs) = (0, 0);
    for c in &done {
        if c.tag == 100 {
            assert!(c.more, "the multishot receive stays armed");
            let bid = c.bid.expect("a provided buffer");
            let p = r.recvmsg_parts(bid, c.res as usize, 0, 64).unwrap();
            assert!(!p.truncated);
            got.push(p.payload.to_vec());
            r.recycle(bid);
        } else if c.notif {
            notifs += 1;
            assert!(zerocopy && !c.more, "{c:?}");
            let b = c
                .buf
                .as_ref()
                .expect("the buffer comes back with the notification");
            assert_eq!(b.len(), 100 + c.tag as usize);
        } else {
            results += 1;
            assert_eq!(c.res as usize, 50 + c.tag as usize, "{c:?}");
            assert_eq!(
                c.more, zerocopy,
                "a zero-copy result announces its notification"
            );
            if zerocopy {
                assert!(c.buf.is_none(), "the kernel may still read the buffer");
            } else {
                let b = c.buf.as_ref().expect("the send buffer comes back");
                assert_eq!(b.len(), 100 + c.tag as usize);
            }
        }
    }
    assert_eq!(results, 3);
    assert_eq!(notifs, if zerocopy { 3 } else { 0 });
    assert_eq!(got.len(), 3);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p, &vec![i as u8; 50 + i]);
    }
    assert_eq!(r.in_flight(), 1, "only the multishot receive is left");
    assert!(r.drain(Duration::from_secs(2)));
}

/// A multishot `RECVMSG` armed with name space gives each datagram's source (IPv4 and IPv6).
#[test]
fn recvmsg_multi_keeps_the_source_address() {
    use crate::sys::mmsg::{addr_from_bytes, NAME_LEN};
    for host in ["127.0.0.1:0", "[::1]:0"] {
        let Some(mut r) = ring(Some((8, 4096))) else {
            return;
        };
        if !r.caps().multishot_recv {
            eprintln!("skipping: no multishot recv");
            return;
        }
        let Ok(rx) = std::net::UdpSocket::bind(host) else {
            continue; // no IPv6 here
        };
        let tx = std::net::UdpSocket::bind(host).unwrap();
        r.recvmsg_multi(rx.as_raw_fd(), NAME_LEN, 64, 200);
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let done = wait(&mut r, 1);
        let c = done.iter().find(|c| c.tag == 200).expect("a completion");
        let bid = c.bid.expect("a provided buffer");
        let p = r.recvmsg_parts(bid, c.res as usize, NAME_LEN, 64).unwrap();
        assert_eq!(p.payload, b"hello");
        assert_eq!(addr_from_bytes(p.name), Some(tx.local_addr().unwrap()));
        r.recycle(bid);
    }
}
