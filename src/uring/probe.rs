//! Whether io_uring can be used here, and why not: [`Unavailable`] names the cause in one line;
//! [`ENV`] forces the fallback.

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
