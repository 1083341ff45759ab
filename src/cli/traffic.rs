//! `netcore traffic`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::common::{Live, OutputArgs, PlotArg, ProgressArg};
use crate::stats::plot::{self, PlotOptions, Series};
use crate::stats::Report;
use crate::traffic::report::TrafficReport;
use crate::traffic::{self, Flow, Pace, TrafficConfig, HEADER, MAX_MESSAGE};
use crate::units;

/// A warning per flow that received less than 90 % of `--rate` (asked per flow) over a run
/// that was not cut short: the generator or the path could not keep the pace.
fn missed_pace(report: &TrafficReport, rate_bps: f64) -> Vec<String> {
    if report.interrupted {
        return Vec::new();
    }
    report
        .totals
        .iter()
        .filter(|(_, t)| t.recv_bits_per_sec < 0.9 * rate_bps)
        .map(|(f, t)| {
            format!(
                "the {} flow received {} of the {} asked (--rate, per flow): the pace was missed",
                f.name(),
                units::fmt_bits_per_sec(t.recv_bits_per_sec),
                units::fmt_bits_per_sec(rate_bps)
            )
        })
        .collect()
}

fn rate(s: &str) -> Result<f64, String> {
    match units::parse_rate(s).map_err(|e| e.to_string())? {
        units::Rate::BitsPerSec(b) => Ok(b),
        units::Rate::PacketsPerSec(_) => Err(format!(
            "invalid rate '{s}': give a bit rate (e.g. 100Mbps), not packets"
        )),
    }
}

/// `50..500`: message sizes in bytes, inclusive.
fn size_range(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("invalid size range '{s}': write MIN..MAX, e.g. 50..500"))?;
    let b = b.strip_prefix('=').unwrap_or(b);
    let a = units::parse_size(a).map_err(|e| e.to_string())? as usize;
    let b = units::parse_size(b).map_err(|e| e.to_string())? as usize;
    if a > b {
        return Err(format!("invalid size range '{s}': {a} is larger than {b}"));
    }
    if a < HEADER {
        return Err(format!(
            "invalid size range '{s}': messages need at least {HEADER} bytes (their header)"
        ));
    }
    Ok((a, b))
}

fn flows(s: &str) -> Result<Flows, String> {
    let mut v = Vec::new();
    for p in s.split(',') {
        let f = match p.trim().to_ascii_lowercase().as_str() {
            "tcp" => Flow::Tcp,
            "udp" => Flow::Udp,
            other => return Err(format!("unknown flow '{other}' (use tcp, udp)")),
        };
        if v.contains(&f) {
            return Err(format!("flow '{p}' given twice"));
        }
        v.push(f);
    }
    Ok(Flows(v))
}

/// The flows to run (one value for clap).
#[derive(Debug, Clone)]
pub struct Flows(Vec<Flow>);

/// Concurrent TCP and UDP flows of random-size messages on loopback, a per-interval monitor of
/// what each client received, and a plot.
#[derive(Args, Debug)]
pub struct TrafficArgs {
    /// How long the servers send
    #[arg(long, value_parser = units::parse_nonzero_duration, default_value = "10s", allow_hyphen_values = true)]
    pub duration: Duration,
    /// Monitor interval (at least 10ms)
    #[arg(long, value_parser = units::parse_nonzero_duration, default_value = "1s", allow_hyphen_values = true)]
    pub interval: Duration,
    /// Message sizes in bytes, MIN..MAX inclusive (header of 12 bytes included)
    #[arg(long, value_parser = size_range, default_value = "50..500", allow_hyphen_values = true)]
    pub size: (usize, usize),
    /// Each server sends one message every this long
    #[arg(long, value_parser = units::parse_nonzero_duration, conflicts_with = "rate", allow_hyphen_values = true)]
    pub every: Option<Duration>,
    /// Each server sends messages at this bit rate instead (e.g. 100Mbps)
    #[arg(long, value_parser = rate, allow_hyphen_values = true)]
    pub rate: Option<f64>,
    /// Which flows run
    #[arg(long, value_parser = flows, default_value = "tcp,udp")]
    pub flows: Flows,
    #[command(flatten)]
    pub plot: PlotArg,
    /// Seed of the message-size generators
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub progress: ProgressArg,
}

/// The shortest `--interval`: each interval is a sample kept in memory and a line printed.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(10);

const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

fn sparkline(v: &[u64]) -> String {
    let max = v.iter().copied().max().unwrap_or(0).max(1);
    v.iter()
        .map(|&x| SPARK[((x as f64 / max as f64) * 7.0).round() as usize])
        .collect()
}

pub fn run(a: TrafficArgs) -> Result<ExitCode> {
    let (min, max) = a.size;
    if a.flows.0.contains(&Flow::Udp) && max > MAX_MESSAGE {
        crate::usage_bail!(
            "--size up to {max} bytes: UDP messages are limited to {MAX_MESSAGE} bytes"
        );
    }
    if max > MAX_MESSAGE {
        crate::usage_bail!("--size up to {max} bytes: messages are limited to {MAX_MESSAGE} bytes");
    }
    if a.interval < MIN_INTERVAL {
        crate::usage_bail!(
            "--interval {:?} is too short: the monitor samples at most every {:?}",
            a.interval,
            MIN_INTERVAL
        );
    }
    if a.interval > a.duration {
        crate::usage_bail!(
            "--interval {:?} is longer than --duration {:?}",
            a.interval,
            a.duration
        );
    }
    a.plot.check()?;
    let cfg = TrafficConfig {
        duration: a.duration,
        interval: a.interval,
        min_size: min,
        max_size: max,
        pace: match (a.every, a.rate) {
            (_, Some(r)) => Pace::BitsPerSec(r),
            (Some(d), None) => Pace::Every(d),
            (None, None) => Pace::Every(Duration::from_secs(1)),
        },
        flows: a.flows.0.clone(),
        seed: a.seed,
    };
    let format = a.output.format();
    let live = Live::new(format, a.progress.progress);
    let tty = std::io::stdout().is_terminal();
    let interval_s = a.interval.as_secs_f64();
    let mut history: Vec<Vec<u64>> = vec![Vec::new(); cfg.flows.len()];
    let report = traffic::run(&cfg, &mut |s, totals| {
        if !live.any() {
            return;
        }
        let udp_lost = totals
            .get(&Flow::Udp)
            .map(|c| c.sent_msgs.saturating_sub(c.recv_msgs));
        let mut line = TrafficReport::interval_line(s, interval_s, udp_lost);
        if tty {
            for (i, (f, v)) in s.flows.iter().enumerate() {
                history[i].push(v.bytes);
                let h = &history[i];
                let tail = &h[h.len().saturating_sub(30)..];
                line.push_str(&format!("  {} {}", f.name(), sparkline(tail)));
            }
        }
        line.push('\n');
        live.line(&line);
    })?;
    if let Some(p) = a.plot.file() {
        // In the unit the largest interval reads best in (KB, MB, ...).
        let max = report
            .intervals
            .iter()
            .flat_map(|s| s.flows.values().map(|v| v.bytes as f64))
            .fold(0.0, f64::max);
        let (div, unit) = units::BYTES_DECIMAL.axis(max);
        let series: Vec<Series> = cfg
            .flows
            .iter()
            .map(|f| {
                Series::new(
                    f.name(),
                    report
                        .intervals
                        .iter()
                        .map(|s| (s.t, s.flows.get(f).map_or(0, |v| v.bytes) as f64 / div))
                        .collect(),
                )
            })
            .collect();
        plot::line_chart(
            p,
            "netcore traffic: bytes received per interval",
            "time (s)",
            &format!("{unit} per {:?}", a.interval),
            &series,
            &PlotOptions::default(),
        )?;
    }
    if let Pace::BitsPerSec(r) = cfg.pace {
        for w in missed_pace(&report, r) {
            eprintln!("netcore: {w}");
        }
    }
    let mut o = std::io::stdout().lock();
    o.write_all(report.render(format).as_bytes())?;
    if let (Some(p), true) = (a.plot.file(), live.on_stdout()) {
        writeln!(o, "plot written to {}", p.display())?;
    }
    o.flush()?;
    Ok(ExitCode::SUCCESS)
}
