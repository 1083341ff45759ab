//! The `uring` model: one io_uring [`Ring`] driving the same [`Session`]s as every other model.
//!
//! Completion-based: per connection at most one receive and one send are in flight. Receives
//! are multishot into the ring's provided buffers where the kernel has them (re-armed after
//! `ENOBUFS` or any other end), else single-shot into a per-connection buffer; accepts are
//! multishot where supported. The loop enters the kernel once per turn
//! ([`Ring::submit_and_wait`]) and handles the whole completion batch.
//!
//! * Output: the session appends to the connection's `out` vector; when no send is in flight
//!   the vector is *moved* into a send operation (the ring owns it until the completion, which
//!   hands it back for reuse) and a second vector collects what comes next. Short sends are
//!   re-submitted for the rest.
//! * `SLEEP` is a ring `TIMEOUT` operation; `HASH` above the offload threshold goes to the
//!   same [`CpuPool`] as the `epoll` model, whose workers post the result to a [`Notifier`]:
//!   the ring keeps an 8-byte `READ` on its eventfd in flight, and that completion drains it.
//! * Backpressure ([`limits`]): the session stops answering at [`limits::OUT_LIMIT`] bytes of
//!   output and is resumed when a send completion leaves no more than that unsent; while more
//!   is unsent, or the session holds more than [`limits::IN_LIMIT`] bytes of input, the
//!   multishot receive is cancelled (what arrives before the cancel lands is held by the
//!   session); it is re-armed when the connection can read again. A pending `SLEEP` or CPU
//!   job does not stop the receive, so a hang-up meanwhile is seen.
//! * Idle timeouts (and the request-line deadline: `ERR line timeout`), linger, accept
//!   back-off and hang-up checks (every [`limits::HANGUP_CHECK`] while the session probes a
//!   half-closed peer during a `SLEEP`: the socket's error tells a reset) are in a timer heap
//!   whose earliest deadline is the wait timeout of the turn (no operation per connection).
//! * Closing after `BYE`/a too-long line: flush, `shutdown(SHUT_WR)`, discard input until EOF
//!   or [`LINGER`]. Aborting (errors, idle, shutdown) cancels the connection's operations; the
//!   socket is closed only when the last of them has completed, so an operation never sees a
//!   reused fd number.
//! * `--max-conns`: at the limit the multishot accept is cancelled (connections the kernel had
//!   already accepted are served) and re-armed when a connection closes.
//! * SIGINT/SIGTERM (a `POLL_ADD` on the self-pipe): cancel every operation, wait for every
//!   completion ([`Ring::drain`]), then close the sockets and print the totals.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::proto::{Session, Step, Totals};
use crate::reactor::{Key, Slab, Timers};
use crate::sys::{affinity, signal};
use crate::uring::{Completion, Notifier, OpId, Ring};

use super::epoll::{CpuPool, Deliver};
use super::limits::{self, LineClock};
use super::timing::RequestClock;
use super::{
    announce, is_resource_error, ServeConfig, Shared, ACCEPT_BACKOFF, LINGER, LINGER_BYTES,
};

/// Output capacity kept per connection between requests.
const KEEP_OUT: usize = 16 * 1024;
/// Submission queue entries.
const ENTRIES: u32 = 4096;
/// Provided buffers for multishot receives: count and size (8 MiB in all).
const BUFS: (u16, usize) = (512, 16 * 1024);
/// Buffer of a single-shot receive (kernels without multishot recv).
const RECV_BUF: usize = 16 * 1024;

// Tags of the ring-wide operations (connection operations carry their connection's key).
const TAG_ACCEPT: u64 = u64::MAX - 1;
const TAG_WAKE: u64 = u64::MAX - 2;
const TAG_SIGNAL: u64 = u64::MAX - 3;

// Timer tags.
const T_IDLE: u64 = 1;
const T_LINGER: u64 = 2;
const T_ACCEPT: u64 = 3;
const T_HANGUP: u64 = 4;

impl Deliver for Notifier<(Key, u64)> {
    fn deliver(&self, key: Key, result: u64) {
        self.post((key, result));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The session closed: flush, then shut the write side and linger.
    Closing,
    /// Write side shut: discard input until EOF or the linger timer.
    Lingering {
        discarded: usize,
    },
    /// Being closed: operations cancelled, the socket closes when the last one completes.
    Dead,
}

/// How a connection receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvMode {
    /// Its first receive: one buffer (a client that sends a flood before reading anything
    /// must not get a multishot burst of everything its socket holds).
    First,
    /// Multishot into provided buffers (where the kernel has them).
    Multi,
    /// One buffer at a time, for good: its limits held it back once. A multishot receive
    /// delivers all the socket holds before its cancel lands (hundreds of KiB per pause from
    /// a client that sends without reading); one buffer per receive bounds that to 16 KiB.
    Single,
}

struct Conn {
    sock: TcpStream,
    session: Session,
    /// Output not yet handed to the kernel.
    out: Vec<u8>,
    /// The buffer of the last finished send, kept for reuse.
    spare: Vec<u8>,
    /// Bytes of the in-flight send not yet confirmed.
    sending: usize,
    send: Option<OpId>,
    recv: Option<OpId>,
    recv_cancelled: bool,
    mode: RecvMode,
    /// Buffer for single-shot receives (kept between them).
    rbuf: Vec<u8>,
    sleep: Option<OpId>,
    /// A CPU job is out in the pool.
    cpu: bool,
    eof: bool,
    state: State,
    last_active: Instant,
    line: LineClock,
    clock: RequestClock,
    /// A [`T_HANGUP`] check is scheduled.
    hangup_timer: bool,
}

impl Conn {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn ops(&self) -> impl Iterator<Item = OpId> {
        [self.send, self.recv, self.sleep].into_iter().flatten()
    }

    /// Output not yet confirmed sent.
    fn unsent(&self) -> usize {
        self.out.len() + self.sending
    }

    fn wants_read(&self) -> bool {
        match self.state {
            State::Open => !self.eof && limits::may_read(&self.session, self.unsent()),
            State::Lingering { .. } => !self.eof,
            State::Closing | State::Dead => false,
        }
    }
}

struct Server {
    sh: Shared,
    ring: Ring,
    conns: Slab<Conn>,
    timers: Timers,
    pool: Arc<CpuPool>,
    notifier: Arc<Notifier<(Key, u64)>>,
    done: Vec<(Key, u64)>,
    listener: RawFd,
    accept: Option<OpId>,
    accept_paused: bool,
    accept_timer: bool,
    stopping: bool,
    /// Answers handed to the ring this turn, (arrival, count): their latency is recorded when
    /// the turn submits the sends ([`RequestClock`]).
    handoffs: Vec<(Instant, u64)>,
}

impl Server {
    fn arm_accept(&mut self) {
        if self.accept.is_none() && !self.accept_paused && !self.stopping {
            self.accept = Some(self.ring.accept(self.listener, TAG_ACCEPT));
        }
    }

    fn pause_accept(&mut self, backoff: bool) {
        self.accept_paused = true;
        if let Some(id) = self.accept {
            self.ring.cancel(id);
        }
        if backoff && !self.accept_timer {
            self.accept_timer = true;
            self.timers
                .add(Instant::now() + ACCEPT_BACKOFF, Key::NONE, T_ACCEPT);
        }
    }

    fn on_accept(&mut self, c: Completion) {
        if !c.more {
            self.accept = None;
        }
        if let Some(fd) = c.accepted {
            let sock = TcpStream::from(fd);
            if self.stopping {
                return; // closed at once
            }
            let _ = sock.set_nodelay(true);
            let now = Instant::now();
            let key = self.conns.insert(Conn {
                sock,
                session: limits::session(self.sh.session),
                out: Vec::new(),
                spare: Vec::new(),
                sending: 0,
                send: None,
                recv: None,
                recv_cancelled: false,
                mode: RecvMode::First,
                rbuf: Vec::new(),
                sleep: None,
                cpu: false,
                eof: false,
                state: State::Open,
                last_active: now,
                line: LineClock::default(),
                clock: RequestClock::default(),
                hangup_timer: false,
            });
            self.sh.counters.conn_opened();
            if let Some(idle) = self.sh.idle_timeout {
                self.timers.add(now + idle, key, T_IDLE);
            }
            self.sync(key);
            if self.sh.counters.active() as usize >= self.sh.max_conns {
                self.pause_accept(false);
            }
        } else {
            let e = io::Error::from_raw_os_error(-c.res);
            if is_resource_error(&e) {
                self.pause_accept(true);
            } else if c.res == -libc::EINVAL && c.more {
                // Should not happen; do not spin on it.
                self.pause_accept(true);
            }
        }
        if !c.more {
            self.arm_accept();
        }
    }

    /// Acts on a session step.
    fn on_step(&mut self, key: Key, step: Step) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match step {
            Step::NeedInput | Step::Pending | Step::Flush => {}
            Step::Sleep(d) => c.sleep = Some(self.ring.timeout(d, key.to_u64())),
            Step::Cpu(job) => {
                c.cpu = true;
                self.pool.submit(self.notifier.clone(), key, job);
            }
            Step::Close => {
                if c.state == State::Open {
                    c.state = State::Closing;
                }
            }
        }
    }

    /// Runs the session on after a deferred step completed.
    fn resume(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.state != State::Open {
            return;
        }
        let step = c.session.resume(&mut c.out, &self.sh.counters);
        self.on_step(key, step);
    }

    fn on_recv(&mut self, key: Key, comp: Completion) {
        let now = Instant::now();
        let Some(c) = self.conns.get_mut(key) else {
            if let Some(b) = comp.bid {
                self.ring.recycle(b);
            }
            return;
        };
        if !comp.more {
            c.recv = None;
            c.recv_cancelled = false;
        }
        if let Some(b) = comp.buf {
            c.rbuf = b; // a single-shot receive's buffer comes back
            if comp.res > 0 && c.mode == RecvMode::First {
                c.mode = RecvMode::Multi; // unless `sync` finds it held back now
            }
        }
        let mut step = None;
        match comp.res {
            n if n > 0 => {
                let n = n as usize;
                let data = match comp.bid {
                    Some(b) => self.ring.provided(b, n),
                    None => &c.rbuf[..n.min(c.rbuf.len())],
                };
                match &mut c.state {
                    State::Open => {
                        c.last_active = now;
                        step = Some(c.session.input(data, &mut c.out, &self.sh.counters));
                        c.line.update(&c.session, now);
                        c.clock.read(&c.session, now);
                    }
                    State::Lingering { discarded } => {
                        *discarded += n;
                        if *discarded > LINGER_BYTES {
                            c.state = State::Dead;
                        }
                    }
                    State::Closing | State::Dead => {}
                }
            }
            0 => {
                c.eof = true;
                match c.state {
                    State::Open => {
                        step = Some(c.session.eof(&mut c.out, &self.sh.counters));
                        c.clock.read(&c.session, now);
                    }
                    State::Lingering { .. } => c.state = State::Dead,
                    State::Closing | State::Dead => {}
                }
            }
            e if e == -libc::ENOBUFS || e == -libc::ECANCELED => {} // re-armed by sync if wanted
            _ => c.state = State::Dead,
        }
        if let Some(b) = comp.bid {
            self.ring.recycle(b);
        }
        if let Some(s) = step {
            self.on_step(key, s);
        }
    }

    fn on_send(&mut self, key: Key, comp: Completion) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.send = None;
        let mut buf = comp.buf.unwrap_or_default();
        if comp.res < 0 || c.state == State::Dead {
            c.state = State::Dead;
            c.sending = 0;
            return;
        }
        let n = comp.res as usize;
        c.sending = c.sending.saturating_sub(n);
        if c.sending > 0 {
            let off = buf.len() - c.sending;
            c.send = Some(self.ring.send(c.sock.as_raw_fd(), buf, off, key.to_u64()));
            return;
        }
        buf.clear();
        if buf.capacity() > KEEP_OUT {
            buf = Vec::new();
        }
        c.spare = buf;
    }

    /// Brings a connection's operations in line with its state: start a send, shut down and
    /// linger, arm or cancel the receive, or finish closing it.
    fn sync(&mut self, key: Key) {
        let tag = key.to_u64();
        let multishot = self.ring.caps().multishot_recv;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        // Answer on where the output limit held the session back and has room again.
        if c.state == State::Open && limits::may_answer(&c.session, c.unsent()) {
            let step = c.session.resume(&mut c.out, &self.sh.counters);
            self.on_step(key, step);
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.session.probing() && !c.hangup_timer && c.state != State::Dead {
            c.hangup_timer = true;
            self.timers
                .add(Instant::now() + limits::HANGUP_CHECK, key, T_HANGUP);
        }
        if c.state != State::Dead && c.send.is_none() && !c.out.is_empty() {
            let next = std::mem::take(&mut c.spare);
            let buf = std::mem::replace(&mut c.out, next);
            c.sending = buf.len();
            c.send = Some(self.ring.send(c.fd(), buf, 0, tag));
        }
        if c.state != State::Dead && c.out.is_empty() {
            // Every answer so far is in a send submitted by this turn or before (or had no
            // bytes).
            if let Some(due) = c.clock.take_due(&c.session, &self.sh.counters) {
                self.handoffs.push(due);
            }
        }
        if c.state == State::Closing && c.send.is_none() {
            if c.sock.shutdown(Shutdown::Write).is_err() {
                c.state = State::Dead;
            } else {
                c.state = State::Lingering { discarded: 0 };
                self.timers.add(Instant::now() + LINGER, key, T_LINGER);
            }
        }
        if matches!(c.state, State::Lingering { .. }) && c.eof && c.recv.is_none() {
            c.state = State::Dead;
        }
        if c.state == State::Dead {
            let ops: Vec<OpId> = c.ops().collect();
            if ops.is_empty() {
                self.conns.remove(key);
                self.sh.counters.conn_closed();
                if self.accept_paused
                    && !self.accept_timer
                    && (self.sh.counters.active() as usize) < self.sh.max_conns
                {
                    self.accept_paused = false;
                    self.arm_accept();
                }
            } else {
                for id in ops {
                    self.ring.cancel(id);
                }
            }
            return;
        }
        if c.wants_read() {
            if c.recv.is_none() {
                c.recv = Some(if multishot && c.mode == RecvMode::Multi {
                    self.ring.recv_multi(c.fd(), tag)
                } else {
                    let mut b = std::mem::take(&mut c.rbuf);
                    b.resize(RECV_BUF, 0);
                    self.ring.recv(c.fd(), b, tag)
                });
            }
        } else {
            if c.state == State::Open && !c.eof {
                c.mode = RecvMode::Single; // held back by its limits: for good
            }
            if let Some(id) = c.recv {
                if multishot && !c.recv_cancelled {
                    c.recv_cancelled = true;
                    self.ring.cancel(id);
                }
            }
        }
    }

    fn on_completion(&mut self, comp: Completion) {
        match comp.tag {
            TAG_ACCEPT => self.on_accept(comp),
            TAG_WAKE => {
                self.notifier.drain(&mut self.done);
                let mut done = std::mem::take(&mut self.done);
                for (key, result) in done.drain(..) {
                    if let Some(c) = self.conns.get_mut(key) {
                        c.cpu = false;
                        c.session.finish_cpu(result, &mut c.out, &self.sh.counters);
                        self.resume(key);
                        self.sync(key);
                    }
                }
                self.done = done;
                if !self.stopping {
                    let buf = comp.buf.unwrap_or_else(|| vec![0u8; 8]);
                    self.ring.read(self.notifier.fd(), buf, TAG_WAKE);
                }
            }
            TAG_SIGNAL => {
                if let Ok(fd) = signal::termination_fd() {
                    signal::drain(fd);
                }
                self.stopping = true;
            }
            tag => {
                let key = Key::from_u64(tag);
                let Some(c) = self.conns.get_mut(key) else {
                    if let Some(b) = comp.bid {
                        self.ring.recycle(b);
                    }
                    return;
                };
                let id = Some(comp.id);
                if id == c.recv {
                    self.on_recv(key, comp);
                } else if id == c.send {
                    self.on_send(key, comp);
                } else if id == c.sleep {
                    c.sleep = None;
                    if c.state != State::Dead {
                        c.session.finish_sleep(&mut c.out, &self.sh.counters);
                        self.resume(key);
                    }
                }
                self.sync(key);
            }
        }
    }

    fn on_timer(&mut self, key: Key, tag: u64, now: Instant) {
        match tag {
            T_ACCEPT => {
                self.accept_timer = false;
                self.accept_paused = false;
                if (self.sh.counters.active() as usize) >= self.sh.max_conns {
                    self.accept_paused = true;
                } else {
                    self.arm_accept();
                }
            }
            T_LINGER => {
                if let Some(c) = self.conns.get_mut(key) {
                    c.state = State::Dead;
                    self.sync(key);
                }
            }
            T_IDLE => {
                let Some(idle) = self.sh.idle_timeout else {
                    return;
                };
                let Some(c) = self.conns.get_mut(key) else {
                    return;
                };
                if c.state == State::Dead {
                } else if c.session.is_pending() || c.state != State::Open {
                    self.timers.add(now + idle, key, T_IDLE);
                } else if c.line.expired(Some(idle), now) {
                    c.session.line_timeout(&mut c.out, &self.sh.counters);
                    c.state = State::Closing;
                    self.sync(key);
                } else if c.last_active + idle <= now {
                    c.state = State::Dead;
                    self.sync(key);
                } else {
                    let at = c.line.next_check(idle, c.last_active);
                    self.timers.add(at, key, T_IDLE);
                }
            }
            T_HANGUP => {
                let Some(c) = self.conns.get_mut(key) else {
                    return;
                };
                c.hangup_timer = false;
                // The probe byte went out: a peer that has gone answered it with a reset.
                if c.session.probing() && !matches!(c.sock.take_error(), Ok(None)) {
                    c.state = State::Dead;
                }
                self.sync(key);
            }
            _ => {}
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let mut comps = Vec::with_capacity(256);
        self.arm_accept();
        self.ring.read(self.notifier.fd(), vec![0u8; 8], TAG_WAKE);
        let sig = signal::termination_fd()?;
        self.ring.poll_readable(sig.as_raw_fd(), TAG_SIGNAL);
        while !self.stopping {
            self.ring.flush_buffers();
            let now = Instant::now();
            for (since, n) in self.handoffs.drain(..) {
                RequestClock::record_at(&self.sh.counters, since, n, now);
            }
            let wait = self
                .timers
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            self.ring.submit_and_wait(wait)?;
            self.ring.reap(&mut comps);
            for c in comps.drain(..) {
                self.on_completion(c);
            }
            let now = Instant::now();
            while let Some((key, tag)) = self.timers.pop_expired(now) {
                self.on_timer(key, tag, now);
            }
        }
        Ok(())
    }
}

/// Runs the `uring` model on the calling thread until SIGINT/SIGTERM; prints the totals.
pub fn run(cfg: &ServeConfig, sh: Shared) -> Result<Totals> {
    // The ring is set up first, on the thread that will use it (SINGLE_ISSUER), so an
    // unavailable io_uring is reported before anything else happens.
    let ring = Ring::new(ENTRIES, Some(BUFS)).map_err(|e| anyhow!("{e}; use --model epoll"))?;
    let listener = super::bind(cfg.listen, false)?;
    let addr = listener.local_addr()?;
    let pool = CpuPool::new(cfg.workers)?;
    if let Some(&cpu) = cfg.cpus.first() {
        affinity::pin_current(cpu);
    }
    let caps = ring.caps();
    let yn = |b: bool| if b { "yes" } else { "no" };
    announce(
        cfg,
        addr,
        &format!(
            "workers={} ring={} multishot_accept={} multishot_recv={}",
            cfg.workers,
            caps.setup,
            yn(caps.multishot_accept),
            yn(caps.multishot_recv)
        ),
    )?;
    let mut server = Server {
        sh,
        ring,
        conns: Slab::new(),
        timers: Timers::new(),
        pool,
        notifier: Arc::new(Notifier::new().context("cannot create the eventfd")?),
        done: Vec::new(),
        listener: listener.as_raw_fd(),
        accept: None,
        accept_paused: false,
        accept_timer: false,
        stopping: false,
        handoffs: Vec::new(),
    };
    let r = server.run();
    // Cancel and wait for every operation before the sockets and buffers go away.
    let drained = server.ring.drain(Duration::from_secs(2));
    // Only now the sockets close: no operation (queued or in flight) names their fds any more.
    for key in server.conns.keys() {
        if server.conns.remove(key).is_some() {
            sh.counters.conn_closed();
        }
    }
    drop(server);
    drop(listener);
    r.context("io_uring loop failed")?;
    if !drained {
        eprintln!("netcore: warning: some io_uring operations did not complete at shutdown");
    }
    let t = sh.counters.snapshot();
    super::print_totals(&t);
    Ok(t)
}
