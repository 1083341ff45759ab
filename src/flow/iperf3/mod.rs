//! Speaking iperf3's protocol (drivers around the sans-IO core in `crate::interop::iperf3`):
//!
//! - [`server`]: `netcore recv` serving a stock `iperf3 -c`. The receiver's control thread
//!   tells an iperf3 client from a netcore one by the first byte of the control connection
//!   ([`detect`]) and hands it here with the shared listener, on which its data connections
//!   arrive too (each opening with the test's cookie).
//! - [`udp`]: the same for `iperf3 -c -u` (forward, `-R`, `--bidir`): per-stream connected
//!   sockets on the receiver's port.
//! - [`dgram`]: iperf3 UDP streams for either role: paced `sendmmsg` senders, readers with
//!   netcore's tracker on every datagram.
//! - [`report`]: netcore's report of an iperf3 UDP test, either role (pure).
//! - [`client`]: `netcore blast --to iperf3://HOST` driving a stock `iperf3 -s`, TCP and UDP.
//! - [`ctl`]: the control connection's bounded reads and writes around `ServerCtl`.

pub mod client;
pub mod ctl;
pub mod detect;
pub mod dgram;
pub mod report;
pub mod server;
pub mod udp;

pub use ctl::{Iperf3Ctx, Iperf3Event};
pub use detect::{opener, Opener};
pub use server::serve;
