//! A one-shot `timerfd` on `CLOCK_MONOTONIC`: the reactor's wake-up for deadlines that need
//! better than `epoll_wait`'s millisecond timeout (an open-loop request due in 300 µs).
//!
//! The timer's expiry is an hrtimer without the thread's timer slack, so it fires within a few
//! microseconds of the deadline; the fd becomes readable then and wakes the `epoll_wait` it is
//! registered with.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A non-blocking, close-on-exec timerfd.
#[derive(Debug)]
pub struct TimerFd {
    fd: OwnedFd,
}

impl TimerFd {
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: timerfd_create takes no pointers; a non-negative return is a new fd we own.
        let fd = unsafe {
            crate::syscall!(timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC
            ))
        }?;
        // SAFETY: `fd` was just returned by timerfd_create and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(TimerFd { fd })
    }

    /// Arms the timer to expire once, `after` from now (a zero duration is raised to 1 ns:
    /// zero would disarm it). Re-arming replaces the previous expiry and clears its count.
    pub(crate) fn arm_in(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec for the call; the old value is not asked for.
        unsafe {
            crate::syscall!(timerfd_settime(
                self.fd.as_raw_fd(),
                0,
                &spec,
                std::ptr::null_mut()
            ))
        }?;
        Ok(())
    }

    /// Takes the expiry count, if the timer fired since it was armed (never blocks).
    pub fn take(&self) -> u64 {
        let mut n = 0u64;
        // SAFETY: reads at most 8 bytes into `n`, which is 8 bytes long and writable.
        let r = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut n as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if r == 8 {
            n
        } else {
            0
        }
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_after_arming() {
        let t = TimerFd::new().unwrap();
        assert_eq!(t.take(), 0, "not armed yet");
        t.arm_in(Duration::from_micros(200)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.take(), 1);
        assert_eq!(t.take(), 0, "one-shot: read clears it");
        // Re-arming far ahead replaces a pending expiry.
        t.arm_in(Duration::ZERO).unwrap();
        t.arm_in(Duration::from_secs(60)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(t.take(), 0);
    }
}
