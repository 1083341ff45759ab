//! Socket options that `socket2` does not cover: forced buffer sizes, UDP GSO and GRO,
//! `SO_REUSEPORT` and steering a reuseport group with a classic BPF program, the socket's drop
//! counter (`SO_RXQ_OVFL` in each receive's control messages, `SO_MEMINFO` on demand).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

pub(crate) fn set_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `val` lives across the call and its exact size is passed as the option length.
    unsafe {
        syscall!(setsockopt(
            fd,
            level,
            name,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ))
    }
    .map(|_| ())
}

fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are valid for writes and `len` holds the size of `val`.
    unsafe {
        syscall!(getsockopt(
            fd,
            level,
            name,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        ))
    }?;
    Ok(val)
}

/// Which way a socket buffer was sized.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BufMethod {
    /// `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` (needs CAP_NET_ADMIN; ignores `rmem_max`).
    Forced,
    /// `SO_RCVBUF`/`SO_SNDBUF`, capped by `net.core.rmem_max`/`wmem_max`.
    Capped,
}

/// Asks for a receive (or send) buffer of `bytes`: forced when permitted, else the capped option.
/// Returns what the kernel granted (as `getsockopt` reports it: the kernel doubles the request
/// for its bookkeeping) and how.
pub(crate) fn size_buffer(
    sock: &impl AsRawFd,
    bytes: usize,
    recv: bool,
) -> io::Result<(usize, BufMethod)> {
    let fd = sock.as_raw_fd();
    let (force, plain) = if recv {
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)
    } else {
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)
    };
    let want = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    let method = match set_int(fd, libc::SOL_SOCKET, force, want) {
        Ok(()) => BufMethod::Forced,
        Err(_) => {
            set_int(fd, libc::SOL_SOCKET, plain, want)?;
            BufMethod::Capped
        }
    };
    Ok((get_int(fd, libc::SOL_SOCKET, plain)? as usize, method))
}

/// Sets `UDP_SEGMENT` (UDP GSO) on the socket: every send larger than `segment` bytes is cut
/// into datagrams of `segment` bytes by the kernel. Fails where the kernel lacks GSO.
pub fn set_udp_segment(sock: &impl AsRawFd, segment: u16) -> io::Result<()> {
    set_int(
        sock.as_raw_fd(),
        libc::SOL_UDP,
        libc::UDP_SEGMENT,
        segment as libc::c_int,
    )
}

/// Turns `UDP_GRO` on: the kernel may hand several datagrams of one flow back in one buffer,
/// with their segment size in a control message. Fails where the kernel lacks GRO.
pub fn set_udp_gro(sock: &impl AsRawFd, on: bool) -> io::Result<()> {
    set_int(
        sock.as_raw_fd(),
        libc::SOL_UDP,
        libc::UDP_GRO,
        on as libc::c_int,
    )
}

/// Turns `SO_RXQ_OVFL` on: every datagram received after the socket's first drop carries, in
/// a control message, the socket's running total of drops (a `u32` that wraps) at the moment
/// the datagram was queued (see [`crate::sys::mmsg::rxq_ovfl_in`]).
pub(crate) fn set_rxq_ovfl(sock: &impl AsRawFd) -> io::Result<()> {
    set_int(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
}

/// The socket's running total of drops now (`SO_MEMINFO`'s `SK_MEMINFO_DROPS`: the counter
/// `SO_RXQ_OVFL` reports, read without a datagram; a `u32` that wraps).
pub fn socket_drops(sock: RawFd) -> io::Result<u32> {
    const VARS: usize = libc::SK_MEMINFO_DROPS as usize + 1;
    let mut info = [0u32; VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes and `len` holds the size of `info`; the
    // kernel writes at most `len` bytes and stores the length it wrote.
    unsafe {
        syscall!(getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        ))
    }?;
    if (len as usize) < VARS * 4 {
        return Err(io::Error::other("SO_MEMINFO without a drop count"));
    }
    Ok(info[libc::SK_MEMINFO_DROPS as usize])
}

/// `SO_REUSEPORT`, for servers with one listener per reactor.
pub(crate) fn set_reuseport(sock: &impl std::os::fd::AsFd) -> io::Result<()> {
    socket2::SockRef::from(sock).set_reuse_port(true)
}

/// A UDP socket bound to `addr` with `SO_REUSEPORT` set first, so that sockets of the same
/// user can join its port (the receiver's per-stream connected sockets for iperf3 clients).
pub(crate) fn udp_bind_reuseport(addr: std::net::SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    set_reuseport(&s)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A UDP socket (with `SO_REUSEPORT` when `reuseport`) and a TCP listener bound to the same
/// address; port 0: a port free for both (up to 32 tries). The listener never has
/// `SO_REUSEPORT`, so a second server on the port still fails with "address already in use".
pub(crate) fn bind_udp_and_tcp(
    addr: std::net::SocketAddr,
    reuseport: bool,
) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let udp = |a| {
        if reuseport {
            udp_bind_reuseport(a)
        } else {
            std::net::UdpSocket::bind(a)
        }
    };
    let tries = if addr.port() == 0 { 32 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let u = udp(addr)?;
        match std::net::TcpListener::bind(u.local_addr()?) {
            Ok(t) => return Ok((u, t)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// Steers every datagram that reaches `sock`'s reuseport group without an exact (connected)
/// match to the group member at `index` (in the order members bound), with a one-instruction
/// classic BPF program (`SO_ATTACH_REUSEPORT_CBPF`: `ret #index`).
pub(crate) fn steer_reuseport(sock: &impl AsRawFd, index: u32) -> io::Result<()> {
    let mut prog = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: index,
    }];
    let fprog = libc::sock_fprog {
        len: 1,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` and the one instruction it points to live across the call, and the
    // option length is `fprog`'s exact size; the kernel copies the program.
    unsafe {
        syscall!(setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        ))
    }
    .map(|_| ())
}

/// Removes the group's steering program (`SO_DETACH_REUSEPORT_BPF`): the kernel hashes again.
pub(crate) fn unsteer_reuseport(sock: &impl AsRawFd) -> io::Result<()> {
    set_int(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_DETACH_REUSEPORT_BPF,
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_sends_unconnected_datagrams_to_one_member() {
        let a = udp_bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = a.local_addr().unwrap();
        let b = udp_bind_reuseport(addr).unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        steer_reuseport(&b, 1).unwrap();
        for _ in 0..8 {
            let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            c.send_to(b"x", addr).unwrap();
            let mut buf = [0u8; 4];
            let (_, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!(from, c.local_addr().unwrap());
        }
        unsteer_reuseport(&b).unwrap();
    }

    #[test]
    fn buffers_are_granted_and_reported() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (got, _how) = size_buffer(&s, 1 << 20, true).unwrap();
        assert!(got >= 4096);
        let (got, _how) = size_buffer(&s, 1 << 20, false).unwrap();
        assert!(got >= 4096);
    }

    #[test]
    fn a_full_socket_counts_its_drops() {
        use std::os::fd::AsRawFd;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_rxq_ovfl(&rx).unwrap();
        let before = socket_drops(rx.as_raw_fd()).unwrap();
        assert_eq!(before, 0);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // A minimal buffer overflows within a few hundred datagrams nobody reads.
        size_buffer(&rx, 1, true).unwrap();
        for _ in 0..2000 {
            tx.send_to(&[0u8; 1000], rx.local_addr().unwrap()).unwrap();
        }
        assert!(socket_drops(rx.as_raw_fd()).unwrap() > 0);
    }

    #[test]
    fn gso_and_gro_options() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Both exist on every kernel since 5.0; the call must at least not crash.
        let _ = set_udp_segment(&s, 1472);
        let _ = set_udp_gro(&s, true);
    }
}
