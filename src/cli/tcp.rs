//! `netcore blast --proto tcp`: the TCP flags, their checks, and the glue to `flow::tcp`.

use std::process::ExitCode;

use anyhow::Result;

use super::common::usage;
use super::common::{out, Live, Proto};
use super::udp::{interrupted_exit, iperf3_addr, plan_of, target_of, BlastArgs};
use crate::flow::payload::{TcpInterval, TcpSpec, DEFAULT_LEN, MAX_LEN};
use crate::flow::streams::Mode;
use crate::flow::tcp::client::{self, TcpOptions};
use crate::flow::tcp_engine::report::TcpReport;
use crate::flow::udp::sender::GsoMode;
use crate::stats::events::EventKind;
use crate::stats::plot::{self, PlotOptions, Series};
use crate::stats::Report;
use crate::sys::{affinity, signal};
use crate::units::Rate;

fn bits(flag: &str, r: Option<Rate>) -> Result<Option<u64>> {
    match r {
        None => Ok(None),
        Some(Rate::BitsPerSec(b)) => Ok(Some(b as u64)),
        Some(Rate::PacketsPerSec(_)) => Err(usage(format!(
            "{flag} takes a bit rate (e.g. 5Gbps) for --proto tcp"
        ))),
    }
}

/// Refuses flags that do not apply to the chosen protocol.
pub fn check(a: &BlastArgs) -> Result<()> {
    let t = &a.tcp;
    {
        let usage = |m: String| Err(usage(m));
        match a.proto {
            Proto::Udp => {
                let tcp_only = [
                    ("--window", t.window.is_some()),
                    ("--mss", t.mss.is_some()),
                    ("--congestion", t.congestion.is_some()),
                    ("--no-delay", t.no_delay),
                    ("--fq-rate", t.fq_rate.is_some()),
                    ("--thread-per-stream", t.thread_per_stream),
                    ("--sendfile", t.sendfile),
                ];
                if let Some((f, _)) = tcp_only.iter().find(|x| x.1) {
                    return usage(format!("{f} applies to --proto tcp"));
                }
                if t.bidir {
                    let what = [
                        ("--find-rate", a.find_rate),
                        ("--plot", a.plot.plot.is_some()),
                    ];
                    if let Some((f, _)) = what.iter().find(|x| x.1) {
                        return usage(format!("{f} is not available with --bidir for --proto udp"));
                    }
                }
                if t.reverse && a.zerocopy {
                    return usage("--zerocopy applies to the sending side: not with -R".into());
                }
            }
            Proto::Tcp => {
                // UDP's send path: refused rather than silently ignored (as --window is for
                // UDP). Their values are compared with the defaults clap fills in.
                let udp_only = [
                    ("--verify", a.verify, ""),
                    ("--gso", a.gso != GsoMode::Auto, ""),
                    ("--batch", a.batch != 64, ""),
                    (
                        "--sndbuf",
                        a.sndbuf != 4 << 20,
                        " (TCP's buffers: --window)",
                    ),
                ];
                if let Some((f, _, tip)) = udp_only.iter().find(|x| x.1) {
                    return usage(format!("{f} applies to --proto udp{tip}"));
                }
                if a.control.is_some() {
                    return usage(
                        "--control applies to --proto udp (TCP data goes to the control address)"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// The iperf3 server of `--to iperf3://HOST[:PORT]`, if that is what --to names.
fn iperf3_server(a: &BlastArgs) -> Result<Option<std::net::SocketAddr>> {
    match a.to.as_deref().and_then(|t| t.strip_prefix("iperf3://")) {
        Some(host) => Ok(Some(iperf3_addr(host)?)),
        None => Ok(None),
    }
}

/// The TCP test blast's flags describe.
fn spec_of(a: &BlastArgs, len: u64) -> Result<TcpSpec> {
    let t = &a.tcp;
    Ok(TcpSpec {
        streams: t.streams,
        mode: match (t.reverse, t.bidir) {
            (true, _) => Mode::Reverse,
            (_, true) => Mode::Bidir,
            _ => Mode::Forward,
        },
        len: len as u32,
        window: t.window,
        mss: t.mss,
        congestion: t.congestion.clone(),
        no_delay: t.no_delay,
        fq_rate_bps: bits("--fq-rate", t.fq_rate)?,
        rate_bps: bits("--rate", a.rate)?,
        zerocopy: a.zerocopy,
        sendfile: t.sendfile,
        intervals: t.reverse || t.bidir,
        thread_per_stream: t.thread_per_stream,
    })
}

fn tcp_len(a: &BlastArgs) -> Result<u64> {
    let len = a.len.unwrap_or(DEFAULT_LEN as u64);
    if len as usize > MAX_LEN {
        crate::usage_bail!("--len {len} is too large for --proto tcp: at most {MAX_LEN}");
    }
    Ok(len)
}

/// `blast --to iperf3://HOST --proto tcp`: a TCP test against a stock `iperf3 -s`; netcore's
/// report, then the server's own figures as iperf3 returned them.
fn iperf3_blast(a: BlastArgs, server: std::net::SocketAddr) -> Result<ExitCode> {
    if a.tcp.fq_rate.is_some() {
        crate::usage_bail!("--fq-rate has no iperf3 parameter (try --rate)");
    }
    let len = tcp_len(&a)?;
    let plan = plan_of(&a, len as usize)?;
    let spec = spec_of(&a, len)?;
    signal::install()?;
    let format = a.output.format();
    let live = Live::new(format, a.progress.progress);
    let cpus = a.pin.list().map(<[usize]>::to_vec).unwrap_or_default();
    let o = crate::flow::iperf3::client::run(
        &crate::flow::iperf3::client::ClientOptions {
            server,
            spec,
            plan,
            cpus,
            interval: a.interval,
        },
        &mut print_intervals(live),
    )?;
    out(&o.report.render(format))?;
    let theirs = crate::flow::iperf3::client::server_lines(&o.server, false);
    if live.on_stdout() {
        out(&theirs)?;
    } else {
        eprint!("{theirs}");
    }
    Ok(interrupted_exit(o.report.interrupted))
}

/// Prints each interval's lines where the live lines go.
fn print_intervals(live: Live) -> impl FnMut(&TcpInterval) {
    move |row| live.line(&TcpReport::interval_lines(row))
}

pub fn blast(a: BlastArgs) -> Result<ExitCode> {
    if let Some(server) = iperf3_server(&a)? {
        return iperf3_blast(a, server);
    }
    let len = tcp_len(&a)?;
    let plan = plan_of(&a, len as usize)?;
    let spec = spec_of(&a, len)?;
    a.plot.check()?;
    let who = a.client.client()?;
    signal::install()?;
    let format = a.output.format();
    let cpus = match a.pin.list() {
        Some(l) => l.to_vec(),
        None if a.pin.pin => (0..affinity::available_cpus()).collect(),
        None => Vec::new(),
    };
    let stream = a.stream.open("blast", Some(&a.output))?;
    let (_, control, embedded) = target_of(&a, None)?;
    let live = Live::new(format, a.progress.progress).off_stdout(stream.on());
    let test_id: u64 = rand::random();
    stream.emit(EventKind::Start, |l| {
        l.kind("tcp")
            .test_id(format!("{test_id:016x}"))
            .peer(control)
            .data(&serde_json::json!({
                "plan": plan,
                "settings": spec,
            }))
    })?;
    let mut lines = print_intervals(live);
    let report = client::run(
        &TcpOptions {
            control,
            spec,
            plan,
            cpus,
            interval: a.interval,
            wait: a.rx.wait(),
            client: who,
            test_id,
        },
        &mut |row| {
            lines(row);
            let _ = stream.emit(EventKind::Interval, |l| l.kind("tcp").data(row));
        },
    );
    if let Some(e) = embedded {
        e.finish();
    }
    let report = stream.or_error(report)?;
    if let Some(p) = a.plot.file() {
        plot_sum(p, &report)?;
    }
    if stream.on() {
        stream.emit(EventKind::End, |l| {
            l.kind("tcp")
                .test_id(&report.test_id)
                .peer(control)
                .data(&report)
        })?;
        return Ok(interrupted_exit(report.interrupted));
    }
    out(&report.render(format))?;
    Ok(interrupted_exit(report.interrupted))
}

/// This side's sum per interval, in the unit the largest value reads best in; a run shorter
/// than one interval plots its average.
fn plot_sum(path: &std::path::Path, r: &TcpReport) -> Result<()> {
    let pts: Vec<(f64, f64)> = if r.intervals.is_empty() {
        r.sum.iter().map(|s| (s.recv_s, s.goodput_bps)).collect()
    } else {
        r.intervals.iter().map(|i| (i.t, i.sum_bps)).collect()
    };
    let (div, unit) = crate::units::BITS_PER_SEC.axis(pts.iter().map(|p| p.1).fold(0.0, f64::max));
    plot::line_chart(
        path,
        &format!(
            "netcore TCP blast to {} ({})",
            r.target,
            r.settings.mode.name()
        ),
        "time (s)",
        unit,
        &[Series::new(
            "sum",
            pts.into_iter().map(|(t, y)| (t, y / div)).collect(),
        )],
        &PlotOptions::default(),
    )
}
