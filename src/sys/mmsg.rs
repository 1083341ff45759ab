//! Batched datagram I/O: `sendmmsg` and `recvmmsg` over buffers allocated once.
//!
//! [`SendBatch`] and [`RecvBatch`] own their buffers, the `iovec`s that point into them and the
//! `mmsghdr`s that point at the `iovec`s. All of them live in heap allocations made in the
//! constructor and never resized, so the raw pointers stay valid for the batch's lifetime even
//! when the batch value itself moves. The batches are `!Send` (raw pointers), which is fine:
//! each belongs to the one thread that does the I/O.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct for which all-zero bytes is a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

/// One `iovec` per `slot`-byte slot of `bufs` (whose heap allocation must outlive them).
fn slot_iovecs(bufs: &mut [u8], slot: usize) -> Box<[libc::iovec]> {
    let base = bufs.as_mut_ptr();
    (0..bufs.len() / slot)
        .map(|i| libc::iovec {
            // `i * slot` stays inside the allocation of n * slot bytes.
            iov_base: base.wrapping_add(i * slot).cast(),
            iov_len: slot,
        })
        .collect()
}

/// One `mmsghdr` per `iovec` of `iovs`, pointing at it; `with(i, hdr)` adds the rest.
fn headers(
    iovs: &mut [libc::iovec],
    mut with: impl FnMut(usize, &mut libc::msghdr),
) -> Box<[libc::mmsghdr]> {
    let iov_base = iovs.as_mut_ptr();
    (0..iovs.len())
        .map(|i| {
            let mut h = empty_msghdr();
            h.msg_iov = iov_base.wrapping_add(i);
            h.msg_iovlen = 1;
            with(i, &mut h);
            libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            }
        })
        .collect()
}

/// One socket address per message (`msg_name`), for batches that carry them.
fn address_slots(n: usize) -> Box<[libc::sockaddr_storage]> {
    // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes is a valid value.
    vec![unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }; n].into_boxed_slice()
}

const STORAGE_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_storage>() as _;

/// Writes `addr` into `dst` as the kernel takes it; returns its length.
fn write_addr(dst: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    let sa = socket2::SockAddr::from(addr);
    let len = sa.len().min(STORAGE_LEN);
    // SAFETY: `sa.as_ptr()` points at a socket address of `len` initialised bytes, and `dst` is
    // a sockaddr_storage, at least `len` bytes; the two are distinct values.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr().cast::<u8>(),
            (dst as *mut libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        );
    }
    len
}

/// The IP socket address of `len` bytes the kernel wrote into `src` (`None` for other families).
pub(crate) fn read_addr(src: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    let len = len as usize;
    match src.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in (its family says so, its length fits) at
            // the start of the storage, which is larger and suitably aligned for it.
            let a = unsafe { &*(src as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let a =
                unsafe { &*(src as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(feature = "uring")]
/// The bytes of an IPv4 or IPv6 socket address as the kernel wrote them into a buffer (an
/// io_uring `RECVMSG` name field, not necessarily aligned): None if they are none of those.
pub(crate) fn addr_from_bytes(b: &[u8]) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes is a valid value.
    let mut st = unsafe { std::mem::zeroed::<libc::sockaddr_storage>() };
    let len = b.len().min(STORAGE_LEN as usize);
    // SAFETY: `b` has at least `len` readable bytes and `st` (a distinct, local value) has
    // room for STORAGE_LEN >= `len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            b.as_ptr(),
            (&mut st as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        );
    }
    read_addr(&st, len as libc::socklen_t)
}

#[cfg(feature = "uring")]
/// Bytes of the largest source address a receive keeps (a `sockaddr_in6`).
pub(crate) const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// `n` send buffers of `slot` bytes each, sent with one `sendmmsg`: on a connected socket, or
/// ([`SendBatch::with_destinations`]) each to its own address.
pub struct SendBatch {
    bufs: Box<[u8]>,
    slot: usize,
    iovs: Box<[libc::iovec]>,
    // Kept alive (and never moved) because the headers point at them.
    names: Option<Box<[libc::sockaddr_storage]>>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl SendBatch {
    pub fn new(n: usize, slot: usize) -> Self {
        Self::build(n, slot, false)
    }

    /// A batch whose messages each go to the address given with [`SendBatch::set_destination`]
    /// (for an unconnected socket).
    pub(crate) fn with_destinations(n: usize, slot: usize) -> Self {
        Self::build(n, slot, true)
    }

    fn build(n: usize, slot: usize, named: bool) -> Self {
        assert!(n > 0 && slot > 0);
        let mut bufs = vec![0u8; n * slot].into_boxed_slice();
        let mut iovs = slot_iovecs(&mut bufs, slot);
        let mut names = named.then(|| address_slots(n));
        let name_base = names.as_mut().map(|b| b.as_mut_ptr());
        let hdrs = headers(&mut iovs, |i, h| {
            if let Some(base) = name_base {
                h.msg_name = base.wrapping_add(i).cast();
            }
        });
        SendBatch {
            bufs,
            slot,
            iovs,
            names,
            hdrs,
        }
    }

    /// Where message `i` goes (only for a batch made [`SendBatch::with_destinations`]).
    pub(crate) fn set_destination(&mut self, i: usize, addr: SocketAddr) {
        let names = self.names.as_mut().expect("a batch made with_destinations");
        self.hdrs[i].msg_hdr.msg_namelen = write_addr(&mut names[i], addr);
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    pub fn slot_size(&self) -> usize {
        self.slot
    }

    /// The whole slot `i` (its full capacity), to write datagrams into.
    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * self.slot..(i + 1) * self.slot]
    }

    /// How many bytes of slot `i` the next send carries.
    pub fn set_len(&mut self, i: usize, len: usize) {
        assert!(len <= self.slot);
        self.iovs[i].iov_len = len;
    }

    /// Sends messages `from..to` in one `sendmmsg`; returns how many the kernel took (at least
    /// one on success; the rest must be sent again).
    pub fn send(&mut self, sock: &impl AsRawFd, from: usize, to: usize) -> io::Result<usize> {
        assert!(from < to && to <= self.hdrs.len());
        let fd: RawFd = sock.as_raw_fd();
        // SAFETY: hdrs[from..to] are initialised mmsghdrs whose iovecs point into `self.bufs`
        // with lengths within their slots, and whose names (with destinations) point into
        // `self.names` with lengths written by `write_addr`; all of it outlives the call, and the
        // kernel only reads the buffers and names and writes `msg_len`.
        let n = unsafe {
            syscall!(sendmmsg(
                fd,
                self.hdrs.as_mut_ptr().add(from),
                (to - from) as libc::c_uint,
                0,
            ))
        }?;
        Ok(n as usize)
    }
}

/// Control-message space per message: a `UDP_GRO` segment size and an `SO_RXQ_OVFL` drop
/// count (24 bytes each), generously rounded.
const CMSG_SPACE: usize = 64;

/// `n` receive buffers of `slot` bytes each, filled by one `recvmmsg`; with
/// [`RecvBatch::with_sources`], each message's source address too.
pub struct RecvBatch {
    bufs: Box<[u8]>,
    slot: usize,
    // Kept alive (and never moved) because the headers point at them.
    _iovs: Box<[libc::iovec]>,
    // Parsed as bytes (`cmsg_data_in`), so no alignment is needed.
    ctrl: Box<[u8]>,
    names: Option<Box<[libc::sockaddr_storage]>>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl RecvBatch {
    pub fn new(n: usize, slot: usize) -> Self {
        Self::build(n, slot, false)
    }

    /// A batch that also records each message's source address ([`RecvBatch::source`]).
    pub(crate) fn with_sources(n: usize, slot: usize) -> Self {
        Self::build(n, slot, true)
    }

    fn build(n: usize, slot: usize, named: bool) -> Self {
        assert!(n > 0 && slot > 0);
        let mut bufs = vec![0u8; n * slot].into_boxed_slice();
        let mut iovs = slot_iovecs(&mut bufs, slot);
        let mut ctrl = vec![0u8; n * CMSG_SPACE].into_boxed_slice();
        let ctrl_base = ctrl.as_mut_ptr();
        let mut names = named.then(|| address_slots(n));
        let name_base = names.as_mut().map(|b| b.as_mut_ptr());
        let hdrs = headers(&mut iovs, |i, h| {
            h.msg_control = ctrl_base.wrapping_add(i * CMSG_SPACE).cast();
            h.msg_controllen = CMSG_SPACE as _;
            if let Some(base) = name_base {
                h.msg_name = base.wrapping_add(i).cast();
                h.msg_namelen = STORAGE_LEN;
            }
        });
        RecvBatch {
            bufs,
            slot,
            _iovs: iovs,
            ctrl,
            names,
            hdrs,
        }
    }

    /// The source address of message `i` of the last `recv` (`None` for a batch made without
    /// sources, or an address that is not IP).
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        let names = self.names.as_ref()?;
        read_addr(&names[i], self.hdrs[i].msg_hdr.msg_namelen)
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to `capacity()` datagrams. With `wait_for_one` the call blocks (up to the
    /// socket's receive timeout) for the first and then takes what is queued; without it the
    /// call never blocks. Returns how many messages arrived.
    pub fn recv(&mut self, sock: &impl AsRawFd, wait_for_one: bool) -> io::Result<usize> {
        let named = self.names.is_some();
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_controllen = CMSG_SPACE as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
            if named {
                h.msg_hdr.msg_namelen = STORAGE_LEN;
            }
        }
        let flags = if wait_for_one {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // SAFETY: every header points at an iovec over its own slot of `self.bufs`, at its
        // own CMSG_SPACE bytes of `self.ctrl` and (with sources) at its own sockaddr_storage of
        // `self.names` with `msg_namelen` its size; all of them outlive the call. A null timeout
        // means no recvmmsg-level timeout.
        let n = unsafe {
            syscall!(recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                flags as _,
                std::ptr::null_mut(),
            ))
        }?;
        Ok(n as usize)
    }

    /// The bytes of message `i` of the last `recv`, and whether the kernel truncated it.
    pub fn message(&self, i: usize) -> (&[u8], bool) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.slot);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&self.bufs[i * self.slot..i * self.slot + len], truncated)
    }

    /// The control messages of message `i` of the last `recv`.
    pub fn control(&self, i: usize) -> &[u8] {
        // `msg_controllen` is a usize with glibc and a u32 with musl.
        #[allow(clippy::unnecessary_cast)]
        let len = (self.hdrs[i].msg_hdr.msg_controllen as usize).min(CMSG_SPACE);
        &self.ctrl[i * CMSG_SPACE..i * CMSG_SPACE + len]
    }

    /// The `UDP_GRO` segment size of message `i`, if the kernel coalesced several datagrams.
    pub(crate) fn gro_segment(&self, i: usize) -> Option<usize> {
        gro_segment_in(self.control(i))
    }
}

/// The data of the first control message of `level`/`ty` in a buffer of control messages laid
/// out as `msg_control` holds them (by `recvmmsg`, or io_uring's multishot `RECVMSG` in a
/// provided buffer). Safe byte parsing of `cmsghdr { len: usize, level: i32, type: i32 }` +
/// data at `CMSG_ALIGN`.
fn cmsg_data_in(control: &[u8], level: i32, ty: i32) -> Option<&[u8]> {
    const W: usize = std::mem::size_of::<usize>();
    let align = |n: usize| (n + W - 1) & !(W - 1);
    let hdr = align(W + 8);
    let mut off = 0;
    while off + hdr <= control.len() {
        let c = &control[off..];
        let len = usize::from_ne_bytes(c[..W].try_into().ok()?);
        let l = i32::from_ne_bytes(c[W..W + 4].try_into().ok()?);
        let t = i32::from_ne_bytes(c[W + 4..W + 8].try_into().ok()?);
        if len < hdr || len > c.len() {
            return None;
        }
        if l == level && t == ty {
            return Some(&c[hdr..len]);
        }
        off += align(len);
    }
    None
}

/// The first 4 bytes of a control message's data as a native-endian `u32`.
fn cmsg_u32_in(control: &[u8], level: i32, ty: i32) -> Option<u32> {
    let d = cmsg_data_in(control, level, ty)?;
    Some(u32::from_ne_bytes(d.get(..4)?.try_into().ok()?))
}

/// The `UDP_GRO` segment size in a buffer of control messages, if the kernel coalesced.
pub(crate) fn gro_segment_in(control: &[u8]) -> Option<usize> {
    let v = cmsg_u32_in(control, libc::SOL_UDP, libc::UDP_GRO)? as i32;
    (v > 0).then_some(v as usize)
}

/// The socket's running total of drops that an `SO_RXQ_OVFL` control message carries (present
/// once the socket has dropped anything; absent means the total was 0 when the datagram was
/// queued).
pub(crate) fn rxq_ovfl_in(control: &[u8]) -> Option<u32> {
    cmsg_u32_in(control, libc::SOL_SOCKET, libc::SO_RXQ_OVFL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn batch_round_trip() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut sb = SendBatch::new(8, 100);
        for i in 0..8 {
            sb.slot_mut(i)[0] = i as u8;
            sb.set_len(i, 10 + i);
        }
        let mut sent = 0;
        while sent < 8 {
            sent += sb.send(&tx, sent, 8).unwrap();
        }
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut rb = RecvBatch::new(16, 2048);
        let mut got = Vec::new();
        while got.len() < 8 {
            let n = rb.recv(&rx, true).unwrap();
            for i in 0..n {
                let (m, trunc) = rb.message(i);
                assert!(!trunc);
                assert_eq!(rb.gro_segment(i), None);
                got.push((m[0], m.len()));
            }
        }
        for (i, &(b, len)) in got.iter().enumerate() {
            assert_eq!(b as usize, i);
            assert_eq!(len, 10 + i);
        }
    }

    #[test]
    fn sources_and_destinations() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("[::1]:0").ok();
        let sink6 = UdpSocket::bind("[::1]:0").ok();
        // One unconnected socket sends to two addresses in one batch.
        let mut sb = SendBatch::with_destinations(2, 64);
        sb.slot_mut(0)[..2].copy_from_slice(b"to");
        sb.set_len(0, 2);
        sb.set_destination(0, rx.local_addr().unwrap());
        sb.slot_mut(1)[..2].copy_from_slice(b"b!");
        sb.set_len(1, 2);
        sb.set_destination(1, a.local_addr().unwrap());
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = 0;
        while sent < 2 {
            sent += sb.send(&tx, sent, 2).unwrap();
        }
        let mut buf = [0u8; 8];
        a.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"b!"[..], tx.local_addr().unwrap()));
        a.send_to(b"from a", rx.local_addr().unwrap()).unwrap();
        let mut rb = RecvBatch::with_sources(4, 64);
        let mut got = Vec::new();
        while got.len() < 2 {
            let n = rb.recv(&rx, true).unwrap();
            for i in 0..n {
                got.push((rb.message(i).0.to_vec(), rb.source(i).unwrap()));
            }
        }
        assert_eq!(got[0], (b"to".to_vec(), tx.local_addr().unwrap()));
        assert_eq!(got[1], (b"from a".to_vec(), a.local_addr().unwrap()));
        // IPv6 addresses both ways, where the host has ::1.
        if let (Some(b), Some(sink6)) = (b, sink6) {
            sink6
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let mut sb = SendBatch::with_destinations(1, 64);
            sb.set_len(0, 3);
            sb.set_destination(0, sink6.local_addr().unwrap());
            assert_eq!(sb.send(&b, 0, 1).unwrap(), 1);
            let mut rb = RecvBatch::with_sources(1, 64);
            assert_eq!(rb.recv(&sink6, true).unwrap(), 1);
            assert_eq!(rb.source(0), Some(b.local_addr().unwrap()));
        }
        // A batch without sources has none.
        let mut plain = RecvBatch::new(1, 64);
        a.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        assert_eq!(plain.recv(&rx, true).unwrap(), 1);
        assert_eq!(plain.source(0), None);
    }

    #[test]
    fn gro_segment_from_control_bytes() {
        let mut c = Vec::new();
        // An unrelated cmsg first (SOL_SOCKET/SO_TIMESTAMP-like, 8 data bytes), then UDP_GRO.
        c.extend_from_slice(&24usize.to_ne_bytes());
        c.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c.extend_from_slice(&29i32.to_ne_bytes());
        c.extend_from_slice(&[0u8; 8]);
        c.extend_from_slice(&20usize.to_ne_bytes());
        c.extend_from_slice(&libc::SOL_UDP.to_ne_bytes());
        c.extend_from_slice(&libc::UDP_GRO.to_ne_bytes());
        c.extend_from_slice(&1472i32.to_ne_bytes());
        c.extend_from_slice(&[0u8; 4]);
        assert_eq!(gro_segment_in(&c), Some(1472));
        assert_eq!(rxq_ovfl_in(&c), None);
        c.extend_from_slice(&20usize.to_ne_bytes());
        c.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c.extend_from_slice(&libc::SO_RXQ_OVFL.to_ne_bytes());
        c.extend_from_slice(&77u32.to_ne_bytes());
        c.extend_from_slice(&[0u8; 4]);
        assert_eq!(rxq_ovfl_in(&c), Some(77));
        assert_eq!(gro_segment_in(&c), Some(1472));
        assert_eq!(gro_segment_in(&c[..24]), None);
        assert_eq!(gro_segment_in(&[]), None);
        assert_eq!(gro_segment_in(&[0xff; 40]), None);
    }

    #[test]
    fn drop_counts_arrive_in_control_messages() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        crate::sys::sockopt::set_rxq_ovfl(&rx).unwrap();
        crate::sys::sockopt::size_buffer(&rx, 1, true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..2000 {
            tx.send_to(&[0u8; 1000], rx.local_addr().unwrap()).unwrap();
        }
        let dropped = crate::sys::sockopt::socket_drops(rx.as_raw_fd()).unwrap();
        assert!(dropped > 0);
        let mut rb = RecvBatch::new(64, 2048);
        let n = rb.recv(&rx, false).unwrap();
        // Everything queued came before the drops (the buffer filled, then overflowed): the
        // first datagrams carry no count; one sent now carries the whole total.
        assert!(n > 0);
        tx.send_to(&[0u8; 10], rx.local_addr().unwrap()).unwrap();
        let mut last = None;
        for _ in 0..100 {
            match rb.recv(&rx, false) {
                Ok(n) => (0..n).for_each(|i| last = rxq_ovfl_in(rb.control(i)).or(last)),
                Err(_) => break,
            }
        }
        assert_eq!(last, Some(dropped));
    }

    #[test]
    fn nonblocking_recv_on_empty_socket_would_block() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rb = RecvBatch::new(4, 64);
        let e = rb.recv(&rx, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
