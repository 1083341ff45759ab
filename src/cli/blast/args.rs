//! `netcore blast`'s flags as clap parses them, grouped by what they are for: the test (both
//! protocols), UDP's send path, TCP's sockets, the rate search, output, CPUs and identity,
//! and the receiving side. [`super::plan::BlastPlan::from_args`] turns them into the plan.

use std::time::Duration;

use clap::Args;

use crate::cli::common::{
    ClientArgs, OutputArgs, PinArgs, PlotArg, ProgressArg, Proto, RxArgs, StreamArg,
};
use crate::flow::backend::Backend;
use crate::flow::streams::MAX_STREAMS;
use crate::flow::udp::sender::GsoMode;
use crate::units::{self, Rate};

const UDP: &str = "UDP (--proto udp)";
const TCP: &str = "TCP (--proto tcp)";
const SEARCH: &str = "Rate search (--find-rate, UDP)";

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
    /// The data protocol of the test
    #[arg(long, value_enum, default_value = "udp")]
    pub proto: Proto,
    #[command(flatten)]
    pub streams: StreamsArgs,
    /// Bytes to send (200MB = 200*10^6, 200MiB or 200M = 200*2^20)
    #[arg(long, short = 'n', value_parser = units::parse_nonzero_size, group = "amount", allow_hyphen_values = true)]
    pub size: Option<u64>,
    /// How long to send (10s, 500ms); 10s if no amount is given
    #[arg(long, short = 't', value_parser = units::parse_nonzero_duration, group = "amount", allow_hyphen_values = true)]
    pub time: Option<Duration>,
    /// Datagrams (UDP) or writes (TCP) to send
    #[arg(long, short = 'k', group = "amount", allow_hyphen_values = true)]
    pub count: Option<u64>,
    /// UDP payload bytes per datagram (40..=65507; default 1472), or TCP bytes per write
    /// (default 128KiB)
    #[arg(long, short = 'l', value_parser = units::parse_nonzero_size, allow_hyphen_values = true)]
    pub len: Option<u64>,
    /// Pace to this rate: bits (1Gbps, 500Mbps, 1e9), bytes (125MB/s) or datagrams (50kpps)
    /// per second; unpaced without it or with 0 (as iperf3's -b 0). The total over all -P
    /// streams (iperf3's -b is per stream)
    #[arg(long, short = 'b', value_parser = units::parse_pace, allow_hyphen_values = true)]
    pub rate: Option<Rate>,
    /// Interval between progress lines [default: 1s]. With --to a netcore receiver, the
    /// receiver samples the test at it too (100ms..60s)
    #[arg(long, short = 'i', value_parser = units::parse_nonzero_duration)]
    pub interval: Option<Duration>,
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
    #[command(flatten)]
    pub udp: UdpArgs,
    #[command(flatten)]
    pub tcp: TcpArgs,
    #[command(flatten)]
    pub search: SearchArgs,
    #[command(flatten, next_help_heading = "Output")]
    pub output: OutputArgs,
    #[command(flatten)]
    pub stream: StreamArg,
    #[command(flatten)]
    pub progress: ProgressArg,
    #[command(flatten)]
    pub plot: PlotArg,
    #[command(flatten, next_help_heading = "CPUs and identity")]
    pub pin: PinArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The embedded receiver's flags (ignored with --to), and this side's readers' with -R or
    /// --bidir
    #[command(
        flatten,
        next_help_heading = "Receiving side (the embedded receiver without --to; this side with -R/--bidir)"
    )]
    pub rx: RxArgs,
}

/// How many streams, and which way they flow (both protocols).
#[derive(Args, Debug, Clone, Default)]
pub struct StreamsArgs {
    /// Parallel streams: TCP data connections or UDP sockets (UDP: one thread each; TCP: the
    /// writers or readers that share a CPU share a thread; --pin/--cpus pin them one per CPU)
    #[arg(short = 'P', long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=MAX_STREAMS as i64))]
    pub streams: u16,
    /// Reverse: the receiver sends and this side receives (the path still opened from here:
    /// TCP connections, or a UDP opener datagram)
    #[arg(short = 'R', long, conflicts_with = "bidir")]
    pub reverse: bool,
    /// Both directions at once: --streams connections (TCP) or streams (UDP: a forward and a
    /// reverse test, two tests on the receiver) each way
    #[arg(long)]
    pub bidir: bool,
}

/// UDP's send path (refused with --proto tcp).
#[derive(Args, Debug, Clone)]
pub struct UdpArgs {
    /// The receiver's TCP control address, when it differs from --to (e.g. through a relay)
    #[arg(long, value_name = "HOST:PORT", help_heading = UDP)]
    pub control: Option<String>,
    /// Messages per sendmmsg call (with GSO each message carries up to 64 KiB of datagrams)
    #[arg(long, default_value_t = 64, allow_hyphen_values = true, help_heading = UDP)]
    pub batch: usize,
    /// UDP GSO: hand the kernel multi-datagram buffers
    #[arg(long, value_enum, default_value = "auto", help_heading = UDP)]
    pub gso: GsoMode,
    /// Fill each payload from its sequence number and checksum it; the receiver checks it
    #[arg(long, help_heading = UDP)]
    pub verify: bool,
    /// Send buffer to ask for
    #[arg(long, value_parser = units::parse_nonzero_size, default_value = "4MiB", help_heading = UDP)]
    pub sndbuf: u64,
}

/// The TCP socket settings (refused with --proto udp).
#[derive(Args, Debug, Clone, Default)]
pub struct TcpArgs {
    /// TCP socket buffers (SO_SNDBUF and SO_RCVBUF) on both ends; autotuned without it
    #[arg(long, short = 'w', value_parser = units::parse_nonzero_size, help_heading = TCP)]
    pub window: Option<u64>,
    /// TCP maximum segment size (TCP_MAXSEG, 88..=32767)
    #[arg(long, value_parser = clap::value_parser!(u32).range(88..=32767), help_heading = TCP)]
    pub mss: Option<u32>,
    /// Congestion control algorithm (TCP_CONGESTION), e.g. cubic, bbr, reno
    #[arg(long, value_name = "ALGO", help_heading = TCP)]
    pub congestion: Option<String>,
    /// TCP_NODELAY on the data connections
    #[arg(long, help_heading = TCP)]
    pub no_delay: bool,
    /// Per-connection pacing cap in the kernel (SO_MAX_PACING_RATE; fq qdisc or TCP pacing)
    #[arg(long, value_name = "RATE", value_parser = units::parse_rate, help_heading = TCP)]
    pub fq_rate: Option<Rate>,
    /// Every TCP data connection on a thread of its own, on both ends (the writers or readers
    /// that would share a CPU otherwise share one thread)
    #[arg(long, help_heading = TCP)]
    pub thread_per_stream: bool,
    /// Write with sendfile(2) from an in-memory file holding the pattern (iperf3's -Z): the
    /// kernel hands the file's pages to the socket instead of copying the buffer
    #[arg(long, conflicts_with = "zerocopy", help_heading = TCP)]
    pub sendfile: bool,
}

/// `--find-rate` and its settings.
#[derive(Args, Debug, Clone)]
pub struct SearchArgs {
    /// Search for the highest rate whose loss stays within --loss: an unpaced trial, then
    /// bisection with a confirmation run (as RFC 2544's throughput test); each trial sends
    /// for --trial
    #[arg(long, conflicts_with_all = ["size", "time", "count", "rate"], help_heading = SEARCH)]
    pub find_rate: bool,
    /// With --find-rate: the loss allowed per trial (0, or a percentage such as 0.1%)
    #[arg(long, value_parser = units::parse_percent, default_value = "0", requires = "find_rate", help_heading = SEARCH)]
    pub loss: f64,
    /// With --find-rate: how long each trial sends
    #[arg(long, value_parser = units::parse_nonzero_duration, default_value = "2s", requires = "find_rate", help_heading = SEARCH)]
    pub trial: Duration,
    /// With --find-rate: the most trials the search may run
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(2..=64), requires = "find_rate", help_heading = SEARCH)]
    pub max_trials: u32,
}
