//! The sender: control handshake, the blasting loop, and the final agreement.
//!
//! The blasting loop runs on its own (pinned) thread. It owns one pre-built batch of buffers
//! (`SendBatch`, behind [`Transport`]): every datagram's header is written once, and per send only the sequence
//! numbers and the send time are stamped in. With GSO each message of the batch is a buffer of
//! up to 64 KiB holding whole datagrams back to back, each with its own header; the kernel cuts
//! it into datagrams (`UDP_SEGMENT`). A datagram counts as sent only once the kernel took it:
//! on `ENOBUFS`/`EAGAIN` the same datagrams are offered again, so sequence numbers stay dense
//! (0..sent) and the receiver's `lost = sent - unique` is exact.
//!
//! Two backends carry the batch ([`Backend`]): `sendmmsg` (mio) and io_uring, where each
//! message is one `SEND` operation, the batch's operations linked (`IOSQE_IO_LINK`) so they
//! run in order and a refusal cancels the rest, and submitted with one `io_uring_enter`
//! (`super::uring`). Both have `sendmmsg`'s contract (the accepted part of a batch is a
//! prefix), so the loop, the pacing and the sequence numbering are the same code.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::{IntervalRow, SenderStats, UdpReport, ZeroCopyStats, SCHEMA};
use super::transport::{MmsgTransport, Transport};
use super::wire::{self, Header, FLAG_VERIFY, HEADER_LEN, MAX_DATAGRAM};
use crate::flow::backend::{self, Backend};
use crate::flow::control::{ClientId, Conn, Msg, Plan, Reverse, PROTOCOL_VERSION};
use crate::flow::cpu::{CpuUsage, ThreadMeter};
use crate::flow::host::host_name;
use crate::flow::kernel::UdpCounters;
use crate::flow::pacer::Pacer;
use crate::flow::payload::ReceiverStats;
use crate::flow::streams::{cpu_for, split_count, split_rate};
use crate::sys::{affinity, realtime_ns, signal, sockopt};
use crate::units::Rate;

/// Whether to hand the kernel multi-datagram buffers (UDP GSO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GsoMode {
    /// Use GSO where the kernel has it.
    Auto,
    /// Require GSO (fail if the kernel refuses it).
    On,
    Off,
}

/// The longest the blasting thread sleeps at once: however slow the pacing, it sees a stop
/// request or the end of `--time` within this.
const MAX_NAP: Duration = Duration::from_millis(50);
/// The receiver has this long after Done to send its Report (one fixed deadline: Interval
/// messages do not extend it).
pub(crate) const REPORT_WAIT: Duration = Duration::from_secs(15);
/// Interval messages closer together than this (in the sender's time) are folded into the
/// next row: a receiver that floods Intervals cannot flood the output.
pub(crate) const MIN_ROW_GAP_S: f64 = 0.01;

/// Sender settings.
#[derive(Debug, Clone)]
pub struct BlastOptions {
    /// Where datagrams go.
    pub target: SocketAddr,
    /// The receiver's control port (the same address by default).
    pub control: SocketAddr,
    pub len: usize,
    /// Messages per `sendmmsg` (with GSO, each message is a multi-datagram buffer).
    pub batch: usize,
    pub gso: GsoMode,
    pub rate: Option<Rate>,
    pub plan: Plan,
    pub verify: bool,
    /// CPUs for the blasting threads, one per stream in turn (empty: unpinned).
    pub cpus: Vec<usize>,
    /// Data sockets, each on its own blasting thread (`-P`); the plan and the rate are split
    /// over them.
    pub streams: u16,
    pub sndbuf: usize,
    /// mio (`sendmmsg`), uring (linked `SEND` batches), or auto (see
    /// [`backend::resolve_send`]).
    pub backend: Backend,
    /// Zero-copy sends (`SEND_ZC`; needs the uring backend).
    pub zerocopy: bool,
    /// The source address and shared key (`--bind`, `--auth-key-file`).
    pub client: ClientId,
    /// The test's id, chosen up front so that what is printed before the test (a
    /// `--json-stream` start event) can name it; None: a fresh one for each test opened
    /// (each `--find-rate` trial).
    pub test_id: Option<u64>,
    /// Sending stops this long after it started, whatever the plan, and the peer is told
    /// why instead of getting Done: a receiver's `--max-duration` on a test it sends (`-R`).
    pub cut_after: Option<Duration>,
    /// The interval the receiver is asked to sample the test at (`--to` with `--interval`);
    /// None: the receiver's own.
    pub receiver_interval: Option<Duration>,
    /// What interrupts sending (the report then marked interrupted). None: a termination
    /// signal, on the side that starts the test (`blast`). Some: only this flag, the
    /// receiver's own for a `-R` test it sends, set when it interrupts the test: on `recv` a
    /// first signal drains (running tests go on to their planned end), so the signal alone
    /// must not cut the sending.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl BlastOptions {
    /// Whether sending is to be interrupted now (see [`BlastOptions::interrupt`]).
    fn interrupted(&self) -> bool {
        match &self.interrupt {
            None => signal::stop_requested(),
            Some(flag) => flag.load(Ordering::Relaxed),
        }
    }

    /// Whether a stop came after this call: what gives up the wait for the receiver's Report
    /// after Done. `blast`: a new signal (a second Ctrl-C, or the first once sending had
    /// ended); a receiver sending: its interrupt flag raised since.
    fn stop_since(&self) -> impl Fn() -> bool + '_ {
        let (signals, interrupted) = (signal::signal_count(), self.interrupted());
        move || match &self.interrupt {
            None => signal::signal_count() != signals,
            Some(_) => !interrupted && self.interrupted(),
        }
    }
}

/// Validates the datagram length.
pub(crate) fn check_len(len: usize) -> Result<()> {
    if len < HEADER_LEN {
        bail!("--len {len} is too small: a datagram needs at least {HEADER_LEN} bytes for the netcore header");
    }
    if len > MAX_DATAGRAM {
        bail!("--len {len} is too large: the largest UDP payload is {MAX_DATAGRAM} bytes");
    }
    Ok(())
}

/// Counters the blasting thread publishes for interval lines.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    bytes: AtomicU64,
}

struct BlastResult {
    sent: u64,
    bytes: u64,
    elapsed: Duration,
    calls: u64,
    errors: BTreeMap<String, u64>,
    gso_segments: u32,
    sndbuf: u64,
    zerocopy: Option<ZeroCopyStats>,
    /// The blasting thread's CPU over the test.
    cpu: CpuUsage,
    /// A signal (or the receiver's interrupt) stopped sending before the plan was done.
    interrupted: bool,
    /// `cut_after` stopped sending before the plan was done.
    cut: bool,
}

/// Datagrams per wake-up when paced at `pps`: about a millisecond's worth, at least one and at
/// most two GSO messages (`segs` datagrams each). At low rates the pacer then waits for one
/// datagram, not for a full GSO buffer: 1 Mbit/s goes out as ~85 single datagrams a second,
/// not as one burst of 88 once a second.
pub(crate) fn paced_chunk(pps: f64, segs: usize) -> u64 {
    ((pps / 1000.0).ceil() as u64).clamp(1, segs as u64 * 2)
}

/// The pacer's burst: one call's worth at high rates (a whole batch goes in one call), and
/// otherwise two wake-ups' worth or 10 ms of sending, so a late wake-up catches up without a
/// low-rate test sending a burst.
fn paced_burst(pps: f64, segs: usize, per_call: u64) -> u64 {
    let chunk = paced_chunk(pps, segs);
    if chunk >= segs as u64 * 2 {
        per_call.max((pps / 1000.0) as u64)
    } else {
        (chunk * 2).max((pps / 100.0) as u64)
    }
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOBUFS) => "ENOBUFS".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::EINTR) => "EINTR".into(),
        Some(libc::ENOMEM) => "ENOMEM".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

/// One blasting thread's stream: its number in the headers and its share of the plan.
#[derive(Debug, Clone, Copy)]
struct Lane {
    stream: u16,
    plan: Plan,
    rate: Option<Rate>,
}

/// Stream `i` of `n`: its share of the plan (a count split exactly, a time for each) and of
/// the rate.
fn lane(opts: &BlastOptions, i: usize) -> Lane {
    let n = opts.streams.max(1) as usize;
    Lane {
        stream: i as u16,
        plan: match opts.plan {
            Plan::Count(c) => Plan::Count(split_count(c, i, n)),
            p @ Plan::TimeNs(_) => p,
        },
        rate: opts.rate.map(|r| split_rate(r, n)),
    }
}

/// The streams' results as one: counts and CPU added, the longest time.
fn combine(parts: Vec<BlastResult>) -> BlastResult {
    let mut all = BlastResult {
        sent: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        calls: 0,
        errors: BTreeMap::new(),
        gso_segments: parts.iter().map(|p| p.gso_segments).min().unwrap_or(1),
        sndbuf: parts.first().map_or(0, |p| p.sndbuf),
        zerocopy: None,
        cpu: CpuUsage::default(),
        interrupted: false,
        cut: false,
    };
    for p in parts {
        all.sent += p.sent;
        all.bytes += p.bytes;
        all.elapsed = all.elapsed.max(p.elapsed);
        all.calls += p.calls;
        for (k, v) in p.errors {
            *all.errors.entry(k).or_default() += v;
        }
        if let Some(z) = p.zerocopy {
            let a = all.zerocopy.get_or_insert_with(ZeroCopyStats::default);
            a.notifications += z.notifications;
            a.copied += z.copied;
        }
        all.cpu.add(&p.cpu);
        all.interrupted |= p.interrupted;
        all.cut |= p.cut;
    }
    all.cpu = all.cpu.finish(all.bytes);
    all
}

/// Lays out `segs` datagrams of `len` bytes per message slot, each with a complete header.
fn build_batch(b: &mut dyn Transport, opts: &BlastOptions, lane: Lane, test_id: u64, segs: usize) {
    b.rebuild(opts.batch, segs * opts.len);
    let hdr = Header {
        flags: if opts.verify { FLAG_VERIFY } else { 0 },
        stream: lane.stream,
        test_id,
        seq: 0,
        send_ns: 0,
        payload_len: (opts.len - HEADER_LEN) as u32,
        checksum: 0,
    };
    for i in 0..b.capacity() {
        let slot = b.slot_mut(i);
        for d in slot.chunks_exact_mut(opts.len) {
            hdr.encode(d);
            wire::fill_pattern(&mut d[HEADER_LEN..], test_id);
        }
    }
}

/// Runs the blasting loop on the resolved backend.
fn blast(
    sock: &UdpSocket,
    opts: &BlastOptions,
    lane: Lane,
    test_id: u64,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<BlastResult> {
    let mut transport: Box<dyn Transport + '_> = match opts.backend {
        #[cfg(feature = "uring")]
        Backend::Uring => Box::new(super::uring::RingTransport::new(
            sock,
            opts.batch,
            opts.zerocopy,
        )?),
        _ => Box::new(MmsgTransport::new(sock)),
    };
    blast_loop(
        transport.as_mut(),
        sock,
        opts,
        lane,
        test_id,
        progress,
        stop,
    )
}

/// The blasting loop. Returns when the plan is done or `stop` is set.
fn blast_loop(
    batch: &mut dyn Transport,
    sock: &UdpSocket,
    opts: &BlastOptions,
    lane: Lane,
    test_id: u64,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<BlastResult> {
    let (sndbuf, _) = sockopt::size_buffer(sock, opts.sndbuf, false)?;
    let segs = gso_segments(sock, opts)?;
    build_batch(batch, opts, lane, test_id, segs);
    let mut b = Blaster::new(batch, sock, opts, lane, test_id, segs);
    let ended = b.until_done(progress, stop)?;
    Ok(BlastResult {
        sent: b.seq,
        bytes: b.seq * opts.len as u64,
        elapsed: b.start.elapsed(),
        calls: b.batch.syscalls(),
        errors: b.errors,
        gso_segments: b.segs as u32,
        sndbuf: sndbuf as u64,
        zerocopy: b.batch.zerocopy(),
        cpu: CpuUsage::default(),
        interrupted: ended == Ended::Interrupted,
        cut: ended == Ended::Cut,
    })
}

/// Datagrams per message: as many as fit in one 64 KiB send, up to the kernel's limit per GSO
/// send (probed: 128 on current kernels, 64 on older ones), once the socket took
/// `UDP_SEGMENT`; 1 without GSO. The report's `gso_segments`.
fn gso_segments(sock: &UdpSocket, opts: &BlastOptions) -> Result<usize> {
    if opts.gso == GsoMode::Off {
        return Ok(1);
    }
    let max = (MAX_DATAGRAM / opts.len).min(crate::sys::gso::udp_max_segments());
    if max <= 1 {
        return Ok(1);
    }
    match sockopt::set_udp_segment(sock, opts.len as u16) {
        Ok(()) => Ok(max),
        Err(e) if opts.gso == GsoMode::On => {
            bail!("--gso on: the kernel refused UDP_SEGMENT: {e}")
        }
        Err(_) => Ok(1),
    }
}

/// Why the blasting loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The plan is done, `stop` was set or `--time` is up.
    Plan,
    /// A signal, or the receiver's interrupt ([`BlastOptions::interrupt`]).
    Interrupted,
    /// `cut_after`.
    Cut,
}

/// The blasting loop's state: the batch and its layout, the plan's limits, the pacer and
/// what was sent so far.
struct Blaster<'a> {
    batch: &'a mut dyn Transport,
    sock: &'a UdpSocket,
    opts: &'a BlastOptions,
    lane: Lane,
    test_id: u64,
    /// Datagrams per message (GSO).
    segs: usize,
    /// Datagrams to send (`u64::MAX` for a time plan).
    limit: u64,
    deadline: Option<Instant>,
    pps: Option<f64>,
    pacer: Option<Pacer>,
    errors: BTreeMap<String, u64>,
    /// Datagrams the kernel took: the next sequence number.
    seq: u64,
    first_send: bool,
    stalled_since: Option<Instant>,
    start: Instant,
    cut_at: Option<Instant>,
}

impl<'a> Blaster<'a> {
    fn new(
        batch: &'a mut dyn Transport,
        sock: &'a UdpSocket,
        opts: &'a BlastOptions,
        lane: Lane,
        test_id: u64,
        segs: usize,
    ) -> Blaster<'a> {
        let (limit, deadline) = match lane.plan {
            Plan::Count(n) => (n, None),
            Plan::TimeNs(ns) => (u64::MAX, Some(Instant::now() + Duration::from_nanos(ns))),
        };
        // The burst allows one call's worth, or 1 ms of sending, whichever is more: enough to
        // catch up after a late wake-up without flooding after a long stall.
        let pps = lane.rate.map(|r| r.packets_per_sec(opts.len));
        let pacer = pps.map(|pps| {
            Pacer::new(
                pps,
                paced_burst(pps, segs, (opts.batch * segs) as u64),
                realtime_ns(),
            )
        });
        let start = Instant::now();
        Blaster {
            batch,
            sock,
            opts,
            lane,
            test_id,
            segs,
            limit,
            deadline,
            pps,
            pacer,
            errors: BTreeMap::new(),
            seq: 0,
            first_send: true,
            stalled_since: None,
            start,
            cut_at: opts.cut_after.map(|d| start + d),
        }
    }

    /// Sends batch after batch (paced) until the plan is done or something ends it.
    fn until_done(&mut self, progress: &Progress, stop: &AtomicBool) -> Result<Ended> {
        while self.seq < self.limit {
            if let Some(ended) = self.should_end(stop) {
                return Ok(ended);
            }
            let per_call = (self.batch.capacity() * self.segs) as u64;
            let now_ns = realtime_ns();
            let Some(k) = self.allowance(per_call.min(self.limit - self.seq), now_ns) else {
                continue;
            };
            let k = k as usize;
            let msgs = self.stamp(k, now_ns);
            let Some(done) = self.send_stamped(msgs, stop)? else {
                continue;
            };
            let accepted = (done * self.segs).min(k) as u64;
            self.seq += accepted;
            if let Some(p) = self.pacer.as_mut() {
                p.consume(accepted);
            }
            progress.sent.store(self.seq, Ordering::Relaxed);
            progress
                .bytes
                .store(self.seq * self.opts.len as u64, Ordering::Relaxed);
        }
        Ok(Ended::Plan)
    }

    /// An interrupt (a signal, or the receiver's flag), `stop`, the end of `--time` or
    /// `cut_after`, if one has come.
    #[inline]
    fn should_end(&self, stop: &AtomicBool) -> Option<Ended> {
        if self.opts.interrupted() {
            return Some(Ended::Interrupted);
        }
        if stop.load(Ordering::Relaxed) {
            return Some(Ended::Plan);
        }
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                return Some(Ended::Plan);
            }
        }
        if self.cut_at.is_some_and(|c| Instant::now() >= c) {
            return Some(Ended::Cut);
        }
        None
    }

    /// How many of the `k` datagrams due may go now; None after a nap when the pacer allows
    /// none yet (never one long sleep: the loop head sees stops and the deadline).
    #[inline]
    fn allowance(&mut self, k: u64, now_ns: u64) -> Option<u64> {
        let Some(p) = self.pacer.as_mut() else {
            return Some(k);
        };
        let allowed = p.allowance(now_ns, k);
        if allowed > 0 {
            return Some(allowed);
        }
        let chunk = self.pps.map_or(1, |pps| paced_chunk(pps, self.segs));
        let wait = p.wait_ns(now_ns, k.min(chunk));
        if wait > 200_000 {
            thread::sleep(Duration::from_nanos(wait - 100_000).min(MAX_NAP));
        } else {
            std::hint::spin_loop();
            thread::yield_now();
        }
        None
    }

    /// Stamps `k` datagrams from the next sequence number: message m holds datagrams
    /// m*segs .. (m+1)*segs. Returns the messages filled.
    #[inline]
    fn stamp(&mut self, k: usize, now_ns: u64) -> usize {
        let (segs, len, seq) = (self.segs, self.opts.len, self.seq);
        let msgs = k.div_ceil(segs);
        for m in 0..msgs {
            let n_in = segs.min(k - m * segs);
            let slot = self.batch.slot_mut(m);
            for (j, d) in slot.chunks_exact_mut(len).take(n_in).enumerate() {
                let s = seq + (m * segs + j) as u64;
                wire::stamp(d, s, now_ns);
                if self.opts.verify {
                    wire::fill_verified(d, s);
                }
            }
            self.batch.set_len(m, n_in * len);
        }
        msgs
    }

    /// Offers messages `0..msgs` until the kernel took them all, or a stop came while it
    /// refused them; the messages taken. None when the first send showed that the device
    /// cannot do GSO: the batch was rebuilt with one datagram per message, to be stamped again.
    #[inline]
    fn send_stamped(&mut self, msgs: usize, stop: &AtomicBool) -> Result<Option<usize>> {
        let mut done = 0;
        while done < msgs {
            match self.batch.send(done, msgs) {
                Ok(n) => {
                    done += n;
                    self.first_send = false;
                    self.stalled_since = None;
                }
                Err(e) => {
                    let code = e.raw_os_error().unwrap_or(0);
                    if self.first_send && self.segs > 1 && matches!(code, libc::EIO | libc::EINVAL)
                    {
                        self.fall_back_from_gso(e)?;
                        return Ok(None);
                    }
                    if !self.wait_out_refusal(e, stop)? {
                        break;
                    }
                }
            }
        }
        Ok(Some(done))
    }

    /// The device cannot do GSO (the first send failed): one datagram per message from now
    /// on, unless `--gso on` asked for it.
    fn fall_back_from_gso(&mut self, e: io::Error) -> Result<()> {
        if self.opts.gso == GsoMode::On {
            bail!("--gso on: the kernel cannot segment these datagrams: {e}");
        }
        sockopt::set_udp_segment(self.sock, 0).ok();
        self.segs = 1;
        build_batch(self.batch, self.opts, self.lane, self.test_id, 1);
        Ok(())
    }

    /// A send the kernel refused: a full queue (or a refusal that passes) is counted and
    /// retried (true), unless a stop came (false); 5 s without an accepted datagram, or any
    /// other error, fails the test.
    fn wait_out_refusal(&mut self, e: io::Error, stop: &AtomicBool) -> Result<bool> {
        match e.raw_os_error().unwrap_or(0) {
            libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED | libc::EINTR | libc::ENOMEM => {
                *self.errors.entry(errno_name(&e)).or_default() += 1;
                let since = *self.stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(5) {
                    bail!("the kernel accepted no datagram for 5 s (last error: {e})");
                }
                if stop.load(Ordering::Relaxed) || self.opts.interrupted() {
                    return Ok(false);
                }
                thread::yield_now();
                Ok(true)
            }
            _ => Err(e).context(match self.opts.backend {
                Backend::Uring => "io_uring SEND failed",
                _ => "sendmmsg failed",
            }),
        }
    }
}

/// Tells the peer that sending was cut at `after` (`BlastOptions::cut_after`); the error.
fn tell_cut(c: &mut Conn, after: Duration) -> anyhow::Error {
    let why = format!(
        "cut: the test reached this receiver's limit of {} s (--max-duration)",
        after.as_secs_f64()
    );
    let _ = c.send(&Msg::Error {
        message: why.clone(),
    });
    anyhow::anyhow!(why)
}

/// Interval lines as the test runs.
pub(crate) type OnInterval<'a> = &'a mut dyn FnMut(&IntervalRow);

/// Runs one test against a receiver: handshake, blast, Done, Report. Returns the sender's
/// copy of the report.
///
/// `opts.backend` may be `auto`: it is resolved here, before the receiver is contacted, and
/// `uring` where io_uring is unavailable fails here with one line naming the cause.
pub fn run(opts: &BlastOptions, on_interval: OnInterval) -> Result<UdpReport> {
    let opts = &resolve(opts)?;
    let (mut c, test_id) = open(opts, None)?;
    match expect_ready(&mut c)? {
        Msg::Ready { .. } => {}
        other => bail!("expected Ready from the receiver, got {}", other.name()),
    }
    let mut socks = Vec::new();
    for _ in 0..opts.streams.max(1) {
        let sock = UdpSocket::bind(source(opts))
            .with_context(|| format!("cannot bind to {}", source(opts)))?;
        sock.connect(opts.target)
            .with_context(|| format!("cannot send to {}", opts.target))?;
        socks.push(sock);
    }
    blast_and_finish(&mut c, opts, test_id, socks, on_interval)
}

/// Where the sender's UDP sockets bind: `--bind`'s address or the wildcard, port 0.
pub fn source(opts: &BlastOptions) -> SocketAddr {
    match opts.client.bind {
        Some(ip) => SocketAddr::new(ip, 0),
        None => unspecified(opts.target),
    }
}

/// The wildcard address of `target`'s family, port 0.
pub(crate) fn unspecified(target: SocketAddr) -> SocketAddr {
    if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    }
}

/// Checks the datagram length and resolves the backend, before the receiver is contacted.
pub(crate) fn resolve(opts: &BlastOptions) -> Result<BlastOptions> {
    check_len(opts.len)?;
    Ok(BlastOptions {
        backend: if opts.zerocopy {
            backend::resolve_zerocopy(opts.backend)?
        } else {
            backend::resolve_send(opts.backend)?
        },
        ..opts.clone()
    })
}

/// Connects to the receiver's control port and sends Hello and Setup (`reverse`: the
/// receiver is to send); returns the connection and the test id.
pub fn open(opts: &BlastOptions, reverse: Option<Reverse>) -> Result<(Conn, u64)> {
    let mut c = Conn::connect_from(opts.control, opts.client.bind)?;
    let test_id: u64 = opts.test_id.unwrap_or_else(rand::random);
    c.open_test(hello(opts, test_id), &opts.client)?;
    c.send(&Msg::Setup {
        tcp: None,
        reverse,
        echo: None,
        interval_ns: opts.receiver_interval.map(|d| d.as_nanos() as u64),
    })?;
    Ok((c, test_id))
}

/// The Hello of test `test_id` with these settings.
pub fn hello(opts: &BlastOptions, test_id: u64) -> Msg {
    Msg::Hello {
        version: PROTOCOL_VERSION,
        test_id,
        len: opts.len as u32,
        plan: opts.plan,
        streams: opts.streams.max(1),
        verify: opts.verify,
        host: host_name(),
        auth: opts.client.key.is_some(),
    }
}

/// The receiver's answer to Setup (10 s, a signal gives up).
pub(crate) fn expect_ready(c: &mut Conn) -> Result<Msg> {
    c.expect_or_stop(
        "Ready",
        Instant::now() + Duration::from_secs(10),
        &signal::stop_requested,
    )
}

/// Blasts one stream per socket in `socks` (each connected to the receiver), then Done and
/// the receiver's Report over `c`; the sender's copy of the report. The side that sends runs
/// this: `blast` forward, the receiver with `-R`.
pub(crate) fn blast_and_finish(
    c: &mut Conn,
    opts: &BlastOptions,
    test_id: u64,
    socks: Vec<UdpSocket>,
    on_interval: OnInterval,
) -> Result<UdpReport> {
    let n = socks.len();
    let udp_before = UdpCounters::read();
    let blasting = Blasting::spawn(opts, test_id, socks)?;
    // While blasting: relay the receiver's interval figures, joined with ours.
    let t0 = Instant::now();
    let mut view = ReceiverView::new(opts.len as u64);
    let ended = blasting.relay_intervals(c, &mut view, t0, on_interval);
    let parts = blasting.join()?;
    let per_stream: Vec<u64> = parts.iter().map(|p| p.sent).collect();
    let res = combine(parts);
    let sndbuf_errors = udp_before
        .zip(UdpCounters::read())
        .map(|(a, b)| b.sndbuf_errors.saturating_sub(a.sndbuf_errors));
    let pacing = pacing_line(opts, n);
    if let (true, None, Some(after)) = (res.cut, &ended, opts.cut_after) {
        return Err(tell_cut(c, after));
    }
    let mut receiver = match ended {
        Some(Err(e)) => bail!("the receiver ended the test early: {e}"),
        // The receiver ended the test itself (it was interrupted) and sent its report.
        Some(Ok(mut r)) => {
            r.interrupted = true;
            r
        }
        None => {
            c.send(&Msg::Done {
                sent: res.sent,
                bytes: res.bytes,
                elapsed_ns: res.elapsed.as_nanos() as u64,
                errors: res.errors.clone(),
                interrupted: res.interrupted,
                pacing: pacing.clone(),
                cpu: Some(res.cpu),
                streams: if n > 1 { per_stream } else { Vec::new() },
                sndbuf_errors,
            })?;
            await_report(c, &mut view, t0, res.sent, &opts.stop_since())?
        }
    };
    receiver.interrupted |= res.interrupted;
    let printed_t = view.printed_t;
    let intervals = view.finish(
        t0.elapsed().as_secs_f64(),
        res.sent,
        receiver.accounting.unique,
        receiver.accounting.lost,
    );
    if let Some(row) = intervals.last() {
        if row.t > printed_t {
            on_interval(row);
        }
    }
    let sender = sender_stats(opts, res, pacing, sndbuf_errors);
    let mut report = UdpReport {
        schema: SCHEMA.into(),
        meta: crate::stats::meta::Meta::gather(),
        role: "sender".into(),
        test_id: format!("{test_id:016x}"),
        len: opts.len as u32,
        verify: opts.verify,
        target: opts.target.to_string(),
        sender,
        receiver: *receiver,
        intervals,
    };
    report.conclude(opts.target.ip().is_loopback());
    Ok(report)
}

/// How the receiver ended a test before the sender's Done: its report (it was interrupted),
/// or why it failed.
type EarlyEnd = std::result::Result<Box<ReceiverStats>, String>;

/// A test's blasting threads, their progress counters and the flag that stops them.
struct Blasting {
    workers: Vec<thread::JoinHandle<Result<BlastResult>>>,
    progress: Vec<Arc<Progress>>,
    stop: Arc<AtomicBool>,
}

impl Blasting {
    /// A blasting thread per socket, each pinned to its CPU, each sending its lane.
    fn spawn(opts: &BlastOptions, test_id: u64, socks: Vec<UdpSocket>) -> Result<Blasting> {
        let n = socks.len();
        let stop = Arc::new(AtomicBool::new(false));
        let mut progress = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        for (i, sock) in socks.into_iter().enumerate() {
            sock.set_write_timeout(Some(Duration::from_millis(100)))?;
            let p = Arc::new(Progress::default());
            progress.push(p.clone());
            let (o, halt, ln) = (opts.clone(), stop.clone(), lane(opts, i));
            let spawned = thread::Builder::new()
                .name(format!("netcore-blast-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu_for(&o.cpus, i) {
                        affinity::pin_current(cpu);
                    }
                    let meter = ThreadMeter::start();
                    blast(&sock, &o, ln, test_id, &p, &halt).map(|r| BlastResult {
                        cpu: meter.stop(),
                        ..r
                    })
                });
            match spawned {
                Ok(w) => workers.push(w),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e).context("cannot start a blasting thread");
                }
            }
        }
        Ok(Blasting {
            workers,
            progress,
            stop,
        })
    }

    /// Datagrams the threads have sent so far.
    fn sent_so_far(&self) -> u64 {
        self.progress
            .iter()
            .map(|p| p.sent.load(Ordering::Relaxed))
            .sum()
    }

    /// Until the threads are done: the receiver's Interval figures, joined with ours, go to
    /// `on_interval`; a Report or a failure from the receiver stops the threads and is
    /// returned.
    fn relay_intervals(
        &self,
        c: &mut Conn,
        view: &mut ReceiverView,
        t0: Instant,
        on_interval: OnInterval,
    ) -> Option<EarlyEnd> {
        let mut ended: Option<EarlyEnd> = None;
        while !self.workers.iter().all(|w| w.is_finished()) {
            if ended.is_some() {
                // The blaster was told to stop; it sees that within one nap.
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            let msg = match c.recv_until(Instant::now() + Duration::from_millis(20)) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    ended = Some(Err(format!("{e:#}")));
                    self.stop.store(true, Ordering::Relaxed);
                    continue;
                }
            };
            let sent = self.sent_so_far();
            match view.on_msg(msg, t0.elapsed().as_secs_f64(), sent, false) {
                Reaction::Row(row) => on_interval(&row),
                Reaction::Ignored => {}
                Reaction::Report(r) => {
                    ended = Some(Ok(r));
                    self.stop.store(true, Ordering::Relaxed);
                }
                Reaction::Fail(e) => {
                    ended = Some(Err(e));
                    self.stop.store(true, Ordering::Relaxed);
                }
            }
        }
        ended
    }

    /// The threads' results, in stream order.
    fn join(self) -> Result<Vec<BlastResult>> {
        let mut parts = Vec::with_capacity(self.workers.len());
        for w in self.workers {
            parts.push(
                w.join()
                    .map_err(|_| anyhow::anyhow!("a blasting thread panicked"))??,
            );
        }
        Ok(parts)
    }
}

/// The pacing the report names: the token bucket's rate (and each stream's share).
fn pacing_line(opts: &BlastOptions, streams: usize) -> Option<String> {
    opts.rate.map(|r| match streams {
        1 => format!("token bucket at {r}"),
        n => format!(
            "token bucket at {r} ({n} streams, {} each)",
            lane(opts, 0).rate.expect("paced")
        ),
    })
}

/// The receiver's Report after Done: one deadline for it, whatever comes before it; a stop
/// after Done (`given_up`, [`BlastOptions::stop_since`]) gives up waiting.
fn await_report(
    c: &mut Conn,
    view: &mut ReceiverView,
    t0: Instant,
    sent: u64,
    given_up: &dyn Fn() -> bool,
) -> Result<Box<ReceiverStats>> {
    let deadline = Instant::now() + REPORT_WAIT;
    loop {
        let m = c.expect_or_stop("Report", deadline, given_up)?;
        match view.on_msg(m, t0.elapsed().as_secs_f64(), sent, true) {
            Reaction::Report(r) => return Ok(r),
            Reaction::Row(_) | Reaction::Ignored => {}
            Reaction::Fail(e) => bail!("{e}"),
        }
    }
}

/// The report's sender side from the blasting threads' combined result.
fn sender_stats(
    opts: &BlastOptions,
    res: BlastResult,
    pacing: Option<String>,
    sndbuf_errors: Option<u64>,
) -> SenderStats {
    let secs = res.elapsed.as_secs_f64().max(1e-9);
    SenderStats {
        sent: res.sent,
        bytes: res.bytes,
        elapsed_s: res.elapsed.as_secs_f64(),
        rate_bps: res.bytes as f64 * 8.0 / secs,
        pps: res.sent as f64 / secs,
        errors: res.errors,
        send_calls: Some(res.calls),
        gso_segments: Some(res.gso_segments),
        batch: Some(opts.batch),
        pacing,
        sndbuf: Some(res.sndbuf),
        cpu: opts.cpus.first().copied(),
        backend: Some(opts.backend.name().to_string()),
        zerocopy: res.zerocopy,
        cpu_usage: Some(res.cpu),
        sndbuf_errors,
    }
}

/// What the sender does with one message from the receiver.
#[derive(Debug, Clone, PartialEq)]
pub enum Reaction {
    /// An interval row to print (the receiver's figures joined with ours).
    Row(IntervalRow),
    /// Nothing to do (an Interval folded into the next row, or one after Done).
    Ignored,
    /// The receiver's report: the test is over.
    Report(Box<ReceiverStats>),
    /// The receiver refused, or said something out of place: the test fails with this.
    Fail(String),
}

/// The sender's reading of the receiver's messages during a test (pure: no socket, no clock).
/// Interval rows are built from cumulative figures, so an Interval folded away (too close to
/// the previous row) loses nothing: the next row covers it.
#[derive(Debug, Clone)]
pub struct ReceiverView {
    len: u64,
    rows: Vec<IntervalRow>,
    prev_t: f64,
    prev_sent: u64,
    prev_recv: u64,
    /// The end of the last row handed out as a `Reaction::Row`.
    pub printed_t: f64,
}

impl ReceiverView {
    pub fn new(len: u64) -> ReceiverView {
        ReceiverView {
            len,
            rows: Vec::new(),
            prev_t: 0.0,
            prev_sent: 0,
            prev_recv: 0,
            printed_t: 0.0,
        }
    }

    fn row(&self, t: f64, sent: u64, received: u64, lost_so_far: u64) -> IntervalRow {
        let bits = |n: u64| n as f64 * self.len as f64 * 8.0 / (t - self.prev_t).max(1e-9);
        IntervalRow {
            start: self.prev_t,
            t,
            sent,
            sent_bps: bits(sent.saturating_sub(self.prev_sent)),
            received,
            received_bps: bits(received.saturating_sub(self.prev_recv)),
            lost_so_far,
            interval_sent: sent.saturating_sub(self.prev_sent),
            interval_received: received.saturating_sub(self.prev_recv),
        }
    }

    fn push(&mut self, row: IntervalRow) {
        (self.prev_t, self.prev_sent, self.prev_recv) = (row.t, row.sent, row.received);
        self.rows.push(row);
    }

    /// One message at sender time `t` (seconds since Ready) with `sent` datagrams out so far;
    /// `after_done`: Done was sent, only the Report is awaited.
    pub fn on_msg(&mut self, msg: Msg, t: f64, sent: u64, after_done: bool) -> Reaction {
        match msg {
            Msg::Report { receiver } => Reaction::Report(receiver),
            Msg::Interval { .. } if after_done => Reaction::Ignored,
            Msg::Interval {
                datagrams,
                lost_so_far,
                ..
            } => {
                if t - self.prev_t < MIN_ROW_GAP_S || t.is_nan() {
                    return Reaction::Ignored;
                }
                let row = self.row(t, sent, datagrams, lost_so_far);
                self.push(row);
                self.printed_t = t;
                Reaction::Row(row)
            }
            Msg::Error { message } => Reaction::Fail(format!("peer refused: {message}")),
            other => Reaction::Fail(format!(
                "unexpected message from the receiver: {}",
                other.name()
            )),
        }
    }

    /// The rows of the test, ended at `t` (when the report came) on the totals: the last,
    /// partial interval covers what the last row did not, from its end on (every row was
    /// printed as it came, so none is redrawn: the lines never overlap and add up to the
    /// totals).
    pub fn finish(mut self, t: f64, sent: u64, unique: u64, lost: u64) -> Vec<IntervalRow> {
        if self.rows.is_empty() || (self.prev_sent == sent && self.prev_recv == unique) {
            return self.rows;
        }
        let row = self.row(t.max(self.prev_t + 1e-3), sent, unique, lost);
        self.push(row);
        self.rows
    }
}
