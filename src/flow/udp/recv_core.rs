//! The receiving side's per-test core, shared by both receive backends (the `recvmmsg` loop in
//! `super::recv_mmsg` and the io_uring loop in `super::uring`): commands from the control
//! thread, per-datagram accounting (decode, test id, verify, tracker, latency, jitter,
//! reorder extent), interval figures and the end of a test. A backend only moves buffers from
//! the socket to [`Core::on_buffer`] and calls [`Core::end_batch`] once per receive batch.
//!
//! Several tests may run at once (`recv --max-tests`): each has its own [`TestState`], and a
//! datagram goes to the test its header names. Commands name their test, and every piece of
//! news goes out with the test id it is about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::mpsc::{Receiver as Rx, Sender as Tx, TryRecvError};
use std::time::{Duration, Instant};

use super::wire::{self, Header, Invalid};
use crate::flow::access::AllowList;
use crate::flow::backend::Backend;
use crate::flow::cpu::ThreadMeter;
use crate::flow::kernel::{split_loss, Snapshot};
use crate::flow::payload::{pct_of, KernelStats, ReceiverStats, SocketDrops, StreamStats};
use crate::flow::tracker::{Accounting, Class, Tracker};
use crate::stats::hist::Hist;
use crate::sys::sockopt::{self, BufMethod};

/// What the UDP thread needs to know of a test.
#[derive(Debug)]
pub struct TestParams {
    pub test_id: u64,
    pub same_host: bool,
    /// Streams of the test (`-P`): datagrams carry 0..streams in their header.
    pub streams: u16,
    /// The test's interval: its Setup's, or the receiver's own `--interval`.
    pub interval: Duration,
    /// How often the limits are checked (`Out::Check`): the receiver's own `--interval`,
    /// whatever the test asked (a client's 60 s intervals must not let it burst for 60 s).
    pub check_every: Duration,
}

/// The control thread's commands to the UDP thread.
#[derive(Debug)]
pub enum Cmd {
    Start(TestParams),
    /// Finish test `test_id`: with the sender's count per stream (drain first), or None (now,
    /// interrupted).
    Finish {
        test_id: u64,
        sent: Option<Vec<u64>>,
    },
    Quit,
}

/// The UDP thread's news for the control thread (it goes out as `(test_id, Out)`).
#[derive(Debug)]
pub enum Out {
    Started,
    Interval {
        t: f64,
        datagrams: u64,
        bytes: u64,
        lost_so_far: u64,
    },
    /// The totals so far, every `check_every`: for the limits and the silence deadline.
    Check {
        t: f64,
        datagrams: u64,
        bytes: u64,
    },
    Finished(Box<ReceiverStats>),
    Failed(String),
}

pub use crate::flow::rxwait::{RxWait, POLL_NAP};

pub(crate) struct UdpCtx {
    pub wait: RxWait,
    pub batch: usize,
    pub cpu: Option<usize>,
    pub rcvbuf: u64,
    pub rcvbuf_method: BufMethod,
    pub gro: bool,
    pub drain: Duration,
    pub window: u64,
    /// The backend that runs (mio or uring, never auto).
    pub backend: Backend,
    /// The receiving socket, for its drop counter (`SO_MEMINFO`) at a test's start and end.
    pub sock: RawFd,
    /// `SO_RXQ_OVFL` is on: the backend passes each batch's drop count to [`Core::on_drops`].
    pub rxq_ovfl: bool,
    /// `--allow`: datagrams from elsewhere are dropped before they are decoded (counted
    /// invalid, `not_allowed`). Empty: every source, and backends need not read addresses.
    pub allow: AllowList,
}

impl UdpCtx {
    /// Whether the backend must pass each buffer's source address to [`Core::on_buffer`].
    pub(crate) fn wants_sources(&self) -> bool {
        !self.allow.0.is_empty()
    }
}

/// One stream's accounting in a test: its own sequence space, bytes and jitter.
struct Lane {
    tracker: Tracker,
    bytes: u64,
    jitter_ns: f64,
    prev_transit: Option<i64>,
    prev_send_ns: u64,
}

impl Lane {
    fn new(window: u64) -> Lane {
        Lane {
            tracker: Tracker::new(window),
            bytes: 0,
            jitter_ns: 0.0,
            prev_transit: None,
            prev_send_ns: u64::MAX,
        }
    }
}

/// The tracking window of each of `streams` streams: the receiver's window shared out (each
/// stream carries its share of the datagrams, so the window covers the same time), at least 64.
pub(crate) fn lane_window(window: u64, streams: u16) -> u64 {
    (window / u64::from(streams.max(1))).max(64)
}

/// The most tests the UDP thread holds at once (`recv --max-tests` is bounded by it).
pub(crate) const MAX_TESTS: usize = 64;

/// One test's state in the UDP thread.
pub(crate) struct TestState {
    test_id: u64,
    same_host: bool,
    /// One per stream, indexed by the header's stream number.
    lanes: Vec<Lane>,
    invalid: [u64; Invalid::ALL.len()],
    latency: Hist,
    /// The latest latency (ns) not yet in `latency`, and how many datagrams had it: the
    /// datagrams of one GRO buffer from one send share their send time, so a run of equal
    /// values goes into the histogram in one step (`record_n`), not one per datagram.
    pending_latency: (u64, u64),
    extent: Hist,
    start: Instant,
    first: Option<Instant>,
    last: Instant,
    coalesced: u64,
    /// The most datagrams one receive buffer held (GRO): what one dropped buffer may hold.
    max_segs: u64,
    recv_calls: u64,
    /// A datagram of this test (or, with one test running, any datagram) came in this batch.
    got: bool,
    /// The test's interval, and when its next figures are due.
    interval: Duration,
    next_tick: Instant,
    /// How often the limits are checked, and when next.
    check_every: Duration,
    next_check: Instant,
    /// Unique datagrams when the last interval figures went out.
    ticked: std::cell::Cell<u64>,
    /// Set by Finish: (sender's count if known, when asked).
    finishing: Option<(Option<Vec<u64>>, Instant)>,
    /// This thread's CPU since the test started.
    meter: ThreadMeter,
    /// The kernel's counters when the test started, and when the sender said Done.
    kernel_start: Snapshot,
    kernel_done: Option<Snapshot>,
    /// The socket's running drop total when the test started, and the latest one a datagram
    /// of the test carried (`SO_RXQ_OVFL`).
    drops_start: u32,
    drops_seen: Option<u32>,
}

impl TestState {
    fn new(p: TestParams, window: u64) -> TestState {
        let now = Instant::now();
        TestState {
            test_id: p.test_id,
            same_host: p.same_host,
            lanes: (0..p.streams.max(1))
                .map(|_| Lane::new(lane_window(window, p.streams)))
                .collect(),
            invalid: [0; Invalid::ALL.len()],
            latency: Hist::new(),
            pending_latency: (0, 0),
            extent: Hist::new(),
            start: now,
            first: None,
            last: now,
            coalesced: 0,
            max_segs: 1,
            recv_calls: 0,
            got: false,
            interval: p.interval,
            next_tick: now + p.interval,
            check_every: p.check_every,
            next_check: now + p.check_every,
            ticked: std::cell::Cell::new(0),
            finishing: None,
            meter: ThreadMeter::start(),
            kernel_start: Snapshot::read(),
            kernel_done: None,
            drops_start: 0,
            drops_seen: None,
        }
    }

    /// A datagram of this test was queued when the socket's drop total was `total`. Totals
    /// only grow (modulo 2^32); a stray queued before the test carries an older one.
    fn on_drops(&mut self, total: u32) {
        let newer = |a: u32, b: u32| a.wrapping_sub(b) < 1 << 31;
        if newer(total, self.drops_start) && self.drops_seen.is_none_or(|s| newer(total, s)) {
            self.drops_seen = Some(total);
        }
    }

    /// What the kernel counted over the test and the split of `lost`; the threads and the
    /// verdict come when both sides' CPU is known (`UdpReport::conclude`).
    fn kernel(&self, ctx: &UdpCtx, lost: u64) -> KernelStats {
        let end = Snapshot::read();
        let mut host = self.kernel_start.delta(&end);
        if let Some(done) = &self.kernel_done {
            host.cores = self.kernel_start.delta(done).cores;
        }
        let socket_drops = SocketDrops {
            rxq_ovfl: ctx.rxq_ovfl.then(|| {
                u64::from(
                    self.drops_seen
                        .map_or(0, |v| v.wrapping_sub(self.drops_start)),
                )
            }),
            total: sockopt::socket_drops(ctx.sock)
                .ok()
                .map(|e| u64::from(e.wrapping_sub(self.drops_start))),
        };
        KernelStats {
            loss: split_loss(lost, socket_drops.best(), self.max_segs, &host),
            socket_drops,
            host,
            ..KernelStats::default()
        }
    }

    #[inline]
    fn invalid(&mut self, why: Invalid) {
        self.got = true;
        self.invalid[why as usize] += 1;
    }

    /// Accounts one datagram that arrived at `now_ns` (CLOCK_REALTIME).
    #[cfg(test)]
    fn on_datagram(&mut self, d: &[u8], now_ns: u64) {
        let h = match Header::decode(d) {
            Ok(h) => h,
            Err(why) => return self.invalid(why),
        };
        if h.test_id != self.test_id {
            return self.invalid(Invalid::TestId);
        }
        self.on_decoded(&h, d, now_ns)
    }

    /// Accounts one datagram of this test (its header `h` decoded, its test id this test's).
    #[inline]
    fn on_decoded(&mut self, h: &Header, d: &[u8], now_ns: u64) {
        self.got = true;
        if let Err(why) = wire::check_payload(h, d) {
            return self.invalid(why);
        }
        let Some(lane) = self.lanes.get_mut(h.stream as usize) else {
            return self.invalid(Invalid::Stream);
        };
        match lane.tracker.record(h.seq) {
            Class::InOrder => {}
            Class::Reordered { extent } => self.extent.record(extent),
            Class::Duplicate | Class::TooLate => return,
        }
        lane.bytes += d.len() as u64;
        let transit = now_ns as i64 - h.send_ns as i64;
        // Jitter (RFC 3550) per stream over send events: datagrams of one sender batch share
        // a send time, and comparing them with each other would only dilute the estimate.
        if h.send_ns != lane.prev_send_ns {
            if let Some(prev) = lane.prev_transit {
                let d = (transit - prev).unsigned_abs() as f64;
                lane.jitter_ns += (d - lane.jitter_ns) / 16.0;
            }
            lane.prev_transit = Some(transit);
            lane.prev_send_ns = h.send_ns;
        }
        self.note_latency(transit.max(0) as u64);
    }

    /// One datagram's latency: counted with the run of equal ones before it, or the run goes
    /// into the histogram and a new one starts.
    #[inline]
    fn note_latency(&mut self, ns: u64) {
        let (v, n) = &mut self.pending_latency;
        if *n > 0 && *v == ns {
            *n += 1;
            return;
        }
        if *n > 0 {
            self.latency.record_n(*v, *n);
        }
        self.pending_latency = (ns, 1);
    }

    /// Every latency so far: the histogram and the run not yet in it.
    fn latency_all(&self) -> Hist {
        let mut h = self.latency.clone();
        let (v, n) = self.pending_latency;
        if n > 0 {
            h.record_n(v, n);
        }
        h
    }

    /// Unique datagrams and bytes so far, and the loss so far, over every stream.
    fn progress(&self) -> (u64, u64, u64) {
        self.lanes.iter().fold((0, 0, 0), |(u, b, l), lane| {
            (
                u + lane.tracker.unique(),
                b + lane.bytes,
                l + lane.tracker.lost_so_far(),
            )
        })
    }

    /// Whether every stream has all the datagrams the sender says it sent.
    fn all_in(&self, sent: &[u64]) -> bool {
        self.lanes
            .iter()
            .enumerate()
            .all(|(i, l)| l.tracker.unique() >= sent.get(i).copied().unwrap_or(0))
    }

    fn stats(
        &self,
        sent: Option<&[u64]>,
        ctx: &UdpCtx,
        interrupted: bool,
    ) -> Result<ReceiverStats, String> {
        let duration_s = match self.first {
            Some(f) => (self.last - f).as_secs_f64(),
            None => 0.0,
        };
        let latency = self.latency_all();
        let mut streams = Vec::with_capacity(self.lanes.len());
        for (i, lane) in self.lanes.iter().enumerate() {
            let counts = lane.tracker.counts();
            let sent = match sent {
                Some(s) => s.get(i).copied().unwrap_or(0),
                None => lane.tracker.highest().map_or(0, |h| h + 1),
            };
            let accounting = lane.tracker.finish(sent).map_err(|e| {
                if self.lanes.len() > 1 {
                    format!("stream {i}: {e}")
                } else {
                    e.to_string()
                }
            })?;
            debug_assert_eq!(counts.in_order + counts.reordered, accounting.unique);
            streams.push(StreamStats::new(
                i as u16,
                accounting,
                lane.bytes,
                duration_s,
                lane.jitter_ns / 1e3,
            ));
        }
        let accounting = Accounting::sum(streams.iter().map(|s| &s.accounting));
        let bytes: u64 = self.lanes.iter().map(|l| l.bytes).sum();
        let jitter_ns =
            self.lanes.iter().map(|l| l.jitter_ns).sum::<f64>() / self.lanes.len() as f64;
        let mut invalid = BTreeMap::new();
        for why in Invalid::ALL {
            let n = self.invalid[why as usize];
            if n > 0 {
                invalid.insert(why.name().to_string(), n);
            }
        }
        Ok(ReceiverStats {
            lost_pct: pct_of(accounting.lost, accounting.sent),
            accounting,
            bytes,
            duration_s,
            goodput_bps: if duration_s > 0.0 {
                bytes as f64 * 8.0 / duration_s
            } else {
                0.0
            },
            pps: if duration_s > 0.0 {
                accounting.unique as f64 / duration_s
            } else {
                0.0
            },
            invalid,
            jitter_us: jitter_ns / 1e3,
            latency_us: latency.summary(1e3),
            latency_clock: if self.same_host {
                "same host".into()
            } else {
                "two hosts, clocks assumed in sync".into()
            },
            reorder_extent: self.extent.summary(1.0),
            window: self.lanes[0].tracker.window(),
            rcvbuf: ctx.rcvbuf,
            rcvbuf_method: ctx.rcvbuf_method,
            gro: ctx.gro,
            coalesced_buffers: self.coalesced,
            recv_calls: self.recv_calls,
            cpu: ctx.cpu,
            interrupted,
            backend: ctx.backend.name().to_string(),
            cpu_usage: Some(self.meter.stop().finish(bytes)),
            streams,
            kernel: Some(self.kernel(ctx, accounting.lost)),
            latency_hist: Some(latency),
        })
    }
}

/// The UDP thread's state between receive batches, whatever the backend.
pub(crate) struct Core {
    pub ctx: UdpCtx,
    cmds: Rx<Cmd>,
    out: Tx<(u64, Out)>,
    /// The tests running, at most [`MAX_TESTS`] (a few: found by a linear search).
    tests: Vec<TestState>,
    /// The test the last datagram belonged to (datagrams come in runs of one test).
    last: usize,
    /// The latest drop total any datagram carried (the baseline where `SO_MEMINFO` fails).
    drops_seen: u32,
}

impl Core {
    pub fn new(ctx: UdpCtx, cmds: Rx<Cmd>, out: Tx<(u64, Out)>) -> Core {
        Core {
            ctx,
            cmds,
            out,
            tests: Vec::new(),
            last: 0,
            drops_seen: 0,
        }
    }

    /// Takes the control thread's pending commands. False once the thread should end.
    pub(crate) fn commands(&mut self) -> bool {
        loop {
            match self.cmds.try_recv() {
                Ok(Cmd::Start(p)) => {
                    let id = p.test_id;
                    // The control thread gives each running test its own id and holds at most
                    // MAX_TESTS; a repeated id replaces the stale state.
                    self.tests.retain(|t| t.test_id != id);
                    if self.tests.len() >= MAX_TESTS {
                        let _ = self.out.send((id, Out::Failed("too many tests".into())));
                        continue;
                    }
                    let mut t = TestState::new(p, self.ctx.window);
                    t.drops_start = sockopt::socket_drops(self.ctx.sock).unwrap_or(self.drops_seen);
                    self.tests.push(t);
                    let _ = self.out.send((id, Out::Started));
                }
                Ok(Cmd::Finish { test_id, sent }) => {
                    if let Some(t) = self.tests.iter_mut().find(|t| t.test_id == test_id) {
                        t.finishing = Some((sent, Instant::now()));
                        t.kernel_done = Some(Snapshot::read());
                    }
                }
                Ok(Cmd::Quit) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    #[cfg(feature = "uring")]
    /// Fails every test that is about to start or running (the backend cannot receive).
    pub fn fail(&mut self, why: String) {
        for t in self.tests.drain(..) {
            let _ = self.out.send((t.test_id, Out::Failed(why.clone())));
        }
    }

    #[cfg(feature = "uring")]
    /// The backend cannot run: answers every test with `why` until told to quit.
    pub(crate) fn refuse_tests(self, why: String) {
        loop {
            match self.cmds.recv() {
                Ok(Cmd::Start(p)) => {
                    let _ = self.out.send((p.test_id, Out::Failed(why.clone())));
                }
                Ok(Cmd::Finish { .. }) => {}
                Ok(Cmd::Quit) | Err(_) => return,
            }
        }
    }

    /// Whether a test is running (between tests, strays are read and dropped).
    pub(crate) fn in_test(&self) -> bool {
        !self.tests.is_empty()
    }

    /// Accounts one receive buffer that arrived at `now_ns` (CLOCK_REALTIME) from `from` (None
    /// when the backend does not read sources, see [`UdpCtx::wants_sources`]): a buffer the
    /// kernel coalesced (GRO, `gro` = its segment size) is split into its datagrams.
    #[inline]
    pub(crate) fn on_buffer(
        &mut self,
        m: &[u8],
        truncated: bool,
        gro: Option<usize>,
        from: Option<SocketAddr>,
        now_ns: u64,
    ) {
        if self.tests.is_empty() {
            return;
        }
        if self.ctx.wants_sources() && !from.is_some_and(|a| self.ctx.allow.admits(a.ip())) {
            return self.not_allowed(m.len(), gro);
        }
        if truncated {
            // Which test it was is unknown: with one test running it is that one's.
            if let [t] = self.tests.as_mut_slice() {
                t.invalid(Invalid::Truncated);
            }
            return;
        }
        match gro {
            Some(seg) if seg > 0 && seg < m.len() => {
                let mut first = true;
                let segs = m.len().div_ceil(seg) as u64;
                for d in m.chunks(seg) {
                    if let Some(t) = self.on_datagram(d, now_ns) {
                        if first {
                            let t = &mut self.tests[t];
                            t.coalesced += 1;
                            t.max_segs = t.max_segs.max(segs);
                            first = false;
                        }
                    }
                }
            }
            _ => {
                self.on_datagram(m, now_ns);
            }
        }
    }

    /// A buffer from outside `--allow`: its datagrams count as invalid in the only test
    /// running (never in its figures), and are dropped while several run.
    #[cold]
    fn not_allowed(&mut self, len: usize, gro: Option<usize>) {
        if let [t] = self.tests.as_mut_slice() {
            let n = match gro {
                Some(seg) if seg > 0 && seg < len => len.div_ceil(seg) as u64,
                _ => 1,
            };
            t.got = true;
            t.invalid[Invalid::NotAllowed as usize] += n;
        }
    }

    /// The socket's running drop total (`SO_RXQ_OVFL`) that the batch's last datagram carried.
    /// The socket is shared by every running test: each takes it (with several at once, the
    /// split between them cannot be exact; the report says the drops are the socket's).
    #[inline]
    pub(crate) fn on_drops(&mut self, total: u32) {
        self.drops_seen = total;
        for t in &mut self.tests {
            t.on_drops(total);
        }
    }

    /// Accounts one datagram to the test its header names; the index of that test. One that
    /// names no running test (or no header at all) counts as invalid in the only test running,
    /// and is dropped while several run (whose it was is unknown).
    #[inline]
    fn on_datagram(&mut self, d: &[u8], now_ns: u64) -> Option<usize> {
        let one = self.tests.len() == 1;
        let h = match Header::decode(d) {
            Ok(h) => h,
            Err(why) => {
                if one {
                    self.tests[0].invalid(why);
                }
                return None;
            }
        };
        let i = if self
            .tests
            .get(self.last)
            .is_some_and(|t| t.test_id == h.test_id)
        {
            self.last
        } else {
            match self.tests.iter().position(|t| t.test_id == h.test_id) {
                Some(i) => i,
                None => {
                    if one {
                        self.tests[0].invalid(Invalid::TestId);
                    }
                    return None;
                }
            }
        };
        self.last = i;
        self.tests[i].on_decoded(&h, d, now_ns);
        Some(i)
    }

    /// Ends one receive batch (`received`: it carried data): arrival times, interval figures,
    /// and the end of each test once finishing and the drain rule says so.
    pub(crate) fn end_batch(&mut self, received: bool) {
        let now = Instant::now();
        let ctx = &self.ctx;
        let out = &self.out;
        let one = self.tests.len() == 1;
        self.tests.retain_mut(|t| {
            let got = std::mem::take(&mut t.got) || (one && received);
            t.end_batch(ctx, out, got, now)
        });
    }
}

impl TestState {
    /// The interval figures at `at` (the totals so far: the session makes the interval's).
    fn send_interval(&self, out: &Tx<(u64, Out)>, at: Instant) {
        let (datagrams, bytes, lost_so_far) = self.progress();
        self.ticked.set(datagrams);
        let _ = out.send((
            self.test_id,
            Out::Interval {
                t: at.saturating_duration_since(self.start).as_secs_f64(),
                datagrams,
                bytes,
                lost_so_far,
            },
        ));
    }

    /// The totals at `at`, for the limits (`Out::Check`).
    fn send_check(&self, out: &Tx<(u64, Out)>, at: Instant) {
        let (datagrams, bytes, _) = self.progress();
        let t = at.saturating_duration_since(self.start).as_secs_f64();
        let _ = out.send((
            self.test_id,
            Out::Check {
                t,
                datagrams,
                bytes,
            },
        ));
    }

    /// One receive batch ended at `now` (`received`: it carried this test's data): interval figures, and the end of the test once
    /// finishing and the drain rule says so. False once the test has ended (its result sent).
    fn end_batch(
        &mut self,
        ctx: &UdpCtx,
        out: &Tx<(u64, Out)>,
        received: bool,
        now: Instant,
    ) -> bool {
        let t = self;
        if received {
            t.recv_calls += 1;
            t.first.get_or_insert(now);
            t.last = now;
        }
        if now >= t.next_tick {
            t.next_tick += t.interval;
            if t.next_tick < now {
                t.next_tick = now + t.interval;
            }
            t.send_interval(out, now);
        }
        if now >= t.next_check {
            t.next_check = (t.next_check + t.check_every).max(now);
            t.send_check(out, now);
        }
        if let Some((sent, asked)) = &t.finishing {
            let (sent, asked) = (sent.as_deref(), *asked);
            let all_in = sent.is_some_and(|s| t.all_in(s));
            let quiet = now.duration_since(t.last.max(asked)) >= ctx.drain;
            let cap = now.duration_since(asked) >= ctx.drain * 8;
            if sent.is_none() || all_in || quiet || cap {
                // The last, partial interval: up to the last datagram (not the drain's wait).
                if t.progress().0 > t.ticked.get() {
                    t.send_interval(out, t.last);
                }
                let msg = match t.stats(sent, ctx, sent.is_none()) {
                    Ok(s) => Out::Finished(Box::new(s)),
                    Err(e) => Out::Failed(e),
                };
                let _ = out.send((t.test_id, msg));
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx() -> UdpCtx {
        UdpCtx {
            wait: RxWait::Poll,
            batch: 1,
            cpu: None,
            rcvbuf: 1,
            rcvbuf_method: BufMethod::Capped,
            gro: false,
            drain: Duration::from_millis(1),
            window: 1 << 10,
            backend: Backend::Mio,
            sock: -1,
            rxq_ovfl: true,
            allow: AllowList::default(),
        }
    }

    #[test]
    fn datagrams_from_outside_allow_are_in_no_figure() {
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let (out_tx, out_rx) = std::sync::mpsc::channel();
        let mut c = ctx();
        c.allow = AllowList::parse("10.0.0.0/8").unwrap();
        let mut core = Core::new(c, cmd_rx, out_tx);
        let p = TestParams {
            test_id: 7,
            same_host: true,
            streams: 1,
            interval: Duration::from_secs(1),
            check_every: Duration::from_secs(1),
        };
        cmd_tx.send(Cmd::Start(p)).unwrap();
        assert!(core.commands());
        let inside: SocketAddr = "10.1.2.3:9".parse().unwrap();
        let outside: SocketAddr = "192.168.1.1:9".parse().unwrap();
        core.on_buffer(&datagram(0, 0), false, None, Some(inside), 2);
        // A forged datagram of the test (next sequence number) and a GRO buffer of three.
        core.on_buffer(&datagram(0, 1), false, None, Some(outside), 2);
        let three = [datagram(0, 2), datagram(0, 3), datagram(0, 4)].concat();
        core.on_buffer(&three, false, Some(100), Some(outside), 2);
        core.on_buffer(&datagram(0, 1), false, None, None, 2);
        let t = &core.tests[0];
        assert_eq!(t.progress(), (1, 100, 0));
        let r = t.stats(Some(&[1]), &core.ctx, false).unwrap();
        assert_eq!(r.invalid.get("not_allowed"), Some(&5));
        assert_eq!(r.accounting.unique, 1);
        drop(out_rx);
    }

    fn datagram(stream: u16, seq: u64) -> Vec<u8> {
        let mut d = wire::build(100, 7, seq, 1, false);
        d[6..8].copy_from_slice(&stream.to_le_bytes());
        d
    }

    fn state(streams: u16) -> TestState {
        let p = TestParams {
            test_id: 7,
            same_host: true,
            streams,
            interval: Duration::from_secs(1),
            check_every: Duration::from_secs(1),
        };
        TestState::new(p, 1 << 10)
    }

    #[test]
    fn each_stream_has_its_own_sequence_space() {
        let mut t = state(3);
        // stream 0: 0..5 all; stream 1: 0, 2 (1 lost) and 2 again; stream 2: nothing;
        // stream 3 was not announced.
        for s in 0..5 {
            t.on_datagram(&datagram(0, s), 2);
        }
        for s in [0, 2, 2] {
            t.on_datagram(&datagram(1, s), 2);
        }
        t.on_datagram(&datagram(3, 0), 2);
        assert_eq!(t.progress(), (7, 700, 1));
        assert!(t.all_in(&[5, 2, 0]) && !t.all_in(&[5, 3, 0]));
        let r = t.stats(Some(&[5, 3, 1]), &ctx(), false).unwrap();
        let per: Vec<(u64, u64, u64, u64)> = r
            .streams
            .iter()
            .map(|s| {
                let a = s.accounting;
                (a.sent, a.unique, a.lost, a.duplicate)
            })
            .collect();
        assert_eq!(per, [(5, 5, 0, 0), (3, 2, 1, 1), (1, 0, 1, 0)]);
        let a = r.accounting;
        assert_eq!((a.sent, a.unique, a.lost, a.duplicate), (9, 7, 2, 1));
        assert_eq!(r.invalid.get("stream"), Some(&1));
        assert_eq!(r.window, 512); // 1024 / 3, rounded up to a power of two
                                   // a stream that saw more than its sender says names the stream
        let e = t.stats(Some(&[5, 2, 0]), &ctx(), false).unwrap_err();
        assert!(e.starts_with("stream 1:"), "{e}");
    }

    #[test]
    fn runs_of_equal_latencies_count_every_datagram() {
        let mut t = state(1);
        // A GRO buffer of 3 datagrams from one send (1 µs), one of 2 (5 µs), then 1 µs again.
        let sends = [
            (0, 1000),
            (0, 1000),
            (0, 1000),
            (4000, 1000),
            (4000, 1000),
            (9000, 1000),
        ];
        for (seq, (send_ns, after)) in sends.iter().enumerate() {
            let d = wire::build(100, 7, seq as u64, *send_ns, false);
            t.on_datagram(
                &d,
                send_ns + after + if *send_ns == 4000 { 4000 } else { 0 },
            );
        }
        for _ in 0..2 {
            // stats() folds in the run not yet in the histogram, and can be asked again.
            let r = t.stats(Some(&[6]), &ctx(), false).unwrap();
            let l = r.latency_us;
            assert_eq!(
                (l.count, l.min.round(), l.max.round()),
                (6, 1.0, 5.0),
                "{l:?}"
            );
            assert_eq!(t.latency.len() + t.pending_latency.1, 6);
        }
    }

    #[test]
    fn drop_totals_only_move_forward() {
        let mut t = state(1);
        t.drops_start = u32::MAX - 1;
        t.on_drops(5); // wrapped: 7 drops since the start
        t.on_drops(u32::MAX - 3); // a stray queued before the test
        t.on_drops(3); // older than 5
        assert_eq!(t.drops_seen, Some(5));
        let k = t.kernel(&ctx(), 100);
        // No socket to read at the end (fd -1): the control messages' count stands.
        assert_eq!(
            (k.socket_drops.rxq_ovfl, k.socket_drops.total),
            (Some(7), None)
        );
        assert_eq!((k.loss.socket_buffer, k.loss.lost), (7, 100));
    }

    #[test]
    fn lane_windows() {
        assert_eq!(lane_window(1 << 24, 1), 1 << 24);
        assert_eq!(lane_window(1 << 24, 4), 1 << 22);
        assert_eq!(lane_window(64, 128), 64);
        assert_eq!(lane_window(1000, 0), 1000);
    }

    proptest! {
        /// Datagrams of N streams in any interleaving: each stream's accounting is what it
        /// would be alone, and the sum holds `unique + lost == sent`.
        #[test]
        fn interleaved_streams_account_exactly(
            arrivals in prop::collection::vec((0u16..4, 0u64..200), 0..600),
            sent in prop::collection::vec(200u64..260, 4),
        ) {
            let mut t = state(4);
            let mut alone: Vec<Tracker> = (0..4).map(|_| Tracker::new(lane_window(1 << 10, 4))).collect();
            for &(s, q) in &arrivals {
                t.on_datagram(&datagram(s, q), 2);
                alone[s as usize].record(q);
            }
            let r = t.stats(Some(&sent), &ctx(), false).unwrap();
            for (i, st) in r.streams.iter().enumerate() {
                prop_assert_eq!(st.accounting, alone[i].finish(sent[i]).unwrap());
            }
            let a = r.accounting;
            prop_assert_eq!(a.unique + a.lost, a.sent);
            prop_assert_eq!(a.sent, sent.iter().sum::<u64>());
        }
    }
}
