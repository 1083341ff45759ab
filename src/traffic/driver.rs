//! The reactor driver of `netcore traffic`: sockets, timers, and the monitor.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mio::net::{TcpStream, UdpSocket};
use mio::Interest;

use super::messages::{
    decode_header, encode_message, Counters, Flow, FrameParser, MessageGen, Pace, TrafficConfig,
};
use super::report::{FlowInterval, FlowTotals, Sample, TrafficReport, SCHEMA};
use crate::reactor::{Ctx, Entry, Handler, Key, Reactor, Ready};

/// The sockets on the reactor.
enum Sock {
    TcpServer(TcpStream),
    TcpClient(TcpStream),
    UdpServer(UdpSocket),
    UdpClient(UdpSocket),
}

impl Entry for Sock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Sock::TcpServer(s) | Sock::TcpClient(s) => s,
            Sock::UdpServer(s) | Sock::UdpClient(s) => s,
        }
    }
}

const TAG_SEND: u64 = 1;
const TAG_SAMPLE: u64 = 2;
const TAG_END: u64 = 3;
const TAG_DRAIN: u64 = 4;

/// Pending TCP bytes above which the server stops generating messages (backpressure).
const TCP_BACKLOG: usize = 1 << 20;
/// How often a rate-paced server checks its budget.
const RATE_TICK: Duration = Duration::from_millis(1);
/// Most messages one flow sends per call: a rate the loopback cannot reach (`--rate 10Gbps`)
/// must not keep the reactor in one send loop, away from its timers, I/O and signals.
const SEND_BUDGET: u32 = 256;
/// How long after the last send the clients may take to receive what is in flight.
const DRAIN: Duration = Duration::from_millis(300);

struct FlowState {
    flow: Flow,
    server: Key,
    client: Key,
    gen: MessageGen,
    /// The next message, generated but not yet taken by the kernel.
    next: Option<usize>,
    /// Messages drawn from the generator so far.
    generated: u64,
    seq: u64,
    counters: Counters,
    /// Received counts at the last sample.
    mark: (u64, u64),
    out: Vec<u8>,
    out_at: usize,
    parser: FrameParser,
}

struct Traffic<'a> {
    cfg: TrafficConfig,
    flows: Vec<FlowState>,
    start: Instant,
    sending: bool,
    samples: Vec<Sample>,
    buf: Vec<u8>,
    on_sample: &'a mut dyn FnMut(&Sample, &BTreeMap<Flow, Counters>),
    error: Option<String>,
}

impl Traffic<'_> {
    fn flow_of(&self, key: Key) -> Option<usize> {
        self.flows
            .iter()
            .position(|f| f.server == key || f.client == key)
    }

    /// Sends as many messages as the pace allows now.
    fn send(&mut self, cx: &mut Ctx<Sock>, i: usize) {
        if !self.sending {
            return;
        }
        let elapsed = cx.now().saturating_duration_since(self.start);
        let f = &mut self.flows[i];
        for _ in 0..SEND_BUDGET {
            let allowed = match self.cfg.pace {
                Pace::Every(_) => f.next.is_some(),
                Pace::BitsPerSec(bps) => {
                    (f.counters.sent_bytes as f64) * 8.0 < bps * elapsed.as_secs_f64()
                }
            };
            if !allowed {
                break;
            }
            let size = match f.next {
                Some(n) => n,
                None => {
                    f.generated += 1;
                    *f.next.insert(f.gen.next_size())
                }
            };
            let taken = match cx.slab.get_mut(f.server) {
                Some(Sock::TcpServer(s)) => {
                    if f.out.len() - f.out_at > TCP_BACKLOG {
                        false
                    } else {
                        encode_message(&mut f.out, f.seq, size);
                        flush(s, &mut f.out, &mut f.out_at);
                        true
                    }
                }
                Some(Sock::UdpServer(s)) => {
                    self.buf.clear();
                    encode_message(&mut self.buf, f.seq, size);
                    match s.send(&self.buf) {
                        Ok(_) => true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                        // ECONNREFUSED and friends: the datagram was not sent; try later.
                        Err(_) => false,
                    }
                }
                _ => false,
            };
            if !taken {
                break;
            }
            f.next = None;
            f.seq += 1;
            f.counters.sent_msgs += 1;
            f.counters.sent_bytes += size as u64;
            if matches!(self.cfg.pace, Pace::Every(_)) {
                break;
            }
        }
    }

    fn receive(&mut self, cx: &mut Ctx<Sock>, i: usize) {
        let f = &mut self.flows[i];
        let buf = &mut self.buf;
        buf.resize(1 << 16, 0);
        match cx.slab.get_mut(f.client) {
            Some(Sock::TcpClient(s)) => loop {
                match s.read(buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let (m, b) = f.parser.feed(&buf[..n]);
                        f.counters.recv_msgs += m;
                        f.counters.recv_bytes += b;
                        if f.parser.broken {
                            self.error = Some("TCP stream out of sync".into());
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            },
            Some(Sock::UdpClient(s)) => loop {
                match s.recv(buf) {
                    Ok(n) => {
                        if let Some((len, _seq)) = decode_header(&buf[..n]) {
                            if len == n {
                                f.counters.recv_msgs += 1;
                                f.counters.recv_bytes += n as u64;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            },
            _ => {}
        }
    }

    fn sample(&mut self, cx: &Ctx<Sock>) {
        let t = cx.now().saturating_duration_since(self.start).as_secs_f64();
        let mut flows = BTreeMap::new();
        let mut totals = BTreeMap::new();
        for f in self.flows.iter_mut() {
            let (m, b) = (f.counters.recv_msgs, f.counters.recv_bytes);
            flows.insert(
                f.flow,
                FlowInterval {
                    bytes: b - f.mark.1,
                    msgs: m - f.mark.0,
                },
            );
            f.mark = (m, b);
            totals.insert(f.flow, f.counters);
        }
        let s = Sample {
            n: self.samples.len() as u64 + 1,
            t,
            flows,
        };
        (self.on_sample)(&s, &totals);
        self.samples.push(s);
    }

    fn all_in(&self) -> bool {
        self.flows
            .iter()
            .all(|f| f.counters.recv_bytes >= f.counters.sent_bytes && f.out_at == f.out.len())
    }
}

fn flush(s: &mut TcpStream, out: &mut Vec<u8>, at: &mut usize) {
    while *at < out.len() {
        match s.write(&out[*at..]) {
            Ok(n) => *at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if *at == out.len() {
        out.clear();
        *at = 0;
    }
}

impl Handler<Sock> for Traffic<'_> {
    fn on_event(&mut self, cx: &mut Ctx<Sock>, key: Key, ready: Ready) {
        let Some(i) = self.flow_of(key) else { return };
        if key == self.flows[i].client {
            self.receive(cx, i);
        } else if ready.is_writable() {
            let f = &mut self.flows[i];
            if let Some(Sock::TcpServer(s)) = cx.slab.get_mut(f.server) {
                flush(s, &mut f.out, &mut f.out_at);
            }
            self.send(cx, i);
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx<Sock>, key: Key, tag: u64) {
        match tag {
            TAG_SEND => {
                let Some(i) = self.flow_of(key) else { return };
                if let Pace::Every(d) = self.cfg.pace {
                    let f = &mut self.flows[i];
                    // Messages go at 0, d, 2d, ... strictly before the end; a message still
                    // waiting (socket full) is not replaced by a new one.
                    if self.sending
                        && f.next.is_none()
                        && d * (f.generated as u32) < self.cfg.duration
                    {
                        f.next = Some(f.gen.next_size());
                        f.generated += 1;
                    }
                }
                self.send(cx, i);
                if self.sending {
                    let next = match self.cfg.pace {
                        Pace::Every(d) => d,
                        Pace::BitsPerSec(_) => RATE_TICK,
                    };
                    cx.add_timer_after(next, key, TAG_SEND);
                }
            }
            TAG_SAMPLE => {
                self.sample(cx);
                let n = self.samples.len() as u32 + 1;
                let at = self.start + self.cfg.interval * n;
                if at <= self.start + self.cfg.duration {
                    cx.add_timer(at, Key::NONE, TAG_SAMPLE);
                }
            }
            TAG_END => {
                self.sending = false;
                cx.add_timer_after(Duration::from_millis(5), Key::NONE, TAG_DRAIN);
            }
            TAG_DRAIN => {
                let waited = cx
                    .now()
                    .saturating_duration_since(self.start + self.cfg.duration);
                if self.all_in() || waited >= DRAIN {
                    // The last sample covers what arrived since the previous one.
                    self.sample_the_rest(cx);
                    cx.stop();
                } else {
                    cx.add_timer_after(Duration::from_millis(5), Key::NONE, TAG_DRAIN);
                }
            }
            _ => {}
        }
    }
}

/// Runs the flows for the configured duration. `on_sample` sees each interval as it closes,
/// with the cumulative counters of every flow.
pub fn run(
    cfg: &TrafficConfig,
    on_sample: &mut dyn FnMut(&Sample, &BTreeMap<Flow, Counters>),
) -> Result<TrafficReport> {
    let mut reactor: Reactor<Sock> = Reactor::new(64).context("creating the reactor")?;
    reactor.watch_termination_signals()?;
    let mut flows = Vec::new();
    for &flow in &cfg.flows {
        let (server, client) = socket_pair(flow)?;
        let cx = reactor.cx();
        let server = cx.insert(server, Interest::WRITABLE)?;
        let client = cx.insert(client, Interest::READABLE)?;
        flows.push(FlowState {
            flow,
            server,
            client,
            gen: MessageGen::new(cfg.seed, flow, cfg.min_size, cfg.max_size),
            next: None,
            generated: 0,
            seq: 0,
            counters: Counters::default(),
            mark: (0, 0),
            out: Vec::with_capacity(64 << 10),
            out_at: 0,
            parser: FrameParser::default(),
        });
    }
    let start = Instant::now();
    {
        let cx = reactor.cx();
        for f in &flows {
            cx.add_timer(start, f.server, TAG_SEND);
        }
        cx.add_timer(start + cfg.interval, Key::NONE, TAG_SAMPLE);
        cx.add_timer(start + cfg.duration, Key::NONE, TAG_END);
    }
    let mut t = Traffic {
        cfg: cfg.clone(),
        flows,
        start,
        sending: true,
        samples: Vec::new(),
        buf: Vec::with_capacity(1 << 16),
        on_sample,
        error: None,
    };
    reactor.run(&mut t)?;
    if let Some(e) = t.error {
        anyhow::bail!(e);
    }
    // Stopped by SIGINT/SIGTERM before the end: what arrived since the last sample is a last,
    // shorter interval, so that the samples still add up to the totals.
    let interrupted = crate::sys::signal::stop_requested();
    if interrupted {
        t.sample_the_rest(reactor.cx());
    }
    Ok(t.report(start.elapsed(), interrupted))
}

/// A flow's two ends on loopback, non-blocking: the server's (which sends) and the client's.
fn socket_pair(flow: Flow) -> Result<(Sock, Sock)> {
    Ok(match flow {
        Flow::Tcp => {
            let l = StdListener::bind("127.0.0.1:0").context("TCP flow: bind")?;
            let c = StdStream::connect(l.local_addr()?).context("TCP flow: connect")?;
            let (s, _) = l.accept().context("TCP flow: accept")?;
            for x in [&s, &c] {
                x.set_nodelay(true)?;
                x.set_nonblocking(true)?;
            }
            (
                Sock::TcpServer(TcpStream::from_std(s)),
                Sock::TcpClient(TcpStream::from_std(c)),
            )
        }
        Flow::Udp => {
            let s = StdUdp::bind("127.0.0.1:0").context("UDP flow: bind")?;
            let c = StdUdp::bind("127.0.0.1:0").context("UDP flow: bind")?;
            crate::sys::sockopt::size_buffer(&c, 8 << 20, true).ok();
            s.connect(c.local_addr()?)?;
            for x in [&s, &c] {
                x.set_nonblocking(true)?;
            }
            (
                Sock::UdpServer(UdpSocket::from_std(s)),
                Sock::UdpClient(UdpSocket::from_std(c)),
            )
        }
    })
}

impl Traffic<'_> {
    /// The last sample, of what arrived since the previous one (or the first, if none was
    /// taken).
    fn sample_the_rest(&mut self, cx: &Ctx<Sock>) {
        let last = self.flows.iter().any(|f| f.mark.1 != f.counters.recv_bytes);
        if last || self.samples.is_empty() {
            self.sample(cx);
        }
    }

    /// The run's report, `elapsed` after the start.
    fn report(self, elapsed: Duration, interrupted: bool) -> TrafficReport {
        let cfg = &self.cfg;
        // The time the servers sent for: the whole --duration, or until the interrupt.
        let sent_for = cfg.duration.min(elapsed).as_secs_f64().max(1e-9);
        TrafficReport {
            schema: SCHEMA,
            meta: crate::stats::meta::Meta::gather(),
            seed: cfg.seed,
            duration_s: cfg.duration.as_secs_f64(),
            elapsed_s: elapsed.as_secs_f64(),
            interrupted,
            interval_s: cfg.interval.as_secs_f64(),
            min_size: cfg.min_size,
            max_size: cfg.max_size,
            pace: match cfg.pace {
                Pace::Every(d) => format!("one message per flow every {d:?}"),
                Pace::BitsPerSec(b) => format!("{} per flow", crate::units::fmt_bits_per_sec(b)),
            },
            totals: self.flows.iter().map(|f| f.totals(sent_for)).collect(),
            intervals: self.samples,
        }
    }
}

impl FlowState {
    /// The flow's totals over `sent_for` seconds of sending. TCP loses nothing: what was not
    /// received is still in a socket buffer.
    fn totals(&self, sent_for: f64) -> (Flow, FlowTotals) {
        let unreceived = self
            .counters
            .sent_msgs
            .saturating_sub(self.counters.recv_msgs);
        let (lost_msgs, in_flight_msgs) = match self.flow {
            Flow::Udp => (unreceived, 0),
            Flow::Tcp => (0, unreceived),
        };
        (
            self.flow,
            FlowTotals {
                counters: self.counters,
                lost_msgs,
                in_flight_msgs,
                recv_bits_per_sec: self.counters.recv_bytes as f64 * 8.0 / sent_for,
            },
        )
    }
}
