//! CPU time of the calling thread (`getrusage(RUSAGE_THREAD)`) or of the whole process
//! (`RUSAGE_SELF`).

/// User and system CPU time, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ThreadTimes {
    pub user_ns: u64,
    pub system_ns: u64,
}

fn ns(tv: libc::timeval) -> u64 {
    tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000
}

/// The calling thread's CPU time so far (zero if the kernel refuses, which it does not).
pub(crate) fn thread_times() -> ThreadTimes {
    times(libc::RUSAGE_THREAD)
}

/// The whole process's CPU time so far (every thread, living or ended).
pub(crate) fn process_times() -> ThreadTimes {
    times(libc::RUSAGE_SELF)
}

fn times(who: libc::c_int) -> ThreadTimes {
    // SAFETY: rusage is plain integers; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    match unsafe { syscall!(getrusage(who, &mut ru)) } {
        Ok(_) => ThreadTimes {
            user_ns: ns(ru.ru_utime),
            system_ns: ns(ru.ru_stime),
        },
        Err(_) => ThreadTimes::default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn busy_thread_gains_cpu_time() {
        let a = super::thread_times();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = super::thread_times();
        assert!(b.user_ns + b.system_ns > a.user_ns + a.system_ns);
    }
}
