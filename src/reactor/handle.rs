//! [`Handle`]: wake or stop a reactor from any thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::Waker;

/// A thread-safe handle to a reactor: wake it or stop it from anywhere.
#[derive(Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl Handle {
    pub(super) fn new(waker: Arc<Waker>) -> Self {
        Handle {
            waker,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Makes the reactor's current or next poll return and call [`Handler::on_wake`](super::Handler::on_wake).
    pub(crate) fn wake(&self) {
        // An eventfd write only fails if the counter would overflow, and then a wakeup is
        // already pending.
        let _ = self.waker.wake();
    }

    /// Asks the reactor to stop after its current turn.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
