//! `netcore relay`: flags and glue around [`crate::relay`].

use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::common::{out, resolve_addr, MetricsArg, OutputArgs};
use crate::metrics::relay::RelayMetrics;
use crate::metrics::Metrics;
use crate::relay::impair::{self, Settings};
use crate::relay::{Event, Relay, RelayOptions, StopWhen};
use crate::stats::{Format, Report};
use crate::units::{self, Rate};

fn depth(s: &str) -> Result<RangeInclusive<u32>, String> {
    impair::parse_depth(s)
}
fn burst(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid burst length '{s}' (a mean number of datagrams, e.g. 4)"))?;
    if !v.is_finite() || v < 1.0 {
        return Err(format!("burst length '{s}' must be at least 1 datagram"));
    }
    Ok(v)
}

/// Forward UDP datagrams from --listen to --to with seeded impairments, then print the ground
/// truth (datagrams in, dropped, duplicated, reordered with max extent, forwarded) per netcore
/// test and per iperf3 UDP stream. The impairments apply to the forward direction only: each
/// source gets a socket of its own towards --to (at most 1024 sources; a new one replaces the
/// one quiet the longest), and what the receiver sends back to it is returned to the source
/// unimpaired. TCP connections to the same port are proxied to the same port of --to,
/// unimpaired, so `netcore blast --to RELAY` (its control channel) and `iperf3 -c` (TCP and
/// UDP) work through the relay unchanged.
#[derive(Args, Debug)]
pub struct RelayArgs {
    /// Address to receive datagrams on (port 0: any free port, printed at start)
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,
    /// Where to forward them (the receiver)
    #[arg(long, value_name = "HOST:PORT")]
    pub to: String,
    /// Datagrams to drop (1%, 0.5%; a bare number is percent)
    #[arg(long, value_parser = units::parse_percent, default_value = "0%", allow_hyphen_values = true)]
    pub loss: f64,
    /// Drop in bursts of this mean length (Gilbert model at the --loss average rate)
    #[arg(long, value_name = "MEAN", value_parser = burst, allow_hyphen_values = true)]
    pub burst_loss: Option<f64>,
    /// Datagrams to hold back and release after later ones (real reordering)
    #[arg(long, value_parser = units::parse_percent, default_value = "0%", allow_hyphen_values = true)]
    pub reorder: f64,
    /// How many later datagrams a held-back one waits for: N or LOW..HIGH (inclusive)
    #[arg(long, value_parser = depth, default_value = "1..8", allow_hyphen_values = true)]
    pub reorder_depth: RangeInclusive<u32>,
    /// Datagrams to send twice
    #[arg(long, value_parser = units::parse_percent, default_value = "0%", allow_hyphen_values = true)]
    pub duplicate: f64,
    /// Delay added to every datagram (2ms)
    #[arg(long, value_parser = units::parse_duration, default_value = "0s", allow_hyphen_values = true)]
    pub delay: Duration,
    /// Uniform variation of the delay, +- this much (may reorder datagrams)
    #[arg(long, value_parser = units::parse_duration, default_value = "0s", allow_hyphen_values = true)]
    pub jitter: Duration,
    /// Speed of the outgoing link (500Mbps, 50kpps); datagrams queue behind it
    #[arg(long, value_parser = units::parse_rate, allow_hyphen_values = true)]
    pub rate: Option<Rate>,
    /// Seed of the random generator (random if not given; printed in the report)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many datagrams came in (later ones are ignored) and forward what is
    /// held. The stop conditions combine: the first one met ends the run
    #[arg(long, allow_hyphen_values = true)]
    pub count: Option<u64>,
    /// Stop after this long
    #[arg(long, value_parser = units::parse_nonzero_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Stop once traffic started and then went quiet for --idle
    #[arg(long)]
    pub once: bool,
    /// Quiet time that ends a --once run
    #[arg(long, value_parser = units::parse_nonzero_duration, default_value = "1s", allow_hyphen_values = true)]
    pub idle: Duration,
    /// Receive buffer to ask for
    #[arg(long, value_parser = units::parse_nonzero_size, default_value = "32MiB", allow_hyphen_values = true)]
    pub rcvbuf: u64,
    /// TCP connections proxied at once (more are closed at once and counted as refused);
    /// 0: TCP is not proxied, only UDP is relayed
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=4096), default_value = "64")]
    pub max_connections: u32,
    /// A proxied TCP connection that moves no byte either way for this long is reset (one
    /// that never moved a byte, after 10 s at most)
    #[arg(long, value_parser = units::parse_nonzero_duration, default_value = "2min", allow_hyphen_values = true)]
    pub tcp_idle: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub metrics: MetricsArg,
}

/// Runs `netcore relay`.
pub fn run(a: RelayArgs) -> Result<ExitCode> {
    if a.count == Some(0) {
        crate::usage_bail!("--count 0: nothing to relay");
    }
    let settings = Settings {
        loss: a.loss,
        burst: a.burst_loss,
        reorder: a.reorder,
        reorder_depth: a.reorder_depth,
        duplicate: a.duplicate,
        delay: a.delay,
        jitter: a.jitter,
        rate: a.rate,
        seed: a.seed.unwrap_or_else(rand::random),
    };
    settings.validate().map_err(super::common::usage)?;
    let mut registry = Metrics::new();
    let relay_metrics = a
        .metrics
        .metrics
        .is_some()
        .then(|| RelayMetrics::register(&mut registry));
    let relay = Relay::bind(RelayOptions {
        listen: resolve_addr("--listen", &a.listen).map_err(super::common::usage)?,
        to: resolve_addr("--to", &a.to).map_err(super::common::usage)?,
        settings,
        stop: StopWhen {
            count: a.count,
            duration: a.duration,
            idle: a.once.then_some(a.idle),
        },
        rcvbuf: a.rcvbuf as usize,
        metrics: relay_metrics,
        max_connections: a.max_connections as usize,
        tcp_idle: a.tcp_idle,
    })?;
    let _endpoint = a.metrics.start("relay", registry)?;
    let format = a.output.format();
    let banner = format!(
        "netcore relay: listening on {} -> {}",
        relay.local_addr(),
        a.to
    );
    if format == Format::Table {
        out(&(banner + "\n"))?;
    } else {
        eprintln!("{banner}");
    }
    let report = relay.run(&mut |ev| match ev {
        Event::Traffic => eprintln!("netcore relay: traffic started"),
    })?;
    out(&report.render(format))?;
    Ok(ExitCode::SUCCESS)
}
