//! `poll(2)` over a few sockets, as `ppoll` so that a wait may be shorter than a millisecond
//! (a pacer's next send).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub use libc::{POLLIN, POLLOUT};

/// One socket to wait on: its fd, the events wanted (`POLLIN`, `POLLOUT`) and, after
/// [`wait`], the events that happened (errors and hang-ups count as ready).
pub(crate) type PollFd = libc::pollfd;

/// A [`PollFd`] for `fd` waiting for `events`.
pub(crate) fn poll_fd(fd: RawFd, events: i16) -> PollFd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready or `timeout` passes; returns how many are ready (0 on
/// the timeout or an interrupting signal: the caller checks its stop flags and waits again).
pub fn wait(fds: &mut [PollFd], timeout: Duration) -> io::Result<usize> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid, writable slice of pollfd for `fds.len()` entries and `ts` a
    // valid timespec, both for the duration of the call; a null sigmask leaves the mask as is.
    let r = unsafe {
        syscall!(ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null()
        ))
    };
    match r {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn waits_for_data_and_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let mut fds = [poll_fd(b.as_raw_fd(), POLLIN)];
        assert_eq!(wait(&mut fds, Duration::from_micros(200)).unwrap(), 0);
        a.write_all(b"x").unwrap();
        assert_eq!(wait(&mut fds, Duration::from_secs(5)).unwrap(), 1);
        assert!(fds[0].revents & POLLIN != 0);
        let mut out = [poll_fd(a.as_raw_fd(), POLLOUT)];
        assert_eq!(wait(&mut out, Duration::from_secs(5)).unwrap(), 1);
    }
}
