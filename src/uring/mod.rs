//! The io_uring backend (feature `uring`, probed at run time).
//!
//! [`Ring`] is the one owner of a ring and of everything the kernel may touch through it. The
//! drivers above it (the `uring` server model, and later the UDP backends) never hand the kernel
//! a pointer themselves: they give the ring an owned buffer (a `Vec<u8>`) with the operation and
//! get it back, untouched by anyone in between, in the operation's final completion.
//!
//! # Ownership of in-flight buffers
//!
//! * Every submitted operation occupies a slot in the ring's operation slab; its `user_data` is
//!   the slot's generation and index ([`OpId`]). The slot holds the operation's buffer, its
//!   timespec (timeouts) and the caller's tag. A slot is freed only when the operation's
//!   **final** completion arrives (a completion without `IORING_CQE_F_MORE`), so no buffer is
//!   freed, moved or reused while the kernel may still write to it. The slot is freed when the
//!   completion is *reaped*, before the driver has handled it, so the driver may still hold the
//!   old id while the slot serves a new operation: the generation (bumped on every free) makes
//!   that id stale instead of a name for the new operation, and a cancel by a stale id matches
//!   nothing (in the ring, and in the kernel, which compares the whole `user_data`).
//! * Cancelling ([`Ring::cancel`]) only *asks* the kernel to stop: the operation keeps its slot
//!   and buffer until its completion (usually `-ECANCELED`) arrives, exactly like any other
//!   completion (tokio-uring's `Lifecycle::Ignored`).
//! * Multishot receives take their memory from a provided-buffer ring ([`bufring`]): one
//!   allocation, never resized, registered with the kernel for the ring's lifetime. A completion
//!   names the buffer id it filled; the caller reads it ([`Ring::provided`]) and gives it back
//!   ([`Ring::recycle`]). When the kernel finds no free buffer the multishot receive ends with
//!   `ENOBUFS`, and the driver re-arms it after recycling.
//! * An `ACCEPT`'s new connection is handed out already owned ([`Completion::accepted`], an
//!   `OwnedFd`), so no driver turns a raw fd number into a socket itself.
//! * Dropping a [`Ring`] first cancels every live operation and waits (bounded) for their
//!   completions. Whatever is somehow still in flight after that is leaked, never freed, so even
//!   a misbehaving kernel cannot write into freed memory.
//!
//! # Batching
//! Operations are pushed to the submission queue as work appears; [`Ring::submit_and_wait`]
//! enters the kernel once per loop turn (submitting the batch and waiting for at least one
//! completion or the timeout), and [`Ring::reap`] takes the whole completion queue at once. Only
//! when the submission queue is full does a push enter the kernel early.
//!
//! # Availability
//! [`Ring::new`] sets the ring up (`SINGLE_ISSUER|DEFER_TASKRUN` where the kernel takes them,
//! else `COOP_TASKRUN`, else no flags) and probes the opcodes. Where io_uring cannot be used it
//! returns [`Unavailable`], whose message names the cause in one line (`ENOSYS`,
//! `kernel.io_uring_disabled`, a seccomp filter, `RLIMIT_MEMLOCK`, a missing opcode).
//! `NETCORE_URING=off` forces that path, so the fallback messages can be tested anywhere.

pub mod bufring;
pub mod notify;
pub mod probe;
pub mod ring;

pub use notify::Notifier;
pub use probe::{forced_off, Unavailable, ENV};
pub use ring::{Caps, Completion, LinkedSend, OpId, Ring, RingStats, Target};

#[cfg(test)]
mod tests;
