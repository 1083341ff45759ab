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
use crate::flow::control::{Conn, Msg, Plan, PROTOCOL_VERSION};
use crate::flow::cpu::{CpuUsage, ThreadMeter};
use crate::flow::host::host_name;
use crate::flow::pacer::Pacer;
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

/// The kernel's limit of segments per GSO send (UDP_MAX_SEGMENTS on older kernels).
const MAX_GSO_SEGMENTS: usize = 64;

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
    pub cpu: Option<usize>,
    pub sndbuf: usize,
    /// mio (`sendmmsg`), uring (linked `SEND` batches), or auto (see
    /// [`backend::resolve_send`]).
    pub backend: Backend,
    /// Zero-copy sends (`SEND_ZC`; needs the uring backend).
    pub zerocopy: bool,
}

/// Validates the datagram length.
pub fn check_len(len: usize) -> Result<()> {
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

/// Lays out `segs` datagrams of `len` bytes per message slot, each with a complete header.
fn build_batch(b: &mut dyn Transport, opts: &BlastOptions, test_id: u64, segs: usize) {
    b.rebuild(opts.batch, segs * opts.len);
    let hdr = Header {
        flags: if opts.verify { FLAG_VERIFY } else { 0 },
        stream: 0,
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
    blast_loop(transport.as_mut(), sock, opts, test_id, progress, stop)
}

/// The blasting loop. Returns when the plan is done or `stop` is set.
fn blast_loop(
    batch: &mut dyn Transport,
    sock: &UdpSocket,
    opts: &BlastOptions,
    test_id: u64,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<BlastResult> {
    let (sndbuf, _) = sockopt::size_buffer(sock, opts.sndbuf, false)?;
    let mut segs = 1;
    if opts.gso != GsoMode::Off {
        let max = (MAX_DATAGRAM / opts.len).min(MAX_GSO_SEGMENTS);
        if max > 1 {
            match sockopt::set_udp_segment(sock, opts.len as u16) {
                Ok(()) => segs = max,
                Err(e) if opts.gso == GsoMode::On => {
                    bail!("--gso on: the kernel refused UDP_SEGMENT: {e}")
                }
                Err(_) => {}
            }
        }
    }
    build_batch(batch, opts, test_id, segs);
    let len = opts.len;
    let (limit, deadline) = match opts.plan {
        Plan::Count(n) => (n, None),
        Plan::TimeNs(ns) => (u64::MAX, Some(Instant::now() + Duration::from_nanos(ns))),
    };
    // The burst allows one call's worth, or 1 ms of sending, whichever is more: enough to
    // catch up after a late wake-up without flooding after a long stall.
    let mut pacer = opts.rate.map(|r| {
        let pps = r.packets_per_sec(len);
        let burst = ((opts.batch * segs) as u64).max((pps / 1000.0) as u64);
        Pacer::new(pps, burst, realtime_ns())
    });
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut seq: u64 = 0;
    let mut first_send = true;
    let mut stalled_since: Option<Instant> = None;
    let start = Instant::now();
    'outer: while seq < limit {
        if stop.load(Ordering::Relaxed) || signal::stop_requested() {
            break;
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                break;
            }
        }
        let per_call = (batch.capacity() * segs) as u64;
        let mut k = per_call.min(limit - seq);
        let now_ns = realtime_ns();
        if let Some(p) = pacer.as_mut() {
            let allowed = p.allowance(now_ns, k);
            if allowed == 0 {
                let wait = p.wait_ns(now_ns, k.min(segs as u64 * 2));
                if wait > 200_000 {
                    thread::sleep(Duration::from_nanos(wait - 100_000));
                } else {
                    std::hint::spin_loop();
                    thread::yield_now();
                }
                continue;
            }
            k = allowed;
        }
        // Stamp k datagrams: message m holds datagrams m*segs .. (m+1)*segs.
        let k = k as usize;
        let msgs = k.div_ceil(segs);
        for m in 0..msgs {
            let n_in = segs.min(k - m * segs);
            let slot = batch.slot_mut(m);
            for (j, d) in slot.chunks_exact_mut(len).take(n_in).enumerate() {
                let s = seq + (m * segs + j) as u64;
                wire::stamp(d, s, now_ns);
                if opts.verify {
                    wire::fill_verified(d, s);
                }
            }
            batch.set_len(m, n_in * len);
        }
        let mut done = 0;
        while done < msgs {
            match batch.send(done, msgs) {
                Ok(n) => {
                    done += n;
                    first_send = false;
                    stalled_since = None;
                }
                Err(e) => {
                    let code = e.raw_os_error().unwrap_or(0);
                    if first_send && segs > 1 && matches!(code, libc::EIO | libc::EINVAL) {
                        if opts.gso == GsoMode::On {
                            bail!("--gso on: the kernel cannot segment these datagrams: {e}");
                        }
                        // The device cannot do GSO: fall back to one datagram per message.
                        sockopt::set_udp_segment(sock, 0).ok();
                        segs = 1;
                        build_batch(batch, opts, test_id, 1);
                        continue 'outer;
                    }
                    match code {
                        libc::ENOBUFS
                        | libc::EAGAIN
                        | libc::ECONNREFUSED
                        | libc::EINTR
                        | libc::ENOMEM => {
                            *errors.entry(errno_name(&e)).or_default() += 1;
                            let since = *stalled_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(5) {
                                bail!("the kernel accepted no datagram for 5 s (last error: {e})");
                            }
                            if stop.load(Ordering::Relaxed) || signal::stop_requested() {
                                break;
                            }
                            thread::yield_now();
                        }
                        _ => {
                            return Err(e).context(match opts.backend {
                                Backend::Uring => "io_uring SEND failed",
                                _ => "sendmmsg failed",
                            })
                        }
                    }
                }
            }
        }
        let accepted = (done * segs).min(k) as u64;
        seq += accepted;
        if let Some(p) = pacer.as_mut() {
            p.consume(accepted);
        }
        progress.sent.store(seq, Ordering::Relaxed);
        progress.bytes.store(seq * len as u64, Ordering::Relaxed);
    }
    Ok(BlastResult {
        sent: seq,
        bytes: seq * len as u64,
        elapsed: start.elapsed(),
        calls: batch.syscalls(),
        errors,
        gso_segments: segs as u32,
        sndbuf: sndbuf as u64,
        zerocopy: batch.zerocopy(),
        cpu: CpuUsage::default(),
    })
}

/// Interval lines as the test runs.
pub type OnInterval<'a> = &'a mut dyn FnMut(&IntervalRow);

/// Runs one test against a receiver: handshake, blast, Done, Report. Returns the sender's
/// copy of the report.
///
/// `opts.backend` may be `auto`: it is resolved here, before the receiver is contacted, and
/// `uring` where io_uring is unavailable fails here with one line naming the cause.
pub fn run(opts: &BlastOptions, on_interval: OnInterval) -> Result<UdpReport> {
    check_len(opts.len)?;
    let resolved = BlastOptions {
        backend: if opts.zerocopy {
            backend::resolve_zerocopy(opts.backend)?
        } else {
            backend::resolve_send(opts.backend)?
        },
        ..opts.clone()
    };
    let opts = &resolved;
    let mut c = Conn::connect(opts.control)?;
    let test_id: u64 = rand::random();
    c.send(&Msg::Hello {
        version: PROTOCOL_VERSION,
        test_id,
        len: opts.len as u32,
        plan: opts.plan,
        streams: 1,
        verify: opts.verify,
        host: host_name(),
    })?;
    c.send(&Msg::Setup { tcp: None })?;
    match c.expect("Ready", Duration::from_secs(10))? {
        Msg::Ready { .. } => {}
        other => bail!("expected Ready from the receiver, got {other:?}"),
    }
    let sock = UdpSocket::bind(if opts.target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    sock.connect(opts.target)
        .with_context(|| format!("cannot send to {}", opts.target))?;
    sock.set_write_timeout(Some(Duration::from_millis(100)))?;

    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (opts, progress, stop) = (opts.clone(), progress.clone(), stop.clone());
        thread::Builder::new()
            .name("netcore-blast".into())
            .spawn(move || {
                if let Some(cpu) = opts.cpu {
                    affinity::pin_current(cpu);
                }
                let meter = ThreadMeter::start();
                blast(&sock, &opts, test_id, &progress, &stop).map(|r| BlastResult {
                    cpu: meter.stop().finish(r.bytes),
                    ..r
                })
            })?
    };

    // While blasting: relay the receiver's interval figures, joined with ours.
    let t0 = Instant::now();
    let mut intervals = Vec::new();
    let (mut prev_t, mut prev_sent, mut prev_recv) = (0.0f64, 0u64, 0u64);
    let mut control_error = None;
    while !worker.is_finished() {
        match c.recv_until(Instant::now() + Duration::from_millis(20)) {
            Ok(Some(Msg::Interval {
                t: _,
                datagrams,
                bytes: _,
                lost_so_far,
            })) => {
                let t = t0.elapsed().as_secs_f64();
                let sent = progress.sent.load(Ordering::Relaxed);
                let bits = |n: u64| n as f64 * opts.len as f64 * 8.0 / (t - prev_t).max(1e-9);
                let row = IntervalRow {
                    start: prev_t,
                    t,
                    sent,
                    sent_bps: bits(sent - prev_sent),
                    received: datagrams,
                    received_bps: bits(datagrams.saturating_sub(prev_recv)),
                    lost_so_far,
                };
                (prev_t, prev_sent, prev_recv) = (t, sent, datagrams);
                intervals.push(row);
                on_interval(&row);
            }
            Ok(Some(other)) => {
                control_error = Some(format!("unexpected message from the receiver: {other:?}"));
                stop.store(true, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(e) => {
                control_error = Some(format!("{e:#}"));
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
    let res = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the blasting thread panicked"))??;
    if let Some(e) = control_error {
        bail!("the receiver ended the test early: {e}");
    }
    c.send(&Msg::Done {
        sent: res.sent,
        bytes: res.bytes,
        elapsed_ns: res.elapsed.as_nanos() as u64,
        errors: res.errors.clone(),
        cpu: Some(res.cpu),
    })?;
    let receiver = loop {
        match c.expect("Report", Duration::from_secs(15))? {
            Msg::Report { receiver } => break receiver,
            Msg::Interval { .. } => continue,
            other => bail!("expected Report from the receiver, got {other:?}"),
        }
    };
    // The last, partial interval: from the last line to the end, so that the interval rows
    // add up to the totals. It ends when the report came (the receiver counts datagrams until
    // then), not when sending ended, which may be before the last line.
    let unique = receiver.accounting.unique;
    let report_t = t0.elapsed().as_secs_f64();
    if !intervals.is_empty() && (prev_sent != res.sent || prev_recv != unique) {
        let t = report_t.max(prev_t + 1e-3);
        let bits = |n: u64| n as f64 * opts.len as f64 * 8.0 / (t - prev_t);
        let row = IntervalRow {
            start: prev_t,
            t,
            sent: res.sent,
            sent_bps: bits(res.sent - prev_sent),
            received: unique,
            received_bps: bits(unique.saturating_sub(prev_recv)),
            lost_so_far: receiver.accounting.lost,
        };
        intervals.push(row);
        on_interval(&row);
    }
    let secs = res.elapsed.as_secs_f64().max(1e-9);
    Ok(UdpReport {
        schema: SCHEMA.into(),
        role: "sender".into(),
        test_id: format!("{test_id:016x}"),
        len: opts.len as u32,
        verify: opts.verify,
        target: opts.target.to_string(),
        sender: SenderStats {
            sent: res.sent,
            bytes: res.bytes,
            elapsed_s: res.elapsed.as_secs_f64(),
            rate_bps: res.bytes as f64 * 8.0 / secs,
            pps: res.sent as f64 / secs,
            errors: res.errors,
            send_calls: Some(res.calls),
            gso_segments: Some(res.gso_segments),
            batch: Some(opts.batch),
            pacing: opts.rate.map(|r| format!("token bucket at {r}")),
            sndbuf: Some(res.sndbuf),
            cpu: opts.cpu,
            backend: Some(opts.backend.name().to_string()),
            zerocopy: res.zerocopy,
            cpu_usage: Some(res.cpu),
        },
        receiver: *receiver,
        intervals,
    })
}
