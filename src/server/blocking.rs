//! The blocking connection driver shared by the `iterative`, `fork`, `thread` and `pool`
//! models: read, feed the session, write, with `SLEEP` sleeping the thread (while watching the
//! socket for a hang-up). Output is written whenever the session reaches its limit
//! ([`super::limits`]), so a peer that does not read blocks its thread in `write` (bounded by
//! the idle timeout) with at most that much output held.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::proto::{Session, Step};

use super::limits::{self, LineClock};
use super::timing::RequestClock;
use super::{Shared, LINGER, LINGER_BYTES};

/// Serves one connection to the end. Counts it opened/closed in `sh.counters`. Never panics on
/// peer misbehaviour: resets, timeouts and write errors just end the connection.
pub(crate) fn serve_conn(mut s: TcpStream, sh: &Shared) {
    sh.counters.conn_opened();
    let _ = serve(&mut s, sh);
    sh.counters.conn_closed();
}

fn serve(s: &mut TcpStream, sh: &Shared) -> io::Result<()> {
    s.set_nodelay(true)?;
    // The idle timeout bounds a silent client, one that stops reading (the write timeout) and
    // one that sends a line too slowly (the read timeout is cut to the line's deadline).
    s.set_write_timeout(sh.idle_timeout)?;
    let c = &sh.counters;
    let mut session = limits::session(sh.session);
    let mut line = LineClock::default();
    let mut clock = RequestClock::default();
    let mut timeout = ReadTimeout::default();
    let mut buf = vec![0u8; 16 * 1024];
    // Room for the limit and an answer past it, so the vector does not double when full.
    let mut out = Vec::with_capacity(limits::OUT_LIMIT + 4096);
    loop {
        let deadline = line.deadline(sh.idle_timeout);
        let wait = match deadline {
            Some(d) => Some(d.saturating_duration_since(Instant::now())),
            None => sh.idle_timeout,
        };
        let mut step = if wait.is_some_and(|w| w.is_zero()) {
            session.line_timeout(&mut out, c)
        } else {
            timeout.set(s, wait)?;
            match s.read(&mut buf) {
                Ok(0) => {
                    let step = session.eof(&mut out, c);
                    if c.times_requests() {
                        clock.read(&session, Instant::now());
                    }
                    step
                }
                Ok(n) => {
                    let t = Instant::now();
                    let step = session.input(&buf[..n], &mut out, c);
                    line.update(&session, t);
                    clock.read(&session, t);
                    step
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) && deadline.is_some() => continue, // the line's turn
                Err(e) => return Err(e),                                    // idle timeout, reset
            }
        };
        loop {
            match step {
                Step::Sleep(d) => {
                    // Answer what precedes the SLEEP before sleeping.
                    s.write_all(&out)?;
                    clock.handed_off(&session, c);
                    out.clear();
                    timeout.forget();
                    sleep_watching(s, &mut session, d, &mut buf, &mut out, sh)?;
                    session.finish_sleep(&mut out, c);
                }
                Step::Cpu(job) => session.finish_cpu(job.run(), &mut out, c),
                Step::Flush => {
                    s.write_all(&out)?;
                    clock.handed_off(&session, c);
                    out.clear();
                }
                _ => break,
            }
            step = session.resume(&mut out, c);
        }
        s.write_all(&out)?;
        clock.handed_off(&session, c);
        out.clear();
        if out.capacity() > 2 * limits::OUT_LIMIT {
            out = Vec::with_capacity(limits::OUT_LIMIT + 4096);
        }
        if step == Step::Close {
            linger_close(s);
            return Ok(());
        }
    }
}

/// The socket's receive timeout as last set, so that it is set only when it changes: a
/// `setsockopt` before every `read` was a third system call per request (beside `read` and
/// `write`), with the idle timeout the same value each time.
#[derive(Default)]
struct ReadTimeout {
    /// `None`: not known (never set here, or changed behind our back).
    cur: Option<Option<Duration>>,
}

impl ReadTimeout {
    fn set(&mut self, s: &TcpStream, t: Option<Duration>) -> io::Result<()> {
        if self.cur != Some(t) {
            s.set_read_timeout(t)?;
            self.cur = Some(t);
        }
        Ok(())
    }

    /// The timeout is about to be set elsewhere.
    fn forget(&mut self) {
        self.cur = None;
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Sleeps `d` for a `SLEEP` while watching the connection: input is read into the session
/// (held behind the SLEEP, within [`limits::may_read`]), a half-close is passed on (the
/// session writes its probe byte, sent here), and a reset ends the connection at once instead
/// of after the sleep.
fn sleep_watching(
    s: &mut TcpStream,
    session: &mut Session,
    d: Duration,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    sh: &Shared,
) -> io::Result<()> {
    let c = &sh.counters;
    let end = Instant::now() + d;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
        let tick = left.min(limits::HANGUP_CHECK);
        if !limits::may_read(session, 0) {
            std::thread::sleep(tick);
            continue;
        }
        s.set_read_timeout(Some(tick))?;
        match s.read(buf) {
            Ok(0) => {
                session.eof(out, c);
                s.write_all(out)?;
                out.clear();
            }
            Ok(n) => {
                session.input(&buf[..n], out, c);
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Closes our side, then discards what the peer still sends (bounded in time and bytes), so
/// that closing with unread input does not reset the connection and destroy our last response.
pub(crate) fn linger_close(s: &mut TcpStream) {
    if s.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
