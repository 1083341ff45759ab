//! The receiving side's per-test core, shared by both receive backends (the `recvmmsg` loop in
//! [`super::receiver`] and the io_uring loop in `super::uring`): commands from the control
//! thread, per-datagram accounting (decode, test id, verify, tracker, latency, jitter,
//! reorder extent), interval figures and the end of a test. A backend only moves buffers from
//! the socket to [`Core::on_buffer`] and calls [`Core::end_batch`] once per receive batch.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver as Rx, Sender as Tx, TryRecvError};
use std::time::{Duration, Instant};

use super::report::{pct_of, ReceiverStats, StreamStats};
use super::tracker::{Accounting, Class, Tracker};
use super::wire::{self, Header, Invalid};
use crate::flow::backend::Backend;
use crate::flow::cpu::ThreadMeter;
use crate::stats::hist::Hist;
use crate::sys::sockopt::BufMethod;

/// What the UDP thread needs to know of a test.
#[derive(Debug)]
pub struct TestParams {
    pub test_id: u64,
    pub same_host: bool,
    /// Streams of the test (`-P`): datagrams carry 0..streams in their header.
    pub streams: u16,
}

/// The control thread's commands to the UDP thread.
#[derive(Debug)]
pub enum Cmd {
    Start(TestParams),
    /// Finish the test: with the sender's count per stream (drain first), or None (now,
    /// interrupted).
    Finish {
        sent: Option<Vec<u64>>,
    },
    Quit,
}

/// The UDP thread's news for the control thread.
#[derive(Debug)]
pub enum Out {
    Started,
    Interval {
        t: f64,
        datagrams: u64,
        bytes: u64,
        lost_so_far: u64,
    },
    Finished(Box<ReceiverStats>),
    Failed(String),
}

/// How the UDP thread waits for datagrams while a test runs (between tests it always blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxWait {
    /// Sleep in the receive call; the kernel wakes the thread when a datagram arrives. On
    /// loopback that wake-up runs on the sender's core, once per batch that finds us asleep.
    Block,
    /// Read without blocking; when the socket is empty, nap for [`POLL_NAP`]. No wake-ups are
    /// charged to the sender, the receiver's core is mostly idle, latency grows by the nap.
    Poll,
    /// Read without blocking and never sleep (burns the receiver's core).
    Spin,
}

/// The nap of [`RxWait::Poll`] when the socket is empty.
pub const POLL_NAP: Duration = Duration::from_micros(50);

pub(super) struct UdpCtx {
    pub wait: RxWait,
    pub batch: usize,
    pub cpu: Option<usize>,
    pub rcvbuf: u64,
    pub rcvbuf_method: BufMethod,
    pub gro: bool,
    pub drain: Duration,
    pub window: u64,
    pub interval: Duration,
    /// The backend that runs (mio or uring, never auto).
    pub backend: Backend,
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
pub fn lane_window(window: u64, streams: u16) -> u64 {
    (window / u64::from(streams.max(1))).max(64)
}

/// One test's state in the UDP thread.
pub(super) struct TestState {
    test_id: u64,
    same_host: bool,
    /// One per stream, indexed by the header's stream number.
    lanes: Vec<Lane>,
    invalid: [u64; Invalid::ALL.len()],
    latency: Hist,
    extent: Hist,
    start: Instant,
    first: Option<Instant>,
    last: Instant,
    coalesced: u64,
    recv_calls: u64,
    next_tick: Instant,
    /// Set by Finish: (sender's count if known, when asked).
    finishing: Option<(Option<Vec<u64>>, Instant)>,
    /// This thread's CPU since the test started.
    meter: ThreadMeter,
}

impl TestState {
    fn new(p: TestParams, window: u64, interval: Duration) -> TestState {
        let now = Instant::now();
        TestState {
            test_id: p.test_id,
            same_host: p.same_host,
            lanes: (0..p.streams.max(1))
                .map(|_| Lane::new(lane_window(window, p.streams)))
                .collect(),
            invalid: [0; Invalid::ALL.len()],
            latency: Hist::new(),
            extent: Hist::new(),
            start: now,
            first: None,
            last: now,
            coalesced: 0,
            recv_calls: 0,
            next_tick: now + interval,
            finishing: None,
            meter: ThreadMeter::start(),
        }
    }

    #[inline]
    fn invalid(&mut self, why: Invalid) {
        self.invalid[why as usize] += 1;
    }

    /// Accounts one datagram that arrived at `now_ns` (CLOCK_REALTIME).
    #[inline]
    fn on_datagram(&mut self, d: &[u8], now_ns: u64) {
        let h = match Header::decode(d) {
            Ok(h) => h,
            Err(why) => return self.invalid(why),
        };
        if h.test_id != self.test_id {
            return self.invalid(Invalid::TestId);
        }
        if let Err(why) = wire::check_payload(&h, d) {
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
        self.latency.record(transit.max(0) as u64);
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
            latency_us: self.latency.summary(1e3),
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
            latency_hist: Some(self.latency.clone()),
        })
    }
}

/// The UDP thread's state between receive batches, whatever the backend.
pub(super) struct Core {
    pub ctx: UdpCtx,
    cmds: Rx<Cmd>,
    out: Tx<Out>,
    test: Option<TestState>,
}

impl Core {
    pub fn new(ctx: UdpCtx, cmds: Rx<Cmd>, out: Tx<Out>) -> Core {
        Core {
            ctx,
            cmds,
            out,
            test: None,
        }
    }

    /// Takes the control thread's pending commands. False once the thread should end.
    pub fn commands(&mut self) -> bool {
        loop {
            match self.cmds.try_recv() {
                Ok(Cmd::Start(p)) => {
                    self.test = Some(TestState::new(p, self.ctx.window, self.ctx.interval));
                    let _ = self.out.send(Out::Started);
                }
                Ok(Cmd::Finish { sent }) => {
                    if let Some(t) = self.test.as_mut() {
                        t.finishing = Some((sent, Instant::now()));
                    }
                }
                Ok(Cmd::Quit) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// Fails the test that is about to start or running (the backend cannot receive).
    pub fn fail(&mut self, why: String) {
        self.test = None;
        let _ = self.out.send(Out::Failed(why));
    }

    /// The backend cannot run: answers every test with `why` until told to quit.
    pub fn refuse_tests(self, why: String) {
        loop {
            match self.cmds.recv() {
                Ok(Cmd::Start(_)) => {
                    let _ = self.out.send(Out::Failed(why.clone()));
                }
                Ok(Cmd::Finish { .. }) => {}
                Ok(Cmd::Quit) | Err(_) => return,
            }
        }
    }

    /// Whether a test is running (between tests, strays are read and dropped).
    pub fn in_test(&self) -> bool {
        self.test.is_some()
    }

    /// Accounts one receive buffer that arrived at `now_ns` (CLOCK_REALTIME): a buffer the
    /// kernel coalesced (GRO, `gro` = its segment size) is split into its datagrams.
    #[inline]
    pub fn on_buffer(&mut self, m: &[u8], truncated: bool, gro: Option<usize>, now_ns: u64) {
        let Some(t) = self.test.as_mut() else {
            return;
        };
        if truncated {
            return t.invalid(Invalid::Truncated);
        }
        match gro {
            Some(seg) if seg > 0 && seg < m.len() => {
                t.coalesced += 1;
                for d in m.chunks(seg) {
                    t.on_datagram(d, now_ns);
                }
            }
            _ => t.on_datagram(m, now_ns),
        }
    }

    /// Ends one receive batch (`received`: it carried data): arrival times, interval figures,
    /// and the end of the test once finishing and the drain rule says so.
    pub fn end_batch(&mut self, received: bool) {
        let Some(t) = self.test.as_mut() else {
            return;
        };
        let ctx = &self.ctx;
        let now = Instant::now();
        if received {
            t.recv_calls += 1;
            t.first.get_or_insert(now);
            t.last = now;
        }
        if now >= t.next_tick {
            t.next_tick += ctx.interval;
            if t.next_tick < now {
                t.next_tick = now + ctx.interval;
            }
            let (datagrams, bytes, lost_so_far) = t.progress();
            let _ = self.out.send(Out::Interval {
                t: (now - t.start).as_secs_f64(),
                datagrams,
                bytes,
                lost_so_far,
            });
        }
        if let Some((sent, asked)) = &t.finishing {
            let (sent, asked) = (sent.as_deref(), *asked);
            let all_in = sent.is_some_and(|s| t.all_in(s));
            let quiet = now.duration_since(t.last.max(asked)) >= ctx.drain;
            let cap = now.duration_since(asked) >= ctx.drain * 8;
            if sent.is_none() || all_in || quiet || cap {
                let msg = match t.stats(sent, ctx, sent.is_none()) {
                    Ok(s) => Out::Finished(Box::new(s)),
                    Err(e) => Out::Failed(e),
                };
                let _ = self.out.send(msg);
                self.test = None;
            }
        }
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
            interval: Duration::from_secs(1),
            backend: Backend::Mio,
        }
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
        };
        TestState::new(p, 1 << 10, Duration::from_secs(1))
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
