//! `netcore serve`: flags and glue to [`crate::server`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::common::{MetricsArg, PinArgs, StreamArg};
use crate::proto::{Proto, SessionConfig, DEFAULT_OFFLOAD_ROUNDS};
use crate::server::{Model, ServeConfig};
use crate::stats::events::{EventKind, EventLine};
use crate::sys::affinity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    /// Line-based task protocol (ECHO, UPPER, REVERSE, SUM, HASH, SLEEP, STATS, BYE)
    Task,
    /// Raw echo of every byte, no framing
    Echo,
    /// HTTP/1.1: GET /, /bytes/N, /sleep/MS, /hash/ROUNDS, /stats (keep-alive, pipelining)
    Http,
    /// sockperf's framing: answers `sockperf ping-pong --tcp` / `under-load --tcp`
    Sockperf,
}

/// `netcore serve`
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Concurrency model
    #[arg(long, value_enum, default_value = "epoll")]
    pub model: Model,
    /// Protocol
    #[arg(long, value_enum, default_value = "task")]
    pub proto: ProtoArg,
    /// Address to listen on, host:port (a host name is resolved; port 0: any free port,
    /// printed on startup)
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// pool: connection worker threads (default 4 per CPU); epoll, uring: threads for
    /// offloaded HASH jobs (default 1 per CPU)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub workers: Option<u32>,
    /// Most connections served at once (others wait in the listen queue)
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_conns: u32,
    /// Close connections silent for this long (0: never)
    #[arg(long, default_value = "30s", value_parser = crate::units::parse_duration)]
    pub idle_timeout: Duration,
    /// epoll: number of reactors (threads), one SO_REUSEPORT listener each
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub reactors: u32,
    /// Longest accepted request line (task protocol)
    #[arg(long, default_value = "64KiB", value_parser = parse_line)]
    pub max_line: usize,
    /// With --json-stream: how often to print the totals (an interval line)
    #[arg(long, default_value = "1s", value_parser = crate::units::parse_nonzero_duration)]
    pub interval: Duration,
    #[command(flatten)]
    pub pin: PinArgs,
    #[command(flatten)]
    pub stream: StreamArg,
    #[command(flatten)]
    pub metrics: MetricsArg,
}

/// `host:port` with a literal address or a host name (`localhost:7311`): the first address
/// it resolves to.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("invalid address '{s}' (expected host:port): {e}"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

fn parse_line(s: &str) -> Result<usize, String> {
    match crate::units::parse_size(s) {
        Ok(n) if (16..=(64 << 20)).contains(&n) => Ok(n as usize),
        Ok(_) => Err("must be between 16 bytes and 64MiB".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl ServeArgs {
    /// Checks flag combinations and builds the server configuration.
    pub fn config(&self) -> Result<ServeConfig> {
        let cpus_n = affinity::available_cpus();
        if self.reactors != 1 && self.model != Model::Epoll {
            crate::usage_bail!("--reactors applies to --model epoll only");
        }
        if self.workers.is_some()
            && !matches!(self.model, Model::Pool | Model::Epoll | Model::Uring)
        {
            crate::usage_bail!("--workers applies to --model pool, epoll and uring only");
        }
        let workers = match (self.workers, self.model) {
            (Some(w), _) => w as usize,
            (None, Model::Pool) => 4 * cpus_n,
            (None, _) => cpus_n,
        };
        let cpus = match self.pin.list() {
            Some(l) => l.to_vec(),
            None if self.pin.pin => (0..cpus_n).collect(),
            None => Vec::new(),
        };
        Ok(ServeConfig {
            model: self.model,
            listen: self.listen,
            session: SessionConfig {
                proto: match self.proto {
                    ProtoArg::Task => Proto::Task,
                    ProtoArg::Echo => Proto::Echo,
                    ProtoArg::Http => Proto::Http,
                    ProtoArg::Sockperf => Proto::Sockperf,
                },
                max_line: self.max_line,
                offload_rounds: if matches!(self.model, Model::Epoll | Model::Uring) {
                    DEFAULT_OFFLOAD_ROUNDS
                } else {
                    u64::MAX
                },
            },
            workers,
            max_conns: self.max_conns as usize,
            idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
            reactors: self.reactors as usize,
            cpus,
            json_stream: self.stream.json_stream,
        })
    }
}

/// Runs the server until SIGINT/SIGTERM.
pub fn run(args: &ServeArgs) -> Result<ExitCode> {
    let cfg = args.config()?;
    let mut counters = crate::proto::Counters::shared()
        .map_err(|e| anyhow::anyhow!("cannot map shared counters: {e}"))?;
    if args.metrics.metrics.is_some() {
        // Only a scraper reads the request latency: without one, no clock is read for it.
        counters = counters.timing_requests();
    }
    let mut registry = crate::metrics::Metrics::new();
    crate::metrics::serve::register(
        &mut registry,
        counters,
        cfg.model.name(),
        cfg.session.proto.name(),
    );
    let _endpoint = args.metrics.start("serve", registry)?;
    let _ticker = args
        .stream
        .json_stream
        .then(|| Ticker::start(counters, args.interval));
    let r = crate::server::run_with(&cfg, counters);
    if let (Err(e), true) = (&r, cfg.json_stream) {
        let line = EventLine::new("serve", EventKind::Error).message(format!("{e:#}"));
        let _ = super::common::out(&line.to_line());
    }
    r?;
    Ok(ExitCode::SUCCESS)
}

/// `serve --json-stream`: an `interval` line with the server's totals every `--interval`,
/// from a thread of its own, until dropped.
struct Ticker {
    stop: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(counters: crate::proto::Counters, every: Duration) -> Ticker {
        let stop = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("netcore-serve-ticks".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let (g, _) = cv
                        .wait_timeout(stopped, every)
                        .unwrap_or_else(|p| p.into_inner());
                    stopped = g;
                    if *stopped || crate::sys::signal::stop_requested() {
                        return;
                    }
                    let line =
                        EventLine::new("serve", EventKind::Interval).data(&counters.snapshot());
                    if super::common::out(&line.to_line()).is_err() {
                        return;
                    }
                }
            })
            .ok();
        Ticker { stop, thread }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
