//! The io_uring backends of `blast` and `recv` (feature `uring`). Safe code over
//! [`crate::uring::Ring`], which owns every buffer while the kernel may touch it.
//!
//! * Receive ([`recv_thread`]): one multishot `RECVMSG` into the ring's provided buffers. Each
//!   completion's buffer holds an `io_uring_recvmsg_out` header, the control messages (the
//!   `UDP_GRO` segment size, the socket's `SO_RXQ_OVFL` drop total) and the payload;
//!   coalesced payloads are split by the segment size
//!   exactly like the `recvmmsg` path, and every buffer goes to the shared
//!   [`Core`]. One `io_uring_enter` per turn (between tests: submit and wait, 10 ms at most;
//!   during a test, or always with `--spin`: run the ring's deferred work without waiting, not
//!   through the kernel's wait path, whose timer set-up cost 12% of the receiving CPU), the
//!   whole completion queue reaped at once, the buffers recycled and
//!   published once per turn. When the multishot ends (`ENOBUFS`: every provided buffer was
//!   full; or any other end) it is re-armed at the start of the next turn, after the recycled
//!   buffers are published.
//! * Send ([`RingTransport`]): the batch's messages are `SEND` operations linked in order;
//!   one `io_uring_enter` submits them and waits for all their completions. A message counts as
//!   sent only on its own successful completion; a refusal (`ENOBUFS`...) cancels the rest of
//!   the chain, so what the kernel took is a prefix, as with `sendmmsg`, and the loop offers
//!   the rest again with the same sequence numbers. The slots' buffers are moved into the ring
//!   with their operations and come back with the completions.
//! * `--zerocopy`: `SEND_ZC` instead of `SEND`. The send's result comes first; its
//!   buffer comes back only with the notification after it, when the kernel has let go of the
//!   pages, and the batch waits for those too. The notifications tell whether the kernel
//!   copied after all (on loopback it always does), and the report counts them.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::recv_core::{Core, RxWait, POLL_NAP};
use super::report::ZeroCopyStats;
use super::transport::Transport;
use crate::sys::mmsg::{addr_from_bytes, gro_segment_in, rxq_ovfl_in, NAME_LEN};
use crate::sys::{affinity, realtime_ns};
use crate::uring::{Completion, LinkedSend, Ring, Target};

/// Control space per received message (a `UDP_GRO` and an `SO_RXQ_OVFL` cmsg take 24 bytes
/// each).
const CTRL: usize = 64;
/// Provided buffers: a GRO-coalesced buffer is at most 64 KiB, plus the 16-byte
/// `io_uring_recvmsg_out` header and the control space. Few, so that they stay in the cache:
/// the kernel fills them in ring order, so with 256 (16 MiB) every copy went to cold memory
/// and both-sides-uring goodput was 0.73x of mio's; with 32 it was 1.09x, with 16 1.03x
/// (`CONFIGS=uring RUNS=7 SIZE=4G tools/compare-udp-burst.sh`, one run each, in a row). The
/// `recvmmsg` path reuses its first buffers on every call, which is why it did not suffer.
const RECV_BUFS: u16 = 32;
const RECV_BUF_SIZE: usize = (1 << 16) + 16 + NAME_LEN + CTRL;
/// Submission entries of the receive ring; the completion queue is twice that, so a turn's
/// completions (at most one per provided buffer, plus the ends) always fit.
const RECV_ENTRIES: u32 = 256;
const TAG_RECV: u64 = 1;
/// Consecutive failed re-arms (other than ENOBUFS) before the test is failed.
const MAX_REARM_ERRORS: u32 = 1000;

/// The `uring` backend's UDP thread.
pub(crate) fn recv_thread(sock: UdpSocket, mut core: Core) {
    if let Some(cpu) = core.ctx.cpu {
        affinity::pin_current(cpu);
    }
    // The ring is made here: with SINGLE_ISSUER it belongs to the thread that created it.
    let mut ring =
        match Ring::new(RECV_ENTRIES, Some((RECV_BUFS, RECV_BUF_SIZE))) {
            Ok(r) if r.caps().multishot_recv => r,
            Ok(_) => return core.refuse_tests(
                "io_uring unavailable: the kernel lacks multishot RECVMSG with provided buffers; \
                 use --backend mio"
                    .into(),
            ),
            Err(e) => return core.refuse_tests(format!("{e}; use --backend mio")),
        };
    let fd: RawFd = sock.as_raw_fd();
    // Room for each datagram's source only where `--allow` needs it.
    let name_len = if core.ctx.wants_sources() {
        NAME_LEN
    } else {
        0
    };
    let mut armed = false;
    let mut rearm_errors = 0u32;
    let mut last_err = 0;
    let mut done: Vec<Completion> = Vec::with_capacity(2 * RECV_ENTRIES as usize);
    while core.commands() {
        if !armed {
            ring.recvmsg_multi(fd, name_len, CTRL, TAG_RECV);
            armed = true;
        }
        ring.flush_buffers();
        // As on the mio path: between tests wait in the kernel; during a test poll (reap what
        // is there without sleeping in the ring, nap when nothing came) or spin.
        let poll = core.in_test() && core.ctx.wait == RxWait::Poll;
        // (Spinning, too, only during a test: between tests the ring waits in the kernel.)
        let wait = if core.in_test() && core.ctx.wait != RxWait::Block {
            Duration::ZERO
        } else {
            Duration::from_millis(10)
        };
        let entered = if wait.is_zero() {
            ring.submit_nowait()
        } else {
            ring.submit_and_wait(Some(wait))
        };
        if let Err(e) = entered {
            core.fail(format!("io_uring_enter failed: {e}"));
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        ring.reap(&mut done);
        let now_ns = realtime_ns();
        let mut got = false;
        let mut drops = None;
        for c in done.drain(..) {
            if !c.more {
                armed = false;
            }
            if c.res < 0 && c.res != -libc::ENOBUFS {
                rearm_errors += 1;
                last_err = -c.res;
            } else {
                rearm_errors = 0;
            }
            let Some(bid) = c.bid else { continue };
            if c.res > 0 && core.in_test() {
                if let Some(p) = ring.recvmsg_parts(bid, c.res as usize, name_len, CTRL) {
                    let from = addr_from_bytes(p.name);
                    let gro = gro_segment_in(p.control);
                    core.on_buffer(p.payload, p.truncated, gro, from, now_ns);
                    drops = rxq_ovfl_in(p.control).or(drops);
                    got = true;
                }
            }
            ring.recycle(bid);
        }
        if let Some(d) = drops {
            core.on_drops(d);
        }
        if rearm_errors > MAX_REARM_ERRORS {
            core.fail(format!(
                "multishot RECVMSG keeps failing ({}); use --backend mio",
                io::Error::from_raw_os_error(last_err)
            ));
            rearm_errors = 0;
            thread::sleep(Duration::from_millis(10));
        }
        core.end_batch(got);
        if poll && !got {
            thread::sleep(POLL_NAP);
        }
    }
    // Dropping the ring cancels the receive and waits for its last completion.
}

/// The `uring` backend of the blasting loop: the batch's message buffers, each moved into the
/// ring while its `SEND` is in flight.
pub(crate) struct RingTransport {
    ring: Ring,
    /// The socket, registered with the ring where the kernel lets us (else its fd).
    target: Target,
    /// Slot buffers (`None` only while in flight, i.e. never between calls).
    slots: Vec<Option<Vec<u8>>>,
    lens: Vec<usize>,
    /// Result of each message of the last send, by index from `from`.
    results: Vec<i32>,
    done: Vec<Completion>,
    /// `SEND_ZC` instead of `SEND` (`--zerocopy`).
    zerocopy: bool,
    zc: ZeroCopyStats,
}

impl RingTransport {
    pub fn new(sock: &UdpSocket, batch: usize, zerocopy: bool) -> Result<RingTransport> {
        let entries = (batch.max(1) as u32).next_power_of_two();
        let mut ring = Ring::new(entries, None).map_err(|e| anyhow!("{e}; use --backend mio"))?;
        if zerocopy && !ring.caps().send_zc {
            bail!("--zerocopy: the kernel lacks io_uring SEND_ZC (Linux 6.0 or later needed)");
        }
        // A registered file saves a file lookup per operation; a plain fd works as well.
        let target = ring
            .register_file(sock.as_raw_fd())
            .unwrap_or(Target::Fd(sock.as_raw_fd()));
        Ok(RingTransport {
            zerocopy,
            zc: ZeroCopyStats::default(),
            ring,
            target,
            slots: Vec::new(),
            lens: Vec::new(),
            results: Vec::new(),
            done: Vec::new(),
        })
    }
}

impl Transport for RingTransport {
    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        self.slots[i].as_deref_mut().unwrap_or(&mut [])
    }

    fn set_len(&mut self, i: usize, len: usize) {
        let cap = self.slots[i].as_ref().map_or(0, Vec::len);
        assert!(len <= cap);
        self.lens[i] = len;
    }

    fn send(&mut self, from: usize, to: usize) -> io::Result<usize> {
        assert!(from < to && to <= self.slots.len());
        let n = to - from;
        for m in from..to {
            let buf = self.slots[m].take().unwrap_or_default();
            let send = LinkedSend {
                len: self.lens[m],
                link: m + 1 < to,
                zerocopy: self.zerocopy,
            };
            self.ring.send_linked(self.target, buf, send, m as u64);
        }
        self.results.clear();
        self.results.resize(n, 0);
        // Every operation's final completion, so that all the buffers are back: with
        // `SEND_ZC` the result comes first and the buffer with the notification after it.
        let mut pending = n;
        while pending > 0 {
            // A failed enter leaves operations (and slot buffers) in flight: report it as
            // fatal (no errno, so the loop does not retry with empty slots); dropping the
            // ring then cancels and drains them.
            self.ring
                .submit_and_wait_for(pending, None)
                .map_err(|e| io::Error::other(format!("io_uring_enter: {e}")))?;
            self.ring.reap(&mut self.done);
            for mut c in self.done.drain(..) {
                let m = c.tag as usize;
                if let Some(b) = c.buf.take() {
                    self.slots[m] = Some(b);
                }
                if c.notif {
                    self.zc.notifications += 1;
                    self.zc.copied += u64::from(c.copied());
                } else {
                    self.results[m - from] = c.res;
                }
                if !c.more {
                    pending -= 1;
                }
            }
        }
        let taken = self.results.iter().take_while(|&&r| r >= 0).count();
        if taken > 0 {
            return Ok(taken);
        }
        Err(io::Error::from_raw_os_error(-self.results[0]))
    }

    fn rebuild(&mut self, n: usize, slot: usize) {
        self.slots = (0..n).map(|_| Some(vec![0u8; slot])).collect();
        self.lens = vec![slot; n];
    }

    fn syscalls(&self) -> u64 {
        self.ring.stats().enters
    }

    fn zerocopy(&self) -> Option<ZeroCopyStats> {
        self.zerocopy.then_some(self.zc)
    }
}
