//! The client driver: one run of N clients, multiplexed on the project's [`Reactor`].
//!
//! Each run uses one reactor thread (or `-t N`, or one pinned per CPU given with `--cpus`;
//! client `c` goes to thread `c % threads`). All connections are started at once with non-blocking connects;
//! each client then runs its script:
//!
//! * **tasks mode** (`--tasks N`): N requests, one in flight at a time, `--think` between a
//!   reply and the next request; the client closes when its last reply arrived. The run's wall
//!   time is from the first connect to the last client's close (connect time included, as in the
//!   tutorial this mirrors); tasks/s = completed tasks / wall time.
//! * **duration mode** (`--duration D`): requests back to back until the run ends. Clients
//!   start sending as soon as they are connected; the measured window opens `--warmup` after
//!   the last client connected and lasts `D`. A request *completed in the window* was sent
//!   inside it and answered before it closed; that one definition ([`Core::counted`]) decides
//!   every figure: the tasks and tasks/s (right replies), the latency histogram (one sample
//!   per counted task), the reply errors (wrong replies) and the HTTP status tally (every
//!   counted reply, right or wrong). A request answered inside the window but sent before it
//!   (warm-up) counts nowhere; one still waiting when the window closes is `unanswered`, its
//!   wait kept apart (with several threads each thread has its own window and tasks/s is the
//!   sum of the threads' rates).
//! * **open loop** (`--rate R`, either mode): requests are sent on the [`Schedule`] (pipelined,
//!   at most [`MAX_INFLIGHT`] outstanding per connection) and latency is measured from the
//!   intended send time.
//!
//! Every wait is bounded: a connect by the connect timeout, every outstanding request by the
//! reply timeout (one lazily re-armed timer per connection, not one per request), the whole run
//! by an optional hard limit. Failures are counted by [`ErrKind`] and end the client; `ERR`
//! replies and wrong replies are counted and the client goes on.
//!
//! HTTP (`--proto http`): keep-alive connections, requests pipelined like the others in open
//! loop, any HTTP/1.x server. Each connection's responses are read by a
//! [`http_client::Reader`] (Content-Length, chunked, or until the close; bodies counted as they
//! arrive, never buffered) and every status is counted ([`StatusCounts`]); a response is a
//! task whatever its status, as wrk counts it. Only a response that says it is netcore's
//! (`Server: netcore`) is held to netcore's answer (status, body length; else `bad_reply`).
//! A response that closes the connection (`Connection: close`, HTTP/1.0, a body until the
//! close) is followed by a new connection for the next request (`reconnects`; sent after the
//! `--think` pause, as over one connection); so is a
//! malformed response (counted `malformed`, its request answered by it) and a connection the
//! server ends with requests unanswered (counted `closed` or `reset`; those requests are sent
//! again). A client whose connections end so [`MAX_FRUITLESS`] times in a row without a
//! response ends with that error: no server can keep a client reconnecting for nothing.
//!
//! Reads use one 64 KiB buffer per thread; a short read means the socket was drained (a new
//! edge comes with the next data) so the common case costs one `read` per reply. Output goes
//! through a per-connection [`OutBuf`] and the in-flight queue keeps its capacity: in steady
//! state a request allocates nothing.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mio::net::TcpStream;
use mio::Interest;
use serde::Serialize;

use super::schedule::Schedule;
use super::workload::{echo_byte, echo_payload, Expect, HttpRequest, Picker, Workload};
use crate::proto::http_client::{self, Eof};
use crate::reactor::{Budget, Ctx, Entry, Handler, Key, OutBuf, Reactor, Ready, Timers};
use crate::stats::hist::Hist;

/// Most requests outstanding on one connection in open-loop mode.
pub(crate) const MAX_INFLIGHT: usize = 1024;
/// HTTP: connections in a row that may end with an error before any response, per client.
pub(crate) const MAX_FRUITLESS: u32 = 3;

const READ_BUF: usize = 64 * 1024;
const OUT_KEEP: usize = 64 * 1024;

const T_DEADLINE: u64 = 1;
const T_WAKE: u64 = 2;
const T_END: u64 = 3;
const T_ABORT: u64 = 4;

/// How long a client's script runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each client does this many tasks.
    Tasks(u32),
    /// Clients loop until the measured window (after the warm-up) is over.
    Duration {
        duration: Duration,
        warmup: Duration,
    },
}

/// Everything about a run except the number of clients.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub addr: SocketAddr,
    pub workload: Workload,
    pub mode: Mode,
    /// Pause between a reply and the next request (closed loop only).
    pub think: Duration,
    /// Open loop: total requests per second over all clients.
    pub rate: Option<f64>,
    /// Longest wait for a reply.
    pub timeout: Duration,
    /// Longest wait for a connect.
    pub connect_timeout: Duration,
    /// One reactor thread per CPU, pinned; empty: `threads` unpinned threads.
    pub cpus: Vec<usize>,
    /// Reactor threads when `cpus` is empty (at least one; wrk's `-t`).
    pub threads: usize,
    /// Hard limit of one run; a run stopped by it is marked aborted.
    pub limit: Option<Duration>,
    /// Busy-poll the reactors instead of sleeping (`--spin`).
    pub spin: bool,
}

/// Why a client failed or a reply was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrKind {
    /// Connection refused.
    Refused,
    /// Connection reset (or broken pipe).
    Reset,
    /// The server closed the connection before the client was done.
    Closed,
    /// No connect or reply within the timeout.
    Timeout,
    /// A reply that differs from the expected one.
    BadReply,
    /// HTTP: a response that cannot be read (garbage, a head over 64 KiB, a bad chunk size).
    Malformed,
    /// An `ERR ...` reply.
    ErrReply,
    /// Any other I/O error.
    Other,
    /// Duration mode: a connected client that got no reply in the whole measured window
    /// (its request was still waiting when the window closed).
    Starved,
}

impl ErrKind {
    fn of(e: &io::Error) -> ErrKind {
        use io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => ErrKind::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => ErrKind::Reset,
            K::TimedOut => ErrKind::Timeout,
            _ => ErrKind::Other,
        }
    }
}

/// Errors by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ErrorCounts {
    pub refused: u64,
    pub reset: u64,
    pub closed: u64,
    pub timeout: u64,
    pub bad_reply: u64,
    /// HTTP responses that could not be read ([`ErrKind::Malformed`]).
    #[serde(default)]
    pub malformed: u64,
    pub err_reply: u64,
    pub other: u64,
    /// Clients that got no reply in the measured window ([`ErrKind::Starved`]).
    pub starved: u64,
}

impl ErrorCounts {
    pub fn add(&mut self, k: ErrKind) {
        *match k {
            ErrKind::Refused => &mut self.refused,
            ErrKind::Reset => &mut self.reset,
            ErrKind::Closed => &mut self.closed,
            ErrKind::Timeout => &mut self.timeout,
            ErrKind::BadReply => &mut self.bad_reply,
            ErrKind::Malformed => &mut self.malformed,
            ErrKind::ErrReply => &mut self.err_reply,
            ErrKind::Other => &mut self.other,
            ErrKind::Starved => &mut self.starved,
        } += 1;
    }

    pub(crate) fn merge(&mut self, o: &ErrorCounts) {
        self.refused += o.refused;
        self.reset += o.reset;
        self.closed += o.closed;
        self.timeout += o.timeout;
        self.bad_reply += o.bad_reply;
        self.malformed += o.malformed;
        self.err_reply += o.err_reply;
        self.other += o.other;
        self.starved += o.starved;
    }

    pub fn total(&self) -> u64 {
        self.refused
            + self.reset
            + self.closed
            + self.timeout
            + self.bad_reply
            + self.malformed
            + self.err_reply
            + self.other
            + self.starved
    }

    /// Every kind with its name, in report order (the CSV columns, the `brief` words).
    pub(crate) fn by_kind(&self) -> [(&'static str, u64); 9] {
        [
            ("refused", self.refused),
            ("reset", self.reset),
            ("closed", self.closed),
            ("timeout", self.timeout),
            ("bad_reply", self.bad_reply),
            ("malformed", self.malformed),
            ("err_reply", self.err_reply),
            ("other", self.other),
            ("starved", self.starved),
        ]
    }

    /// `refused=3 timeout=1`, or `0`.
    pub(crate) fn brief(&self) -> String {
        let s: Vec<String> = self
            .by_kind()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={}", crate::units::fmt_count(*n)))
            .collect();
        if s.is_empty() {
            "0".into()
        } else {
            s.join(" ")
        }
    }
}

/// HTTP responses by status code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct StatusCounts(pub std::collections::BTreeMap<u16, u64>);

impl StatusCounts {
    pub fn add(&mut self, status: u16) {
        *self.0.entry(status).or_insert(0) += 1;
    }

    pub(crate) fn merge(&mut self, o: &StatusCounts) {
        for (k, n) in &o.0 {
            *self.0.entry(*k).or_insert(0) += n;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Responses whose status is neither 2xx nor 3xx (wrk's "Non-2xx or 3xx responses").
    pub(crate) fn non_2xx_3xx(&self) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| !(200..400).contains(*k))
            .map(|(_, n)| n)
            .sum()
    }

    /// `200=1234 404=2`, or `-` for none.
    pub(crate) fn brief(&self) -> String {
        if self.0.is_empty() {
            return "-".into();
        }
        let v: Vec<String> = self
            .0
            .iter()
            .map(|(k, n)| format!("{k}={}", crate::units::fmt_count(*n)))
            .collect();
        v.join(" ")
    }
}

/// The raw outcome of one run.
#[derive(Clone, Default)]
pub struct RunOutcome {
    pub clients: u32,
    /// Tasks mode: first connect to last close. Duration mode: the measured window.
    pub wall: Duration,
    /// Counted (successful) tasks.
    pub tasks: u64,
    pub tasks_per_s: f64,
    /// Latency of every counted task, ns.
    pub latency: Hist,
    /// Connect times, ns.
    pub connect: Hist,
    pub connected: u64,
    /// Clients that ended with an error.
    pub failed_clients: u64,
    pub errors: ErrorCounts,
    /// Counted tasks of each client.
    pub per_client: Vec<u64>,
    /// Stopped by [`RunConfig::limit`].
    pub aborted: bool,
    /// Stopped by SIGINT/SIGTERM.
    pub interrupted: bool,
    /// Requests still waiting for their reply when the run ended (sent in the window; not
    /// tasks, not in the latency).
    pub unanswered: u64,
    /// The longest wait so far of an unanswered request (zero if none).
    pub unanswered_wait: Duration,
    /// Open loop: requests due by the schedule when each client ended, and sent.
    pub scheduled: u64,
    pub sent: u64,
    /// The first error of kind `Other`, for the report.
    pub first_error: Option<String>,
    /// HTTP: the status of every counted response (right or wrong).
    pub status: StatusCounts,
    /// HTTP: connections opened after a client's first (the server closed the one before).
    pub reconnects: u64,
}

/// Runs `clients` clients once.
pub fn run(cfg: &RunConfig, clients: u32) -> Result<RunOutcome> {
    if clients == 0 {
        bail!("a run needs at least one client");
    }
    let need = clients as u64 + 64;
    let have = crate::sys::raise_nofile(need).context("cannot read the open-file limit")?;
    if have < need {
        bail!("{clients} clients need about {need} open files but the limit is {have} (raise `ulimit -n`)");
    }
    let threads = match cfg.cpus.len() {
        0 => cfg.threads,
        n => n,
    }
    .clamp(1, clients as usize);
    let t0 = Instant::now();
    let results: Vec<io::Result<Acc>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<u32> = (0..clients)
                    .filter(|c| *c as usize % threads == t)
                    .collect();
                let cpu = cfg.cpus.get(t).copied();
                std::thread::Builder::new()
                    .name(format!("load-{t}"))
                    .spawn_scoped(s, move || {
                        if let Some(c) = cpu {
                            crate::sys::affinity::pin_current(c);
                        }
                        drive(cfg, clients, mine, t0)
                    })
                    .expect("spawn load thread")
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("load thread panicked")))
            })
            .collect()
    });
    let mut out = RunOutcome {
        clients,
        ..RunOutcome::default()
    };
    for r in results {
        let a = r.context("load generator reactor failed")?;
        out.tasks += a.tasks;
        out.latency.add(&a.latency);
        out.connect.add(&a.connect);
        out.connected += a.connected;
        out.failed_clients += a.failed;
        out.errors.merge(&a.errors);
        out.per_client.extend_from_slice(&a.per_client);
        out.aborted |= a.aborted;
        out.interrupted |= a.interrupted;
        out.unanswered += a.unanswered;
        out.unanswered_wait = out.unanswered_wait.max(a.unanswered_wait);
        out.scheduled += a.scheduled;
        out.sent += a.sent;
        out.status.merge(&a.status);
        out.reconnects += a.reconnects;
        if out.first_error.is_none() {
            out.first_error = a.first_error.clone();
        }
        match cfg.mode {
            Mode::Tasks(_) => out.wall = out.wall.max(a.finished.saturating_duration_since(t0)),
            Mode::Duration { .. } => {
                let len = a.window_len();
                out.wall = out.wall.max(len);
                if !len.is_zero() {
                    out.tasks_per_s += a.tasks as f64 / len.as_secs_f64();
                }
            }
        }
    }
    if let Mode::Tasks(_) = cfg.mode {
        let w = out.wall.as_secs_f64();
        out.tasks_per_s = if w > 0.0 { out.tasks as f64 / w } else { 0.0 };
    }
    Ok(out)
}

/// A thread's accumulators.
struct Acc {
    tasks: u64,
    latency: Hist,
    connect: Hist,
    connected: u64,
    failed: u64,
    errors: ErrorCounts,
    per_client: Vec<u64>,
    aborted: bool,
    interrupted: bool,
    unanswered: u64,
    unanswered_wait: Duration,
    scheduled: u64,
    sent: u64,
    finished: Instant,
    window: Option<(Instant, Instant)>,
    first_error: Option<String>,
    status: StatusCounts,
    reconnects: u64,
}

impl Acc {
    fn window_len(&self) -> Duration {
        match self.window {
            Some((s, e)) => self.finished.min(e).saturating_duration_since(s),
            None => Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Connecting,
    Active,
    /// HTTP: a new connection replacing one the server closed.
    Reconnecting,
}

/// What a connection's event leads to.
enum Next {
    /// The client ends (with an error, or clean).
    Finish(Option<ErrKind>),
    /// HTTP: the client goes on over a new connection (the error that ended this one, if any).
    Reconnect(Option<ErrKind>),
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    /// Index into the thread's per-client table.
    idx: usize,
    /// Global client number.
    client: u32,
    state: St,
    t_connect: Instant,
    sent: u64,
    received: u64,
    ok: u64,
    /// (latency origin, actual send time, request index)
    inflight: VecDeque<(Instant, Instant, u32)>,
    rbuf: Vec<u8>,
    out: OutBuf,
    picker: Picker,
    sched: Option<Schedule>,
    /// Closed loop: when the pause after the last reply (`--think`) ends; the next request
    /// waits for it, over a new connection too.
    think_until: Option<Instant>,
    wake_armed: bool,
    deadline: Instant,
    /// The earliest deadline timer still armed for this connection.
    timer_at: Option<Instant>,
    tx_seq: u64,
    rx_seq: u64,
    rx_got: usize,
    rx_bad: bool,
    /// HTTP: this connection's responses.
    http: http_client::Reader,
    /// HTTP: a response completed on this connection.
    answered_here: bool,
    /// HTTP: connections in a row that ended with an error before any response.
    fruitless: u32,
}

impl Entry for Conn {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.stream
    }
}

/// Per-thread state other than the connections.
struct Core<'a> {
    cfg: &'a RunConfig,
    clients_total: u32,
    n_tasks: u64,
    duration_mode: bool,
    max_reply: usize,
    active: usize,
    pending_connect: usize,
    ended: bool,
    acc: Acc,
}

struct Driver<'a> {
    core: Core<'a>,
    scratch: Vec<u8>,
}

fn drive(cfg: &RunConfig, clients_total: u32, mine: Vec<u32>, t0: Instant) -> io::Result<Acc> {
    let mut reactor: Reactor<Conn> = Reactor::new(1024)?;
    reactor.set_spin(cfg.spin);
    // SIGINT/SIGTERM end the run like its time limit: the report shows what ran.
    reactor.watch_termination_signals()?;
    let (n_tasks, duration_mode) = match cfg.mode {
        Mode::Tasks(n) => (n as u64, false),
        Mode::Duration { .. } => (u64::MAX, true),
    };
    let mut d = Driver {
        core: Core {
            cfg,
            clients_total,
            n_tasks,
            duration_mode,
            max_reply: cfg.workload.max_reply(),
            active: 0,
            pending_connect: 0,
            ended: false,
            acc: Acc {
                tasks: 0,
                latency: Hist::new(),
                connect: Hist::new(),
                connected: 0,
                failed: 0,
                errors: ErrorCounts::default(),
                per_client: vec![0; mine.len()],
                aborted: false,
                interrupted: false,
                unanswered: 0,
                unanswered_wait: Duration::ZERO,
                scheduled: 0,
                sent: 0,
                finished: t0,
                window: None,
                first_error: None,
                status: StatusCounts::default(),
                reconnects: 0,
            },
        },
        scratch: vec![0u8; READ_BUF],
    };
    let cx = reactor.cx();
    if let Some(l) = cfg.limit {
        cx.add_timer(t0 + l, Key::NONE, T_ABORT);
    }
    for (idx, &client) in mine.iter().enumerate() {
        let now = Instant::now();
        let stream = match TcpStream::connect(cfg.addr) {
            Ok(s) => s,
            Err(e) => {
                d.core.note_error(&e);
                d.core.acc.errors.add(ErrKind::of(&e));
                d.core.acc.failed += 1;
                continue;
            }
        };
        let conn = Conn {
            stream,
            idx,
            client,
            state: St::Connecting,
            t_connect: now,
            sent: 0,
            received: 0,
            ok: 0,
            inflight: VecDeque::with_capacity(if cfg.rate.is_some() { 16 } else { 1 }),
            rbuf: Vec::new(),
            out: OutBuf::new(),
            picker: Picker::new(&cfg.workload, client as u64),
            sched: None,
            think_until: None,
            wake_armed: false,
            deadline: now + cfg.connect_timeout,
            timer_at: Some(now + cfg.connect_timeout),
            tx_seq: 0,
            rx_seq: 0,
            rx_got: 0,
            rx_bad: false,
            http: http_client::Reader::new(),
            answered_here: false,
            fruitless: 0,
        };
        let key = cx.insert(conn, Interest::READABLE | Interest::WRITABLE)?;
        cx.add_timer(now + cfg.connect_timeout, key, T_DEADLINE);
        d.core.active += 1;
        d.core.pending_connect += 1;
    }
    if d.core.active == 0 {
        d.core.acc.finished = Instant::now();
        return Ok(d.core.acc);
    }
    reactor.run(&mut d)?;
    if crate::sys::signal::stop_requested() && !d.core.ended {
        d.core.acc.interrupted = true;
        d.core.acc.finished = Instant::now();
    }
    Ok(d.core.acc)
}

/// Whether a non-blocking connect finished: Ok(true) connected, Ok(false) still going.
fn connect_done(s: &TcpStream) -> io::Result<bool> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

impl Core<'_> {
    fn note_error(&mut self, e: &io::Error) {
        if self.acc.first_error.is_none() && ErrKind::of(e) == ErrKind::Other {
            self.acc.first_error = Some(e.to_string());
        }
    }

    fn more(&self, c: &Conn) -> bool {
        !self.ended && c.sent < self.n_tasks
    }

    /// Whether a reply at `now` to a request whose latency counts from `origin` completed a
    /// request in the window: in duration mode sent inside the window and answered before it
    /// closed; in tasks mode every reply.
    fn counted(&self, origin: Instant, now: Instant) -> bool {
        if !self.duration_mode {
            return true;
        }
        match self.acc.window {
            Some((s, e)) => origin >= s && now <= e,
            None => false,
        }
    }

    /// Queues request number `c.sent` with latency origin `origin`.
    fn send(&mut self, c: &mut Conn, key: Key, timers: &mut Timers, origin: Instant, now: Instant) {
        let idx = match &self.cfg.workload {
            Workload::Task { requests, .. } => {
                let i = c.picker.pick();
                c.out.vec().extend_from_slice(&requests[i].line);
                i as u32
            }
            Workload::Echo { size } => {
                echo_payload(c.tx_seq, *size, c.out.vec());
                c.tx_seq += 1;
                0
            }
            Workload::Http { requests, .. } => {
                let i = c.picker.pick();
                c.out.vec().extend_from_slice(&requests[i].wire);
                i as u32
            }
        };
        c.sent += 1;
        c.inflight.push_back((origin, now, idx));
        if c.inflight.len() == 1 {
            c.deadline = now + self.cfg.timeout;
            if !matches!(c.timer_at, Some(t) if t <= c.deadline) {
                timers.add(c.deadline, key, T_DEADLINE);
                c.timer_at = Some(c.deadline);
            }
        }
    }

    /// Sends whatever is due, then writes the output.
    fn pump(&mut self, c: &mut Conn, key: Key, timers: &mut Timers) -> Result<(), ErrKind> {
        let now = Instant::now();
        if let Some(sched) = c.sched {
            while self.more(c) && c.inflight.len() < MAX_INFLIGHT {
                let at = sched.at(c.sent);
                if at > now {
                    if !c.wake_armed {
                        timers.add(at, key, T_WAKE);
                        c.wake_armed = true;
                    }
                    break;
                }
                self.send(c, key, timers, at, now);
            }
        } else if c.inflight.is_empty() && c.think_until.is_none() && self.more(c) {
            self.send(c, key, timers, now, now);
        }
        match c.out.flush(&mut c.stream, OUT_KEEP) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.note_error(&e);
                Err(ErrKind::of(&e))
            }
        }
    }

    /// One reply arrived; `verdict` says whether it was right, `status` is its HTTP status.
    /// A reply counts (task, latency, reply error, status) only if [`Core::counted`].
    fn reply(
        &mut self,
        c: &mut Conn,
        key: Key,
        timers: &mut Timers,
        (verdict, status): (Result<(), ErrKind>, Option<u16>),
        now: Instant,
    ) {
        let Some((origin, _, _)) = c.inflight.pop_front() else {
            return;
        };
        c.received += 1;
        if self.counted(origin, now) {
            if let Some(s) = status {
                self.acc.status.add(s);
            }
            match verdict {
                Ok(()) => {
                    self.acc
                        .latency
                        .record(now.saturating_duration_since(origin).as_nanos() as u64);
                    self.acc.tasks += 1;
                    c.ok += 1;
                }
                Err(k) => self.acc.errors.add(k),
            }
        }
        if let Some(&(_, sent, _)) = c.inflight.front() {
            c.deadline = sent + self.cfg.timeout;
        }
        if c.sched.is_none() && !self.cfg.think.is_zero() && self.more(c) {
            let until = now + self.cfg.think;
            c.think_until = Some(until);
            timers.add(until, key, T_WAKE);
            c.wake_armed = true;
        }
    }

    /// Handles received bytes. Err ends the client.
    fn on_bytes(
        &mut self,
        c: &mut Conn,
        key: Key,
        timers: &mut Timers,
        data: &[u8],
    ) -> Result<bool, ErrKind> {
        let now = Instant::now();
        match &self.cfg.workload {
            Workload::Echo { size } => {
                let size = *size;
                let mut d = data;
                while !d.is_empty() {
                    if c.inflight.is_empty() {
                        return Err(ErrKind::BadReply);
                    }
                    let n = (size - c.rx_got).min(d.len());
                    if !c.rx_bad {
                        let (seq, off) = (c.rx_seq, c.rx_got);
                        c.rx_bad = d[..n]
                            .iter()
                            .enumerate()
                            .any(|(j, b)| *b != echo_byte(seq, off + j));
                    }
                    c.rx_got += n;
                    d = &d[n..];
                    if c.rx_got == size {
                        let v = if c.rx_bad {
                            Err(ErrKind::BadReply)
                        } else {
                            Ok(())
                        };
                        c.rx_got = 0;
                        c.rx_bad = false;
                        c.rx_seq += 1;
                        self.reply(c, key, timers, (v, None), now);
                    }
                }
            }
            Workload::Http { requests, .. } => {
                return self.on_http(c, key, timers, requests, data, now);
            }
            Workload::Task { requests, .. } => {
                c.rbuf.extend_from_slice(data);
                let mut start = 0;
                while let Some(i) = c.rbuf[start..].iter().position(|&b| b == b'\n') {
                    let end = start + i;
                    let mut le = end;
                    if le > start && c.rbuf[le - 1] == b'\r' {
                        le -= 1;
                    }
                    let Some(&(_, _, ri)) = c.inflight.front() else {
                        return Err(ErrKind::BadReply);
                    };
                    let line = &c.rbuf[start..le];
                    let verdict = if line.starts_with(b"ERR") {
                        Err(ErrKind::ErrReply)
                    } else {
                        match &requests[ri as usize].expect {
                            Expect::Line(l) if l.as_slice() == line => Ok(()),
                            Expect::Line(_) => Err(ErrKind::BadReply),
                            Expect::AnyOk => Ok(()),
                        }
                    };
                    self.reply(c, key, timers, (verdict, None), now);
                    start = end + 1;
                }
                if start > 0 {
                    c.rbuf.drain(..start);
                }
                if c.rbuf.len() > self.max_reply + 4096 {
                    return Err(ErrKind::BadReply);
                }
            }
        }
        Ok(false)
    }

    /// HTTP responses, read by the connection's reader: each one is a reply (checked against
    /// netcore's answer where the server is netcore). `Ok(true)`: the connection is done (a
    /// response that closes it, or a malformed one: counted, its request answered by it).
    fn on_http(
        &mut self,
        c: &mut Conn,
        key: Key,
        timers: &mut Timers,
        requests: &[HttpRequest],
        data: &[u8],
        now: Instant,
    ) -> Result<bool, ErrKind> {
        let mut d = data;
        loop {
            match c.http.next(&mut d) {
                Ok(None) => return Ok(false),
                Ok(Some(r)) => {
                    if !self.http_reply(c, key, timers, requests, r, now)? {
                        return Ok(true);
                    }
                }
                Err(m) => {
                    if self.acc.first_error.is_none() {
                        self.acc.first_error = Some(format!("malformed response: {}", m.reason()));
                    }
                    if c.inflight.is_empty() {
                        self.acc.errors.add(ErrKind::Malformed);
                    }
                    self.reply(c, key, timers, (Err(ErrKind::Malformed), None), now);
                    return Ok(true);
                }
            }
        }
    }

    /// One whole HTTP response: the reply to the oldest request. Ok(whether the connection
    /// carries the next request).
    fn http_reply(
        &mut self,
        c: &mut Conn,
        key: Key,
        timers: &mut Timers,
        requests: &[HttpRequest],
        r: http_client::Done,
        now: Instant,
    ) -> Result<bool, ErrKind> {
        let Some(&(_, _, ri)) = c.inflight.front() else {
            return Err(ErrKind::BadReply);
        };
        let wrong = r.netcore
            && requests[ri as usize]
                .netcore
                .is_some_and(|a| !a.matches(r.status, r.body));
        let verdict = if wrong {
            Err(ErrKind::BadReply)
        } else {
            Ok(())
        };
        c.answered_here = true;
        c.fruitless = 0;
        self.reply(c, key, timers, (verdict, Some(r.status)), now);
        Ok(r.keep_alive)
    }

    /// HTTP: the server closed the connection. A body delimited by the close is complete; a
    /// response cut short, or requests left unanswered, are the `closed` error; either way
    /// the client goes on over a new connection if it has more to do.
    fn http_eof(&mut self, c: &mut Conn, key: Key, timers: &mut Timers) -> Next {
        let now = Instant::now();
        let cut = match c.http.eof() {
            Eof::Response(r) => {
                if let Workload::Http { requests, .. } = &self.cfg.workload {
                    if let Err(k) = self.http_reply(c, key, timers, requests, r, now) {
                        return Next::Finish(Some(k));
                    }
                }
                false
            }
            Eof::Clean => false,
            Eof::Truncated => true,
        };
        if !self.duration_mode && c.received >= self.n_tasks {
            return Next::Finish(None);
        }
        let closed = cut || !c.inflight.is_empty();
        Next::Reconnect(closed.then_some(ErrKind::Closed))
    }

    /// HTTP, on a new connection: the requests the old one left unanswered go out again.
    fn resend(&mut self, c: &mut Conn, key: Key, timers: &mut Timers, now: Instant) {
        let Workload::Http { requests, .. } = &self.cfg.workload else {
            return;
        };
        for (_, sent, ri) in c.inflight.iter_mut() {
            c.out.vec().extend_from_slice(&requests[*ri as usize].wire);
            *sent = now;
        }
        if !c.inflight.is_empty() {
            c.deadline = now + self.cfg.timeout;
            timers.add(c.deadline, key, T_DEADLINE);
            c.timer_at = Some(c.deadline);
        }
    }

    /// The duration-mode window opens once every client of this thread connected (or failed).
    fn all_connected(&mut self, timers: &mut Timers) {
        if let Mode::Duration { duration, warmup } = self.cfg.mode {
            let s = Instant::now() + warmup;
            self.acc.window = Some((s, s + duration));
            timers.add(s + duration, Key::NONE, T_END);
        }
    }

    /// Closes client `key`, with an error if `err`.
    fn finish(&mut self, cx: &mut Ctx<Conn>, key: Key, err: Option<ErrKind>) {
        if let Some(c) = cx.remove(key) {
            self.finish_conn(cx, c, err);
        }
    }

    /// Closes a client already out of the reactor, with an error if `err`.
    fn finish_conn(&mut self, cx: &mut Ctx<Conn>, c: Conn, err: Option<ErrKind>) {
        self.close_books(&c, err.is_none());
        if c.state == St::Connecting {
            self.pending_connect -= 1;
            if self.pending_connect == 0 {
                self.all_connected(&mut cx.timers);
            }
        }
        self.gone(cx, c.idx, c.ok, err);
    }

    /// HTTP: the client of `key` goes on over a new connection (the old one ended, with `err`
    /// if it ended with an error: counted here); the requests still waiting are sent again
    /// once it is connected. A client with nothing left to do, or whose connections ended
    /// with an error before any response [`MAX_FRUITLESS`] times in a row, ends instead.
    fn reconnect(&mut self, cx: &mut Ctx<Conn>, key: Key, err: Option<ErrKind>) {
        let Some(mut c) = cx.remove(key) else { return };
        if err.is_some() && !c.answered_here {
            c.fruitless += 1;
        }
        if (!self.more(&c) && c.inflight.is_empty()) || c.fruitless >= MAX_FRUITLESS {
            return self.finish_conn(cx, c, err);
        }
        if let Some(k) = err {
            self.acc.errors.add(k);
        }
        let now = Instant::now();
        c.stream = match TcpStream::connect(self.cfg.addr) {
            Ok(s) => s,
            Err(e) => {
                self.note_error(&e);
                return self.finish_conn(cx, c, Some(ErrKind::of(&e)));
            }
        };
        self.acc.reconnects += 1;
        c.state = St::Reconnecting;
        c.http = http_client::Reader::new();
        c.answered_here = false;
        c.out = OutBuf::new();
        // The pause after the last reply goes on: its timer was the old key's.
        c.wake_armed = c.think_until.is_some();
        c.deadline = now + self.cfg.connect_timeout;
        c.timer_at = Some(c.deadline);
        let (idx, ok, think_until) = (c.idx, c.ok, c.think_until);
        match cx.insert(c, Interest::READABLE | Interest::WRITABLE) {
            Ok(k) => {
                cx.timers.add(now + self.cfg.connect_timeout, k, T_DEADLINE);
                if let Some(t) = think_until {
                    cx.timers.add(t, k, T_WAKE);
                }
            }
            Err(e) => {
                self.note_error(&e);
                self.gone(cx, idx, ok, Some(ErrKind::Other));
            }
        }
    }

    /// A client has ended: its count, its error; the reactor stops after the last one.
    fn gone(&mut self, cx: &mut Ctx<Conn>, idx: usize, ok: u64, err: Option<ErrKind>) {
        self.acc.per_client[idx] = ok;
        if let Some(k) = err {
            self.acc.errors.add(k);
            self.acc.failed += 1;
        }
        self.active -= 1;
        if self.active == 0 {
            self.acc.finished = Instant::now();
            cx.stop();
        }
    }

    /// The books of a client that ends: its open-loop schedule, and (ending without an error)
    /// the requests still waiting (`unanswered`, the longest wait kept apart from the
    /// latency of the completed ones). A connected client that got no reply in the whole
    /// measured window is starved.
    fn close_books(&mut self, c: &Conn, clean: bool) {
        let now = Instant::now();
        if let Some(s) = &c.sched {
            self.acc.scheduled += s.due(now).min(self.n_tasks).max(c.sent);
            self.acc.sent += c.sent;
        }
        if !clean || c.state == St::Connecting {
            return;
        }
        // A request sent before the window opened (warm-up) and still waiting when it closed
        // waited through the whole window: it counts too.
        let close = match (self.duration_mode, self.acc.window) {
            (false, _) => now,
            (true, Some((_, e))) => now.min(e),
            (true, None) => return,
        };
        let mut waiting = false;
        for &(origin, _, _) in &c.inflight {
            if origin > close {
                continue;
            }
            waiting = true;
            self.acc.unanswered += 1;
            let wait = close.saturating_duration_since(origin);
            self.acc.unanswered_wait = self.acc.unanswered_wait.max(wait);
        }
        if self.duration_mode && c.ok == 0 && waiting {
            self.acc.errors.add(ErrKind::Starved);
        }
    }

    /// Ends the run: closes every client (no error).
    fn end(&mut self, cx: &mut Ctx<Conn>) {
        self.ended = true;
        for key in cx.slab.keys() {
            self.finish(cx, key, None);
        }
        self.acc.finished = Instant::now();
        cx.stop();
    }
}

impl Driver<'_> {
    fn connected(&mut self, cx: &mut Ctx<Conn>, key: Key) {
        let now = Instant::now();
        let core = &mut self.core;
        let Some(c) = cx.slab.get_mut(key) else {
            return;
        };
        let _ = c.stream.set_nodelay(true);
        if c.state == St::Reconnecting {
            c.state = St::Active;
            core.resend(c, key, &mut cx.timers, now);
            if let Err(k) = core.pump(c, key, &mut cx.timers) {
                core.finish(cx, key, Some(k));
            }
            return;
        }
        c.state = St::Active;
        core.acc
            .connect
            .record(now.saturating_duration_since(c.t_connect).as_nanos() as u64);
        core.acc.connected += 1;
        if let Some(rate) = core.cfg.rate {
            c.sched = Some(Schedule::new(now, rate, core.clients_total, c.client));
        }
        core.pending_connect -= 1;
        if core.pending_connect == 0 {
            core.all_connected(&mut cx.timers);
        }
        let r = core.pump(c, key, &mut cx.timers);
        if let Err(k) = r {
            core.finish(cx, key, Some(k));
        }
    }

    /// Reads and handles replies; says what follows for the client, if anything.
    fn read(&mut self, cx: &mut Ctx<Conn>, key: Key, ready: Ready) -> Option<Next> {
        let core = &mut self.core;
        let c = cx.slab.get_mut(key)?;
        let timers = &mut cx.timers;
        let http = matches!(core.cfg.workload, Workload::Http { .. });
        let mut budget = Budget::DEFAULT;
        loop {
            match c.stream.read(&mut self.scratch) {
                Ok(0) if http => return Some(core.http_eof(c, key, timers)),
                Ok(0) => {
                    let clean = !core.more(c) && c.inflight.is_empty();
                    return Some(Next::Finish((!clean).then_some(ErrKind::Closed)));
                }
                Ok(n) => {
                    let over = match core.on_bytes(c, key, timers, &self.scratch[..n]) {
                        Err(k) => return Some(Next::Finish(Some(k))),
                        Ok(over) => over,
                    };
                    if !core.duration_mode && c.received >= core.n_tasks {
                        return Some(Next::Finish(None));
                    }
                    if over {
                        return Some(Next::Reconnect(None));
                    }
                    budget.spend(n);
                    if n < self.scratch.len() && !ready.is_read_closed() {
                        break;
                    }
                    if budget.exhausted() {
                        cx.defer(key);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    core.note_error(&e);
                    let k = ErrKind::of(&e);
                    return Some(if http {
                        Next::Reconnect(Some(k))
                    } else {
                        Next::Finish(Some(k))
                    });
                }
            }
        }
        let c = cx.slab.get_mut(key)?;
        core.pump(c, key, &mut cx.timers)
            .err()
            .map(|k| Next::Finish(Some(k)))
    }
}

impl Handler<Conn> for Driver<'_> {
    fn on_event(&mut self, cx: &mut Ctx<Conn>, key: Key, ready: Ready) {
        let Some(c) = cx.slab.get_mut(key) else {
            return;
        };
        if matches!(c.state, St::Connecting | St::Reconnecting) {
            match connect_done(&c.stream) {
                Ok(true) => self.connected(cx, key),
                Ok(false) => return,
                Err(e) => {
                    self.core.note_error(&e);
                    self.core.finish(cx, key, Some(ErrKind::of(&e)));
                    return;
                }
            }
            if !ready.is_readable() {
                return;
            }
        }
        let Some(c) = cx.slab.get_mut(key) else {
            return;
        };
        if ready.is_writable() && !c.out.is_empty() {
            if let Err(e) = c.out.flush(&mut c.stream, OUT_KEEP) {
                self.core.note_error(&e);
                self.core.finish(cx, key, Some(ErrKind::of(&e)));
                return;
            }
        }
        if ready.is_readable() {
            match self.read(cx, key, ready) {
                Some(Next::Finish(end)) => self.core.finish(cx, key, end),
                Some(Next::Reconnect(err)) => self.core.reconnect(cx, key, err),
                None => {}
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx<Conn>, key: Key, tag: u64) {
        let core = &mut self.core;
        match tag {
            T_END => core.end(cx),
            T_ABORT => {
                core.acc.aborted = true;
                core.end(cx);
            }
            T_DEADLINE => {
                let Some(c) = cx.slab.get_mut(key) else {
                    return;
                };
                let now = Instant::now();
                if c.timer_at.is_some_and(|t| t <= now) {
                    c.timer_at = None;
                }
                if c.state == St::Active && c.inflight.is_empty() {
                    return;
                }
                if now >= c.deadline {
                    core.finish(cx, key, Some(ErrKind::Timeout));
                } else if !matches!(c.timer_at, Some(t) if t <= c.deadline) {
                    // The deadline moved on since this timer was armed: one timer, re-armed
                    // lazily, instead of cancel + add per request.
                    cx.timers.add(c.deadline, key, T_DEADLINE);
                    c.timer_at = Some(c.deadline);
                }
            }
            T_WAKE => {
                let Some(c) = cx.slab.get_mut(key) else {
                    return;
                };
                c.wake_armed = false;
                c.think_until = None;
                // A new connection still connecting sends once it is connected.
                if c.state != St::Active {
                    return;
                }
                if let Err(k) = core.pump(c, key, &mut cx.timers) {
                    core.finish(cx, key, Some(k));
                }
            }
            _ => {}
        }
    }

    fn on_stop(&mut self, cx: &mut Ctx<Conn>) {
        for key in cx.slab.keys() {
            if let Some(c) = cx.remove(key) {
                self.core.close_books(&c, true);
                self.core.acc.per_client[c.idx] = c.ok;
            }
        }
    }
}
