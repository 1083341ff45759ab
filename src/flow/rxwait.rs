//! How a receiving thread waits for data while a test runs, UDP and TCP alike.
//!
//! On loopback the sender's core runs the receive path, including the wake-up of a receiver
//! asleep in its receive call (in a VM, an inter-processor interrupt through the hypervisor).
//! A receiver that polls without blocking and naps when nothing is queued takes that cost off
//! the sender's core: measured here, a TCP stream from `iperf3 -c` reached 1.35x the rate it
//! reaches against a receiver that blocks, at about a third of the receiver's core.

use std::time::Duration;

/// How the receiving thread waits for data while a test runs (between tests it always blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxWait {
    /// Sleep in the receive call; the kernel wakes the thread when data arrives. On loopback
    /// that wake-up runs on the sender's core, once per read that finds us asleep.
    Block,
    /// Read without blocking; when nothing is queued, nap for [`POLL_NAP`]. No wake-ups are
    /// charged to the sender, the receiver's core is mostly idle, latency grows by the nap.
    Poll,
    /// Read without blocking and never sleep (burns the receiver's core).
    Spin,
}

/// The nap of [`RxWait::Poll`] when the socket is empty.
pub const POLL_NAP: Duration = Duration::from_micros(50);

impl RxWait {
    /// How a TCP reader waits given the test's `--window`: with fixed buffers the default nap
    /// holds the sender up (a nap of 50 µs and more is longer than a small window takes to
    /// fill, and the writer waits on it), so such a reader blocks unless told to spin.
    /// Measured on loopback, 2 s runs, recv on its own CPU: blocking read 1.3-1.6x what
    /// napping did at --window 4K and 16K, and more at 64K-1M.
    pub(crate) fn for_window(self, window: Option<u64>) -> RxWait {
        match (self, window) {
            (RxWait::Poll, Some(_)) => RxWait::Block,
            (w, _) => w,
        }
    }
}
