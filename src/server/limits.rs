//! What every model bounds per connection, decided in one place (issue #17: under abuse
//! nothing is lost and every resource stays bounded). The models differ in how they read,
//! write and wait; when they may read, how much they hold and when a line is too slow to come
//! are the same rules, here.
//!
//! * Output: the session stops answering at [`OUT_LIMIT`] bytes of output ([`Step::Flush`]);
//!   the driver writes it out and resumes the session once no more than [`OUT_LIMIT`] bytes
//!   wait for the peer. A connection with more than that waiting is not read
//!   ([`may_read`]): a peer that does not read stops being read (backpressure), so its
//!   requests stay in its own socket buffers, not in our memory.
//! * Input: a session holding more than [`IN_LIMIT`] bytes (lines behind a pending `SLEEP`,
//!   or behind a full output) is not read either.
//! * Request lines: an incomplete line older than the idle timeout closes the connection with
//!   `ERR line timeout` ([`LineClock`]); silence alone is the idle timeout's business.
//! * Hang-ups during a `SLEEP`: the session writes the answer's first byte when the peer
//!   half-closes ([`Session::probing`]); drivers check the socket's error every
//!   [`HANGUP_CHECK`] (or on its event) and drop a peer that answered with a reset.
//!
//! [`Step::Flush`]: crate::proto::Step::Flush

use std::time::{Duration, Instant};

use crate::proto::{Session, SessionConfig};

/// Output a session produces before it waits for the driver to write it out; also the most
/// output a connection may have waiting before it is no longer read.
pub(crate) const OUT_LIMIT: usize = 32 * 1024;
/// Input a session may hold (unanswered) before its connection is no longer read.
pub(crate) const IN_LIMIT: usize = 64 * 1024;
/// How often a connection whose peer half-closed during a `SLEEP` is checked for a reset.
pub(crate) const HANGUP_CHECK: Duration = Duration::from_millis(200);

/// The bounds as values (the models use [`Limits::DEFAULT`]; tests and fuzzing use small ones
/// to reach them with little input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Output bound ([`OUT_LIMIT`]).
    pub out: usize,
    /// Input bound ([`IN_LIMIT`]).
    pub input: usize,
}

impl Limits {
    pub(crate) const DEFAULT: Limits = Limits {
        out: OUT_LIMIT,
        input: IN_LIMIT,
    };

    /// A new connection's session, with the output bound.
    pub fn session(self, cfg: SessionConfig) -> Session {
        Session::new(cfg).with_out_limit(self.out)
    }

    /// May the driver read from this connection, with `unsent` bytes of output waiting?
    /// Reading goes on while a `SLEEP` or CPU job is pending (the input is held, bounded by
    /// `input`), so a peer that hangs up meanwhile is noticed.
    pub fn may_read(self, s: &Session, unsent: usize) -> bool {
        // An incomplete line is bounded by the session's line limit, and only more input
        // completes it: it never holds reading back.
        !s.is_closed()
            && !s.saw_eof()
            && unsent <= self.out
            && (s.buffered() <= self.input || s.partial_line())
    }

    /// May the driver run the session on (call `resume`), with `unsent` bytes of output
    /// waiting?
    pub fn may_answer(self, s: &Session, unsent: usize) -> bool {
        !s.is_closed() && !s.is_pending() && unsent <= self.out
    }
}

/// [`Limits::session`] with the default limits.
pub fn session(cfg: SessionConfig) -> Session {
    Limits::DEFAULT.session(cfg)
}

/// [`Limits::may_read`] with the default limits.
pub fn may_read(s: &Session, unsent: usize) -> bool {
    Limits::DEFAULT.may_read(s, unsent)
}

/// [`Limits::may_answer`] with the default limits.
pub fn may_answer(s: &Session, unsent: usize) -> bool {
    Limits::DEFAULT.may_answer(s, unsent)
}

/// When the incomplete request line a session holds started arriving.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LineClock {
    since: Option<Instant>,
    /// The session's request count when `since` was set: a new count means a new line.
    lines: u64,
}

impl LineClock {
    /// Call after the session took input that arrived at `now`.
    pub(crate) fn update(&mut self, s: &Session, now: Instant) {
        let lines = s.stats().requests;
        if !s.partial_line() {
            self.since = None;
        } else if self.since.is_none() || lines != self.lines {
            self.since = Some(now);
        }
        self.lines = lines;
    }

    /// When the incomplete line must be complete: `idle` after it started (None without an
    /// incomplete line or without an idle timeout).
    pub fn deadline(&self, idle: Option<Duration>) -> Option<Instant> {
        Some(self.since? + idle?)
    }

    /// True when the incomplete line's deadline has passed at `now`.
    pub(crate) fn expired(&self, idle: Option<Duration>, now: Instant) -> bool {
        self.deadline(idle).is_some_and(|d| d <= now)
    }

    /// When the connection's idle/line timer should next look at it: the line deadline or
    /// `idle` after `last_active`, whichever comes first.
    pub(crate) fn next_check(&self, idle: Duration, last_active: Instant) -> Instant {
        let quiet = last_active + idle;
        self.deadline(Some(idle)).map_or(quiet, |d| d.min(quiet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Counters;

    #[test]
    fn a_line_clock_restarts_with_every_new_line_only() {
        let srv = Counters::local();
        let mut s = session(SessionConfig::default());
        let mut out = Vec::new();
        let mut clock = LineClock::default();
        let idle = Some(Duration::from_secs(10));
        let t0 = Instant::now();
        s.input(b"EC", &mut out, &srv);
        clock.update(&s, t0);
        s.input(b"HO", &mut out, &srv);
        clock.update(&s, t0 + Duration::from_secs(5));
        assert_eq!(clock.deadline(idle), Some(t0 + Duration::from_secs(10)));
        assert!(clock.expired(idle, t0 + Duration::from_secs(10)));
        // The line completes and a new one starts in the same read.
        s.input(b" a\nECHO", &mut out, &srv);
        clock.update(&s, t0 + Duration::from_secs(6));
        assert_eq!(clock.deadline(idle), Some(t0 + Duration::from_secs(16)));
        s.input(b" b\n", &mut out, &srv);
        clock.update(&s, t0 + Duration::from_secs(7));
        assert_eq!(clock.deadline(idle), None);
        assert_eq!(clock.deadline(None), None);
        assert_eq!(out, b"a\nb\n");
    }

    #[test]
    fn output_is_bounded_and_reading_stops_behind_it() {
        let srv = Counters::local();
        let mut s = session(SessionConfig::default());
        let mut out = Vec::new();
        let input = b"STATS\n".repeat(10_000);
        let step = s.input(&input, &mut out, &srv);
        assert_eq!(step, crate::proto::Step::Flush);
        assert!(out.len() >= OUT_LIMIT && out.len() < OUT_LIMIT + 200);
        assert!(!may_answer(&s, out.len()) && !may_read(&s, out.len()));
        assert!(may_answer(&s, 0));
        // Written out: the rest is answered, limit by limit, every line once.
        let mut lines = out.iter().filter(|&&b| b == b'\n').count();
        loop {
            out.clear();
            let step = s.resume(&mut out, &srv);
            lines += out.iter().filter(|&&b| b == b'\n').count();
            if step != crate::proto::Step::Flush {
                break;
            }
        }
        assert_eq!(lines, 10_000);
    }
}
