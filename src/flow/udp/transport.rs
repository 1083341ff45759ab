//! How the blasting loop's batch reaches the kernel: the [`Transport`] contract, and its mio
//! implementation ([`MmsgTransport`], one `sendmmsg` per attempt). The io_uring implementation
//! (`RingTransport`, linked `SEND`s) is in `super::uring`; both sides take the trait from here.

use std::io;
use std::net::UdpSocket;

use super::report::ZeroCopyStats;
use crate::sys::mmsg::SendBatch;

/// Where the blasting loop's batch lives and how it reaches the kernel: messages of up to
/// `slot` bytes, each holding whole datagrams (several with GSO).
pub(crate) trait Transport {
    /// Messages per batch.
    fn capacity(&self) -> usize;
    /// The whole slot `i`, to write datagrams into (never while it is in flight).
    fn slot_mut(&mut self, i: usize) -> &mut [u8];
    /// How many bytes of slot `i` the next send carries.
    fn set_len(&mut self, i: usize, len: usize);
    /// Sends messages `from..to`; returns how many the kernel took (at least one; always a
    /// prefix), or the error of the first message when it took none.
    fn send(&mut self, from: usize, to: usize) -> io::Result<usize>;
    /// Drops the batch for `n` messages of `slot` bytes (GSO fell back to single datagrams).
    fn rebuild(&mut self, n: usize, slot: usize);
    /// System calls made so far (`sendmmsg`, or `io_uring_enter`).
    fn syscalls(&self) -> u64;
    /// What the zero-copy notifications said (None: not sending zero-copy).
    fn zerocopy(&self) -> Option<ZeroCopyStats> {
        None
    }
}

/// The mio backend: one `sendmmsg` per attempt.
pub(crate) struct MmsgTransport<'a> {
    sock: &'a UdpSocket,
    batch: SendBatch,
    calls: u64,
}

impl<'a> MmsgTransport<'a> {
    /// An empty batch on `sock` (the loop sizes it with [`Transport::rebuild`]).
    pub fn new(sock: &'a UdpSocket) -> Self {
        MmsgTransport {
            sock,
            batch: SendBatch::new(1, 1),
            calls: 0,
        }
    }
}

impl Transport for MmsgTransport<'_> {
    fn capacity(&self) -> usize {
        self.batch.capacity()
    }
    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        self.batch.slot_mut(i)
    }
    fn set_len(&mut self, i: usize, len: usize) {
        self.batch.set_len(i, len)
    }
    fn send(&mut self, from: usize, to: usize) -> io::Result<usize> {
        self.calls += 1;
        self.batch.send(self.sock, from, to)
    }
    fn rebuild(&mut self, n: usize, slot: usize) {
        self.batch = SendBatch::new(n, slot);
    }
    fn syscalls(&self) -> u64 {
        self.calls
    }
}
