//! I/O helpers for handlers: budgeted draining of edge-triggered reads, and an output buffer
//! that writes directly and keeps only what the socket did not take.

use std::io::{self, Read, Write};

/// Per-connection fairness budget for one reactor turn: at most `reads` read calls and `bytes`
/// bytes. A connection that exhausts it should be [deferred](super::Ctx::defer) so the others get
/// their turn (tokio's coop budget; monoio's max-round rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub reads: u32,
    pub bytes: usize,
}

impl Budget {
    /// 16 reads or 64 KiB per connection per turn.
    pub(crate) const DEFAULT: Budget = Budget {
        reads: 16,
        bytes: 64 * 1024,
    };

    pub fn new(reads: u32, bytes: usize) -> Self {
        Budget { reads, bytes }
    }

    /// Spends one read of `n` bytes.
    pub(crate) fn spend(&mut self, n: usize) {
        self.reads = self.reads.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(n);
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.reads == 0 || self.bytes == 0
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::DEFAULT
    }
}

/// Why [`drain_read`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The socket is empty; wait for the next readiness edge.
    WouldBlock,
    /// The peer closed its write side (read returned 0).
    Eof,
    /// The budget ran out with data possibly left: defer the connection.
    Budget,
    /// The consumer asked to stop (e.g. its output is backed up); resume it later yourself.
    Paused,
}

/// Reads from `src` into `buf` until `WouldBlock`, EOF, the budget runs out or `on_data`
/// returns false, handing each chunk to `on_data`. `Interrupted` is retried; other errors are
/// returned.
pub fn drain_read<R: Read + ?Sized>(
    src: &mut R,
    buf: &mut [u8],
    budget: &mut Budget,
    mut on_data: impl FnMut(&[u8]) -> bool,
) -> io::Result<Drained> {
    loop {
        if budget.exhausted() {
            return Ok(Drained::Budget);
        }
        let want = buf.len().min(budget.bytes.max(1));
        match src.read(&mut buf[..want]) {
            Ok(0) => return Ok(Drained::Eof),
            Ok(n) => {
                budget.spend(n);
                if !on_data(&buf[..n]) {
                    return Ok(Drained::Paused);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Drained::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Bytes waiting to be written to a non-blocking socket. Write what you have with
/// [`OutBuf::flush`]: it writes directly and keeps only the unsent rest, so in the common case
/// (the socket takes everything) nothing is copied twice and no memory is allocated once the
/// buffer has grown to its working size.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    off: usize,
}

impl OutBuf {
    pub fn new() -> Self {
        Self::default()
    }

    /// The vector to append output to.
    pub fn vec(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.off
    }

    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Writes as much as the socket takes. Returns true when everything was written.
    /// Capacity above `keep` bytes is released once the buffer empties.
    pub fn flush<W: Write + ?Sized>(&mut self, dst: &mut W, keep: usize) -> io::Result<bool> {
        while self.off < self.buf.len() {
            match dst.write(&self.buf[self.off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.off = 0;
        if self.buf.capacity() > keep {
            self.buf = Vec::new();
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_reads_and_bytes() {
        let mut b = Budget::new(2, 100);
        b.spend(10);
        assert!(!b.exhausted());
        b.spend(10);
        assert!(b.exhausted());
        let mut b = Budget::new(10, 100);
        b.spend(100);
        assert!(b.exhausted());
    }

    #[test]
    fn drain_stops_on_budget_and_eof() {
        let data = vec![7u8; 1000];
        let mut src = &data[..];
        let mut buf = [0u8; 64];
        let mut b = Budget::new(4, 1 << 20);
        let mut got = 0;
        let r = drain_read(&mut src, &mut buf, &mut b, |d| {
            got += d.len();
            true
        })
        .unwrap();
        assert_eq!((r, got), (Drained::Budget, 256));
        let mut b = Budget::new(100, 1 << 20);
        let r = drain_read(&mut src, &mut buf, &mut b, |d| {
            got += d.len();
            true
        })
        .unwrap();
        assert_eq!((r, got), (Drained::Eof, 1000));
    }

    #[test]
    fn outbuf_keeps_only_the_rest() {
        struct Slow(Vec<u8>, usize);
        impl Write for Slow {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.1 == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = b.len().min(self.1);
                self.1 -= n;
                self.0.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut o = OutBuf::new();
        o.vec().extend_from_slice(b"hello world");
        let mut w = Slow(vec![], 5);
        assert!(!o.flush(&mut w, 1024).unwrap());
        assert_eq!(o.pending(), 6);
        w.1 = 100;
        assert!(o.flush(&mut w, 1024).unwrap());
        assert_eq!(w.0, b"hello world");
        assert!(o.is_empty());
    }
}
