//! Flags shared by several commands.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Args;

use crate::flow::rxwait::RxWait;
use crate::stats::Format;
use crate::sys::affinity;
use crate::units;

/// A usage error found after parsing (a bad combination of flags, a value out of range):
/// `main` prints it as one line and exits with status 2, as for clap's own usage errors.
/// The one way to raise one: [`usage`] (an error value) or [`usage_bail!`](crate::usage_bail)
/// (return early with it); nothing else builds it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// A [`UsageError`] (exit status 2) with this message; takes a string or an error (whose whole
/// chain becomes the message).
pub fn usage(msg: impl std::fmt::Display) -> anyhow::Error {
    UsageError(format!("{msg:#}")).into()
}

/// Returns early with a [`UsageError`] made from a format string.
#[macro_export]
macro_rules! usage_bail {
    ($($t:tt)*) => { return Err($crate::cli::common::usage(format!($($t)*))) };
}

/// `--progress`: what a running test shows on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// On stderr when it is a terminal and the live lines do not already reach the terminal on
    /// stdout (stdout redirected, or --json/--csv): interval lines, or a bar for load/compare
    #[default]
    Auto,
    /// Plain lines on stderr whatever it is (a log file, CI)
    Lines,
    /// Nothing on stderr (the live table on stdout is unchanged)
    Off,
}

/// `--progress auto|lines|off`.
#[derive(Args, Debug, Clone, Default)]
pub struct ProgressArg {
    /// Progress on stderr: auto (when stderr is a terminal and stdout is not, or with
    /// --json/--csv), lines (always, plain lines), off
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
}

/// Where a running test's live lines (intervals) go: stdout with the table report, and/or
/// stderr as progress ([`ProgressMode`]). With `--json`/`--csv` stdout gets only the report.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    stdout: bool,
    stderr: bool,
    /// `--progress auto`.
    mode_auto: bool,
}

impl Live {
    pub fn new(format: crate::stats::Format, mode: ProgressMode) -> Live {
        use std::io::IsTerminal;
        let stdout = format == crate::stats::Format::Table;
        let stderr = match mode {
            ProgressMode::Off => false,
            ProgressMode::Lines => true,
            ProgressMode::Auto => {
                std::io::stderr().is_terminal() && !(stdout && std::io::stdout().is_terminal())
            }
        };
        Live {
            stdout,
            stderr,
            mode_auto: mode == ProgressMode::Auto,
        }
    }

    /// No live lines on stdout when `off` (stdout carries `--json-stream` lines): they go to
    /// stderr as `--progress` says, as with `--json`.
    pub(crate) fn off_stdout(self, off: bool) -> Live {
        if !off {
            return self;
        }
        use std::io::IsTerminal;
        Live {
            stdout: false,
            stderr: self.stderr || (self.mode_auto && std::io::stderr().is_terminal()),
            mode_auto: self.mode_auto,
        }
    }

    /// True when the live lines go to stdout (the table report).
    pub(crate) fn on_stdout(&self) -> bool {
        self.stdout
    }

    /// True when they go anywhere.
    pub fn any(&self) -> bool {
        self.stdout || self.stderr
    }

    /// Prints one or more whole lines (ending in a newline) where they go.
    pub fn line(&self, s: &str) {
        if self.stdout {
            let _ = out(s);
        }
        if self.stderr {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(s.as_bytes());
            let _ = e.flush();
        }
    }
}

/// Progress of a sweep (`load`, `compare`) on stderr: with `--progress auto`, an `indicatif`
/// bar with each finished run's line printed above it when stderr is a terminal, nothing
/// otherwise; with `lines`, each finished run's line; with `off`, nothing. Stdout keeps only
/// the report, so it can be piped or be JSON.
pub(crate) struct Progress(Option<indicatif::ProgressBar>, bool);

impl Progress {
    /// A bar of `runs` runs, when stderr is a terminal (or plain lines when asked).
    pub fn new(_format: crate::stats::Format, mode: ProgressMode, runs: u64) -> Progress {
        use std::io::IsTerminal;
        match mode {
            ProgressMode::Off => return Progress(None, false),
            ProgressMode::Lines => return Progress(None, true),
            ProgressMode::Auto if !std::io::stderr().is_terminal() => return Progress(None, false),
            ProgressMode::Auto => {}
        }
        let pb = indicatif::ProgressBar::with_draw_target(
            Some(runs),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} runs",
        ) {
            pb.set_style(style);
        }
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress(Some(pb), false)
    }

    /// One run finished: its line above the bar (or alone, with `--progress lines`).
    pub(crate) fn run_done(&self, line: &str) {
        if let Some(pb) = &self.0 {
            pb.println(line);
            pb.inc(1);
        } else if self.1 {
            eprintln!("{line}");
        }
    }

    /// Removes the bar (before the report is printed).
    pub fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

/// Writes `s` to stdout and flushes it.
pub fn out(s: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// A parsed `--cpus` list (a newtype, so clap takes it as one value, not many).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// `--pin` / `--cpus LIST`.
#[derive(Args, Debug, Clone, Default)]
pub struct PinArgs {
    /// Pin the busy threads to CPUs chosen by netcore (reported in the output)
    #[arg(long)]
    pub pin: bool,
    /// Pin the busy threads to these CPUs, in order (e.g. 0,1 or 0-3)
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
}

impl PinArgs {
    /// The CPU list given with --cpus, if any.
    pub fn list(&self) -> Option<&[usize]> {
        self.cpus.as_ref().map(|c| c.0.as_slice())
    }
}

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    affinity::parse_cpu_list(s)
        .map(CpuList)
        .map_err(|e| e.to_string())
}

/// `--json` / `--csv`: how a command prints its report (a table and live lines by default).
#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Print the report as JSON (versioned: its "schema" field names the schema, e.g.
    /// netcore.udp.v4, netcore.tcp.v1)
    #[arg(long, short = 'J', conflicts_with = "csv")]
    pub json: bool,
    /// Print the report as CSV
    #[arg(long)]
    pub csv: bool,
}

impl OutputArgs {
    pub fn format(&self) -> Format {
        Format::from_flags(self.json, self.csv)
    }
}

/// How a receiver reads: `recv`'s flags, and `blast`'s for its embedded receiver (and its own
/// readers with `-R`/`--bidir`). `--spin`/`--block`/polling apply to TCP readers too.
#[derive(Args, Debug, Clone)]
pub struct RxArgs {
    /// Receive buffer to ask for (SO_RCVBUFFORCE when permitted, else SO_RCVBUF)
    #[arg(long, value_parser = units::parse_nonzero_size, default_value = "128MiB", allow_hyphen_values = true)]
    pub rcvbuf: u64,
    /// Busy-poll the socket during a test (burns the receiver's core)
    #[arg(long, conflicts_with = "block")]
    pub spin: bool,
    /// Sleep in the receive call during a test (recvmmsg; read for TCP) instead of polling
    /// with 50 µs naps (the default polls: on loopback every wake-up of a sleeping receiver
    /// runs on the sender's core)
    #[arg(long)]
    pub block: bool,
    /// Do not ask for UDP_GRO
    #[arg(long)]
    pub no_gro: bool,
}

impl RxArgs {
    /// How the receiving thread waits during a test.
    pub fn wait(&self) -> RxWait {
        match (self.spin, self.block) {
            (true, _) => RxWait::Spin,
            (_, true) => RxWait::Block,
            _ => RxWait::Poll,
        }
    }
}

/// Who `blast` is to a receiver: its source address and its shared key.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// Source address for the control connection and the data (a local address)
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<std::net::IpAddr>,
    /// Prove knowledge of the receiver's shared key (recv --auth-key-file) with an HMAC over
    /// the test id and a nonce the receiver chooses; the key is never sent
    #[arg(long, value_name = "PATH")]
    pub auth_key_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The client's identity; an unreadable or empty key file is a usage error.
    pub fn client(&self) -> Result<crate::flow::control::ClientId> {
        let key = match &self.auth_key_file {
            Some(p) => Some(crate::flow::access::Key::read(p).map_err(usage)?),
            None => None,
        };
        Ok(crate::flow::control::ClientId {
            bind: self.bind,
            key,
        })
    }
}

/// `--plot FILE`.
#[derive(Args, Debug, Clone, Default)]
pub struct PlotArg {
    /// Also write a plot of the run to FILE (SVG; PNG when FILE ends in .png)
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

impl PlotArg {
    /// Refuses an unusable FILE before any work is done.
    pub fn check(&self) -> Result<()> {
        match &self.plot {
            Some(p) => crate::stats::plot::check_output(p).map_err(usage),
            None => Ok(()),
        }
    }

    pub fn file(&self) -> Option<&Path> {
        self.plot.as_deref()
    }
}

/// The data protocol of a blast test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Proto {
    #[default]
    Udp,
    Tcp,
}

/// Where the kernel lists the congestion control algorithms it offers.
const AVAILABLE_CONGESTION: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";

/// `--congestion ALGO`: a usage error unless this kernel offers ALGO. Checked when a command
/// plans its run, not while its flags are parsed (nothing opens a socket for it); where the
/// list cannot be read, the data socket's setup says whether the kernel takes it.
pub(crate) fn check_congestion(name: &str) -> Result<()> {
    match std::fs::read_to_string(AVAILABLE_CONGESTION) {
        Ok(offered) if !offers_congestion(&offered, name) => crate::usage_bail!(
            "unknown congestion control '{name}' (this kernel offers: {})",
            offered.trim()
        ),
        _ => Ok(()),
    }
}

/// True when `name` is one of the algorithms in `offered` (the kernel's list).
fn offers_congestion(offered: &str, name: &str) -> bool {
    offered.split_whitespace().any(|a| a == name)
}

/// `--metrics ADDR`: serve OpenMetrics for Prometheus at `http://ADDR/metrics`.
#[derive(Args, Debug, Clone, Default)]
pub struct MetricsArg {
    /// Serve OpenMetrics (Prometheus) at http://ADDR/metrics while the command runs (e.g.
    /// 127.0.0.1:9300; port 0 picks one, printed on stderr)
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

impl MetricsArg {
    /// Starts the endpoint over `metrics` when `--metrics` was given, and says where on stderr.
    pub fn start(
        &self,
        command: &str,
        metrics: crate::metrics::Metrics,
    ) -> Result<Option<crate::metrics::endpoint::Endpoint>> {
        self.start_shared(command, std::sync::Arc::new(metrics))
    }

    /// As [`MetricsArg::start`], over a registry the caller keeps a handle to.
    pub(crate) fn start_shared(
        &self,
        command: &str,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<Option<crate::metrics::endpoint::Endpoint>> {
        let Some(text) = &self.metrics else {
            return Ok(None);
        };
        let addr = crate::cli::common::resolve_addr("--metrics", text)?;
        let ep = crate::metrics::endpoint::Endpoint::start(addr, metrics)
            .map_err(|e| anyhow::anyhow!("--metrics {text}: cannot listen: {e}"))?;
        eprintln!(
            "netcore {command}: metrics on http://{}/metrics",
            ep.local_addr()
        );
        Ok(Some(ep))
    }
}

/// Resolves a `HOST:PORT` flag value to one address (host names allowed).
pub(crate) fn resolve_addr(flag: &str, text: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    text.to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("invalid {flag} '{text}' (use HOST:PORT): {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{flag} '{text}' resolves to no address"))
}

/// `--json-stream`: one JSON object per line per event instead of the table.
#[derive(Args, Debug, Clone, Default)]
pub struct StreamArg {
    /// Print one JSON object per line per event instead of the table, each line flushed (a
    /// test's start, its intervals, its end with the report, errors; schema
    /// netcore.events.v1, see `netcore schema netcore.events.v1`), for log pipelines
    #[arg(long)]
    pub json_stream: bool,
}

impl StreamArg {
    /// The stream of `command` when `--json-stream` was given (refused beside --json/--csv).
    pub fn open(&self, command: &'static str, output: Option<&OutputArgs>) -> Result<JsonStream> {
        if self.json_stream && output.is_some_and(|o| o.json || o.csv) {
            crate::usage_bail!(
                "--json-stream replaces the report's other formats: drop --json/--csv"
            );
        }
        Ok(JsonStream {
            command: self.json_stream.then_some(command),
        })
    }
}

/// Where `--json-stream` lines go (stdout, flushed per line); inert without the flag.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonStream {
    command: Option<&'static str>,
}

impl JsonStream {
    pub fn on(&self) -> bool {
        self.command.is_some()
    }

    /// Writes the line that `build` makes of a fresh `event` line, when the stream is on.
    pub(crate) fn emit(
        &self,
        event: crate::stats::events::EventKind,
        build: impl FnOnce(crate::stats::events::EventLine) -> crate::stats::events::EventLine,
    ) -> Result<()> {
        match self.command {
            Some(c) => out(&build(crate::stats::events::EventLine::new(c, event)).to_line()),
            None => Ok(()),
        }
    }

    /// Passes `r` through, writing an `error` line first when it is an error.
    pub(crate) fn or_error<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            let _ = self.emit(crate::stats::events::EventKind::Error, |l| {
                l.message(format!("{e:#}"))
            });
        }
        r
    }
}

/// The receiver's port when none is given.
pub(crate) const DEFAULT_PORT: u16 = 5300;

/// HOST:PORT, or HOST alone (the default port). A bare number or a port past 65535 is a
/// usage error: "5201" read as a host is the IPv4 address 0.0.20.81.
pub(crate) fn resolve(text: &str) -> Result<SocketAddr> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        crate::usage_bail!("'{text}' is a port alone: give HOST:PORT (e.g. 127.0.0.1:{text})");
    }
    if let Some((h, p)) = text.rsplit_once(':') {
        let digits = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if digits && !h.ends_with(':') && p.parse::<u16>().is_err() {
            crate::usage_bail!("port {p} in '{text}' is out of range: use 0..=65535");
        }
    }
    let with_port = if text.parse::<SocketAddr>().is_ok()
        || text
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok())
    {
        text.to_string()
    } else {
        format!("{text}:{DEFAULT_PORT}")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve '{text}'"))?
        .next()
        .ok_or_else(|| anyhow!("'{text}' resolves to no address"))
}

/// The receiving side's interval line: the interval's datagrams and rate, the loss so far.
pub(crate) fn recv_interval_line(row: &crate::flow::udp::report::IntervalRow) -> String {
    format!(
        "[{:6.2}-{:6.2}s] received {:>12} dgrams {:>14} | lost so far {}\n",
        row.start,
        row.t,
        units::fmt_count(row.interval_received),
        units::fmt_bits_per_sec(row.received_bps),
        units::fmt_count(row.lost_so_far)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_names_are_matched_whole() {
        let offered = "reno bbr cubic\n";
        assert!(offers_congestion(offered, "bbr"));
        assert!(offers_congestion(offered, "cubic"));
        assert!(!offers_congestion(offered, "bb"));
        assert!(!offers_congestion(offered, "no-such-cc"));
        assert!(!offers_congestion(offered, ""));
    }
}
