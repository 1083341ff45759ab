//! `netcore rpm`: latency under load against a `netcore recv` (or an embedded one on loopback).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::common::resolve;
use super::common::{check_congestion, out, usage, ClientArgs, OutputArgs, PlotArg, StreamArg};
use crate::flow::probe;
use crate::flow::recv::echo::MAX_RATE;
use crate::flow::recv::receiver::{Receiver, RecvOptions};
use crate::rpm::report::{Phase, PhaseKind};
use crate::rpm::run::{self, RpmOptions, Timeline};
use crate::stats::events::EventKind;
use crate::stats::plot::Series;
use crate::stats::timeline::{self, Band, Panel};
use crate::stats::Report;
use crate::units::{self, BITS_PER_SEC};

/// `netcore rpm`
#[derive(Args, Debug)]
#[command(
    about = "Latency under load: probe round trips while TCP streams fill the path each way (RPM, the added latency, which queue grew)",
    after_help = "Phases run in turn with idle gaps: idle (probes only), download (the receiver sends), upload, bidir. Throughout, UDP probes echoed by the receiver (each probe's fate exact: answered, late, lost, duplicate) and TCP handshakes of fresh connections; RPM = 60 s / the round trip under load (the IETF draft's aggregate, see docs). Without --to, an embedded receiver on 127.0.0.1 serves the run."
)]
pub struct RpmArgs {
    /// The receiver (netcore recv): HOST[:PORT], port 5300 by default
    #[arg(long, value_name = "HOST[:PORT]")]
    pub to: Option<String>,
    /// Phases to run, in order: idle, download, upload, bidir
    #[arg(long, value_name = "LIST", default_value = "idle,download,upload,bidir", value_parser = parse_phases)]
    pub phases: PhaseList,
    /// How long each phase runs
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = units::parse_duration)]
    pub phase_time: Duration,
    /// Idle time between phases (the queues drain)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = units::parse_duration)]
    pub gap: Duration,
    /// TCP load connections per direction
    #[arg(short = 'P', long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub streams: u16,
    /// Congestion control of the load connections (TCP_CONGESTION), e.g. cubic, bbr
    #[arg(long, value_name = "ALGO")]
    pub congestion: Option<String>,
    /// UDP probes per second
    #[arg(long, value_name = "N", default_value_t = 100.0)]
    pub probe_rate: f64,
    /// Bytes per probe (48..=1472)
    #[arg(long, value_name = "BYTES", default_value_t = probe::DEFAULT_LEN)]
    pub probe_size: usize,
    /// A probe answered later than this counts as late (one not answered by then as lost,
    /// until its echo comes)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = units::parse_duration)]
    pub late_after: Duration,
    /// A fresh TCP connection's handshake this often during each phase
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = units::parse_duration)]
    pub connect_every: Duration,
    /// Both ends read one clock (the same machine, e.g. network namespaces): report one-way
    /// delays (automatic on loopback)
    #[arg(long)]
    pub same_clock: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub stream: StreamArg,
    #[command(flatten)]
    pub plot: PlotArg,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The phases of `--phases`.
#[derive(Debug, Clone)]
pub struct PhaseList(pub Vec<PhaseKind>);

fn parse_phases(s: &str) -> Result<PhaseList, String> {
    let mut v = Vec::new();
    for name in s.split(',') {
        let p = PhaseKind::parse(name).ok_or_else(|| {
            format!(
                "unknown phase '{}': use idle, download, upload, bidir",
                name.trim()
            )
        })?;
        if v.contains(&p) {
            return Err(format!("phase '{}' named twice", p.name()));
        }
        v.push(p);
    }
    Ok(PhaseList(v))
}

fn check(a: &RpmArgs) -> Result<()> {
    if let Some(cc) = &a.congestion {
        check_congestion(cc)?;
    }
    if !(a.probe_rate > 0.0 && a.probe_rate <= MAX_RATE) {
        return Err(usage(format!(
            "--probe-rate {} out of range: use (0, {}] probes per second",
            a.probe_rate, MAX_RATE
        )));
    }
    if !(probe::HEADER_LEN..=probe::MAX_LEN).contains(&a.probe_size) {
        return Err(usage(format!(
            "--probe-size {} out of range: use {}..={}",
            a.probe_size,
            probe::HEADER_LEN,
            probe::MAX_LEN
        )));
    }
    for (flag, d) in [
        ("--phase-time", a.phase_time),
        ("--late-after", a.late_after),
        ("--connect-every", a.connect_every),
    ] {
        if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
            return Err(usage(format!("{flag} out of range: use 10ms..1h")));
        }
    }
    if a.gap > Duration::from_secs(3600) {
        return Err(usage("--gap out of range: at most 1h"));
    }
    a.plot.check()
}

/// An embedded receiver on loopback, serving the run's tests until stopped.
struct Embedded {
    handle: thread::JoinHandle<Result<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Embedded {
    fn start() -> Result<(Embedded, SocketAddr)> {
        let r = Receiver::bind(RecvOptions {
            listen: "127.0.0.1:0".parse()?,
            // The echo beside one TCP test (a phase's), with room for a straggler.
            max_tests: 4,
            // Ctrl-C reaches this process's receiver too: its tests end as the client ends
            // them (with their reports), rather than cut under it.
            graceful: true,
            ..RecvOptions::default()
        })?;
        let addr = r.local_addr();
        let stop = r.stopper();
        let handle = thread::Builder::new()
            .name("netcore-embedded-recv".into())
            .spawn(move || r.serve(false, &mut |_| {}))?;
        Ok((Embedded { handle, stop }, addr))
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

pub fn run(a: RpmArgs) -> Result<ExitCode> {
    check(&a)?;
    let client = a.client.client()?;
    let stream = a.stream.open("rpm", Some(&a.output))?;
    let (control, embedded) = match &a.to {
        Some(to) => (resolve(to)?, None),
        None => {
            let (e, addr) = Embedded::start()?;
            (addr, Some(e))
        }
    };
    let opts = RpmOptions {
        control,
        phases: a.phases.0.clone(),
        phase_time: a.phase_time,
        gap: a.gap,
        streams: a.streams,
        congestion: a.congestion.clone(),
        probe_rate: a.probe_rate,
        probe_len: a.probe_size,
        late_after: a.late_after,
        connect_every: a.connect_every,
        interval: Duration::from_millis(200),
        client,
        same_clock: a.same_clock || control.ip().is_loopback(),
    };
    stream.emit(EventKind::Start, |l| {
        l.kind("rpm").peer(control).data(&serde_json::json!({
            "phases": opts.phases,
            "phase_time_s": opts.phase_time.as_secs_f64(),
            "streams": opts.streams,
            "probe_rate": opts.probe_rate,
        }))
    })?;
    let r = run::run(&opts, &mut |m| {
        let row: Phase = crate::rpm::report::phase(m);
        let _ = stream.emit(EventKind::Interval, |l| l.kind("rpm").data(&row));
    });
    if let Some(e) = embedded {
        e.finish();
    }
    let r = stream.or_error(r)?;
    if let Some(p) = a.plot.file() {
        plot(p, &r.report.target, &r.timeline, a.probe_rate)?;
    }
    if stream.on() {
        stream.emit(EventKind::End, |l| {
            l.kind("rpm").peer(control).data(&r.report)
        })?;
    } else {
        out(&r.report.render(a.output.format()))?;
    }
    Ok(if r.report.error.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Throughput each way above, probe round trips below, phases shaded.
fn plot(path: &std::path::Path, target: &str, t: &Timeline, probe_rate: f64) -> Result<()> {
    let top = t.up.iter().chain(&t.down).map(|p| p.1).fold(0.0, f64::max);
    let (div, unit) = BITS_PER_SEC.axis(top);
    let scale = |v: &[(f64, f64)]| v.iter().map(|&(x, y)| (x, y / div)).collect::<Vec<_>>();
    let panels = [
        Panel {
            y_label: format!("goodput ({unit})"),
            series: vec![
                Series::new("upload", scale(&t.up)),
                Series::new("download", scale(&t.down)),
            ],
            break_over: None,
        },
        Panel {
            y_label: "probe round trip (ms)".into(),
            series: vec![Series::new("UDP probe", t.rtt.clone())],
            // No line across the gaps between phases (no probes there).
            break_over: Some((5.0 / probe_rate).max(0.25)),
        },
    ];
    let bands: Vec<Band> = t
        .phases
        .iter()
        .map(|(from, to, name)| Band {
            from: *from,
            to: *to,
            label: name.clone(),
        })
        .collect();
    timeline::timeline(
        path,
        &format!("netcore rpm to {target}"),
        "time (s)",
        &panels,
        &bands,
    )
}
