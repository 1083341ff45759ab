//! The UDP test: wire format, sender, receiver and the receiver's sequence tracker.

pub mod tracker;
