//! Waking a ring from other threads: an `eventfd` the ring keeps a read operation on.
//!
//! Other threads [`post`](Notifier::post) messages into a queue; only the post that finds the
//! queue empty writes the eventfd, so a burst of messages costs one wakeup. The ring owner
//! keeps one `READ` of 8 bytes on [`Notifier::fd`] in flight; its completion means "drain
//! the queue" ([`Notifier::drain`]), after which the owner re-arms the read.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// A multi-producer queue drained by one ring, with its eventfd.
pub struct Notifier<M> {
    queue: Mutex<Vec<M>>,
    fd: OwnedFd,
}

impl<M> Notifier<M> {
    /// A new notifier with a blocking eventfd (the ring waits on it; no thread ever blocks on it).
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd(2) takes no pointers; the result is checked.
        let fd = unsafe { syscall!(eventfd(0, libc::EFD_CLOEXEC)) }?;
        Ok(Notifier {
            queue: Mutex::new(Vec::new()),
            // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The eventfd to read through the ring.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Queues `msg`, waking the ring if the queue was empty.
    pub fn post(&self, msg: M) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let e = q.is_empty();
            q.push(msg);
            e
        };
        if was_empty {
            self.wake();
        }
    }

    /// Makes the ring's eventfd read complete.
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: `one` is 8 readable bytes for the duration of the call. A failure can only be
        // a counter overflow, and then a wakeup is pending anyway.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Moves every queued message into `out` (appending).
    pub fn drain(&self, out: &mut Vec<M>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        out.append(&mut q);
    }
}
