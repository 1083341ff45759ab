//! UDP blaster and exact receiver: wire format, control channel, tracker, pacer, sender,
//! receiver and their report, and the impairment relay.

pub mod backend;
pub mod control;
pub mod pacer;
pub mod receiver;
pub mod recv_core;
pub mod relay;
pub mod report;
pub mod sender;
pub mod tracker;
#[cfg(feature = "uring")]
mod uring;
pub mod wire;
