//! How many segments the kernel takes in one UDP GSO send (`UDP_MAX_SEGMENTS`: 64 since GSO
//! came in 4.18, 128 since 6.x). The kernel does not say; a send of N one-byte segments is
//! refused with `EINVAL` when N is over the limit, so [`udp_max_segments`] tries the candidates
//! from the largest down, once per process, over loopback (to a socket of its own).

use std::io;
use std::net::UdpSocket;
use std::sync::OnceLock;

use super::sockopt::set_udp_segment;

/// The limits the kernel has had, largest first (128: iperf3 3.21's `GSO_MAX_DG_IN_BF` too).
pub(crate) const CANDIDATES: [usize; 2] = [128, 64];
/// What to assume when the probe cannot tell (no loopback, GSO refused): the limit of every
/// kernel with UDP GSO, so a send never asks for more than any of them takes.
pub(crate) const FALLBACK: usize = 64;

/// The most segments per UDP GSO send the running kernel takes (probed once per process;
/// [`FALLBACK`] where the probe cannot tell).
pub(crate) fn udp_max_segments() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| probe().unwrap_or(FALLBACK))
}

/// One probe over loopback: a socket with `UDP_SEGMENT` 1 sends N one-byte segments to a socket
/// of its own; `None` where it cannot set up (no loopback, no GSO).
fn probe() -> Option<usize> {
    let rx = UdpSocket::bind("127.0.0.1:0").ok()?;
    let tx = UdpSocket::bind("127.0.0.1:0").ok()?;
    set_udp_segment(&tx, 1).ok()?;
    let to = rx.local_addr().ok()?;
    let buf = [0u8; CANDIDATES[0]];
    limit_by(|n| tx.send_to(&buf[..n], to).map(|_| ()))
}

/// The largest candidate whose `send(n)` the kernel takes; stops at the first error other than
/// `EINVAL` (the probe cannot tell), and gives `None` where no candidate passes.
pub(crate) fn limit_by(mut send: impl FnMut(usize) -> io::Result<()>) -> Option<usize> {
    for n in CANDIDATES {
        match send(n) {
            Ok(()) => return Some(n),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn einval() -> io::Error {
        io::Error::from_raw_os_error(libc::EINVAL)
    }

    #[test]
    fn the_largest_candidate_the_kernel_takes() {
        assert_eq!(limit_by(|_| Ok(())), Some(128));
        // An older kernel refuses 128 segments with EINVAL and takes 64.
        let mut tried = vec![];
        let got = limit_by(|n| {
            tried.push(n);
            if n > 64 {
                Err(einval())
            } else {
                Ok(())
            }
        });
        assert_eq!((got, tried), (Some(64), vec![128, 64]));
    }

    #[test]
    fn no_answer_when_nothing_passes_or_the_error_is_another() {
        assert_eq!(limit_by(|_| Err(einval())), None);
        let mut tried = 0;
        let got = limit_by(|_| {
            tried += 1;
            Err(io::Error::from_raw_os_error(libc::EPERM))
        });
        assert_eq!(
            (got, tried),
            (None, 1),
            "an error other than EINVAL ends the probe"
        );
    }

    #[test]
    fn the_probe_gives_a_candidate_and_the_kernel_takes_that_many() {
        let n = udp_max_segments();
        assert!(CANDIDATES.contains(&n), "{n}");
        // What the probe found is what a real GSO send of n datagrams gets through, and one
        // more segment than the limit is refused (on a kernel whose limit is a candidate).
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        if set_udp_segment(&tx, 8).is_err() {
            return; // no GSO here: the fallback is all there is to check
        }
        let to = rx.local_addr().unwrap();
        tx.send_to(&vec![0u8; 8 * n], to).unwrap();
        if n == CANDIDATES[0] {
            return; // a kernel may allow more than the largest candidate
        }
        let err = tx.send_to(&vec![0u8; 8 * (n + 1)], to).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }
}
