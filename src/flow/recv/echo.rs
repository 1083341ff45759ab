//! The receiver's probe echo (`netcore rpm`'s latency probes): admitted through the control
//! channel like any test (Hello, `Setup{echo}`), it binds a UDP socket and a TCP listener of
//! its own on one port, names the port in `Ready`, and sends back every probe of the test that
//! comes from the control connection's host, stamped with its kernel receive time and its send
//! time ([`crate::flow::probe`]); the listener takes the client's handshake probes (fresh TCP
//! connections, so they never reach the receiver's control port), each of which may send one
//! 8-byte request, answered with the same bytes (a request/response on a fresh connection). Nothing else is answered: not another host, not another test id,
//! not more than the admitted rate (twice the asked rate plus a margin: a token bucket). The
//! test ends with the client's `EchoDone` (answered with an `EchoReport`: the probes that
//! reached the echo, so the client can tell loss on the way there from loss on the way back),
//! when the client closes the control connection, at the plan's end (plus a margin), or when
//! the receiver stops.
//!
//! ```text
//! client (rpm)                            receiver
//!   Hello, Setup{echo}   --------------->
//!                        <---------------  Ready{port}
//!   probe  ----(UDP)-------------------->  port
//!          <---(UDP)---------------------  the same bytes, stamped
//!   EchoDone             --------------->
//!                        <---------------  EchoReport{received, echoed, refused, connects}
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::flow::control::{Conn, Msg, Plan};
use crate::flow::probe::{stamp_echo, Probe, MAX_LEN, REQUEST_LEN};
use crate::sys::poll::{self, poll_fd, POLLIN};
use crate::sys::realtime_ns;
use crate::sys::sockopt::bind_udp_and_tcp;
use crate::sys::tstamp::{enable_rx_timestamps, recv_stamped};

/// The highest probe rate a receiver admits (probes per second).
pub(crate) const MAX_RATE: f64 = 10_000.0;
/// How long past its plan an echo test may run.
const MARGIN: Duration = Duration::from_secs(30);

/// An echo test as its Hello and Setup asked for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoJob {
    pub test_id: u64,
    pub plan: Plan,
    /// Probes per second the client sends.
    pub rate: f64,
}

impl EchoJob {
    /// Checks what a peer asked for.
    pub fn check(&self) -> Result<(), String> {
        if !(self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(format!(
                "echo rate {} out of range (0, {MAX_RATE}] probes/s",
                self.rate
            ));
        }
        if !matches!(self.plan, Plan::TimeNs(_)) {
            return Err("an echo test is planned by time".into());
        }
        Ok(())
    }
}

/// What an echo test did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoCounts {
    /// Probes of the test from the client's host.
    pub received: u64,
    pub echoed: u64,
    /// Datagrams not echoed: another host, not a probe of this test, over the rate.
    pub refused: u64,
    /// Echoes stamped with the kernel's receive time.
    pub kernel_stamped: u64,
    /// Handshake probes accepted.
    pub connects: u64,
}

/// A token bucket of echoes: `rate` per second, a burst of a tenth of a second (at least 16).
struct Bucket {
    rate: f64,
    tokens: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Bucket {
        let burst = (rate / 10.0).max(16.0);
        Bucket {
            rate,
            tokens: burst,
            burst,
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves an echo test on an admitted control connection (after its Setup): binds a UDP
/// socket on `local`, sends `Ready{port}`, echoes probes from host `peer` until the end.
pub fn serve(
    c: &mut Conn,
    job: EchoJob,
    local: IpAddr,
    peer: IpAddr,
    stop: &dyn Fn() -> bool,
) -> Result<EchoCounts> {
    if let Err(why) = job.check() {
        let _ = c.send(&Msg::Error {
            message: why.clone(),
        });
        anyhow::bail!(why);
    }
    let (sock, listener) = bind_udp_and_tcp(SocketAddr::new(local, 0), false)
        .context("binding the echo's UDP socket and TCP listener")?;
    sock.set_nonblocking(true)?;
    listener.set_nonblocking(true)?;
    let kernel = enable_rx_timestamps(&sock).is_ok();
    c.send(&Msg::Ready {
        rcvbuf: 0,
        gro: false,
        port: Some(sock.local_addr()?.port()),
    })?;
    let Plan::TimeNs(ns) = job.plan else {
        unreachable!("checked above")
    };
    let end = Instant::now() + Duration::from_nanos(ns) + MARGIN;
    let mut bucket = Bucket::new(job.rate * 2.0 + 100.0, Instant::now());
    let mut counts = EchoCounts::default();
    let mut requests = Requests::default();
    let mut buf = [0u8; MAX_LEN + 1];
    while Instant::now() < end && !stop() {
        let mut fds = vec![
            poll_fd(sock.as_raw_fd(), POLLIN),
            poll_fd(c.stream().as_raw_fd(), POLLIN),
            poll_fd(listener.as_raw_fd(), POLLIN),
        ];
        fds.extend(
            requests
                .open
                .iter()
                .map(|r| poll_fd(r.0.as_raw_fd(), POLLIN)),
        );
        poll::wait(&mut fds, Duration::from_millis(50))?;
        if fds[1].revents != 0 && control_ends(c, &counts)? {
            break;
        }
        if fds[2].revents != 0 {
            requests.accept(&listener, peer, &mut counts);
        }
        requests.serve(Instant::now());
        if fds[0].revents != 0 {
            echo_batch(
                &sock,
                &job,
                peer,
                kernel,
                &mut bucket,
                &mut counts,
                &mut buf,
            );
        }
    }
    Ok(counts)
}

/// Handshake probes' connections open at once, and how long one may stay.
const MAX_OPEN: usize = 32;
const OPEN_FOR: Duration = Duration::from_secs(5);

/// The handshake probes' connections: each may send one request of [`REQUEST_LEN`] bytes,
/// answered with the same bytes, and is closed then (or at its end, or after [`OPEN_FOR`]).
#[derive(Default)]
struct Requests {
    open: Vec<(TcpStream, Instant, Vec<u8>)>,
}

impl Requests {
    /// Accepts what is waiting (at most 64 a turn): the client's host kept (up to
    /// [`MAX_OPEN`]), another host's closed at once.
    fn accept(&mut self, l: &TcpListener, peer: IpAddr, counts: &mut EchoCounts) {
        for _ in 0..64 {
            let Ok((s, from)) = l.accept() else {
                return;
            };
            if !same_host(from.ip(), peer) {
                counts.refused += 1;
                continue;
            }
            counts.connects += 1;
            if self.open.len() < MAX_OPEN && s.set_nonblocking(true).is_ok() {
                let _ = s.set_nodelay(true);
                self.open.push((s, Instant::now(), Vec::new()));
            }
        }
    }

    /// Reads each connection's request; a whole one is answered and its connection closed, as
    /// is one that ended, failed or stayed too long.
    fn serve(&mut self, now: Instant) {
        self.open.retain_mut(|(s, since, got)| {
            let mut b = [0u8; REQUEST_LEN];
            let want = REQUEST_LEN - got.len();
            match s.read(&mut b[..want]) {
                Ok(0) => return false,
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
            if got.len() == REQUEST_LEN {
                let _ = s.write_all(got);
                return false;
            }
            now.duration_since(*since) < OPEN_FOR
        });
    }
}

/// The control connection is readable: an `EchoDone` is answered with the counts (the end),
/// a closed connection ends the test, a part of a line waits for the rest; anything else is
/// refused.
fn control_ends(c: &mut Conn, counts: &EchoCounts) -> Result<bool> {
    match c.recv_until(Instant::now() + Duration::from_millis(1)) {
        Ok(None) => Ok(false),
        Ok(Some(Msg::EchoDone {})) => {
            c.send(&Msg::EchoReport {
                received: counts.received,
                echoed: counts.echoed,
                refused: counts.refused,
                connects: counts.connects,
            })?;
            Ok(true)
        }
        Ok(Some(other)) => {
            let why = format!("expected EchoDone, got {}", other.name());
            let _ = c.send(&Msg::Error {
                message: why.clone(),
            });
            anyhow::bail!(why)
        }
        // The client closed: the test is over.
        Err(_) => Ok(true),
    }
}

/// Echoes what is queued on `sock` (at most 64 datagrams per call).
fn echo_batch(
    sock: &UdpSocket,
    job: &EchoJob,
    peer: IpAddr,
    kernel: bool,
    bucket: &mut Bucket,
    counts: &mut EchoCounts,
    buf: &mut [u8],
) {
    for _ in 0..64 {
        let Ok(got) = recv_stamped(sock, buf) else {
            return;
        };
        let rx_ns = got.kernel_ns.unwrap_or_else(realtime_ns);
        let from = match got.from {
            Some(f) if same_host(f.ip(), peer) => f,
            _ => {
                counts.refused += 1;
                continue;
            }
        };
        let b = &mut buf[..got.len];
        if Probe::decode(b, job.test_id).is_err() {
            counts.refused += 1;
            continue;
        }
        counts.received += 1;
        if !bucket.take(Instant::now()) || stamp_echo(b, job.test_id, rx_ns, realtime_ns()).is_err()
        {
            counts.refused += 1;
            continue;
        }
        if sock.send_to(b, from).is_ok() {
            counts.echoed += 1;
            counts.kernel_stamped += (kernel && got.kernel_ns.is_some()) as u64;
        }
    }
}

/// The same host, whether it shows as IPv4 or as IPv4-mapped IPv6.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_admits_its_rate_and_a_burst() {
        let t = Instant::now();
        let mut b = Bucket::new(100.0, t);
        let burst = (0..1000).filter(|_| b.take(t)).count();
        assert_eq!(burst, 16);
        let later = t + Duration::from_secs(1);
        let more = (0..1000).filter(|_| b.take(later)).count();
        assert_eq!(more, 16, "refilled up to the burst, not beyond");
    }

    #[test]
    fn jobs_are_checked() {
        let ok = EchoJob {
            test_id: 1,
            plan: Plan::TimeNs(1),
            rate: 100.0,
        };
        assert!(ok.check().is_ok());
        assert!(EchoJob { rate: 0.0, ..ok }.check().is_err());
        assert!(EchoJob {
            rate: f64::NAN,
            ..ok
        }
        .check()
        .is_err());
        assert!(EchoJob { rate: 1e9, ..ok }.check().is_err());
        assert!(EchoJob {
            plan: Plan::Count(5),
            ..ok
        }
        .check()
        .is_err());
        assert!(same_host(
            "127.0.0.1".parse().unwrap(),
            "::ffff:127.0.0.1".parse().unwrap()
        ));
        assert!(!same_host(
            "127.0.0.1".parse().unwrap(),
            "127.0.0.2".parse().unwrap()
        ));
    }
}
