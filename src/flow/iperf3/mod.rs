//! Speaking iperf3's protocol (drivers around the sans-IO core in `crate::interop::iperf3`):
//!
//! - [`server`]: `netcore recv` serving a stock `iperf3 -c`. The receiver's control thread
//!   tells an iperf3 client from a netcore one by the first byte of the control connection
//!   ([`detect`]) and hands it here with the shared listener, on which its data connections
//!   arrive too (each opening with the test's cookie).
//! - [`ctl`]: the control connection's bounded reads and writes around `ServerCtl`.

pub mod ctl;
pub mod detect;
pub mod server;

pub use detect::{opener, Opener};
pub use server::{serve, Iperf3Ctx, Iperf3Event};
