//! `netcore blast --to iperf3://HOST[:PORT] --proto tcp`: netcore as the client of a stock
//! `iperf3 -s`, around the sans-IO `ClientCtl`. The data connections open with the cookie and
//! run on `flow::tcp::stream`'s threads (the same write and read loops as a netcore test);
//! the server's results document comes back as iperf3 returns it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::ctl::{cpu_util, STEP};
use crate::flow::control::Plan;
use crate::flow::cpu::CpuUsage;
use crate::flow::pacer::Pacer;
use crate::flow::tcp::client::{cpu_for, job_for, sample};
use crate::flow::tcp::report::{CpuSides, IntervalMeter, StreamEnd, TcpInterval, TcpReport};
use crate::flow::tcp::spec::{Dir, Mode, TcpSpec};
use crate::flow::tcp::stream::{self, transient};
use crate::interop::iperf3::client::{ClientCtl, Event};
use crate::interop::iperf3::msg::{stream_id, COOKIE_LEN};
use crate::interop::iperf3::udp::{read_word, word, Header};
use crate::interop::iperf3::udp::{CONNECT_MSG, CONNECT_REPLY, LEGACY_CONNECT_REPLY};
use crate::interop::iperf3::{Cookie, Params, Results, StreamResult};
use crate::sys::cpu::process_times;
use crate::sys::mmsg::SendBatch;
use crate::sys::signal;
use crate::sys::{realtime_ns, sockopt};

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
pub fn params_of(spec: &TcpSpec, plan: Plan) -> Params {
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
            .map_or(0, |r| (r / spec.streams.max(1) as u64).max(1)),
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
    let wstop = Arc::new(AtomicBool::new(false));
    let rstop = Arc::new(AtomicBool::new(false));
    let mut live = Vec::new();
    let mut handles = Vec::new();
    for (i, s) in socks.into_iter().enumerate() {
        let job = job_for(spec, opts.plan, dirs[i], i, true, cpu_for(&opts.cpus, i));
        let stop = if job.write { &wstop } else { &rstop }.clone();
        let (lv, h) = stream::spawn(s, stream_id(i) as u32, dirs[i], job, stop)?;
        live.push(lv);
        handles.push(h);
    }
    let cpu0 = process_times();
    let t0 = Instant::now();
    let (end_at, want_bytes) = match opts.plan {
        Plan::TimeNs(ns) => (Some(t0 + Duration::from_nanos(ns)), u64::MAX),
        Plan::Count(n) => (None, n.saturating_mul(spec.len as u64)),
    };
    let limit = t0 + end_at.map_or(Duration::from_secs(3600), |e| e - t0) + Duration::from_secs(30);
    let mut meter = IntervalMeter::default();
    let mut intervals = Vec::new();
    let mut next = t0 + opts.interval;
    // The end: the planned time, or the planned bytes moved one way (as iperf3 judges -n).
    loop {
        let now = Instant::now();
        if now >= next {
            let row = sample(&mut meter, t0.elapsed().as_secs_f64(), &live, "client");
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
            break;
        }
        if let Some(e) = l.poll()? {
            bail!("iperf3 server sent {e:?} while the test ran");
        }
    }
    let t_end = t0.elapsed().as_secs_f64();
    wstop.store(true, Ordering::Relaxed);
    let cpu1 = process_times();
    // Our writers' counts are final once they have stopped.
    let wait = Instant::now() + STEP;
    while Instant::now() < wait
        && handles
            .iter()
            .zip(&dirs)
            .any(|(h, d)| *d == Dir::Up && !h.is_finished())
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    l.end()?;
    let (total, user, system) = cpu_util(cpu0, cpu1, t_end);
    let ours = Results {
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
    };
    let server = l.exchange(&ours)?;
    // The server has closed its streams: our readers see EOF.
    let wait = Instant::now() + STEP;
    while Instant::now() < wait && !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    rstop.store(true, Ordering::Relaxed);
    let (ends, cpu, interrupted) = stream::join_all(handles)?;
    let cpu = cpu.finish(stream::bytes_moved(&ends));
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
            }
        })
        .collect();
    let streams = TcpReport::join_streams(&ends, &server_ends);
    let report = TcpReport {
        schema: crate::flow::tcp::report::SCHEMA.into(),
        role: "client".into(),
        test_id: format!("iperf3:{}", cookie.as_str()),
        target: format!("iperf3://{}", opts.server),
        settings: spec.clone(),
        sum: TcpReport::sums(&streams),
        streams,
        cpu: CpuSides {
            client: cpu,
            server: CpuUsage {
                pct_core: server.cpu_util_total,
                ..CpuUsage::default()
            },
        },
        interrupted: interrupted || signal::stop_requested(),
        intervals,
    };
    Ok(ClientOutcome { report, server })
}

/// The server's results document as lines, labelled as the server's own figures.
pub fn server_lines(r: &Results) -> String {
    let mut s = String::from("iperf3 server's own figures (its results document, as returned):\n");
    for x in &r.streams {
        s.push_str(&format!(
            "  stream id {:>3}: {:>14} bytes, {:>6.3} s, retransmits {}\n",
            x.id,
            x.bytes,
            x.end_time - x.start_time,
            x.retransmits
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
pub struct UdpClientOptions {
    pub server: SocketAddr,
    pub streams: u16,
    /// Payload bytes per datagram (iperf3's header included).
    pub len: usize,
    /// Datagrams (split over the streams) or time.
    pub plan: Plan,
    /// Bits per second over all streams; None: as fast as the kernel takes them.
    pub rate_bps: Option<u64>,
    pub cpus: Vec<usize>,
}

/// What each stream sent, and the server's results document.
#[derive(Debug)]
pub struct UdpOutcome {
    /// Per stream (iperf3 id order): datagrams and bytes the kernel took.
    pub sent: Vec<(i64, u64, u64)>,
    pub elapsed_s: f64,
    pub server: Results,
}

/// Sends `len`-byte datagrams with iperf3's header on a connected socket, `sendmmsg` batches
/// of up to 64 paced by `flow::pacer`, until `count` datagrams (or `stop`); returns the
/// datagrams the kernel took (numbered densely from iperf3's 1).
fn blaster(
    sock: UdpSocket,
    len: usize,
    count: u64,
    pps: Option<f64>,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> u64 {
    let mut batch = SendBatch::new(64, len);
    for i in 0..batch.capacity() {
        batch.set_len(i, len);
    }
    let mut pacer = pps.map(|r| Pacer::new(r.max(1e-3), 64, realtime_ns()));
    let mut seq0 = 0u64;
    while seq0 < count && !stop.load(Ordering::Relaxed) && !signal::stop_requested() {
        let now = realtime_ns();
        let mut n = (count - seq0).min(batch.capacity() as u64);
        if let Some(p) = pacer.as_mut() {
            n = p.allowance(now, n);
            if n == 0 {
                let wait = p.wait_ns(now, 1).min(50_000_000);
                std::thread::sleep(Duration::from_nanos(wait));
                continue;
            }
        }
        for i in 0..n as usize {
            Header::at(seq0 + i as u64, now).write(batch.slot_mut(i), false);
        }
        match batch.send(&sock, 0, n as usize) {
            Ok(k) => {
                seq0 += k as u64;
                if let Some(p) = pacer.as_mut() {
                    p.consume(k as u64);
                }
                sent.store(seq0, Ordering::Relaxed);
            }
            // ENOBUFS, ECONNREFUSED from a queued ICMP error: try again.
            Err(_) => std::thread::sleep(Duration::from_micros(50)),
        }
    }
    seq0
}

/// Runs one UDP test against an iperf3 server (the client sends).
pub fn run_udp(opts: &UdpClientOptions) -> Result<UdpOutcome> {
    let n = opts.streams.max(1) as usize;
    if opts.len < Header::len(false) || opts.len > 65_507 {
        bail!("--len {} out of range for iperf3 UDP: 16..=65507", opts.len);
    }
    let (mut l, _) = Link::open(opts.server)?;
    let (time, blocks) = match opts.plan {
        Plan::TimeNs(ns) => (ns.div_ceil(1_000_000_000).max(1), 0),
        Plan::Count(c) => (0, c),
    };
    l.expect(Event::ParamExchange, "PARAM_EXCHANGE")?;
    let p = Params {
        udp: true,
        time,
        blocks,
        parallel: n as u32,
        len: opts.len as u32,
        bandwidth: opts.rate_bps.map_or(0, |r| (r / n as u64).max(1)),
        client_version: Some(format!("netcore {}", env!("CARGO_PKG_VERSION"))),
        ..Params::default()
    };
    l.cc.params(&p, &mut l.out);
    l.flush()?;
    l.expect(Event::CreateStreams, "CREATE_STREAMS")?;
    let mut socks = Vec::new();
    for i in 0..n {
        let local: SocketAddr = if opts.server.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let s = UdpSocket::bind(local)?;
        s.connect(opts.server)?;
        let _ = sockopt::size_buffer(&s, 4 << 20, false);
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
        socks.push(s);
    }
    l.expect(Event::TestStart, "TEST_START")?;
    l.expect(Event::TestRunning, "TEST_RUNNING")?;
    let stop = Arc::new(AtomicBool::new(false));
    let pps = opts
        .rate_bps
        .map(|r| r as f64 / n as f64 / (opts.len as f64 * 8.0));
    let mut handles = Vec::new();
    let mut counters = Vec::new();
    for (i, s) in socks.into_iter().enumerate() {
        let count = match opts.plan {
            Plan::Count(_) => match stream::stream_plan(opts.plan, i, n) {
                Plan::Count(c) => c,
                _ => 0,
            },
            Plan::TimeNs(_) => u64::MAX,
        };
        let (stop, sent) = (stop.clone(), Arc::new(AtomicU64::new(0)));
        counters.push(sent.clone());
        let (len, cpu) = (opts.len, cpu_for(&opts.cpus, i));
        handles.push(
            std::thread::Builder::new()
                .name(format!("netcore-iperf3-tx-{i}"))
                .spawn(move || {
                    if let Some(c) = cpu {
                        crate::sys::affinity::pin_current(c);
                    }
                    blaster(s, len, count, pps, &stop, &sent)
                })?,
        );
    }
    let t0 = Instant::now();
    let end_at = match opts.plan {
        Plan::TimeNs(ns) => t0 + Duration::from_nanos(ns),
        Plan::Count(_) => t0 + Duration::from_secs(3600),
    };
    while Instant::now() < end_at
        && !handles.iter().all(|h| h.is_finished())
        && !signal::stop_requested()
    {
        if let Some(e) = l.poll()? {
            bail!("iperf3 server sent {e:?} while the test ran");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let k = h
            .join()
            .map_err(|_| anyhow::anyhow!("a UDP sender thread panicked"))?;
        sent.push((stream_id(i), k, k * opts.len as u64));
    }
    let elapsed_s = t0.elapsed().as_secs_f64();
    l.end()?;
    let ours = Results {
        sender_has_retransmits: -1,
        streams: sent
            .iter()
            .map(|&(id, k, bytes)| StreamResult {
                id,
                bytes,
                retransmits: -1,
                packets: k as i64,
                end_time: elapsed_s,
                ..StreamResult::default()
            })
            .collect(),
        ..Results::default()
    };
    let server = l.exchange(&ours)?;
    Ok(UdpOutcome {
        sent,
        elapsed_s,
        server,
    })
}

/// A UDP test's figures: what netcore sent beside the server's own, labelled.
pub fn udp_lines(o: &UdpOutcome) -> String {
    let mut s = format!(
        "netcore UDP blast to an iperf3 server, {:.3} s: per stream what netcore sent, then the \
         iperf3 server's own figures (its results document, as returned)\n",
        o.elapsed_s
    );
    for &(id, k, bytes) in &o.sent {
        let r = o.server.streams.iter().find(|r| r.id == id);
        s.push_str(&format!(
            "  stream id {id:>3}: sent {k} datagrams, {bytes} bytes | server: {}\n",
            r.map_or("no figures".into(), |r| format!(
                "{} bytes, packets {}, lost {}, jitter {:.3} ms",
                r.bytes,
                r.packets,
                r.errors,
                r.jitter * 1e3
            ))
        ));
    }
    s
}
