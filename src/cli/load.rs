//! `netcore load`: flags, validation, and the glue to [`crate::load`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::common::{out, OutputArgs, PinArgs, PlotArg, ProgressArg, StreamArg};
use crate::load::report::{LoadReport, Setup, SCHEMA};
use crate::load::workload::Workload;
use crate::load::{run_point, sweep, Mode, RunConfig, RunResult};
use crate::stats::events::EventKind;
use crate::stats::Report;
use crate::units::{parse_duration, parse_nonzero_duration, parse_nonzero_size};

/// Exit status of a run that completed but counted errors.
pub(crate) const EXIT_ERRORS: u8 = 3;

/// The protocol the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    /// Line-based task protocol (replies checked against the task session)
    Task,
    /// Raw echo of --size byte payloads (replies checked byte for byte)
    Echo,
    /// HTTP/1.1 GET of --path over keep-alive connections, any server (statuses tallied;
    /// checked against netcore's answers where the server says it is netcore)
    Http,
}

/// What every client does (shared by `load` and `compare`).
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Tasks per client [default: 10; `load URL` runs -d 10s instead, as wrk]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000_000), conflicts_with = "duration")]
    pub tasks: Option<u32>,
    /// The request every task sends (task protocol) [default: "ECHO hello"]
    #[arg(long, value_name = "LINE", conflicts_with = "mix")]
    pub task: Option<String>,
    /// File of requests, one per line (`#` comments, `N*` weights), picked at random per task
    #[arg(long, value_name = "FILE")]
    pub mix: Option<PathBuf>,
    /// Seed of the --mix choices (each client derives its own generator from it)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Pause between a reply and the client's next request (closed loop)
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration, conflicts_with = "rate")]
    pub think: Duration,
    /// Loop for this long instead of a fixed number of tasks (measured after --warmup; wrk's -d)
    /// [default with a URL and no --tasks: 10s, as wrk]
    #[arg(long, short = 'd', value_name = "DUR", value_parser = parse_nonzero_duration)]
    pub duration: Option<Duration>,
    /// With --duration: run this long before the measured window opens
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Open loop: total requests per second over all clients (e.g. 5000, 20k); latency is
    /// measured from the intended send time
    #[arg(long, value_name = "R", value_parser = parse_req_rate)]
    pub rate: Option<f64>,
    /// Busy-poll between events instead of sleeping: burns each load thread's CPU, and takes
    /// the thread's wake-up (from idle, tens of µs in a VM) out of every send time and latency
    #[arg(long)]
    pub spin: bool,
    /// Protocol [default: task; http with a URL]
    #[arg(long, value_enum)]
    pub proto: Option<ProtoArg>,
    /// The path every request GETs (--proto http; --mix then lists paths) [default: /]
    #[arg(long, value_name = "PATH", conflicts_with = "mix")]
    pub path: Option<String>,
    /// Echo payload size in bytes (--proto echo) [default: 64]
    #[arg(long, value_name = "BYTES", value_parser = parse_nonzero_size)]
    pub size: Option<u64>,
    /// Longest wait for any reply
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_nonzero_duration)]
    pub timeout: Duration,
    /// Longest wait for a connection to be established
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_nonzero_duration)]
    pub connect_timeout: Duration,
    /// Load threads, each a reactor with its share of the clients (wrk's -t); --cpus pins one
    /// thread per CPU instead [default: 1]
    #[arg(long, short = 't', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024), conflicts_with_all = ["cpus", "pin"])]
    pub threads: Option<u32>,
    #[command(flatten)]
    pub pin: PinArgs,
    /// HTTP's Host header (a URL's authority; else `localhost`).
    #[arg(skip)]
    pub host: Option<String>,
}

/// Parses a request rate: `5000`, `20k`, `1.5M`, optionally followed by `/s`, `rps` or `ps`.
pub(crate) fn parse_req_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("rps"))
        .or_else(|| t.strip_suffix("ps"))
        .unwrap_or(t)
        .trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'M')) => (&t[..i], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate '{s}' (examples: 5000, 20k, 1.5M)"))?;
    let v = v * mult;
    if !v.is_finite() || v <= 0.0 || v > 1e9 {
        return Err(format!(
            "invalid rate '{s}': must be > 0 and at most 1e9 per second"
        ));
    }
    Ok(v)
}

impl WorkloadArgs {
    /// The protocol given, else the task protocol.
    pub fn proto(&self) -> ProtoArg {
        self.proto.unwrap_or(ProtoArg::Task)
    }

    /// The workload, mode and run settings (address left unset) and the setup block.
    /// `tutorial` switches the defaults to the tutorial preset.
    pub fn build(&self, tutorial: bool) -> Result<(RunConfig, Setup)> {
        if self.warmup.is_some() && self.duration.is_none() {
            crate::usage_bail!(
                "--warmup needs --duration (a fixed number of --tasks has no warm-up)"
            );
        }
        if self.path.is_some() && self.proto() != ProtoArg::Http {
            crate::usage_bail!("--path is for --proto http");
        }
        let workload = match self.proto() {
            ProtoArg::Http => {
                if self.task.is_some() || self.size.is_some() {
                    crate::usage_bail!("--task and --size are for --proto task and echo; --proto http GETs --path (or the paths of --mix)");
                }
                match &self.mix {
                    Some(p) => Workload::http_mix(p, self.seed)?,
                    None => {
                        let path = self.path.as_deref().unwrap_or("/");
                        let host = self.host.as_deref().unwrap_or("localhost");
                        Workload::http_to(path, host).with_context(|| format!("--path '{path}'"))?
                    }
                }
            }
            ProtoArg::Echo => {
                if self.task.is_some() || self.mix.is_some() {
                    crate::usage_bail!("--task and --mix are for --proto task; --proto echo sends --size byte payloads");
                }
                Workload::echo(self.size.unwrap_or(64).try_into().unwrap_or(usize::MAX))
                    .map_err(super::common::usage)?
            }
            ProtoArg::Task => {
                if self.size.is_some() {
                    crate::usage_bail!(
                        "--size is for --proto echo (task requests are given with --task or --mix)"
                    );
                }
                match &self.mix {
                    Some(p) => Workload::mix(p, self.seed).map_err(super::common::usage)?,
                    None => {
                        let line = self.task.clone().unwrap_or_else(|| {
                            if tutorial { "SLEEP 1000" } else { "ECHO hello" }.to_string()
                        });
                        Workload::task(&line)
                            .with_context(|| format!("--task '{line}'"))
                            .map_err(super::common::usage)?
                    }
                }
            }
        };
        let mode = match self.duration {
            Some(d) => Mode::Duration {
                duration: d,
                warmup: self.warmup.unwrap_or(Duration::ZERO),
            },
            None => Mode::Tasks(self.tasks.unwrap_or(if tutorial { 3 } else { 10 })),
        };
        let cpus = match (self.pin.list(), self.pin.pin) {
            (Some(c), _) => c.to_vec(),
            (None, true) => vec![0],
            (None, false) => Vec::new(),
        };
        let threads = match self.threads {
            Some(n) => n as usize,
            None => cpus.len().max(1),
        };
        let workload_desc = match (&workload, &self.mix) {
            (Workload::Echo { size }, _) => format!("echo {size} B"),
            (_, Some(p)) => format!("mix {}", p.display()),
            (Workload::Http { .. }, None) => {
                format!("GET {}", self.path.as_deref().unwrap_or("/"))
            }
            _ => self
                .task
                .clone()
                .unwrap_or_else(|| if tutorial { "SLEEP 1000" } else { "ECHO hello" }.into()),
        };
        let setup = Setup {
            target: String::new(),
            proto: workload.proto().name().to_string(),
            mode: match mode {
                Mode::Tasks(_) => "tasks",
                Mode::Duration { .. } => "duration",
            }
            .to_string(),
            tasks_per_client: match mode {
                Mode::Tasks(n) => Some(n),
                _ => None,
            },
            duration_s: self.duration.map(|d| d.as_secs_f64()),
            warmup_s: self
                .duration
                .map(|_| self.warmup.unwrap_or(Duration::ZERO).as_secs_f64()),
            workload: workload_desc,
            think_s: self.think.as_secs_f64(),
            rate: self.rate,
            timeout_s: self.timeout.as_secs_f64(),
            connect_timeout_s: self.connect_timeout.as_secs_f64(),
            runs: 0,
            threads: threads as u32,
            cpus: cpus.clone(),
            spin: self.spin,
        };
        let run = RunConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workload,
            mode,
            think: self.think,
            rate: self.rate,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            cpus,
            threads,
            limit: None,
            spin: self.spin,
        };
        Ok((run, setup))
    }
}

/// `netcore load`: drive a server with a sweep of client counts.
#[derive(Args, Debug, Clone)]
#[command(
    override_usage = "netcore load [OPTIONS] <URL>\n       netcore load [OPTIONS] --connect <ADDR>",
    after_help = "Exit status: 0 = no errors, 1 = could not run, 2 = bad usage, 3 = the report counts errors."
)]
pub struct LoadArgs {
    /// As wrk takes it: http://HOST[:PORT]/PATH (implies --proto http, sets --connect and
    /// --path)
    #[arg(value_name = "URL", conflicts_with_all = ["connect", "path"], required_unless_present = "connect")]
    pub url: Option<String>,
    /// Server address (host:port)
    #[arg(long, value_name = "ADDR")]
    pub connect: Option<String>,
    /// Client counts to sweep: 1,10,100 or 10,20,..,100 or 10..=100:10 (wrk's -c: connections)
    #[arg(long, short = 'c', value_name = "LIST", default_value = "10", value_parser = parse_sweep)]
    pub clients: Sweep,
    /// Runs per sweep point (medians are reported)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    #[command(flatten)]
    pub work: WorkloadArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub stream: StreamArg,
    #[command(flatten)]
    pub progress: ProgressArg,
    #[command(flatten)]
    pub plot: PlotArg,
}

/// A parsed `--clients` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep(pub Vec<u32>);

/// clap value parser for a sweep (one argument holding the whole list).
pub(crate) fn parse_sweep(s: &str) -> Result<Sweep, String> {
    sweep::parse_clients(s)
        .map(Sweep)
        .map_err(|e| format!("{e:#}"))
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("invalid address '{addr}' (expected host:port)"))
        .map_err(super::common::usage)?
        .next()
        .ok_or_else(|| super::common::usage(format!("address '{addr}' resolves to nothing")))
}

/// A URL as wrk takes it: `http://HOST[:PORT][/PATH][?QUERY]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// `HOST:PORT` to connect to (port 80 by default).
    pub addr: String,
    /// The Host header: the URL's authority as written.
    pub host: String,
    /// `/` by default, the query kept, a fragment dropped.
    pub path: String,
}

/// Parses a [`Url`]; anything else is a usage error.
pub(crate) fn parse_url(url: &str) -> Result<Url> {
    let Some((scheme, rest)) = url.split_once("://") else {
        crate::usage_bail!(
            "'{url}' is not a URL (http://HOST:PORT/PATH); a server address goes with --connect HOST:PORT"
        );
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => {}
        "https" => {
            crate::usage_bail!("'{url}': netcore load speaks plain HTTP/1.1, not TLS: use http://")
        }
        _ => crate::usage_bail!("'{url}': netcore load takes http:// URLs only"),
    }
    let rest = rest.split('#').next().unwrap_or("");
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.is_empty()
        || authority.contains('@')
        || authority.bytes().any(|b| b <= b' ' || b >= 0x7f)
    {
        crate::usage_bail!("'{url}': expected http://HOST[:PORT]/PATH (no user name)");
    }
    let has_port = match authority.rfind(']') {
        Some(b) => authority[b..].contains(':'),
        None => authority.contains(':'),
    };
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    Ok(Url {
        addr,
        host: authority.to_string(),
        path,
    })
}

/// How long a URL is loaded with neither `-d` nor `--tasks` (wrk's default `-d`).
const URL_DURATION: Duration = Duration::from_secs(10);

/// The address to load and the workload's flags: a URL sets the address, `--proto http` and
/// `--path`, and with neither `-d` nor `--tasks` a 10 s duration, as wrk runs; without one,
/// `--connect` and the flags as given.
fn target(a: &LoadArgs) -> Result<(String, WorkloadArgs)> {
    let mut work = a.work.clone();
    let Some(url) = &a.url else {
        let connect = a.connect.clone().unwrap_or_default();
        return Ok((connect, work));
    };
    let url = parse_url(url)?;
    if work.proto.is_some_and(|p| p != ProtoArg::Http) {
        crate::usage_bail!("a URL is loaded over HTTP: drop --proto or give --connect HOST:PORT");
    }
    if work.mix.is_some() {
        crate::usage_bail!(
            "a URL names one path, --mix a file of them: give --connect HOST:PORT with --mix"
        );
    }
    work.proto = Some(ProtoArg::Http);
    work.path = Some(url.path);
    work.host = Some(url.host);
    if work.duration.is_none() && work.tasks.is_none() {
        work.duration = Some(URL_DURATION);
    }
    Ok((url.addr, work))
}

/// Runs `netcore load`.
pub fn run(a: &LoadArgs) -> Result<ExitCode> {
    let (connect, work) = target(a)?;
    let addr = resolve(&connect)?;
    a.plot.check()?;
    let (mut cfg, mut setup) = work.build(false)?;
    cfg.addr = addr;
    setup.target = addr.to_string();
    setup.runs = a.runs;
    let stream = a.stream.open("load", Some(&a.output))?;
    // Ctrl-C / SIGTERM end the current run; the report shows what ran, marked interrupted.
    let progress = super::common::Progress::new(
        a.output.format(),
        a.progress.progress,
        total_runs(&a.clients, a.runs),
    );
    let kind = setup.proto.clone();
    stream.emit(EventKind::Start, |l| {
        l.kind(kind.as_str()).peer(addr).data(&setup)
    })?;
    let mut report = LoadReport {
        schema: SCHEMA,
        meta: crate::stats::meta::Meta::gather(),
        setup,
        points: Vec::new(),
        interrupted: false,
    };
    for &clients in &a.clients.0 {
        let p = run_point(&cfg, clients, a.runs, |r: &RunResult| {
            progress.run_done(&r.progress_line("load:", a.runs, &kind));
            let _ = stream.emit(EventKind::Interval, |l| {
                l.kind(kind.as_str()).peer(addr).data(r)
            });
        });
        let p = stream.or_error(p)?;
        report.points.push(p);
        if crate::sys::signal::stop_requested() {
            report.interrupted = true;
            break;
        }
    }
    progress.finish();
    for w in report.open_loop_warnings() {
        eprintln!("netcore: {w}");
    }
    if stream.on() {
        stream.emit(EventKind::End, |l| {
            l.kind(kind.as_str()).peer(addr).data(&report)
        })?;
    } else {
        out(&report.render(a.output.format()))?;
    }
    if let Some(p) = a.plot.file() {
        crate::load::plot_sweep(p, &report)?;
    }
    Ok(exit_status(report.total_errors()))
}

/// Runs in a whole sweep: points × runs per point.
pub(crate) fn total_runs(clients: &Sweep, runs: u32) -> u64 {
    clients.0.len() as u64 * runs as u64
}

/// The exit status of a run that completed: [`EXIT_ERRORS`] when its report counts `errors`.
pub(crate) fn exit_status(errors: u64) -> ExitCode {
    if errors > 0 {
        ExitCode::from(EXIT_ERRORS)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_wrk_takes_them() {
        let ok = |u: &str| {
            let u = parse_url(u).unwrap();
            (u.addr, u.path)
        };
        let s = |a: &str, p: &str| (a.to_string(), p.to_string());
        assert_eq!(parse_url("http://web:8080/x").unwrap().host, "web:8080");
        assert_eq!(parse_url("http://web/x").unwrap().host, "web");
        assert_eq!(ok("http://127.0.0.1:8080/"), s("127.0.0.1:8080", "/"));
        assert_eq!(ok("http://127.0.0.1:8080"), s("127.0.0.1:8080", "/"));
        assert_eq!(
            ok("http://localhost/bytes/10"),
            s("localhost:80", "/bytes/10")
        );
        assert_eq!(ok("HTTP://h:1?x=1#frag"), s("h:1", "/?x=1"));
        assert_eq!(ok("http://[::1]:81/a?b"), s("[::1]:81", "/a?b"));
        assert_eq!(ok("http://[::1]/"), s("[::1]:80", "/"));
        for bad in [
            "https://h/",
            "ftp://h/",
            "127.0.0.1:8080",
            "http:///x",
            "http://u@h/",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.is::<crate::cli::common::UsageError>(), "{bad}: {e}");
        }
        assert!(format!("{:#}", parse_url("https://h/").unwrap_err()).contains("use http://"));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_req_rate("5000").unwrap(), 5000.0);
        assert_eq!(parse_req_rate("20k").unwrap(), 20_000.0);
        assert_eq!(parse_req_rate("1.5M/s").unwrap(), 1.5e6);
        assert_eq!(parse_req_rate("100rps").unwrap(), 100.0);
        for bad in ["0", "-5", "x", "", "1e12"] {
            assert!(parse_req_rate(bad).is_err(), "{bad}");
        }
    }
}
