//! The TCP control channel of a UDP test: messages, their codec (newline-delimited JSON, one
//! message a line, bounded) and a blocking connection with deadlines.
//!
//! ```text
//! sender                      receiver
//!   Hello  ------------------>
//!          <------------------  Ready            (or Error)
//!   ... datagrams over UDP ...
//!          <------------------  Interval         (every --interval, while the test runs)
//!   Done   ------------------>
//!          <------------------  Report           (after the drain window)
//! ```
//! The end of a test is agreed here, never with a UDP "STOP".

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::flow::cpu::CpuUsage;
use crate::flow::tcp::report::StreamEnd;
use crate::flow::tcp::spec::TcpSpec;
use crate::flow::udp::report::ReceiverStats;

/// Control protocol version; a Hello with another version is refused.
///
/// Version 2 (TCP tests, CPU figures): the Hello keeps version 1's fields, so a version-1
/// receiver can still read it and refuse it by its version with a clear message; a `Setup`
/// follows it (the protocol and, for TCP, the test's settings); a UDP `Done` carries the
/// sender's CPU; a TCP test ends with `TcpDone` and `TcpReport`.
pub const PROTOCOL_VERSION: u32 = 2;
/// The longest control message accepted (a Report is a few KiB).
pub const MAX_MESSAGE: usize = 1 << 20;

/// How much a test plans to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// Datagrams to send.
    Count(u64),
    /// Sending time in nanoseconds.
    TimeNs(u64),
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Msg {
    Hello {
        version: u32,
        test_id: u64,
        /// UDP payload bytes per datagram.
        len: u32,
        plan: Plan,
        streams: u16,
        verify: bool,
        /// The sender's host name, so the receiver can tell whether one-way latency compares
        /// one clock with itself.
        host: String,
    },
    Ready {
        /// Receive buffer the kernel granted (bytes, as getsockopt reports it).
        rcvbuf: u64,
        gro: bool,
    },
    Interval {
        /// Receiver's seconds since the first datagram of the test.
        t: f64,
        datagrams: u64,
        bytes: u64,
        lost_so_far: u64,
    },
    Done {
        /// Datagrams the kernel accepted (sequence numbers 0..sent).
        sent: u64,
        bytes: u64,
        elapsed_ns: u64,
        /// Send errors by errno name, each retried until the kernel took the datagram.
        errors: BTreeMap<String, u64>,
        /// The sending thread's CPU over the test.
        #[serde(default)]
        cpu: Option<CpuUsage>,
    },
    /// After Hello (version 2): what kind of test it is. `tcp: None` is a UDP test.
    Setup {
        tcp: Option<TcpSpec>,
    },
    /// The client's end of a TCP test: its account of every data connection and its CPU.
    TcpDone {
        streams: Vec<StreamEnd>,
        cpu: CpuUsage,
    },
    /// The server's answer to `TcpDone`: its account and its CPU.
    TcpReport {
        streams: Vec<StreamEnd>,
        cpu: CpuUsage,
        interrupted: bool,
    },
    Report {
        receiver: Box<ReceiverStats>,
    },
    Error {
        message: String,
    },
}

/// Encodes a message as one line.
pub fn encode(msg: &Msg) -> Vec<u8> {
    let mut v = serde_json::to_vec(msg).expect("control messages serialise");
    v.push(b'\n');
    v
}

/// Decodes one line (without its newline). Unknown types and fields are errors.
pub fn decode(line: &[u8]) -> Result<Msg> {
    if line.len() > MAX_MESSAGE {
        bail!("control message of {} bytes is over the limit", line.len());
    }
    serde_json::from_slice(line).map_err(|e| anyhow!("malformed control message: {e}"))
}

/// A control connection: blocking TCP with a deadline on every receive.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Connects to a receiver's control port (3 s to connect), naming it on failure.
    pub fn connect(addr: std::net::SocketAddr) -> Result<Conn> {
        let stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(3)).with_context(|| {
                format!(
                "cannot reach the receiver's control port {addr} (is `netcore recv` running there?)"
            )
            })?;
        Ok(Conn::new(stream)?)
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send(&mut self, msg: &Msg) -> Result<()> {
        self.stream
            .write_all(&encode(msg))
            .context("control channel: send failed")
    }

    /// Receives the next message, waiting at most until `deadline`; `Ok(None)` when the
    /// deadline passed with no complete message.
    pub fn recv_until(&mut self, deadline: Instant) -> Result<Option<Msg>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let msg = decode(&self.buf[..pos]);
                self.buf.drain(..=pos);
                return msg.map(Some);
            }
            if self.buf.len() > MAX_MESSAGE {
                bail!("control message over {MAX_MESSAGE} bytes");
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(wait))?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("control channel closed by the peer"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("control channel: receive failed"),
            }
        }
    }

    /// Receives the next message or fails naming what was awaited.
    pub fn expect(&mut self, what: &str, timeout: Duration) -> Result<Msg> {
        match self.recv_until(Instant::now() + timeout)? {
            Some(Msg::Error { message }) => bail!("peer refused: {message}"),
            Some(m) => Ok(m),
            None => bail!("no {what} from the peer within {timeout:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let m = Msg::Hello {
            version: 1,
            test_id: u64::MAX,
            len: 1472,
            plan: Plan::Count(10),
            streams: 1,
            verify: false,
            host: "h".into(),
        };
        let e = encode(&m);
        assert_eq!(*e.last().unwrap(), b'\n');
        assert_eq!(decode(&e[..e.len() - 1]).unwrap(), m);
    }

    #[test]
    fn unknown_messages_are_errors() {
        assert!(decode(br#"{"type":"stop"}"#).is_err());
        assert!(decode(br#"{"type":"ready","rcvbuf":1,"gro":true,"extra":1}"#).is_err());
        assert!(decode(b"STOP").is_err());
        assert!(decode(&vec![b' '; MAX_MESSAGE + 1]).is_err());
    }

    #[test]
    fn conn_deadline_and_framing() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = Conn::new(TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
        let mut b = Conn::new(l.accept().unwrap().0).unwrap();
        let t = Instant::now();
        assert!(b
            .recv_until(Instant::now() + Duration::from_millis(50))
            .unwrap()
            .is_none());
        assert!(t.elapsed() >= Duration::from_millis(50));
        a.send(&Msg::Ready {
            rcvbuf: 5,
            gro: true,
        })
        .unwrap();
        a.send(&Msg::Error {
            message: "x".into(),
        })
        .unwrap();
        let m = b.expect("ready", Duration::from_secs(5)).unwrap();
        assert_eq!(
            m,
            Msg::Ready {
                rcvbuf: 5,
                gro: true
            }
        );
        assert!(b.expect("anything", Duration::from_secs(5)).is_err());
        drop(a);
        assert!(b
            .recv_until(Instant::now() + Duration::from_secs(5))
            .is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }
    }
}
