//! `netcore compare`: the same sweep against every server model, one table and one plot.
//!
//! For each model the current executable is started as
//! `netcore serve --model M --listen 127.0.0.1:0 --proto P` ([`ServerProc`]); the address it
//! prints on its first stdout line is where the in-process load generator connects. After the
//! sweep the server gets SIGTERM, is waited for, and is killed if it does not exit in time
//! (also when `compare` fails half-way: the guard's `Drop` does it).
//!
//! # Time budget
//! A model gets `max_time` of wall-clock time for its whole sweep. The first point always runs;
//! before every later point its duration is estimated from the points before it (linear
//! extrapolation of the seconds per run through the last two points, or proportional to the
//! client count from a single point, never below the last point's time) times the number of
//! runs. If that does not fit in what is left of the budget, the point and every larger one are
//! marked *skipped* instead of being run. Independently, no single run may last longer than
//! `max_time`: a run stopped by that limit is marked *aborted* and ends the model's sweep. So an
//! iterative server that needs `3 s × clients` per run cannot keep `compare` busy for an hour.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::engine::{Mode, RunConfig};
use super::report::{PointResult, Setup};
use super::{run_point, RunResult};
use crate::stats::plot::{line_chart, PlotOptions, Series};
use crate::stats::table::Table;
use crate::stats::Report;
use crate::units::{fmt_micros, fmt_number, fmt_secs};

/// The JSON schema name of [`CompareReport`].
pub(crate) const SCHEMA: &str = "netcore.compare.v1";

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The tutorial's published medians (seconds) at 10 and 100 clients, 3 tasks of ~1 s each.
pub(crate) const TUTORIAL: [(&str, f64, f64); 3] = [
    ("iterative", 30.1, 300.4),
    ("process", 3.17, 4.15),
    ("thread", 3.08, 3.50),
];

/// A `netcore serve` child process.
pub struct ServerProc {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub model: String,
    /// The server's stdout lines after the first (its totals at exit).
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl ServerProc {
    /// Starts `exe serve --model MODEL --listen 127.0.0.1:0 EXTRA...` and waits for its address.
    pub fn start(exe: &Path, model: &str, extra: &[String]) -> Result<ServerProc> {
        let mut child = Command::new(exe)
            .args(["serve", "--model", model, "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start '{} serve'", exe.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut errpipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let se = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = errpipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = se.lock().unwrap_or_else(|p| p.into_inner());
                if s.len() < 64 * 1024 {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = ServerProc {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            model: model.to_string(),
            lines: rx,
            stderr,
        };
        // Waits in short slices, so that a stop request is seen within 100 ms.
        let t = Instant::now();
        let first = loop {
            match p.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => break Ok(l),
                Err(mpsc::RecvTimeoutError::Timeout)
                    if t.elapsed() < START_TIMEOUT && !crate::sys::signal::stop_requested() => {}
                Err(_) => break Err(()),
            }
        };
        let first = match first {
            Ok(l) => l,
            Err(()) => {
                p.kill();
                let err = p.stderr_text();
                bail!(
                    "server model '{model}' did not start: {}",
                    if err.is_empty() {
                        "no address printed".to_string()
                    } else {
                        err
                    }
                );
            }
        };
        p.addr = parse_listening(&first).ok_or_else(|| {
            anyhow!("server model '{model}' printed an unexpected first line: {first}")
        })?;
        Ok(p)
    }

    fn stderr_text(&self) -> String {
        let s = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL. Returns the server's last stdout line (its
    /// totals), if it printed one.
    pub fn stop(mut self) -> Result<Option<String>> {
        let Some(mut c) = self.child.take() else {
            return Ok(None);
        };
        let pid = c.id() as libc::pid_t;
        let _ = crate::sys::process::kill(pid, libc::SIGTERM);
        let t = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if t.elapsed() < STOP_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
        let mut last = None;
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            last = Some(l);
        }
        Ok(last)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The address in a `listening on ADDR ...` line.
pub(crate) fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("listening on ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Estimated seconds per run at `clients`, from the points measured before it
/// (`(clients, seconds per run)`, in increasing client order). See the module docs.
pub(crate) fn estimate(prev: &[(u32, f64)], clients: u32) -> Option<f64> {
    let &(c2, t2) = prev.last()?;
    let est = match prev.len() {
        1 => t2 * clients as f64 / c2.max(1) as f64,
        _ => {
            let (c1, t1) = prev[prev.len() - 2];
            let slope = (t2 - t1) / (c2 as f64 - c1 as f64).max(1.0);
            t2 + slope.max(0.0) * (clients as f64 - c2 as f64)
        }
    };
    Some(est.max(t2))
}

/// What `compare` runs.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub models: Vec<String>,
    pub clients: Vec<u32>,
    pub runs: u32,
    /// The load run (its address is replaced by each server's).
    pub run: RunConfig,
    /// Per-model time budget.
    pub max_time: Duration,
    /// Extra arguments for `serve` (e.g. `--proto echo`).
    pub serve_args: Vec<String>,
    /// The `netcore` executable to start servers from.
    pub exe: PathBuf,
    pub preset: Option<String>,
    /// For the report's setup block.
    pub setup: Setup,
}

/// One sweep point of one model.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ModelPoint {
    pub clients: u32,
    /// `ok`, `skipped` or `aborted`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<PointResult>,
}

/// One model's sweep.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ModelResult {
    pub model: String,
    pub addr: String,
    /// Seconds spent on this model's sweep.
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_totals: Option<String>,
    pub points: Vec<ModelPoint>,
}

/// A reference row from the tutorial (`--preset tutorial`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Reference {
    pub model: &'static str,
    pub clients_10_s: f64,
    pub clients_100_s: f64,
}

/// The result of `netcore compare`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CompareReport {
    pub schema: &'static str,
    /// Where the report came from: netcore's version and revision, the host, kernel, CPUs,
    /// pinned threads, sysctls, when (`stats::meta`; absent in reports of older versions).
    #[serde(default)]
    pub meta: crate::stats::meta::Meta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    pub max_time_s: f64,
    pub setup: Setup,
    pub models: Vec<ModelResult>,
    // `default` tells the generated schema the field may be absent.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tutorial_reference: Vec<Reference>,
    /// Stopped by SIGINT/SIGTERM: the models and points are those that ran (the last run
    /// maybe cut short); the server was stopped.
    pub interrupted: bool,
}

/// Runs the comparison; `on_run` is told each finished run's progress line. SIGINT/SIGTERM
/// (after [`crate::sys::signal::install`]) end the current run, stop its server and return
/// the report of what ran, marked interrupted.
pub fn run(cfg: &CompareConfig, on_run: &mut dyn FnMut(&str)) -> Result<CompareReport> {
    let mut models = Vec::new();
    for m in &cfg.models {
        if crate::sys::signal::stop_requested() {
            break;
        }
        models.push(run_model(cfg, m, on_run)?);
    }
    let tutorial_reference = if cfg.preset.as_deref() == Some("tutorial") {
        TUTORIAL
            .iter()
            .map(|&(model, a, b)| Reference {
                model,
                clients_10_s: a,
                clients_100_s: b,
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(CompareReport {
        schema: SCHEMA,
        meta: crate::stats::meta::Meta::gather(),
        preset: cfg.preset.clone(),
        max_time_s: cfg.max_time.as_secs_f64(),
        setup: cfg.setup.clone(),
        models,
        tutorial_reference,
        interrupted: crate::sys::signal::stop_requested(),
    })
}

fn run_model(
    cfg: &CompareConfig,
    model: &str,
    on_run: &mut dyn FnMut(&str),
) -> Result<ModelResult> {
    let server = ServerProc::start(&cfg.exe, model, &cfg.serve_args)?;
    let mut run = cfg.run.clone();
    run.addr = server.addr;
    run.limit = Some(cfg.max_time);
    let t0 = Instant::now();
    let mut prev: Vec<(u32, f64)> = Vec::new();
    let mut points = Vec::new();
    let mut stop_reason: Option<String> = None;
    for &clients in &cfg.clients {
        if crate::sys::signal::stop_requested() {
            break;
        }
        if let Some(r) = &stop_reason {
            points.push(ModelPoint {
                clients,
                status: "skipped",
                reason: Some(r.clone()),
                result: None,
            });
            continue;
        }
        let spent = t0.elapsed().as_secs_f64();
        let left = cfg.max_time.as_secs_f64() - spent;
        if let Some(est) = estimate(&prev, clients) {
            let need = est * cfg.runs as f64;
            if need > left {
                let r = format!(
                    "estimated {need:.1} s for {} run(s) > {:.1} s left of the {:.0} s budget",
                    cfg.runs,
                    left.max(0.0),
                    cfg.max_time.as_secs_f64()
                );
                stop_reason = Some(format!("after a skipped point ({} clients)", clients));
                points.push(ModelPoint {
                    clients,
                    status: "skipped",
                    reason: Some(r),
                    result: None,
                });
                continue;
            }
        }
        let tp = Instant::now();
        let p = run_point(&run, clients, cfg.runs, |r: &RunResult| {
            let proto = run.workload.proto().name();
            on_run(&r.progress_line(&format!("compare: {model}"), cfg.runs, proto));
        })
        .with_context(|| format!("model {model}, {clients} clients"))?;
        let per_run = tp.elapsed().as_secs_f64() / p.runs.len().max(1) as f64;
        prev.push((clients, per_run));
        let aborted = p.median.aborted;
        if aborted {
            stop_reason = Some(format!(
                "a run at {clients} clients hit the {:.0} s limit",
                cfg.max_time.as_secs_f64()
            ));
        }
        points.push(ModelPoint {
            clients,
            status: if aborted { "aborted" } else { "ok" },
            reason: aborted.then(|| {
                format!(
                    "a run was stopped by the {:.0} s per-run limit",
                    cfg.max_time.as_secs_f64()
                )
            }),
            result: Some(p),
        });
    }
    let elapsed_s = t0.elapsed().as_secs_f64();
    let addr = server.addr.to_string();
    let server_totals = server.stop()?;
    Ok(ModelResult {
        model: model.to_string(),
        addr,
        elapsed_s,
        server_totals,
        points,
    })
}

impl CompareReport {
    fn tasks_mode(&self) -> bool {
        self.setup.tasks_mode()
    }

    /// Errors summed over every model, point and run.
    pub(crate) fn total_errors(&self) -> u64 {
        self.models
            .iter()
            .flat_map(|m| &m.points)
            .filter_map(|p| p.result.as_ref())
            .map(|r| r.median.errors.total())
            .sum()
    }

    fn clients(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .models
            .iter()
            .flat_map(|m| m.points.iter().map(|p| p.clients))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Plots median wall time (tasks mode) or tasks/s (duration mode) against clients, one
    /// line per model, skipped points marked.
    pub fn plot(&self, path: &Path) -> Result<()> {
        let series: Vec<Series> = self
            .models
            .iter()
            .map(|m| {
                let mut s = Series::new(m.model.clone(), Vec::new());
                for p in &m.points {
                    match (&p.result, p.status) {
                        (Some(r), "ok") => s.points.push((
                            p.clients as f64,
                            if self.tasks_mode() {
                                r.median.wall_s
                            } else {
                                r.median.tasks_per_s
                            },
                        )),
                        _ => s.skipped.push(p.clients as f64),
                    }
                }
                s
            })
            .collect();
        let c = self.clients();
        let span = *c.last().unwrap_or(&1) as f64 / *c.first().unwrap_or(&1) as f64;
        let opts = PlotOptions {
            log_x: span >= 100.0,
            integer_x: true,
            ..PlotOptions::default()
        };
        let title = format!(
            "netcore compare: {} (median of {} runs)",
            self.setup.workload, self.setup.runs
        );
        let rate = format!(
            "median {}",
            crate::load::report::Unit::of(&self.setup.proto).rate
        );
        let y = if self.tasks_mode() {
            "median wall time (s)"
        } else {
            &rate
        };
        line_chart(path, &title, "clients", y, &series, &opts)
    }
}

impl Report for CompareReport {
    fn meta(&self) -> &crate::stats::meta::Meta {
        &self.meta
    }

    fn to_table(&self) -> String {
        let s = &self.setup;
        let mut out = format!(
            "compare {}{} runs={} max-time={:.0}s{}\n",
            s.brief(),
            s.duration_s
                .map(|d| format!(" duration={d}s"))
                .unwrap_or_default(),
            s.runs,
            self.max_time_s,
            self.preset
                .as_ref()
                .map(|p| format!(" preset={p}"))
                .unwrap_or_default(),
        );
        let mut header = vec!["clients".to_string()];
        header.extend(self.models.iter().map(|m| m.model.clone()));
        let mut t = Table::new(header);
        let mut notes = Vec::new();
        for c in self.clients() {
            let mut row = vec![c.to_string()];
            for m in &self.models {
                let cell = match m.points.iter().find(|p| p.clients == c) {
                    None => "-".to_string(),
                    Some(p) => match (&p.result, p.status) {
                        (Some(r), st) => {
                            let e = r.median.errors.total();
                            let mut cell = format!(
                                "{} / {}/s",
                                fmt_secs(r.median.wall_s),
                                fmt_number(r.median.tasks_per_s)
                            );
                            if !self.tasks_mode() {
                                cell = format!(
                                    "{}/s p99 {}",
                                    fmt_number(r.median.tasks_per_s),
                                    fmt_micros(r.median.p99_us)
                                );
                            }
                            if st == "aborted" {
                                cell.push_str(" (aborted)");
                            }
                            if r.median.interrupted {
                                cell.push_str(" (interrupted)");
                            }
                            if e > 0 {
                                cell.push_str(" !");
                                notes.push(format!(
                                    "! {} at {c} clients: errors {}",
                                    m.model,
                                    r.median.errors.brief()
                                ));
                            }
                            cell
                        }
                        (None, _) => "skipped".to_string(),
                    },
                };
                row.push(cell);
            }
            t.row(row);
        }
        out.push_str(&t.render());
        let rate = crate::load::report::Unit::of(&s.proto).rate;
        out.push_str(&if self.tasks_mode() {
            format!("cells: median wall time / median {rate}")
        } else {
            format!("cells: median {rate}, median p99 latency")
        });
        out.push_str(&format!(
            " over {} run(s); skipped: over the time budget\n",
            s.runs
        ));
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
        let points: Vec<PointResult> = self
            .models
            .iter()
            .flat_map(|m| m.points.iter().filter_map(|p| p.result.clone()))
            .collect();
        for w in crate::load::report::open_loop_warnings(&points, "compare") {
            out.push_str(&w);
            out.push('\n');
        }
        if self.interrupted {
            out.push_str("interrupted: the report covers what ran before the signal\n");
        }
        if !self.tutorial_reference.is_empty() {
            let mut r = Table::new(["tutorial (Python)", "10 clients", "100 clients"]);
            for x in &self.tutorial_reference {
                r.row([
                    x.model.to_string(),
                    fmt_secs(x.clients_10_s),
                    fmt_secs(x.clients_100_s),
                ]);
            }
            out.push('\n');
            out.push_str(&r.render());
        }
        out
    }

    fn to_csv(&self) -> String {
        let mut t = Table::new([
            "model",
            "clients",
            "status",
            "runs",
            "wall_s",
            "tasks_per_s",
            "p50_us",
            "p99_us",
            "max_us",
            "errors",
        ]);
        for m in &self.models {
            for p in &m.points {
                match &p.result {
                    Some(r) => {
                        let x = &r.median;
                        t.row([
                            m.model.clone(),
                            p.clients.to_string(),
                            p.status.to_string(),
                            x.runs.to_string(),
                            format!("{:.6}", x.wall_s),
                            format!("{:.3}", x.tasks_per_s),
                            format!("{:.1}", x.p50_us),
                            format!("{:.1}", x.p99_us),
                            format!("{:.1}", x.max_us),
                            x.errors.total().to_string(),
                        ]);
                    }
                    None => {
                        t.row([
                            m.model.clone(),
                            p.clients.to_string(),
                            p.status.to_string(),
                            "0".into(),
                            String::new(),
                            String::new(),
                            String::new(),
                            String::new(),
                            String::new(),
                            String::new(),
                        ]);
                    }
                }
            }
        }
        t.to_csv()
    }
}

/// The default run settings of `--preset tutorial`: 3 tasks of `SLEEP 1000` per client.
pub fn tutorial_mode() -> (Mode, &'static str) {
    (Mode::Tasks(3), "SLEEP 1000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines() {
        assert_eq!(
            parse_listening("listening on 127.0.0.1:4242 model=epoll proto=task"),
            Some("127.0.0.1:4242".parse().unwrap())
        );
        assert_eq!(parse_listening("hello"), None);
        assert_eq!(parse_listening("listening on nowhere"), None);
    }

    #[test]
    fn estimates() {
        assert_eq!(estimate(&[], 10), None);
        // One point: proportional.
        assert_eq!(estimate(&[(10, 30.0)], 20), Some(60.0));
        // Two points: linear trend; flat stays flat.
        assert_eq!(estimate(&[(10, 30.0), (20, 60.0)], 40), Some(120.0));
        assert_eq!(estimate(&[(10, 3.0), (20, 3.0)], 100), Some(3.0));
        // Never below the last measured point.
        assert_eq!(estimate(&[(10, 3.2), (20, 3.0)], 100), Some(3.0));
    }
}
