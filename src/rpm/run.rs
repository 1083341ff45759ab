//! The run: opens an echo test on the receiver, starts the probers, then runs each phase (idle:
//! nothing but probes; download, upload, bidir: a TCP test of `flow::tcp` with `-P` streams
//! per direction) with idle gaps between, and builds the report and the timeline of the plot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::aggregate::RoundTrips;
use super::prober::{self, Shared, UdpProbing, NO_PHASE};
use super::report::{self, Measured, PhaseKind, ProbePath, RpmReport, Settings};
use super::tracker::PhaseProbes;
use crate::flow::control::{ClientId, Conn, EchoSpec, Msg, Plan, PROTOCOL_VERSION};
use crate::flow::host::host_name;
use crate::flow::payload::{TcpInterval, TcpSpec, DEFAULT_LEN};
use crate::flow::rxwait::RxWait;
use crate::flow::streams::{Dir, Mode};
use crate::flow::tcp::client::{self, TcpOptions};
use crate::flow::tcp_engine::report::TcpReport;
use crate::sys::{realtime_ns, signal};

/// A run's settings (`netcore rpm`'s flags, checked).
#[derive(Debug, Clone)]
pub struct RpmOptions {
    /// The receiver's control address (the TCP load goes there too; handshake probes go to the
    /// echo test's port).
    pub control: SocketAddr,
    pub phases: Vec<PhaseKind>,
    pub phase_time: Duration,
    /// Idle time between phases (the queues drain).
    pub gap: Duration,
    pub streams: u16,
    pub congestion: Option<String>,
    pub probe_rate: f64,
    pub probe_len: usize,
    pub late_after: Duration,
    /// A fresh TCP connection's handshake every this long while a phase runs.
    pub connect_every: Duration,
    /// How often the load's throughput and RTT are sampled.
    pub interval: Duration,
    pub client: ClientId,
    /// Both ends read one clock (the same host): one-way delays are reported.
    pub same_clock: bool,
}

/// The points of the plot.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// (seconds since the start, bit/s) of the load each way.
    pub up: Vec<(f64, f64)>,
    pub down: Vec<(f64, f64)>,
    /// (seconds since the start at the probe's send, round trip in ms).
    pub rtt: Vec<(f64, f64)>,
    /// (from, to, name) of each phase.
    pub phases: Vec<(f64, f64, String)>,
}

/// What a run gives: the report and the plot's points.
#[derive(Debug, Clone)]
pub struct RpmRun {
    pub report: RpmReport,
    pub timeline: Timeline,
}

/// One phase's load as measured.
#[derive(Debug, Default)]
struct Load {
    up_bps: f64,
    down_bps: f64,
    retransmits: u64,
    loaded_ms: Vec<f64>,
}

/// Opens the echo test: Hello, Setup{echo}, Ready{port}; the connection stays open for the run
/// (closing it ends the test on the receiver).
fn open_echo(o: &RpmOptions, test_id: u64, total: Duration) -> Result<(Conn, SocketAddr)> {
    let mut c = Conn::connect_from(o.control, o.client.bind)?;
    c.open_test(
        Msg::Hello {
            version: PROTOCOL_VERSION,
            test_id,
            len: o.probe_len as u32,
            plan: Plan::TimeNs(total.as_nanos() as u64),
            streams: 1,
            verify: false,
            host: host_name(),
            auth: false,
        },
        &o.client,
    )?;
    c.send(&Msg::Setup {
        reverse: None,
        tcp: None,
        echo: Some(EchoSpec {
            len: o.probe_len as u32,
            rate: o.probe_rate,
        }),
        interval_ns: None,
    })?;
    match c.expect("Ready", Duration::from_secs(10))? {
        Msg::Ready { port: Some(p), .. } => Ok((c, SocketAddr::new(o.control.ip(), p))),
        Msg::Ready { port: None, .. } => bail!("the receiver named no echo port"),
        Msg::Error { message } => bail!("the receiver refused the echo test: {message}"),
        other => bail!("expected Ready from the receiver, got {}", other.name()),
    }
}

/// Ends the echo test (`EchoDone`) and takes its account of the probes that reached it; None
/// when it sends none within 5 s (the run's figures stand without it).
fn echo_account(mut c: Conn, phases: &[PhaseProbes]) -> Option<ProbePath> {
    c.send(&Msg::EchoDone {}).ok()?;
    match c.expect("EchoReport", Duration::from_secs(5)).ok()? {
        Msg::EchoReport {
            received,
            echoed,
            refused,
            connects,
        } => Some(ProbePath::of(phases, received, echoed, refused, connects)),
        _ => None,
    }
}

/// The whole run's length, for the echo test's plan (the receiver ends it after that).
fn total_time(o: &RpmOptions) -> Duration {
    let n = o.phases.len() as u32;
    (o.phase_time + o.gap) * n + o.late_after + Duration::from_secs(5)
}

/// Runs every phase; `on_phase` sees each phase as it ends. Ctrl-C ends the run after the
/// phase it interrupts, whose figures are kept; the report says it was interrupted.
pub fn run(o: &RpmOptions, on_phase: &mut dyn FnMut(&Measured)) -> Result<RpmRun> {
    let test_id: u64 = rand::random();
    let (control, echo) = open_echo(o, test_id, total_time(o))?;
    let shared = Shared {
        phase: Arc::new(AtomicUsize::new(NO_PHASE)),
        stop: Arc::new(AtomicBool::new(false)),
        t0_ns: realtime_ns(),
    };
    let t0 = Instant::now();
    let udp = prober::start_udp(
        UdpProbing {
            echo,
            test_id,
            rate: o.probe_rate,
            len: o.probe_len,
            late_after: o.late_after,
            phases: o.phases.len(),
            same_clock: o.same_clock,
        },
        shared.clone(),
    )?;
    let connects = prober::start_connects(
        echo,
        o.connect_every,
        o.late_after,
        o.phases.len(),
        shared.clone(),
    )?;
    let mut timeline = Timeline::default();
    let mut loads = Vec::new();
    let mut error = None;
    for (i, &kind) in o.phases.iter().enumerate() {
        if signal::stop_requested() {
            break;
        }
        if i > 0 {
            idle(o.gap);
        }
        let start = t0.elapsed().as_secs_f64();
        shared.phase.store(i, Ordering::Relaxed);
        let load = phase_load(o, kind, start, &mut timeline);
        shared.phase.store(NO_PHASE, Ordering::Relaxed);
        let end = t0.elapsed().as_secs_f64();
        timeline.phases.push((start, end, kind.name().into()));
        match load {
            Ok(l) => loads.push((kind, start, end - start, l)),
            Err(e) => {
                error = Some(format!("{} phase: {e:#}", kind.name()));
                loads.push((kind, start, end - start, Load::default()));
                break;
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let probed = udp
        .join()
        .map_err(|_| anyhow!("the probe thread panicked"))??;
    let connected = connects
        .join()
        .map_err(|_| anyhow!("the connect thread panicked"))?;
    let path = echo_account(control, probed.tracker.phases());
    timeline.rtt = probed.timeline.clone();
    let mut measured = Vec::new();
    for (i, (kind, start_s, duration_s, l)) in loads.into_iter().enumerate() {
        let m = Measured {
            kind,
            start_s,
            duration_s,
            goodput_up_bps: l.up_bps,
            goodput_down_bps: l.down_bps,
            probes: probed.tracker.phases()[i].clone(),
            same_clock: o.same_clock,
            round_trips: RoundTrips {
                tcp_connect_ms: connected.samples_ms[i].clone(),
                tcp_request_ms: connected.request_ms[i].clone(),
                udp_ms: probed.samples_ms[i].clone(),
                loaded_ms: l.loaded_ms,
            },
            retransmits: l.retransmits,
        };
        on_phase(&m);
        measured.push(m);
    }
    let interrupted = signal::stop_requested() || error.is_some();
    let mut report = report::build(
        o.control.to_string(),
        settings(o, probed.kernel_timestamps),
        &measured,
        interrupted,
    );
    if let Some(p) = path {
        report = report.with_path(p);
    }
    report.error = error;
    report.start_unix_s = shared.t0_ns as f64 / 1e9;
    report.meta = crate::stats::meta::Meta::gather();
    Ok(RpmRun { report, timeline })
}

fn settings(o: &RpmOptions, kernel_timestamps: bool) -> Settings {
    Settings {
        phases: o.phases.clone(),
        phase_time_s: o.phase_time.as_secs_f64(),
        gap_s: o.gap.as_secs_f64(),
        streams: o.streams,
        probe_rate: o.probe_rate,
        probe_len: o.probe_len,
        late_after_ms: o.late_after.as_secs_f64() * 1e3,
        congestion: o.congestion.clone(),
        kernel_timestamps,
    }
}

/// The load of one phase: none (idle) or a TCP test; its throughput goes on the timeline.
fn phase_load(o: &RpmOptions, kind: PhaseKind, start: f64, tl: &mut Timeline) -> Result<Load> {
    let mode = match kind {
        PhaseKind::Idle => {
            idle(o.phase_time);
            return Ok(Load::default());
        }
        PhaseKind::Download => Mode::Reverse,
        PhaseKind::Upload => Mode::Forward,
        PhaseKind::Bidir => Mode::Bidir,
    };
    let mut loaded_ms = Vec::new();
    let mut acked = HashMap::new();
    // The load starts and ends at zero on the plot: no line across the gaps between phases.
    let dirs = [(Dir::Up, &mut tl.up), (Dir::Down, &mut tl.down)];
    for (d, v) in dirs {
        if mode.directions(1).contains(&d) {
            v.push((start, 0.0));
        }
    }
    let min_dt = o.interval.as_secs_f64() / 2.0;
    let report = client::run(&tcp_options(o, mode), &mut |row: &TcpInterval| {
        interval_points(row, start, min_dt, tl, &mut loaded_ms, &mut acked);
    });
    let end = tl
        .up
        .iter()
        .chain(&tl.down)
        .map(|p| p.0)
        .fold(start, f64::max);
    for (d, v) in [(Dir::Up, &mut tl.up), (Dir::Down, &mut tl.down)] {
        if mode.directions(1).contains(&d) {
            v.push((end, 0.0));
        }
    }
    Ok(load_of(&report?, loaded_ms))
}

/// Sleeps a phase's (or a gap's) time, or until Ctrl-C.
fn idle(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !signal::stop_requested() {
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
        );
    }
}

fn tcp_options(o: &RpmOptions, mode: Mode) -> TcpOptions {
    TcpOptions {
        control: o.control,
        spec: TcpSpec {
            congestion: o.congestion.clone(),
            ..TcpSpec::plain(o.streams, mode, DEFAULT_LEN as u32)
        },
        plan: Plan::TimeNs(o.phase_time.as_nanos() as u64),
        cpus: Vec::new(),
        interval: o.interval,
        receiver_interval: None,
        wait: RxWait::Poll,
        client: o.client.clone(),
        // A fresh id for each phase's test.
        test_id: rand::random(),
    }
}

/// An interval of this side's samples: the throughput each way on the timeline (upload from
/// the bytes the receiver acknowledged, `TCP_INFO`, not the bytes written, which fill the
/// socket buffer first; download from the bytes read), and the smoothed RTT of the
/// connections this side writes (upload) as loaded round trips. `acked` holds each upload
/// stream's acknowledged bytes so far; an interval shorter than `min_dt` is skipped.
fn interval_points(
    row: &TcpInterval,
    start: f64,
    min_dt: f64,
    tl: &mut Timeline,
    loaded_ms: &mut Vec<f64>,
    acked: &mut HashMap<u32, u64>,
) {
    let t = start + row.t;
    let dt = (row.t - row.start).max(1e-9);
    // A short last interval is noise as a rate (its acknowledged bytes still count next).
    if dt < min_dt {
        return;
    }
    let (mut up, mut any_up) = (0.0, false);
    for s in row.streams.iter().filter(|s| s.dir == Dir::Up) {
        any_up = true;
        let Some(f) = &s.tcp else {
            up += s.bps;
            continue;
        };
        let before = acked.insert(s.id, f.bytes_acked).unwrap_or(0);
        up += f.bytes_acked.saturating_sub(before) as f64 * 8.0 / dt;
        if f.rtt_us > 0 {
            loaded_ms.push(f.rtt_us as f64 / 1e3);
        }
    }
    if any_up {
        tl.up.push((t, up));
    }
    let down: Vec<f64> = row
        .streams
        .iter()
        .filter(|s| s.dir == Dir::Down)
        .map(|s| s.bps)
        .collect();
    if !down.is_empty() {
        tl.down.push((t, down.iter().sum()));
    }
}

/// Goodput each way and retransmits from the test's SUM rows; the writers' last smoothed RTT
/// of the download streams (the receiver's figures) joins the loaded round trips.
fn load_of(r: &TcpReport, mut loaded_ms: Vec<f64>) -> Load {
    let mut l = Load::default();
    for s in &r.sum {
        match s.dir {
            // A phase runs for seconds: a reader with no time read nothing.
            Dir::Up => l.up_bps = s.goodput_bps.unwrap_or(0.0),
            Dir::Down => l.down_bps = s.goodput_bps.unwrap_or(0.0),
        }
        l.retransmits += s.tcp.as_ref().map_or(0, |t| t.retransmits);
    }
    for s in r.streams.iter().filter(|s| s.dir == Dir::Down) {
        if let Some(f) = s.tcp.as_ref().filter(|f| f.rtt_us > 0) {
            loaded_ms.push(f.rtt_us as f64 / 1e3);
        }
    }
    l.loaded_ms = loaded_ms;
    l
}
