//! The side that serves a TCP test (`recv`, and `blast`'s embedded receiver). The UDP
//! receiver's control thread reads the Hello and the Setup and hands a TCP test here, on a
//! thread of its own, with the control connection: data connections arrive on the receiver's
//! listener, name their test and stream in a preamble, and the control thread passes this
//! test's ones on over a channel (several tests may run at once).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver as Rx;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use super::spec::{decode_preamble, Preamble, PREAMBLE_LEN};
use crate::flow::access::TestSecret;
use crate::flow::control::{encode, Conn, Msg, Plan};
use crate::flow::cpu::CpuUsage;
use crate::flow::payload::{StreamEnd, TcpInterval, TcpSpec};
use crate::flow::rxwait::RxWait;
use crate::flow::streams::Dir;
use crate::flow::tcp_engine::report::{
    over_rate, BufferSides, CpuSides, IntervalMeter, TcpEvent, TcpReport, SCHEMA,
};
use crate::flow::tcp_engine::stream::{
    self, bytes_moved, configure, job_for, sample, DataConn, Stops,
};
use crate::sys::sockopt;

/// The receiver's surroundings a TCP test runs in.
pub(crate) struct ServerCtx {
    /// This test's data connections with their preambles, from the receiver's listener.
    pub conns: Rx<(TcpStream, Vec<u8>)>,
    pub interval: Duration,
    /// The CPU for every data connection thread, if pinned.
    pub cpu: Option<usize>,
    /// How the readers wait for data (`recv --block`/`--spin`).
    pub wait: RxWait,
    /// Every data connection on a thread of its own (`recv --thread-per-stream`), whatever
    /// the client asks.
    pub thread_per_stream: bool,
    /// The address the report names.
    pub target: String,
    /// Set to end the test now (reported interrupted).
    pub interrupt: Arc<AtomicBool>,
    /// The longest the test may run (`--max-duration`): past it (and a grace), it is cut.
    pub max_time: Duration,
    /// The fastest the client may send, bits a second (`--max-rate`): a check over it by
    /// more than a quarter cuts the test; this side's writers are paced at most at it.
    pub max_rate_bps: Option<f64>,
    /// How often `--max-rate` is checked: the receiver's own `--interval`, whatever interval
    /// the test asked for (a client's 60 s intervals must not let it burst for 60 s).
    pub limit_every: Duration,
    /// A keyed test's secret: each data connection's preamble must carry its token.
    pub secret: Option<TestSecret>,
}

/// How long the client of a test interrupted here has to send its account (`TcpDone`).
const CUT_GRACE: Duration = Duration::from_secs(3);
/// How long the client has to open every data connection after Ready.
const CONNECT_WINDOW: Duration = Duration::from_secs(10);

fn busy(mut s: TcpStream) {
    let _ = s.write_all(&encode(&Msg::Error {
        message: "this test has all its data connections".into(),
    }));
}

/// The next data connection waiting on a (non-blocking) listener of the test's own and its
/// first `head` bytes, read within 5 s; None when nothing waits or the connection sent less.
fn next_data_conn(listener: &TcpListener, head: usize) -> Option<(TcpStream, Vec<u8>)> {
    let (s, _) = listener.accept().ok()?;
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut p = vec![0u8; head];
    (&s).read_exact(&mut p).ok()?;
    Some((s, p))
}

/// A data connection's stream id if its preamble belongs to `test_id` (of `n` streams, and
/// with a key, proves it with its token); anything else is told the receiver is busy.
fn admit(
    s: TcpStream,
    p: &[u8],
    test_id: u64,
    n: usize,
    secret: Option<&TestSecret>,
) -> Option<(u32, TcpStream)> {
    let proved = |p: &Preamble| secret.is_none_or(|k| k.admits(p.stream, &p.token));
    match decode_preamble(p) {
        Some(p) if p.test_id == test_id && (p.stream as usize) < n && proved(&p) => {
            Some((p.stream, s))
        }
        _ => {
            busy(s);
            None
        }
    }
}

/// With `--window`, this test's own data listener on the control connection's local address,
/// its buffers sized before any handshake. The receiver's shared listener cannot: a receive
/// buffer shrunk after the handshake leaves the window the SYN announced, and the sender
/// stalls against it (measured on loopback: 2.5 Mbit/s at 16K, 0.5 Mbit/s at 4K, against
/// 2.7 Gbit/s and 0.5 Gbit/s with the buffers set first). Ready names its port; a client
/// that ignores it still reaches the shared listener.
fn data_listener(c: &Conn, spec: &TcpSpec) -> Result<Option<TcpListener>> {
    let Some(w) = spec.window else {
        return Ok(None);
    };
    let ip = c.stream().local_addr()?.ip().to_canonical();
    let addr = std::net::SocketAddr::new(ip, 0);
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sockopt::size_buffer(&s, w as usize, true).context("--window: SO_RCVBUF")?;
    sockopt::size_buffer(&s, w as usize, false).context("--window: SO_SNDBUF")?;
    s.bind(&addr.into())
        .with_context(|| format!("cannot open a data listener on {ip}"))?;
    s.listen(64)?;
    s.set_nonblocking(true)?;
    Ok(Some(s.into()))
}

/// Takes this test's data connections (from `own`, this test's listener, or from the
/// receiver's shared one), within [`CONNECT_WINDOW`]; each configured and given its job.
fn accept_conns(
    c: &Conn,
    ctx: &ServerCtx,
    own: Option<&TcpListener>,
    test_id: u64,
    plan: Plan,
    spec: &TcpSpec,
) -> Result<Vec<DataConn>, String> {
    let dirs = spec.directions();
    // This side's writers (reverse, bidir) send at most at --max-rate.
    let mut paced = spec.clone();
    if let Some(max) = ctx.max_rate_bps {
        let max = max as u64;
        paced.rate_bps = Some(paced.rate_bps.map_or(max, |r| r.min(max)).max(1));
    }
    let mut slots: Vec<Option<DataConn>> = (0..dirs.len()).map(|_| None).collect();
    let t = Instant::now();
    while slots.iter().any(Option::is_none) {
        if t.elapsed() > CONNECT_WINDOW || ctx.interrupt.load(Ordering::Relaxed) {
            let n = slots.iter().filter(|s| s.is_some()).count();
            return Err(format!(
                "only {n} of {} data connections arrived",
                dirs.len()
            ));
        }
        if c.peer_closed() {
            return Err(
                "the client closed its control connection before its data connections arrived"
                    .into(),
            );
        }
        let next = match own.and_then(|l| next_data_conn(l, PREAMBLE_LEN)) {
            Some(x) => Some(x),
            None if own.is_some() => ctx.conns.recv_timeout(Duration::from_millis(2)).ok(),
            None => ctx.conns.recv_timeout(Duration::from_millis(20)).ok(),
        };
        let Some((s, p)) = next else {
            continue;
        };
        let Some((id, sock)) = admit(s, &p, test_id, dirs.len(), ctx.secret.as_ref()) else {
            continue;
        };
        let i = id as usize;
        if slots[i].is_some() {
            continue;
        }
        configure(&sock, spec).map_err(|e| format!("{e:#}"))?;
        let mut job = job_for(&paced, plan, dirs[i], i, false, ctx.cpu);
        job.wait = ctx.wait.for_window(spec.window);
        slots[i] = Some(DataConn {
            sock,
            id,
            dir: dirs[i],
            job,
        });
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Serves one TCP test on an accepted control connection whose Hello and Setup were read.
pub(crate) fn run_test(
    c: &mut Conn,
    ctx: ServerCtx,
    test_id: u64,
    plan: Plan,
    spec: TcpSpec,
    on_event: &mut dyn FnMut(TcpEvent),
) -> Result<()> {
    // The writers stop at the client's TcpDone too: by then it reads no more. A signal does
    // not stop them: the receiver sets `ctx.interrupt` when the test is to be cut (on `recv`
    // a first signal lets it run to its end), and `check_cut` stops them then.
    let stops = Stops {
        write: Arc::new(AtomicBool::new(false)),
        read: Arc::new(AtomicBool::new(false)),
        on_signal: false,
    };
    let running = start_streams(c, &ctx, test_id, plan, &spec, &stops, on_event)?;
    let mut serving = Serving::new(c, ctx, plan, spec, stops, running, on_event);
    serving.until_finished();
    serving.finish(test_id)
}

/// Sends the client an Error naming `why` and fails with it.
fn refuse<T>(c: &mut Conn, why: String) -> Result<T> {
    let _ = c.send(&Msg::Error {
        message: why.clone(),
    });
    bail!(why)
}

/// Checks the spec, answers Ready, takes the test's data connections and starts their
/// threads; a test that cannot start is refused with the reason.
fn start_streams(
    c: &mut Conn,
    ctx: &ServerCtx,
    test_id: u64,
    plan: Plan,
    spec: &TcpSpec,
    stops: &Stops,
    on_event: &mut dyn FnMut(TcpEvent),
) -> Result<stream::Running> {
    if let Err(why) = spec.check() {
        return refuse(c, why);
    }
    let own = match data_listener(c, spec) {
        Ok(l) => l,
        Err(e) => return refuse(c, format!("{e:#}")),
    };
    c.send(&Msg::Ready {
        rcvbuf: 0,
        gro: false,
        port: own
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port()),
    })?;
    on_event(TcpEvent::Started(plan, Box::new(spec.clone())));
    let slots = match accept_conns(c, ctx, own.as_ref(), test_id, plan, spec) {
        Ok(s) => s,
        Err(why) => return refuse(c, why),
    };
    drop(own);
    stream::start(
        slots,
        stops,
        spec.thread_per_stream || ctx.thread_per_stream,
    )
}

/// A TCP test being served: its streams' threads, the control connection, the intervals
/// sampled so far and how the test is ending (the client's TcpDone, a failure or a cut).
struct Serving<'a> {
    c: &'a mut Conn,
    ctx: ServerCtx,
    spec: TcpSpec,
    stops: Stops,
    running: stream::Running,
    on_event: &'a mut dyn FnMut(TcpEvent),
    /// How long the client may stay silent before the test is cut.
    silence: Duration,
    t0: Instant,
    meter: IntervalMeter,
    intervals: Vec<TcpInterval>,
    /// When the next interval is due.
    next: Instant,
    /// `--max-rate`'s own samples, every `ctx.limit_every`, and when the next is due.
    limit_meter: IntervalMeter,
    limit_next: Instant,
    /// The client's TcpDone: its streams' ends and CPU figures.
    done: Option<(Vec<StreamEnd>, CpuUsage)>,
    done_at: Option<Instant>,
    failure: Option<String>,
    /// When this side was interrupted.
    cut_at: Option<Instant>,
    /// The client says it was interrupted.
    client_cut: bool,
}

impl<'a> Serving<'a> {
    fn new(
        c: &'a mut Conn,
        ctx: ServerCtx,
        plan: Plan,
        spec: TcpSpec,
        stops: Stops,
        running: stream::Running,
        on_event: &'a mut dyn FnMut(TcpEvent),
    ) -> Serving<'a> {
        let silence = match plan {
            Plan::TimeNs(ns) => Duration::from_nanos(ns) + Duration::from_secs(30),
            Plan::Count(_) => Duration::from_secs(30),
        };
        let t0 = Instant::now();
        let next = t0 + ctx.interval;
        let limit_next = t0 + ctx.limit_every;
        Serving {
            c,
            ctx,
            spec,
            stops,
            running,
            on_event,
            silence,
            t0,
            meter: IntervalMeter::default(),
            intervals: Vec::new(),
            next,
            limit_meter: IntervalMeter::default(),
            limit_next,
            done: None,
            done_at: None,
            failure: None,
            cut_at: None,
            client_cut: false,
        }
    }

    /// Stops the readers and the writers.
    fn stop_all(&self) {
        self.stops.read.store(true, Ordering::Relaxed);
        self.stops.write.store(true, Ordering::Relaxed);
    }

    /// The test is over but for its threads: the client's TcpDone came, or it failed.
    fn ending(&self) -> bool {
        self.done.is_some() || self.failure.is_some()
    }

    /// Ends the test as failed: the client is told why, the streams stop.
    fn fail(&mut self, why: String) {
        let _ = self.c.send(&Msg::Error {
            message: why.clone(),
        });
        self.failure = Some(why);
        self.stop_all();
    }

    /// Samples intervals, enforces the limits and reads the control connection until the
    /// threads have finished and the test ended.
    fn until_finished(&mut self) {
        loop {
            let finished = self.running.is_finished();
            if finished && self.ending() {
                break;
            }
            if Instant::now() >= self.next {
                self.sample_interval();
            }
            if self.ctx.max_rate_bps.is_some() && Instant::now() >= self.limit_next {
                self.check_rate();
            }
            while let Ok((s, _)) = self.ctx.conns.try_recv() {
                busy(s);
            }
            self.enforce_max_time();
            self.check_cut(finished);
            if self.ending() {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            self.read_control();
        }
    }

    /// Samples an interval: to the client (`--intervals`), to the caller.
    fn sample_interval(&mut self) {
        let t = self.t0.elapsed().as_secs_f64();
        let row = sample(&mut self.meter, t, &self.running.live, "server");
        if self.spec.intervals && !self.ending() {
            // A lost control connection shows at the next receive.
            let _ = self.c.send(&Msg::TcpInterval {
                row: row.clone().only(Dir::Down),
            });
        }
        (self.on_event)(TcpEvent::Interval(row.clone()));
        self.intervals.push(row);
        self.next += self.ctx.interval;
    }

    /// Checks the rate since the last check against `--max-rate`, on the receiver's cadence.
    fn check_rate(&mut self) {
        let t = self.t0.elapsed().as_secs_f64();
        let row = sample(&mut self.limit_meter, t, &self.running.live, "server");
        if !self.ending() {
            if let Some(why) = over_rate(&row, self.ctx.max_rate_bps) {
                self.fail(why);
            }
        }
        self.limit_next += self.ctx.limit_every;
    }

    /// Cuts a test that runs past `--max-duration` (and a grace).
    fn enforce_max_time(&mut self) {
        if !self.ending()
            && self.t0.elapsed() > self.ctx.max_time + crate::flow::access::OVERRUN_GRACE
        {
            self.fail(format!(
                "cut: the client kept sending past this receiver's limit of {} s (--max-duration)",
                self.ctx.max_time.as_secs_f64()
            ));
        }
    }

    /// Stops the streams when interrupted here (the client has a grace to send its account:
    /// it is told by its streams' ends, so both reports come out), and cuts a test whose
    /// account does not come, whose threads do not end after it, or whose client is silent.
    fn check_cut(&mut self, finished: bool) {
        if self.ctx.interrupt.load(Ordering::Relaxed) && self.cut_at.is_none() {
            self.cut_at = Some(Instant::now());
            self.stop_all();
        }
        let done = self.done.is_some();
        let cut = self
            .cut_at
            .is_some_and(|c| c.elapsed() > CUT_GRACE && !done)
            || self
                .done_at
                .is_some_and(|d| d.elapsed() > Duration::from_secs(10))
            || (self.failure.is_none() && !done && self.t0.elapsed() > self.silence);
        if cut && self.failure.is_none() && (!done || !finished) {
            self.stop_all();
            if !done {
                self.failure = Some("interrupted".into());
            }
        }
    }

    /// Waits up to 20 ms for the client's TcpDone.
    fn read_control(&mut self) {
        match self
            .c
            .recv_until(Instant::now() + Duration::from_millis(20))
        {
            Ok(None) => {}
            Ok(Some(Msg::TcpDone {
                streams,
                cpu,
                interrupted,
            })) => {
                self.done = Some((streams, cpu));
                self.done_at = Some(Instant::now());
                self.client_cut = interrupted;
                self.stops.write.store(true, Ordering::Relaxed);
                if interrupted {
                    self.stop_all();
                }
            }
            Ok(Some(other)) => {
                self.failure = Some(format!("unexpected control message {other:?}"));
                self.stop_all();
            }
            Err(e) => {
                self.failure = Some(format!("control channel lost before TcpDone: {e:#}"));
                self.stop_all();
            }
        }
    }

    /// Joins the threads, sends this side's TcpReport (unless the test failed) and gives the
    /// caller the joined report.
    fn finish(self, test_id: u64) -> Result<()> {
        let (ends, cpu, interrupted) = self.running.join()?;
        let interrupted = interrupted || self.client_cut || self.cut_at.is_some();
        let cpu = cpu.finish(bytes_moved(&ends));
        if self.failure.is_none() {
            self.c.send(&Msg::TcpReport {
                streams: ends.clone(),
                cpu,
                interrupted,
            })?;
        }
        let (client, client_cpu) = self.done.unwrap_or_default();
        let buffers = BufferSides::of(&client, &ends);
        let streams = TcpReport::join_streams(&client, &ends);
        (self.on_event)(TcpEvent::Finished(Box::new(TcpReport {
            schema: SCHEMA.into(),
            meta: crate::stats::meta::Meta::gather(),
            role: "server".into(),
            test_id: format!("{test_id:016x}"),
            target: self.ctx.target,
            settings: self.spec,
            sum: TcpReport::sums(&streams),
            streams,
            cpu: CpuSides {
                client: client_cpu,
                server: cpu,
            },
            interrupted: interrupted || self.failure.is_some(),
            intervals: self.intervals,
            buffers,
        })));
        match self.failure {
            Some(f) => bail!(f),
            None => Ok(()),
        }
    }
}
