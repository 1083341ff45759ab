//! One data connection of a TCP test (driver): socket settings from the [`TcpSpec`], the
//! writing loop and the reading loop. Both ends run the same two loops; which one a
//! connection runs depends on its direction and the end.
//!
//! The reader reads into one buffer it reuses (no allocation per read) and counts every byte
//! to EOF; the writer counts every byte the kernel took, shuts its half down when the plan is
//! done and waits for the reader's close, so its final `TCP_INFO` has everything acked.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use super::report::{StreamEnd, TcpFigures, ZeroCopyCounts};
use super::spec::{Dir, TcpSpec};
use crate::flow::control::Plan;
use crate::flow::cpu::{CpuUsage, ThreadMeter};
use crate::flow::pacer::Pacer;
use crate::flow::rxwait::{RxWait, POLL_NAP};
use crate::flow::streams::split_count;
use crate::sys::{affinity, realtime_ns, signal, sockopt, tcp};

/// How long a reader waits for a byte (or EOF) before it gives up on a silent writer, beyond
/// the planned duration.
const SILENCE: Duration = Duration::from_secs(30);
/// How long a writer waits for the reader to close after its own shutdown.
const LINGER: Duration = Duration::from_secs(10);

/// The plan of one connection among `n` of one direction: a count of writes is split as
/// evenly as it goes (the first `count % n` get one more), a duration applies to each.
pub fn stream_plan(plan: Plan, index: usize, n: usize) -> Plan {
    match plan {
        Plan::Count(c) => Plan::Count(split_count(c, index, n)),
        p @ Plan::TimeNs(_) => p,
    }
}

/// Applies the spec's buffer, congestion, no-delay and pacing-cap settings to a data socket.
pub fn configure(sock: &TcpStream, spec: &TcpSpec) -> Result<()> {
    if let Some(w) = spec.window {
        sockopt::size_buffer(sock, w as usize, true).context("--window: SO_RCVBUF")?;
        sockopt::size_buffer(sock, w as usize, false).context("--window: SO_SNDBUF")?;
    }
    if let Some(cc) = &spec.congestion {
        tcp::set_congestion(sock, cc)
            .with_context(|| format!("--congestion {cc}: the kernel refused it"))?;
    }
    if spec.no_delay {
        sock.set_nodelay(true)?;
    }
    if let Some(r) = spec.fq_rate_bps {
        tcp::set_max_pacing_rate(sock, (r / 8).max(1)).context("--fq-rate: SO_MAX_PACING_RATE")?;
    }
    Ok(())
}

/// Opens a data connection to `addr` (MSS and window set before the handshake, so the SYN
/// carries them) and sends the preamble.
pub fn connect(addr: SocketAddr, spec: &TcpSpec, preamble: &[u8]) -> Result<TcpStream> {
    connect_from(addr, None, spec, preamble)
}

/// Like [`connect`], from source address `bind` when given (`blast --bind`).
pub fn connect_from(
    addr: SocketAddr,
    bind: Option<std::net::IpAddr>,
    spec: &TcpSpec,
    preamble: &[u8],
) -> Result<TcpStream> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = bind {
        s.bind(&SocketAddr::new(ip, 0).into())
            .with_context(|| format!("cannot bind to {ip} (--bind)"))?;
    }
    if let Some(mss) = spec.mss {
        tcp::set_mss(&s, mss).with_context(|| format!("--mss {mss}: TCP_MAXSEG refused"))?;
    }
    if let Some(w) = spec.window {
        sockopt::size_buffer(&s, w as usize, true)?;
    }
    s.connect_timeout(&addr.into(), Duration::from_secs(5))
        .with_context(|| format!("cannot open a data connection to {addr}"))?;
    let mut sock: TcpStream = s.into();
    configure(&sock, spec)?;
    sock.write_all(preamble)?;
    Ok(sock)
}

/// What a data connection thread shares with the control thread while it runs.
pub struct Live {
    pub id: u32,
    pub dir: Dir,
    /// Bytes moved so far.
    pub bytes: AtomicU64,
    /// A second handle on the socket, for `TCP_INFO` from the control thread.
    info: TcpStream,
}

impl Live {
    /// `TCP_INFO` now, with the congestion control's name.
    pub fn figures(&self) -> Option<TcpFigures> {
        figures(&self.info)
    }
}

fn figures(s: &TcpStream) -> Option<TcpFigures> {
    let i = tcp::tcp_info(s).ok()?;
    Some(TcpFigures::from_info(
        &i,
        &tcp::congestion(s).unwrap_or_default(),
    ))
}

/// What a data connection thread returns.
pub struct StreamOut {
    pub end: StreamEnd,
    pub cpu: CpuUsage,
    pub interrupted: bool,
}

/// How one data connection runs.
#[derive(Clone)]
pub struct Job {
    /// Write (this end sends) or read.
    pub write: bool,
    pub plan: Plan,
    pub len: usize,
    /// Application pacing of this connection, bits per second.
    pub rate_bps: Option<u64>,
    /// Write with `MSG_ZEROCOPY`, counting the completions.
    pub zerocopy: bool,
    pub cpu: Option<usize>,
    /// How a reader waits for data (`recv --block`/`--spin`; polls by default).
    pub wait: RxWait,
}

/// A running data connection: what it shares, and its thread.
pub type Running = (Arc<Live>, JoinHandle<Result<StreamOut>>);

/// Starts a data connection's thread.
pub fn spawn(
    sock: TcpStream,
    id: u32,
    dir: Dir,
    job: Job,
    stop: Arc<AtomicBool>,
) -> Result<Running> {
    let live = Arc::new(Live {
        id,
        dir,
        bytes: AtomicU64::new(0),
        info: sock.try_clone()?,
    });
    let l = live.clone();
    let h = thread::Builder::new()
        .name(format!("netcore-tcp-{id}"))
        .spawn(move || {
            if let Some(c) = job.cpu {
                affinity::pin_current(c);
            }
            let meter = ThreadMeter::start();
            let t0 = Instant::now();
            let (bytes, interrupted, zerocopy) = if job.write {
                write_loop(&sock, &job, &l.bytes, &stop)?
            } else {
                let (bytes, interrupted) = read_loop(&sock, &job, &l.bytes, &stop)?;
                (bytes, interrupted, None)
            };
            let elapsed_s = t0.elapsed().as_secs_f64();
            let cpu = meter.stop();
            if job.write {
                linger(&sock, &stop);
            } else {
                // The control thread holds a second handle on this socket: shut it down
                // rather than wait for the last close, so the writer sees our FIN now.
                let _ = sock.shutdown(Shutdown::Write);
            }
            let end = StreamEnd {
                id,
                dir,
                bytes,
                elapsed_s,
                tcp: figures(&sock),
                zerocopy,
            };
            Ok(StreamOut {
                end,
                cpu,
                interrupted,
            })
        })?;
    Ok((live, h))
}

fn stopped(stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed) || signal::stop_requested()
}

/// A read or write error that only means "not now" (a timeout, EINTR).
pub fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// How long a zero-copy writer waits for its last completions after the last send.
const ZC_WAIT: Duration = Duration::from_secs(5);
/// A zero-copy writer drains its completions every this many sends (and when the kernel
/// says ENOBUFS: the socket's option memory is full of them).
const ZC_DRAIN_EVERY: u64 = 32;

/// Takes the completions queued on the socket into `z`.
fn drain_zc(sock: &TcpStream, z: &mut ZeroCopyCounts) -> Result<()> {
    let c = tcp::zerocopy_completions(sock).context("data connection: error queue")?;
    z.completed += c.sends;
    z.copied += c.copied;
    Ok(())
}

/// Writes `len`-byte buffers until the plan is done; returns bytes the kernel took, whether
/// `stop` cut it short, and with `--zerocopy` the sends and their completions. The buffer is
/// written once and never changed, so a zero-copy send's pages may stay pinned by the kernel
/// while the next sends go out; every completion is awaited (bounded) before the end.
fn write_loop(
    mut sock: &TcpStream,
    job: &Job,
    moved: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(u64, bool, Option<ZeroCopyCounts>)> {
    sock.set_write_timeout(Some(Duration::from_millis(100)))?;
    let mut zc = if job.zerocopy {
        tcp::set_zerocopy(sock).context("--zerocopy: the kernel refused SO_ZEROCOPY")?;
        Some(ZeroCopyCounts::default())
    } else {
        None
    };
    let buf: Vec<u8> = (0..job.len).map(|i| (i % 251) as u8).collect();
    let (limit, deadline) = match job.plan {
        Plan::Count(n) => (n.saturating_mul(job.len as u64), None),
        Plan::TimeNs(ns) => (u64::MAX, Some(Instant::now() + Duration::from_nanos(ns))),
    };
    let mut pacer = job.rate_bps.map(|r| {
        let per_sec = r as f64 / (job.len as f64 * 8.0);
        Pacer::new(per_sec.max(1e-3), 4, realtime_ns())
    });
    let mut total = 0u64;
    let mut off = 0usize;
    while total < limit {
        if stopped(stop) {
            return Ok((total, true, zc));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if off == 0 {
            if let Some(p) = pacer.as_mut() {
                let now = realtime_ns();
                if p.allowance(now, 1) == 0 {
                    let wait = p.wait_ns(now, 1).min(50_000_000);
                    thread::sleep(Duration::from_nanos(wait));
                    continue;
                }
            }
        }
        let end = (job.len as u64).min(limit - total + off as u64) as usize;
        let sent = match zc.as_mut() {
            Some(z) => tcp::send_zerocopy(sock, &buf[off..end]).inspect(|_| z.sends += 1),
            None => sock.write(&buf[off..end]),
        };
        match sent {
            Ok(n) => {
                if let Some(z) = zc.as_mut().filter(|z| z.sends % ZC_DRAIN_EVERY == 0) {
                    drain_zc(sock, z)?;
                }
                total += n as u64;
                off += n;
                if off == end {
                    off = 0;
                    if let Some(p) = pacer.as_mut() {
                        p.consume(1);
                    }
                }
                moved.store(total, Ordering::Relaxed);
            }
            Err(e) if transient(&e) => {}
            Err(e) if zc.is_some() && e.raw_os_error() == Some(libc::ENOBUFS) => {
                if let Some(z) = zc.as_mut() {
                    drain_zc(sock, z)?;
                }
                thread::yield_now();
            }
            Err(e) => return Err(e).context("data connection: write failed"),
        }
    }
    if let Some(z) = zc.as_mut() {
        let deadline = Instant::now() + ZC_WAIT;
        drain_zc(sock, z)?;
        while z.completed < z.sends && Instant::now() < deadline && !stopped(stop) {
            thread::sleep(Duration::from_millis(1));
            drain_zc(sock, z)?;
        }
    }
    Ok((total, false, zc))
}

/// Reads to EOF into one reused buffer; returns bytes read and whether it was cut short.
/// With [`RxWait::Poll`] (the default) it reads without blocking and naps when nothing is
/// queued, so that no wake-up of a sleeping reader is charged to the sender's core (on
/// loopback that core runs the receive path); [`RxWait::Spin`] never naps; [`RxWait::Block`]
/// sleeps in `read`.
fn read_loop(
    mut sock: &TcpStream,
    job: &Job,
    moved: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(u64, bool)> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = vec![0u8; job.len.max(64 * 1024)];
    let silence = match job.plan {
        Plan::TimeNs(ns) => Duration::from_nanos(ns) + SILENCE,
        Plan::Count(_) => SILENCE,
    };
    let mut total = 0u64;
    let mut last = Instant::now();
    loop {
        let got = match job.wait {
            RxWait::Block => sock.read(&mut buf),
            RxWait::Poll | RxWait::Spin => tcp::recv_now(sock, &mut buf),
        };
        match got {
            Ok(0) => return Ok((total, false)),
            Ok(n) => {
                total += n as u64;
                moved.store(total, Ordering::Relaxed);
                last = Instant::now();
            }
            Err(e) if transient(&e) => {
                if stopped(stop) || last.elapsed() > silence {
                    return Ok((total, true));
                }
                match job.wait {
                    RxWait::Poll => thread::sleep(POLL_NAP),
                    RxWait::Spin => std::hint::spin_loop(),
                    RxWait::Block => {}
                }
            }
            Err(e) => return Err(e).context("data connection: read failed"),
        }
    }
}

/// After the last write: FIN, then wait (bounded) for the reader's close, so that the final
/// `TCP_INFO` counts everything acked.
fn linger(mut sock: &TcpStream, stop: &AtomicBool) {
    let _ = sock.shutdown(Shutdown::Write);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
    let t = Instant::now();
    let mut b = [0u8; 512];
    while t.elapsed() < LINGER && !stopped(stop) {
        match sock.read(&mut b) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if transient(&e) => {}
            Err(_) => return,
        }
    }
}

/// Joins every connection thread: the stream ends, the CPU of all of them, and whether any
/// was cut short. The first error wins.
pub fn join_all(
    handles: Vec<JoinHandle<Result<StreamOut>>>,
) -> Result<(Vec<StreamEnd>, CpuUsage, bool)> {
    let mut ends = Vec::new();
    let mut cpu = CpuUsage::default();
    let mut interrupted = false;
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(o)) => {
                cpu.add(&o.cpu);
                interrupted |= o.interrupted;
                ends.push(o.end);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("a data connection thread panicked"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok((ends, cpu, interrupted)),
    }
}

/// Bytes this side moved over `ends` (for bits per CPU-second).
pub fn bytes_moved(ends: &[StreamEnd]) -> u64 {
    ends.iter().map(|e| e.bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_plan_moves_exactly_its_bytes() {
        // Every way a reader can wait reads every byte to EOF.
        for wait in [RxWait::Poll, RxWait::Block, RxWait::Spin] {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (b, _) = l.accept().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let job = |write| Job {
                write,
                plan: Plan::Count(37),
                len: 10_000,
                rate_bps: None,
                zerocopy: false,
                cpu: None,
                wait,
            };
            let (_, w) = spawn(a, 0, Dir::Up, job(true), stop.clone()).unwrap();
            let (live, r) = spawn(b, 0, Dir::Up, job(false), stop).unwrap();
            let (ends, cpu, cut) = join_all(vec![w, r]).unwrap();
            assert!(!cut, "{wait:?}");
            assert_eq!(ends[0].bytes, 370_000);
            assert_eq!(ends[1].bytes, 370_000, "{wait:?}");
            assert_eq!(live.bytes.load(Ordering::Relaxed), 370_000);
            assert_eq!(cpu.threads, 2);
            let t = ends[0].tcp.as_ref().unwrap();
            assert!(t.bytes_acked >= 370_000 && !t.congestion.is_empty());
        }
    }
}
