//! `netcore recv` serving a stock `iperf3 -c` (TCP), on a thread of its own: the receiver's
//! control thread hands over a control connection whose first byte starts a cookie, and
//! routes the data connections that open with that cookie here.
//!
//! ```text
//! iperf3 -c                               netcore recv (this driver)
//!   cookie                 ------------>  (detected by its first byte)
//!                          <------------  PARAM_EXCHANGE
//!   parameters (JSON)      ------------>  checked; what netcore cannot run: SERVER_ERROR
//!                          <------------  CREATE_STREAMS
//!   N data connections on the same port, each opening with the cookie (admitted in order:
//!   stream ids 1, 3, 4, ...; with --bidir the client's sending streams come first)
//!                          <------------  TEST_START, TEST_RUNNING
//!   data (either way)      ------------>  counted per stream by the TCP test's stream threads
//!   TEST_END               ------------>  our writers stop (what the kernel took is counted)
//!                          <------------  EXCHANGE_RESULTS
//!   its results (JSON)     ------------>  we wait (bounded) until every stream it sent on
//!                                         has all its bytes here, so the figures are exact
//!                          <------------  our results (JSON), DISPLAY_RESULTS
//!   IPERF_DONE, closes     ------------>  readers reach EOF; netcore's report
//! ```
//! iperf3's own server closes its streams at TEST_END and so reports a little less than was
//! sent; netcore reads what is still in flight first.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::ctl::{cpu_util, deny, ierr, Ctl, Iperf3Ctx, Iperf3Event};
use super::ctl::{OverLimit, Refused};
use super::ctl::{CONNECT_WINDOW, SLACK, STEP};
use crate::flow::control::Plan;
use crate::flow::cpu::CpuUsage;
use crate::flow::payload::{StreamEnd, TcpInterval, TcpSpec, DEFAULT_LEN};
use crate::flow::streams::{Dir, Mode};
use crate::flow::tcp_engine::report::{
    over_rate, BufferSides, CpuSides, IntervalMeter, TcpEvent, TcpReport, SCHEMA,
};
use crate::flow::tcp_engine::stream::{
    self, configure, job_for, sample, DataConn, Live, Running, Stops,
};
use crate::interop::iperf3::msg::stream_id;
use crate::interop::iperf3::server_ctl::Event;
use crate::interop::iperf3::{Cookie, Params, Results, StreamResult};
use crate::sys::cpu::process_times;

/// Serves one iperf3 client on `sock` (its first byte was peeked, nothing read). Every wait is
/// bounded; an error names the state the client was in.
pub fn serve(
    sock: TcpStream,
    peer: SocketAddr,
    ctx: Iperf3Ctx,
    on_event: &mut dyn FnMut(Iperf3Event),
) -> Result<()> {
    let mut c = Ctl::new(sock, ctx.interrupt.clone())?;
    let r = run(&mut c, peer, ctx, on_event);
    if let (Err(e), false) = (&r, c.sc.is_closed()) {
        if e.downcast_ref::<Refused>().is_some() {
            c.fail(ierr::UNIMP);
        } else if let Some(OverLimit(code, _)) = e.downcast_ref::<OverLimit>() {
            c.fail(*code);
        } else if e
            .downcast_ref::<crate::interop::iperf3::ProtoError>()
            .is_some()
        {
            c.fail(ierr::MESSAGE);
        }
    }
    r
}

fn expect_cookie(c: &mut Ctl) -> Result<Cookie> {
    match c.next(Instant::now() + STEP)? {
        Event::Cookie(k) => Ok(k),
        e => bail!("iperf3 client sent {e:?} before its cookie"),
    }
}

/// The TCP test an iperf3 parameter document asks for, or why netcore refuses it.
pub(crate) fn tcp_spec(p: &Params) -> Result<TcpSpec, String> {
    if p.omit > 0 {
        return Err("-O (omitting the first seconds) is not supported".into());
    }
    let streams = p.parallel.max(1) as u16;
    let spec = TcpSpec {
        streams,
        mode: Mode::of(p.reverse, p.bidirectional),
        len: if p.len > 0 { p.len } else { DEFAULT_LEN as u32 },
        window: (p.window > 0).then_some(p.window),
        mss: (p.mss > 0).then_some(p.mss),
        congestion: p.congestion.clone(),
        no_delay: p.nodelay,
        fq_rate_bps: None,
        zerocopy: false,
        sendfile: false,
        intervals: false,
        thread_per_stream: false,
        // iperf3's -b is per stream; netcore's pacing is per direction.
        rate_bps: (p.bandwidth > 0).then(|| p.bandwidth.saturating_mul(streams as u64)),
    };
    spec.check()?;
    Ok(spec)
}

/// [`tcp_spec`] with what this side writes (-R, --bidir) paced at most at `--max-rate`.
fn capped_spec(p: &Params, ctx: &Iperf3Ctx) -> Result<TcpSpec> {
    let mut spec = tcp_spec(p).map_err(Refused)?;
    if let Some(max) = ctx.max_rate_bps {
        let max = (max as u64).max(1);
        spec.rate_bps = Some(spec.rate_bps.map_or(max, |r| r.min(max)));
    }
    Ok(spec)
}

/// The plan of what this side writes: -n in blocks of `len` (rounded up), -k blocks, or the
/// time (cut at TEST_END).
fn write_plan(p: &Params, len: u32) -> Plan {
    if p.bytes > 0 {
        Plan::Count(p.bytes.div_ceil(len as u64))
    } else if p.blocks > 0 {
        Plan::Count(p.blocks)
    } else {
        Plan::TimeNs((p.time.max(1) * 1_000_000_000).saturating_add(5_000_000_000))
    }
}

/// Stops every stream thread when dropped (an early return, a vanished client).
struct StopAll(Arc<AtomicBool>, Arc<AtomicBool>);

impl Drop for StopAll {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        self.1.store(true, Ordering::Relaxed);
    }
}

struct Streams {
    live: Vec<Arc<Live>>,
    running: Running,
    dirs: Vec<Dir>,
}

fn run(
    c: &mut Ctl,
    peer: SocketAddr,
    ctx: Iperf3Ctx,
    on_event: &mut dyn FnMut(Iperf3Event),
) -> Result<()> {
    let cookie = expect_cookie(c)?;
    c.sc.accept(&mut c.out);
    c.stage = "sending its parameters";
    c.flush()?;
    let p = match c.next(Instant::now() + STEP)? {
        Event::Params(p) => p,
        Event::Terminated => bail!("iperf3 client terminated before its parameters"),
        e => bail!("iperf3 client sent {e:?} instead of its parameters"),
    };
    c.take_receiver(&p, &ctx)?;
    if p.udp {
        return super::udp::run(c, peer, &ctx, &p, cookie.as_str(), on_event);
    }
    run_tcp(c, peer, ctx, &p, &cookie, on_event)
}

/// Runs a TCP test whose parameters `p` were read: the data connections, the test until
/// TEST_END, the results exchange, the report.
fn run_tcp(
    c: &mut Ctl,
    peer: SocketAddr,
    ctx: Iperf3Ctx,
    p: &Params,
    cookie: &Cookie,
    on_event: &mut dyn FnMut(Iperf3Event),
) -> Result<()> {
    let spec = capped_spec(p, &ctx)?;
    let plan = write_plan(p, spec.len);
    on_event(Iperf3Event::Started {
        peer,
        what: started_line(p, &spec),
    });
    c.sc.create_streams(&mut c.out);
    c.stage = "opening its data connections";
    c.flush()?;

    // Readers and writers stop separately: writers at TEST_END, readers at EOF (or when the
    // test fails).
    let wstop = Arc::new(AtomicBool::new(false));
    let rstop = Arc::new(AtomicBool::new(false));
    let _guard = StopAll(wstop.clone(), rstop.clone());
    let st = admit(c, &ctx, cookie, &spec, plan, &wstop, &rstop)?;
    c.sc.start(&mut c.out);
    c.stage = "running the test";
    c.flush()?;
    let cpu0 = process_times();
    let t0 = Instant::now();
    let intervals = sample_until_test_end(c, &ctx, p, &st, t0, on_event)?;
    let t_end = t0.elapsed().as_secs_f64();
    wstop.store(true, Ordering::Relaxed);
    let cpu1 = process_times();
    let client = c.client_results()?;
    await_client_bytes(&st, &client);
    let ours = our_results(&st, &spec, t_end, cpu0, cpu1);
    c.send_results(&ours)?;
    on_event(Iperf3Event::Exchanged {
        client: Box::new(client.clone()),
        server: Box::new(ours),
    });
    let done = c.until_done();
    // The client closes its streams after DISPLAY_RESULTS: the readers see EOF.
    let wait = Instant::now() + STEP;
    while Instant::now() < wait && !st.running.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    rstop.store(true, Ordering::Relaxed);
    let (ends, cpu, _) = st.running.join()?;
    let cpu = cpu.finish(stream::bytes_moved(&ends));
    let streams = TcpReport::join_streams(&client_ends(&st.dirs, &client), &ends);
    on_event(Iperf3Event::Tcp(TcpEvent::Finished(Box::new(TcpReport {
        schema: SCHEMA.into(),
        meta: crate::stats::meta::Meta::gather(),
        role: "server".into(),
        test_id: format!("iperf3:{}", cookie.as_str()),
        target: ctx.target,
        settings: spec,
        sum: TcpReport::sums(&streams),
        streams,
        cpu: CpuSides {
            client: CpuUsage {
                pct_core: client.cpu_util_total,
                ..CpuUsage::default()
            },
            server: cpu,
        },
        interrupted: false,
        intervals,
        buffers: BufferSides::of(&[], &ends),
    }))));
    done
}

/// The line that says what the client asked for.
fn started_line(p: &Params, spec: &TcpSpec) -> String {
    format!(
        "iperf3 {} client: TCP, {} stream(s), {}, {}, {}-byte writes",
        p.client_version.as_deref().unwrap_or("(version not sent)"),
        spec.streams,
        spec.mode.name(),
        match (p.bytes, p.blocks) {
            (0, 0) => format!("{} s", p.time),
            (0, k) => format!("{k} blocks"),
            (n, _) => format!("{n} bytes"),
        },
        spec.len
    )
}

/// Samples the streams every interval from `t0` until the client's TEST_END (bounded by the
/// test's time and `--max-duration`); an interval over `--max-rate` ends the test.
fn sample_until_test_end(
    c: &mut Ctl,
    ctx: &Iperf3Ctx,
    p: &Params,
    st: &Streams,
    t0: Instant,
    on_event: &mut dyn FnMut(Iperf3Event),
) -> Result<Vec<TcpInterval>> {
    let mut meter = IntervalMeter::default();
    let mut intervals = Vec::new();
    let mut next = t0 + ctx.interval;
    let deadline = t0 + Duration::from_secs(p.time) + SLACK;
    let cut_at = t0 + ctx.max_time + crate::flow::access::OVERRUN_GRACE;
    c.until_test_end(&ctx.conns, (deadline, cut_at), &mut || {
        if Instant::now() >= next {
            let row = sample(&mut meter, t0.elapsed().as_secs_f64(), &st.live, "server");
            on_event(Iperf3Event::Tcp(TcpEvent::Interval(row.clone())));
            let over = over_rate(&row, ctx.max_rate_bps);
            intervals.push(row);
            next += ctx.interval;
            if let Some(why) = over {
                return Err(OverLimit(ierr::TOTALRATE, why).into());
            }
        }
        Ok(())
    })?;
    Ok(intervals)
}

/// The client's side of each stream (`dirs`, in stream order) from its results document.
fn client_ends(dirs: &[Dir], client: &Results) -> Vec<StreamEnd> {
    dirs.iter()
        .enumerate()
        .map(|(i, &dir)| {
            let id = stream_id(i);
            let r = client.streams.iter().find(|s| s.id == id);
            StreamEnd {
                id: id as u32,
                dir,
                bytes: r.map_or(0, |s| s.bytes),
                elapsed_s: r.map_or(0.0, |s| s.end_time - s.start_time),
                tcp: None,
                zerocopy: None,
                buffers: None,
            }
        })
        .collect()
}

/// Waits (bounded) until every byte the client says it sent is in and every writer stopped.
fn await_client_bytes(st: &Streams, client: &Results) {
    let wait = Instant::now() + STEP;
    for (i, l) in st.live.iter().enumerate() {
        let id = stream_id(i);
        let want = match st.dirs[i] {
            Dir::Up => client
                .streams
                .iter()
                .find(|s| s.id == id)
                .map_or(0, |s| s.bytes),
            Dir::Down => 0,
        };
        while Instant::now() < wait
            && (l.bytes.load(Ordering::Relaxed) < want
                || (st.dirs[i] == Dir::Down && !l.finished()))
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Admits the test's data connections (each opens with the cookie) from the shared listener,
/// in the order the client opens them, and starts a thread on each.
fn admit(
    c: &mut Ctl,
    ctx: &Iperf3Ctx,
    cookie: &Cookie,
    spec: &TcpSpec,
    plan: Plan,
    wstop: &Arc<AtomicBool>,
    rstop: &Arc<AtomicBool>,
) -> Result<Streams> {
    let dirs = spec.directions();
    let mut conns = Vec::new();
    let t = Instant::now();
    while conns.len() < dirs.len() {
        if t.elapsed() > CONNECT_WINDOW || c.interrupted() {
            bail!(
                "only {} of {} iperf3 data connections arrived",
                conns.len(),
                dirs.len()
            );
        }
        // The client says nothing here but CLIENT_TERMINATE; a closed control ends the test.
        if let Some(e) = c.poll(Duration::from_millis(1))? {
            bail!("iperf3 client sent {e:?} while opening its data connections");
        }
        let Ok((s, head)) = ctx.conns.recv_timeout(Duration::from_millis(1)) else {
            continue;
        };
        if head != cookie.0 {
            deny(s);
            continue;
        }
        let i = conns.len();
        configure(&s, spec).map_err(|e| Refused(format!("{e:#}")))?;
        let mut job = job_for(spec, plan, dirs[i], i, false, ctx.cpu);
        job.wait = ctx.wait;
        conns.push(DataConn {
            sock: s,
            id: stream_id(i) as u32,
            dir: dirs[i],
            job,
        });
    }
    // A signal does not stop the threads: the receiver's interrupt ends the test (its control
    // tells the client SERVER_TERMINATE), and `StopAll` its threads with it.
    let stops = Stops {
        write: wstop.clone(),
        read: rstop.clone(),
        on_signal: false,
    };
    let running = stream::start(conns, &stops, ctx.thread_per_stream)?;
    Ok(Streams {
        live: running.live.clone(),
        running,
        dirs,
    })
}

/// The results document netcore answers with: per stream what this side moved (read, or
/// what the kernel took from the writer), the sender's retransmits from `TCP_INFO`, and the
/// process's CPU over the test.
fn our_results(
    st: &Streams,
    spec: &TcpSpec,
    t_end: f64,
    cpu0: crate::sys::cpu::ThreadTimes,
    cpu1: crate::sys::cpu::ThreadTimes,
) -> Results {
    let (total, user, system) = cpu_util(cpu0, cpu1, t_end);
    let sends = spec.mode != Mode::Forward;
    let mut congestion = None;
    let streams = st
        .live
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let f = l.figures();
            if congestion.is_none() {
                congestion = f.as_ref().map(|f| f.congestion.clone());
            }
            StreamResult {
                id: stream_id(i),
                bytes: l.bytes.load(Ordering::Relaxed),
                retransmits: match (&f, st.dirs[i]) {
                    (Some(f), Dir::Down) => f.retransmits as i64,
                    _ => -1,
                },
                jitter: 0.0,
                errors: 0,
                omitted_errors: 0,
                packets: 0,
                omitted_packets: 0,
                start_time: 0.0,
                end_time: t_end,
            }
        })
        .collect();
    Results {
        cpu_util_total: total,
        cpu_util_user: user,
        cpu_util_system: system,
        sender_has_retransmits: if sends { 1 } else { -1 },
        congestion_used: congestion,
        streams,
        server_output_text: None,
    }
}
