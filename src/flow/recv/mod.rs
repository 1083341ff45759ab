//! The receiver service (`recv`, and `blast`'s embedded receiver): one TCP listener and one
//! UDP socket on a port, admission (who may test, how many tests at once, the limits a sender
//! cannot exceed) and the dispatch of each connection to its test: UDP (the UDP thread of
//! `flow::udp`), TCP (`flow::tcp::server`) or an iperf3 client (`flow::iperf3`). It stands
//! above the protocol folders and may import all of them; none of them imports it.
//!
//! - [`receiver`]: the bound receiver, its control thread and UDP thread, admission and slots;
//! - [`session`]: one control connection's state machine (pure), its limits;
//! - [`reverse`]: a reverse UDP test (`-R`) on the receiver's side;
//! - [`bidir`]: UDP `--bidir` from the client: a sender beside the embedded receiver;
//! - [`echo`]: the echo of `rpm`'s latency probes (and its handshake probes), an admitted test.

pub mod bidir;
pub mod echo;
pub mod receiver;
pub mod reverse;
pub mod session;
