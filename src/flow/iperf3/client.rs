//! `netcore blast --to iperf3://HOST[:PORT]`: netcore as the client of a stock `iperf3 -s`,
//! around the sans-IO `ClientCtl`. TCP: the data connections open with the cookie and run on
//! `flow::tcp_engine::stream`'s threads (the same write and read loops as a netcore test). UDP: the
//! streams of `super::dgram` (paced `sendmmsg` senders, tracked readers), forward, `-R` or
//! `--bidir`. The server's results document comes back as iperf3 returns it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::ctl::{cpu_util, STEP};
use super::dgram::{Streams, TxPlan};
use super::report::{sent_sum_of, sum_of, Iperf3UdpReport, SCHEMA};
use crate::flow::control::Plan;
use crate::flow::cpu::CpuUsage;
use crate::flow::payload::{StreamEnd, TcpInterval, TcpSpec};
use crate::flow::streams::{cpu_for, split_bps, split_count, split_rate, Dir, Mode};
use crate::flow::tcp_engine::report::{BufferSides, CpuSides, IntervalMeter, TcpReport};
use crate::flow::tcp_engine::stream::{self, job_for, sample, transient, DataConn, Stops};
use crate::interop::iperf3::client_ctl::{ClientCtl, Event};
use crate::interop::iperf3::msg::{stream_id, COOKIE_LEN};
use crate::interop::iperf3::udp_header::{read_word, word, Header};
use crate::interop::iperf3::udp_header::{CONNECT_MSG, CONNECT_REPLY, LEGACY_CONNECT_REPLY};
use crate::interop::iperf3::{Cookie, Params, Results, StreamResult};
use crate::sys::cpu::process_times;
use crate::sys::signal;
use crate::sys::sockopt;
use crate::units::Rate;

/// What `blast` asks of an iperf3 server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub server: SocketAddr,
    pub spec: TcpSpec,
    pub plan: Plan,
    pub cpus: Vec<usize>,
    pub interval: Duration,
}

/// netcore's report of the test and the server's results document as iperf3 returned it.
#[derive(Debug)]
pub struct ClientOutcome {
    pub report: TcpReport,
    pub server: Results,
}

struct Link {
    sock: TcpStream,
    cc: ClientCtl,
    out: Vec<u8>,
}

impl Link {
    /// Connects to the server and sends a fresh cookie.
    fn open(server: SocketAddr) -> Result<(Link, Cookie)> {
        let sock = TcpStream::connect_timeout(&server, Duration::from_secs(5))
            .with_context(|| format!("cannot reach the iperf3 server at {server}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        sock.set_write_timeout(Some(Duration::from_secs(2)))?;
        let _ = sock.set_nodelay(true);
        let mut r = [0u8; COOKIE_LEN - 1];
        for b in r.iter_mut() {
            *b = rand::random();
        }
        let cookie = Cookie::from_random(r);
        let mut out = Vec::new();
        let cc = ClientCtl::hello(&cookie, &mut out);
        let mut l = Link { sock, cc, out };
        l.flush()?;
        Ok((l, cookie))
    }

    fn flush(&mut self) -> Result<()> {
        let r = self.sock.write_all(&self.out);
        self.out.clear();
        r.context("iperf3 server closed the control connection")
    }

    /// The server's next event, at most until `deadline`.
    fn next(&mut self, deadline: Instant) -> Result<Event> {
        loop {
            if let Some(e) = self.poll()? {
                return match e {
                    Event::AccessDenied => bail!("iperf3 server is busy (ACCESS_DENIED)"),
                    Event::ServerError { i_errno, errno } => bail!(
                        "iperf3 server failed: its error {i_errno} (errno {errno}); see its log"
                    ),
                    Event::ServerTerminate => bail!("iperf3 server terminated the test"),
                    e => Ok(e),
                };
            }
            if Instant::now() >= deadline {
                bail!("iperf3 server went silent");
            }
            if signal::stop_requested() {
                bail!("interrupted");
            }
        }
    }

    fn poll(&mut self) -> Result<Option<Event>> {
        if let Some(e) = self.cc.poll()? {
            return Ok(Some(e));
        }
        let mut b = [0u8; 4096];
        match self.sock.read(&mut b) {
            Ok(0) => bail!("iperf3 server closed the control connection"),
            Ok(n) => {
                self.cc.input(&b[..n])?;
                Ok(self.cc.poll()?)
            }
            Err(e) if transient(&e) => Ok(None),
            Err(e) => Err(e).context("iperf3 control connection lost"),
        }
    }

    /// TEST_END, then the server's EXCHANGE_RESULTS.
    fn end(&mut self) -> Result<()> {
        self.cc.end(&mut self.out);
        self.flush()?;
        self.expect(Event::ExchangeResults, "EXCHANGE_RESULTS")
    }

    /// Our results, the server's back, DISPLAY_RESULTS and IPERF_DONE: the server's results.
    fn exchange(&mut self, ours: &Results) -> Result<Results> {
        self.cc.results(ours, &mut self.out);
        self.flush()?;
        let server = match self.next(Instant::now() + STEP)? {
            Event::ServerResults(r) => r,
            e => bail!("iperf3 server sent {e:?} instead of its results"),
        };
        self.expect(Event::DisplayResults, "DISPLAY_RESULTS")?;
        self.cc.done(&mut self.out);
        self.flush()?;
        Ok(server)
    }

    fn expect(&mut self, want: Event, what: &str) -> Result<()> {
        let e = self.next(Instant::now() + STEP)?;
        if e != want {
            bail!("iperf3 server sent {e:?} while {what} was expected");
        }
        Ok(())
    }
}

/// The parameter document for a netcore TCP test.
pub(crate) fn params_of(spec: &TcpSpec, plan: Plan) -> Params {
    let (time, bytes) = match plan {
        Plan::TimeNs(ns) => (ns.div_ceil(1_000_000_000).max(1), 0),
        Plan::Count(n) => (0, n.saturating_mul(spec.len as u64)),
    };
    Params {
        udp: false,
        time,
        bytes,
        parallel: spec.streams as u32,
        reverse: spec.mode == Mode::Reverse,
        bidirectional: spec.mode == Mode::Bidir,
        len: spec.len,
        // iperf3's -b is per stream.
        bandwidth: spec
            .rate_bps
            .map_or(0, |r| split_bps(r, spec.streams as usize)),
        window: spec.window.unwrap_or(0),
        mss: spec.mss.unwrap_or(0),
        nodelay: spec.no_delay,
        congestion: spec.congestion.clone(),
        client_version: Some(format!("netcore {}", env!("CARGO_PKG_VERSION"))),
        ..Params::default()
    }
}

/// Runs one TCP test against an iperf3 server.
pub fn run(
    opts: &ClientOptions,
    on_interval: &mut dyn FnMut(&TcpInterval),
) -> Result<ClientOutcome> {
    let spec = &opts.spec;
    spec.check().map_err(anyhow::Error::msg)?;
    let (mut l, cookie) = Link::open(opts.server)?;
    let stops = Stops {
        write: Arc::new(AtomicBool::new(false)),
        read: Arc::new(AtomicBool::new(false)),
        on_signal: true,
    };
    let running = open_streams(&mut l, opts, &cookie, &stops)?;
    let cpu0 = process_times();
    let t0 = Instant::now();
    let intervals = sample_until_end(&mut l, opts, &running.live, t0, on_interval)?;
    let t_end = t0.elapsed().as_secs_f64();
    stops.write.store(true, Ordering::Relaxed);
    let cpu1 = process_times();
    // Our writers' counts are final once they have stopped.
    let wait = Instant::now() + STEP;
    while Instant::now() < wait
        && running
            .live
            .iter()
            .any(|x| x.dir == Dir::Up && !x.finished())
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    l.end()?;
    let ours = our_results(spec, &running.live, cpu_util(cpu0, cpu1, t_end), t_end);
    let server = l.exchange(&ours)?;
    // The server has closed its streams: our readers see EOF.
    let wait = Instant::now() + STEP;
    while Instant::now() < wait && !running.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    stops.read.store(true, Ordering::Relaxed);
    // The streams' own "cut" flags say only that our stop reached a writer a moment before its
    // deadline (this end stops them at the planned end): not an interruption.
    let (ends, cpu, _) = running.join()?;
    let cpu = cpu.finish(stream::bytes_moved(&ends));
    let report = client_report(opts, &cookie, &server, ends, cpu, intervals);
    Ok(ClientOutcome { report, server })
}

/// The parameter exchange, the data connections (the cookie as their preamble) and their
/// threads, started at TEST_RUNNING.
fn open_streams(
    l: &mut Link,
    opts: &ClientOptions,
    cookie: &Cookie,
    stops: &Stops,
) -> Result<stream::Running> {
    let spec = &opts.spec;
    l.expect(Event::ParamExchange, "PARAM_EXCHANGE")?;
    l.cc.params(&params_of(spec, opts.plan), &mut l.out);
    l.flush()?;
    l.expect(Event::CreateStreams, "CREATE_STREAMS")?;
    let dirs = spec.directions();
    let mut socks = Vec::new();
    for _ in &dirs {
        socks.push(stream::connect(opts.server, spec, &cookie.0)?);
    }
    l.expect(Event::TestStart, "TEST_START")?;
    l.expect(Event::TestRunning, "TEST_RUNNING")?;
    let conns = socks
        .into_iter()
        .enumerate()
        .map(|(i, sock)| DataConn {
            sock,
            id: stream_id(i) as u32,
            dir: dirs[i],
            job: job_for(spec, opts.plan, dirs[i], i, true, cpu_for(&opts.cpus, i)),
        })
        .collect();
    stream::start(conns, stops, spec.thread_per_stream)
}

/// Samples intervals from `t0` until the end: the planned time, or the planned bytes moved
/// one way (as iperf3 judges -n), a signal, or the plan's time and 30 s more; the server
/// must stay quiet meanwhile.
fn sample_until_end(
    l: &mut Link,
    opts: &ClientOptions,
    live: &[Arc<stream::Live>],
    t0: Instant,
    on_interval: &mut dyn FnMut(&TcpInterval),
) -> Result<Vec<TcpInterval>> {
    let (end_at, want_bytes) = match opts.plan {
        Plan::TimeNs(ns) => (Some(t0 + Duration::from_nanos(ns)), u64::MAX),
        Plan::Count(n) => (None, n.saturating_mul(opts.spec.len as u64)),
    };
    let limit = t0 + end_at.map_or(Duration::from_secs(3600), |e| e - t0) + Duration::from_secs(30);
    let mut meter = IntervalMeter::default();
    let mut intervals = Vec::new();
    let mut next = t0 + opts.interval;
    loop {
        let now = Instant::now();
        if now >= next {
            let row = sample(&mut meter, t0.elapsed().as_secs_f64(), live, "client");
            on_interval(&row);
            intervals.push(row);
            next += opts.interval;
        }
        let moved = |d: Dir| {
            live.iter()
                .filter(|x| x.dir == d)
                .map(|x| x.bytes.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let done = end_at.is_some_and(|e| now >= e)
            || moved(Dir::Up) >= want_bytes
            || moved(Dir::Down) >= want_bytes;
        if done || signal::stop_requested() || now >= limit {
            return Ok(intervals);
        }
        if let Some(e) = l.poll()? {
            bail!("iperf3 server sent {e:?} while the test ran");
        }
    }
}

/// Our results document: the process's CPU share (`cpu`: total, user, system) and each
/// stream's bytes and retransmits at `t_end`.
fn our_results(
    spec: &TcpSpec,
    live: &[Arc<stream::Live>],
    cpu: (f64, f64, f64),
    t_end: f64,
) -> Results {
    let (total, user, system) = cpu;
    Results {
        cpu_util_total: total,
        cpu_util_user: user,
        cpu_util_system: system,
        sender_has_retransmits: if spec.mode == Mode::Reverse { -1 } else { 1 },
        congestion_used: live.first().and_then(|x| x.figures()).map(|f| f.congestion),
        streams: live
            .iter()
            .map(|x| StreamResult {
                id: x.id as i64,
                bytes: x.bytes.load(Ordering::Relaxed),
                retransmits: match (x.dir, x.figures()) {
                    (Dir::Up, Some(f)) => f.retransmits as i64,
                    _ => -1,
                },
                end_time: t_end,
                ..StreamResult::default()
            })
            .collect(),
        server_output_text: None,
    }
}

/// netcore's report of the test: our streams' ends joined with the server's figures.
fn client_report(
    opts: &ClientOptions,
    cookie: &Cookie,
    server: &Results,
    ends: Vec<StreamEnd>,
    cpu: CpuUsage,
    intervals: Vec<TcpInterval>,
) -> TcpReport {
    let server_ends: Vec<StreamEnd> = ends
        .iter()
        .map(|e| {
            let s = server.streams.iter().find(|s| s.id == e.id as i64);
            StreamEnd {
                id: e.id,
                dir: e.dir,
                bytes: s.map_or(0, |s| s.bytes),
                elapsed_s: s.map_or(0.0, |s| s.end_time - s.start_time),
                tcp: None,
                zerocopy: None,
                buffers: None,
            }
        })
        .collect();
    let streams = TcpReport::join_streams(&ends, &server_ends);
    TcpReport {
        schema: crate::flow::tcp_engine::report::SCHEMA.into(),
        meta: crate::stats::meta::Meta::gather(),
        role: "client".into(),
        test_id: format!("iperf3:{}", cookie.as_str()),
        target: format!("iperf3://{}", opts.server),
        settings: opts.spec.clone(),
        sum: TcpReport::sums(&streams),
        streams,
        cpu: CpuSides {
            client: cpu,
            server: CpuUsage {
                pct_core: server.cpu_util_total,
                ..CpuUsage::default()
            },
        },
        interrupted: signal::stop_requested(),
        intervals,
        buffers: BufferSides::of(&ends, &[]),
    }
}

/// The server's results document as lines, labelled as the server's own figures.
pub(crate) fn server_lines(r: &Results, udp: bool) -> String {
    let mut s = String::from("iperf3 server's own figures (its results document, as returned):\n");
    for x in &r.streams {
        let more = if udp {
            format!(
                "packets {}, errors {}, jitter {:.3} ms",
                x.packets,
                x.errors,
                x.jitter * 1e3
            )
        } else {
            format!("retransmits {}", x.retransmits)
        };
        s.push_str(&format!(
            "  stream id {:>3}: {:>14} bytes, {:>6.3} s, {more}\n",
            x.id,
            x.bytes,
            x.end_time - x.start_time,
        ));
    }
    s.push_str(&format!(
        "  cpu {:.1} % (user {:.1} %, system {:.1} %), sender_has_retransmits {}{}\n",
        r.cpu_util_total,
        r.cpu_util_user,
        r.cpu_util_system,
        r.sender_has_retransmits,
        r.congestion_used
            .as_deref()
            .map(|c| format!(", congestion {c}"))
            .unwrap_or_default()
    ));
    s
}

/// What `blast --to iperf3://HOST` (UDP) asks of an iperf3 server.
#[derive(Debug, Clone)]
pub(crate) struct UdpClientOptions {
    pub server: SocketAddr,
    /// Streams per direction (`-P`).
    pub streams: u16,
    /// Forward (netcore sends), reverse (`-R`: the server sends) or both (`--bidir`).
    pub mode: Mode,
    /// Payload bytes per datagram (iperf3's header included).
    pub len: usize,
    /// Datagrams (split over the streams of a direction) or time.
    pub plan: Plan,
    /// Bits per second over all streams of a direction; None: unpaced (netcore's side), and
    /// iperf3's `-b 0` (unlimited) for the server's.
    pub rate_bps: Option<u64>,
    /// UDP GSO on netcore's sending streams where the kernel takes it.
    pub gso: bool,
    pub cpus: Vec<usize>,
}

/// netcore's report of the test and the server's results document as iperf3 returned it.
#[derive(Debug)]
pub struct UdpOutcome {
    pub report: Iperf3UdpReport,
    pub server: Results,
    pub elapsed_s: f64,
}

/// Connects stream `i` to the server and does iperf3's UDP handshake: our word, its answer.
fn udp_stream(server: SocketAddr, i: usize, receive: bool) -> Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let s = UdpSocket::bind(local)?;
    s.connect(server)?;
    let _ = sockopt::size_buffer(&s, 4 << 20, receive);
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.send(&word(CONNECT_MSG))?;
    let mut b = [0u8; 16];
    let k = s
        .recv(&mut b)
        .with_context(|| format!("iperf3 server did not answer UDP stream {}", i + 1))?;
    if !matches!(
        read_word(&b[..k]),
        Some(CONNECT_REPLY | LEGACY_CONNECT_REPLY)
    ) {
        bail!(
            "iperf3 server answered UDP stream {} with {:?}",
            i + 1,
            &b[..k]
        );
    }
    Ok(s)
}

/// The parameter document for a UDP test of `n` streams a direction.
fn udp_params_of(opts: &UdpClientOptions, n: usize) -> Params {
    let (time, blocks) = match opts.plan {
        Plan::TimeNs(ns) => (ns.div_ceil(1_000_000_000).max(1), 0),
        Plan::Count(c) => (0, c),
    };
    Params {
        udp: true,
        time,
        blocks,
        parallel: n as u32,
        reverse: opts.mode == Mode::Reverse,
        bidirectional: opts.mode == Mode::Bidir,
        len: opts.len as u32,
        bandwidth: opts.rate_bps.map_or(0, |r| split_bps(r, n)),
        client_version: Some(format!("netcore {}", env!("CARGO_PKG_VERSION"))),
        ..Params::default()
    }
}

/// Waits for the end of a UDP test started at `t0`, as iperf3's client judges it: the time,
/// or the count sent (our senders) or received (the server's streams; 1 s without a new
/// datagram ends a test whose last datagrams were lost), or a signal; the server must stay
/// quiet meanwhile.
fn until_udp_end(l: &mut Link, st: &Streams, opts: &UdpClientOptions, t0: Instant) -> Result<()> {
    let end_at = match opts.plan {
        Plan::TimeNs(ns) => t0 + Duration::from_nanos(ns),
        // A count has no time; an hour bounds it.
        Plan::Count(_) => t0 + Duration::from_secs(3600),
    };
    let (mut last, mut at) = (0, Instant::now());
    loop {
        let now = Instant::now();
        let got = st.received();
        if got != last {
            (last, at) = (got, now);
        }
        let counted = match opts.plan {
            Plan::Count(c) => {
                let sending = opts.mode != Mode::Reverse;
                let receiving = opts.mode != Mode::Forward;
                (sending && st.senders_done())
                    || (receiving
                        && (got >= c || (got > 0 && at.elapsed() > Duration::from_secs(1))))
            }
            Plan::TimeNs(_) => false,
        };
        if now >= end_at || counted || signal::stop_requested() {
            return Ok(());
        }
        if let Some(e) = l.poll()? {
            bail!("iperf3 server sent {e:?} while the test ran");
        }
    }
}

/// Runs one UDP test against an iperf3 server: netcore sends on its streams (forward, and the
/// first half with `--bidir`) and receives on the server's, each datagram through its tracker.
pub(crate) fn run_udp(opts: &UdpClientOptions) -> Result<UdpOutcome> {
    let n = opts.streams.max(1) as usize;
    if opts.len < Header::len(false) || opts.len > 65_507 {
        bail!("--len {} out of range for iperf3 UDP: 16..=65507", opts.len);
    }
    let (mut l, cookie) = Link::open(opts.server)?;
    l.expect(Event::ParamExchange, "PARAM_EXCHANGE")?;
    l.cc.params(&udp_params_of(opts, n), &mut l.out);
    l.flush()?;
    l.expect(Event::CreateStreams, "CREATE_STREAMS")?;
    let dirs = opts.mode.directions(n);
    let mut st = Streams::new(false);
    for (i, d) in dirs.iter().enumerate() {
        let receive = *d == Dir::Down;
        st.add(udp_stream(opts.server, i, receive)?, receive)?;
    }
    l.expect(Event::TestStart, "TEST_START")?;
    l.expect(Event::TestRunning, "TEST_RUNNING")?;
    let pps = opts
        .rate_bps
        .map(|r| split_rate(Rate::BitsPerSec(r as f64), n).packets_per_sec(opts.len));
    st.start_senders(&|k, n| TxPlan {
        len: opts.len,
        counters64: false,
        count: match opts.plan {
            Plan::Count(c) => split_count(c, k, n),
            Plan::TimeNs(_) => u64::MAX,
        },
        pps,
        gso: opts.gso,
        cpu: cpu_for(&opts.cpus, k),
    })?;
    let t0 = Instant::now();
    until_udp_end(&mut l, &st, opts, t0)?;
    st.stop_senders()?;
    let elapsed_s = t0.elapsed().as_secs_f64();
    l.end()?;
    let ours = Results {
        sender_has_retransmits: if opts.mode == Mode::Reverse { -1 } else { 0 },
        streams: st.results(opts.len, elapsed_s),
        ..Results::default()
    };
    let server = l.exchange(&ours)?;
    let theirs = |id: i64| server.streams.iter().find(|s| s.id == id).cloned();
    let sent_of = |id: i64| theirs(id).map(|s| s.packets.max(0) as u64);
    st.await_stragglers(&sent_of);
    let gso = st.gso();
    let (rows, sent) = st.finish(opts.len, &sent_of, &theirs)?;
    let report = Iperf3UdpReport {
        schema: SCHEMA.into(),
        meta: crate::stats::meta::Meta::gather(),
        role: "client".into(),
        peer: format!("{} ({})", opts.server, cookie.as_str()),
        client_version: None,
        len: opts.len as u32,
        counters_64bit: false,
        mode: opts.mode.name().into(),
        gso,
        sum: sum_of(&rows),
        streams: rows,
        sent_sum: sent_sum_of(&sent),
        sent,
        interrupted: signal::stop_requested(),
    };
    Ok(UdpOutcome {
        report,
        server,
        elapsed_s,
    })
}
