//! A hand-rolled, single-threaded event loop over `mio`: the I/O driver of the `epoll` server
//! model and of the load generator.
//!
//! # Design
//!
//! * **Sources live in a slab** ([`Slab`]) owned by the reactor's context ([`Ctx`]). Each entry is
//!   a user type `S` (a connection, a listener, ...) that implements [`Entry`] to expose its
//!   `mio` source. Inserting registers the source; [`Ctx::remove`] deregisters it *before* the
//!   value is handed back to be dropped (closed).
//! * **Tokens carry a generation.** A [`Key`] is slot index + generation; the `mio::Token` is
//!   both packed into a `usize`. Removing an entry bumps its slot's generation, so an event still
//!   queued in the current `epoll_wait` batch for a closed (and maybe already reused) slot does
//!   not match and is ignored (counted in [`ReactorStats::stale`]).
//! * **Timers** ([`Timers`]): a binary heap with lazy cancellation; the earliest deadline is the
//!   poll timeout; a wait shorter than [`PRECISE_BELOW`] is also ended by a timerfd armed at the
//!   deadline (`epoll_wait` counts whole milliseconds). A timer carries a `Key` and a `u64` tag; if the entry is gone when it fires,
//!   `ctx.slab.get_mut(key)` simply returns `None`. For per-connection idle timeouts prefer one
//!   timer per connection that re-arms itself from a `last_active` timestamp over cancel+add on
//!   every request.
//! * **Fairness.** `mio` is edge-triggered: handlers drain reads until `WouldBlock`, but within a
//!   [`Budget`] (16 reads / 64 KiB). A connection over budget calls [`Ctx::defer`]; it goes on a
//!   ready queue, is handed back to [`Handler::on_event`] next turn with [`Ready::is_deferred`],
//!   and while the queue is non-empty the poll timeout is zero.
//! * **Other threads** reach the reactor through a [`Handle`] (wake, stop) and a [`Mailbox`]
//!   (post a message, then the reactor drains it in [`Handler::on_wake`]). Both use one
//!   `mio::Waker` (an eventfd).
//! * **Shutdown.** [`Handle::stop`] from any thread, [`Ctx::stop`] from a handler, or SIGINT/
//!   SIGTERM after [`Reactor::watch_termination_signals`] (a self-pipe in [`crate::sys::signal`];
//!   any number of reactors may watch it). [`Reactor::run`] then returns after calling
//!   [`Handler::on_stop`], where the handler can close what it owns.
//!
//! # Turn
//! `poll(timeout)` → dispatch I/O events (stale ones dropped) → `on_wake` if woken → fire due
//! timers → re-dispatch the connections deferred in the previous turn.
//!
//! # Example
//! ```no_run
//! use netcore::reactor::{Ctx, Entry, Handler, Key, Reactor, Ready};
//! use mio::{net::TcpListener, Interest};
//!
//! struct L(TcpListener);
//! impl Entry for L {
//!     fn source(&mut self) -> &mut dyn mio::event::Source { &mut self.0 }
//! }
//! struct H;
//! impl Handler<L> for H {
//!     fn on_event(&mut self, cx: &mut Ctx<L>, key: Key, _r: Ready) {
//!         while let Some(Ok((_s, _addr))) = cx.slab.get_mut(key).map(|l| l.0.accept()) {}
//!     }
//! }
//! let mut r = Reactor::new(1024).unwrap();
//! let l = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//! r.cx().insert(L(l), Interest::READABLE).unwrap();
//! r.watch_termination_signals().unwrap();
//! r.run(&mut H).unwrap();
//! ```

pub mod handle;
pub mod io;
pub mod mailbox;
pub mod shares;
pub mod slab;
pub mod timer;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::sys::timerfd::TimerFd;

pub use handle::Handle;
pub use io::{drain_read, Budget, Drained, OutBuf};
pub use mailbox::Mailbox;
pub use shares::Shares;
pub use slab::{Entry, Key, Slab};
pub use timer::{TimerId, Timers};

/// Most timers fired in one turn. A handler that keeps arming timers already due (an interval
/// shorter than its handling) would otherwise keep the turn from ever returning to `poll`,
/// starving I/O and the termination signal; the rest fire next turn, after a zero-timeout poll.
pub(crate) const TIMERS_PER_TURN: usize = 4096;

const WAKER: Token = Token(usize::MAX);
const SIGNAL: Token = Token(usize::MAX - 1);
const PRECISE: Token = Token(usize::MAX - 2);

/// Waits for a timer shorter than this are ended by a timerfd armed at the timer's deadline:
/// `epoll_wait` takes whole milliseconds (mio rounds a 300 µs wait up to 1 ms), which would
/// make every open-loop request sent on a timer up to a millisecond late. Longer waits (idle
/// timeouts of seconds) keep the plain timeout: a millisecond is nothing to them, and they
/// cost no extra system call.
pub(crate) const PRECISE_BELOW: Duration = Duration::from_millis(100);

/// What an event reports. Deferred re-dispatches report readable + writable + deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready(u8);

impl Ready {
    pub const READABLE: Ready = Ready(1);
    pub const WRITABLE: Ready = Ready(2);
    pub const READ_CLOSED: Ready = Ready(4);
    pub const WRITE_CLOSED: Ready = Ready(8);
    pub const ERROR: Ready = Ready(16);
    pub(crate) const DEFERRED: Ready = Ready(32 | 1 | 2);

    fn from_event(e: &mio::event::Event) -> Ready {
        let mut b = 0;
        if e.is_readable() {
            b |= 1;
        }
        if e.is_writable() {
            b |= 2;
        }
        if e.is_read_closed() {
            b |= 4 | 1;
        }
        if e.is_write_closed() {
            b |= 8 | 2;
        }
        if e.is_error() {
            b |= 16 | 1 | 2;
        }
        Ready(b)
    }

    pub(crate) fn is_readable(self) -> bool {
        self.0 & 1 != 0
    }
    pub(crate) fn is_writable(self) -> bool {
        self.0 & 2 != 0
    }
    pub(crate) fn is_read_closed(self) -> bool {
        self.0 & 4 != 0
    }
    pub fn is_write_closed(self) -> bool {
        self.0 & 8 != 0
    }
    pub fn is_error(self) -> bool {
        self.0 & 16 != 0
    }
    /// A re-dispatch of a connection that went over budget (not a kernel event).
    pub(crate) fn is_deferred(self) -> bool {
        self.0 & 32 != 0
    }
}

/// The reactor's state as seen by handlers: the slab of entries, the timers, the ready queue.
pub struct Ctx<S> {
    /// The entries. Fields are public so a handler can borrow an entry and the timers at once.
    pub slab: Slab<S>,
    pub timers: Timers,
    registry: Registry,
    ready: Vec<Key>,
    stop: bool,
    now: Instant,
    handle: Handle,
}

impl<S: Entry> Ctx<S> {
    /// Stores `value` and registers its source for `interest` (edge-triggered).
    pub fn insert(&mut self, value: S, interest: Interest) -> std::io::Result<Key> {
        let key = self.slab.insert(value);
        let entry = self.slab.get_mut(key).expect("just inserted");
        if let Err(e) = self
            .registry
            .register(entry.source(), key.token(), interest)
        {
            self.slab.remove(key);
            return Err(e);
        }
        Ok(key)
    }

    /// Changes the interest of an entry's source.
    pub(crate) fn reregister(&mut self, key: Key, interest: Interest) -> std::io::Result<()> {
        match self.slab.get_mut(key) {
            Some(e) => self.registry.reregister(e.source(), key.token(), interest),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    /// Deregisters the entry's source, then takes it out of the slab. Dropping the returned
    /// value closes it.
    pub(crate) fn remove(&mut self, key: Key) -> Option<S> {
        let e = self.slab.get_mut(key)?;
        // Deregistering can only fail if the fd is already gone from the epoll set; the entry
        // is removed either way.
        let _ = self.registry.deregister(e.source());
        self.slab.remove(key)
    }
}

impl<S> Ctx<S> {
    /// Queues `key` to be dispatched again next turn ([`Ready::DEFERRED`]); the next poll will
    /// not block. Queuing twice in one turn is a no-op.
    pub(crate) fn defer(&mut self, key: Key) {
        if self.slab.mark_queued(key) {
            self.ready.push(key);
        }
    }

    /// The time of the current turn (read once after `epoll_wait` returned).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Arms a timer at `at` for (`key`, `tag`).
    pub fn add_timer(&mut self, at: Instant, key: Key, tag: u64) -> TimerId {
        self.timers.add(at, key, tag)
    }

    /// Arms a timer `after` from now.
    pub(crate) fn add_timer_after(&mut self, after: Duration, key: Key, tag: u64) -> TimerId {
        self.timers.add(self.now + after, key, tag)
    }

    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }

    /// Ends [`Reactor::run`] after this turn.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    pub fn is_stopping(&self) -> bool {
        self.stop
    }

    /// A handle for other threads.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The registry, for sources not kept in the slab.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The callbacks of a reactor's user.
pub trait Handler<S> {
    /// I/O readiness for `key` (or a deferred re-dispatch, see [`Ready::is_deferred`]).
    fn on_event(&mut self, cx: &mut Ctx<S>, key: Key, ready: Ready);
    /// A timer armed with (`key`, `tag`) fired. `key` may be stale (entry gone).
    fn on_timer(&mut self, _cx: &mut Ctx<S>, _key: Key, _tag: u64) {}
    /// The reactor was woken through its [`Handle`] (drain your [`Mailbox`]es here).
    fn on_wake(&mut self, _cx: &mut Ctx<S>) {}
    /// [`Reactor::run`] is about to return.
    fn on_stop(&mut self, _cx: &mut Ctx<S>) {}
}

/// Counters of a reactor's work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReactorStats {
    pub turns: u64,
    pub events: u64,
    /// Events for entries already removed (ignored).
    pub stale: u64,
    pub timers: u64,
    pub deferred: u64,
    pub wakes: u64,
    /// Times the timerfd of a short wait was armed.
    pub precise_arms: u64,
}

/// The event loop. See the module documentation.
pub struct Reactor<S> {
    poll: Poll,
    events: Events,
    cx: Ctx<S>,
    scratch: Vec<Key>,
    stats: ReactorStats,
    /// The timerfd of short waits (see [`PRECISE_BELOW`]) and the deadline it is armed for.
    precise: TimerFd,
    armed: Option<Instant>,
    /// Busy-poll: every wait is a zero-timeout poll (see [`Reactor::set_spin`]).
    spin: bool,
}

impl<S> Reactor<S> {
    /// A reactor receiving up to `events` events per `epoll_wait`.
    pub fn new(events: usize) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let registry = poll.registry().try_clone()?;
        let precise = TimerFd::new()?;
        registry.register(
            &mut SourceFd(&precise.as_raw_fd()),
            PRECISE,
            Interest::READABLE,
        )?;
        Ok(Reactor {
            poll,
            events: Events::with_capacity(events.max(16)),
            cx: Ctx {
                slab: Slab::new(),
                timers: Timers::new(),
                registry,
                ready: Vec::new(),
                stop: false,
                now: Instant::now(),
                handle: Handle::new(waker),
            },
            scratch: Vec::new(),
            stats: ReactorStats::default(),
            precise,
            armed: None,
            spin: false,
        })
    }

    /// The context, to insert entries and arm timers before (or between) turns.
    pub fn cx(&mut self) -> &mut Ctx<S> {
        &mut self.cx
    }

    pub fn handle(&self) -> Handle {
        self.cx.handle.clone()
    }

    pub fn stats(&self) -> ReactorStats {
        self.stats
    }

    /// Busy-poll instead of sleeping: every turn polls with a zero timeout, so the thread never
    /// waits to be woken (from idle, tens of microseconds in a VM) for an event or a timer, at
    /// the cost of a whole core. Timers still fire when due, checked every turn.
    pub(crate) fn set_spin(&mut self, on: bool) {
        self.spin = on;
    }

    /// Stops [`Reactor::run`] on SIGINT or SIGTERM (installs the process-wide handlers).
    pub fn watch_termination_signals(&mut self) -> std::io::Result<()> {
        let fd = crate::sys::signal::termination_fd()?;
        self.poll
            .registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), SIGNAL, Interest::READABLE)
    }

    /// One turn: poll for at most `max_wait` (and never past the next timer; zero while
    /// connections are deferred), then dispatch. `None` waits for the next timer or event.
    pub fn turn<H: Handler<S>>(
        &mut self,
        h: &mut H,
        max_wait: Option<Duration>,
    ) -> std::io::Result<()> {
        let cx = &mut self.cx;
        if cx.handle.is_stopping() {
            cx.stop = true;
            return Ok(());
        }
        let now = Instant::now();
        let mut timeout = if cx.ready.is_empty() {
            cx.timers
                .next_deadline()
                .map(|d| d.saturating_duration_since(now))
        } else {
            Some(Duration::ZERO)
        };
        if let Some(m) = max_wait {
            timeout = Some(timeout.map_or(m, |t| t.min(m)));
        }
        if self.spin {
            timeout = Some(Duration::ZERO);
        }
        if let Some(t) = timeout.filter(|t| !t.is_zero() && *t < PRECISE_BELOW) {
            // mio rounds `t` up to whole milliseconds; the timerfd ends the wait on time.
            let at = now + t;
            if self.armed != Some(at) {
                self.precise.arm_in(t)?;
                self.armed = Some(at);
                self.stats.precise_arms += 1;
            }
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.stats.turns += 1;
        cx.now = Instant::now();
        std::mem::swap(&mut self.scratch, &mut cx.ready);
        let mut woke = false;
        for ev in self.events.iter() {
            match ev.token() {
                WAKER => woke = true,
                // The pipe is deliberately not drained: several reactors may watch it, and
                // epoll re-checks readiness when it reports an event, so a reactor that drained
                // it would hide the event from the others. Termination is final anyway.
                SIGNAL => cx.stop = true,
                // Edge-triggered and one-shot: nothing to read; re-arming clears its count.
                PRECISE => self.armed = None,
                t => {
                    let key = Key::from_token(t);
                    if cx.slab.contains(key) {
                        self.stats.events += 1;
                        h.on_event(cx, key, Ready::from_event(ev));
                    } else {
                        self.stats.stale += 1;
                    }
                }
            }
        }
        if woke {
            self.stats.wakes += 1;
            h.on_wake(cx);
        }
        for _ in 0..TIMERS_PER_TURN {
            let Some((key, tag)) = cx.timers.pop_expired(cx.now) else {
                break;
            };
            self.stats.timers += 1;
            h.on_timer(cx, key, tag);
        }
        for key in self.scratch.drain(..) {
            if cx.slab.take_queued(key) {
                self.stats.deferred += 1;
                h.on_event(cx, key, Ready::DEFERRED);
            }
        }
        if cx.handle.is_stopping() {
            cx.stop = true;
        }
        Ok(())
    }

    /// Turns until stopped ([`Handle::stop`], [`Ctx::stop`] or a watched signal), then calls
    /// [`Handler::on_stop`].
    pub fn run<H: Handler<S>>(&mut self, h: &mut H) -> std::io::Result<()> {
        while !self.cx.stop {
            self.turn(h, None)?;
        }
        h.on_stop(&mut self.cx);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
