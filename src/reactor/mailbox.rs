//! Cross-thread completions: other threads [`post`](Mailbox::post) messages, the reactor
//! [`drain`](Mailbox::drain)s them in its [`Handler::on_wake`](super::Handler::on_wake).
//!
//! Only the post that finds the mailbox empty wakes the reactor, so a burst of completions costs
//! one wakeup (one `eventfd` write and one extra `epoll_wait` return).

use std::sync::Mutex;

use super::handle::Handle;

/// A multi-producer queue drained by one reactor.
pub struct Mailbox<M> {
    queue: Mutex<Vec<M>>,
    handle: Handle,
}

impl<M> Mailbox<M> {
    /// A mailbox that wakes the reactor behind `handle`.
    pub fn new(handle: Handle) -> Self {
        Mailbox {
            queue: Mutex::new(Vec::new()),
            handle,
        }
    }

    /// Queues `msg` and wakes the reactor if the queue was empty.
    pub fn post(&self, msg: M) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let e = q.is_empty();
            q.push(msg);
            e
        };
        if was_empty {
            self.handle.wake();
        }
    }

    /// Moves every queued message into `out` (appending). Reuse `out` to avoid allocation.
    pub fn drain(&self, out: &mut Vec<M>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        out.append(&mut q);
    }
}
