//! Processes: `fork`, `_exit`, reaping children, signalling them; and counters in memory
//! shared across `fork` (so a process-per-client server can still total its children's work).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;

/// Which side of a `fork` we are on.
pub enum Forked {
    /// In the parent; the child's pid.
    Parent(libc::pid_t),
    /// In the child.
    Child,
}

/// `fork(2)`.
///
/// The child has only the calling thread. It must not rely on locks other threads may have held
/// (glibc's malloc and stdio are made fork-safe by their atfork handlers; our own mutexes are
/// not), must close what it does not own (listeners, epoll fds) and must leave through [`exit`]
/// so that no destructor or atexit handler of the parent's state runs twice.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; the contract above (only the
    // calling thread survives in the child) is documented for the callers.
    let pid = unsafe { syscall!(fork()) }?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid)
    })
}

/// Closes `fd` in a forked child that does not use it (the listening socket in a
/// process-per-client child). The caller must leave through [`exit`] without using `fd`'s owner
/// again, so that the owner (which the child's copy of memory still holds) is never dropped
/// here and the descriptor never closed twice.
pub(crate) fn close_in_child(fd: &impl AsRawFd) {
    // SAFETY: close has no memory-safety preconditions; the caller guarantees the owning object
    // is neither used nor dropped afterwards in this process.
    unsafe { libc::close(fd.as_raw_fd()) };
}

/// `_exit(2)`: ends the process at once, without running destructors or atexit handlers.
pub fn exit(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Reaps one exited child without blocking (`block == false`) or waiting for one. Returns its
/// pid, or `None` if no child has exited yet (or there are no children).
pub fn reap(block: bool) -> Option<libc::pid_t> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a valid int to write the exit status into.
        match unsafe { syscall!(waitpid(-1, &mut status, flags)) } {
            Ok(0) => return None,
            Ok(pid) => return Some(pid),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None, // ECHILD: no children
        }
    }
}

/// Sends `sig` to process `pid`.
pub fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) is memory-safe for any arguments.
    unsafe { syscall!(kill(pid, sig)) }.map(|_| ())
}

/// `n` zeroed atomic counters in an anonymous shared mapping: they stay shared with every child
/// forked afterwards (writes by a child are seen by the parent). The mapping is never unmapped.
pub(crate) fn shared_counters(n: usize) -> io::Result<&'static [AtomicU64]> {
    let len = (n.max(1) * std::mem::size_of::<AtomicU64>()).next_multiple_of(4096);
    // SAFETY: an anonymous mapping with no address hint touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is page-aligned (so aligned for AtomicU64), at least n * 8 bytes,
    // zero-filled by the kernel (all-zero is a valid AtomicU64), and never unmapped, so a
    // 'static shared slice over it is sound; atomics make concurrent access sound.
    Ok(unsafe { std::slice::from_raw_parts(p as *const AtomicU64, n) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn child_writes_are_seen_by_parent() {
        let c = shared_counters(3).unwrap();
        match fork().unwrap() {
            Forked::Child => {
                c[1].fetch_add(41, Ordering::SeqCst);
                exit(0);
            }
            Forked::Parent(pid) => {
                let mut status = 0;
                // Wait for this child specifically (other tests may fork too).
                // SAFETY: `status` is a valid int.
                loop {
                    // SAFETY: as above.
                    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                    if r == pid {
                        break;
                    }
                }
                assert_eq!(c[1].load(Ordering::SeqCst), 41);
                assert_eq!(c[0].load(Ordering::SeqCst), 0);
            }
        }
    }
}
