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
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::flow::access::{self, TestSecret, NONCE_LEN};
use crate::flow::cpu::CpuUsage;
use crate::flow::payload::{ReceiverStats, StreamEnd, TcpInterval, TcpSpec};

/// Control protocol version; a Hello with another version is refused.
///
/// Version 2 (TCP tests, CPU figures): the Hello keeps version 1's fields, so a version-1
/// receiver can still read it and refuse it by its version with a clear message; a `Setup`
/// follows it (the protocol and, for TCP, the test's settings); a UDP `Done` carries the
/// sender's CPU; a TCP test ends with `TcpDone` and `TcpReport`.
///
/// Wave 3's additions kept the version: the `Setup`'s `interval_ns` (which blast always
/// sends), a reverse test's `rate_bps` (was `pps`), the TCP data connections' `NCTCPv3`
/// preamble. A peer from before them is refused by the unknown field or preamble, in one
/// line, never misread.
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

/// What a reverse UDP test (`-R`) asks of the receiver, which sends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reverse {
    /// `--rate` in bits per second of payload over all streams (None: unpaced); a rate in
    /// datagrams a second travels as the bits its datagrams carry.
    pub rate_bps: Option<f64>,
}

/// What an echo test (`netcore rpm`'s latency probes) asks of the receiver, which echoes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoSpec {
    /// Probe length in bytes.
    pub len: u32,
    /// Probes per second the client sends (the receiver echoes at most about twice that).
    pub rate: f64,
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
        /// The sender will prove it knows the receiver's shared key (`--auth-key-file`): the
        /// receiver answers with a `Challenge`. Absent when false, so a Hello without a key
        /// reads as before (and a receiver that predates it refuses it as an unknown field).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        auth: bool,
    },
    /// The receiver's answer to a Hello with `auth`: a fresh random nonce (hex) to prove the
    /// key with (`flow::access`).
    Challenge {
        nonce: String,
    },
    /// The sender's proof: HMAC-SHA256 of the test id and the nonce under the key (hex).
    Auth {
        mac: String,
    },
    Ready {
        /// Receive buffer the kernel granted (bytes, as getsockopt reports it).
        rcvbuf: u64,
        gro: bool,
        /// A reverse UDP test (`-R`): the UDP port the receiver sends from. The client opens
        /// the path with a datagram to it (NAT-friendly). A TCP test with a `--window`: the
        /// TCP port of the test's own data listener (its buffers sized before the handshake).
        /// Absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
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
        /// Sending was cut short (Ctrl-C, SIGTERM) before the plan was done. Absent when false,
        /// so a Done that is not interrupted reads as before.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        interrupted: bool,
        /// The sender's pacing (`token bucket at 1.00 Mbit/s`), absent when unpaced, so the
        /// receiver's report can say how the test was sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pacing: Option<String>,
        /// With more than one stream (`-P`): datagrams the kernel accepted per stream (stream
        /// `i` sent its sequence numbers `0..streams[i]`); they add up to `sent`. Absent with
        /// one stream, so a one-stream Done reads as before (a receiver without `-P` support
        /// still takes it).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        streams: Vec<u64>,
        /// The sending host's `SndbufErrors` (`/proc/net/snmp`) over the sending; absent where
        /// unknown, so a Done without it reads as before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sndbuf_errors: Option<u64>,
    },
    /// After Hello (version 2): what kind of test it is. `tcp: None` is a UDP test.
    Setup {
        tcp: Option<TcpSpec>,
        /// A UDP test the receiver sends (`-R`), with the client's pacing; absent otherwise,
        /// so a forward Setup reads as before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reverse: Option<Reverse>,
        /// An echo test of latency probes (`rpm`); absent otherwise, so other Setups read as
        /// before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        echo: Option<EchoSpec>,
        /// The test's interval in nanoseconds (`blast --to ... --interval`): the receiver
        /// samples this test's intervals at it, from [`MIN_INTERVAL`] to [`MAX_INTERVAL`].
        /// Absent: the receiver's own `--interval`, so a Setup without it reads as before (a
        /// receiver that predates it refuses it as an unknown field).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval_ns: Option<u64>,
    },
    /// During a TCP test whose spec asks for it: the server's interval sample of the
    /// connections it writes (the sender's figures), every interval.
    TcpInterval {
        row: TcpInterval,
    },
    /// The client's end of a TCP test: its account of every data connection and its CPU.
    TcpDone {
        streams: Vec<StreamEnd>,
        cpu: CpuUsage,
        /// The client cut the test short (Ctrl-C, SIGTERM): the server stops its writers and
        /// marks its report interrupted. Absent when false, so a TcpDone reads as before.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        interrupted: bool,
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
    /// The end of an echo test (`rpm`): the client's probes are done.
    EchoDone {},
    /// The echo's answer to `EchoDone`: what it did with the datagrams that reached it.
    EchoReport {
        /// Probes of the test from the client's host that reached the echo.
        received: u64,
        /// Echoes sent back.
        echoed: u64,
        /// Datagrams not echoed (another host, not a probe of the test, over the rate).
        refused: u64,
        /// Handshake probes accepted.
        connects: u64,
    },
    Error {
        message: String,
    },
}

impl Msg {
    /// The message's type, for errors and refusals (not its contents: those may be huge).
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::Challenge { .. } => "Challenge",
            Msg::Auth { .. } => "Auth",
            Msg::Ready { .. } => "Ready",
            Msg::Interval { .. } => "Interval",
            Msg::Done { .. } => "Done",
            Msg::Setup { .. } => "Setup",
            Msg::TcpInterval { .. } => "TcpInterval",
            Msg::TcpDone { .. } => "TcpDone",
            Msg::TcpReport { .. } => "TcpReport",
            Msg::Report { .. } => "Report",
            Msg::EchoDone { .. } => "EchoDone",
            Msg::EchoReport { .. } => "EchoReport",
            Msg::Error { .. } => "Error",
        }
    }
}

/// Who a client is as it opens a test: the source address it connects from (`--bind`) and
/// the shared key it proves (`--auth-key-file`).
#[derive(Debug, Clone, Default)]
pub struct ClientId {
    pub bind: Option<IpAddr>,
    pub key: Option<access::Key>,
}

/// A line that is not a control message (malformed, unknown, over the bound): the connection
/// itself is fine, so the peer can be told why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Encodes a message as one line.
pub fn encode(msg: &Msg) -> Vec<u8> {
    let mut v = serde_json::to_vec(msg).expect("control messages serialise");
    v.push(b'\n');
    v
}

/// Decodes one line (without its newline). Unknown types and fields are errors.
pub fn decode(line: &[u8]) -> Result<Msg> {
    if line.len() > MAX_MESSAGE {
        return Err(Malformed(format!(
            "control message of {} bytes is over the limit",
            line.len()
        ))
        .into());
    }
    let msg: Msg = serde_json::from_slice(line)
        .map_err(|e| anyhow!(Malformed(format!("malformed control message: {e}"))))?;
    check_values(&msg).map_err(|why| anyhow!(Malformed(why)))?;
    Ok(msg)
}

/// Values a message's types admit but no test can use, refused where the message is read so
/// that nothing behind the codec meets them (issue #25: a reverse Setup pacing at 0 or a
/// negative rate panicked the sending thread's pacer).
fn check_values(msg: &Msg) -> std::result::Result<(), String> {
    if let Msg::Setup {
        interval_ns: Some(ns),
        ..
    } = msg
    {
        check_interval(Duration::from_nanos(*ns))?;
    }
    if let Msg::Setup {
        reverse: Some(Reverse {
            rate_bps: Some(bps),
        }),
        ..
    } = msg
    {
        if !(bps.is_finite() && (MIN_RATE_BPS..=MAX_RATE_BPS).contains(bps)) {
            return Err(format!(
                "a reverse test's pacing of {bps} bit/s is not a rate: it must be from \
                 {MIN_RATE_BPS} to {MAX_RATE_BPS:e} bit/s (or absent: unpaced)"
            ));
        }
    }
    Ok(())
}

/// The shortest interval a test may ask of the receiver (iperf3's `-i` floor): shorter
/// samples are noise, and each is a control message.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest: a minute (iperf3's `-i` ceiling).
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Refuses an interval a Setup may not ask for (outside [`MIN_INTERVAL`]..=[`MAX_INTERVAL`]),
/// in one line.
pub(crate) fn check_interval(d: Duration) -> std::result::Result<(), String> {
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&d) {
        return Err(format!(
            "an interval of {} is out of range: a test's interval must be from {} to {}",
            crate::units::fmt_secs(d.as_secs_f64()),
            crate::units::fmt_secs(MIN_INTERVAL.as_secs_f64()),
            crate::units::fmt_secs(MAX_INTERVAL.as_secs_f64())
        ));
    }
    Ok(())
}

/// The slowest pace a reverse Setup may ask for: 1 bit/s (slower is no rate a pacer can keep).
pub(crate) const MIN_RATE_BPS: f64 = 1.0;
/// The fastest: 10 Pbit/s, beyond any link (`--rate` itself parses up to 8e15).
pub(crate) const MAX_RATE_BPS: f64 = 1e16;

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
        Conn::connect_from(addr, None)
    }

    /// Like [`Conn::connect`], from source address `bind` when given (`blast --bind`).
    pub fn connect_from(addr: std::net::SocketAddr, bind: Option<IpAddr>) -> Result<Conn> {
        let reach = || {
            format!(
                "cannot reach the receiver's control port {addr} (is `netcore recv` running there?)"
            )
        };
        let stream = match bind {
            None => {
                TcpStream::connect_timeout(&addr, Duration::from_secs(3)).with_context(reach)?
            }
            Some(ip) => {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                s.bind(&SocketAddr::new(ip, 0).into())
                    .with_context(|| format!("cannot bind to {ip} (--bind)"))?;
                s.connect_timeout(&addr.into(), Duration::from_secs(3))
                    .with_context(reach)?;
                s.into()
            }
        };
        Ok(Conn::new(stream)?)
    }

    /// Opens a test: sends `hello` (marked `auth` when the client has a key) and, with a key,
    /// answers the receiver's Challenge with the proof (`flow::access`). The caller sends
    /// Setup next. With a key, the secret the test's data connections prove they belong to
    /// this connection with (a TCP test's preambles).
    pub fn open_test(&mut self, mut hello: Msg, client: &ClientId) -> Result<Option<TestSecret>> {
        let Msg::Hello { test_id, auth, .. } = &mut hello else {
            bail!("open_test needs a Hello");
        };
        let test_id = *test_id;
        *auth = client.key.is_some();
        self.send(&hello)?;
        let Some(key) = &client.key else {
            return Ok(None);
        };
        let nonce: [u8; NONCE_LEN] = match self.expect("Challenge", Duration::from_secs(10))? {
            Msg::Challenge { nonce } => access::unhex(&nonce)
                .and_then(|n| n.try_into().ok())
                .ok_or_else(|| anyhow!("the receiver's challenge is not a valid nonce"))?,
            other => bail!("expected Challenge from the receiver, got {}", other.name()),
        };
        self.send(&Msg::Auth {
            mac: access::answer(key.bytes(), test_id, &nonce),
        })?;
        Ok(Some(TestSecret::new(key.clone(), test_id, nonce)))
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
            if let Some(m) = self.take_line()? {
                return Ok(Some(m));
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
        self.expect_or_stop(what, Instant::now() + timeout, &|| false)
    }

    /// Like [`Conn::expect`] with a fixed `deadline`, waiting in slices of at most 50 ms and
    /// giving up as soon as `stop()` says so (a signal): no wait here outlives a stop request
    /// by more than a slice.
    pub(crate) fn expect_or_stop(
        &mut self,
        what: &str,
        deadline: Instant,
        stop: &dyn Fn() -> bool,
    ) -> Result<Msg> {
        let start = Instant::now();
        loop {
            if stop() {
                bail!("interrupted while waiting for {what} from the peer");
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "no {what} from the peer within {:.1} s",
                    (deadline - start).as_secs_f64()
                );
            }
            let slice = deadline.min(now + Duration::from_millis(50));
            match self.recv_until(slice)? {
                Some(Msg::Error { message }) => bail!("peer refused: {message}"),
                Some(m) => return Ok(m),
                None => self.foreign()?,
            }
        }
    }

    /// Fails at once when the peer's first bytes are not a control message (each opens with
    /// `{`): an iperf3 server answers a Hello with a one-byte state (PARAM_EXCHANGE, or
    /// ACCESS_DENIED/SERVER_ERROR), which would otherwise wait out the whole deadline.
    fn foreign(&self) -> Result<()> {
        let Some(&b) = self.buf.first().filter(|&&b| b != b'{') else {
            return Ok(());
        };
        let peer = self
            .stream
            .peer_addr()
            .map_or_else(|_| "the peer".to_string(), |a| a.to_string());
        // iperf3's states PARAM_EXCHANGE (9), ACCESS_DENIED (-1), SERVER_ERROR (-2).
        if matches!(b as i8, 9 | -1 | -2) {
            bail!("{peer} is an iperf3 server: use --to iperf3://{peer}");
        }
        bail!("{peer} does not speak netcore's control protocol (its first byte is 0x{b:02x})")
    }

    /// Takes one message if a complete one is buffered or readable now; never blocks.
    pub(crate) fn try_recv(&mut self) -> Result<Option<Msg>> {
        if let Some(m) = self.take_line()? {
            return Ok(Some(m));
        }
        self.stream.set_nonblocking(true)?;
        let mut chunk = [0u8; 8192];
        let r = self.stream.read(&mut chunk);
        self.stream.set_nonblocking(false)?;
        match r {
            Ok(0) => bail!("control channel closed by the peer"),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e).context("control channel: receive failed"),
        }
        self.take_line()
    }

    /// Whether the peer closed (or reset) the connection, by a non-blocking peek: for waits
    /// that read nothing from it (a test's data connections, the opener of `-R`), so that a
    /// client that went away frees what it held at once.
    pub(crate) fn peer_closed(&self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let r = self.stream.peek(&mut b);
        let _ = self.stream.set_nonblocking(false);
        match r {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
        }
    }

    /// A complete buffered line, decoded; an error when the buffer is over the bound.
    fn take_line(&mut self) -> Result<Option<Msg>> {
        if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let msg = decode(&self.buf[..pos]);
            self.buf.drain(..=pos);
            return msg.map(Some);
        }
        if self.buf.len() > MAX_MESSAGE {
            return Err(Malformed(format!("control message over {MAX_MESSAGE} bytes")).into());
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_closed_peer_is_seen_without_reading() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let mut c = Conn::new(server).unwrap();
        assert!(!c.peer_closed());
        (&client)
            .write_all(b"{\"type\":\"auth\",\"mac\":\"00\"}\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!c.peer_closed(), "data waiting is not a close");
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!c.peer_closed(), "data still waiting before the end");
        assert!(matches!(c.try_recv(), Ok(Some(Msg::Auth { .. }))));
        assert!(c.peer_closed());
    }

    #[test]
    fn a_reverse_pacing_that_is_not_a_rate_is_malformed() {
        let setup =
            |bps: &str| format!(r#"{{"type":"setup","tcp":null,"reverse":{{"rate_bps":{bps}}}}}"#);
        for bps in ["0", "-5", "-0.0", "0.0", "0.5", "1e-300", "1e17", "1e308"] {
            let e = decode(setup(bps).as_bytes()).unwrap_err();
            assert!(e.downcast_ref::<Malformed>().is_some(), "{bps}: {e:#}");
            assert!(format!("{e:#}").contains("not a rate"), "{bps}: {e:#}");
        }
        for bps in ["1", "1000", "1e9", "1e16", "null"] {
            assert!(decode(setup(bps).as_bytes()).is_ok(), "{bps}");
        }
        // The field of the first wave-3 builds (datagrams a second) is not read as a rate.
        let old = r#"{"type":"setup","tcp":null,"reverse":{"pps":1000}}"#;
        assert!(decode(old.as_bytes()).is_err());
    }

    #[test]
    fn a_setup_interval_out_of_range_is_malformed() {
        let setup = |ns: &str| format!(r#"{{"type":"setup","tcp":null,"interval_ns":{ns}}}"#);
        for ns in ["0", "99999999", "60000000001", "18446744073709551615"] {
            let e = decode(setup(ns).as_bytes()).unwrap_err();
            assert!(e.downcast_ref::<Malformed>().is_some(), "{ns}: {e:#}");
            assert!(format!("{e:#}").contains("out of range"), "{ns}: {e:#}");
        }
        for (ns, want) in [
            ("100000000", Some(100_000_000)),
            ("60000000000", Some(60_000_000_000)),
            ("null", None),
        ] {
            match decode(setup(ns).as_bytes()) {
                Ok(Msg::Setup { interval_ns, .. }) => assert_eq!(interval_ns, want, "{ns}"),
                other => panic!("{ns}: {other:?}"),
            }
        }
        // Absent: not written, so a receiver that predates the field reads the Setup.
        let plain = Msg::Setup {
            tcp: None,
            reverse: None,
            echo: None,
            interval_ns: None,
        };
        assert!(!String::from_utf8(encode(&plain))
            .unwrap()
            .contains("interval"));
    }

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
            auth: false,
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
            port: None,
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
                gro: true,
                port: None
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
