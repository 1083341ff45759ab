//! The receiver: a TCP control listener and a UDP socket on the same port, serving tests one
//! after another.
//!
//! Two threads. The control thread (the caller's) accepts a control connection, reads the
//! Hello, starts the test, forwards interval figures to the sender, and on Done asks for the
//! final figures and sends the Report. The UDP thread (pinned when asked) owns the socket and
//! the per-test state, drains the socket with `recvmmsg` batches (GRO buffers split by their
//! segment size, so accounting stays per datagram) and feeds every datagram to the tracker.
//! They talk over channels; the UDP thread checks for commands once per batch.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc::{self, Receiver as Rx, RecvTimeoutError, Sender as Tx, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::control::{Conn, Msg, Plan, PROTOCOL_VERSION};
use super::report::{IntervalRow, ReceiverStats, SenderStats, UdpReport, SCHEMA};
use super::tracker::{Class, Tracker, DEFAULT_WINDOW};
use super::wire::{self, Header, Invalid, HEADER_LEN, MAX_DATAGRAM};
use crate::stats::hist::Hist;
use crate::sys::mmsg::RecvBatch;
use crate::sys::sockopt::{self, BufMethod};
use crate::sys::{affinity, realtime_ns, signal};

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct RecvOptions {
    pub listen: SocketAddr,
    pub interval: Duration,
    pub cpu: Option<usize>,
    /// Busy-poll the socket instead of sleeping in `recvmmsg`.
    pub spin: bool,
    /// Receive buffer to ask for, in bytes.
    pub rcvbuf: usize,
    pub gro: bool,
    /// How long to wait for stragglers after Done once datagrams stop arriving.
    pub drain: Duration,
    pub window: u64,
    /// Messages per `recvmmsg`.
    pub batch: usize,
}

impl Default for RecvOptions {
    fn default() -> Self {
        RecvOptions {
            listen: "127.0.0.1:5300".parse().expect("valid address"),
            interval: Duration::from_secs(1),
            cpu: None,
            spin: false,
            rcvbuf: 128 << 20,
            gro: true,
            drain: Duration::from_millis(250),
            window: DEFAULT_WINDOW,
            batch: 64,
        }
    }
}

/// What the receiver tells its caller as tests come and go.
#[derive(Debug)]
pub enum Event {
    Started {
        peer: SocketAddr,
        test_id: u64,
        len: u32,
    },
    Interval(IntervalRow),
    Finished(Box<UdpReport>),
    /// A test that could not run or was cut short (the report, if any, came as Finished).
    Failed(String),
}

/// A bound receiver, ready to serve.
pub struct Receiver {
    udp: UdpSocket,
    listener: TcpListener,
    opts: RecvOptions,
    rcvbuf: usize,
    rcvbuf_method: BufMethod,
    gro: bool,
}

/// This host's name (for telling whether one-way latency compares a clock with itself).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr)?;
        let tcp = TcpListener::bind(addr)?;
        return Ok((udp, tcp));
    }
    // Port 0: find a port free for both UDP and TCP.
    let mut last = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind(addr)?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

impl Receiver {
    /// Binds the UDP socket and the control listener on the same address and sizes the
    /// receive buffer.
    pub fn bind(opts: RecvOptions) -> Result<Receiver> {
        let (udp, listener) = bind_pair(opts.listen).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                anyhow::anyhow!("cannot listen on {}: address already in use", opts.listen)
            } else {
                anyhow::anyhow!("cannot listen on {}: {e}", opts.listen)
            }
        })?;
        let (rcvbuf, rcvbuf_method) =
            sockopt::size_buffer(&udp, opts.rcvbuf, true).context("setting the receive buffer")?;
        let gro = opts.gro && sockopt::set_udp_gro(&udp, true).is_ok();
        listener.set_nonblocking(true)?;
        Ok(Receiver {
            udp,
            listener,
            opts,
            rcvbuf,
            rcvbuf_method,
            gro,
        })
    }

    /// The address tests are received on (UDP and TCP control share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves tests until Ctrl-C (or after one test with `once`). Each test's outcome goes to
    /// `on_event`. Returns an error only if the receiver itself fails; with `once`, a test
    /// that could not run is an error too.
    pub fn serve(self, once: bool, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (out_tx, out_rx) = mpsc::channel();
        let udp = self.udp.try_clone()?;
        let ctx = UdpCtx {
            spin: self.opts.spin,
            batch: self.opts.batch.max(1),
            cpu: self.opts.cpu,
            rcvbuf: self.rcvbuf as u64,
            rcvbuf_method: self.rcvbuf_method,
            gro: self.gro,
            drain: self.opts.drain,
            window: self.opts.window,
            interval: self.opts.interval,
        };
        let worker = thread::Builder::new()
            .name("netcore-recv".into())
            .spawn(move || udp_thread(udp, ctx, cmd_rx, out_tx))?;
        let mut result = Ok(());
        loop {
            if signal::stop_requested() {
                break;
            }
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    on_event(Event::Failed(format!("accept failed: {e}")));
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let outcome = self.run_test(stream, peer, &cmd_tx, &out_rx, on_event);
            if let Err(e) = &outcome {
                on_event(Event::Failed(format!("test from {peer}: {e:#}")));
            }
            if once {
                result = outcome;
                break;
            }
        }
        let _ = cmd_tx.send(Cmd::Quit);
        let _ = worker.join();
        result
    }

    fn run_test(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        cmd_tx: &Tx<Cmd>,
        out_rx: &Rx<Out>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<()> {
        stream.set_nonblocking(false)?;
        let mut c = Conn::new(stream)?;
        let hello = c.expect("Hello", Duration::from_secs(5))?;
        let Msg::Hello {
            version,
            test_id,
            len,
            plan,
            streams,
            verify,
            host,
        } = hello
        else {
            let _ = c.send(&Msg::Error {
                message: "expected Hello".into(),
            });
            bail!("expected Hello, got {hello:?}");
        };
        let refuse = |c: &mut Conn, why: String| -> Result<()> {
            let _ = c.send(&Msg::Error {
                message: why.clone(),
            });
            bail!(why)
        };
        if version != PROTOCOL_VERSION {
            return refuse(
                &mut c,
                format!("protocol version {version} not supported (this receiver speaks {PROTOCOL_VERSION})"),
            );
        }
        if !(HEADER_LEN..=MAX_DATAGRAM).contains(&(len as usize)) {
            return refuse(&mut c, format!("datagram length {len} out of range"));
        }
        if streams != 1 {
            return refuse(
                &mut c,
                format!("{streams} streams requested; one is supported"),
            );
        }
        let same_host = host == host_name() || peer.ip().is_loopback();
        // Drop anything a previous test's result left behind.
        while out_rx.try_recv().is_ok() {}
        cmd_tx.send(Cmd::Start(TestParams { test_id, same_host }))?;
        // Ready only once the UDP thread has the test: no early datagram is taken for a stray.
        match out_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Out::Started) => {}
            _ => bail!("receive thread did not start the test"),
        }
        c.send(&Msg::Ready {
            rcvbuf: self.rcvbuf as u64,
            gro: self.gro,
        })?;
        on_event(Event::Started { peer, test_id, len });

        let started = Instant::now();
        let silence_limit = match plan {
            Plan::TimeNs(ns) => Duration::from_nanos(ns) + Duration::from_secs(30),
            Plan::Count(_) => Duration::from_secs(30),
        };
        let mut last_progress = (Instant::now(), 0u64);
        let (mut prev_t, mut prev_bytes) = (0.0f64, 0u64);
        let mut done: Option<(u64, u64, u64, BTreeMap<String, u64>)> = None;
        let mut finish_asked = false;
        let mut failure: Option<String> = None;
        let mut intervals = Vec::new();
        loop {
            // Results and interval figures from the UDP thread.
            let out = if done.is_some() || failure.is_some() {
                match out_rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(o) => Some(o),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => bail!("receive thread ended"),
                }
            } else {
                match out_rx.try_recv() {
                    Ok(o) => Some(o),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => bail!("receive thread ended"),
                }
            };
            match out {
                Some(Out::Interval {
                    t,
                    datagrams,
                    bytes,
                    lost_so_far,
                }) => {
                    let row = IntervalRow {
                        t,
                        sent: 0,
                        sent_bps: 0.0,
                        received: datagrams,
                        received_bps: bytes.saturating_sub(prev_bytes) as f64 * 8.0
                            / (t - prev_t).max(1e-9),
                        lost_so_far,
                    };
                    intervals.push(row);
                    (prev_t, prev_bytes) = (t, bytes);
                    if datagrams > last_progress.1 {
                        last_progress = (Instant::now(), datagrams);
                    }
                    if failure.is_none() {
                        let _ = c.send(&Msg::Interval {
                            t,
                            datagrams,
                            bytes,
                            lost_so_far,
                        });
                    }
                    on_event(Event::Interval(row));
                }
                Some(Out::Finished(stats)) => {
                    let (sent, sbytes, elapsed_ns, errors) = done.clone().unwrap_or_else(|| {
                        let s = stats.accounting.sent;
                        (s, 0, 0, BTreeMap::new())
                    });
                    let secs = elapsed_ns as f64 / 1e9;
                    let report = UdpReport {
                        schema: SCHEMA.into(),
                        role: "receiver".into(),
                        test_id: format!("{test_id:016x}"),
                        len,
                        verify,
                        target: self.local_addr().to_string(),
                        sender: SenderStats {
                            sent,
                            bytes: sbytes,
                            elapsed_s: secs,
                            rate_bps: if secs > 0.0 {
                                sbytes as f64 * 8.0 / secs
                            } else {
                                0.0
                            },
                            pps: if secs > 0.0 { sent as f64 / secs } else { 0.0 },
                            errors,
                            ..Default::default()
                        },
                        receiver: (*stats).clone(),
                        intervals,
                    };
                    if failure.is_none() {
                        c.send(&Msg::Report { receiver: stats })?;
                    }
                    on_event(Event::Finished(Box::new(report)));
                    return match failure {
                        Some(f) => bail!(f),
                        None => Ok(()),
                    };
                }
                Some(Out::Started) => {}
                Some(Out::Failed(why)) => {
                    let _ = c.send(&Msg::Error {
                        message: why.clone(),
                    });
                    bail!(why);
                }
                None => {}
            }
            if finish_asked {
                continue;
            }
            // Another sender knocking while this test runs is told so, not left waiting.
            if let Ok((mut other, _)) = self.listener.accept() {
                let _ = std::io::Write::write_all(
                    &mut other,
                    &super::control::encode(&Msg::Error {
                        message: "receiver is busy with another test".into(),
                    }),
                );
            }
            let interrupted = signal::stop_requested();
            let silent =
                last_progress.0.elapsed() > silence_limit && started.elapsed() > silence_limit;
            if interrupted || silent {
                failure = Some(if interrupted {
                    "interrupted".into()
                } else {
                    "the sender went silent (no datagrams and no Done)".into()
                });
                cmd_tx.send(Cmd::Finish { sent: None })?;
                finish_asked = true;
                continue;
            }
            match c.recv_until(Instant::now() + Duration::from_millis(20)) {
                Ok(Some(Msg::Done {
                    sent,
                    bytes,
                    elapsed_ns,
                    errors,
                })) => {
                    done = Some((sent, bytes, elapsed_ns, errors));
                    cmd_tx.send(Cmd::Finish { sent: Some(sent) })?;
                    finish_asked = true;
                }
                Ok(Some(other)) => {
                    failure = Some(format!("unexpected control message {other:?}"));
                    cmd_tx.send(Cmd::Finish { sent: None })?;
                    finish_asked = true;
                }
                Ok(None) => {}
                Err(e) => {
                    failure = Some(format!("control channel lost before Done: {e:#}"));
                    cmd_tx.send(Cmd::Finish { sent: None })?;
                    finish_asked = true;
                }
            }
        }
    }
}

struct TestParams {
    test_id: u64,
    same_host: bool,
}

enum Cmd {
    Start(TestParams),
    /// Finish the test: with the sender's count (drain first), or None (now, interrupted).
    Finish {
        sent: Option<u64>,
    },
    Quit,
}

enum Out {
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

struct UdpCtx {
    spin: bool,
    batch: usize,
    cpu: Option<usize>,
    rcvbuf: u64,
    rcvbuf_method: BufMethod,
    gro: bool,
    drain: Duration,
    window: u64,
    interval: Duration,
}

/// One test's state in the UDP thread.
struct TestState {
    test_id: u64,
    same_host: bool,
    tracker: Tracker,
    bytes: u64,
    invalid: [u64; Invalid::ALL.len()],
    jitter_ns: f64,
    prev_transit: Option<i64>,
    prev_send_ns: u64,
    latency: Hist,
    extent: Hist,
    start: Instant,
    first: Option<Instant>,
    last: Instant,
    coalesced: u64,
    recv_calls: u64,
    next_tick: Instant,
    /// Set by Finish: (sender's count if known, when asked).
    finishing: Option<(Option<u64>, Instant)>,
}

impl TestState {
    fn new(p: TestParams, window: u64, interval: Duration) -> TestState {
        let now = Instant::now();
        TestState {
            test_id: p.test_id,
            same_host: p.same_host,
            tracker: Tracker::new(window),
            bytes: 0,
            invalid: [0; Invalid::ALL.len()],
            jitter_ns: 0.0,
            prev_transit: None,
            prev_send_ns: u64::MAX,
            latency: Hist::new(),
            extent: Hist::new(),
            start: now,
            first: None,
            last: now,
            coalesced: 0,
            recv_calls: 0,
            next_tick: now + interval,
            finishing: None,
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
        match self.tracker.record(h.seq) {
            Class::InOrder => {}
            Class::Reordered { extent } => self.extent.record(extent),
            Class::Duplicate | Class::TooLate => return,
        }
        self.bytes += d.len() as u64;
        let transit = now_ns as i64 - h.send_ns as i64;
        self.latency.record(transit.max(0) as u64);
        // Jitter (RFC 3550) over send events: datagrams of one sender batch share a send
        // time, and comparing them with each other would only dilute the estimate.
        if h.send_ns != self.prev_send_ns {
            if let Some(prev) = self.prev_transit {
                let d = (transit - prev).unsigned_abs() as f64;
                self.jitter_ns += (d - self.jitter_ns) / 16.0;
            }
            self.prev_transit = Some(transit);
            self.prev_send_ns = h.send_ns;
        }
    }

    fn stats(
        &self,
        sent: Option<u64>,
        ctx: &UdpCtx,
        interrupted: bool,
    ) -> Result<ReceiverStats, String> {
        let counts = self.tracker.counts();
        let sent = sent.unwrap_or_else(|| self.tracker.highest().map_or(0, |h| h + 1));
        let accounting = self.tracker.finish(sent).map_err(|e| e.to_string())?;
        let duration_s = match self.first {
            Some(f) => (self.last - f).as_secs_f64(),
            None => 0.0,
        };
        let mut invalid = BTreeMap::new();
        for why in Invalid::ALL {
            let n = self.invalid[why as usize];
            if n > 0 {
                invalid.insert(why.name().to_string(), n);
            }
        }
        debug_assert_eq!(counts.in_order + counts.reordered, accounting.unique);
        Ok(ReceiverStats {
            lost_pct: if sent > 0 {
                accounting.lost as f64 * 100.0 / sent as f64
            } else {
                0.0
            },
            accounting,
            bytes: self.bytes,
            duration_s,
            goodput_bps: if duration_s > 0.0 {
                self.bytes as f64 * 8.0 / duration_s
            } else {
                0.0
            },
            pps: if duration_s > 0.0 {
                accounting.unique as f64 / duration_s
            } else {
                0.0
            },
            invalid,
            jitter_us: self.jitter_ns / 1e3,
            latency_us: self.latency.summary(1e3),
            latency_clock: if self.same_host {
                "same host".into()
            } else {
                "two hosts, clocks assumed in sync".into()
            },
            reorder_extent: self.extent.summary(1.0),
            window: self.tracker.window(),
            rcvbuf: ctx.rcvbuf,
            rcvbuf_method: ctx.rcvbuf_method,
            gro: ctx.gro,
            coalesced_buffers: self.coalesced,
            recv_calls: self.recv_calls,
            cpu: ctx.cpu,
            interrupted,
        })
    }
}

fn udp_thread(sock: UdpSocket, ctx: UdpCtx, cmds: Rx<Cmd>, out: Tx<Out>) {
    if let Some(cpu) = ctx.cpu {
        affinity::pin_current(cpu);
    }
    if ctx.spin {
        let _ = sock.set_nonblocking(true);
    } else {
        let _ = sock.set_read_timeout(Some(Duration::from_millis(10)));
    }
    let mut batch = RecvBatch::new(ctx.batch, 1 << 16);
    let mut test: Option<TestState> = None;
    loop {
        loop {
            match cmds.try_recv() {
                Ok(Cmd::Start(p)) => {
                    test = Some(TestState::new(p, ctx.window, ctx.interval));
                    let _ = out.send(Out::Started);
                }
                Ok(Cmd::Finish { sent }) => {
                    if let Some(t) = test.as_mut() {
                        t.finishing = Some((sent, Instant::now()));
                    }
                }
                Ok(Cmd::Quit) | Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => break,
            }
        }
        // An error here is a timeout, EINTR, or an ICMP error queued on the socket.
        let n = batch.recv(&sock, !ctx.spin).unwrap_or_default();
        let Some(t) = test.as_mut() else {
            continue; // between tests: strays are read and dropped
        };
        let now = Instant::now();
        if n > 0 {
            let now_ns = realtime_ns();
            t.recv_calls += 1;
            for i in 0..n {
                let (m, truncated) = batch.message(i);
                if truncated {
                    t.invalid(Invalid::Truncated);
                    continue;
                }
                match batch.gro_segment(i) {
                    Some(seg) if seg < m.len() => {
                        t.coalesced += 1;
                        for d in m.chunks(seg) {
                            t.on_datagram(d, now_ns);
                        }
                    }
                    _ => t.on_datagram(m, now_ns),
                }
            }
            t.first.get_or_insert(now);
            t.last = now;
        }
        if now >= t.next_tick {
            t.next_tick += ctx.interval;
            if t.next_tick < now {
                t.next_tick = now + ctx.interval;
            }
            let _ = out.send(Out::Interval {
                t: (now - t.start).as_secs_f64(),
                datagrams: t.tracker.unique(),
                bytes: t.bytes,
                lost_so_far: t.tracker.lost_so_far(),
            });
        }
        if let Some((sent, asked)) = t.finishing {
            let all_in = sent.is_some_and(|s| t.tracker.unique() >= s);
            let quiet = now.duration_since(t.last.max(asked)) >= ctx.drain;
            let cap = now.duration_since(asked) >= ctx.drain * 8;
            if sent.is_none() || all_in || quiet || cap {
                let msg = match t.stats(sent, &ctx, sent.is_none()) {
                    Ok(s) => Out::Finished(Box::new(s)),
                    Err(e) => Out::Failed(e),
                };
                let _ = out.send(msg);
                test = None;
            }
        }
    }
}
