//! `netcore relay`: a seeded user-space impairment relay for UDP, and the ground truth that makes
//! it an oracle for the receiver.
//!
//! ```text
//! blast/iperf3 -c --> RELAY                 relay --listen RELAY --to RECV          recv --listen RECV
//!   UDP datagrams ----------------------->  loss/delay/reorder/dup/rate  -------->  tracker
//!   UDP answers   <-----------------------  (unimpaired, per source)     <--------
//!   TCP control (Hello, Done, Report) <--->  proxy (bounded, unimpaired)  <------->  control
//! ```
//! UDP is impaired one way: datagrams from anyone go to `--to` through the impairments. Each
//! source address has a socket of its own towards `--to` ([`flows`], at most
//! [`sources::MAX_FLOWS`]), so what the receiver sends back to that socket (iperf3's UDP stream
//! handshake answer, for one) is returned to the source from the relay's port, unimpaired and
//! counted. TCP connections to the relay's port are proxied both ways to the same port of
//! `--to` ([`proxy`]), so the sender's control channel, and `iperf3 -c` (TCP and UDP), go
//! through the relay unchanged (`blast --control RECV` still reaches the receiver directly).
//!
//! # Layers
//! - [`impair`]: the pure core. [`impair::Impairer`] decides each datagram's fate from a seeded
//!   generator (drop / forward / duplicate / hold back `k` places / delay until `t`) and
//!   [`impair::Pipeline`] carries the decisions out with a timer queue, a hold-back list and a
//!   rate-limited link queue. No sockets, no clock.
//! - [`truth`]: the ground truth, computed from the exact order the relay forwarded datagrams,
//!   independently of the receiver's tracker: per netcore test (netcore's header) and per
//!   iperf3 UDP stream (a source that sent iperf3's stream hello; iperf3's header).
//! - [`flows`]: the bounded table of sources and their sockets towards `--to`.
//! - [`proxy`]: the TCP proxy (bounded buffers with backpressure, half-close, a bounded number
//!   of connections), driven on this module's poll beside the UDP sockets.
//! - [`report`]: the report (table, JSON schema `netcore.relay.v3`, CSV).
//! - This module: the thin socket driver. It reads batches with `recvmmsg` (with their source
//!   addresses), offers each datagram to the pipeline, sends what is due with `sendmmsg` on its
//!   source's socket (one call for a run of datagrams of one source), returns what comes back
//!   on those sockets from the listening socket, and sleeps in `epoll` until the next datagram,
//!   an answer, a TCP event, the pipeline's next deadline or a signal. A stop condition
//!   (`--count`, `--idle`) ends the UDP input and the accepting of connections; the relay exits
//!   once the pipeline is empty and the open connections have closed (`--duration` and signals
//!   close them too).
//!
//! Timers have the resolution of `epoll_wait` (1 ms): a delayed datagram leaves at its time or up
//! to a millisecond later. Keep `--delay` + `--jitter` well below the receiver's `--drain`
//! (250 ms by default), or the receiver finishes before the last datagrams leave the relay.

pub mod impair;
pub mod proxy;
pub mod report;
pub mod sources;
pub mod truth;

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use self::impair::{Offer, Pipeline, Settings};
use self::proxy::Proxy;
use self::report::{RelayReport, ReturnReport, SettingsReport, SCHEMA};
use self::sources::{Flows, Proto};
use self::truth::{GroundTruth, Key, Tag};
use crate::flow::udp::wire::Header;
use crate::interop::iperf3::udp_header as iperf3;
use crate::metrics::relay::{RelayMetrics, RelayTotals};
use crate::sys::mmsg::{RecvBatch, SendBatch};
use crate::sys::{signal, sockopt};

/// Messages per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 64;
/// Messages per `recvmmsg`/`sendmmsg` on the return path (answers are few).
const RETURN_BATCH: usize = 16;
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
pub(crate) struct StopWhen {
    /// After this many datagrams came in.
    pub count: Option<u64>,
    /// After this long.
    pub duration: Option<Duration>,
    /// This long after the last datagram, once traffic has started (`--once`).
    pub idle: Option<Duration>,
}

/// Relay settings.
#[derive(Debug, Clone)]
pub(crate) struct RelayOptions {
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
    /// A proxied connection that moved no byte either way for this long is reset
    /// (`--tcp-idle`; one that moved none at all, after [`proxy::FIRST_BYTE`] at most).
    pub tcp_idle: Duration,
}

/// What the relay tells its caller while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first datagram or TCP connection came in.
    Traffic,
}

/// A datagram inside the relay: its bytes (a pooled buffer), its identity for the truth and the
/// socket of its source's flow, which it leaves through.
struct Packet {
    buf: Vec<u8>,
    tag: Tag,
    via: Rc<UdpSocket>,
}

/// A bound relay.
pub(crate) struct Relay {
    inbound: UdpSocket,
    /// The TCP listener on the same port, for the proxy.
    listener: Option<TcpListener>,
    /// A socket connected to `--to` (checked at bind), for the first source.
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
        Some(libc::EMFILE) => "EMFILE".into(),
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
    let (udp, tcp) = sockopt::bind_udp_and_tcp(listen, false)?;
    Ok((udp, Some(tcp)))
}

impl Relay {
    /// Binds `--listen` (UDP, and TCP for the proxy) and connects an outgoing socket to `--to`.
    pub fn bind(opts: RelayOptions) -> Result<Relay> {
        opts.settings
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        refuse_loop(opts.listen, opts.to)?;
        // A socket per source and two per proxied connection.
        let _ =
            crate::sys::raise_nofile((sources::MAX_FLOWS + 2 * opts.max_connections + 64) as u64);
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
        let outbound =
            sources::connect(opts.to).with_context(|| format!("cannot send to {}", opts.to))?;
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
        let mut r = Running::start(self, on_event)?;
        let interrupted = r.relay_until_done()?;
        Ok(r.finish(listen, interrupted))
    }
}

/// The listening UDP socket's token on the relay's poll.
const SOCK: Token = Token(0);
/// The termination signal's self-pipe.
const SIG: Token = Token(1);
/// The proxy's TCP listener.
const LISTEN: Token = Token(2);

/// A running relay: its poll, sockets and proxy, the moving parts between them, and what
/// decides when the input ends.
struct Running<'a> {
    d: Driver,
    poll: Poll,
    events: Events,
    inbound: mio::net::UdpSocket,
    proxy: Option<Proxy>,
    opts: RelayOptions,
    metrics: Option<RelayMetrics>,
    published: Instant,
    /// Datagrams and connections are still taken.
    input_open: bool,
    /// When the last datagram or TCP byte came in.
    last_in: Option<Instant>,
    on_event: &'a mut dyn FnMut(Event),
}

impl<'a> Running<'a> {
    /// Registers the sockets and the signal on a poll, starts the proxy.
    fn start(relay: Relay, on_event: &'a mut dyn FnMut(Event)) -> Result<Running<'a>> {
        let Relay {
            inbound,
            listener,
            outbound,
            mut opts,
        } = relay;
        let metrics = opts.metrics.take();
        inbound.set_nonblocking(true)?;
        let mut inbound = mio::net::UdpSocket::from_std(inbound);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut inbound, SOCK, Interest::READABLE)?;
        let sig_fd = signal::termination_fd()?.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&sig_fd), SIG, Interest::READABLE)?;
        let proxy = match listener {
            Some(l) => Some(
                Proxy::new(
                    poll.registry(),
                    l,
                    LISTEN,
                    opts.to,
                    opts.max_connections,
                    opts.tcp_idle,
                )
                .context("starting the TCP proxy")?,
            ),
            None => None,
        };
        Ok(Running {
            d: Driver::new(&opts, outbound),
            poll,
            events: Events::with_capacity(256),
            inbound,
            proxy,
            opts,
            metrics,
            published: Instant::now(),
            input_open: true,
            last_in: None,
            on_event,
        })
    }

    /// Proxied TCP connections open now.
    fn tcp_open(&self) -> usize {
        self.proxy.as_ref().map_or(0, Proxy::open)
    }

    /// The loop: input, the pipeline's due datagrams, the return path, then a sleep until the
    /// next thing to do. Returns whether a signal ended it.
    fn relay_until_done(&mut self) -> Result<bool> {
        loop {
            if signal::stop_requested() {
                return Ok(true);
            }
            if self.input_open {
                self.take_input()?;
            }
            self.d.send_due(self.d.now());
            for i in std::mem::take(&mut self.d.back.hot) {
                self.d.answer(i, &self.inbound);
            }
            self.publish_now_and_then();
            if !self.input_open && self.d.pipeline.is_empty() && self.tcp_open() == 0 {
                return Ok(false);
            }
            let hot = self.proxy.as_ref().is_some_and(Proxy::has_hot);
            let wait = if hot || !self.d.back.hot.is_empty() {
                Duration::ZERO
            } else {
                match self.next_wait() {
                    w if w.is_zero() => continue,
                    w => w,
                }
            };
            self.wait_and_dispatch(wait, hot)?;
        }
    }

    /// Receives what is queued and closes the input once a stop condition holds.
    fn take_input(&mut self) -> Result<()> {
        let (closed, got) =
            self.d
                .receive(self.poll.registry(), &self.inbound, self.opts.stop.count)?;
        if got {
            saw_traffic(&mut self.last_in, &mut *self.on_event);
        }
        let stop = self.opts.stop;
        let over_time = stop.duration.is_some_and(|t| self.d.start.elapsed() >= t);
        // Quiet: no datagram, no TCP byte and no TCP connection open for --idle.
        let idle = match (stop.idle, self.last_in) {
            (Some(i), Some(l)) => l.elapsed() >= i && self.tcp_open() == 0,
            _ => false,
        };
        if closed || over_time || idle {
            self.close_input(over_time);
        }
        Ok(())
    }

    /// Ends the input: the pipeline takes nothing more, the proxy accepts no connection (and
    /// with the time up, closes the open ones; otherwise a test's control channel still carries
    /// its results).
    fn close_input(&mut self, over_time: bool) {
        self.input_open = false;
        self.d.pipeline.close();
        if let Some(p) = self.proxy.as_mut() {
            if over_time {
                p.close_all(self.poll.registry());
            } else {
                p.stop_accepting(self.poll.registry());
            }
        }
    }

    /// Brings the `--metrics` counters up to date every [`PUBLISH_EVERY`].
    fn publish_now_and_then(&mut self) {
        if let Some(m) = self.metrics.as_mut() {
            if self.published.elapsed() >= PUBLISH_EVERY {
                m.publish(self.d.totals(self.proxy.as_ref()));
                self.published = Instant::now();
            }
        }
    }

    /// How long to sleep: until the pipeline's next deadline or a stop condition, at most
    /// [`MAX_WAIT`].
    fn next_wait(&self) -> Duration {
        let now = self.d.now();
        let mut wait = MAX_WAIT;
        if let Some(t) = self.d.pipeline.next_deadline() {
            wait = wait.min(Duration::from_nanos(t.saturating_sub(now)));
        }
        if self.input_open {
            if let Some(t) = self.opts.stop.duration {
                wait = wait.min(t.saturating_sub(self.d.start.elapsed()));
            }
            if let (Some(i), Some(l)) = (self.opts.stop.idle, self.last_in) {
                if self.tcp_open() == 0 {
                    wait = wait.min(i.saturating_sub(l.elapsed()));
                }
            }
        }
        wait
    }

    /// Sleeps in `epoll` up to `wait`, then drives the proxy (its `hot` pairs first) and the
    /// return path's flows that have answers.
    fn wait_and_dispatch(&mut self, wait: Duration, hot: bool) -> Result<()> {
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("epoll_wait"),
        }
        if let Some(p) = self.proxy.as_mut().filter(|_| hot) {
            if p.run_hot(self.poll.registry()) > 0 && self.input_open {
                self.last_in = Some(Instant::now());
            }
        }
        if let Some(p) = self.proxy.as_mut() {
            p.expire(self.poll.registry(), Instant::now());
        }
        for e in self.events.iter() {
            match e.token() {
                SIG => signal::drain(signal::termination_fd()?),
                SOCK => {}
                t => {
                    if let Some(i) = Flows::slot_of(t) {
                        self.d.answer(i, &self.inbound);
                        continue;
                    }
                    let Some(p) = self.proxy.as_mut() else {
                        continue;
                    };
                    if let Some(moved) = p.on_event(self.poll.registry(), t) {
                        if self.input_open && (moved > 0 || t == LISTEN) {
                            saw_traffic(&mut self.last_in, &mut *self.on_event);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Flushes the pipeline after a signal, closes the proxy and writes the report.
    fn finish(self, listen: SocketAddr, interrupted: bool) -> RelayReport {
        let Running {
            mut d,
            poll,
            mut proxy,
            opts,
            mut metrics,
            ..
        } = self;
        if interrupted {
            d.pipeline.close();
            d.send_due(u64::MAX);
        }
        if let Some(p) = proxy.as_mut() {
            p.close_all(poll.registry());
        }
        debug_assert!(d.pipeline.is_empty(), "the relay leaves nothing behind");
        if let Some(m) = metrics.as_mut() {
            m.publish(d.totals(proxy.as_ref()));
        }
        let mut returned = d.back.report;
        returned.sources = d.flows.opened;
        returned.evicted = d.flows.evicted;
        RelayReport {
            schema: SCHEMA.into(),
            meta: crate::stats::meta::Meta::gather(),
            listen: listen.to_string(),
            to: opts.to.to_string(),
            settings: SettingsReport::new(d.pipeline.settings()),
            datagrams_in: d.datagrams_in,
            bytes_in: d.bytes_in,
            truncated_in: d.truncated_in,
            other_in: d.truth.other_in,
            iperf3_hellos: d.iperf3_hellos,
            impairments: d.pipeline.counters(),
            forwarded: d.forwarded,
            bytes_out: d.bytes_out,
            send_errors: d.send_errors,
            returned,
            elapsed_s: d.start.elapsed().as_secs_f64(),
            interrupted,
            tests: d.truth.tests(),
            tcp: proxy.as_ref().map(Proxy::counters),
        }
    }
}

/// A datagram or a TCP byte came in (the first one is the caller's [`Event::Traffic`]).
fn saw_traffic(last_in: &mut Option<Instant>, on_event: &mut dyn FnMut(Event)) {
    if last_in.is_none() {
        on_event(Event::Traffic);
    }
    *last_in = Some(Instant::now());
}

/// The return path: what the receiver sends to the flows' sockets goes back to their sources.
struct Back {
    rb: RecvBatch,
    sb: SendBatch,
    /// Flows that stopped at their turn's budget with more to read.
    hot: Vec<usize>,
    report: ReturnReport,
}

/// The relay's moving parts between the sockets.
struct Driver {
    pipeline: Pipeline<Packet>,
    truth: GroundTruth,
    flows: Flows,
    rb: RecvBatch,
    sb: SendBatch,
    /// Tags and lengths of the messages staged in `sb`, by slot...
    staged: Vec<(Tag, usize)>,
    /// ...and the socket they all leave through.
    staged_via: Option<Rc<UdpSocket>>,
    back: Back,
    pool: Vec<Vec<u8>>,
    start: Instant,
    datagrams_in: u64,
    bytes_in: u64,
    truncated_in: u64,
    iperf3_hellos: u64,
    forwarded: u64,
    bytes_out: u64,
    send_errors: BTreeMap<String, u64>,
}

/// Sends messages `0..total` of `sb` on `sock` with `sendmmsg`. A full device queue is waited
/// for (50 µs at a time, up to 1000 times for one message); a message the kernel refuses
/// otherwise is skipped and counted in `errors` by errno. `done(i, sent)` is called for every
/// message, in order.
fn send_batch(
    sb: &mut SendBatch,
    sock: &impl AsRawFd,
    total: usize,
    errors: &mut BTreeMap<String, u64>,
    mut done: impl FnMut(usize, bool),
) {
    let mut from = 0;
    let mut stalled = 0u32;
    while from < total {
        match sb.send(sock, from, total) {
            Ok(k) => {
                (from..from + k).for_each(|i| done(i, true));
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
                *errors.entry(errno_name(&e)).or_default() += 1;
                done(from, false);
                from += 1;
                stalled = 0;
            }
        }
    }
}

/// The truth's identity of a netcore datagram (`None` if `d` is not one).
fn netcore_tag(d: &[u8]) -> Tag {
    Header::decode(d)
        .ok()
        .map(|h| (Key::Netcore(h.test_id), h.seq))
}

/// The truth's identity of a datagram from a flow speaking `proto` (`from` is the flow's
/// source): netcore's header, or iperf3's once the flow said iperf3's hello (the first data
/// datagram fixes the counter width: see [`truth::iperf3_wide`]).
fn identify(d: &[u8], from: SocketAddr, proto: &mut Proto) -> Tag {
    match proto {
        Proto::Netcore => netcore_tag(d),
        Proto::Iperf3(width) => {
            let wide = match *width {
                Some(w) => w,
                None => {
                    let w = truth::iperf3_wide(d)?;
                    *width = Some(w);
                    w
                }
            };
            let h = iperf3::Header::read(d, wide)?;
            Some((Key::Iperf3 { from, wide }, h.seq0()))
        }
    }
}

impl Driver {
    /// A relay's parts towards `--to` (`outbound`: the first source's socket), nothing in yet.
    fn new(opts: &RelayOptions, outbound: UdpSocket) -> Driver {
        Driver {
            pipeline: Pipeline::new(opts.settings.clone()),
            truth: GroundTruth::new(),
            flows: Flows::new(opts.to, outbound, sources::MAX_FLOWS),
            rb: RecvBatch::with_sources(BATCH, SLOT),
            sb: SendBatch::new(BATCH, SLOT),
            staged: Vec::with_capacity(BATCH),
            staged_via: None,
            back: Back {
                rb: RecvBatch::new(RETURN_BATCH, SLOT),
                sb: SendBatch::with_destinations(RETURN_BATCH, SLOT),
                hot: Vec::new(),
                report: ReturnReport::default(),
            },
            pool: Vec::new(),
            start: Instant::now(),
            datagrams_in: 0,
            bytes_in: 0,
            truncated_in: 0,
            iperf3_hellos: 0,
            forwarded: 0,
            bytes_out: 0,
            send_errors: BTreeMap::new(),
        }
    }

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
    fn receive(
        &mut self,
        registry: &Registry,
        sock: &mio::net::UdpSocket,
        count: Option<u64>,
    ) -> Result<(bool, bool)> {
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
                if self.take(registry, i, now, count) {
                    return Ok((true, got));
                }
            }
            if n < BATCH {
                break;
            }
        }
        Ok((false, got))
    }

    /// Takes message `i` of the receive batch (several datagrams if the kernel coalesced them):
    /// counts it and hands it to its flow's pipeline. Returns whether the count limit was met.
    fn take(&mut self, registry: &Registry, i: usize, now: u64, count: Option<u64>) -> bool {
        let (m, truncated) = self.rb.message(i);
        let from = self.rb.source(i);
        // Its source's flow; without one (no socket to be had), its datagrams are dropped.
        let flow = from.map(|a| self.flows.slot(registry, a, now));
        // A GRO buffer (never asked for here, but honoured) holds several datagrams.
        let seg = self.rb.gro_segment(i).unwrap_or(m.len()).max(1);
        let mut at = 0;
        loop {
            let d = &m[at..(at + seg).min(m.len())];
            at += d.len();
            self.datagrams_in += 1;
            self.bytes_in += d.len() as u64;
            if truncated {
                self.truncated_in += 1;
            }
            let f = match &flow {
                Some(Ok(slot)) => self.flows.get_mut(*slot),
                _ => None,
            };
            match f {
                None => {
                    // Dropped: counted as a send error, and in the truth if it is netcore's.
                    let why = match &flow {
                        Some(Err(e)) => format!("no socket for a new source: {}", errno_name(e)),
                        _ => "no source address".to_string(),
                    };
                    *self.send_errors.entry(why).or_default() += 1;
                    let tag = self.truth.came_in(netcore_tag(d));
                    self.truth.dropped(tag);
                }
                Some(f) if iperf3::read_word(d) == Some(iperf3::CONNECT_MSG) => {
                    // iperf3's stream hello: the source is an iperf3 UDP stream. The hello is
                    // forwarded at once, unimpaired (the stream cannot start without it), and
                    // is not part of the truth.
                    f.last = now;
                    if f.proto == Proto::Netcore {
                        f.proto = Proto::Iperf3(None);
                    }
                    self.iperf3_hellos += 1;
                    match f.sock.send(d) {
                        Ok(k) => {
                            self.forwarded += 1;
                            self.bytes_out += k as u64;
                        }
                        Err(e) => *self.send_errors.entry(errno_name(&e)).or_default() += 1,
                    }
                }
                Some(f) => {
                    f.last = now;
                    let via = f.sock.clone();
                    let tag = identify(d, f.from, &mut f.proto);
                    let mut buf = self.pool.pop().unwrap_or_default();
                    buf.clear();
                    buf.extend_from_slice(d);
                    let tag = self.truth.came_in(tag);
                    if let Offer::Dropped(p) =
                        self.pipeline.offer(now, Packet { buf, tag, via }, d.len())
                    {
                        self.truth.dropped(p.tag);
                        recycle(&mut self.pool, p.buf);
                    }
                }
            }
            if count.is_some_and(|c| self.datagrams_in >= c) {
                return true;
            }
            if at >= m.len() {
                return false;
            }
        }
    }

    /// Sends every datagram the pipeline has due at `now`.
    fn send_due(&mut self, now: u64) {
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
                let other = self
                    .staged_via
                    .as_ref()
                    .is_some_and(|v| !Rc::ptr_eq(v, &e.item.via));
                if self.staged.len() == BATCH || other {
                    self.flush();
                }
                let i = self.staged.len();
                let n = e.item.buf.len().min(SLOT);
                self.sb.slot_mut(i)[..n].copy_from_slice(&e.item.buf[..n]);
                self.sb.set_len(i, n);
                self.staged.push((e.item.tag, n));
                if self.staged_via.is_none() {
                    self.staged_via = Some(e.item.via.clone());
                }
            }
            self.recycle(e.item.buf);
        }
        let overflowed: Vec<Packet> = self.pipeline.take_overflowed().collect();
        for p in overflowed {
            self.truth.dropped(p.tag);
            self.recycle(p.buf);
        }
        self.flush();
    }

    /// Sends the staged messages on their flow's socket; a message the kernel refuses is
    /// dropped and counted.
    fn flush(&mut self) {
        let Some(via) = self.staged_via.take() else {
            return;
        };
        let staged = &self.staged;
        let truth = &mut self.truth;
        let (forwarded, bytes_out) = (&mut self.forwarded, &mut self.bytes_out);
        send_batch(
            &mut self.sb,
            &*via,
            staged.len(),
            &mut self.send_errors,
            |i, sent| {
                let (tag, len) = staged[i];
                if sent {
                    truth.sent(tag);
                    *forwarded += 1;
                    *bytes_out += len as u64;
                } else {
                    truth.dropped(tag);
                }
            },
        );
        self.staged.clear();
    }

    /// Returns what flow `i`'s socket received to its source, from the listening socket
    /// (unimpaired), up to a budget per turn (then the flow is driven again next turn).
    fn answer(&mut self, i: usize, inbound: &mio::net::UdpSocket) {
        let now = self.now();
        let Some(f) = self.flows.get_mut(i) else {
            return;
        };
        let b = &mut self.back;
        for turn in 0..RECV_BUDGET {
            let n = match b.rb.recv(&*f.sock, false) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // What `--to` answered with ICMP (port unreachable): nothing to return.
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                    *b.report.errors.entry(errno_name(&e)).or_default() += 1;
                    continue;
                }
                Err(_) => return,
            };
            f.last = now;
            let mut lens = [0usize; RETURN_BATCH];
            for (k, len) in lens.iter_mut().enumerate().take(n) {
                let (m, _) = b.rb.message(k);
                b.sb.slot_mut(k)[..m.len()].copy_from_slice(m);
                b.sb.set_len(k, m.len());
                b.sb.set_destination(k, f.from);
                *len = m.len();
            }
            let r = &mut b.report;
            send_batch(&mut b.sb, inbound, n, &mut r.errors, |k, sent| {
                if sent {
                    r.datagrams += 1;
                    r.bytes += lens[k] as u64;
                }
            });
            if n < RETURN_BATCH {
                return;
            }
            if turn + 1 == RECV_BUDGET {
                b.hot.push(i);
            }
        }
    }
}

fn recycle(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if pool.len() < POOL_LIMIT {
        pool.push(buf);
    }
}
