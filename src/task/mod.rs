//! The task protocol and the per-connection session: pure, sans-IO code shared by every server
//! model.
//!
//! A [`Session`] takes the bytes a connection received and appends the response bytes to an
//! output vector, returning a [`Step`] that tells the driver what to do next: read more, close,
//! or complete a deferred operation (a `SLEEP` timer, or a CPU job too big to run inline) and
//! then call [`Session::finish_sleep`] / [`Session::finish_cpu`] and [`Session::resume`]. The
//! session never touches a socket, a clock or a thread, so each concurrency model (blocking
//! threads, forked processes, the reactor) is only a driver around this one implementation.
//!
//! # The `task` protocol
//! One request per line (`\n` or `\r\n`; responses always end in `\n`), one response line per
//! request, answered strictly in request order (a pending `SLEEP` holds back the responses of
//! the lines pipelined after it). Verbs are case-insensitive; the argument is everything after
//! the first space.
//!
//! | request | response |
//! |---|---|
//! | `ECHO text` | `text` |
//! | `UPPER text` | `text` upper-cased (Unicode) |
//! | `REVERSE text` | `text` with its characters (Unicode scalar values) reversed |
//! | `SUM n…` | the sum of the i64 arguments (`0` for none); `ERR` on overflow or a non-integer |
//! | `HASH rounds text` | 16 hex digits of [`hash`]`(rounds, text)`; `1 <= rounds <= 10_000_000` |
//! | `SLEEP ms` | `OK slept {ms}ms` after `ms` milliseconds, `0 <= ms <= 60_000` |
//! | `STATS` | `requests=… errors=… bytes_in=… bytes_out=… server_connections=… server_active=… server_requests=… server_errors=…` |
//! | `BYE` | `Goodbye!`, then the server closes |
//!
//! Unknown verbs, bad arguments, empty lines and invalid UTF-8 get `ERR reason` and the connection
//! stays open. A line longer than the limit (default 64 KiB, without its terminator) gets
//! `ERR line too long` and the connection is closed. When the peer half-closes, the lines already
//! received are answered (a final line without a terminator counts as a line), then the session
//! closes.
//!
//! # The `echo` protocol
//! Raw bytes are echoed back unchanged, no framing; each chunk of input counts as a request.

pub mod session;

pub use session::{CpuJob, Proto, Session, SessionConfig, Step};

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest accepted `HASH` round count.
pub const MAX_HASH_ROUNDS: u64 = 10_000_000;
/// Largest accepted `SLEEP` in milliseconds.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// Default line limit.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Default `HASH` round count above which the work is offloaded (where the driver can).
pub const DEFAULT_OFFLOAD_ROUNDS: u64 = 10_000;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The `HASH` verb: `h1 = fnv1a64(text)`, then `h(i+1) = fnv1a64(h(i) as 8 little-endian
/// bytes)` until `h(rounds)`. The cost is one pass over `text` plus 8 FNV steps per round
/// (10 million rounds are roughly a tenth of a second of one core).
pub fn hash(rounds: u64, text: &[u8]) -> u64 {
    CpuJob::new(fnv1a64(text), rounds).run()
}

const N_COUNTERS: usize = 6;
const CONNS: usize = 0;
const ACTIVE: usize = 1;
const REQUESTS: usize = 2;
const ERRORS: usize = 3;
const BYTES_IN: usize = 4;
const BYTES_OUT: usize = 5;

/// Server-wide counters (relaxed atomics). [`Counters::shared`] puts them in memory shared with
/// forked children, so every model, `fork` included, totals the same way.
#[derive(Clone, Copy)]
pub struct Counters {
    c: &'static [AtomicU64],
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub connections: u64,
    pub active: u64,
    pub requests: u64,
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connections={} requests={} errors={} bytes_in={} bytes_out={}",
            self.connections, self.requests, self.errors, self.bytes_in, self.bytes_out
        )
    }
}

impl Counters {
    /// Counters in an anonymous shared mapping (survive `fork`). Lives for the process.
    pub fn shared() -> std::io::Result<Counters> {
        Ok(Counters {
            c: crate::sys::process::shared_counters(N_COUNTERS)?,
        })
    }

    /// Process-private counters (leaked: create a few per process, not per connection).
    pub fn local() -> Counters {
        let v: Vec<AtomicU64> = (0..N_COUNTERS).map(|_| AtomicU64::new(0)).collect();
        Counters {
            c: Box::leak(v.into_boxed_slice()),
        }
    }

    #[inline]
    fn add(&self, i: usize, n: u64) {
        self.c[i].fetch_add(n, Ordering::Relaxed);
    }

    pub fn conn_opened(&self) {
        self.add(CONNS, 1);
        self.add(ACTIVE, 1);
    }

    pub fn conn_closed(&self) {
        self.c[ACTIVE].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn active(&self) -> u64 {
        self.c[ACTIVE].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Totals {
        let g = |i: usize| self.c[i].load(Ordering::Relaxed);
        Totals {
            connections: g(CONNS),
            active: g(ACTIVE),
            requests: g(REQUESTS),
            errors: g(ERRORS),
            bytes_in: g(BYTES_IN),
            bytes_out: g(BYTES_OUT),
        }
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        assert_eq!(hash(1, b"foobar"), 0x85944171f73967e8);
        assert_eq!(
            hash(2, b"foobar"),
            fnv1a64(&0x85944171f73967e8u64.to_le_bytes())
        );
    }

    #[test]
    fn counters() {
        let c = Counters::local();
        c.conn_opened();
        c.conn_opened();
        c.conn_closed();
        let t = c.snapshot();
        assert_eq!((t.connections, t.active), (2, 1));
    }
}
