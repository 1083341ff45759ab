//! `netcore relay`: a seeded user-space impairment relay for UDP, and the ground truth that makes
//! it an oracle for the receiver.
//!
//! ```text
//! blast --to RELAY                         relay --listen RELAY --to RECV          recv --listen RECV
//!   UDP datagrams ----------------------->  loss/delay/reorder/dup/rate  -------->  tracker
//!   TCP control (Hello, Done, Report) <--->  proxy (bounded, unimpaired)  <------->  control
//! ```
//! UDP is forwarded one way (datagrams from anyone to `--to`; nothing comes back). TCP
//! connections to the relay's port are proxied both ways to the same port of `--to`
//! ([`proxy`]), so the sender's control channel, and TCP tools such as `iperf3 -c`, go through
//! the relay unchanged (`blast --control RECV` still reaches the receiver directly).
//!
//! # Layers
//! - [`impair`]: the pure core. [`impair::Impairer`] decides each datagram's fate from a seeded
//!   generator (drop / forward / duplicate / hold back `k` places / delay until `t`) and
//!   [`impair::Pipeline`] carries the decisions out with a timer queue, a hold-back list and a
//!   rate-limited link queue. No sockets, no clock.
//! - [`truth`]: the ground truth, computed from the exact order the relay forwarded datagrams,
//!   independently of the receiver's tracker.
//! - [`proxy`]: the TCP proxy (bounded buffers with backpressure, half-close, a bounded number
//!   of connections), driven on this module's poll beside the UDP socket.
//! - [`report`]: the report (table, JSON schema `netcore.relay.v2`, CSV).
//! - This module: the thin socket driver. It reads batches with `recvmmsg`, offers each datagram
//!   to the pipeline, sends what is due with `sendmmsg` on a socket connected to `--to`, and
//!   sleeps in `epoll` until the next datagram, a TCP event, the pipeline's next deadline or a
//!   signal. A stop condition (`--count`, `--idle`) ends the UDP input and the accepting of
//!   connections; the relay exits once the pipeline is empty and the open connections have
//!   closed (`--duration` and signals close them too).
//!
//! Timers have the resolution of `epoll_wait` (1 ms): a delayed datagram leaves at its time or up
//! to a millisecond later. Keep `--delay` + `--jitter` well below the receiver's `--drain`
//! (250 ms by default), or the receiver finishes before the last datagrams leave the relay.

pub mod impair;
pub mod proxy;
pub mod report;
pub mod truth;

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use self::impair::{Offer, Pipeline, Settings};
use self::proxy::Proxy;
use self::report::{RelayReport, SettingsReport, SCHEMA};
use self::truth::{GroundTruth, Tag};
use crate::flow::udp::wire::Header;
use crate::metrics::relay::{RelayMetrics, RelayTotals};
use crate::sys::mmsg::{RecvBatch, SendBatch};
use crate::sys::{signal, sockopt};

/// Messages per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 64;
/// Buffer per message: the largest UDP datagram fits.
const SLOT: usize = 1 << 16;
/// Receive batches per loop turn before the pipeline gets its turn.
const RECV_BUDGET: usize = 16;
/// Longest sleep between checks of the stop conditions.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How often `--metrics` counters are brought up to date while the relay runs.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Buffers kept for reuse.
const POOL_LIMIT: usize = 4096;

/// When the relay stops taking datagrams (it then forwards what it holds and exits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopWhen {
    /// After this many datagrams came in.
    pub count: Option<u64>,
    /// After this long.
    pub duration: Option<Duration>,
    /// This long after the last datagram, once traffic has started (`--once`).
    pub idle: Option<Duration>,
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub listen: SocketAddr,
    pub to: SocketAddr,
    pub settings: Settings,
    pub stop: StopWhen,
    /// Receive buffer to ask for (bytes).
    pub rcvbuf: usize,
    /// Counters to publish for `--metrics` (a few times a second, and at the end).
    pub metrics: Option<RelayMetrics>,
    /// TCP connections proxied to `--to` at once (0: TCP is not proxied).
    pub max_connections: usize,
}

/// What the relay tells its caller while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first datagram or TCP connection came in.
    Traffic,
}

/// A datagram inside the relay: its bytes (a pooled buffer) and its netcore identity.
struct Packet {
    buf: Vec<u8>,
    tag: Tag,
}

/// A bound relay.
pub struct Relay {
    inbound: UdpSocket,
    /// The TCP listener on the same port, for the proxy.
    listener: Option<TcpListener>,
    outbound: UdpSocket,
    opts: RelayOptions,
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ENOBUFS) => "ENOBUFS".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(libc::EMSGSIZE) => "EMSGSIZE".into(),
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH".into(),
        Some(libc::ENETUNREACH) => "ENETUNREACH".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

/// Refuses `--to` that is the relay's own `--listen`: every datagram would come back to it
/// (and with `--duplicate`, multiply).
fn refuse_loop(listen: SocketAddr, to: SocketAddr) -> Result<()> {
    let same_host = listen.ip() == to.ip()
        || listen.ip().is_unspecified()
        || to.ip().is_unspecified()
        || (listen.ip().is_loopback() && to.ip().is_loopback());
    if listen.port() != 0 && listen.port() == to.port() && same_host {
        anyhow::bail!(
            "--to {to} is the relay's own --listen {listen}: datagrams would loop back into it"
        );
    }
    Ok(())
}

/// Binds the UDP socket and, with `tcp`, a TCP listener on the same port (port 0: one free for
/// both).
fn bind_both(listen: SocketAddr, tcp: bool) -> io::Result<(UdpSocket, Option<TcpListener>)> {
    if !tcp {
        return Ok((UdpSocket::bind(listen)?, None));
    }
    let tries = if listen.port() == 0 { 32 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = UdpSocket::bind(listen)?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(t) => return Ok((udp, Some(t))),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

impl Relay {
    /// Binds `--listen` (UDP, and TCP for the proxy) and connects an outgoing socket to `--to`.
    pub fn bind(opts: RelayOptions) -> Result<Relay> {
        opts.settings
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        refuse_loop(opts.listen, opts.to)?;
        let (inbound, listener) = bind_both(opts.listen, opts.max_connections > 0).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                anyhow::anyhow!(
                    "cannot listen on {} (UDP and TCP): address already in use (--max-connections 0 relays UDP only)",
                    opts.listen
                )
            } else {
                anyhow::anyhow!("cannot listen on {}: {e}", opts.listen)
            }
        })?;
        refuse_loop(inbound.local_addr()?, opts.to)?;
        sockopt::size_buffer(&inbound, opts.rcvbuf, true).context("setting the receive buffer")?;
        let any: SocketAddr = if opts.to.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let outbound = UdpSocket::bind(any).context("binding the outgoing socket")?;
        outbound
            .connect(opts.to)
            .with_context(|| format!("cannot send to {}", opts.to))?;
        sockopt::size_buffer(&outbound, 4 << 20, false).context("setting the send buffer")?;
        Ok(Relay {
            inbound,
            listener,
            outbound,
            opts,
        })
    }

    /// The address datagrams are received on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inbound.local_addr().expect("bound socket")
    }

    /// Relays until a stop condition or SIGINT/SIGTERM, then returns the report. On a signal,
    /// whatever the pipeline holds is sent at once (delays and the rate limit no longer apply).
    pub fn run(self, on_event: &mut dyn FnMut(Event)) -> Result<RelayReport> {
        signal::install()?;
        let listen = self.local_addr();
        let Relay {
            inbound,
            listener,
            outbound,
            mut opts,
        } = self;
        let mut metrics = opts.metrics.take();
        let mut published = Instant::now();
        inbound.set_nonblocking(true)?;
        let mut inbound = mio::net::UdpSocket::from_std(inbound);
        let mut poll = Poll::new()?;
        const SOCK: Token = Token(0);
        const SIG: Token = Token(1);
        poll.registry()
            .register(&mut inbound, SOCK, Interest::READABLE)?;
        let sig_fd = signal::termination_fd()?.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&sig_fd), SIG, Interest::READABLE)?;
        let mut events = Events::with_capacity(256);
        const LISTEN: Token = Token(2);
        let mut proxy = match listener {
            Some(l) => Some(
                Proxy::new(poll.registry(), l, LISTEN, opts.to, opts.max_connections)
                    .context("starting the TCP proxy")?,
            ),
            None => None,
        };
        let tcp_open = |p: &Option<Proxy>| p.as_ref().map_or(0, Proxy::open);

        let mut d = Driver {
            pipeline: Pipeline::new(opts.settings.clone()),
            truth: GroundTruth::new(),
            rb: RecvBatch::new(BATCH, SLOT),
            sb: SendBatch::new(BATCH, SLOT),
            staged: Vec::with_capacity(BATCH),
            pool: Vec::new(),
            start: Instant::now(),
            datagrams_in: 0,
            bytes_in: 0,
            truncated_in: 0,
            forwarded: 0,
            bytes_out: 0,
            send_errors: BTreeMap::new(),
        };
        let mut input_open = true;
        let mut last_in: Option<Instant> = None;
        let mut interrupted = false;
        loop {
            if signal::stop_requested() {
                interrupted = true;
                break;
            }
            if input_open {
                let (closed, got) = d.receive(&inbound, opts.stop.count)?;
                if got {
                    if last_in.is_none() {
                        on_event(Event::Traffic);
                    }
                    last_in = Some(Instant::now());
                }
                let over_time = opts.stop.duration.is_some_and(|t| d.start.elapsed() >= t);
                // Quiet: no datagram, no TCP byte and no TCP connection open for --idle.
                let idle = match (opts.stop.idle, last_in) {
                    (Some(i), Some(l)) => l.elapsed() >= i && tcp_open(&proxy) == 0,
                    _ => false,
                };
                if closed || over_time || idle {
                    input_open = false;
                    d.pipeline.close();
                    if let Some(p) = proxy.as_mut() {
                        // Open connections go on (a test's control channel still carries its
                        // results) unless the time is up.
                        if over_time {
                            p.close_all(poll.registry());
                        } else {
                            p.stop_accepting(poll.registry());
                        }
                    }
                }
            }
            d.send_due(&outbound, d.now())?;
            if let Some(m) = metrics.as_mut() {
                if published.elapsed() >= PUBLISH_EVERY {
                    m.publish(d.totals(proxy.as_ref()));
                    published = Instant::now();
                }
            }
            if !input_open && d.pipeline.is_empty() && tcp_open(&proxy) == 0 {
                break;
            }
            // Sleep until a datagram, the pipeline's next deadline or a stop condition.
            let now = d.now();
            let mut wait = MAX_WAIT;
            if let Some(t) = d.pipeline.next_deadline() {
                wait = wait.min(Duration::from_nanos(t.saturating_sub(now)));
            }
            if input_open {
                if let Some(t) = opts.stop.duration {
                    wait = wait.min(t.saturating_sub(d.start.elapsed()));
                }
                if let (Some(i), Some(l)) = (opts.stop.idle, last_in) {
                    if tcp_open(&proxy) == 0 {
                        wait = wait.min(i.saturating_sub(l.elapsed()));
                    }
                }
            }
            let hot = proxy.as_ref().is_some_and(Proxy::has_hot);
            if hot {
                wait = Duration::ZERO;
            } else if wait.is_zero() {
                continue;
            }
            match poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("epoll_wait"),
            }
            if let Some(p) = proxy.as_mut().filter(|_| hot) {
                if p.run_hot(poll.registry()) > 0 && input_open {
                    last_in = Some(Instant::now());
                }
            }
            for e in events.iter() {
                match e.token() {
                    SIG => signal::drain(signal::termination_fd()?),
                    SOCK => {}
                    t => {
                        let Some(p) = proxy.as_mut() else { continue };
                        if let Some(moved) = p.on_event(poll.registry(), t) {
                            if input_open && (moved > 0 || t == LISTEN) {
                                if last_in.is_none() {
                                    on_event(Event::Traffic);
                                }
                                last_in = Some(Instant::now());
                            }
                        }
                    }
                }
            }
        }
        if interrupted {
            d.pipeline.close();
            d.send_due(&outbound, u64::MAX)?;
        }
        if let Some(p) = proxy.as_mut() {
            p.close_all(poll.registry());
        }
        debug_assert!(d.pipeline.is_empty(), "the relay leaves nothing behind");
        if let Some(m) = metrics.as_mut() {
            m.publish(d.totals(proxy.as_ref()));
        }
        Ok(RelayReport {
            schema: SCHEMA.into(),
            listen: listen.to_string(),
            to: opts.to.to_string(),
            settings: SettingsReport::new(d.pipeline.settings()),
            datagrams_in: d.datagrams_in,
            bytes_in: d.bytes_in,
            truncated_in: d.truncated_in,
            other_in: d.truth.other_in,
            impairments: d.pipeline.counters(),
            forwarded: d.forwarded,
            bytes_out: d.bytes_out,
            send_errors: d.send_errors,
            elapsed_s: d.start.elapsed().as_secs_f64(),
            interrupted,
            tests: d.truth.tests(),
            tcp: proxy.as_ref().map(Proxy::counters),
        })
    }
}

/// The relay's moving parts between the sockets.
struct Driver {
    pipeline: Pipeline<Packet>,
    truth: GroundTruth,
    rb: RecvBatch,
    sb: SendBatch,
    /// Tags and lengths of the messages staged in `sb`, by slot.
    staged: Vec<(Tag, usize)>,
    pool: Vec<Vec<u8>>,
    start: Instant,
    datagrams_in: u64,
    bytes_in: u64,
    truncated_in: u64,
    forwarded: u64,
    bytes_out: u64,
    send_errors: BTreeMap<String, u64>,
}

impl Driver {
    /// The running totals `--metrics` publishes.
    fn totals(&self, proxy: Option<&Proxy>) -> RelayTotals {
        let c = self.pipeline.counters();
        let t = proxy.map(Proxy::counters).unwrap_or_default();
        RelayTotals {
            tcp_connections: t.connections,
            tcp_refused: t.refused,
            tcp_connect_failed: t.connect_failed,
            tcp_errors: t.errors.values().sum(),
            tcp_bytes_to_server: t.bytes_to_server,
            tcp_bytes_to_client: t.bytes_to_client,
            datagrams_in: self.datagrams_in,
            bytes_in: self.bytes_in,
            forwarded: self.forwarded,
            bytes_out: self.bytes_out,
            dropped: c.dropped,
            overflow: c.overflow,
            duplicated: c.duplicated,
            held_back: c.held_back,
            send_errors: self.send_errors.values().sum(),
        }
    }

    /// Nanoseconds since the relay started (the pipeline's clock).
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        recycle(&mut self.pool, buf);
    }

    /// Reads what is queued (up to a budget) and offers it to the pipeline. Returns whether the
    /// count limit was reached and whether anything came in.
    fn receive(&mut self, sock: &mio::net::UdpSocket, count: Option<u64>) -> Result<(bool, bool)> {
        let mut got = false;
        for _ in 0..RECV_BUDGET {
            let n = match self.rb.recv(sock, false) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error queued on the socket: nothing to forward, go on.
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => continue,
                Err(e) => return Err(e).context("recvmmsg failed"),
            };
            if n == 0 {
                break;
            }
            got = true;
            let now = self.now();
            for i in 0..n {
                let (m, truncated) = self.rb.message(i);
                // A GRO buffer (never asked for here, but honoured) holds several datagrams.
                let seg = self.rb.gro_segment(i).unwrap_or(m.len()).max(1);
                let mut at = 0;
                loop {
                    let d = &m[at..(at + seg).min(m.len())];
                    at += d.len();
                    let mut buf = self.pool.pop().unwrap_or_default();
                    buf.clear();
                    buf.extend_from_slice(d);
                    self.datagrams_in += 1;
                    self.bytes_in += d.len() as u64;
                    if truncated {
                        self.truncated_in += 1;
                    }
                    let tag = Header::decode(d).ok().map(|h| (h.test_id, h.seq));
                    let tag = self.truth.came_in(tag);
                    if let Offer::Dropped(p) =
                        self.pipeline.offer(now, Packet { buf, tag }, d.len())
                    {
                        self.truth.dropped(p.tag);
                        recycle(&mut self.pool, p.buf);
                    }
                    if count.is_some_and(|c| self.datagrams_in >= c) {
                        return Ok((true, got));
                    }
                    if at >= m.len() {
                        break;
                    }
                }
            }
            if n < BATCH {
                break;
            }
        }
        Ok((false, got))
    }

    /// Sends every datagram the pipeline has due at `now`.
    fn send_due(&mut self, sock: &UdpSocket, now: u64) -> Result<()> {
        loop {
            let overflowed: Vec<Packet> = self.pipeline.take_overflowed().collect();
            for p in overflowed {
                self.truth.dropped(p.tag);
                self.recycle(p.buf);
            }
            let Some(e) = self.pipeline.poll(now) else {
                break;
            };
            for _ in 0..e.copies {
                if self.staged.len() == BATCH {
                    self.flush(sock)?;
                }
                let i = self.staged.len();
                let n = e.item.buf.len().min(SLOT);
                self.sb.slot_mut(i)[..n].copy_from_slice(&e.item.buf[..n]);
                self.sb.set_len(i, n);
                self.staged.push((e.item.tag, n));
            }
            self.recycle(e.item.buf);
        }
        let overflowed: Vec<Packet> = self.pipeline.take_overflowed().collect();
        for p in overflowed {
            self.truth.dropped(p.tag);
            self.recycle(p.buf);
        }
        self.flush(sock)
    }

    /// Sends the staged messages; a message the kernel refuses is dropped and counted.
    fn flush(&mut self, sock: &UdpSocket) -> Result<()> {
        let total = self.staged.len();
        let mut from = 0;
        let mut stalled = 0u32;
        while from < total {
            match self.sb.send(sock, from, total) {
                Ok(k) => {
                    for &(tag, len) in &self.staged[from..from + k] {
                        self.truth.sent(tag);
                        self.forwarded += 1;
                        self.bytes_out += len as u64;
                    }
                    from += k;
                    stalled = 0;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN))
                        && stalled < 1000 =>
                {
                    // The device queue is full: wait a little and retry the same message.
                    stalled += 1;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => {
                    *self.send_errors.entry(errno_name(&e)).or_default() += 1;
                    self.truth.dropped(self.staged[from].0);
                    from += 1;
                    stalled = 0;
                }
            }
        }
        self.staged.clear();
        Ok(())
    }
}

fn recycle(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if pool.len() < POOL_LIMIT {
        pool.push(buf);
    }
}
