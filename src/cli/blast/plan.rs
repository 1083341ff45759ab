//! The plan of one `blast` run, built once from its flags ([`BlastPlan::from_args`], as
//! ripgrep's LowArgs → HiArgs): what kind of test, against what, on which CPUs, how many
//! streams which way, how much to send and how fast, and where the output goes. Every check
//! of the flags is made here, before anything runs; the runners (`udp`, `tcp`, `find_rate`,
//! `iperf3`) take the plan and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::args::BlastArgs;
use crate::cli::common::{check_congestion, resolve, usage, JsonStream, Live, ProgressMode, Proto};
use crate::flow::backend::Backend;
use crate::flow::control::{check_interval, ClientId, Plan};
use crate::flow::payload::{TcpSpec, DEFAULT_LEN, MAX_LEN};
use crate::flow::recv::receiver::RecvOptions;
use crate::flow::streams::{cpu_for, Mode};
use crate::flow::udp::sender::{self, BlastOptions, GsoMode};
use crate::stats::Format;
use crate::sys::affinity;
use crate::units::Rate;

/// UDP datagrams' payload when --len is not given.
const UDP_LEN: usize = 1472;
/// The plan when no amount is given: 10 s.
const DEFAULT_TIME_NS: u64 = 10_000_000_000;
/// Progress lines when --interval is not given.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// What `blast` runs.
#[derive(Debug, Clone)]
pub enum Kind {
    /// One UDP test (`-R`: the receiver sends; `--bidir`: two tests at once).
    Udp,
    /// UDP trials searching for the highest rate within a loss bound (`--find-rate`).
    FindRate(SearchPlan),
    /// One TCP test with these settings (sent to the receiver in `Setup`).
    Tcp(TcpSpec),
}

/// `--find-rate`'s settings.
#[derive(Debug, Clone, Copy)]
pub struct SearchPlan {
    /// The loss allowed per trial (a fraction).
    pub loss: f64,
    pub trial: Duration,
    pub max_trials: u32,
}

/// Who the test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A receiver of blast's own on loopback (no --to), started per test.
    Embedded,
    /// A netcore receiver: where data goes, and its control address (--control, or the same).
    Remote {
        data: SocketAddr,
        control: SocketAddr,
    },
    /// A stock `iperf3 -s` (--to iperf3://HOST[:PORT]).
    Iperf3(SocketAddr),
}

/// The CPUs of the test's threads on this host (None / empty: unpinned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cpus {
    /// The sending threads (UDP) or data connections (TCP, iperf3), one per stream in turn.
    pub send: Vec<usize>,
    /// This side's receiving thread: a UDP `-R` or `--bidir` test's.
    pub recv: Option<usize>,
    /// The embedded receiver's thread.
    pub embedded: Option<usize>,
}

/// UDP's send path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpSend {
    pub batch: usize,
    pub gso: GsoMode,
    pub verify: bool,
    pub sndbuf: usize,
}

/// Where the output goes and in what form.
#[derive(Debug, Clone)]
pub struct Output {
    pub format: Format,
    pub stream: JsonStream,
    pub progress: ProgressMode,
    pub plot: Option<PathBuf>,
}

impl Output {
    /// Where the live lines go (not on stdout when it carries `--json-stream` lines).
    pub fn live(&self) -> Live {
        Live::new(self.format, self.progress).off_stdout(self.stream.on())
    }
}

/// One `blast` run, planned.
#[derive(Debug, Clone)]
pub(crate) struct BlastPlan {
    pub kind: Kind,
    pub target: Target,
    pub cpus: Cpus,
    /// Streams per direction (`-P`).
    pub streams: u16,
    pub mode: Mode,
    /// Datagram payload (UDP) or bytes per write (TCP).
    pub len: usize,
    /// How much each test sends (a count split over the streams, or a time for each).
    pub amount: Plan,
    /// The pace over all streams of a direction (None: unpaced).
    pub rate: Option<Rate>,
    pub udp: UdpSend,
    pub backend: Backend,
    pub zerocopy: bool,
    /// How this side's receiving threads and the embedded receiver read (the CPU is set
    /// where each one starts: [`BlastPlan::rx_on`]).
    pub rx: RecvOptions,
    /// The source address and shared key.
    pub client: ClientId,
    /// This side's interval (`--interval`, or 1 s).
    pub interval: Duration,
    /// The interval a `--to` receiver is asked to sample the test at: this side's (checked
    /// against the range a receiver accepts); None for the embedded receiver and iperf3.
    pub receiver_interval: Option<Duration>,
    pub out: Output,
}

impl BlastPlan {
    /// Checks the flags and plans the run. Nothing is opened or started here.
    pub(crate) fn from_args(a: BlastArgs) -> Result<BlastPlan> {
        refuse_misplaced(&a)?;
        let target = target_of(&a)?;
        let iperf3 = matches!(target, Target::Iperf3(_));
        let mode = Mode::of(a.streams.reverse, a.streams.bidir);
        let len = len_of(&a, iperf3)?;
        let amount = amount_of(&a, len)?;
        // `--rate 0` paces nothing: unpaced, as iperf3's `-b 0`.
        let rate = a.rate.filter(|r| !r.is_zero());
        let kind = match (a.proto, a.search.find_rate) {
            (Proto::Tcp, _) => Kind::Tcp(spec_of(&a, mode, len, rate)?),
            (Proto::Udp, true) => Kind::FindRate(SearchPlan {
                loss: a.search.loss,
                trial: a.search.trial,
                max_trials: a.search.max_trials,
            }),
            (Proto::Udp, false) => Kind::Udp,
        };
        if a.proto == Proto::Udp && !iperf3 {
            check_batch(a.udp.batch)?;
        }
        a.plot.check()?;
        let client = if iperf3 {
            ClientId::default()
        } else {
            a.client.client()?
        };
        let stream = a.stream.open("blast", Some(&a.output))?;
        let cpus = cpus_of(&a, target, mode);
        let receiver_interval = receiver_interval_of(&a, target)?;
        let interval = a.interval.unwrap_or(DEFAULT_INTERVAL);
        Ok(BlastPlan {
            kind,
            target,
            cpus,
            streams: a.streams.streams,
            mode,
            len,
            amount,
            rate,
            udp: UdpSend {
                batch: a.udp.batch,
                gso: a.udp.gso,
                verify: a.udp.verify,
                sndbuf: a.udp.sndbuf as usize,
            },
            backend: a.backend,
            zerocopy: a.zerocopy,
            rx: RecvOptions {
                wait: a.rx.wait(),
                rcvbuf: a.rx.rcvbuf as usize,
                gro: !a.rx.no_gro,
                interval,
                backend: a.backend,
                // The embedded receiver checks the key blast proves (its file was read already).
                auth_key: client.key.clone(),
                ..RecvOptions::default()
            },
            client,
            interval,
            receiver_interval,
            out: Output {
                format: a.output.format(),
                stream,
                progress: a.progress.progress,
                plot: a.plot.plot,
            },
        })
    }

    /// The receiving side's settings on `cpu`.
    pub(crate) fn rx_on(&self, cpu: Option<usize>) -> RecvOptions {
        RecvOptions {
            cpu,
            ..self.rx.clone()
        }
    }

    /// A UDP test both ways at once.
    pub(crate) fn udp_bidir(&self) -> bool {
        matches!(self.kind, Kind::Udp) && self.mode == Mode::Bidir
    }

    /// The sender's options for one UDP test (or one `--find-rate` trial at `rate`) to a
    /// receiver at `data`/`control`.
    pub(crate) fn blast_options(
        &self,
        (data, control): (SocketAddr, SocketAddr),
        rate: Option<Rate>,
    ) -> BlastOptions {
        BlastOptions {
            target: data,
            control,
            len: self.len,
            batch: self.udp.batch,
            gso: self.udp.gso,
            rate,
            plan: self.amount,
            verify: self.udp.verify,
            cpus: self.cpus.send.clone(),
            streams: self.streams,
            sndbuf: self.udp.sndbuf,
            backend: self.backend,
            zerocopy: self.zerocopy,
            client: self.client.clone(),
            test_id: None,
            cut_after: None,
            receiver_interval: self.receiver_interval,
            interrupt: None,
        }
    }
}

/// Refuses flags that do not apply to the chosen protocol or kind of run.
fn refuse_misplaced(a: &BlastArgs) -> Result<()> {
    let iperf3 = a.to.as_deref().is_some_and(|t| t.starts_with("iperf3://"));
    if a.stream.json_stream && (a.search.find_rate || iperf3) {
        crate::usage_bail!(
            "--json-stream covers netcore's own tests: not --find-rate or iperf3:// targets"
        );
    }
    match a.proto {
        Proto::Udp => refuse_tcp_flags(a)?,
        Proto::Tcp => refuse_udp_flags(a)?,
    }
    if iperf3 {
        refuse_for_iperf3(a)?;
    }
    Ok(())
}

/// `--proto udp` (the default): TCP's socket settings are refused, as are what UDP
/// `--bidir` and `-R` cannot do.
fn refuse_tcp_flags(a: &BlastArgs) -> Result<()> {
    let t = &a.tcp;
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
        crate::usage_bail!("{f} applies to --proto tcp");
    }
    if a.streams.bidir {
        let what = [
            ("--find-rate", a.search.find_rate),
            ("--plot", a.plot.plot.is_some()),
        ];
        if let Some((f, _)) = what.iter().find(|x| x.1) {
            crate::usage_bail!("{f} is not available with --bidir for --proto udp");
        }
    }
    if a.streams.reverse && a.zerocopy {
        crate::usage_bail!("--zerocopy applies to the sending side: not with -R");
    }
    Ok(())
}

/// `--proto tcp`: UDP's send path is refused rather than silently ignored (as --window is for
/// UDP). Their values are compared with the defaults clap fills in.
fn refuse_udp_flags(a: &BlastArgs) -> Result<()> {
    let u = &a.udp;
    let udp_only = [
        ("--verify", u.verify, ""),
        ("--gso", u.gso != GsoMode::Auto, ""),
        ("--batch", u.batch != 64, ""),
        (
            "--sndbuf",
            u.sndbuf != 4 << 20,
            " (TCP's buffers: --window)",
        ),
    ];
    if let Some((f, _, tip)) = udp_only.iter().find(|x| x.1) {
        crate::usage_bail!("{f} applies to --proto udp{tip}");
    }
    if u.control.is_some() {
        crate::usage_bail!(
            "--control applies to --proto udp (TCP data goes to the control address)"
        );
    }
    if a.search.find_rate {
        crate::usage_bail!("--find-rate searches UDP rates (TCP has no datagram loss to bound)");
    }
    Ok(())
}

/// `--to iperf3://`: what iperf3 has no equivalent for.
fn refuse_for_iperf3(a: &BlastArgs) -> Result<()> {
    if a.proto == Proto::Udp {
        for (flag, on) in [
            ("--verify", a.udp.verify),
            ("--control", a.udp.control.is_some()),
        ] {
            if on {
                crate::usage_bail!("{flag} has no iperf3 equivalent: not with --to iperf3://");
            }
        }
        if a.plot.plot.is_some() {
            crate::usage_bail!(
                "--plot draws interval rows, which a UDP test with --to iperf3:// has none of \
                 (--proto tcp has them)"
            );
        }
    }
    if a.proto == Proto::Tcp && a.tcp.fq_rate.is_some() {
        crate::usage_bail!("--fq-rate has no iperf3 parameter (try --rate)");
    }
    if a.search.find_rate {
        crate::usage_bail!("--find-rate runs netcore's own tests: not with --to iperf3://");
    }
    Ok(())
}

/// --to (and --control): a netcore receiver, an iperf3 server, or none (the embedded one).
fn target_of(a: &BlastArgs) -> Result<Target> {
    let Some(to) = &a.to else {
        return Ok(Target::Embedded);
    };
    if let Some(host) = to.strip_prefix("iperf3://") {
        return Ok(Target::Iperf3(iperf3_addr(host)?));
    }
    let data = resolve(to)?;
    let control = match &a.udp.control {
        Some(c) => resolve(c)?,
        None => data,
    };
    Ok(Target::Remote { data, control })
}

/// HOST[:PORT] of an iperf3 server, port 5201 by default.
pub(crate) fn iperf3_addr(host: &str) -> Result<SocketAddr> {
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

/// The interval a netcore `--to` receiver is asked for: this side's (`--interval`, or 1 s),
/// so both sides' lines have one pace; in the range a receiver accepts (a usage error outside
/// it). The embedded receiver has it already, and an iperf3 server is not asked.
fn receiver_interval_of(a: &BlastArgs, target: Target) -> Result<Option<Duration>> {
    match target {
        Target::Remote { .. } => {
            let d = a.interval.unwrap_or(DEFAULT_INTERVAL);
            check_interval(d).map_err(|why| usage(format!("--interval: {why}")))?;
            Ok(Some(d))
        }
        _ => Ok(None),
    }
}

/// --len, or the protocol's default, checked against what the protocol carries.
fn len_of(a: &BlastArgs, iperf3: bool) -> Result<usize> {
    match a.proto {
        Proto::Udp => {
            let len = a.len.unwrap_or(UDP_LEN as u64) as usize;
            if !iperf3 {
                sender::check_len(len).map_err(usage)?;
            }
            Ok(len)
        }
        Proto::Tcp => {
            let len = a.len.unwrap_or(DEFAULT_LEN as u64);
            if len as usize > MAX_LEN {
                crate::usage_bail!("--len {len} is too large for --proto tcp: at most {MAX_LEN}");
            }
            Ok(len as usize)
        }
    }
}

fn check_batch(batch: usize) -> Result<()> {
    if !(1..=1024).contains(&batch) {
        crate::usage_bail!("--batch {batch} is out of range: use 1..=1024");
    }
    Ok(())
}

/// How much to send, from --size/--time/--count, for `len`-byte datagrams or writes; a
/// `--find-rate` trial sends for --trial.
fn amount_of(a: &BlastArgs, len: usize) -> Result<Plan> {
    if a.search.find_rate {
        return Ok(Plan::TimeNs(a.search.trial.as_nanos() as u64));
    }
    Ok(match (a.size, a.time, a.count) {
        (Some(bytes), _, _) => Plan::Count(bytes.div_ceil(len as u64)),
        (_, Some(t), _) => Plan::TimeNs(t.as_nanos() as u64),
        (_, _, Some(0)) => crate::usage_bail!("--count 0: nothing to send"),
        (_, _, Some(n)) => Plan::Count(n),
        _ => Plan::TimeNs(DEFAULT_TIME_NS),
    })
}

/// A bit rate for a TCP flag (a datagram rate means nothing to TCP).
fn bits(flag: &str, r: Option<Rate>) -> Result<Option<u64>> {
    match r {
        None => Ok(None),
        Some(Rate::BitsPerSec(b)) => Ok(Some(b as u64)),
        Some(Rate::PacketsPerSec(_)) => Err(usage(format!(
            "{flag} takes a bit rate (e.g. 5Gbps) for --proto tcp"
        ))),
    }
}

/// The TCP test the flags describe.
fn spec_of(a: &BlastArgs, mode: Mode, len: usize, rate: Option<Rate>) -> Result<TcpSpec> {
    let t = &a.tcp;
    if let Some(cc) = &t.congestion {
        check_congestion(cc)?;
    }
    Ok(TcpSpec {
        window: t.window,
        mss: t.mss,
        congestion: t.congestion.clone(),
        no_delay: t.no_delay,
        fq_rate_bps: bits("--fq-rate", t.fq_rate)?,
        rate_bps: bits("--rate", rate)?,
        zerocopy: a.zerocopy,
        sendfile: t.sendfile,
        intervals: mode != Mode::Forward,
        thread_per_stream: t.thread_per_stream,
        ..TcpSpec::plain(a.streams.streams, mode, len as u32)
    })
}

/// The CPUs of the run's threads on this host, chosen once.
fn cpus_of(a: &BlastArgs, target: Target, mode: Mode) -> Cpus {
    let list = a.pin.list();
    let ncpu = affinity::available_cpus();
    let all = || (0..ncpu.max(1)).collect::<Vec<_>>();
    if let Target::Iperf3(_) = target {
        return Cpus {
            send: list.map(<[usize]>::to_vec).unwrap_or_default(),
            ..Cpus::default()
        };
    }
    if a.proto == Proto::Tcp {
        let send = match list {
            Some(l) => l.to_vec(),
            None if a.pin.pin => all(),
            None => Vec::new(),
        };
        return Cpus {
            send,
            ..Cpus::default()
        };
    }
    // UDP: the embedded receiver on the list's second CPU, or on CPU 1 by default.
    let rx = match list {
        Some(l) if l.len() > 1 => Some(l[1]),
        Some(_) => None,
        None if ncpu > 1 => Some(1),
        None => None,
    };
    let embedded = (target == Target::Embedded).then_some(rx).flatten();
    let send = sender_cpus(list, a.pin.pin, embedded, ncpu, a.streams.streams);
    let recv = match mode {
        // This side receives on the first of the sending threads' CPUs.
        Mode::Reverse => send.first().copied(),
        // The receiving thread takes the entry of `--cpus` after the sending threads' (in
        // turn), or with `--pin` the CPU after theirs; without either it is left to the
        // scheduler.
        Mode::Bidir => match (list, a.pin.pin) {
            (Some(l), _) => cpu_for(l, send.len()),
            (None, true) => cpu_for(&all(), send.len()),
            (None, false) => None,
        },
        Mode::Forward => None,
    };
    Cpus {
        send,
        recv,
        embedded,
    }
}

/// The CPUs of the blasting threads, one per stream in turn (empty: unpinned). `--cpus LIST`:
/// the list, but for the embedded receiver's entry (its second) when another is left;
/// `--pin`: every CPU but the receiver's. Without either, one stream beside an embedded
/// receiver is pinned to CPU 0 (the receiver is on 1); more streams are left to the scheduler.
fn sender_cpus(
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        blast: BlastArgs,
    }

    fn plan(args: &[&str]) -> Result<BlastPlan> {
        let cli = Cli::try_parse_from(std::iter::once("blast").chain(args.iter().copied()))?;
        BlastPlan::from_args(cli.blast)
    }

    fn usage_of(args: &[&str]) -> String {
        let e = plan(args).unwrap_err();
        assert!(
            e.downcast_ref::<crate::cli::UsageError>().is_some(),
            "{args:?}: not a usage error: {e:#}"
        );
        e.to_string()
    }

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

    #[test]
    fn defaults_plan_ten_seconds_of_udp_to_an_embedded_receiver() {
        let p = plan(&[]).unwrap();
        assert!(matches!(p.kind, Kind::Udp));
        assert_eq!(p.target, Target::Embedded);
        assert_eq!((p.streams, p.mode, p.len), (1, Mode::Forward, 1472));
        assert_eq!(p.amount, Plan::TimeNs(10_000_000_000));
        assert_eq!(p.rate, None);
        assert_eq!(p.out.format, Format::Table);
    }

    #[test]
    fn sizes_become_whole_datagrams_or_writes() {
        let p = plan(&["--size", "10000", "--len", "1000"]).unwrap();
        assert_eq!(p.amount, Plan::Count(10));
        let p = plan(&["--size", "10001", "--len", "1000"]).unwrap();
        assert_eq!(p.amount, Plan::Count(11));
        let p = plan(&["--proto", "tcp", "--size", "1MiB"]).unwrap();
        assert_eq!((p.len, p.amount), (128 * 1024, Plan::Count(8)));
        assert!(usage_of(&["--count", "0"]).contains("nothing to send"));
    }

    #[test]
    fn cpus_are_chosen_once_for_the_kind_of_test() {
        // (CPUs 0 and 1 only: every machine the tests run on has them.)
        let p = plan(&["--cpus", "0,1"]).unwrap();
        let cpus = |send: &[usize], recv, embedded| Cpus {
            send: send.to_vec(),
            recv,
            embedded,
        };
        assert_eq!(p.cpus, cpus(&[0], None, Some(1)));
        let p = plan(&["--cpus", "0,1", "-P", "2", "--bidir"]).unwrap();
        assert_eq!(p.cpus, cpus(&[0], Some(1), Some(1)));
        let p = plan(&["--cpus", "1", "-R", "--to", "127.0.0.1:9"]).unwrap();
        assert_eq!(p.cpus, cpus(&[1], Some(1), None));
        let p = plan(&["--proto", "tcp", "--cpus", "1,0"]).unwrap();
        assert_eq!(p.cpus.send, [1, 0]);
        assert_eq!(p.cpus.embedded, None);
    }

    #[test]
    fn targets() {
        let p = plan(&["--to", "127.0.0.1:7000", "--control", "127.0.0.1:7001"]).unwrap();
        let (d, c) = (
            "127.0.0.1:7000".parse().unwrap(),
            "127.0.0.1:7001".parse().unwrap(),
        );
        assert_eq!(
            p.target,
            Target::Remote {
                data: d,
                control: c
            }
        );
        let p = plan(&["--to", "iperf3://127.0.0.1"]).unwrap();
        assert_eq!(p.target, Target::Iperf3("127.0.0.1:5201".parse().unwrap()));
        let p = plan(&["--to", "127.0.0.1"]).unwrap();
        assert!(matches!(p.target, Target::Remote { data, .. } if data.port() == 5300));
    }

    #[test]
    fn tcp_spec_carries_the_settings_and_the_total_rate() {
        let p = plan(&[
            "--proto",
            "tcp",
            "-P",
            "3",
            "-R",
            "--rate",
            "3Gbps",
            "--no-delay",
        ])
        .unwrap();
        let Kind::Tcp(spec) = p.kind else {
            panic!("not a TCP plan")
        };
        assert_eq!((spec.streams, spec.mode), (3, Mode::Reverse));
        assert_eq!(spec.rate_bps, Some(3_000_000_000));
        assert!(spec.no_delay && spec.intervals);
        assert!(usage_of(&["--proto", "tcp", "--rate", "5kpps"]).contains("bit rate"));
    }

    #[test]
    fn flags_of_the_other_protocol_are_usage_errors() {
        for (args, flag) in [
            (&["--proto", "tcp", "--gso", "off"][..], "--gso"),
            (&["--proto", "tcp", "--verify"][..], "--verify"),
            (&["--proto", "tcp", "--batch", "8"][..], "--batch"),
            (&["--proto", "tcp", "--sndbuf", "1MiB"][..], "--sndbuf"),
            (&["--proto", "tcp", "--find-rate"][..], "--find-rate"),
            (&["--window", "64K"][..], "--window"),
            (&["--no-delay"][..], "--no-delay"),
            (&["--bidir", "--plot", "x.svg"][..], "--plot"),
            (&["-R", "--zerocopy"][..], "--zerocopy"),
        ] {
            assert!(usage_of(args).contains(flag), "{args:?}");
        }
        assert!(usage_of(&["--find-rate", "--json-stream"]).contains("--json-stream"));
        assert!(usage_of(&["--batch", "0"]).contains("--batch"));
    }

    #[test]
    fn a_rate_of_zero_is_unpaced() {
        for args in [
            &["--rate", "0"][..],
            &["-b", "0", "-P", "2"][..],
            &["--rate", "0pps", "-R"][..],
        ] {
            assert_eq!(plan(args).unwrap().rate, None, "{args:?}");
        }
        let Kind::Tcp(spec) = plan(&["--proto", "tcp", "-b", "0"]).unwrap().kind else {
            panic!("not a TCP plan")
        };
        assert_eq!(spec.rate_bps, None);
        let p = plan(&["--rate", "50kpps"]).unwrap();
        assert_eq!(p.rate, Some(Rate::PacketsPerSec(50_000.0)));
    }

    #[test]
    fn find_rate_trials_send_for_the_trial_time() {
        let p = plan(&["--find-rate", "--trial", "1s", "--loss", "1%"]).unwrap();
        assert_eq!(p.amount, Plan::TimeNs(1_000_000_000));
        let Kind::FindRate(s) = p.kind else {
            panic!("not a search")
        };
        assert_eq!((s.loss, s.max_trials), (0.01, 12));
    }
}
