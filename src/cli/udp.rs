//! `netcore blast` and `netcore recv`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::common::{
    out, ClientArgs, JsonStream, Live, MetricsArg, OutputArgs, PinArgs, PlotArg, ProgressArg,
    Proto, RxArgs, StreamArg, TcpArgs,
};
use crate::flow::access::{AllowList, Key};
use crate::flow::backend::Backend;
use crate::flow::control::{ClientId, Plan};
use crate::flow::iperf3::Iperf3Event;
use crate::flow::recv::bidir;
use crate::flow::recv::receiver::{self, Event, Receiver, RecvOptions};
use crate::flow::recv::session::Limits;
use crate::flow::streams::cpu_for;
use crate::flow::tcp_engine::report::TcpEvent;
use crate::flow::tcp_engine::report::TcpReport;
use crate::flow::tracker::DEFAULT_WINDOW;
use crate::flow::udp::report::{IntervalRow, UdpReport};
use crate::flow::udp::sender::{self, BlastOptions, GsoMode};
use crate::interop::iperf3::Results as Iperf3Results;
use crate::metrics::recv::RecvMetrics;
use crate::stats::events::EventKind;
use crate::stats::plot::{self, PlotOptions, Series};
use crate::stats::{Format, Report};
use crate::sys::{affinity, signal};
use crate::units::{self, Rate};

/// The receiver's port when none is given.
pub const DEFAULT_PORT: u16 = 5300;

/// Send UDP datagrams as fast as the kernel takes them (or paced), and report exact loss,
/// reordering, duplicates, jitter and one-way latency as measured by the receiver; or run a
/// TCP test (--proto tcp: -P streams, -R, --bidir, TCP_INFO), or drive an iperf3 server
/// (--to iperf3://HOST).
#[derive(Args, Debug)]
pub struct BlastArgs {
    /// Receiver (HOST[:PORT], port 5300 by default). Without it netcore starts its own
    /// receiver on loopback, on another core, and runs the real protocol against it
    #[arg(long, short = 'c', value_name = "HOST:PORT")]
    pub to: Option<String>,
    /// The receiver's TCP control address, when it differs from --to (e.g. through a relay)
    #[arg(long, value_name = "HOST:PORT")]
    pub control: Option<String>,
    /// The data protocol of the test
    #[arg(long, value_enum, default_value = "udp")]
    pub proto: Proto,
    #[command(flatten, next_help_heading = "TCP (--proto tcp)")]
    pub tcp: TcpArgs,
    /// Bytes to send (200MB = 200*10^6, 200MiB or 200M = 200*2^20)
    #[arg(long, short = 'n', value_parser = units::parse_nonzero_size, group = "amount", allow_hyphen_values = true)]
    pub size: Option<u64>,
    /// How long to send (10s, 500ms); 10s if no amount is given
    #[arg(long, short = 't', value_parser = units::parse_nonzero_duration, group = "amount", allow_hyphen_values = true)]
    pub time: Option<Duration>,
    /// Datagrams to send
    #[arg(long, short = 'k', group = "amount", allow_hyphen_values = true)]
    pub count: Option<u64>,
    /// UDP payload bytes per datagram (40..=65507; default 1472), or TCP bytes per write
    /// (default 128KiB)
    #[arg(long, short = 'l', value_parser = units::parse_nonzero_size, allow_hyphen_values = true)]
    pub len: Option<u64>,
    /// Messages per sendmmsg call (with GSO each message carries up to 64 KiB of datagrams)
    #[arg(long, default_value_t = 64, allow_hyphen_values = true)]
    pub batch: usize,
    /// Pace to this rate: bits (1Gbps, 500Mbps, 1e9), bytes (125MB/s) or datagrams (50kpps)
    /// per second; unpaced without it. The total over all -P streams (iperf3's -b is per
    /// stream)
    #[arg(long, short = 'b', value_parser = units::parse_rate, allow_hyphen_values = true)]
    pub rate: Option<Rate>,
    /// UDP GSO: hand the kernel multi-datagram buffers
    #[arg(long, value_enum, default_value = "auto")]
    pub gso: GsoMode,
    /// Fill each payload from its sequence number and checksum it; the receiver checks it
    #[arg(long)]
    pub verify: bool,
    /// Interval between progress lines
    #[arg(long, short = 'i', value_parser = units::parse_nonzero_duration, default_value = "1s")]
    pub interval: Duration,
    /// Send buffer to ask for
    #[arg(long, value_parser = units::parse_nonzero_size, default_value = "4MiB")]
    pub sndbuf: u64,
    /// I/O backend of both sides: mio (sendmmsg/recvmmsg), uring (linked SEND batches;
    /// multishot RECVMSG into provided buffers), or auto: uring where io_uring works, else mio
    /// (the report names the backend that ran). uring where io_uring is unavailable is an
    /// error naming the cause
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// Zero-copy sends. UDP: io_uring SEND_ZC (uring backend, Linux 6.0+); TCP: MSG_ZEROCOPY
    /// with the error-queue completions counted. The report counts the sends the kernel
    /// copied after all (to a local receiver it always copies)
    #[arg(long)]
    pub zerocopy: bool,
    /// Search for the highest rate whose loss stays within --loss: an unpaced trial, then
    /// bisection with a confirmation run (as RFC 2544's throughput test); each trial sends
    /// for --trial
    #[arg(long, conflicts_with_all = ["size", "time", "count", "rate"])]
    pub find_rate: bool,
    /// With --find-rate: the loss allowed per trial (0, or a percentage such as 0.1%)
    #[arg(long, value_parser = crate::relay::impair::parse_percent, default_value = "0", requires = "find_rate")]
    pub loss: f64,
    /// With --find-rate: how long each trial sends
    #[arg(long, value_parser = units::parse_nonzero_duration, default_value = "2s", requires = "find_rate")]
    pub trial: Duration,
    /// With --find-rate: the most trials the search may run
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(2..=64), requires = "find_rate")]
    pub max_trials: u32,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub stream: StreamArg,
    #[command(flatten)]
    pub progress: ProgressArg,
    #[command(flatten)]
    pub plot: PlotArg,
    #[command(flatten)]
    pub pin: PinArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The embedded receiver's flags (ignored with --to)
    #[command(flatten, next_help_heading = "Embedded receiver (without --to)")]
    pub rx: RxArgs,
}

/// Receive netcore tests (UDP and TCP) and iperf3 clients, several at once, each with its own
/// exact report. SIGTERM or SIGHUP (or Ctrl-C) stops taking new tests, lets the running ones
/// finish and exits 128 + the signal; a second signal interrupts them (reports marked
/// interrupted).
#[derive(Args, Debug)]
pub struct RecvArgs {
    /// Address for the UDP socket and the TCP control listener (same port); a port alone
    /// (5201) listens on every address
    #[arg(long, default_value = "127.0.0.1:5300")]
    pub listen: String,
    /// Serve one test, then exit (non-zero if it failed)
    #[arg(long)]
    pub once: bool,
    /// Tests served at once (UDP, TCP, reverse; an iperf3 client's test runs alone); one more
    /// is told "receiver is busy". Memory per UDP test: --window/8 bytes of sequence tracker
    /// (2 MiB by default), two HDR histograms (under 1 MiB together) and 56 bytes per
    /// --interval of --max-duration; per TCP test: a thread and one --len buffer per stream
    /// at most (streams that share a thread share its buffer)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_tests: u16,
    /// The longest test a sender may ask for or run; one still sending past it is cut
    #[arg(long, value_parser = units::parse_nonzero_duration, default_value = "24h")]
    pub max_duration: Duration,
    /// The fastest a sender may send (bits or bytes a second); an interval over it by more
    /// than 25% cuts the test, and a reverse test (-R) is sent at most at it
    #[arg(long, value_parser = units::parse_rate)]
    pub max_rate: Option<Rate>,
    /// The most streams (-P) a test may have
    #[arg(long, default_value_t = crate::flow::streams::MAX_STREAMS, value_parser = clap::value_parser!(u16).range(1..=crate::flow::streams::MAX_STREAMS as i64))]
    pub max_streams: u16,
    /// Only these senders may connect: address blocks, IPv4 or IPv6 (10.0.0.0/8,::1/128);
    /// everyone else gets one line saying so
    #[arg(long, value_name = "CIDR,...", value_parser = parse_allow)]
    pub allow: Option<AllowList>,
    /// A shared key senders must prove they know (blast --auth-key-file; HMAC-SHA256 over the
    /// test id and a nonce this receiver picks per connection). iperf3 clients are refused
    #[arg(long, value_name = "PATH")]
    pub auth_key_file: Option<std::path::PathBuf>,
    /// Interval between progress lines
    #[arg(long, value_parser = units::parse_nonzero_duration, default_value = "1s")]
    pub interval: Duration,
    #[command(flatten)]
    pub rx: RxArgs,
    /// I/O backend: mio (recvmmsg), uring (multishot RECVMSG into a provided-buffer ring),
    /// or auto: uring where io_uring works, else mio (the listening line and the report name
    /// it). uring where io_uring is unavailable is an error naming the cause
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// How long to wait for late datagrams after the sender's Done, once they stop coming
    #[arg(long, value_parser = units::parse_nonzero_duration, default_value = "250ms")]
    pub drain: Duration,
    /// Sequence numbers tracked in flight (older arrivals count as too late)
    #[arg(long, default_value_t = DEFAULT_WINDOW)]
    pub window: u64,
    /// Every TCP data connection (netcore's and iperf3's) on a thread of its own, whatever
    /// the sender asks (by default the readers or writers that share a CPU share a thread)
    #[arg(long)]
    pub thread_per_stream: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub stream: StreamArg,
    #[command(flatten)]
    pub progress: ProgressArg,
    #[command(flatten)]
    pub pin: PinArgs,
    #[command(flatten)]
    pub metrics: MetricsArg,
}

fn parse_allow(text: &str) -> Result<AllowList, String> {
    AllowList::parse(text)
}

/// HOST:PORT, or HOST alone (the default port). A bare number or a port past 65535 is a
/// usage error: "5201" read as a host is the IPv4 address 0.0.20.81.
pub fn resolve(text: &str) -> Result<SocketAddr> {
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

/// `recv --listen`: HOST:PORT, or a port alone for that port on every address (as iperf3's
/// `-p`): `[::]`, which takes IPv4 too, where the host has IPv6, else `0.0.0.0`.
fn listen_addr(text: &str) -> Result<SocketAddr> {
    if let Ok(port) = text.parse::<u16>() {
        let v6 = std::net::TcpListener::bind("[::]:0").is_ok();
        let any: std::net::IpAddr = if v6 {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        return Ok(SocketAddr::new(any, port));
    }
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    resolve(text).with_context(|| format!("invalid --listen '{text}'"))
}

pub fn check_batch(batch: usize) -> Result<()> {
    if !(1..=1024).contains(&batch) {
        crate::usage_bail!("--batch {batch} is out of range: use 1..=1024");
    }
    Ok(())
}

/// The plan from --size/--time/--count for `len`-byte datagrams or writes.
pub fn plan_of(a: &BlastArgs, len: usize) -> Result<Plan> {
    Ok(match (a.size, a.time, a.count) {
        (Some(bytes), _, _) => Plan::Count(bytes.div_ceil(len as u64)),
        (_, Some(t), _) => Plan::TimeNs(t.as_nanos() as u64),
        (_, _, Some(0)) => return Err(super::common::usage("--count 0: nothing to send")),
        (_, _, Some(n)) => Plan::Count(n),
        _ => Plan::TimeNs(10_000_000_000),
    })
}

/// The receiving side's settings from blast's flags (`--rx` ones, interval, backend), on `cpu`.
fn rx_options(a: &BlastArgs, cpu: Option<usize>) -> RecvOptions {
    RecvOptions {
        cpu,
        wait: a.rx.wait(),
        rcvbuf: a.rx.rcvbuf as usize,
        gro: !a.rx.no_gro,
        interval: a.interval,
        backend: a.backend,
        // The embedded receiver checks the key blast proves (its file was read already).
        auth_key: a.client.client().ok().and_then(|c| c.key),
        ..RecvOptions::default()
    }
}

/// Blast's own receiver on loopback (without --to): the thread serving the test (both halves
/// of a UDP `--bidir` one) and its stop flag.
pub struct Embedded {
    handle: thread::JoinHandle<Result<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Embedded {
    /// Binds a receiver on 127.0.0.1:0 with blast's --rx flags and serves one test in a
    /// thread (a UDP `--bidir` test is two at once: it serves until [`Embedded::finish`]);
    /// returns it and its address.
    pub fn start(a: &BlastArgs, cpu: Option<usize>) -> Result<(Embedded, SocketAddr)> {
        let bidir = udp_bidir(a);
        let r = Receiver::bind(RecvOptions {
            listen: "127.0.0.1:0".parse()?,
            max_tests: if bidir { 2 } else { 1 },
            ..rx_options(a, cpu)
        })?;
        let addr = r.local_addr();
        let stop = r.stopper();
        let handle = thread::Builder::new()
            .name("netcore-embedded-recv".into())
            .spawn(move || r.serve(!bidir, &mut |_| {}))?;
        Ok((Embedded { handle, stop }, addr))
    }

    /// After a test the embedded receiver ends by itself (the control channel closed); if the
    /// sender failed before connecting, this stops it waiting.
    pub fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

/// A UDP test both ways at once (`--bidir` without `--proto tcp`).
fn udp_bidir(a: &BlastArgs) -> bool {
    a.tcp.bidir && a.proto == Proto::Udp
}

/// The receiver's (target, control) addresses from --to/--control, or an embedded receiver.
pub fn target_of(
    a: &BlastArgs,
    rx_cpu: Option<usize>,
) -> Result<(SocketAddr, SocketAddr, Option<Embedded>)> {
    Ok(match &a.to {
        Some(to) => {
            let target = resolve(to)?;
            let control = match &a.control {
                Some(c) => resolve(c)?,
                None => target,
            };
            (target, control, None)
        }
        None => {
            let (e, addr) = Embedded::start(a, rx_cpu)?;
            (addr, addr, Some(e))
        }
    })
}

/// The CPUs of the blasting threads, one per stream in turn (empty: unpinned). `--cpus LIST`:
/// the list, but for the embedded receiver's entry (its second) when another is left;
/// `--pin`: every CPU but the receiver's. Without either, one stream beside an embedded
/// receiver is pinned to CPU 0 (the receiver is on 1); more streams are left to the scheduler.
pub fn sender_cpus(
    list: Option<&[usize]>,
    pin: bool,
    rx_cpu: Option<usize>,
    ncpu: usize,
    streams: u16,
) -> Vec<usize> {
    let without_rx = |all: Vec<usize>| {
        let rest: Vec<usize> = all.iter().copied().filter(|&c| Some(c) != rx_cpu).collect();
        if rest.is_empty() {
            all
        } else {
            rest
        }
    };
    match list {
        Some(l) if streams <= 1 => vec![l[0]],
        Some(l) => without_rx(l.to_vec()),
        None if pin && streams > 1 => without_rx((0..ncpu.max(1)).collect()),
        None if pin || (rx_cpu.is_some() && streams <= 1) => vec![0],
        None => Vec::new(),
    }
}

/// The sending threads' CPUs and the (embedded) receiver's: `--cpus` in that order, or the
/// receiver on CPU 1 by default when there is an embedded receiver on a host with two or more.
pub fn cpus_of(a: &BlastArgs, embedded: bool) -> (Vec<usize>, Option<usize>) {
    let ncpu = affinity::available_cpus();
    let cpus = a.pin.list().map(<[usize]>::to_vec);
    let rx = match &cpus {
        Some(l) if l.len() > 1 => Some(l[1]),
        Some(_) => None,
        None if ncpu > 1 => Some(1),
        None => None,
    };
    let tx = sender_cpus(
        cpus.as_deref(),
        a.pin.pin,
        embedded.then_some(rx).flatten(),
        ncpu,
        a.tcp.streams,
    );
    (tx, rx)
}

/// The sender's options for one test of `blast` (or one trial of `--find-rate`).
pub fn blast_options(
    a: &BlastArgs,
    len: usize,
    plan: Plan,
    rate: Option<Rate>,
    (target, control): (SocketAddr, SocketAddr),
    cpus: Vec<usize>,
    client: ClientId,
) -> BlastOptions {
    BlastOptions {
        target,
        control,
        len,
        batch: a.batch,
        gso: a.gso,
        rate,
        plan,
        verify: a.verify,
        cpus,
        streams: a.tcp.streams,
        sndbuf: a.sndbuf as usize,
        backend: a.backend,
        zerocopy: a.zerocopy,
        client,
        test_id: None,
        cut_after: None,
    }
}

pub fn blast(a: BlastArgs) -> Result<ExitCode> {
    if let Some(rest) = a.to.as_deref().and_then(|t| t.strip_prefix("iperf3://")) {
        return iperf3_blast(&a, rest);
    }
    let len = a.len.unwrap_or(1472) as usize;
    sender::check_len(len).map_err(super::common::usage)?;
    check_batch(a.batch)?;
    let plan = plan_of(&a, len)?;
    a.plot.check()?;
    let client = a.client.client()?;
    let stream = a.stream.open("blast", Some(&a.output))?;
    signal::install()?;
    let format = a.output.format();
    let (_, rx_cpu) = cpus_of(&a, a.to.is_none());
    let (target, control, embedded) = target_of(&a, rx_cpu)?;
    let (tx_cpus, _) = cpus_of(&a, embedded.is_some());
    let mut opts = blast_options(&a, len, plan, a.rate, (target, control), tx_cpus, client);
    if a.tcp.bidir {
        if stream.on() {
            crate::usage_bail!("--json-stream does not cover UDP --bidir yet; use --json");
        }
        let live = Live::new(format, a.progress.progress);
        return blast_bidir(&a, &opts, embedded, format, live);
    }
    // One test: its id is chosen here, so that the start event names it.
    let test_id: u64 = rand::random();
    opts.test_id = Some(test_id);
    let live = Live::new(format, a.progress.progress).off_stdout(stream.on());
    stream.emit(EventKind::Start, |l| {
        l.kind("udp")
            .test_id(format!("{test_id:016x}"))
            .peer(target)
            .data(&serde_json::json!({
                "len": len,
                "plan": plan,
                "rate": a.rate.map(|r| r.to_string()),
                "streams": a.tcp.streams,
                "reverse": a.tcp.reverse,
            }))
    })?;
    let interval = |row: &IntervalRow| {
        let _ = stream.emit(EventKind::Interval, |l| l.kind("udp").data(row));
    };
    let report = if a.tcp.reverse {
        // This side receives: its UDP thread has the embedded receiver's flags.
        let rx = rx_options(&a, opts.cpus.first().copied());
        receiver::run_reverse(&opts, rx, &mut |ev| {
            if let Event::Interval { row, .. } = ev {
                live.line(&recv_interval_line(&row));
                interval(&row);
            }
        })
    } else {
        sender::run(&opts, &mut |row| {
            live.line(&(UdpReport::interval_line(row) + "\n"));
            interval(row);
        })
    };
    if let Some(e) = embedded {
        e.finish();
    }
    let report = stream.or_error(report)?;
    if let Some(p) = a.plot.file() {
        plot_intervals(p, &report)?;
    }
    if stream.on() {
        stream.emit(EventKind::End, |l| {
            l.kind("udp")
                .test_id(&report.test_id)
                .peer(target)
                .data(&report)
        })?;
        return Ok(interrupted_exit(report.receiver.interrupted));
    }
    let text = report.render(format);
    if let Err(e) = out(&text) {
        // stdout is gone (closed, a full disk): the report must not be lost silently.
        eprint!("{text}");
        bail!("cannot write the report to stdout ({e}); it went to stderr");
    }
    Ok(interrupted_exit(report.receiver.interrupted))
}

/// `blast --bidir` (UDP): the forward and the reverse test at once, their interval lines
/// marked `fwd`/`rev` as they come, then one report with both.
fn blast_bidir(
    a: &BlastArgs,
    opts: &BlastOptions,
    embedded: Option<Embedded>,
    format: Format,
    live: Live,
) -> Result<ExitCode> {
    // The receiving thread takes the entry of `--cpus` after the sending threads' (in turn),
    // or with `--pin` the CPU after theirs; without either it is left to the scheduler.
    let rx_cpu = match (a.pin.list(), a.pin.pin) {
        (Some(l), _) => cpu_for(l, opts.cpus.len()),
        (None, true) => cpu_for(
            &(0..affinity::available_cpus().max(1)).collect::<Vec<_>>(),
            opts.cpus.len(),
        ),
        (None, false) => None,
    };
    let rx = rx_options(a, rx_cpu);
    let report = bidir::run(
        opts,
        rx,
        &mut |row| {
            live.line(&format!("fwd {}\n", UdpReport::interval_line(row)));
        },
        &mut |ev| {
            if let Event::Interval { row, .. } = ev {
                live.line(&format!("rev {}", recv_interval_line(&row)));
            }
        },
    );
    if let Some(e) = embedded {
        e.finish();
    }
    let report = report?;
    let text = report.render(format);
    if let Err(e) = out(&text) {
        eprint!("{text}");
        bail!("cannot write the report to stdout ({e}); it went to stderr");
    }
    Ok(interrupted_exit(report.interrupted()))
}

/// `blast --to iperf3://HOST[:PORT]` (UDP): datagrams with iperf3's header to or from a stock
/// `iperf3 -s` (port 5201 by default), `-P`, `-R`, `--bidir`; netcore's report (what it sent
/// beside the server's figures, what it received through its tracker), then the server's
/// results document as returned (on stderr when the report is JSON or CSV).
fn iperf3_blast(a: &BlastArgs, host: &str) -> Result<ExitCode> {
    for (flag, on) in [("--verify", a.verify), ("--control", a.control.is_some())] {
        if on {
            crate::usage_bail!("{flag} has no iperf3 equivalent: not with --to iperf3://");
        }
    }
    let server = iperf3_addr(host)?;
    let len = a.len.unwrap_or(1472) as usize;
    let plan = plan_of(a, len)?;
    signal::install()?;
    let format = a.output.format();
    let mode = crate::flow::streams::Mode::of(a.tcp.reverse, a.tcp.bidir);
    let o = crate::flow::iperf3::client::run_udp(&crate::flow::iperf3::client::UdpClientOptions {
        server,
        streams: a.tcp.streams,
        mode,
        len,
        plan,
        rate_bps: a
            .rate
            .map(|r| (r.packets_per_sec(len) * len as f64 * 8.0) as u64),
        gso: a.gso != GsoMode::Off,
        cpus: a.pin.list().map(<[usize]>::to_vec).unwrap_or_default(),
    })?;
    out(&o.report.render(format))?;
    let theirs = crate::flow::iperf3::client::server_lines(&o.server, true);
    if format == Format::Table {
        out(&theirs)?;
    } else {
        eprint!("{theirs}");
    }
    Ok(interrupted_exit(o.report.interrupted))
}

/// HOST[:PORT] of an iperf3 server, port 5201 by default.
pub fn iperf3_addr(host: &str) -> Result<SocketAddr> {
    let has_port = host.parse::<SocketAddr>().is_ok()
        || host
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok());
    if has_port {
        resolve(host)
    } else {
        resolve(&format!("{host}:{}", crate::interop::iperf3::DEFAULT_PORT))
    }
}

/// The exit code of a test that ran: 0, or 128 + the signal (130 for Ctrl-C, 143 for
/// SIGTERM) when a signal cut it short (its report, marked interrupted, was printed), or 1 when
/// the receiver ended it early.
pub fn interrupted_exit(interrupted: bool) -> ExitCode {
    match (interrupted, signal::last_signal()) {
        (false, _) => ExitCode::SUCCESS,
        (true, 0) => ExitCode::from(1),
        (true, sig) => ExitCode::from(128u8.saturating_add(sig as u8)),
    }
}

/// Sent and received rate per interval, in the unit the largest value reads best in (a
/// 200 Mbit/s test is drawn in Mbit/s); a run shorter than one interval plots its average.
fn plot_intervals(path: &std::path::Path, r: &UdpReport) -> Result<()> {
    let (sent, recv): (Vec<_>, Vec<_>) = if r.intervals.is_empty() {
        (
            vec![(r.sender.elapsed_s, r.sender.rate_bps)],
            vec![(r.receiver.duration_s, r.receiver.goodput_bps)],
        )
    } else {
        r.intervals
            .iter()
            .map(|i| ((i.t, i.sent_bps), (i.t, i.received_bps)))
            .unzip()
    };
    let max = sent.iter().chain(&recv).map(|p| p.1).fold(0.0, f64::max);
    let (div, unit) = units::BITS_PER_SEC.axis(max);
    let scale = |v: Vec<(f64, f64)>| v.into_iter().map(|(t, y)| (t, y / div)).collect();
    plot::line_chart(
        path,
        &format!("netcore blast: {}-byte datagrams to {}", r.len, r.target),
        "time (s)",
        unit,
        &[
            Series::new("sent", scale(sent)),
            Series::new("received", scale(recv)),
        ],
        &PlotOptions::default(),
    )
}

/// The receiving side's interval line.
fn recv_interval_line(row: &IntervalRow) -> String {
    format!(
        "[{:6.2}-{:6.2}s] received {:>12} dgrams {:>14} | lost so far {}\n",
        row.start,
        row.t,
        units::fmt_count(row.received),
        units::fmt_bits_per_sec(row.received_bps),
        units::fmt_count(row.lost_so_far)
    )
}

/// The two results documents of an iperf3 test, stream by stream: what the client said it
/// moved and what netcore answered (the client prints the latter as the server's figures).
fn iperf3_exchange_lines(client: &Iperf3Results, server: &Iperf3Results) -> String {
    let mut s = String::from("iperf3 results exchanged (bytes per stream id: client | netcore):\n");
    for o in &server.streams {
        let c = client.streams.iter().find(|c| c.id == o.id);
        s.push_str(&format!(
            "  id {:>3}: {:>14} | {:>14}\n",
            o.id,
            c.map_or("-".into(), |c| units::fmt_count(c.bytes)),
            units::fmt_count(o.bytes)
        ));
    }
    s
}

pub fn recv(a: RecvArgs) -> Result<ExitCode> {
    let listen = listen_addr(&a.listen)?;
    check_batch(64)?;
    if a.window < 64 || a.window > 1 << 32 {
        crate::usage_bail!("--window {} is out of range: use 64..=4294967296", a.window);
    }
    let max_rate_bps = match a.max_rate {
        None => None,
        Some(Rate::BitsPerSec(b)) => Some(b),
        Some(Rate::PacketsPerSec(_)) => {
            crate::usage_bail!("--max-rate takes bits or bytes a second, not datagrams")
        }
    };
    let auth_key = match &a.auth_key_file {
        Some(p) => Some(Key::read(p).map_err(super::common::usage)?),
        None => None,
    };
    let stream = a.stream.open("recv", Some(&a.output))?;
    signal::install()?;
    signal::install_hangup()?;
    let format = a.output.format();
    let cpu = match a.pin.list() {
        Some(l) => Some(l[0]),
        None if a.pin.pin => Some(crate::sys::online_cpus() - 1),
        None => None,
    };
    let r = Receiver::bind(RecvOptions {
        listen,
        interval: a.interval,
        cpu,
        wait: a.rx.wait(),
        rcvbuf: a.rx.rcvbuf as usize,
        gro: !a.rx.no_gro,
        drain: a.drain,
        window: a.window,
        batch: 64,
        backend: a.backend,
        max_tests: a.max_tests as usize,
        limits: Limits {
            max_plan: a.max_duration,
            max_streams: a.max_streams,
            max_rate_bps,
            ..Limits::default()
        },
        allow: a.allow.clone().unwrap_or_default(),
        auth_key,
        graceful: true,
        thread_per_stream: a.thread_per_stream,
    })?;
    let mut metrics = RecvMetrics::new();
    let _endpoint = a.metrics.start_shared("recv", metrics.registry())?;
    let live = Live::new(format, a.progress.progress).off_stdout(stream.on());
    let banner = format!(
        "netcore recv: listening on {} (UDP and TCP control), backend {}",
        r.local_addr(),
        r.backend().name()
    );
    if live.on_stdout() {
        out(&(banner + "\n"))?;
    } else {
        eprintln!("{banner}");
    }
    let mut rx = RecvOutput {
        format,
        live,
        stream,
        csv_header_done: false,
        lost_output: false,
        peers: Vec::new(),
        iperf3_peer: None,
    };
    let res = r.serve(a.once, &mut |ev| {
        rx.metrics(&mut metrics, &ev);
        rx.print(ev);
    });
    stream.or_error(res)?;
    if rx.lost_output {
        bail!("cannot write reports to stdout; they went to stderr");
    }
    // A first signal drains, a second interrupts the running tests: either way the status is
    // 128 + the signal (cli::interrupted_status).
    Ok(ExitCode::SUCCESS)
}

/// What `recv` prints of its receiver's events, and what it keeps between them.
struct RecvOutput {
    format: Format,
    /// Where the live lines go (the table on stdout, --progress on stderr).
    live: Live,
    stream: JsonStream,
    csv_header_done: bool,
    /// stdout failed: the reports went to stderr.
    lost_output: bool,
    /// The senders of the UDP tests running (test id, control peer), the oldest dropped
    /// past [`RecvOutput::MAX_PEERS`] (a test that failed before its report leaves one).
    peers: Vec<(u64, SocketAddr)>,
    /// The iperf3 client whose test runs.
    iperf3_peer: Option<SocketAddr>,
}

impl RecvOutput {
    /// Publishes an event into the metrics.
    fn metrics(&mut self, m: &mut RecvMetrics, ev: &Event) {
        match ev {
            Event::Started { peer, test_id, len } => m.udp_started(*test_id, *peer, *len),
            Event::Interval { test_id, row } => m.udp_interval(*test_id, row.received),
            Event::Finished(rep) => m.udp_finished(rep, rep.receiver.latency_hist.as_ref()),
            Event::Failed(_) => m.failed(),
            Event::Tcp {
                peer,
                ev: TcpEvent::Finished(rep),
                ..
            } => m.tcp_finished("tcp", Some(peer.ip()), rep),
            Event::Iperf3(Iperf3Event::Tcp(TcpEvent::Finished(rep))) => {
                m.tcp_finished("iperf3", self.iperf3_peer.map(|p| p.ip()), rep)
            }
            Event::Iperf3(Iperf3Event::Udp(rep)) => m.iperf3_udp_finished(rep),
            _ => {}
        }
    }

    /// A report: the stream's end line, or the report in the chosen format (stderr if stdout
    /// is gone, and the exit says so).
    fn report(&mut self, kind: &str, test_id: Option<&str>, peer: Option<String>, text: String) {
        let ok = if self.stream.on() {
            let r = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
            self.stream
                .emit(EventKind::End, |l| {
                    let l = l.kind(kind).data(&r);
                    let l = match test_id {
                        Some(id) => l.test_id(id),
                        None => l,
                    };
                    match peer {
                        Some(p) => l.peer(p),
                        None => l,
                    }
                })
                .is_ok()
        } else if self.format == Format::Json {
            // One compact document per line (NDJSON): recv prints one per test.
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => out(&format!("{v}\n")).is_ok(),
                Err(_) => out(&text).is_ok(),
            }
        } else {
            out(&text).is_ok()
        };
        if !ok {
            eprint!("{text}");
            self.lost_output = true;
        }
    }

    /// Tests running at once whose peer is kept for the end line.
    const MAX_PEERS: usize = 64;

    fn interval(&self, kind: &str, test_id: Option<u64>, row: &impl serde::Serialize) {
        let _ = self.stream.emit(EventKind::Interval, |l| {
            let l = l.kind(kind).data(row);
            match test_id {
                Some(id) => l.test_id(format!("{id:016x}")),
                None => l,
            }
        });
    }

    fn print(&mut self, ev: Event) {
        let format = self.format;
        let live = &self.live;
        let json = |format: Format| {
            if self.stream.on() {
                Format::Json
            } else {
                format
            }
        };
        match ev {
            Event::Started { peer, test_id, len } => {
                if self.peers.len() >= Self::MAX_PEERS {
                    self.peers.remove(0);
                }
                self.peers.push((test_id, peer));
                live.line(&format!(
                        "test {test_id:016x} from {peer}: {len}-byte datagrams\n"
                ));
                let _ = self.stream.emit(EventKind::Start, |l| {
                    l.test_id(format!("{test_id:016x}"))
                        .kind("udp")
                        .peer(peer)
                        .data(&serde_json::json!({ "len": len }))
                });
            }
            Event::Interval { test_id, row } => {
                live.line(&recv_interval_line(&row));
                self.interval("udp", Some(test_id), &row);
            }
            Event::Finished(rep) => {
                let at = self
                    .peers
                    .iter()
                    .position(|(id, _)| format!("{id:016x}") == rep.test_id);
                let peer = at.map(|i| self.peers.remove(i).1.to_string());
                let mut text = rep.render(json(format));
                if format == Format::Csv && !self.stream.on() {
                    if self.csv_header_done {
                        text = text
                            .split_once('\n')
                            .map(|x| x.1.to_string())
                            .unwrap_or_default();
                    }
                    self.csv_header_done = true;
                }
                self.report("udp", Some(&rep.test_id), peer, text);
            }
            Event::Failed(why) => {
                eprintln!("netcore recv: {why}");
                let _ = self.stream.emit(EventKind::Error, |l| l.message(why));
            }
            Event::Stopping { running } => eprintln!(
                "netcore recv: stopping: no new tests; {running} running finish first (signal again to interrupt them)"
            ),
            Event::Tcp {
                test_id,
                peer,
                ev: TcpEvent::Started(plan, spec),
            } => {
                live.line(&format!(
                    "test {test_id:016x} from {peer}: TCP, {}, {} stream{}\n",
                    spec.mode.name(),
                    spec.streams,
                    if spec.streams == 1 { "" } else { "s" }
                ));
                let _ = self.stream.emit(EventKind::Start, |l| {
                    l.test_id(format!("{test_id:016x}"))
                        .kind("tcp")
                        .peer(peer)
                        .data(&serde_json::json!({ "plan": plan, "settings": spec }))
                });
            }
            Event::Tcp {
                test_id,
                ev: TcpEvent::Interval(row),
                ..
            } => {
                live.line(&TcpReport::interval_lines(&row));
                self.interval("tcp", Some(test_id), &row);
            }
            Event::Tcp {
                peer,
                ev: TcpEvent::Finished(rep),
                ..
            } => {
                let text = rep.render(json(format));
                self.report("tcp", Some(&rep.test_id), Some(peer.to_string()), text);
            }
            Event::Iperf3(Iperf3Event::Tcp(TcpEvent::Finished(rep))) => {
                let text = rep.render(json(format));
                let peer = self.iperf3_peer.take().map(|p| p.to_string());
                self.report("iperf3", Some(&rep.test_id), peer, text);
            }
            // iperf3's tests announce themselves with Iperf3Event::Started.
            Event::Iperf3(Iperf3Event::Tcp(TcpEvent::Started(..))) => {}
            Event::Iperf3(Iperf3Event::Tcp(TcpEvent::Interval(row))) => {
                live.line(&TcpReport::interval_lines(&row));
                self.interval("iperf3", None, &row);
            }
            Event::Iperf3(Iperf3Event::Udp(rep)) => {
                let peer = self.iperf3_peer.take().map(|p| p.to_string());
                self.report("iperf3", None, peer, rep.render(json(format)));
            }
            Event::Iperf3(Iperf3Event::Started { peer, what }) => {
                self.iperf3_peer = Some(peer);
                if live.on_stdout() {
                    let _ = out(&format!("{what} from {peer}\n"));
                }
                let _ = self.stream.emit(EventKind::Start, |l| {
                    l.kind("iperf3")
                        .peer(peer)
                        .data(&serde_json::json!({ "what": what }))
                });
            }
            Event::Iperf3(Iperf3Event::Exchanged { client, server }) => {
                if live.on_stdout() {
                    let _ = out(&iperf3_exchange_lines(&client, &server));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sender_cpus;

    #[test]
    fn stream_cpus() {
        // one stream: as before (the list's first, or 0 beside an embedded receiver)
        assert_eq!(sender_cpus(Some(&[3, 4]), false, Some(4), 8, 1), [3]);
        assert_eq!(sender_cpus(None, false, Some(1), 2, 1), [0]);
        assert_eq!(sender_cpus(None, false, None, 2, 1), Vec::<usize>::new());
        // more: the list but for the receiver's CPU, or every CPU but the receiver's
        assert_eq!(sender_cpus(Some(&[0, 1, 2]), false, Some(1), 8, 4), [0, 2]);
        assert_eq!(sender_cpus(Some(&[5]), false, None, 8, 4), [5]);
        assert_eq!(sender_cpus(None, true, Some(1), 4, 4), [0, 2, 3]);
        assert_eq!(sender_cpus(None, true, Some(0), 1, 4), [0]);
        assert_eq!(sender_cpus(None, false, Some(1), 4, 4), Vec::<usize>::new());
    }
}
