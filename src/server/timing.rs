//! Request latency for `serve --metrics`, the same in every model: from the read that brought
//! a request's last byte to the hand-off of its answer to the socket (the blocking models:
//! `write` returned; `epoll`: the output buffer emptied into the socket; `uring`: the send
//! was submitted). The session stays clock-free: a driver tells the [`RequestClock`] when it
//! read and when it handed output off, and the clock counts the answers in between with
//! [`Session::answered`].
//!
//! The arrival time is the read's (`epoll`: the reactor turn's, read once after
//! `epoll_wait`; `uring`: the completion's). Requests pipelined in one read share it. A
//! request held behind another (a `SLEEP`, a full output) is timed from the read of the
//! oldest request still owed an answer then: an upper bound, exact when nothing is held. An
//! answer without a complete request (a line timeout) is timed from the last read.
//!
//! Cost: no clock is read unless the counters time requests ([`Counters::times_requests`]);
//! then one clock read per hand-off that carries answers (not per request) and two relaxed
//! atomic adds into the shared histogram.

use std::time::Instant;

use crate::proto::{Counters, Session};

/// One connection's request timing.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestClock {
    /// When the oldest request owed an answer (or answered, not yet handed off) was read.
    since: Option<Instant>,
    /// The last read.
    last: Option<Instant>,
    /// [`Session::answered`] at the last hand-off.
    handed: u64,
}

impl RequestClock {
    /// Call after the session took input (or the end of input) read at `t`.
    #[inline]
    pub fn read(&mut self, s: &Session, t: Instant) {
        self.last = Some(t);
        if self.since.is_none() && (s.answered() > self.handed || s.holds_requests()) {
            self.since = Some(t);
        }
    }

    /// Call when the output, every answer so far in it, was handed to the socket: reads the
    /// clock and records the answers it carried, if the counters time requests.
    #[inline]
    pub fn handed_off(&mut self, s: &Session, c: &Counters) {
        if c.times_requests() && s.answered() > self.handed {
            self.record(s, c, Instant::now());
        }
    }

    #[cfg(any(feature = "uring", test))]
    /// For drivers that hand off later than they decide to (`uring` submits a turn's sends at
    /// once): takes the answers due, as (arrival, count), to be recorded with
    /// [`RequestClock::record_at`] at the hand-off.
    pub(crate) fn take_due(&mut self, s: &Session, c: &Counters) -> Option<(Instant, u64)> {
        if !c.times_requests() || s.answered() <= self.handed {
            return None;
        }
        let n = s.answered() - self.handed;
        let since = self.start();
        self.settle(s);
        Some((since, n))
    }

    /// Records `n` answers that arrived at `since` and were handed off at `at`.
    pub(crate) fn record_at(c: &Counters, since: Instant, n: u64, at: Instant) {
        let ns = at.saturating_duration_since(since).as_nanos();
        c.request_latency(n, u64::try_from(ns).unwrap_or(u64::MAX));
    }

    fn record(&mut self, s: &Session, c: &Counters, at: Instant) {
        let n = s.answered() - self.handed;
        Self::record_at(c, self.start(), n, at);
        self.settle(s);
    }

    /// The arrival of the answers due: the oldest owed request's read, else the last read.
    fn start(&self) -> Instant {
        self.since.or(self.last).unwrap_or_else(Instant::now)
    }

    /// The answers so far are handed off; what is still owed keeps its arrival.
    fn settle(&mut self, s: &Session) {
        self.handed = s.answered();
        if !s.holds_requests() {
            self.since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{SessionConfig, Step};
    use std::time::Duration;

    #[test]
    fn answers_are_timed_from_the_read_that_completed_them() {
        let c = Counters::local().timing_requests();
        let mut s = Session::new(SessionConfig::default());
        let mut out = Vec::new();
        let mut clock = RequestClock::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        // A partial line is owed nothing: its arrival is the read that completes it.
        s.input(b"ECH", &mut out, &c);
        clock.read(&s, t0);
        s.input(b"O a\nECHO b\nSLEEP 5\nECHO c\n", &mut out, &c);
        clock.read(&s, t0 + 10 * ms);
        // Two answers handed off 1 ms later; the SLEEP and the ECHO behind it are owed.
        let (since, n) = clock.take_due(&s, &c).unwrap();
        assert_eq!((since, n), (t0 + 10 * ms, 2));
        RequestClock::record_at(&c, since, n, t0 + 11 * ms);
        assert!(clock.take_due(&s, &c).is_none());
        // More input while the SLEEP is pending does not move the arrival.
        s.input(b"ECHO d\n", &mut out, &c);
        clock.read(&s, t0 + 12 * ms);
        s.finish_sleep(&mut out, &c);
        assert_eq!(s.resume(&mut out, &c), Step::NeedInput);
        let (since, n) = clock.take_due(&s, &c).unwrap();
        assert_eq!((since, n), (t0 + 10 * ms, 3));
        RequestClock::record_at(&c, since, n, t0 + 20 * ms);
        let l = c.latency();
        assert_eq!(l.count(), 5);
        assert_eq!(l.sum_ns, 2 * 1_000_000 + 3 * 10_000_000);
        assert_eq!(l.count(), s.stats().requests);
        // Nothing owed: the next read starts afresh.
        s.input(b"ECHO e\n", &mut out, &c);
        clock.read(&s, t0 + 30 * ms);
        assert_eq!(clock.take_due(&s, &c), Some((t0 + 30 * ms, 1)));
    }

    #[test]
    fn nothing_is_timed_unless_asked() {
        let c = Counters::local();
        let mut s = Session::new(SessionConfig::default());
        let mut out = Vec::new();
        let mut clock = RequestClock::default();
        s.input(b"ECHO a\n", &mut out, &c);
        clock.read(&s, Instant::now());
        clock.handed_off(&s, &c);
        assert!(clock.take_due(&s, &c).is_none());
        assert_eq!(c.latency().count(), 0);
    }
}
