//! TCP socket options and `TCP_INFO`: congestion control, MSS, the fq pacing cap, and the
//! kernel's per-connection figures (retransmits, cwnd, RTT, pacing and delivery rates).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use super::sockopt::set_int;

/// The kernel's `struct tcp_info` (include/uapi/linux/tcp.h) up to `tcpi_snd_wnd`. glibc's
/// copy in the libc crate stops at `tcpi_total_retrans`, before the rates; the kernel fills
/// as much of this as it has and says how much in the returned length.
#[repr(C)]
#[derive(Default)]
struct RawTcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    app_limited: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
    delivered: u32,
    delivered_ce: u32,
    bytes_sent: u64,
    bytes_retrans: u64,
    dsack_dups: u32,
    reord_seen: u32,
    rcv_ooopack: u32,
    snd_wnd: u32,
}

/// The `TCP_INFO` figures netcore reports (rates in bytes per second as the kernel gives
/// them; times in microseconds). Fields a kernel does not fill are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpInfo {
    pub total_retrans: u32,
    pub snd_cwnd: u32,
    pub snd_mss: u32,
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub pacing_rate: u64,
    pub delivery_rate: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub bytes_retrans: u64,
}

/// `getsockopt(TCP_INFO)` on a connected TCP socket.
pub(crate) fn tcp_info(sock: &impl AsRawFd) -> io::Result<TcpInfo> {
    let mut raw = RawTcpInfo::default();
    let mut len = std::mem::size_of::<RawTcpInfo>() as libc::socklen_t;
    // SAFETY: `raw` is a plain repr(C) struct of integers valid for writes of `len` bytes (its
    // exact size); the kernel writes at most `len` bytes and updates `len`.
    unsafe {
        syscall!(getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut raw as *mut RawTcpInfo).cast(),
            &mut len,
        ))
    }?;
    Ok(TcpInfo {
        total_retrans: raw.total_retrans,
        snd_cwnd: raw.snd_cwnd,
        snd_mss: raw.snd_mss,
        rtt_us: raw.rtt,
        rttvar_us: raw.rttvar,
        pacing_rate: raw.pacing_rate,
        delivery_rate: raw.delivery_rate,
        bytes_acked: raw.bytes_acked,
        bytes_received: raw.bytes_received,
        bytes_retrans: raw.bytes_retrans,
    })
}

/// The congestion control algorithm of a TCP socket (`TCP_CONGESTION`, through socket2).
pub fn congestion(sock: &impl AsFd) -> io::Result<String> {
    let name = socket2::SockRef::from(sock).tcp_congestion()?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Sets the congestion control algorithm (`TCP_CONGESTION`); `ENOENT` where the kernel has no
/// such algorithm (and may not load it).
pub(crate) fn set_congestion(sock: &impl AsFd, algo: &str) -> io::Result<()> {
    socket2::SockRef::from(sock).set_tcp_congestion(algo.as_bytes())
}

/// `TCP_MAXSEG`: the largest segment this end sends (set before connecting).
pub(crate) fn set_mss(sock: &impl AsFd, mss: u32) -> io::Result<()> {
    socket2::SockRef::from(sock).set_tcp_mss(mss)
}

/// `SO_MAX_PACING_RATE` in bytes per second (enforced by the fq qdisc, or by TCP's own
/// pacing where fq is absent).
pub(crate) fn set_max_pacing_rate(sock: &impl AsRawFd, bytes_per_sec: u64) -> io::Result<()> {
    let val: u64 = bytes_per_sec;
    // SAFETY: `val` lives across the call and its exact size is passed; the kernel accepts a
    // u64 for this option (a u32 on kernels before 4.19, which read the low half).
    unsafe {
        syscall!(setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&val as *const u64).cast(),
            std::mem::size_of::<u64>() as libc::socklen_t,
        ))
    }
    .map(|_| ())
}

/// `SO_ZEROCOPY` (include/uapi/asm-generic/socket.h; not in the libc crate).
const SO_ZEROCOPY: libc::c_int = 60;
/// `sock_extended_err.ee_origin` of a zero-copy completion.
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
/// `ee_code` bit: the kernel copied the data after all (e.g. to a local receiver).
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

/// Allows `MSG_ZEROCOPY` sends on the socket (Linux 4.14+ for TCP).
pub(crate) fn set_zerocopy(sock: &impl AsRawFd) -> io::Result<()> {
    set_int(sock.as_raw_fd(), libc::SOL_SOCKET, SO_ZEROCOPY, 1)
}

/// `send(MSG_ZEROCOPY)`: the kernel pins `buf`'s pages and sends from them in place; `buf`
/// must stay unchanged until the send's completion arrives on the error queue
/// ([`zerocopy_completions`]). Returns the bytes taken, as `send` does.
pub(crate) fn send_zerocopy(sock: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the call; the kernel pins the
    // pages it keeps (the caller keeps them unchanged until the completion, see above).
    let n = unsafe {
        syscall!(send(
            sock.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_ZEROCOPY | libc::MSG_NOSIGNAL
        ))
    }?;
    Ok(n as usize)
}

/// An anonymous in-memory file (`memfd_create`) holding `bytes`, for [`sendfile`].
pub(crate) fn memfd_with(bytes: &[u8]) -> io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: the name is a NUL-terminated C string literal; no other pointer is passed.
    let fd = unsafe { syscall!(memfd_create(c"netcore-tcp".as_ptr(), libc::MFD_CLOEXEC)) }?;
    // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(bytes)?;
    Ok(f)
}

/// `sendfile(2)`: up to `count` bytes of `file` from `offset` into `sock`. The kernel hands the
/// file's pages to the socket by reference (no copy from user memory); they must not change
/// while in flight, which holds for a file written once and never again. Returns the bytes
/// taken, as `send` does (`WouldBlock` on a full non-blocking socket).
pub fn sendfile(
    sock: &impl AsRawFd,
    file: &impl AsRawFd,
    offset: u64,
    count: usize,
) -> io::Result<usize> {
    let mut off = offset as libc::off_t;
    // SAFETY: `off` is a valid, writable off_t for the call; both fds are open for its duration.
    let n = unsafe {
        syscall!(sendfile(
            sock.as_raw_fd(),
            file.as_raw_fd(),
            &mut off,
            count
        ))
    }?;
    Ok(n as usize)
}

/// Zero-copy completions taken from the socket's error queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ZcCompletions {
    /// Sends completed (each notification covers a range of sends).
    pub sends: u64,
    /// Of those, sends whose data the kernel copied after all.
    pub copied: u64,
}

/// Drains the error queue without blocking and counts the zero-copy completions in it.
pub(crate) fn zerocopy_completions(sock: &impl AsRawFd) -> io::Result<ZcCompletions> {
    let mut out = ZcCompletions::default();
    loop {
        let mut control = [0u64; 16];
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` points at `control` (valid for writes of msg_controllen bytes, 8-byte
        // aligned as cmsghdr needs) and has no data buffers; the kernel writes only there.
        let r = unsafe {
            syscall!(recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT
            ))
        };
        match r {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        // SAFETY: `msg` was filled by recvmsg above; CMSG_FIRSTHDR/CMSG_NXTHDR stay inside
        // `msg_control` of `msg_controllen` bytes, and CMSG_DATA of a recverr message holds a
        // `sock_extended_err` (read unaligned, as the kernel lays it out after the cmsghdr).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let h = &*c;
                let recverr = (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
                    || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
                if recverr {
                    let e: libc::sock_extended_err =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    if e.ee_errno == 0 && e.ee_origin == SO_EE_ORIGIN_ZEROCOPY {
                        // ee_info .. ee_data: the range of send calls completed (32-bit counters).
                        let n = u64::from(e.ee_data.wrapping_sub(e.ee_info)) + 1;
                        out.sends += n;
                        if e.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                            out.copied += n;
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
    }
}

/// `recv(2)` with `MSG_DONTWAIT`: what is queued now, or `WouldBlock`.
pub(crate) fn recv_now(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid and writable for `buf.len()` bytes for the call.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn info_and_congestion_on_a_live_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        a.write_all(&[7u8; 100_000]).unwrap();
        let mut buf = vec![0u8; 100_000];
        b.read_exact(&mut buf).unwrap();
        let i = tcp_info(&a).unwrap();
        assert!(i.snd_cwnd > 0 && i.snd_mss > 0);
        assert!(i.bytes_acked <= 100_001);
        assert_eq!(tcp_info(&b).unwrap().bytes_received, 100_000);
        let cc = congestion(&a).unwrap();
        assert!(!cc.is_empty());
        set_congestion(&a, &cc).unwrap();
        assert!(set_congestion(&a, "no-such-algo").is_err());
        set_max_pacing_rate(&a, 1 << 30).unwrap();
    }

    #[test]
    fn zerocopy_sends_complete_on_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        if set_zerocopy(&a).is_err() {
            return; // a kernel without SO_ZEROCOPY for TCP
        }
        let buf = vec![7u8; 64 * 1024];
        let mut sent = 0u64;
        let mut sends = 0u64;
        for _ in 0..8 {
            sent += send_zerocopy(&a, &buf).unwrap() as u64;
            sends += 1;
        }
        let mut got = 0u64;
        let mut rbuf = vec![0u8; 64 * 1024];
        while got < sent {
            got += std::io::Read::read(&mut b, &mut rbuf).unwrap() as u64;
        }
        let mut c = ZcCompletions::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while c.sends < sends && std::time::Instant::now() < deadline {
            let d = zerocopy_completions(&a).unwrap();
            c.sends += d.sends;
            c.copied += d.copied;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(c.sends, sends, "every send completes");
        assert!(c.copied <= c.sends);
    }
}
