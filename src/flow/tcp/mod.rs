//! The TCP test: what a test is (`spec`, pure), its report (`report`, pure), one data
//! connection's loops (`stream`), and the two ends: `client` (blast: opens the control and
//! data connections) and `server` (recv and blast's embedded receiver, reached through the
//! receiver's control listener, `flow::recv`).

pub mod client;
pub mod report;
pub mod server;
pub mod spec;
pub mod stream;
