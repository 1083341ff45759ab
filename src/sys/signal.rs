//! Termination signals (SIGINT, SIGTERM) as a readable file descriptor (the self-pipe trick).
//!
//! [`termination_fd`] installs, once per process, a handler for SIGINT and SIGTERM that writes
//! one byte to a pipe. The read end becomes readable when a signal arrives, so an event loop can
//! register it (every reactor may register the same fd: each epoll instance gets its own
//! notification) and a blocking program can dedicate a thread to reading it. The handler does
//! nothing but async-signal-safe work: an atomic store and a `write(2)`.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::OnceLock;

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
static SIGNALS: AtomicU32 = AtomicU32::new(0);
static READ_FD: OnceLock<io::Result<RawFd>> = OnceLock::new();

extern "C" fn on_signal(sig: libc::c_int) {
    LAST_SIGNAL.store(sig, Ordering::SeqCst);
    SIGNALS.fetch_add(1, Ordering::SeqCst);
    let fd = WRITE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = 1u8;
        // SAFETY: write(2) is async-signal-safe; `b` outlives the call. The write end is
        // non-blocking, so a full pipe (many signals) just drops the byte. errno is saved and
        // restored so the interrupted code does not see it change.
        unsafe {
            let saved = *libc::__errno_location();
            libc::write(fd, (&b as *const u8).cast(), 1);
            *libc::__errno_location() = saved;
        }
    }
}

fn setup_pipe() -> io::Result<RawFd> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    unsafe { syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK)) }?;
    WRITE_FD.store(fds[1], Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero sigaction is a valid starting value; we then set the handler
        // (an `extern "C" fn(c_int)`, matching sa_handler without SA_SIGINFO), an empty mask and
        // SA_RESTART so blocking calls elsewhere are restarted rather than failing with EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            syscall!(sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
    }
    Ok(fds[0])
}

/// The read end of the termination pipe, installing the SIGINT/SIGTERM handlers on first use.
/// The fd is non-blocking and lives for the whole process.
pub fn termination_fd() -> io::Result<BorrowedFd<'static>> {
    match READ_FD.get_or_init(setup_pipe) {
        // SAFETY: the read end is never closed (it is owned by this static for the process's
        // lifetime), so borrowing it for 'static is sound.
        Ok(fd) => Ok(unsafe { BorrowedFd::borrow_raw(*fd) }),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

/// The last termination signal received (0 if none).
pub fn last_signal() -> i32 {
    LAST_SIGNAL.load(Ordering::SeqCst)
}

/// How many termination signals arrived so far: a wait that began after the first one (e.g.
/// for the report of a test that Ctrl-C cut short) gives up on the next.
pub fn signal_count() -> u32 {
    SIGNALS.load(Ordering::SeqCst)
}

/// Blocks the calling thread until a termination signal arrives (for blocking servers, which
/// dedicate a thread to this). Returns the signal number.
pub fn wait_for_termination() -> io::Result<i32> {
    let fd = termination_fd()?;
    loop {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        match unsafe { syscall!(poll(&mut pfd, 1, -1)) } {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        drain(fd);
        let s = last_signal();
        if s != 0 {
            return Ok(s);
        }
    }
}

/// Reads and discards whatever is in the (non-blocking) termination pipe.
pub fn drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: `buf` is valid for writes of its length for the duration of the call.
        let n = unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n <= 0 {
            break;
        }
    }
}

/// Restores the default disposition of SIGINT and SIGTERM (used in forked children, which
/// must die on Ctrl-C rather than write to their parent's pipe).
pub fn reset_default() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: SIG_DFL is always a valid disposition for these signals.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Sends `sig` to this process (tests use it to exercise the handler).
pub fn raise(sig: i32) -> io::Result<()> {
    // SAFETY: raise(3) with any signal number is memory-safe; errors come back as -1.
    unsafe { syscall!(raise(sig)) }.map(|_| ())
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the SIGINT/SIGTERM handlers (idempotent), for commands that poll
/// [`stop_requested`] rather than watch the pipe.
pub fn install() -> io::Result<()> {
    termination_fd().map(|_| ())
}

/// True once SIGINT or SIGTERM arrived (or [`request_stop`] was called): commands poll it and
/// finish their reports instead of dying mid-write.
#[inline]
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed) || LAST_SIGNAL.load(Ordering::Relaxed) != 0
}

/// Sets the stop flag by hand.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
