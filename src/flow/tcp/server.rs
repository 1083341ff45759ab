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

use super::client::{job_for, sample};
use super::report::{BufferSides, CpuSides, IntervalMeter, TcpReport, SCHEMA};
use super::spec::{decode_preamble, Preamble, PREAMBLE_LEN};
use super::stream::{self, bytes_moved, configure, DataConn, Stops};
use crate::flow::access::TestSecret;
use crate::flow::control::{encode, Conn, Msg, Plan};
use crate::flow::cpu::CpuUsage;
use crate::flow::payload::{StreamEnd, TcpInterval, TcpSpec};
use crate::flow::rxwait::RxWait;
use crate::flow::streams::Dir;
use crate::sys::sockopt;
use crate::units::fmt_bits_per_sec;

/// What the server side of a TCP test reports as it runs.
#[derive(Debug)]
pub enum TcpEvent {
    /// The test was accepted (Ready sent): its plan and settings.
    Started(Plan, Box<TcpSpec>),
    Interval(TcpInterval),
    Finished(Box<TcpReport>),
}

/// The receiver's surroundings a TCP test runs in.
pub struct ServerCtx {
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
    /// The fastest the client may send, bits a second (`--max-rate`): an interval over it by
    /// more than a quarter cuts the test; this side's writers are paced at most at it.
    pub max_rate_bps: Option<f64>,
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

/// Why an interval of the client's streams is over `--max-rate` (`max`), if it is: over by
/// more than a quarter and by at least 64 KiB (a burst is not a rate).
pub fn over_rate(row: &TcpInterval, max: Option<f64>) -> Option<String> {
    let max = max?;
    let up: f64 = row
        .streams
        .iter()
        .filter(|s| s.dir == Dir::Up)
        .map(|s| s.bps)
        .sum();
    let bytes = up * (row.t - row.start) / 8.0;
    (up > max * 1.25 && bytes > 65536.0).then(|| {
        format!(
            "cut: the client sent at {}, over this receiver's limit of {} (--max-rate)",
            fmt_bits_per_sec(up),
            fmt_bits_per_sec(max)
        )
    })
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
pub fn run_test(
    c: &mut Conn,
    ctx: ServerCtx,
    test_id: u64,
    plan: Plan,
    spec: TcpSpec,
    on_event: &mut dyn FnMut(TcpEvent),
) -> Result<()> {
    let refuse = |c: &mut Conn, why: String| -> Result<()> {
        let _ = c.send(&Msg::Error {
            message: why.clone(),
        });
        bail!(why)
    };
    if let Err(why) = spec.check() {
        return refuse(c, why);
    }
    let own = match data_listener(c, &spec) {
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
    let slots = match accept_conns(c, &ctx, own.as_ref(), test_id, plan, &spec) {
        Ok(s) => s,
        Err(why) => return refuse(c, why),
    };
    drop(own);
    let stop = Arc::new(AtomicBool::new(false));
    // The writers stop at the client's TcpDone too: by then it reads no more.
    let stops = Stops {
        write: Arc::new(AtomicBool::new(false)),
        read: stop.clone(),
    };
    let running = stream::start(
        slots,
        &stops,
        spec.thread_per_stream || ctx.thread_per_stream,
    )?;
    let stop_all = || {
        stop.store(true, Ordering::Relaxed);
        stops.write.store(true, Ordering::Relaxed);
    };
    let live = running.live.clone();

    let silence = match plan {
        Plan::TimeNs(ns) => Duration::from_nanos(ns) + Duration::from_secs(30),
        Plan::Count(_) => Duration::from_secs(30),
    };
    let t0 = Instant::now();
    let mut meter = IntervalMeter::default();
    let mut intervals = Vec::new();
    let mut next = t0 + ctx.interval;
    let mut done: Option<(Vec<StreamEnd>, CpuUsage)> = None;
    let mut done_at = None;
    let mut failure: Option<String> = None;
    let mut cut_at: Option<Instant> = None;
    let mut client_cut = false;
    loop {
        let finished = running.is_finished();
        if finished && (done.is_some() || failure.is_some()) {
            break;
        }
        if Instant::now() >= next {
            let row = sample(&mut meter, t0.elapsed().as_secs_f64(), &live, "server");
            if spec.intervals && done.is_none() && failure.is_none() {
                // A lost control connection shows at the next receive.
                let _ = c.send(&Msg::TcpInterval {
                    row: row.clone().only(Dir::Down),
                });
            }
            on_event(TcpEvent::Interval(row.clone()));
            if let (Some(why), None, None) = (over_rate(&row, ctx.max_rate_bps), &done, &failure) {
                let _ = c.send(&Msg::Error {
                    message: why.clone(),
                });
                failure = Some(why);
                stop_all();
            }
            intervals.push(row);
            next += ctx.interval;
        }
        while let Ok((s, _)) = ctx.conns.try_recv() {
            busy(s);
        }
        if done.is_none()
            && failure.is_none()
            && t0.elapsed() > ctx.max_time + crate::flow::access::OVERRUN_GRACE
        {
            let why = format!(
                "cut: the client kept sending past this receiver's limit of {} s (--max-duration)",
                ctx.max_time.as_secs_f64()
            );
            let _ = c.send(&Msg::Error {
                message: why.clone(),
            });
            failure = Some(why);
            stop_all();
        }
        // Interrupted here: the streams stop now, and the client has a grace to send its
        // account (it is told by its streams' ends), so both reports come out.
        if ctx.interrupt.load(Ordering::Relaxed) && cut_at.is_none() {
            cut_at = Some(Instant::now());
            stop_all();
        }
        let cut = cut_at.is_some_and(|c| c.elapsed() > CUT_GRACE && done.is_none())
            || done_at.is_some_and(|d: Instant| d.elapsed() > Duration::from_secs(10))
            || (failure.is_none() && done.is_none() && t0.elapsed() > silence);
        if cut && failure.is_none() && (done.is_none() || !finished) {
            stop_all();
            if done.is_none() {
                failure = Some("interrupted".into());
            }
        }
        if done.is_some() || failure.is_some() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match c.recv_until(Instant::now() + Duration::from_millis(20)) {
            Ok(None) => {}
            Ok(Some(Msg::TcpDone {
                streams,
                cpu,
                interrupted,
            })) => {
                done = Some((streams, cpu));
                done_at = Some(Instant::now());
                client_cut = interrupted;
                stops.write.store(true, Ordering::Relaxed);
                if interrupted {
                    stop_all();
                }
            }
            Ok(Some(other)) => {
                failure = Some(format!("unexpected control message {other:?}"));
                stop_all();
            }
            Err(e) => {
                failure = Some(format!("control channel lost before TcpDone: {e:#}"));
                stop_all();
            }
        }
    }
    let (ends, cpu, interrupted) = running.join()?;
    let interrupted = interrupted || client_cut || cut_at.is_some();
    let cpu = cpu.finish(bytes_moved(&ends));
    if failure.is_none() {
        c.send(&Msg::TcpReport {
            streams: ends.clone(),
            cpu,
            interrupted,
        })?;
    }
    let (client, client_cpu) = done.unwrap_or_default();
    let buffers = BufferSides::of(&client, &ends);
    let streams = TcpReport::join_streams(&client, &ends);
    on_event(TcpEvent::Finished(Box::new(TcpReport {
        schema: SCHEMA.into(),
        meta: crate::stats::meta::Meta::gather(),
        role: "server".into(),
        test_id: format!("{test_id:016x}"),
        target: ctx.target,
        settings: spec,
        sum: TcpReport::sums(&streams),
        streams,
        cpu: CpuSides {
            client: client_cpu,
            server: cpu,
        },
        interrupted: interrupted || failure.is_some(),
        intervals,
        buffers,
    })));
    match failure {
        Some(f) => bail!(f),
        None => Ok(()),
    }
}
