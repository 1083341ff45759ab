//! The UDP test: wire format, sequence tracker, report (pure cores), and the sender and
//! receiver that drive them over `sendmmsg`/`recvmmsg` or io_uring.

pub mod bidir;
pub mod receiver;
pub mod recv_core;
pub mod recv_session;
pub mod report;
pub mod reverse;
pub mod sender;
pub mod tracker;
pub mod transport;
#[cfg(feature = "uring")]
mod uring;
pub mod wire;
