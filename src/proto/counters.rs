//! Server-wide counters shared by every connection of a server (and across `fork`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

const N_COUNTERS: usize = 6;
const CONNS: usize = 0;
const ACTIVE: usize = 1;
pub(super) const REQUESTS: usize = 2;
pub(super) const ERRORS: usize = 3;
pub(super) const BYTES_IN: usize = 4;
pub(super) const BYTES_OUT: usize = 5;

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
    pub(super) fn add(&self, i: usize, n: u64) {
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
    fn counters() {
        let c = Counters::local();
        c.conn_opened();
        c.conn_opened();
        c.conn_closed();
        let t = c.snapshot();
        assert_eq!((t.connections, t.active), (2, 1));
    }
}
