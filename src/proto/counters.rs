//! Server-wide counters shared by every connection of a server (and across `fork`), and the
//! request-latency histogram of `serve --metrics` beside them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

const N_COUNTERS: usize = LATENCY_BUCKETS + LATENCY_BOUNDS_NS.len() + 1;
const CONNS: usize = 0;
const ACTIVE: usize = 1;
pub(super) const REQUESTS: usize = 2;
pub(super) const ERRORS: usize = 3;
pub(super) const BYTES_IN: usize = 4;
pub(super) const BYTES_OUT: usize = 5;
/// The first of the per-kind error counters (one per [`ErrorKind`]).
const ERROR_KINDS: usize = 6;
/// The sum of the request latencies in nanoseconds.
const LATENCY_SUM: usize = ERROR_KINDS + ErrorKind::ALL.len();
/// The first request-latency bucket (one per bound, then one above the last).
const LATENCY_BUCKETS: usize = LATENCY_SUM + 1;

/// Upper bounds (inclusive) of the request-latency buckets in nanoseconds: 1 µs to 50 s,
/// three a decade; one more bucket holds what is above the last (`+Inf`). Fixed buckets, not
/// an HDR histogram: they live in the shared counters, so every model (`fork` included) adds
/// to them with one atomic add, and a scrape reads them as they are.
pub(crate) const LATENCY_BOUNDS_NS: [u64; 24] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    25_000_000_000,
    50_000_000_000,
];

/// The request-latency histogram as read at one moment: `buckets[i]` requests took at most
/// `LATENCY_BOUNDS_NS[i]` (and more than the bound before); the last bucket is above them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyBuckets {
    pub buckets: [u64; LATENCY_BOUNDS_NS.len() + 1],
    pub sum_ns: u64,
}

impl LatencyBuckets {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Why a request failed (each failed request also counts in `errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not a request: an unknown command, bad arguments, a malformed HTTP request (`400`).
    BadRequest,
    /// An HTTP route that does not exist (`404`) or a method it does not take (`405`).
    NotFound,
    /// A line or request head over its limit (`413`, `431`).
    TooLarge,
    /// An incomplete request older than the idle timeout (`408`).
    Timeout,
}

impl ErrorKind {
    pub(crate) const ALL: [ErrorKind; 4] = [
        ErrorKind::BadRequest,
        ErrorKind::NotFound,
        ErrorKind::TooLarge,
        ErrorKind::Timeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NotFound => "not_found",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Timeout => "timeout",
        }
    }
}

/// Server-wide counters (relaxed atomics). [`Counters::shared`] puts them in memory shared with
/// forked children, so every model, `fork` included, totals the same way.
#[derive(Clone, Copy)]
pub struct Counters {
    c: &'static [AtomicU64],
    /// The drivers time requests into the latency histogram ([`Counters::timing_requests`]).
    timed: bool,
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
            timed: false,
        })
    }

    /// Process-private counters (leaked: create a few per process, not per connection).
    pub fn local() -> Counters {
        let v: Vec<AtomicU64> = (0..N_COUNTERS).map(|_| AtomicU64::new(0)).collect();
        Counters {
            c: Box::leak(v.into_boxed_slice()),
            timed: false,
        }
    }

    /// These counters with the request-latency histogram kept: the drivers read the clock
    /// when they hand answers to a socket (`serve --metrics`; without it they do not).
    pub fn timing_requests(self) -> Counters {
        Counters {
            timed: true,
            ..self
        }
    }

    /// True when the drivers should time requests ([`Counters::request_latency`]).
    #[inline]
    pub(crate) fn times_requests(&self) -> bool {
        self.timed
    }

    /// `n` requests answered `ns` nanoseconds after they were read.
    #[inline]
    pub(crate) fn request_latency(&self, n: u64, ns: u64) {
        let i = LATENCY_BOUNDS_NS.partition_point(|&b| b < ns);
        self.add(LATENCY_BUCKETS + i, n);
        self.add(LATENCY_SUM, ns.saturating_mul(n));
    }

    /// The request-latency histogram now.
    pub fn latency(&self) -> LatencyBuckets {
        let g = |i: usize| self.c[i].load(Ordering::Relaxed);
        LatencyBuckets {
            buckets: std::array::from_fn(|i| g(LATENCY_BUCKETS + i)),
            sum_ns: g(LATENCY_SUM),
        }
    }

    #[inline]
    pub(super) fn add(&self, i: usize, n: u64) {
        self.c[i].fetch_add(n, Ordering::Relaxed);
    }

    /// One failed request of `kind`.
    #[inline]
    pub(super) fn error(&self, kind: ErrorKind) {
        self.add(ERRORS, 1);
        self.add(ERROR_KINDS + kind as usize, 1);
    }

    /// The failed requests by kind, in the order of [`ErrorKind::ALL`].
    pub(crate) fn errors_by_kind(&self) -> [(ErrorKind, u64); 4] {
        ErrorKind::ALL.map(|k| (k, self.c[ERROR_KINDS + k as usize].load(Ordering::Relaxed)))
    }

    pub(crate) fn conn_opened(&self) {
        self.add(CONNS, 1);
        self.add(ACTIVE, 1);
    }

    pub(crate) fn conn_closed(&self) {
        self.c[ACTIVE].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn active(&self) -> u64 {
        self.c[ACTIVE].load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> Totals {
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
    fn counters() {
        let c = Counters::local();
        c.conn_opened();
        c.conn_opened();
        c.conn_closed();
        let t = c.snapshot();
        assert_eq!((t.connections, t.active), (2, 1));
        c.error(ErrorKind::Timeout);
        c.error(ErrorKind::Timeout);
        c.error(ErrorKind::NotFound);
        assert_eq!(c.snapshot().errors, 3);
        let by: Vec<u64> = c.errors_by_kind().iter().map(|x| x.1).collect();
        assert_eq!(by, [0, 1, 0, 2]);
    }

    #[test]
    fn request_latency_lands_in_its_bucket() {
        let c = Counters::local();
        assert!(!c.times_requests() && c.timing_requests().times_requests());
        c.request_latency(3, 1_000); // on a bound: that bucket
        c.request_latency(1, 1_001);
        c.request_latency(2, 60_000_000_000); // above the last
        c.request_latency(1, 0);
        let l = c.latency();
        assert_eq!(l.count(), 7);
        assert_eq!((l.buckets[0], l.buckets[1]), (4, 1));
        assert_eq!(l.buckets[LATENCY_BOUNDS_NS.len()], 2);
        assert_eq!(l.sum_ns, 3_000 + 1_001 + 120_000_000_000);
        // The error counters are not touched.
        assert_eq!(c.snapshot(), Totals::default());
    }
}
