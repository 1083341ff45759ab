//! netcore: a Linux network performance workbench.
//!
//! Pure cores (wire format, sequence tracker, pacer, control messages, task sessions, reports)
//! sit beside thin drivers that move bytes between sockets and those cores. All `unsafe` code
//! is in [`sys`] (and the io_uring backend, `uring`).

pub mod cli;
pub mod diff;
pub mod flow;
pub mod interop;
pub mod load;
pub mod metrics;
pub mod reactor;
pub mod relay;
pub mod rpm;
pub mod seeded;
pub mod server;
#[macro_use]
pub mod sys;
pub mod proto;
pub mod stats;
pub mod traffic;
pub mod units;
#[cfg(feature = "uring")]
pub mod uring;
