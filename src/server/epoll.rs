//! The `epoll` model: [`Reactor`]s driving [`Session`]s.
//!
//! One reactor per `--reactors`, each on its own thread with its own `SO_REUSEPORT` listener
//! (the kernel spreads connections over them), optionally pinned. Per connection: the socket,
//! the session, an [`OutBuf`] and a few flags; reads go into one 64 KiB buffer per reactor, and
//! responses are written directly (only what the socket did not take is kept). Sockets are
//! registered once for read and write (edge-triggered), so no `epoll_ctl` per request.
//!
//! * `SLEEP` arms a reactor timer; meanwhile the connection is still read (what arrives is held
//!   by the session, up to [`limits::IN_LIMIT`]), so a hang-up is noticed: after a half-close
//!   the session writes a probe byte, and the reset of a peer that has gone raises an event
//!   whose socket error closes the connection.
//! * `HASH` above the offload threshold goes to a shared pool of `--workers` threads, which post
//!   the result to the reactor's [`Mailbox`] (waking it through its `mio::Waker`).
//! * Idle timeout: one timer per connection, re-armed from the last activity when it fires; an
//!   incomplete line older than the idle timeout gets `ERR line timeout` and a close.
//! * Reads are budgeted ([`Budget::DEFAULT`]); a connection over budget is deferred.
//! * Backpressure ([`limits`]): the session stops answering at [`limits::OUT_LIMIT`] bytes of
//!   output, and a connection with more than that unsent is not read until a writable edge
//!   lets the output go.
//! * `--max-conns` (over all reactors): at the limit the listener is left alone (clients wait
//!   in the listen queue) until a connection closes. EMFILE and friends pause accepting for
//!   [`ACCEPT_BACKOFF`].
//! * Closing after `BYE`/a too-long line: flush, `shutdown(SHUT_WR)`, then discard input until
//!   EOF or [`LINGER`], so the last response is not destroyed by a reset.

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use mio::net::{TcpListener, TcpStream};
use mio::Interest;

use crate::proto::{Counters, CpuJob, Session, Step, Totals};
use crate::reactor::{Budget, Ctx, Entry, Handler, Key, Mailbox, OutBuf, Reactor, Ready, Timers};
use crate::sys::affinity;

use super::limits::{self, LineClock};
use super::timing::RequestClock;
use super::{
    announce, is_resource_error, ServeConfig, Shared, ACCEPT_BACKOFF, LINGER, LINGER_BYTES,
};

const TAG_IDLE: u64 = 1;
const TAG_SLEEP: u64 = 2;
const TAG_LINGER: u64 = 3;
const TAG_ACCEPT: u64 = 4;

/// Output capacity kept per connection between requests.
const KEEP_OUT: usize = 16 * 1024;
const READ_BUF: usize = 64 * 1024;
/// Events taken per `epoll_wait`. 256, as the C yardstick `echo_epoll` takes: with 1 000 busy
/// echo connections, 10 interleaved runs each against it (`rr_load`, 64 B) gave 256 events
/// 0.99x its req/s and 0.92x its p99 (medians), 1024 events 0.92x and 1.05x. The p99 spread
/// between runs (about 0.7x to 1.3x of the median) is wider than that difference.
const EVENTS: usize = 256;

enum Ent {
    Listener(TcpListener),
    Conn(Box<Conn>),
}

impl Entry for Ent {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Ent::Listener(l) => l,
            Ent::Conn(c) => &mut c.sock,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Open,
    /// The session closed: flush what is left, then linger.
    Closing,
    /// Write side shut: discard input until EOF or the linger timer.
    Lingering {
        discarded: usize,
    },
}

struct Conn {
    sock: TcpStream,
    session: Session,
    out: OutBuf,
    state: State,
    last_active: Instant,
    line: LineClock,
    clock: RequestClock,
}

impl Conn {
    /// Writes what the socket takes of the output; once it is all out, the answers in it
    /// have been handed off (request latency).
    fn flush(&mut self, c: &Counters) -> io::Result<()> {
        if self.out.flush(&mut self.sock, KEEP_OUT)? {
            self.clock.handed_off(&self.session, c);
        }
        Ok(())
    }
}

/// Where the pool delivers a finished job's result: a reactor's [`Mailbox`], or a ring's
/// notifier (the `uring` model).
pub(crate) trait Deliver: Send + Sync {
    fn deliver(&self, key: Key, result: u64);
}

impl Deliver for Mailbox<(Key, u64)> {
    fn deliver(&self, key: Key, result: u64) {
        self.post((key, result));
    }
}

/// A CPU job for the pool: where to post the result, for which connection.
type Job = (Arc<dyn Deliver>, Key, CpuJob);

/// Threads running offloaded `HASH` jobs for all reactors.
pub(crate) struct CpuPool {
    tx: Mutex<mpsc::Sender<Job>>,
}

impl CpuPool {
    pub fn new(workers: usize) -> Result<Arc<CpuPool>> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("cpu-{i}"))
                .stack_size(128 * 1024)
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        Ok((to, key, job)) => to.deliver(key, job.run()),
                        Err(_) => return,
                    }
                })
                .context("cannot start the CPU worker threads")?;
        }
        Ok(Arc::new(CpuPool { tx: Mutex::new(tx) }))
    }

    /// Runs `job` on a worker; its result goes to `to`, for `key`.
    pub(crate) fn submit(&self, to: Arc<dyn Deliver>, key: Key, job: CpuJob) {
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((to, key, job));
    }
}

/// One reactor's handler.
struct Server {
    sh: Shared,
    rbuf: Vec<u8>,
    pool: Arc<CpuPool>,
    mailbox: Arc<Mailbox<(Key, u64)>>,
    done: Vec<(Key, u64)>,
    listener: Key,
    /// Not accepting: at `--max-conns` (resumed when a connection closes) or backing off.
    accept_paused: bool,
    accept_timer: bool,
}

/// What to do with a connection after working on it (decided while it is borrowed).
enum After {
    Keep,
    Defer,
    Close,
}

impl Server {
    fn accept(&mut self, cx: &mut Ctx<Ent>) {
        loop {
            if self.sh.counters.active() as usize >= self.sh.max_conns {
                // Resumed when one of our connections closes, or by the timer (the limit is
                // shared by all reactors: the connection that closes may be another's).
                self.pause_accept(cx);
                return;
            }
            let Some(Ent::Listener(l)) = cx.slab.get_mut(self.listener) else {
                return;
            };
            match l.accept() {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let conn = Box::new(Conn {
                        sock,
                        session: limits::session(self.sh.session),
                        out: OutBuf::new(),
                        state: State::Open,
                        last_active: cx.now(),
                        line: LineClock::default(),
                        clock: RequestClock::default(),
                    });
                    match cx.insert(Ent::Conn(conn), Interest::READABLE | Interest::WRITABLE) {
                        Ok(key) => {
                            self.sh.counters.conn_opened();
                            if let Some(idle) = self.sh.idle_timeout {
                                cx.add_timer_after(idle, key, TAG_IDLE);
                            }
                        }
                        Err(_) => continue, // dropped: closed
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_resource_error(&e) => {
                    self.pause_accept(cx);
                    return;
                }
                Err(_) => {} // ECONNABORTED, EINTR, ...: next
            }
        }
    }

    fn pause_accept(&mut self, cx: &mut Ctx<Ent>) {
        self.accept_paused = true;
        if !self.accept_timer {
            self.accept_timer = true;
            cx.add_timer_after(ACCEPT_BACKOFF, Key::NONE, TAG_ACCEPT);
        }
    }

    fn close(&mut self, cx: &mut Ctx<Ent>, key: Key) {
        if let Some(Ent::Conn(_)) = cx.remove(key) {
            self.sh.counters.conn_closed();
            if self.accept_paused && (self.sh.counters.active() as usize) < self.sh.max_conns {
                self.accept_paused = false;
                self.accept(cx);
            }
        }
    }

    /// Works on a connection: writes its output, runs its session on where it may (after a
    /// deferred step completed, or once output that held it back has gone out), lingers when
    /// closing, then reads within the budget and the [`limits`].
    fn drive(&mut self, cx: &mut Ctx<Ent>, key: Key, shortcut: bool) {
        let now = cx.now();
        let after = {
            let Some(Ent::Conn(c)) = cx.slab.get_mut(key) else {
                return;
            };
            let c = &mut **c;
            let sh = &self.sh;
            let pool = &self.pool;
            let mb = &self.mailbox;
            let timers = &mut cx.timers;
            // Acts on a session step.
            let on_step = |c: &mut Conn, timers: &mut Timers, step: Step| match step {
                Step::NeedInput | Step::Pending | Step::Flush => {}
                Step::Sleep(d) => {
                    timers.add(now + d, key, TAG_SLEEP);
                }
                Step::Cpu(job) => pool.submit(mb.clone(), key, job),
                Step::Close => c.state = State::Closing,
            };
            // A peer that half-closed during a SLEEP got the answer's first byte: one that
            // has gone answered it with a reset, which raised this event.
            let hung_up = c.session.probing() && !matches!(c.sock.take_error(), Ok(None));
            let mut budget = Budget::DEFAULT;
            'work: loop {
                if hung_up || c.flush(&sh.counters).is_err() {
                    break 'work After::Close;
                }
                if c.state == State::Open && limits::may_answer(&c.session, c.out.pending()) {
                    let step = c.session.resume(c.out.vec(), &sh.counters);
                    on_step(c, timers, step);
                    if c.flush(&sh.counters).is_err() {
                        break 'work After::Close;
                    }
                    if step == Step::Flush && c.out.is_empty() {
                        continue; // the socket took it all: answer on
                    }
                }
                match c.state {
                    State::Open => {}
                    State::Closing => {
                        if !c.out.is_empty() {
                            break 'work After::Keep; // wait for writable
                        }
                        if c.sock.shutdown(Shutdown::Write).is_err() {
                            break 'work After::Close;
                        }
                        c.state = State::Lingering { discarded: 0 };
                        timers.add(now + LINGER, key, TAG_LINGER);
                        // fall through to discard input
                    }
                    State::Lingering { .. } => {}
                }
                if let State::Lingering { discarded } = &mut c.state {
                    loop {
                        match c.sock.read(&mut self.rbuf) {
                            Ok(0) => break 'work After::Close,
                            Ok(n) => {
                                *discarded += n;
                                if *discarded > LINGER_BYTES {
                                    break 'work After::Close;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                break 'work After::Keep
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break 'work After::Close,
                        }
                    }
                }
                if !limits::may_read(&c.session, c.out.pending()) {
                    break 'work After::Keep; // writable, a timer or a job resumes it
                }
                if budget.exhausted() {
                    break 'work After::Defer;
                }
                let step = match c.sock.read(&mut self.rbuf) {
                    Ok(0) => {
                        let step = c.session.eof(c.out.vec(), &sh.counters);
                        c.clock.read(&c.session, now);
                        step
                    }
                    Ok(n) => {
                        budget.spend(n);
                        c.last_active = now;
                        let step = c.session.input(&self.rbuf[..n], c.out.vec(), &sh.counters);
                        c.line.update(&c.session, now);
                        c.clock.read(&c.session, now);
                        // A short read emptied the socket: anything arriving later raises a
                        // new edge, so the read that would return EAGAIN can be skipped (one
                        // syscall less per request, as tokio does). Not when the event
                        // reported a FIN: the FIN would stay unread.
                        if shortcut && n < self.rbuf.len() {
                            on_step(c, timers, step);
                            if c.flush(&sh.counters).is_err() {
                                break 'work After::Close;
                            }
                            if c.state == State::Open && step != Step::Flush {
                                break 'work After::Keep;
                            }
                            continue;
                        }
                        step
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 'work After::Keep,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break 'work After::Close,
                };
                on_step(c, timers, step);
            }
        };
        match after {
            After::Keep => {}
            After::Defer => cx.defer(key),
            After::Close => self.close(cx, key),
        }
    }
}

impl Handler<Ent> for Server {
    fn on_event(&mut self, cx: &mut Ctx<Ent>, key: Key, ready: Ready) {
        if key == self.listener {
            if !self.accept_paused {
                self.accept(cx);
            }
            return;
        }
        // The short-read shortcut is only safe on a kernel event that did not report the
        // peer's FIN (a FIN queued behind the data raises no further edge).
        let shortcut = !ready.is_read_closed() && !ready.is_deferred();
        self.drive(cx, key, shortcut);
    }

    fn on_timer(&mut self, cx: &mut Ctx<Ent>, key: Key, tag: u64) {
        match tag {
            TAG_ACCEPT => {
                self.accept_timer = false;
                self.accept_paused = false;
                self.accept(cx);
            }
            TAG_LINGER => self.close(cx, key),
            TAG_SLEEP => {
                let Some(Ent::Conn(c)) = cx.slab.get_mut(key) else {
                    return;
                };
                c.session.finish_sleep(c.out.vec(), &self.sh.counters);
                self.drive(cx, key, false);
            }
            TAG_IDLE => {
                let Some(idle) = self.sh.idle_timeout else {
                    return;
                };
                let now = cx.now();
                let Some(Ent::Conn(c)) = cx.slab.get_mut(key) else {
                    return;
                };
                if c.session.is_pending() || c.state != State::Open {
                    cx.add_timer(now + idle, key, TAG_IDLE);
                } else if c.line.expired(Some(idle), now) {
                    let step = c.session.line_timeout(c.out.vec(), &self.sh.counters);
                    debug_assert_eq!(step, Step::Close);
                    c.state = State::Closing;
                    self.drive(cx, key, false);
                } else if c.last_active + idle <= now {
                    self.close(cx, key);
                } else {
                    let at = c.line.next_check(idle, c.last_active);
                    cx.add_timer(at, key, TAG_IDLE);
                }
            }
            _ => {}
        }
    }

    fn on_wake(&mut self, cx: &mut Ctx<Ent>) {
        self.mailbox.drain(&mut self.done);
        let mut done = std::mem::take(&mut self.done);
        for (key, result) in done.drain(..) {
            // A stale key (the connection closed meanwhile) finds nothing.
            if let Some(Ent::Conn(c)) = cx.slab.get_mut(key) {
                c.session.finish_cpu(result, c.out.vec(), &self.sh.counters);
                self.drive(cx, key, false);
            }
        }
        self.done = done;
    }

    fn on_stop(&mut self, cx: &mut Ctx<Ent>) {
        for key in cx.slab.keys() {
            if let Some(Ent::Conn(_)) = cx.remove(key) {
                self.sh.counters.conn_closed();
            }
        }
    }
}

/// Runs `cfg.reactors` reactors until SIGINT/SIGTERM; prints the totals.
pub fn run(cfg: &ServeConfig, sh: Shared) -> Result<Totals> {
    let n = cfg.reactors.max(1);
    let mut listeners = Vec::with_capacity(n);
    let first = super::bind(cfg.listen, n > 1)?;
    let addr = first.local_addr()?;
    listeners.push(first);
    for _ in 1..n {
        listeners.push(super::bind(addr, true)?);
    }
    let pool = CpuPool::new(cfg.workers)?;
    let mut reactors = Vec::with_capacity(n);
    for l in listeners {
        l.set_nonblocking(true)?;
        let mut r = Reactor::<Ent>::new(EVENTS).context("cannot create the reactor")?;
        r.watch_termination_signals()
            .context("cannot watch termination signals")?;
        let key = r
            .cx()
            .insert(Ent::Listener(TcpListener::from_std(l)), Interest::READABLE)
            .context("cannot register the listener")?;
        reactors.push((r, key));
    }
    announce(cfg, addr, &format!("reactors={n} workers={}", cfg.workers))?;
    let handles: Vec<_> = reactors.iter().map(|(r, _)| r.handle()).collect();
    let mut threads = Vec::with_capacity(n);
    for (i, (mut r, key)) in reactors.into_iter().enumerate() {
        let cpu = (!cfg.cpus.is_empty()).then(|| cfg.cpus[i % cfg.cpus.len()]);
        let mut server = Server {
            sh,
            rbuf: vec![0u8; READ_BUF],
            pool: pool.clone(),
            mailbox: Arc::new(Mailbox::new(r.handle())),
            done: Vec::new(),
            listener: key,
            accept_paused: false,
            accept_timer: false,
        };
        let t = std::thread::Builder::new()
            .name(format!("reactor-{i}"))
            .spawn(move || {
                if let Some(c) = cpu {
                    affinity::pin_current(c);
                }
                r.run(&mut server)
            })
            .context("cannot start a reactor thread")?;
        threads.push(t);
    }
    let mut result = Ok(());
    for t in threads {
        let r = t
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("reactor panicked")));
        if let Err(e) = r {
            // One reactor failing stops the others.
            for h in &handles {
                h.stop();
            }
            result = Err(e);
        }
    }
    result.context("reactor failed")?;
    let t = sh.counters.snapshot();
    super::print_totals(&t);
    Ok(t)
}
