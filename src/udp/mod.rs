//! UDP blaster and exact receiver: wire format, control channel, tracker, pacer, sender,
//! receiver and their report, and the impairment relay.

pub mod control;
pub mod pacer;
pub mod receiver;
pub mod relay;
pub mod report;
pub mod sender;
pub mod tracker;
pub mod wire;
