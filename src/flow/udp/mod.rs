//! The UDP test: wire format and report (pure cores), the receiving thread's core, and the
//! sender and receive loops that drive them over `sendmmsg`/`recvmmsg` or io_uring. The
//! receiver service that admits UDP tests (and TCP and iperf3 ones) is `flow::recv`.

pub mod recv_core;
pub mod recv_mmsg;
pub mod report;
pub mod sender;
pub mod transport;
#[cfg(feature = "uring")]
pub mod uring;
pub mod wire;
