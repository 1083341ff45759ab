//! The load report: per sweep point, every run's figures and their medians; rendered as a
//! table, JSON (schema [`SCHEMA`]) or CSV.

use serde::Serialize;

use super::engine::{ErrorCounts, RunOutcome, StatusCounts};
use crate::stats::hist::{median, Percentiles};
use crate::stats::table::Table;
use crate::stats::Report;
use crate::units::{fmt_count, fmt_micros, fmt_number, fmt_pct, fmt_per_sec, fmt_secs};

/// The JSON schema name of [`LoadReport`].
pub(crate) const SCHEMA: &str = "netcore.load.v1";

/// What one task is called in a report: a request for HTTP (as wrk says req/s), else a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unit {
    /// The count's column: `requests` or `tasks`.
    pub count: &'static str,
    /// The rate's column: `req/s` or `tasks/s`.
    pub rate: &'static str,
    /// Before `/s` in a line: `req` or `tasks`.
    pub short: &'static str,
}

impl Unit {
    /// The unit of a run of protocol `proto` (`http`, `task`, `echo`).
    pub fn of(proto: &str) -> Unit {
        if proto == "http" {
            Unit {
                count: "requests",
                rate: "req/s",
                short: "req",
            }
        } else {
            Unit {
                count: "tasks",
                rate: "tasks/s",
                short: "tasks",
            }
        }
    }
}

/// Min and max counted tasks per client: how evenly the server served its clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Fairness {
    pub min: u64,
    pub max: u64,
}

/// Open loop (`--rate`): what the schedule asked for and what went out. `missed` requests were
/// due but never sent (the generator or the connection's in-flight cap fell behind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OpenLoop {
    pub scheduled: u64,
    pub sent: u64,
    pub missed: u64,
}

impl OpenLoop {
    /// The share of scheduled requests that were never sent (0..=1).
    pub(crate) fn missed_share(&self) -> f64 {
        if self.scheduled == 0 {
            0.0
        } else {
            self.missed as f64 / self.scheduled as f64
        }
    }

    /// `scheduled 20,000, sent 2,000, missed 18,000 (90.0%)`
    pub(crate) fn brief(&self) -> String {
        format!(
            "scheduled {}, sent {}, missed {} ({})",
            fmt_count(self.scheduled),
            fmt_count(self.sent),
            fmt_count(self.missed),
            fmt_pct(100.0 * self.missed_share())
        )
    }

    /// Falling this far behind earns a warning.
    pub fn behind(&self) -> bool {
        self.missed_share() > 0.01
    }

    fn add(&mut self, o: &OpenLoop) {
        self.scheduled += o.scheduled;
        self.sent += o.sent;
        self.missed += o.missed;
    }
}

/// One run of one sweep point.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct RunResult {
    pub run: u32,
    pub clients: u32,
    /// Tasks mode: first connect to last close. Duration mode: the measured window.
    pub wall_s: f64,
    /// Successful, counted tasks.
    pub tasks: u64,
    pub tasks_per_s: f64,
    /// Task latency (µs).
    pub latency_us: Percentiles,
    /// Connect time (µs), reported apart from the task latency.
    pub connect_us: Percentiles,
    pub connected: u64,
    pub failed_clients: u64,
    pub errors: ErrorCounts,
    pub fairness: Fairness,
    /// Stopped by a time limit before it finished.
    pub aborted: bool,
    /// Stopped by SIGINT/SIGTERM before it finished.
    pub interrupted: bool,
    /// Requests still waiting for a reply when the run ended (not tasks, not in the latency).
    pub unanswered: u64,
    /// The longest an unanswered request had waited when the run ended (µs; 0 if none).
    #[serde(default)]
    pub unanswered_wait_max_us: f64,
    /// Open loop only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// HTTP: responses by status code.
    #[serde(default, skip_serializing_if = "StatusCounts::is_empty")]
    pub status: StatusCounts,
    /// HTTP: connections opened after a client's first, because the server closed the one
    /// before (`Connection: close`, HTTP/1.0, a body delimited by the close, an error).
    #[serde(default)]
    pub reconnects: u64,
}

impl RunResult {
    /// The progress line printed to a terminal after each run: `load: clients=10 run 1/3: ...`
    /// (`who` names the command and, for `compare`, the model).
    /// `proto` names what a task is (`req` for HTTP).
    pub(crate) fn progress_line(&self, who: &str, runs: u32, proto: &str) -> String {
        format!(
            "{who} clients={} run {}/{runs}: wall {}, {}, p99 {}, errors {}",
            self.clients,
            self.run,
            fmt_secs(self.wall_s),
            fmt_per_sec(self.tasks_per_s, Unit::of(proto).short),
            fmt_micros(self.latency_us.p99),
            self.errors.brief()
        )
    }
}

impl RunResult {
    pub(crate) fn from_outcome(run: u32, o: &RunOutcome) -> RunResult {
        RunResult {
            run,
            clients: o.clients,
            wall_s: o.wall.as_secs_f64(),
            tasks: o.tasks,
            tasks_per_s: o.tasks_per_s,
            latency_us: o.latency.summary(1000.0),
            connect_us: o.connect.summary(1000.0),
            connected: o.connected,
            failed_clients: o.failed_clients,
            errors: o.errors,
            fairness: Fairness {
                min: o.per_client.iter().copied().min().unwrap_or(0),
                max: o.per_client.iter().copied().max().unwrap_or(0),
            },
            aborted: o.aborted,
            interrupted: o.interrupted,
            unanswered: o.unanswered,
            unanswered_wait_max_us: o.unanswered_wait.as_secs_f64() * 1e6,
            open_loop: (o.scheduled > 0 || o.sent > 0).then(|| OpenLoop {
                scheduled: o.scheduled,
                sent: o.sent,
                missed: o.scheduled.saturating_sub(o.sent),
            }),
            first_error: o.first_error.clone(),
            status: o.status.clone(),
            reconnects: o.reconnects,
        }
    }
}

/// Medians over the runs of a point (errors and fairness extremes are over all runs).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub runs: u32,
    pub wall_s: f64,
    pub tasks: f64,
    pub tasks_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub connect_p50_us: f64,
    pub connect_p99_us: f64,
    pub connect_max_us: f64,
    /// Sum over the runs.
    pub errors: ErrorCounts,
    /// Smallest per-client count of any run, largest of any run.
    pub fairness: Fairness,
    pub aborted: bool,
    pub interrupted: bool,
    /// Sum over the runs.
    pub unanswered: u64,
    /// The longest of the runs' `unanswered_wait_max_us`.
    #[serde(default)]
    pub unanswered_wait_max_us: f64,
    /// Open loop only: sums over the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoop>,
    /// HTTP: responses by status code, summed over the runs.
    #[serde(default, skip_serializing_if = "StatusCounts::is_empty")]
    pub status: StatusCounts,
    /// HTTP: reconnects, summed over the runs.
    #[serde(default)]
    pub reconnects: u64,
}

impl Summary {
    /// Medians of `runs` (all zero for none).
    pub fn of(runs: &[RunResult]) -> Summary {
        let m = |f: &dyn Fn(&RunResult) -> f64| {
            median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        let mut errors = ErrorCounts::default();
        let mut status = StatusCounts::default();
        for r in runs {
            errors.merge(&r.errors);
            status.merge(&r.status);
        }
        Summary {
            runs: runs.len() as u32,
            wall_s: m(&|r| r.wall_s),
            tasks: m(&|r| r.tasks as f64),
            tasks_per_s: m(&|r| r.tasks_per_s),
            p50_us: m(&|r| r.latency_us.p50),
            p90_us: m(&|r| r.latency_us.p90),
            p99_us: m(&|r| r.latency_us.p99),
            p999_us: m(&|r| r.latency_us.p999),
            max_us: m(&|r| r.latency_us.max),
            connect_p50_us: m(&|r| r.connect_us.p50),
            connect_p99_us: m(&|r| r.connect_us.p99),
            connect_max_us: m(&|r| r.connect_us.max),
            errors,
            fairness: Fairness {
                min: runs.iter().map(|r| r.fairness.min).min().unwrap_or(0),
                max: runs.iter().map(|r| r.fairness.max).max().unwrap_or(0),
            },
            aborted: runs.iter().any(|r| r.aborted),
            interrupted: runs.iter().any(|r| r.interrupted),
            unanswered: runs.iter().map(|r| r.unanswered).sum(),
            unanswered_wait_max_us: runs
                .iter()
                .map(|r| r.unanswered_wait_max_us)
                .fold(0.0, f64::max),
            open_loop: runs
                .iter()
                .filter_map(|r| r.open_loop)
                .fold(None, |acc, o| {
                    let mut a: OpenLoop = acc.unwrap_or_default();
                    a.add(&o);
                    Some(a)
                }),
            status,
            reconnects: runs.iter().map(|r| r.reconnects).sum(),
        }
    }
}

/// One sweep point: its runs and their medians.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct PointResult {
    pub clients: u32,
    pub median: Summary,
    pub runs: Vec<RunResult>,
}

/// What was run (echoed in the report).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Setup {
    pub target: String,
    pub proto: String,
    /// `tasks` or `duration`.
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_per_client: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_s: Option<f64>,
    /// The request line (`--task`), the mix file, or the echo payload size.
    pub workload: String,
    pub think_s: f64,
    /// Open loop: total tasks/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub timeout_s: f64,
    pub connect_timeout_s: f64,
    pub runs: u32,
    pub threads: u32,
    /// CPUs the load threads were pinned to (empty: not pinned).
    pub cpus: Vec<usize>,
    /// The load threads busy-polled (`--spin`).
    #[serde(default)]
    pub spin: bool,
}

impl Setup {
    /// A fixed number of tasks per client (else a duration).
    pub(crate) fn tasks_mode(&self) -> bool {
        self.mode == "tasks"
    }

    /// `proto=P mode=M workload=W[ tasks/client=N]`: how a report's first line goes on.
    pub(crate) fn brief(&self) -> String {
        format!(
            "proto={} mode={} workload={}{}",
            self.proto,
            self.mode,
            self.workload,
            self.tasks_per_client
                .map(|t| format!(" tasks/client={t}"))
                .unwrap_or_default(),
        )
    }
}

/// The result of `netcore load`.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct LoadReport {
    pub schema: &'static str,
    /// Where the report came from: netcore's version and revision, the host, kernel, CPUs,
    /// pinned threads, sysctls, when (`stats::meta`; absent in reports of older versions).
    #[serde(default)]
    pub meta: crate::stats::meta::Meta,
    pub setup: Setup,
    pub points: Vec<PointResult>,
    /// Stopped by SIGINT/SIGTERM: the points are those that ran (the last one maybe cut short).
    pub interrupted: bool,
}

impl LoadReport {
    /// Tasks expected from a tasks-mode point: clients × tasks per client.
    pub fn expected_tasks(&self, clients: u32) -> Option<u64> {
        self.setup
            .tasks_per_client
            .map(|t| t as u64 * clients as u64)
    }

    /// Warnings about the open loop falling behind its schedule, one per point.
    pub(crate) fn open_loop_warnings(&self) -> Vec<String> {
        open_loop_warnings(&self.points, "load")
    }

    /// Errors summed over every point and run.
    pub(crate) fn total_errors(&self) -> u64 {
        self.points.iter().map(|p| p.median.errors.total()).sum()
    }
}

impl LoadReport {
    /// The lines under the table, per point: the open loop, requests unanswered, the HTTP
    /// statuses (and classes, reconnects).
    fn notes(&self) -> String {
        let mut out = String::new();
        for p in &self.points {
            let m = &p.median;
            if let Some(o) = m.open_loop {
                out.push_str(&format!("clients={}: open loop {}\n", p.clients, o.brief()));
            }
            if m.unanswered > 0 {
                out.push_str(&format!(
                    "clients={}: {} request{} still unanswered at the end (the longest had waited {}; not in the latency)\n",
                    p.clients,
                    fmt_count(m.unanswered),
                    if m.unanswered == 1 { "" } else { "s" },
                    fmt_micros(m.unanswered_wait_max_us)
                ));
            }
        }
        for p in self.points.iter().filter(|p| !p.median.status.is_empty()) {
            let runs = match p.median.runs {
                1 => String::new(),
                n => format!(", summed over {n} runs"),
            };
            let m = &p.median;
            out.push_str(&format!(
                "HTTP status, {} clients{runs}: {}; non-2xx/3xx: {}{}\n",
                p.clients,
                m.status.brief(),
                fmt_count(m.status.non_2xx_3xx()),
                match m.reconnects {
                    0 => String::new(),
                    n => format!("; reconnects: {}", fmt_count(n)),
                }
            ));
        }
        out
    }
}

/// One warning per point whose open loop missed more than 1 % of its schedule.
pub(crate) fn open_loop_warnings(points: &[PointResult], who: &str) -> Vec<String> {
    points
        .iter()
        .filter_map(|p| {
            let o = p.median.open_loop?;
            o.behind().then(|| {
                format!(
                    "{who}: warning: clients={} fell behind the open-loop rate: {}",
                    p.clients,
                    o.brief()
                )
            })
        })
        .collect()
}

impl Report for LoadReport {
    fn meta(&self) -> &crate::stats::meta::Meta {
        &self.meta
    }

    fn to_table(&self) -> String {
        let s = &self.setup;
        let mut out = format!(
            "load {} {}{} runs={} threads={}{}\n",
            s.target,
            s.brief(),
            s.duration_s
                .map(|d| format!(" duration={d}s warmup={}s", s.warmup_s.unwrap_or(0.0)))
                .unwrap_or_default(),
            s.runs,
            s.threads,
            if s.cpus.is_empty() {
                String::new()
            } else {
                format!(
                    " pinned={}",
                    s.cpus
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            },
        );
        if s.think_s > 0.0 || s.rate.is_some() {
            out.push_str(&format!(
                "think={}s{}\n",
                s.think_s,
                s.rate
                    .map(|r| format!(" rate={r}/s (open loop)"))
                    .unwrap_or_default()
            ));
        }
        let unit = Unit::of(&s.proto);
        let mut t = Table::new([
            "clients",
            "wall",
            unit.count,
            unit.rate,
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "connect p99",
            "fair min/max",
            "errors",
        ]);
        for p in &self.points {
            let m = &p.median;
            let none = p.runs.iter().all(|r| r.latency_us.count == 0);
            let lat = |v: f64| if none { "-".to_string() } else { fmt_micros(v) };
            let conn_none = p.runs.iter().all(|r| r.connect_us.count == 0);
            t.row([
                p.clients.to_string(),
                fmt_secs(m.wall_s),
                fmt_number(m.tasks),
                fmt_number(m.tasks_per_s),
                lat(m.p50_us),
                lat(m.p90_us),
                lat(m.p99_us),
                lat(m.p999_us),
                lat(m.max_us),
                if conn_none {
                    "-".to_string()
                } else {
                    fmt_micros(m.connect_p99_us)
                },
                format!(
                    "{}/{}",
                    fmt_count(m.fairness.min),
                    fmt_count(m.fairness.max)
                ),
                format!(
                    "{}{}{}",
                    m.errors.brief(),
                    if m.aborted { " (aborted)" } else { "" },
                    if m.interrupted { " (interrupted)" } else { "" }
                ),
            ]);
        }
        out.push_str(&t.render());
        out.push_str(&self.notes());
        if self.interrupted {
            out.push_str("interrupted: the report covers what ran before the signal\n");
        }
        if self.setup.runs > 1 {
            out.push_str(&format!(
                "medians of {} runs; errors summed over the runs\n",
                self.setup.runs
            ));
        }
        out
    }

    fn to_csv(&self) -> String {
        let mut t = Table::new([
            "clients",
            "run",
            "wall_s",
            "tasks",
            "tasks_per_s",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "connect_p50_us",
            "connect_p99_us",
            "connect_max_us",
            "fair_min",
            "fair_max",
            "refused",
            "reset",
            "closed",
            "timeout",
            "bad_reply",
            "malformed",
            "err_reply",
            "other",
            "starved",
            "aborted",
        ]);
        for p in &self.points {
            for r in &p.runs {
                let (lat, conn) = (&r.latency_us, &r.connect_us);
                let head = [
                    p.clients.to_string(),
                    r.run.to_string(),
                    format!("{:.6}", r.wall_s),
                    r.tasks.to_string(),
                    format!("{:.3}", r.tasks_per_s),
                ];
                let us = [
                    lat.p50, lat.p90, lat.p99, lat.p999, lat.max, conn.p50, conn.p99, conn.max,
                ];
                t.row(
                    head.into_iter()
                        .chain(csv_tail(us, &r.fairness, &r.errors, r.aborted)),
                );
            }
            let m = &p.median;
            let head = [
                p.clients.to_string(),
                "median".into(),
                format!("{:.6}", m.wall_s),
                format!("{:.1}", m.tasks),
                format!("{:.3}", m.tasks_per_s),
            ];
            let us = [
                m.p50_us,
                m.p90_us,
                m.p99_us,
                m.p999_us,
                m.max_us,
                m.connect_p50_us,
                m.connect_p99_us,
                m.connect_max_us,
            ];
            t.row(
                head.into_iter()
                    .chain(csv_tail(us, &m.fairness, &m.errors, m.aborted)),
            );
        }
        t.to_csv()
    }
}

/// The CSV columns from `p50_us` on, the same for a run and for the median: latency and
/// connect times (µs: p50, p90, p99, p99.9 and max of the tasks, p50, p99 and max of the
/// connects), fairness, the errors by kind, aborted.
fn csv_tail(
    us: [f64; 8],
    fairness: &Fairness,
    errors: &ErrorCounts,
    aborted: bool,
) -> impl Iterator<Item = String> {
    us.into_iter()
        .map(|v| format!("{v:.1}"))
        .chain([fairness.min.to_string(), fairness.max.to_string()])
        .chain(errors.by_kind().into_iter().map(|(_, n)| n.to_string()))
        .chain([aborted.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::engine::StatusCounts;

    fn run(wall: f64, tps: f64, p99: f64, timeouts: u64, fair: (u64, u64)) -> RunResult {
        RunResult {
            wall_s: wall,
            tasks_per_s: tps,
            latency_us: Percentiles {
                p99,
                ..Percentiles::default()
            },
            errors: ErrorCounts {
                timeout: timeouts,
                ..ErrorCounts::default()
            },
            fairness: Fairness {
                min: fair.0,
                max: fair.1,
            },
            ..RunResult::default()
        }
    }

    #[test]
    fn medians_over_runs() {
        let runs = [
            run(3.2, 10.0, 900.0, 0, (3, 3)),
            run(3.0, 30.0, 100.0, 1, (2, 3)),
            run(3.1, 20.0, 500.0, 2, (3, 4)),
        ];
        let s = Summary::of(&runs);
        assert_eq!(s.runs, 3);
        assert_eq!(s.wall_s, 3.1);
        assert_eq!(s.tasks_per_s, 20.0);
        assert_eq!(s.p99_us, 500.0);
        assert_eq!(s.errors.timeout, 3, "errors are summed, not medianed");
        assert_eq!(s.fairness, Fairness { min: 2, max: 4 });
        let s2 = Summary::of(&runs[..2]);
        assert!(
            (s2.wall_s - 3.1).abs() < 1e-12,
            "even count: mean of the middle two"
        );
        assert_eq!(Summary::of(&[]).runs, 0);
    }

    #[test]
    fn renders() {
        let mut r = LoadReport {
            schema: SCHEMA,
            ..LoadReport::default()
        };
        r.setup.runs = 2;
        r.setup.tasks_per_client = Some(3);
        r.points.push(PointResult {
            clients: 4,
            median: Summary::of(&[run(1.0, 12.0, 10.0, 0, (3, 3))]),
            runs: vec![run(1.0, 12.0, 10.0, 0, (3, 3))],
        });
        let t = r.to_table();
        assert!(t.contains("clients") && t.contains("fair min/max"), "{t}");
        let csv = r.to_csv();
        assert_eq!(csv.lines().count(), 3, "{csv}");
        assert!(csv.lines().nth(2).unwrap().starts_with("4,median,"));
        let j: serde_json::Value =
            serde_json::from_str(&r.render(crate::stats::Format::Json)).unwrap();
        assert_eq!(j["schema"], SCHEMA);
        assert_eq!(r.expected_tasks(4), Some(12));
    }

    #[test]
    fn http_statuses_by_class_and_reconnects() {
        let mut status = StatusCounts::default();
        for (code, n) in [(200, 5), (301, 1), (404, 2), (503, 1), (101, 1)] {
            for _ in 0..n {
                status.add(code);
            }
        }
        assert_eq!(status.non_2xx_3xx(), 4);
        let one = RunResult {
            status,
            reconnects: 3,
            ..run(1.0, 10.0, 5.0, 0, (5, 5))
        };
        let mut r = LoadReport::default();
        r.points.push(PointResult {
            clients: 2,
            median: Summary::of(&[one.clone(), one.clone()]),
            runs: vec![one.clone(), one],
        });
        let t = r.to_table();
        assert!(
            t.contains("HTTP status, 2 clients, summed over 2 runs: 101=2 200=10 301=2 404=4 503=2; non-2xx/3xx: 8; reconnects: 6"),
            "{t}"
        );
    }
}
