//! The blasting loop's send path, one batch of 64 messages on a connected UDP socket over
//! loopback: `sendmmsg` (mio backend) beside linked io_uring `SEND`s on a registered file, and
//! `SEND_ZC` (uring backend, `--zerocopy`); messages of one 1472-byte datagram (`--gso off`)
//! and of 44 (UDP GSO, the default). The receiving socket is never
//! read: its queue fills and the kernel drops what follows, which the sender does not see, so
//! each iteration costs a full send path (including loopback delivery up to the full queue).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netcore::sys::mmsg::SendBatch;
use netcore::sys::sockopt::{set_udp_gro, set_udp_segment};
use netcore::uring::{Completion, LinkedSend, Ring, Target};

const BATCH: usize = 64;
const DGRAM: usize = 1472;
/// Datagrams per GSO message (as `blast` packs 1472-byte datagrams).
const GSO_SEGS: usize = 44;

fn pair(gso: bool) -> (UdpSocket, UdpSocket) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    if gso {
        // With GRO on the receiving socket loopback keeps the GSO buffer whole, as in `blast`
        // (without it the kernel would segment every message in software).
        set_udp_segment(&tx, DGRAM as u16).unwrap();
        set_udp_gro(&rx, true).unwrap();
    }
    (rx, tx)
}

/// One batch through the ring: 64 linked sends, one enter for all final completions.
fn ring_batch(
    ring: &mut Ring,
    target: Target,
    slots: &mut [Option<Vec<u8>>],
    done: &mut Vec<Completion>,
    zerocopy: bool,
    len: usize,
) {
    let n = slots.len();
    for (i, s) in slots.iter_mut().enumerate() {
        let send = LinkedSend {
            len,
            link: i + 1 < n,
            zerocopy,
        };
        ring.send_linked(target, s.take().unwrap_or_default(), send, i as u64);
    }
    let mut pending = n;
    while pending > 0 {
        ring.submit_and_wait_for(pending, None).unwrap();
        ring.reap(done);
        for mut c in done.drain(..) {
            if let Some(b) = c.buf.take() {
                slots[c.tag as usize] = Some(b);
            }
            if !c.more {
                pending -= 1;
            }
        }
    }
}

fn send_benches(c: &mut Criterion) {
    for gso in [false, true] {
        let segs = if gso { GSO_SEGS } else { 1 };
        let len = DGRAM * segs;
        let mut g = c.benchmark_group(if gso {
            "send_batch_64_gso44x1472"
        } else {
            "send_batch_64x1472"
        });
        g.throughput(Throughput::Elements((BATCH * segs) as u64));

        let (_rx, tx) = pair(gso);
        let mut batch = SendBatch::new(BATCH, len);
        for i in 0..BATCH {
            batch.set_len(i, len);
        }
        g.bench_function("sendmmsg", |b| {
            b.iter(|| {
                let mut from = 0;
                while from < BATCH {
                    from += batch.send(&tx, from, BATCH).unwrap();
                }
            })
        });

        for zerocopy in [false, true] {
            let Ok(mut ring) = Ring::new(BATCH as u32, None) else {
                eprintln!("io_uring unavailable: skipping the ring benches");
                break;
            };
            if zerocopy && !ring.caps().send_zc {
                eprintln!("no SEND_ZC: skipping the zero-copy bench");
                break;
            }
            let (_rx, tx) = pair(gso);
            let target = ring
                .register_file(tx.as_raw_fd())
                .unwrap_or(Target::Fd(tx.as_raw_fd()));
            let mut slots: Vec<Option<Vec<u8>>> =
                (0..BATCH).map(|_| Some(vec![7u8; len])).collect();
            let mut done = Vec::new();
            let name = if zerocopy {
                "uring_linked_send_zc"
            } else {
                "uring_linked_send"
            };
            g.bench_function(name, |b| {
                b.iter(|| ring_batch(&mut ring, target, &mut slots, &mut done, zerocopy, len))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, send_benches);
criterion_main!(benches);
