//! [`Ring`]: the owner of an io_uring instance, its in-flight operations and their buffers
//! (see the [module docs](super) for the ownership rules).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use super::bufring::BufRing;
use super::probe::{self, Unavailable};

/// `user_data` of operations whose completion nobody waits for (cancel requests).
const UD_IGNORE: u64 = u64::MAX;
/// Buffer group id of the provided-buffer ring.
const BGID: u16 = 0;
/// `IORING_SEND_ZC_REPORT_USAGE` (Linux 6.2): the notification tells whether the kernel
/// copied the data after all. The `io-uring` crate does not export it.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`: set in a notification's result when the data was copied.
const NOTIF_USAGE_ZC_COPIED: i32 = 1 << 31;
/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;

/// Names one operation: its slot in the operation slab plus the slot's generation when the
/// operation was started (the `user_data` is `gen << 32 | slot`). A slot is reused once its
/// operation's final completion has been reaped, but with the next generation, so an old id
/// never names the new operation: cancelling it, or comparing a completion's id with it, is
/// harmless however late it comes (as the reactor's [`Key`](crate::reactor::Key)s are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId {
    slot: u32,
    gen: u32,
}

impl OpId {
    /// The operation's `user_data`.
    fn user_data(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.slot)
    }

    fn from_user_data(ud: u64) -> OpId {
        OpId {
            slot: ud as u32,
            gen: (ud >> 32) as u32,
        }
    }
}

/// Generations stay below this, so no `user_data` is ever [`UD_IGNORE`].
const GEN_MASK: u32 = u32::MAX >> 1;

/// What this kernel and ring can do, found at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// The setup flags the kernel accepted.
    pub setup: &'static str,
    /// Multishot accept (Linux 5.19).
    pub multishot_accept: bool,
    /// Multishot recv/recvmsg with the provided-buffer ring (Linux 6.0, and the ring registered).
    pub multishot_recv: bool,
    /// `SEND_ZC` (Linux 6.0).
    pub send_zc: bool,
}

/// Counters of the ring's work (for reports and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// `io_uring_enter` calls made.
    pub enters: u64,
    /// Operations submitted (cancel requests included).
    pub submitted: u64,
    /// Completions reaped (cancel results included).
    pub completions: u64,
}

/// One completion, handed to the driver by [`Ring::reap`].
#[derive(Debug)]
pub struct Completion {
    pub id: OpId,
    /// The tag the operation was submitted with.
    pub tag: u64,
    /// The kernel's result: a count or fd (`>= 0`) or `-errno`.
    pub res: i32,
    /// The operation is still in flight (a multishot operation that will post more, or a
    /// zero-copy send whose notification is to come).
    pub more: bool,
    /// A zero-copy send's notification: the kernel let go of the buffer (the send's result
    /// came in the completion before). See [`Completion::copied`].
    pub notif: bool,
    /// The provided buffer holding received data (read it with [`Ring::provided`], then give it
    /// back with [`Ring::recycle`]).
    pub bid: Option<u16>,
    /// The operation's own buffer, handed back with its final completion.
    pub buf: Option<Vec<u8>>,
    /// The connection a successful `ACCEPT` ([`Ring::accept`]) created, already owned: dropping
    /// the completion closes it. `None` for every other operation and for a failed accept.
    pub accepted: Option<OwnedFd>,
}

impl Completion {
    /// For a zero-copy notification: the kernel copied the data instead (on loopback it
    /// always does: the receiving socket cannot keep the sender's pages).
    pub fn copied(&self) -> bool {
        self.notif && self.res & NOTIF_USAGE_ZC_COPIED != 0
    }
}

/// Memory an operation owns while in flight.
struct InFlight {
    tag: u64,
    buf: Option<Vec<u8>>,
    ts: Option<Box<types::Timespec>>,
    /// The message header of a multishot `RECVMSG` (returned to the ring's pool at the end).
    msg: Option<Box<MsgBox>>,
    /// An `ACCEPT`: a non-negative result is a new fd, handed out as [`Completion::accepted`].
    accept: bool,
}

/// One slot of the operation slab: the generation of its current (or next) operation.
struct Slot {
    gen: u32,
    op: Option<InFlight>,
}

/// A `msghdr` (the multishot `RECVMSG`'s template), boxed so that its address does not change
/// while the kernel may read it. Reused through [`Ring`]'s pool.
struct MsgBox {
    hdr: libc::msghdr,
}

impl MsgBox {
    fn new() -> Box<MsgBox> {
        Box::new(MsgBox {
            // SAFETY: msghdr is a plain C struct for which all-zero bytes is a valid (empty)
            // value.
            hdr: unsafe { std::mem::zeroed() },
        })
    }
}

/// Which file an operation works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A plain file descriptor (looked up per operation).
    Fd(RawFd),
    /// The ring's registered file ([`Ring::register_file`]).
    Fixed(u32),
}

/// How [`Ring::send_linked`] sends.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkedSend {
    /// Bytes of the buffer to send (from its start).
    pub len: usize,
    /// Link the next operation pushed to this one.
    pub link: bool,
    /// `SEND_ZC` instead of `SEND`.
    pub zerocopy: bool,
}

/// One datagram taken by a multishot `RECVMSG` (see [`Ring::recvmsg_parts`]).
#[derive(Debug)]
pub(crate) struct RecvMsgParts<'a> {
    /// The payload as received (cut to the provided buffer; see `truncated`).
    pub payload: &'a [u8],
    /// The control messages (cmsg layout, as `msg_control` would hold them).
    pub control: &'a [u8],
    /// The source address as the kernel wrote it (a `sockaddr`; empty when no name space was
    /// asked for). Read it with `sys::mmsg::addr_from_bytes`.
    pub name: &'a [u8],
    /// The kernel cut the payload (`MSG_TRUNC`).
    pub truncated: bool,
}

/// An io_uring instance and everything the kernel may touch through it.
pub struct Ring {
    // Field order matters for nothing: `Drop` drains the ring before anything is freed.
    ring: IoUring,
    ops: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    bufs: Option<BufRing>,
    caps: Caps,
    /// Completions copied out of the queue early (when the submission queue was full).
    backlog: Vec<cqueue::Entry>,
    stats: RingStats,
    /// Message headers of finished operations, for reuse. Boxed on purpose: the kernel holds
    /// their addresses while an operation is in flight, and the boxes move between this pool
    /// and the slots without the headers moving.
    #[allow(clippy::vec_box)]
    msgs: Vec<Box<MsgBox>>,
    /// A file is registered ([`Ring::register_file`]).
    fixed_files: bool,
}

/// Opcodes every driver needs, with their names for the error message.
const REQUIRED: &[(u8, &str)] = &[
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::RecvMsg::CODE, "RECVMSG"),
    (opcode::Read::CODE, "READ"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::Timeout::CODE, "TIMEOUT"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

fn build(entries: u32) -> Result<(IoUring, &'static str), io::Error> {
    let mut b = IoUring::builder();
    b.setup_single_issuer().setup_defer_taskrun();
    if let Ok(r) = b.build(entries) {
        return Ok((r, "single_issuer+defer_taskrun"));
    }
    let mut b = IoUring::builder();
    b.setup_coop_taskrun();
    if let Ok(r) = b.build(entries) {
        return Ok((r, "coop_taskrun"));
    }
    IoUring::builder().build(entries).map(|r| (r, "none"))
}

impl Ring {
    /// Sets up a ring of `entries` submission slots, probes it, and registers `bufs` =
    /// (count, size) provided buffers for multishot receives where the kernel has them.
    ///
    /// The ring is tied to the calling thread where `SINGLE_ISSUER` was accepted: use it only
    /// from the thread that created it.
    pub fn new(entries: u32, bufs: Option<(u16, usize)>) -> Result<Ring, Unavailable> {
        if let Some(off) = probe::forced_off() {
            return Err(off);
        }
        let (ring, setup) = build(entries).map_err(|e| Unavailable::from_setup(&e))?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| Unavailable::new(format!("cannot probe opcodes ({e}; Linux < 5.6)")))?;
        if let Some((_, name)) = REQUIRED.iter().find(|(c, _)| !probe.is_supported(*c)) {
            return Err(Unavailable::new(format!(
                "the kernel lacks the {name} opcode (Linux 5.19 or later needed)"
            )));
        }
        if !ring.params().is_feature_ext_arg() {
            return Err(Unavailable::new(
                "the kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11 or later needed)",
            ));
        }
        // SEND_ZC came with Linux 6.0, as did multishot recv; multishot accept and the
        // provided-buffer ring with 5.19 (the registration itself tells).
        let v6 = probe.is_supported(opcode::SendZc::CODE);
        let bufs = match bufs {
            Some((count, size)) => BufRing::new(&ring.submitter(), count, size, BGID).ok(),
            None => None,
        };
        let caps = Caps {
            setup,
            multishot_accept: v6 || bufs.is_some(),
            multishot_recv: v6 && bufs.is_some(),
            send_zc: v6,
        };
        Ok(Ring {
            ring,
            ops: Vec::new(),
            free: Vec::new(),
            live: 0,
            bufs,
            caps,
            backlog: Vec::new(),
            stats: RingStats::default(),
            msgs: Vec::new(),
            fixed_files: false,
        })
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Operations in flight (submitted or queued, final completion not yet reaped).
    pub fn in_flight(&self) -> usize {
        self.live
    }

    /// Size of each provided buffer (0 without a buffer ring).
    pub fn provided_size(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.buf_size())
    }

    fn alloc(&mut self, op: InFlight) -> OpId {
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                let slot = &mut self.ops[i as usize];
                slot.op = Some(op);
                OpId {
                    slot: i,
                    gen: slot.gen,
                }
            }
            None => {
                self.ops.push(Slot {
                    gen: 0,
                    op: Some(op),
                });
                OpId {
                    slot: (self.ops.len() - 1) as u32,
                    gen: 0,
                }
            }
        }
    }

    /// The live operation `id` names (None once it has completed, even if its slot is reused).
    fn live_op(&self, id: OpId) -> Option<&InFlight> {
        self.ops
            .get(id.slot as usize)
            .filter(|s| s.gen == id.gen)
            .and_then(|s| s.op.as_ref())
    }

    /// Queues `sqe`; enters the kernel early only if the submission queue is full.
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid until the operation's final completion (it points
    /// into memory owned by the operation's slot, by the buffer ring or by the ring itself).
    unsafe fn push(&mut self, sqe: squeue::Entry) {
        self.stats.submitted += 1;
        loop {
            // SAFETY: the caller guarantees the pointers in `sqe` outlive the operation.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            self.stats.enters += 1;
            if self.ring.submit().is_err() {
                // The completion queue is backed up (EBUSY): move completions out of the way.
                self.backlog.extend(self.ring.completion());
            }
        }
    }

    /// Queues an operation whose SQE is built from the slot's memory by `make`.
    fn start(
        &mut self,
        tag: u64,
        buf: Option<Vec<u8>>,
        ts: Option<Box<types::Timespec>>,
        make: impl FnOnce(&mut InFlight) -> squeue::Entry,
    ) -> OpId {
        self.start_msg(tag, buf, ts, None, make)
    }

    /// [`Ring::start`] with a message header owned by the operation too.
    fn start_msg(
        &mut self,
        tag: u64,
        buf: Option<Vec<u8>>,
        ts: Option<Box<types::Timespec>>,
        msg: Option<Box<MsgBox>>,
        make: impl FnOnce(&mut InFlight) -> squeue::Entry,
    ) -> OpId {
        let mut op = InFlight {
            tag,
            buf,
            ts,
            msg,
            accept: false,
        };
        // The SQE points into the Vec's heap buffer / the boxed timespec, which do not move
        // when `op` itself is moved into the slab.
        let sqe = make(&mut op);
        let id = self.alloc(op);
        // SAFETY: the pointers in `sqe` point into `op.buf`'s heap allocation, `op.ts`'s box or
        // `op.msg`'s box, now owned by slot `id` until the operation's final completion (see
        // `reap`), or into the buffer ring / to fds, which need no memory.
        unsafe { self.push(sqe.user_data(id.user_data())) };
        id
    }

    /// Accepts connections on `fd`: multishot where supported (check [`Completion::more`]:
    /// re-arm when it is false), else one connection per operation. Each accepted connection
    /// comes as an owned fd in [`Completion::accepted`].
    pub fn accept(&mut self, fd: RawFd, tag: u64) -> OpId {
        let multi = self.caps.multishot_accept;
        self.start(tag, None, None, |op| {
            op.accept = true;
            if multi {
                opcode::AcceptMulti::new(types::Fd(fd))
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            } else {
                opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            }
        })
    }

    /// Multishot receive into provided buffers. Only with [`Caps::multishot_recv`].
    pub(crate) fn recv_multi(&mut self, fd: RawFd, tag: u64) -> OpId {
        debug_assert!(self.caps.multishot_recv);
        self.start(tag, None, None, |_| {
            opcode::RecvMulti::new(types::Fd(fd), BGID).build()
        })
    }

    /// Multishot `RECVMSG` into provided buffers (only with [`Caps::multishot_recv`]): each
    /// completion's buffer holds an `io_uring_recvmsg_out` header, `control_len` bytes of
    /// `name_len` bytes for the source address (0: none kept), `control_len` bytes of control
    /// space and the payload; read it with [`Ring::recvmsg_parts`]. Re-arm when a completion
    /// comes without `more`.
    pub(crate) fn recvmsg_multi(
        &mut self,
        fd: RawFd,
        name_len: usize,
        control_len: usize,
        tag: u64,
    ) -> OpId {
        debug_assert!(self.caps.multishot_recv);
        let mut m = self.msgs.pop().unwrap_or_else(MsgBox::new);
        m.hdr.msg_name = std::ptr::null_mut();
        m.hdr.msg_namelen = name_len as _;
        m.hdr.msg_iov = std::ptr::null_mut();
        m.hdr.msg_iovlen = 0;
        m.hdr.msg_control = std::ptr::null_mut();
        m.hdr.msg_controllen = control_len as _;
        m.hdr.msg_flags = 0;
        self.start_msg(tag, None, None, Some(m), |op| {
            let p: *const libc::msghdr = op.msg.as_deref().map_or(std::ptr::null(), |m| &m.hdr);
            opcode::RecvMsgMulti::new(types::Fd(fd), p, BGID).build()
        })
    }

    /// Splits provided buffer `bid` filled by a [`Ring::recvmsg_multi`] completion (`len` = its
    /// result; `name_len` and `control_len` as armed) into source address, control data and
    /// payload. None if the buffer is too short to parse.
    pub(crate) fn recvmsg_parts(
        &self,
        bid: u16,
        len: usize,
        name_len: usize,
        control_len: usize,
    ) -> Option<RecvMsgParts<'_>> {
        // The layout `types::RecvMsgOut` parses too (it cannot lend the slices out):
        // `struct io_uring_recvmsg_out { u32 namelen, controllen, payloadlen, flags }`, then the
        // name field (`name_len` bytes), the control field (`control_len` bytes), then the
        // payload.
        const OUT: usize = 16;
        let data = self.provided(bid, len);
        if data.len() < OUT + name_len + control_len {
            return None;
        }
        let word = |i: usize| {
            u32::from_ne_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize
        };
        let (namelen, controllen, payloadlen, flags) = (word(0), word(4), word(8), word(12));
        let ctrl = OUT + name_len;
        let start = ctrl + control_len;
        Some(RecvMsgParts {
            payload: &data[start..start + payloadlen.min(data.len() - start)],
            control: &data[ctrl..ctrl + controllen.min(control_len)],
            name: &data[OUT..OUT + namelen.min(name_len)],
            truncated: flags & libc::MSG_TRUNC as usize != 0,
        })
    }

    /// Registers `fd` as the ring's one fixed file (`IORING_REGISTER_FILES`): operations on
    /// [`Target::Fixed`] then skip the per-operation file lookup. The registration holds its
    /// own reference to the file until the ring is dropped. Once per ring.
    pub fn register_file(&mut self, fd: RawFd) -> io::Result<Target> {
        if self.fixed_files {
            return Err(io::Error::other("a file is already registered"));
        }
        self.ring.submitter().register_files(&[fd])?;
        self.fixed_files = true;
        Ok(Target::Fixed(0))
    }

    /// `SEND` of `buf[..len]` on a connected socket (`MSG_NOSIGNAL`; with `UDP_SEGMENT` set on
    /// the socket one buffer carries many datagrams); the buffer comes back with the final
    /// completion. With `link`, the next operation pushed runs only after this one succeeded
    /// (`IOSQE_IO_LINK`; on failure the rest of the chain completes with `-ECANCELED`), which
    /// keeps a batch in order and its accepted part a prefix.
    ///
    /// With `zerocopy` (only with [`Caps::send_zc`]) it is `SEND_ZC`: the kernel sends from
    /// the buffer's pages. The result then comes in a completion with `more` set, and the
    /// buffer only with the notification that follows ([`Completion::notif`]), once the
    /// kernel no longer reads it.
    pub fn send_linked(
        &mut self,
        target: Target,
        buf: Vec<u8>,
        send: LinkedSend,
        tag: u64,
    ) -> OpId {
        debug_assert!(!send.zerocopy || self.caps.send_zc);
        self.start(tag, Some(buf), None, |op| {
            let b = op.buf.as_ref().map_or(&[][..], |b| &b[..]);
            let len = send.len.min(b.len()).min(u32::MAX as usize) as u32;
            let flags = libc::MSG_NOSIGNAL;
            let e = match (target, send.zerocopy) {
                (Target::Fd(fd), false) => opcode::Send::new(types::Fd(fd), b.as_ptr(), len)
                    .flags(flags)
                    .build(),
                (Target::Fixed(i), false) => opcode::Send::new(types::Fixed(i), b.as_ptr(), len)
                    .flags(flags)
                    .build(),
                (Target::Fd(fd), true) => opcode::SendZc::new(types::Fd(fd), b.as_ptr(), len)
                    .flags(flags)
                    .zc_flags(SEND_ZC_REPORT_USAGE)
                    .build(),
                (Target::Fixed(i), true) => opcode::SendZc::new(types::Fixed(i), b.as_ptr(), len)
                    .flags(flags)
                    .zc_flags(SEND_ZC_REPORT_USAGE)
                    .build(),
            };
            if send.link {
                e.flags(squeue::Flags::IO_LINK)
            } else {
                e
            }
        })
    }

    /// One receive into `buf` (its full length); the buffer comes back with the completion,
    /// holding `res` bytes at its start.
    pub fn recv(&mut self, fd: RawFd, buf: Vec<u8>, tag: u64) -> OpId {
        self.start(tag, Some(buf), None, |op| {
            let b = op.buf.as_mut().map_or(&mut [][..], |b| &mut b[..]);
            let len = b.len().min(u32::MAX as usize) as u32;
            opcode::Recv::new(types::Fd(fd), b.as_mut_ptr(), len).build()
        })
    }

    /// Sends `buf[off..]` (`MSG_NOSIGNAL`); the buffer comes back with the completion.
    pub fn send(&mut self, fd: RawFd, buf: Vec<u8>, off: usize, tag: u64) -> OpId {
        self.start(tag, Some(buf), None, |op| {
            let b = op.buf.as_ref().map_or(&[][..], |b| &b[..]);
            let b = &b[off.min(b.len())..];
            let len = b.len().min(u32::MAX as usize) as u32;
            opcode::Send::new(types::Fd(fd), b.as_ptr(), len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        })
    }

    /// Reads into `buf` (its full length) from `fd` (an eventfd, a pipe).
    pub fn read(&mut self, fd: RawFd, buf: Vec<u8>, tag: u64) -> OpId {
        self.start(tag, Some(buf), None, |op| {
            let b = op.buf.as_mut().map_or(&mut [][..], |b| &mut b[..]);
            let len = b.len().min(u32::MAX as usize) as u32;
            opcode::Read::new(types::Fd(fd), b.as_mut_ptr(), len).build()
        })
    }

    /// Completes once `fd` is readable (one shot).
    pub(crate) fn poll_readable(&mut self, fd: RawFd, tag: u64) -> OpId {
        self.start(tag, None, None, |_| {
            opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build()
        })
    }

    /// Completes (with `-ETIME`) after `after`.
    pub fn timeout(&mut self, after: Duration, tag: u64) -> OpId {
        let ts = Box::new(types::Timespec::from(after));
        self.start(tag, None, Some(ts), |op| {
            let p: *const types::Timespec = op.ts.as_deref().map_or(std::ptr::null(), |t| t);
            opcode::Timeout::new(p).build()
        })
    }

    /// Asks the kernel to cancel `id`. The operation keeps its buffer until its own completion
    /// (usually `-ECANCELED`) arrives; cancelling a finished operation is harmless, also when
    /// its slot already holds another operation (the generation differs, and the kernel
    /// matches the whole `user_data`).
    pub fn cancel(&mut self, id: OpId) {
        if self.live_op(id).is_some() {
            let sqe = opcode::AsyncCancel::new(id.user_data())
                .build()
                .user_data(UD_IGNORE);
            // SAFETY: a cancel request carries no pointer.
            unsafe { self.push(sqe) };
        }
    }

    /// Cancels every live operation.
    pub(crate) fn cancel_all(&mut self) {
        for i in 0..self.ops.len() {
            let slot = &self.ops[i];
            if slot.op.is_some() {
                self.cancel(OpId {
                    slot: i as u32,
                    gen: slot.gen,
                });
            }
        }
    }

    /// Submits the queued operations and runs the ring's deferred work (which posts the
    /// completions of data that arrived), without waiting: one `io_uring_enter` with
    /// `GETEVENTS` and no minimum. Cheaper than [`Ring::submit_and_wait`] with a zero timeout,
    /// which goes through the kernel's wait path (timer set-up and all) when nothing is ready.
    pub(crate) fn submit_nowait(&mut self) -> io::Result<()> {
        self.stats.enters += 1;
        let to_submit = self.ring.submission().len() as u32;
        // SAFETY: no argument pointer is passed (`None`, size 0); `to_submit` is the number of
        // entries queued, every one of which satisfies `push`'s contract.
        let r = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, 0, ENTER_GETEVENTS, None)
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits the queued operations and waits for at least one completion, at most `timeout`
    /// (`None`: no limit; zero: do not wait). One `io_uring_enter`.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.submit_and_wait_for(1, timeout)
    }

    /// [`Ring::submit_and_wait`] for at least `want` completions (e.g. a whole linked batch),
    /// counting those already reaped into the backlog. One `io_uring_enter`.
    pub fn submit_and_wait_for(
        &mut self,
        want: usize,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.stats.enters += 1;
        let want = want.saturating_sub(self.backlog.len());
        let r = match timeout {
            None => self.ring.submit_and_wait(want),
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out` (appending). Slots of finished operations
    /// are freed here, their buffers handed back in the completion.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        let Ring {
            ring,
            ops,
            free,
            live,
            bufs,
            backlog,
            stats,
            msgs,
            ..
        } = self;
        for e in backlog.drain(..).chain(ring.completion()) {
            stats.completions += 1;
            let ud = e.user_data();
            if ud == UD_IGNORE {
                continue;
            }
            let flags = e.flags();
            let more = cqueue::more(flags);
            let bid = cqueue::buffer_select(flags);
            let id = OpId::from_user_data(ud);
            let slot = ops
                .get_mut(id.slot as usize)
                .filter(|s| s.gen == id.gen && s.op.is_some());
            let (tag, buf, accept) = match slot {
                Some(slot) if !more => {
                    let op = slot.op.take().unwrap_or_else(|| unreachable!());
                    // The next operation in this slot gets the next generation.
                    slot.gen = slot.gen.wrapping_add(1) & GEN_MASK;
                    free.push(id.slot);
                    *live -= 1;
                    if let Some(m) = op.msg {
                        msgs.push(m);
                    }
                    (op.tag, op.buf, op.accept)
                }
                Some(slot) => {
                    let op = slot.op.as_ref().unwrap_or_else(|| unreachable!());
                    (op.tag, None, op.accept)
                }
                None => {
                    // Not ours (cannot happen): give a selected buffer back at least.
                    if let (Some(b), Some(br)) = (bid, bufs.as_mut()) {
                        br.recycle(b);
                    }
                    continue;
                }
            };
            let res = e.result();
            let accepted = (accept && res >= 0).then(|| {
                // SAFETY: a non-negative result of an `ACCEPT` is the fd the kernel has just
                // created for this one connection; nothing else knows its number, and each
                // completion is reaped once, so this `OwnedFd` is its only owner.
                unsafe { OwnedFd::from_raw_fd(res) }
            });
            out.push(Completion {
                id,
                tag,
                res,
                more,
                notif: cqueue::notif(flags),
                bid,
                buf,
                accepted,
            });
        }
    }

    /// The data of a provided buffer named by a completion (`len` = its result).
    pub(crate) fn provided(&self, bid: u16, len: usize) -> &[u8] {
        self.bufs.as_ref().map_or(&[][..], |b| b.get(bid, len))
    }

    /// Gives a provided buffer back to the kernel (visible at the next [`Ring::flush_buffers`],
    /// which [`Ring::submit_and_wait`] callers should call once per turn).
    pub(crate) fn recycle(&mut self, bid: u16) {
        if let Some(b) = self.bufs.as_mut() {
            b.recycle(bid);
        }
    }

    /// Publishes the recycled provided buffers.
    pub(crate) fn flush_buffers(&self) {
        if let Some(b) = self.bufs.as_ref() {
            b.publish();
        }
    }

    /// Cancels everything and reaps until nothing is in flight or `limit` passes. Completions
    /// are dropped (their buffers freed, which is now safe). Returns true when fully drained.
    pub fn drain(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut done = Vec::new();
        self.cancel_all();
        while self.live > 0 {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if self.submit_and_wait(Some(end - now)).is_err() {
                break;
            }
            self.reap(&mut done);
            for c in done.drain(..) {
                if let Some(b) = c.bid {
                    self.recycle(b);
                }
                if c.more {
                    // A multishot operation that raced with the cancel: ask again.
                    self.cancel(c.id);
                }
            }
        }
        self.live == 0
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.live > 0 && !self.drain(Duration::from_secs(2)) {
            // The kernel still owns some buffers: leak them rather than free memory it may write.
            for op in self.ops.drain(..).filter_map(|s| s.op) {
                std::mem::forget(op);
            }
            return; // `bufs` stays registered, so its Drop leaks it too.
        }
        if let Some(b) = self.bufs.as_mut() {
            b.unregister(&self.ring.submitter());
        }
    }
}
