//! The TCP test: what a test is (`spec`, pure: the data connection's preamble) and its two
//! ends: `client` (blast: opens the control and data connections) and `server` (recv and
//! blast's embedded receiver, reached through the receiver's control listener, `flow::recv`).
//! Both run the data connections on `flow::tcp_engine`, the engine iperf3's TCP tests share.

pub mod client;
pub mod server;
pub mod spec;
