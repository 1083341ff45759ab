//! The system-call layer: every `unsafe` call into libc lives here (and in the io_uring backend).
//! Everything above this module is safe Rust.
//!
//! Raw calls go through [`syscall!`], which turns the C convention (`-1` and `errno`) into
//! `io::Result`.

/// Calls a libc function and maps a `-1` return to `io::Error::last_os_error()`.
///
/// The caller writes the `unsafe` block (with its `// SAFETY:` comment) around the macro.
#[macro_export]
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let res = libc::$fn($($arg),*);
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod affinity;
pub mod cpu;
pub mod gso;
pub mod mmsg;
pub mod poll;
pub mod process;
pub mod signal;
pub mod sockopt;
pub mod tcp;
pub mod timerfd;
pub mod tstamp;

/// Raises the soft limit of open files to `want` (or the hard limit, whichever is lower) and
/// returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    unsafe { syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim)) }?;
    let target = want.min(lim.rlim_max);
    if lim.rlim_cur < target {
        lim.rlim_cur = target;
        // SAFETY: `lim` is a valid rlimit read back from the kernel with only rlim_cur lowered
        // to at most rlim_max.
        unsafe { syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim)) }?;
    }
    Ok(lim.rlim_cur)
}

/// CPUs online on this machine (not just those this process's affinity mask allows).
pub(crate) fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions; it only reads system configuration.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

/// Whole seconds on CLOCK_REALTIME_COARSE: the wall clock as of the kernel's last timer tick
/// (a few ms at most behind CLOCK_REALTIME, never ahead of it), read through the vDSO without
/// reading the TSC: several times cheaper than `SystemTime::now`. Falls back to CLOCK_REALTIME
/// if the coarse clock cannot be read; 0 before the epoch.
#[inline]
pub fn realtime_coarse_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return realtime_ns() / 1_000_000_000;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0)
}

/// Nanoseconds on CLOCK_REALTIME (comparable across hosts whose clocks are synchronised).
#[inline]
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_coarse_clock_is_never_ahead_of_the_fine_one() {
        let fine = || super::realtime_ns() / 1_000_000_000;
        for _ in 0..1000 {
            let before = fine();
            let coarse = super::realtime_coarse_secs();
            let after = fine();
            // A tick late at most: never a whole second behind the reading before it.
            assert!(
                before <= coarse + 1 && coarse <= after,
                "{before} {coarse} {after}"
            );
        }
    }

    #[test]
    fn nofile_can_be_read_and_raised() {
        let now = super::raise_nofile(1024).unwrap();
        assert!(now >= 64);
    }
}
