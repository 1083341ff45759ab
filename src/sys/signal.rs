//! Termination signals (SIGINT, SIGTERM): a stop flag, the last signal, and a readable file
//! descriptor (the self-pipe trick), all on the `signal-hook` crate.
//!
//! [`termination_fd`] (or [`install`]) registers, once per process, signal-hook actions for
//! SIGINT and SIGTERM: `flag::register_usize` records the signal number, then
//! `low_level::pipe::register` writes one byte to a socket pair. The read end becomes readable
//! when a signal arrives, so an event loop can register it (every reactor may register the same
//! fd: each epoll instance gets its own notification) and a blocking program can dedicate a
//! thread to reading it. signal-hook keeps the handler async-signal-safe, chains any previous
//! handler and installs with `SA_RESTART`, so blocking calls elsewhere are restarted rather than
//! failing with EINTR — every blocking wait must therefore also poll [`stop_requested`] (with a
//! bounded timeout) or watch [`termination_fd`].
//!
//! A signal that comes before the handlers are in waits: `cli::main` blocks SIGINT, SIGTERM and
//! SIGHUP first thing ([`hold`]) and unblocks them once the command's handlers are installed
//! ([`release`]), so that it is not lost where SIGINT was ignored at the start.
//!
//! signal-hook-mio's `Signals` is the same pipe behind a per-reactor iterator; we keep one
//! process-wide pipe instead because several reactors, the uring server and blocking threads
//! all watch the one fd, and it must not be drained by one of them on behalf of the others.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

/// The last termination signal (0: none). Written by signal-hook's handler.
static LAST_SIGNAL: LazyLock<Arc<AtomicUsize>> = LazyLock::new(|| Arc::new(AtomicUsize::new(0)));
static READ_END: OnceLock<io::Result<UnixStream>> = OnceLock::new();
/// Termination signals received so far.
static SIGNALS: AtomicUsize = AtomicUsize::new(0);
/// The termination pipe's write end (kept open for the whole process).
static WRITE_FD: OnceLock<RawFd> = OnceLock::new();

/// Makes `sig` a termination signal: counted, recorded as the last one, and a byte down the
/// pipe's write end `write_fd`.
fn register(sig: i32, write_fd: RawFd) -> io::Result<()> {
    // SAFETY: the action is one atomic add, which is async-signal-safe; it touches no lock,
    // allocates nothing and does not panic.
    unsafe {
        signal_hook::low_level::register(sig, || {
            SIGNALS.fetch_add(1, Ordering::SeqCst);
        })
    }?;
    // Registered in this order, so the number is stored before the pipe wakes anyone.
    signal_hook::flag::register_usize(sig, Arc::clone(&LAST_SIGNAL), sig as usize)?;
    signal_hook::low_level::pipe::register_raw(sig, write_fd)?;
    Ok(())
}

fn setup() -> io::Result<UnixStream> {
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    let write_fd: RawFd = write.as_raw_fd();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        register(sig, write_fd)?;
    }
    // The write end lives for the whole process (the handlers refer to it).
    let _ = WRITE_FD.set(write_fd);
    std::mem::forget(write);
    Ok(read)
}

/// The read end of the termination pipe, installing the SIGINT/SIGTERM handlers on first use.
/// The fd is non-blocking and lives for the whole process.
pub(crate) fn termination_fd() -> io::Result<BorrowedFd<'static>> {
    match READ_END.get_or_init(setup) {
        Ok(s) => {
            let fd: &'static UnixStream = s;
            Ok(std::os::fd::AsFd::as_fd(fd))
        }
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

/// Makes SIGHUP a termination signal too (counted, recorded, waking the pipe like SIGTERM):
/// for `recv`, where it asks for a graceful stop. Other commands keep its default action.
pub(crate) fn install_hangup() -> io::Result<()> {
    termination_fd()?;
    let write_fd = *WRITE_FD
        .get()
        .ok_or_else(|| io::Error::other("signal pipe not set up"))?;
    register(signal_hook::consts::SIGHUP, write_fd)
}

/// The signal mask the process started with, kept by [`hold`] for [`release`].
static HELD: OnceLock<libc::sigset_t> = OnceLock::new();

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread: first thing in `main`, before any
/// other thread exists, until the command has installed its handlers ([`release`]). A process
/// started with SIGINT ignored (`nohup`, a script's background job, `trap '' INT`) would
/// otherwise lose a Ctrl-C that comes before its handler: the kernel discards an ignored
/// signal when it is sent, but keeps a blocked one pending whatever its disposition (Linux:
/// `sig_ignored` is false for a blocked signal), and installing a handler keeps it pending.
pub(crate) fn hold() -> io::Result<()> {
    // SAFETY: both sets are plain values owned here, initialised by `sigemptyset` before use;
    // `pthread_sigmask` only reads `set` and writes `old`.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        match libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) {
            0 => old,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    };
    let _ = HELD.set(old);
    Ok(())
}

/// Restores the mask [`hold`] found (on the thread that held it): a termination signal that
/// came meanwhile is delivered now, to the handler the command installed, or with its
/// default action (a command that handles none dies of it, as it would have at once).
pub(crate) fn release() -> io::Result<()> {
    let Some(old) = HELD.get() else {
        return Ok(());
    };
    // SAFETY: `old` is the mask `pthread_sigmask` returned in `hold`; only read.
    match unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// How many termination signals arrived so far (a wait can give up on the next one).
pub(crate) fn signal_count() -> u32 {
    SIGNALS.load(Ordering::SeqCst) as u32
}

/// The last termination signal received (0 if none).
pub(crate) fn last_signal() -> i32 {
    LAST_SIGNAL.load(Ordering::SeqCst) as i32
}

/// Blocks the calling thread until a termination signal arrives (for blocking servers, which
/// dedicate a thread to this). Returns the signal number (0 when the stop was requested by
/// [`request_stop`] rather than by a signal: the wait also observes that, within 100 ms).
pub(crate) fn wait_for_termination() -> io::Result<i32> {
    let fd = termination_fd()?;
    loop {
        if STOP.load(Ordering::SeqCst) {
            return Ok(last_signal());
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        match unsafe { syscall!(poll(&mut pfd, 1, 100)) } {
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
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
    }
}

/// Restores the default disposition of SIGINT and SIGTERM (used in forked children, which
/// must die on Ctrl-C rather than write to their parent's pipe).
pub(crate) fn reset_default() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: SIG_DFL is always a valid disposition for these signals.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Sends `sig` to this process (tests use it to exercise the handler).
pub fn raise(sig: i32) -> io::Result<()> {
    signal_hook::low_level::raise(sig)
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the SIGINT/SIGTERM handlers (idempotent), for commands that poll
/// [`stop_requested`] rather than watch the pipe.
pub fn install() -> io::Result<()> {
    termination_fd().map(|_| ())
}

/// True once SIGINT or SIGTERM arrived (or [`request_stop`] was called): commands poll it and
/// finish their reports instead of dying mid-write.
#[inline]
pub(crate) fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed) || LAST_SIGNAL.load(Ordering::Relaxed) != 0
}

/// Sets the stop flag by hand.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
