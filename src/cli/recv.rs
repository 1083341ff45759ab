//! `netcore recv`: the receiver service's flags, and what it prints of its events.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::common::{
    out, recv_interval_line, resolve, JsonStream, Live, MetricsArg, OutputArgs, PinArgs,
    ProgressArg, RxArgs, StreamArg,
};
use crate::flow::access::{AllowList, Key};
use crate::flow::backend::Backend;
use crate::flow::iperf3::Iperf3Event;
use crate::flow::recv::receiver::{Event, Receiver, RecvOptions};
use crate::flow::recv::session::Limits;
use crate::flow::tcp_engine::report::TcpEvent;
use crate::flow::tcp_engine::report::TcpReport;
use crate::flow::tracker::DEFAULT_WINDOW;
use crate::flow::udp::report::UdpReport;
use crate::interop::iperf3::Results as Iperf3Results;
use crate::metrics::recv::RecvMetrics;
use crate::stats::events::EventKind;
use crate::stats::{Format, Report};
use crate::units::{self, Rate};

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

pub fn run(a: RecvArgs) -> Result<ExitCode> {
    let listen = listen_addr(&a.listen)?;
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

    /// The format a report is rendered in: JSON for the stream's end line.
    fn report_format(&self) -> Format {
        if self.stream.on() {
            Format::Json
        } else {
            self.format
        }
    }

    fn print(&mut self, ev: Event) {
        match ev {
            Event::Started { peer, test_id, len } => self.udp_started(test_id, peer, len),
            Event::Interval { test_id, row } => {
                self.live.line(&recv_interval_line(&row));
                self.interval("udp", Some(test_id), &row);
            }
            Event::Finished(rep) => self.udp_finished(&rep),
            Event::Failed(why) => {
                eprintln!("netcore recv: {why}");
                let _ = self.stream.emit(EventKind::Error, |l| l.message(why));
            }
            Event::Stopping { running } => eprintln!(
                "netcore recv: stopping: no new tests; {running} running finish first (signal again to interrupt them)"
            ),
            Event::Tcp { test_id, peer, ev } => self.tcp(test_id, peer, ev),
            Event::Iperf3(ev) => self.iperf3(ev),
        }
    }

    fn udp_started(&mut self, test_id: u64, peer: SocketAddr, len: u32) {
        if self.peers.len() >= Self::MAX_PEERS {
            self.peers.remove(0);
        }
        self.peers.push((test_id, peer));
        self.live.line(&format!(
            "test {test_id:016x} from {peer}: {len}-byte datagrams\n"
        ));
        let _ = self.stream.emit(EventKind::Start, |l| {
            l.test_id(format!("{test_id:016x}"))
                .kind("udp")
                .peer(peer)
                .data(&serde_json::json!({ "len": len }))
        });
    }

    /// A UDP test's report, under the CSV header printed once.
    fn udp_finished(&mut self, rep: &UdpReport) {
        let at = self
            .peers
            .iter()
            .position(|(id, _)| format!("{id:016x}") == rep.test_id);
        let peer = at.map(|i| self.peers.remove(i).1.to_string());
        let mut text = rep.render(self.report_format());
        if self.format == Format::Csv && !self.stream.on() {
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

    fn tcp(&mut self, test_id: u64, peer: SocketAddr, ev: TcpEvent) {
        match ev {
            TcpEvent::Started(plan, spec) => {
                self.live.line(&format!(
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
            TcpEvent::Interval(row) => {
                self.live.line(&TcpReport::interval_lines(&row));
                self.interval("tcp", Some(test_id), &row);
            }
            TcpEvent::Finished(rep) => {
                let text = rep.render(self.report_format());
                self.report("tcp", Some(&rep.test_id), Some(peer.to_string()), text);
            }
        }
    }

    fn iperf3(&mut self, ev: Iperf3Event) {
        let live = self.live;
        match ev {
            Iperf3Event::Tcp(TcpEvent::Finished(rep)) => {
                let text = rep.render(self.report_format());
                let peer = self.iperf3_peer.take().map(|p| p.to_string());
                self.report("iperf3", Some(&rep.test_id), peer, text);
            }
            // iperf3's tests announce themselves with Iperf3Event::Started.
            Iperf3Event::Tcp(TcpEvent::Started(..)) => {}
            Iperf3Event::Tcp(TcpEvent::Interval(row)) => {
                live.line(&TcpReport::interval_lines(&row));
                self.interval("iperf3", None, &row);
            }
            Iperf3Event::Udp(rep) => {
                let peer = self.iperf3_peer.take().map(|p| p.to_string());
                let text = rep.render(self.report_format());
                self.report("iperf3", None, peer, text);
            }
            Iperf3Event::Started { peer, what } => {
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
            Iperf3Event::Exchanged { client, server } => {
                if live.on_stdout() {
                    let _ = out(&iperf3_exchange_lines(&client, &server));
                }
            }
        }
    }
}
