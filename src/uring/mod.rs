//! The io_uring backend (feature `uring`, probed at run time).
//!
//! [`Ring`] is the one owner of a ring and of everything the kernel may touch through it. The
//! drivers above it (the `uring` server model, and later the UDP backends) never hand the kernel
//! a pointer themselves: they give the ring an owned buffer (a `Vec<u8>`) with the operation and
//! get it back, untouched by anyone in between, in the operation's final completion.
//!
//! # Ownership of in-flight buffers
//!
//! * Every submitted operation occupies a slot in the ring's operation slab; its `user_data` is
//!   the slot index. The slot holds the operation's buffer, its timespec (timeouts) and the
//!   caller's tag. A slot is freed only when the operation's **final** completion arrives (a
//!   completion without `IORING_CQE_F_MORE`), so no buffer is freed, moved or reused while the
//!   kernel may still write to it, and a slot index is never reused while a completion for the
//!   previous operation in it may still arrive (no generation counter is needed).
//! * Cancelling ([`Ring::cancel`]) only *asks* the kernel to stop: the operation keeps its slot
//!   and buffer until its completion (usually `-ECANCELED`) arrives, exactly like any other
//!   completion (tokio-uring's `Lifecycle::Ignored`).
//! * Multishot receives take their memory from a provided-buffer ring ([`bufring`]): one
//!   allocation, never resized, registered with the kernel for the ring's lifetime. A completion
//!   names the buffer id it filled; the caller reads it ([`Ring::provided`]) and gives it back
//!   ([`Ring::recycle`]). When the kernel finds no free buffer the multishot receive ends with
//!   `ENOBUFS`, and the driver re-arms it after recycling.
//! * An `ACCEPT`'s new connection is handed out already owned ([`Completion::accepted`], an
//!   `OwnedFd`), so no driver turns a raw fd number into a socket itself.
//! * Dropping a [`Ring`] first cancels every live operation and waits (bounded) for their
//!   completions. Whatever is somehow still in flight after that is leaked, never freed, so even
//!   a misbehaving kernel cannot write into freed memory.
//!
//! # Batching
//! Operations are pushed to the submission queue as work appears; [`Ring::submit_and_wait`]
//! enters the kernel once per loop turn (submitting the batch and waiting for at least one
//! completion or the timeout), and [`Ring::reap`] takes the whole completion queue at once. Only
//! when the submission queue is full does a push enter the kernel early.
//!
//! # Availability
//! [`Ring::new`] sets the ring up (`SINGLE_ISSUER|DEFER_TASKRUN` where the kernel takes them,
//! else `COOP_TASKRUN`, else no flags) and probes the opcodes. Where io_uring cannot be used it
//! returns [`Unavailable`], whose message names the cause in one line (`ENOSYS`,
//! `kernel.io_uring_disabled`, a seccomp filter, `RLIMIT_MEMLOCK`, a missing opcode).
//! `NETCORE_URING=off` forces that path, so the fallback messages can be tested anywhere.

pub mod bufring;
pub mod notify;
pub mod ring;

pub use notify::Notifier;
pub use ring::{Caps, Completion, LinkedSend, OpId, Ring, RingStats, Target};

use std::fmt;
use std::io;

/// The environment variable that forces io_uring off (`off`, `0`, `no` or `false`).
pub const ENV: &str = "NETCORE_URING";

/// Why io_uring cannot be used here: one line naming the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    cause: String,
}

impl Unavailable {
    pub(crate) fn new(cause: impl Into<String>) -> Self {
        Unavailable {
            cause: cause.into(),
        }
    }

    /// The cause alone, without the "io_uring unavailable" prefix.
    pub fn cause(&self) -> &str {
        &self.cause
    }

    /// Turns a failed `io_uring_setup` into a cause.
    pub(crate) fn from_setup(e: &io::Error) -> Self {
        let cause = match e.raw_os_error() {
            Some(libc::ENOSYS) => {
                "the kernel has no io_uring (io_uring_setup: ENOSYS; too old, built without it, \
                 or blocked by a seccomp filter)"
                    .to_string()
            }
            Some(libc::EPERM) | Some(libc::EACCES) => match sysctl_disabled() {
                Some(2) => "disabled by sysctl kernel.io_uring_disabled=2".to_string(),
                Some(1) => "kernel.io_uring_disabled=1 and this process is not in \
                            kernel.io_uring_group"
                    .to_string(),
                _ => "io_uring_setup not permitted (EPERM; likely a seccomp filter, as in \
                      container runtimes' default profiles)"
                    .to_string(),
            },
            Some(libc::ENOMEM) => format!(
                "cannot allocate the ring (io_uring_setup: ENOMEM; RLIMIT_MEMLOCK is {}, raise it \
                 with `ulimit -l`)",
                memlock_limit()
            ),
            _ => format!("io_uring_setup failed: {e}"),
        };
        Unavailable { cause }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "io_uring unavailable: {}", self.cause)
    }
}

impl std::error::Error for Unavailable {}

/// Some(reason) when the environment forces io_uring off.
pub fn forced_off() -> Option<Unavailable> {
    let v = std::env::var(ENV).ok()?;
    let v = v.trim().to_ascii_lowercase();
    matches!(v.as_str(), "off" | "0" | "no" | "false")
        .then(|| Unavailable::new(format!("disabled by {ENV}={v}")))
}

/// `kernel.io_uring_disabled` (absent before Linux 6.6).
fn sysctl_disabled() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn memlock_limit() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    match unsafe { syscall!(getrlimit(libc::RLIMIT_MEMLOCK, &mut lim)) } {
        Ok(_) if lim.rlim_cur == libc::RLIM_INFINITY => "unlimited".to_string(),
        Ok(_) => format!("{} KiB", lim.rlim_cur / 1024),
        Err(_) => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests;
