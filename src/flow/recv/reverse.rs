//! A reverse UDP test (`-R`) on the receiver's side: the receiver sends, the client receives
//! and reports. The path is opened by the client, as iperf3 does, so the test works through
//! NAT: the receiver binds a UDP socket, names its port in `Ready`, waits for the client's
//! opener datagram ([`wire::opener`]) and sends back to wherever it came from, with the
//! sender's own blasting loop and end of test ([`sender::blast_and_finish`]). The test is cut
//! only by the receiver's interrupt flag for it, not by a signal itself: on `recv` a first
//! signal lets it run to its end, a second interrupts it.
//!
//! ```text
//! client                                   receiver (recv / embedded)
//!   Hello, Setup{reverse}  --------------->
//!                          <---------------  Ready{port}
//!   opener datagram  ----(UDP)------------>  port
//!                          <----(UDP)-------  datagrams of every stream
//!   Interval               --------------->
//!                          <---------------  Done{sent, streams}
//!   Report                 --------------->
//! ```

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::session::ReverseJob;
use crate::flow::backend::{self, Backend};
use crate::flow::control::{Conn, Msg};
use crate::flow::udp::report::UdpReport;
use crate::flow::udp::sender::{self, BlastOptions, GsoMode, OnInterval};
use crate::flow::udp::wire;
use crate::units::Rate;

/// How long the receiver waits for the client's opener after Ready.
pub(crate) const OPEN_WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded, slices of 50 ms, `stop` gives up, so does a client that closed its
/// control connection `c`) for test `test_id`'s opener on `sock` from host `peer` (the
/// control connection's: nothing is ever sent to an address the receiver did not admit); the
/// address it came from. Anything else is dropped.
fn await_opener(
    sock: &UdpSocket,
    c: &Conn,
    (test_id, peer): (u64, IpAddr),
    stop: &dyn Fn() -> bool,
) -> Result<SocketAddr> {
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let deadline = Instant::now() + OPEN_WAIT;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if stop() {
            bail!("interrupted while waiting for the client's opener datagram");
        }
        if c.peer_closed() {
            bail!("the client closed its control connection before its opener datagram");
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if wire::is_opener(&buf[..n], test_id) && same_host(from.ip(), peer) {
                return Ok(from);
            }
        }
    }
    bail!(
        "no opener datagram from the client within {} s (is UDP from it to this host blocked?)",
        OPEN_WAIT.as_secs()
    )
}

/// Whether two addresses are one host (an IPv4 address seen as IPv6 is the same host).
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Sends a reverse test on control connection `c` (from host `peer`): binds a UDP socket on
/// `ip`, Ready with its port, the opener (from `peer` only), then every stream from that
/// socket (one blasting thread each, pinned to `cpu`) to the opener's source; the sender's
/// copy of the report. `interrupt`, set when the receiver interrupts the test, gives up the
/// wait for the opener and cuts the sending (the report marked interrupted).
pub fn serve(
    c: &mut Conn,
    job: ReverseJob,
    ip: IpAddr,
    peer: IpAddr,
    cpu: Option<usize>,
    interrupt: &Arc<AtomicBool>,
    on_interval: OnInterval,
) -> Result<UdpReport> {
    let sock = UdpSocket::bind(SocketAddr::new(ip, 0))?;
    c.send(&Msg::Ready {
        rcvbuf: 0,
        gro: false,
        port: Some(sock.local_addr()?.port()),
    })?;
    let peer = match await_opener(&sock, c, (job.test_id, peer), &|| {
        interrupt.load(Ordering::Relaxed)
    }) {
        Ok(p) => p,
        Err(e) => {
            let _ = c.send(&Msg::Error {
                message: format!("{e:#}"),
            });
            return Err(e);
        }
    };
    sock.connect(peer)?;
    let opts = BlastOptions {
        target: peer,
        control: peer,
        len: job.len as usize,
        batch: 64,
        gso: GsoMode::Auto,
        rate: job.rate_bps.map(Rate::BitsPerSec),
        plan: job.plan,
        verify: job.verify,
        cpus: cpu.into_iter().collect(),
        streams: job.streams,
        sndbuf: 4 << 20,
        backend: backend::resolve_send(Backend::Auto)?,
        zerocopy: false,
        client: Default::default(),
        test_id: Some(job.test_id),
        cut_after: Some(job.max_time),
        receiver_interval: None,
        interrupt: Some(interrupt.clone()),
    };
    sender::check_len(opts.len)?;
    let mut socks = Vec::with_capacity(job.streams as usize);
    for _ in 0..job.streams.max(1) {
        socks.push(sock.try_clone()?);
    }
    sender::blast_and_finish(c, &opts, job.test_id, socks, on_interval)
}
