//! The data connections of a TCP test (driver): socket settings from the [`TcpSpec`], the
//! writing loop and the reading loop. Both ends run the same two loops; which one a
//! connection runs depends on its direction and the end. A thread runs one loop over one or
//! more connections of the same kind: the writers (readers) that would share a CPU share a
//! thread (see [`start`]), and a lone connection is the one-element case.
//!
//! The reader reads into one buffer it reuses (no allocation per read) and counts every byte
//! to EOF; the writer counts every byte the kernel took, shuts its half down when the plan is
//! done and waits for the reader's close, so its final `TCP_INFO` has everything acked.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use super::report::IntervalMeter;
use crate::flow::control::Plan;
use crate::flow::cpu::{CpuUsage, ThreadMeter};
use crate::flow::pacer::Pacer;
use crate::flow::payload::{Buffers, StreamEnd, TcpFigures, TcpInterval, TcpSpec, ZeroCopyCounts};
use crate::flow::rxwait::{RxWait, POLL_NAP};
use crate::flow::streams::{split_bps, split_count, thread_groups, Dir};
use crate::sys::{affinity, poll, realtime_ns, signal, sockopt, tcp};

/// How long a reader waits for a byte (or EOF) before it gives up on a silent writer, beyond
/// the planned duration.
const SILENCE: Duration = Duration::from_secs(30);
/// How long a writer waits for the reader to close after its own shutdown.
const LINGER: Duration = Duration::from_secs(10);

/// The plan of one connection among `n` of one direction: a count of writes is split as
/// evenly as it goes (the first `count % n` get one more), a duration applies to each.
pub(crate) fn stream_plan(plan: Plan, index: usize, n: usize) -> Plan {
    match plan {
        Plan::Count(c) => Plan::Count(split_count(c, index, n)),
        p @ Plan::TimeNs(_) => p,
    }
}

/// Applies the spec's buffer, congestion, no-delay and pacing-cap settings to a data socket.
pub(crate) fn configure(sock: &TcpStream, spec: &TcpSpec) -> Result<()> {
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

/// What a data connection shares with the control thread while it runs.
pub struct Live {
    pub id: u32,
    pub dir: Dir,
    /// Bytes moved so far.
    pub bytes: AtomicU64,
    /// Set when the connection is done with (its loop over, a writer's linger too).
    done: AtomicBool,
    /// A second handle on the socket, for `TCP_INFO` from the control thread.
    info: TcpStream,
}

impl Live {
    /// `TCP_INFO` now, with the congestion control's name.
    pub fn figures(&self) -> Option<TcpFigures> {
        figures(&self.info)
    }

    /// Whether the connection's thread is done with it (its count of bytes is final).
    pub fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// The socket buffers the kernel granted `s` (None if it would not say).
fn granted(s: &TcpStream) -> Option<Buffers> {
    let r = socket2::SockRef::from(s);
    Some(Buffers {
        sndbuf: r.send_buffer_size().ok()? as u64,
        rcvbuf: r.recv_buffer_size().ok()? as u64,
    })
}

fn figures(s: &TcpStream) -> Option<TcpFigures> {
    let i = tcp::tcp_info(s).ok()?;
    Some(TcpFigures::from_info(
        &i,
        &tcp::congestion(s).unwrap_or_default(),
    ))
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
    /// Write with `sendfile(2)` from an in-memory file of the pattern.
    pub sendfile: bool,
    pub cpu: Option<usize>,
    /// How a reader waits for data (`recv --block`/`--spin`; polls by default).
    pub wait: RxWait,
}

/// A data connection to run: its socket, stream id, direction and job.
pub struct DataConn {
    pub sock: TcpStream,
    pub id: u32,
    pub dir: Dir,
    pub job: Job,
}

/// The flags that cut the threads short: the writers' and the readers' (iperf3's ends stop
/// their writers at TEST_END and their readers at EOF), and whether a termination signal
/// cuts them too (`on_signal`). The side that starts a test (`blast`) stops on the signal
/// itself; a receiver's TCP test stops only by its flags, which the receiver sets when the
/// test is to be interrupted: on `recv` a first signal drains (running tests go on to their
/// planned end) and only a second interrupts, so the signal alone must not cut them.
#[derive(Clone)]
pub struct Stops {
    pub write: Arc<AtomicBool>,
    pub read: Arc<AtomicBool>,
    pub on_signal: bool,
}

impl Stops {
    /// One flag for writers and readers alike, and a termination signal: the client's.
    pub fn one(stop: &Arc<AtomicBool>) -> Stops {
        Stops {
            write: stop.clone(),
            read: stop.clone(),
            on_signal: true,
        }
    }
}

/// What stops one thread: its flag, and a termination signal when `on_signal`.
struct Stop {
    flag: Arc<AtomicBool>,
    on_signal: bool,
}

impl Stop {
    fn now(&self) -> bool {
        self.flag.load(Ordering::Relaxed) || (self.on_signal && signal::stop_requested())
    }
}

/// What one thread returns: its connections' ends, its own CPU (one thread), and whether
/// any of its connections was cut short.
struct GroupOut {
    ends: Vec<StreamEnd>,
    cpu: CpuUsage,
    interrupted: bool,
}

/// A data thread.
type Thread = JoinHandle<Result<GroupOut>>;

/// One end's data connections, running: what each shares (in the order they were given to
/// [`start`]) and the threads that drive them, each thread one or more connections.
pub struct Running {
    pub live: Vec<Arc<Live>>,
    threads: Vec<(Vec<usize>, Thread)>,
}

impl Running {
    /// Data threads running the connections.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Whether every thread has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.1.is_finished())
    }

    /// Joins every thread: the stream ends (in the order given), the CPU of all the threads
    /// (each counted once, however many connections it ran), and whether any connection was
    /// cut short. The first error wins.
    pub fn join(self) -> Result<(Vec<StreamEnd>, CpuUsage, bool)> {
        let mut ends: Vec<Option<StreamEnd>> = self.live.iter().map(|_| None).collect();
        let mut cpu = CpuUsage::default();
        let mut interrupted = false;
        let mut first_err = None;
        for (idx, h) in self.threads {
            match h.join() {
                Ok(Ok(o)) => {
                    cpu.add(&o.cpu);
                    interrupted |= o.interrupted;
                    for (i, e) in idx.into_iter().zip(o.ends) {
                        ends[i] = Some(e);
                    }
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
            None => Ok((ends.into_iter().flatten().collect(), cpu, interrupted)),
        }
    }
}

/// Starts the data connections on as few threads as [`thread_groups`] says: the writers
/// (readers) that would run on one CPU share a thread, so that two streams on one core do not
/// take turns through the scheduler. With `per_stream`, a thread each (`--thread-per-stream`).
pub fn start(conns: Vec<DataConn>, stops: &Stops, per_stream: bool) -> Result<Running> {
    let kinds: Vec<_> = conns.iter().map(|c| (c.job.write, c.job.cpu)).collect();
    let groups = thread_groups(&kinds, affinity::allowed_cpus(), per_stream);
    let mut left: Vec<Option<DataConn>> = conns.into_iter().map(Some).collect();
    let mut live: Vec<Option<Arc<Live>>> = left.iter().map(|_| None).collect();
    let mut threads = Vec::new();
    for g in groups {
        let group: Vec<DataConn> = g.iter().filter_map(|&i| left[i].take()).collect();
        let flag = if group[0].job.write {
            &stops.write
        } else {
            &stops.read
        };
        let stop = Stop {
            flag: flag.clone(),
            on_signal: stops.on_signal,
        };
        let (ls, h) = spawn_group(group, stop)?;
        for (&i, l) in g.iter().zip(ls) {
            live[i] = Some(l);
        }
        threads.push((g, h));
    }
    Ok(Running {
        live: live.into_iter().flatten().collect(),
        threads,
    })
}

/// Starts one thread driving `conns`, all writers or all readers (pinned to the first one's
/// CPU, if it has one).
fn spawn_group(conns: Vec<DataConn>, stop: Stop) -> Result<(Vec<Arc<Live>>, Thread)> {
    let live = conns
        .iter()
        .map(|c| {
            Ok(Arc::new(Live {
                id: c.id,
                dir: c.dir,
                bytes: AtomicU64::new(0),
                done: AtomicBool::new(false),
                info: c.sock.try_clone()?,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    let l = live.clone();
    let h = thread::Builder::new()
        .name(format!("netcore-tcp-{}", conns[0].id))
        .spawn(move || run_group(&conns, &l, &stop))?;
    Ok((live, h))
}

/// What one connection of a thread moved.
struct Moved {
    bytes: u64,
    elapsed_s: f64,
    interrupted: bool,
    zerocopy: Option<ZeroCopyCounts>,
}

fn run_group(conns: &[DataConn], live: &[Arc<Live>], stop: &Stop) -> Result<GroupOut> {
    if let Some(c) = conns[0].job.cpu {
        affinity::pin_current(c);
    }
    let write = conns[0].job.write;
    let meter = ThreadMeter::start();
    let moved = if write {
        write_group(conns, live, stop)?
    } else {
        read_group(conns, live, stop)?
    };
    let cpu = meter.stop();
    let interrupted = moved.iter().any(|m| m.interrupted);
    if write {
        linger(conns, stop);
    } else {
        // The control thread holds a second handle on each socket: shut them down rather
        // than wait for the last close, so the writers see our FIN now.
        for c in conns {
            let _ = c.sock.shutdown(Shutdown::Write);
        }
    }
    let ends = conns
        .iter()
        .zip(moved)
        .map(|(c, m)| StreamEnd {
            id: c.id,
            dir: c.dir,
            bytes: m.bytes,
            elapsed_s: m.elapsed_s,
            tcp: figures(&c.sock),
            zerocopy: m.zerocopy,
            buffers: granted(&c.sock),
        })
        .collect::<Vec<_>>();
    for l in live {
        l.done.store(true, Ordering::Release);
    }
    Ok(GroupOut {
        ends,
        cpu,
        interrupted,
    })
}

/// A read or write error that only means "not now" (a timeout, EINTR).
pub(crate) fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A read or write error that means the peer is gone (it reset the connection, or closed it
/// under a writer): the connection ends there, cut short, and the test reports what moved.
fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// How long a zero-copy writer waits for its last completions after the last send.
const ZC_WAIT: Duration = Duration::from_secs(5);
/// A zero-copy writer drains its completions every this many sends (and when the kernel
/// says ENOBUFS: the socket's option memory is full of them).
const ZC_DRAIN_EVERY: u64 = 32;
/// The longest a thread waits in `poll` (or a write, a read) before it looks at its stop
/// flag and deadlines again.
const WAIT_CAP: Duration = Duration::from_millis(100);
/// The longest a writer sleeps for its pacer at once.
const PACE_CAP_NS: u64 = 50_000_000;

/// Takes the completions queued on the socket into `z`.
fn drain_zc(sock: &TcpStream, z: &mut ZeroCopyCounts) -> Result<()> {
    let c = tcp::zerocopy_completions(sock).context("data connection: error queue")?;
    z.completed += c.sends;
    z.copied += c.copied;
    Ok(())
}

/// One writing connection's state in its thread's round.
struct Writer<'a> {
    sock: &'a TcpStream,
    len: usize,
    moved: &'a AtomicU64,
    limit: u64,
    deadline: Option<Instant>,
    pacer: Option<Pacer>,
    total: u64,
    /// How far into the current `len`-byte buffer the kernel has taken.
    off: usize,
    zc: Option<ZeroCopyCounts>,
    /// `--sendfile`: the file holding the pattern (the buffer's bytes), sent from.
    file: Option<&'a std::fs::File>,
    /// The last write found the socket full (non-blocking): wait for POLLOUT.
    blocked: bool,
    /// When its writes ended, and whether `stop` cut them.
    end: Option<(f64, bool)>,
}

/// What one write attempt came to.
enum Step {
    /// Bytes went out, or try again now (EINTR, a write timeout, ENOBUFS).
    Again,
    /// The socket is full (non-blocking).
    Blocked,
    /// The pacer says wait this many ns.
    Pace(u64),
    /// The plan is done.
    Done,
    /// The peer is gone (reset, or closed its end): the connection was cut.
    Gone,
}

impl Writer<'_> {
    fn step(&mut self, buf: &[u8], blocking: bool) -> Result<Step> {
        if self.total >= self.limit || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Step::Done);
        }
        if self.off == 0 {
            if let Some(p) = self.pacer.as_mut() {
                let now = realtime_ns();
                if p.allowance(now, 1) == 0 {
                    return Ok(Step::Pace(p.wait_ns(now, 1).min(PACE_CAP_NS)));
                }
            }
        }
        let end = (self.len as u64).min(self.limit - self.total + self.off as u64) as usize;
        let mut sock = self.sock;
        let sent = match (self.zc.as_mut(), self.file) {
            (Some(z), _) => tcp::send_zerocopy(sock, &buf[self.off..end]).inspect(|_| z.sends += 1),
            (None, Some(f)) => tcp::sendfile(sock, f, self.off as u64, end - self.off),
            (None, None) => sock.write(&buf[self.off..end]),
        };
        match sent {
            Ok(n) => {
                if let Some(z) = self.zc.as_mut().filter(|z| z.sends % ZC_DRAIN_EVERY == 0) {
                    drain_zc(sock, z)?;
                }
                self.total += n as u64;
                self.off += n;
                if self.off == end {
                    self.off = 0;
                    if let Some(p) = self.pacer.as_mut() {
                        p.consume(1);
                    }
                }
                self.moved.store(self.total, Ordering::Relaxed);
                Ok(if self.total >= self.limit {
                    Step::Done
                } else {
                    Step::Again
                })
            }
            Err(e) if !blocking && e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Blocked),
            Err(e) if transient(&e) => Ok(Step::Again),
            Err(e) if peer_gone(&e) => Ok(Step::Gone),
            Err(e) if self.zc.is_some() && e.raw_os_error() == Some(libc::ENOBUFS) => {
                if let Some(z) = self.zc.as_mut() {
                    drain_zc(sock, z)?;
                }
                thread::yield_now();
                Ok(Step::Again)
            }
            Err(e) => Err(e).context("data connection: write failed"),
        }
    }
}

impl<'a> Writer<'a> {
    /// Connection `c`'s writer (its bytes published in `live`), its socket set up for a
    /// thread that writes it alone (`blocking`) or in turns with others; the plan runs from
    /// `t0`.
    fn new(c: &'a DataConn, live: &'a Live, t0: Instant, blocking: bool) -> Result<Writer<'a>> {
        if blocking {
            c.sock.set_write_timeout(Some(WAIT_CAP))?;
        } else {
            c.sock.set_nonblocking(true)?;
        }
        let job = &c.job;
        let zc = if job.zerocopy {
            tcp::set_zerocopy(&c.sock).context("--zerocopy: the kernel refused SO_ZEROCOPY")?;
            Some(ZeroCopyCounts::default())
        } else {
            None
        };
        let (limit, deadline) = match job.plan {
            Plan::Count(n) => (n.saturating_mul(job.len as u64), None),
            Plan::TimeNs(ns) => (u64::MAX, Some(t0 + Duration::from_nanos(ns))),
        };
        Ok(Writer {
            sock: &c.sock,
            len: job.len,
            moved: &live.bytes,
            limit,
            deadline,
            pacer: job.rate_bps.map(|r| {
                let per_sec = r as f64 / (job.len as f64 * 8.0);
                Pacer::new(per_sec.max(1e-3), 4, realtime_ns())
            }),
            total: 0,
            off: 0,
            zc,
            file: None,
            blocked: false,
            end: None,
        })
    }

    /// What the writer moved, for the stream's end.
    fn moved(self) -> Moved {
        let (elapsed_s, interrupted) = self.end.unwrap_or_default();
        Moved {
            bytes: self.total,
            elapsed_s,
            interrupted,
            zerocopy: self.zc,
        }
    }
}

/// Writes `len`-byte buffers on every connection until its plan is done; per connection the
/// bytes the kernel took, when its writes ended, whether `stop` cut it short, and with
/// `--zerocopy` the sends and their completions.
///
/// One connection alone blocks in `write` (with a timeout, so that `stop` and the deadline
/// are seen). Several take turns in rounds, a write each, without blocking: one whose socket
/// is full sits out until `poll` says it can take more; when every unfinished one is full or
/// waiting for its pacer, the thread waits in `poll` (at most until the nearest pacer's turn,
/// and [`WAIT_CAP`]).
///
/// The buffer is written once and never changed, so a zero-copy send's pages may stay pinned
/// by the kernel while the next sends go out; every completion is awaited (bounded) before
/// the end.
fn write_group(conns: &[DataConn], live: &[Arc<Live>], stop: &Stop) -> Result<Vec<Moved>> {
    let blocking = conns.len() == 1;
    let t0 = Instant::now();
    let mut ws = Vec::with_capacity(conns.len());
    for (c, l) in conns.iter().zip(live) {
        ws.push(Writer::new(c, l, t0, blocking)?);
    }
    let len = ws.iter().map(|w| w.len).max().unwrap_or(0);
    let buf: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    // The same bytes as a file, for the connections that send with sendfile.
    let file = if conns.iter().any(|c| c.job.sendfile) {
        Some(tcp::memfd_with(&buf).context("--sendfile: cannot make the in-memory file")?)
    } else {
        None
    };
    for (w, c) in ws.iter_mut().zip(conns) {
        w.file = file.as_ref().filter(|_| c.job.sendfile);
    }
    write_until_done(&mut ws, &buf, blocking, t0, stop)?;
    await_zerocopy(&mut ws, stop)?;
    Ok(ws.into_iter().map(Writer::moved).collect())
}

/// The writers' rounds until every plan is done (or the peer gone), or `stop`.
fn write_until_done(
    ws: &mut [Writer],
    buf: &[u8],
    blocking: bool,
    t0: Instant,
    stop: &Stop,
) -> Result<()> {
    let mut open = ws.len();
    let mut fds = Vec::new();
    while open > 0 {
        if stop.now() {
            let t = t0.elapsed().as_secs_f64();
            for w in ws.iter_mut().filter(|w| w.end.is_none()) {
                w.end = Some((t, true));
            }
            break;
        }
        let (busy, nap) = write_round(ws, buf, blocking, t0, &mut open)?;
        if !busy {
            wait_writable(ws, &mut fds, nap)?;
        }
    }
    Ok(())
}

/// A write on every unfinished connection that is not full; a writer that is done (or
/// whose peer is gone) ends at its time and leaves `open`. Returns whether any made
/// progress, and the nearest pacer's wait (ns).
#[inline]
fn write_round(
    ws: &mut [Writer],
    buf: &[u8],
    blocking: bool,
    t0: Instant,
    open: &mut usize,
) -> Result<(bool, Option<u64>)> {
    let mut busy = false;
    let mut nap: Option<u64> = None;
    for w in ws.iter_mut().filter(|w| w.end.is_none() && !w.blocked) {
        let step = w.step(buf, blocking)?;
        match step {
            Step::Again => busy = true,
            Step::Blocked => w.blocked = true,
            Step::Pace(ns) => nap = Some(nap.map_or(ns, |n| n.min(ns))),
            Step::Done | Step::Gone => {
                let gone = matches!(step, Step::Gone);
                w.end = Some((t0.elapsed().as_secs_f64(), gone));
                *open -= 1;
                busy = true;
            }
        }
    }
    Ok((busy, nap))
}

/// Every unfinished connection is full or waiting for its pacer: waits in `poll` for the
/// full ones (at most `nap` ns and [`WAIT_CAP`]), or sleeps when none is full.
#[inline]
fn wait_writable(ws: &mut [Writer], fds: &mut Vec<poll::PollFd>, nap: Option<u64>) -> Result<()> {
    let timeout = nap.map_or(WAIT_CAP, |n| Duration::from_nanos(n).min(WAIT_CAP));
    fds.clear();
    fds.extend(
        ws.iter()
            .filter(|w| w.end.is_none() && w.blocked)
            .map(|w| poll::poll_fd(w.sock.as_raw_fd(), poll::POLLOUT)),
    );
    if fds.is_empty() {
        thread::sleep(timeout);
        return Ok(());
    }
    if poll::wait(fds, timeout).context("data connection: poll")? > 0 {
        for f in fds.iter().filter(|f| f.revents != 0) {
            if let Some(w) = ws.iter_mut().find(|w| w.sock.as_raw_fd() == f.fd) {
                w.blocked = false;
            }
        }
    }
    Ok(())
}

/// Awaits (bounded by [`ZC_WAIT`], or `stop`) the completions of every zero-copy send.
fn await_zerocopy(ws: &mut [Writer], stop: &Stop) -> Result<()> {
    let deadline = Instant::now() + ZC_WAIT;
    for w in ws.iter_mut() {
        if let Some(z) = w.zc.as_mut() {
            drain_zc(w.sock, z)?;
        }
    }
    let waiting = |ws: &[Writer]| {
        ws.iter()
            .any(|w| w.zc.is_some_and(|z| z.completed < z.sends))
    };
    while waiting(ws) && Instant::now() < deadline && !stop.now() {
        thread::sleep(Duration::from_millis(1));
        for w in ws.iter_mut() {
            if let Some(z) = w.zc.as_mut().filter(|z| z.completed < z.sends) {
                drain_zc(w.sock, z)?;
            }
        }
    }
    Ok(())
}

/// Reads every connection to EOF into one reused buffer; per connection the bytes read, when
/// it ended, and whether it was cut short (`stop`, or silent too long).
///
/// With [`RxWait::Poll`] (the default) it reads without blocking and naps when a round over
/// the connections read nothing, so that no wake-up of a sleeping reader is charged to the
/// sender's core (on loopback that core runs the receive path); [`RxWait::Spin`] never naps;
/// [`RxWait::Block`] sleeps in `read` (one connection) or in `poll` (several).
fn read_group(conns: &[DataConn], live: &[Arc<Live>], stop: &Stop) -> Result<Vec<Moved>> {
    let wait = conns[0].job.wait;
    let blocking = conns.len() == 1 && wait == RxWait::Block;
    let len = conns.iter().map(|c| c.job.len).max().unwrap_or(0);
    let mut buf = vec![0u8; len.max(64 * 1024)];
    let silence = match conns[0].job.plan {
        Plan::TimeNs(ns) => Duration::from_nanos(ns) + SILENCE,
        Plan::Count(_) => SILENCE,
    };
    for c in conns {
        c.sock.set_read_timeout(Some(WAIT_CAP))?;
    }
    let t0 = Instant::now();
    let mut moved: Vec<Moved> = conns
        .iter()
        .map(|_| Moved {
            bytes: 0,
            elapsed_s: 0.0,
            interrupted: false,
            zerocopy: None,
        })
        .collect();
    let mut last = vec![t0; conns.len()];
    let mut open: Vec<usize> = (0..conns.len()).collect();
    let mut fds = Vec::new();
    while !open.is_empty() {
        let mut got = false;
        let mut k = 0;
        while k < open.len() {
            let i = open[k];
            let mut sock = &conns[i].sock;
            let r = if blocking {
                sock.read(&mut buf)
            } else {
                tcp::recv_now(sock, &mut buf)
            };
            let ended = match r {
                Ok(0) => Some(false),
                Ok(n) => {
                    let m = &mut moved[i];
                    m.bytes += n as u64;
                    live[i].bytes.store(m.bytes, Ordering::Relaxed);
                    last[i] = Instant::now();
                    got = true;
                    None
                }
                Err(e) if transient(&e) && stop.now() => {
                    cut_reader(&conns[i].sock, &mut buf);
                    Some(true)
                }
                Err(e) if transient(&e) => (last[i].elapsed() > silence).then_some(true),
                Err(e) if peer_gone(&e) => Some(true),
                Err(e) => return Err(e).context("data connection: read failed"),
            };
            match ended {
                Some(cut) => {
                    moved[i].elapsed_s = t0.elapsed().as_secs_f64();
                    moved[i].interrupted = cut;
                    open.swap_remove(k);
                    got = true;
                }
                None => k += 1,
            }
        }
        if got {
            continue;
        }
        match wait {
            RxWait::Poll => thread::sleep(POLL_NAP),
            RxWait::Spin => std::hint::spin_loop(),
            RxWait::Block if blocking => {}
            RxWait::Block => {
                fds.clear();
                fds.extend(
                    open.iter()
                        .map(|&i| poll::poll_fd(conns[i].sock.as_raw_fd(), poll::POLLIN)),
                );
                poll::wait(&mut fds, WAIT_CAP).context("data connection: poll")?;
            }
        }
    }
    Ok(moved)
}

/// A reader cut short tells its writer, which may be blocked on a full window: the
/// connection is shut down both ways and what the kernel holds is read and dropped (at most
/// the receive buffer), so the window opens and the writer's next bytes draw a reset (data
/// after a shutdown of the reading side is answered with one, RFC 1122): its write fails as
/// when a reader vanishes, and it ends cut short instead of waiting out its plan.
fn cut_reader(sock: &TcpStream, buf: &mut [u8]) {
    let _ = sock.shutdown(Shutdown::Both);
    while let Ok(1..) = tcp::recv_now(sock, buf) {}
}

/// After the last writes: FIN on every connection, then wait (bounded) for the readers'
/// closes, so that the final `TCP_INFO` counts everything acked.
fn linger(conns: &[DataConn], stop: &Stop) {
    for c in conns {
        let _ = c.sock.shutdown(Shutdown::Write);
    }
    let mut open: Vec<&TcpStream> = conns.iter().map(|c| &c.sock).collect();
    let t = Instant::now();
    let mut b = [0u8; 512];
    let mut fds = Vec::new();
    while !open.is_empty() && t.elapsed() < LINGER && !stop.now() {
        open.retain(|s| match tcp::recv_now(*s, &mut b) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => transient(&e),
        });
        fds.clear();
        fds.extend(
            open.iter()
                .map(|s| poll::poll_fd(s.as_raw_fd(), poll::POLLIN)),
        );
        if !fds.is_empty() && poll::wait(&mut fds, WAIT_CAP).is_err() {
            return;
        }
    }
}

/// Bytes this side moved over `ends` (for bits per CPU-second).
pub(crate) fn bytes_moved(ends: &[StreamEnd]) -> u64 {
    ends.iter().map(|e| e.bytes).sum()
}

/// The job of stream `i` (of direction `dir`) on the end that writes `Up` streams (`client`)
/// or the other: the plan split over the streams of one direction, pacing likewise.
pub(crate) fn job_for(
    spec: &TcpSpec,
    plan: Plan,
    dir: Dir,
    i: usize,
    client: bool,
    cpu: Option<usize>,
) -> Job {
    let n = spec.streams as usize;
    Job {
        write: (dir == Dir::Up) == client,
        plan: stream_plan(plan, i % n, n),
        len: spec.len as usize,
        rate_bps: spec.rate_bps.map(|r| split_bps(r, n)),
        zerocopy: spec.zerocopy,
        sendfile: spec.sendfile,
        cpu,
        wait: RxWait::Poll,
    }
}

/// Samples every live connection: bytes moved so far and `TCP_INFO`; `by` names the side.
pub(crate) fn sample(
    meter: &mut IntervalMeter,
    t: f64,
    live: &[Arc<Live>],
    by: &str,
) -> TcpInterval {
    let mut row = meter.sample(
        t,
        live.iter()
            .map(|l| (l.id, l.dir, l.bytes.load(Ordering::Relaxed), l.figures())),
    );
    row.by = by.into();
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(write: bool, wait: RxWait) -> Job {
        Job {
            write,
            plan: Plan::Count(37),
            len: 10_000,
            rate_bps: None,
            zerocopy: false,
            sendfile: false,
            cpu: None,
            wait,
        }
    }

    /// `n` connected pairs over loopback: (client side, server side).
    fn pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (0..n)
            .map(|_| {
                let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
                (a, l.accept().unwrap().0)
            })
            .collect()
    }

    /// Runs `n` writers on one thread and `n` readers on another (or each on its own with
    /// `per_stream`) and joins them: (ends, CPU, cut short, live counters, threads).
    fn run(
        n: usize,
        w: &Job,
        r: &Job,
        per_stream: bool,
    ) -> (Vec<StreamEnd>, CpuUsage, bool, Vec<Arc<Live>>, usize) {
        let stop = Arc::new(AtomicBool::new(false));
        let mut conns = Vec::new();
        let mut readers = Vec::new();
        for (i, (a, b)) in pairs(n).into_iter().enumerate() {
            let id = i as u32;
            let dir = Dir::Up;
            conns.push(DataConn {
                sock: a,
                id,
                dir,
                job: w.clone(),
            });
            readers.push(DataConn {
                sock: b,
                id,
                dir,
                job: r.clone(),
            });
        }
        conns.extend(readers);
        let (threads, running) = if per_stream {
            let r = start(conns, &Stops::one(&stop), true).unwrap();
            (r.threads(), r)
        } else {
            // Pinned to one CPU: one thread per kind, whatever this machine has.
            for c in &mut conns {
                c.job.cpu = Some(0);
            }
            let r = start(conns, &Stops::one(&stop), false).unwrap();
            (r.threads(), r)
        };
        let live = running.live.clone();
        let (ends, cpu, cut) = running.join().unwrap();
        (ends, cpu, cut, live, threads)
    }

    #[test]
    fn a_count_plan_moves_exactly_its_bytes() {
        // Every way a reader can wait reads every byte to EOF, alone and in a group of 3.
        for wait in [RxWait::Poll, RxWait::Block, RxWait::Spin] {
            for (n, per_stream) in [(1, true), (3, false), (3, true)] {
                let (ends, cpu, cut, live, threads) =
                    run(n, &job(true, wait), &job(false, wait), per_stream);
                let what = format!("{wait:?} n={n} per_stream={per_stream}");
                assert!(!cut, "{what}");
                assert_eq!(ends.len(), 2 * n, "{what}");
                let want_threads = if per_stream { 2 * n } else { 2 };
                assert_eq!(threads, want_threads, "{what}");
                assert_eq!(cpu.threads as usize, want_threads, "{what}");
                for (k, e) in ends.iter().enumerate() {
                    assert_eq!(e.id as usize, k % n, "{what}: in the order given");
                    assert_eq!(e.bytes, 370_000, "{what}: stream {k}");
                    assert_eq!(live[k].bytes.load(Ordering::Relaxed), 370_000);
                    assert!(live[k].finished());
                }
                let t = ends[0].tcp.as_ref().unwrap();
                assert!(t.bytes_acked >= 370_000 && !t.congestion.is_empty());
            }
        }
    }

    #[test]
    fn a_group_paces_and_zero_copies_each_stream() {
        let mut w = job(true, RxWait::Poll);
        w.zerocopy = true;
        w.rate_bps = Some(500_000_000);
        let (ends, cpu, cut, _, threads) = run(3, &w, &job(false, RxWait::Poll), false);
        assert!(!cut);
        assert_eq!((threads, cpu.threads), (2, 2));
        for e in &ends {
            assert_eq!(e.bytes, 370_000);
        }
        for e in &ends[..3] {
            let z = e.zerocopy.unwrap();
            assert!(z.sends >= 37 && z.completed == z.sends, "{z:?}");
        }
    }

    #[test]
    fn sendfile_sends_the_pattern_exactly() {
        // Alone (a blocking writer) and in a group of 3 (non-blocking), every byte counted.
        for n in [1, 3] {
            let mut w = job(true, RxWait::Poll);
            w.sendfile = true;
            let (ends, _, cut, _, _) = run(n, &w, &job(false, RxWait::Poll), false);
            assert!(!cut);
            assert!(ends.iter().all(|e| e.bytes == 370_000), "n={n}");
        }
        // And the bytes are the pattern, buffer after buffer (the file offset restarts).
        let (a, mut b) = pairs(1).pop().unwrap();
        let mut w = job(true, RxWait::Poll);
        w.sendfile = true;
        w.plan = Plan::Count(3);
        let stop = Arc::new(AtomicBool::new(false));
        let conn = DataConn {
            sock: a,
            id: 0,
            dir: Dir::Up,
            job: w,
        };
        let running = start(vec![conn], &Stops::one(&stop), false).unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        drop(b);
        let (ends, _, _) = running.join().unwrap();
        assert_eq!(ends[0].bytes, 30_000);
        let want: Vec<u8> = (0..30_000).map(|i| ((i % 10_000) % 251) as u8).collect();
        assert!(got == want, "sent bytes differ from the pattern");
    }

    #[test]
    fn a_time_plan_and_a_stop_end_a_group() {
        let mut w = job(true, RxWait::Block);
        w.plan = Plan::TimeNs(200_000_000);
        let mut r = job(false, RxWait::Block);
        r.plan = w.plan;
        let (ends, _, cut, _, _) = run(2, &w, &r, false);
        assert!(!cut);
        assert_eq!(ends[0].bytes, ends[2].bytes);
        assert_eq!(ends[1].bytes, ends[3].bytes);
        assert!(ends[0].bytes > 0 && ends[1].bytes > 0);

        // A stop cuts writers whose readers never read.
        let stop = Arc::new(AtomicBool::new(false));
        let ps = pairs(2);
        let mut w = job(true, RxWait::Poll);
        w.plan = Plan::Count(1 << 30);
        let conns = ps
            .iter()
            .enumerate()
            .map(|(i, (a, _))| DataConn {
                sock: a.try_clone().unwrap(),
                id: i as u32,
                dir: Dir::Up,
                job: Job {
                    cpu: Some(0),
                    ..w.clone()
                },
            })
            .collect();
        let running = start(conns, &Stops::one(&stop), false).unwrap();
        assert_eq!(running.threads(), 1);
        while running
            .live
            .iter()
            .any(|l| l.bytes.load(Ordering::Relaxed) == 0)
        {
            thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        let (ends, cpu, cut) = running.join().unwrap();
        assert!(cut && cpu.threads == 1);
        assert!(ends.iter().all(|e| e.bytes > 0 && e.bytes < 1 << 30));
    }
}
