//! `netcore traffic`: concurrent TCP and UDP flows of random-size messages on one reactor, a
//! per-interval monitor, and a plot.
//!
//! Each flow is a server that sends messages to its client over loopback: the TCP server writes
//! framed messages on an accepted connection, the UDP server sends one datagram per message.
//! Message sizes come from a seeded generator per flow ([`MessageGen`]), so a run is
//! reproducible and its totals can be checked against the generator. Every message starts with
//! a 12-byte header (`u32` length, `u64` sequence, little-endian), which lets the TCP client
//! find message boundaries in the stream ([`FrameParser`]) and the UDP client count datagrams.
//!
//! The pure parts (generator and frame parser in `flows`, the report in `report`) sit beside; [`run`] is the reactor
//! driver that moves bytes between the sockets and them.

mod driver;
pub mod messages;
pub mod report;

pub use driver::run;
pub use messages::{
    decode_header, encode_message, sizes, Counters, Flow, FrameParser, MessageGen, Pace,
    TrafficConfig, HEADER, MAX_MESSAGE,
};
