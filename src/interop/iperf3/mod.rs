//! iperf3's protocol (3.x, as spoken by Debian's 3.12 and the current release): a TCP control
//! connection on port 5201 carrying one-byte states, a 37-byte cookie and length-prefixed JSON;
//! data on TCP connections that open with the same cookie, or on UDP "streams" that open with a
//! 4-byte handshake and carry a 12- or 16-byte header in every datagram.
//!
//! - [`msg`]: states, cookie, JSON frames, the parameter and results documents;
//! - [`udp_header`]: the UDP handshake words and data header;
//! - [`server_ctl`] / [`client_ctl`]: each side's control state machine, sans-IO.
//!
//! Learned from iperf3's source and behaviour; no code is taken from it.

pub mod client_ctl;
pub mod msg;
pub mod server_ctl;
pub mod udp_header;

pub use msg::{Cookie, Params, ProtoError, Results, State, StreamResult};

/// iperf3's default port.
pub(crate) const DEFAULT_PORT: u16 = 5201;

#[cfg(test)]
mod tests;
