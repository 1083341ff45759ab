//! Kernel receive timestamps (`SO_TIMESTAMPNS`): the time a datagram reached the socket, as the
//! kernel stamped it, so a reader that was busy does not inflate a latency sample.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use super::mmsg::read_addr;
use super::sockopt::set_int;

/// Asks the kernel to stamp every datagram `sock` receives (CLOCK_REALTIME).
pub(crate) fn enable_rx_timestamps(sock: &UdpSocket) -> io::Result<()> {
    set_int(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// A received datagram: its length, source and the kernel's receive time (ns since the epoch)
/// when the control messages carried one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamped {
    pub len: usize,
    pub from: Option<SocketAddr>,
    pub kernel_ns: Option<u64>,
}

/// One `recvmsg` on `sock` into `buf` (blocking or not, as the socket is set), with the source
/// address and the `SCM_TIMESTAMPNS` control message read.
pub(crate) fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Stamped> {
    // SAFETY: all-zero bytes are valid values of these plain C structs.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // u64 words: the control buffer is aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at `name`, `iov` (over `buf`) and `control`, all alive and writable
    // for the call, with their sizes given.
    let n = unsafe { syscall!(recvmsg(sock.as_raw_fd(), &mut msg, 0)) }?;
    let from = read_addr(&name, msg.msg_namelen);
    Ok(Stamped {
        len: n as usize,
        from,
        kernel_ns: timestamp(&msg),
    })
}

/// The `SCM_TIMESTAMPNS` time among the control messages `msg` received.
fn timestamp(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: `msg` was filled by recvmsg: msg_control/msg_controllen describe the control
    // messages the kernel wrote, which the CMSG_* macros walk within those bounds.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: `c` is a non-null header inside the control buffer (CMSG_FIRSTHDR/NXTHDR).
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_TIMESTAMPNS {
            // SAFETY: an SCM_TIMESTAMPNS message carries a timespec; read unaligned because
            // CMSG_DATA promises no alignment for it.
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>()) };
            return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
        }
        // SAFETY: as for CMSG_FIRSTHDR; NXTHDR returns null past the last header.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_comes_with_its_kernel_time() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rx_timestamps(&b).unwrap();
        let before = crate::sys::realtime_ns();
        a.send_to(b"probe", b.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let s = recv_stamped(&b, &mut buf).unwrap();
        let after = crate::sys::realtime_ns();
        assert_eq!(s.len, 5);
        assert_eq!(s.from, Some(a.local_addr().unwrap()));
        let k = s.kernel_ns.expect("loopback gives a timestamp");
        assert!(k >= before && k <= after, "{before} {k} {after}");
        // Without the option: no timestamp.
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"x", a.local_addr().unwrap()).unwrap();
        assert_eq!(recv_stamped(&a, &mut buf).unwrap().kernel_ns, None);
    }
}
