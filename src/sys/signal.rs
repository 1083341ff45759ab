//! SIGINT/SIGTERM as a flag: commands poll [`stop_requested`] and finish their reports instead
//! of dying mid-write. The handler is installed without `SA_RESTART`, so a blocking call in
//! progress returns `EINTR` and the caller sees the flag promptly.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM (idempotent).
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero sigaction is valid; we fill in a handler that only stores to an
        // atomic (async-signal-safe) and an empty mask, and pass valid pointers to sigaction.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            syscall!(sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
    }
    Ok(())
}

/// True once SIGINT or SIGTERM arrived (or [`request_stop`] was called).
#[inline]
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Sets the flag by hand (tests, embedded runs).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
