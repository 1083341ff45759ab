//! The payloads of the control messages that more than one protocol's code reads (pure): the
//! receiver's UDP figures (`Report`), a TCP test's settings (`Setup`), its streams' ends
//! (`TcpDone`, `TcpReport`) and interval samples (`TcpInterval`). The control codec
//! (`control.rs`), the protocol folders and the receiver take them from here, so `control.rs`
//! imports no protocol folder and no protocol folder imports a sibling for them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::flow::cpu::CpuUsage;
use crate::flow::kernel::{Delta, LossSplit, ThreadLoad};
use crate::flow::streams::{Dir, Mode, MAX_STREAMS};
use crate::flow::tracker::Accounting;
use crate::stats::hist::{Hist, Percentiles};
use crate::sys::sockopt::BufMethod;
use crate::sys::tcp::TcpInfo;
use crate::units::{fmt_count, fmt_micros};

// The UDP test: what the receiver measured.

/// What the receiver measured: the exact accounting and the timing figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReceiverStats {
    pub accounting: Accounting,
    pub lost_pct: f64,
    /// Bytes of the unique datagrams (UDP payload, header included, as iperf counts).
    pub bytes: u64,
    /// From the first to the last datagram's arrival; null when that is no time (the
    /// datagrams came in one receive batch: a short --count), and then the rates too.
    #[serde(with = "crate::stats::unknown::zero")]
    #[schemars(with = "Option<f64>")]
    pub duration_s: f64,
    #[serde(with = "crate::stats::unknown::zero")]
    #[schemars(with = "Option<f64>")]
    pub goodput_bps: f64,
    #[serde(with = "crate::stats::unknown::zero")]
    #[schemars(with = "Option<f64>")]
    pub pps: f64,
    /// Invalid datagrams by reason (see `wire::Invalid`); these are not in the accounting.
    pub invalid: BTreeMap<String, u64>,
    /// RFC 3550 interarrival jitter, over send events (a sender batch shares one send time;
    /// arrival times are taken once per receive batch).
    pub jitter_us: f64,
    /// One-way latency from the datagrams' send timestamps.
    pub latency_us: Percentiles,
    /// "same host" or "two hosts (assumes synchronised clocks)".
    pub latency_clock: String,
    /// Reorder extents (RFC 4737) of the reordered datagrams.
    pub reorder_extent: Percentiles,
    pub window: u64,
    pub rcvbuf: u64,
    pub rcvbuf_method: BufMethod,
    pub gro: bool,
    /// Receive buffers that held more than one datagram (GRO coalescing at work).
    pub coalesced_buffers: u64,
    pub recv_calls: u64,
    pub cpu: Option<usize>,
    /// The test ended early (Ctrl-C, or the sender vanished): figures cover what arrived.
    pub interrupted: bool,
    /// The receive backend that ran: "mio" (`recvmmsg`) or "uring" (multishot `RECVMSG`).
    /// `recv_calls` counts `recvmmsg` calls (mio) or ring turns that brought data (uring).
    #[serde(default)]
    pub backend: String,
    /// The receiving thread's CPU over the test (schema v2).
    #[serde(default)]
    pub cpu_usage: Option<CpuUsage>,
    /// Each stream's own accounting (schema v3; one entry per stream, `-P`); `accounting`
    /// above is their sum.
    #[serde(default)]
    pub streams: Vec<StreamStats>,
    /// What the kernel counted on the receiving host over the test, and what it says about
    /// where loss and time went (schema v4).
    #[serde(default)]
    pub kernel: Option<KernelStats>,
    /// The one-way latency samples themselves (nanoseconds), for `recv --metrics`'
    /// histogram; not printed, not sent to the sender.
    #[serde(skip)]
    #[schemars(skip)]
    pub latency_hist: Option<Hist>,
}

/// The receiving socket's drop counter over a test (the kernel's `sk_drops`: datagrams the
/// socket could not queue because its buffer was full).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct SocketDrops {
    /// From the `SO_RXQ_OVFL` control messages: the running total the test's last datagram
    /// carried minus the total when the test started (drops after the last datagram that
    /// arrived are not in it). None where the option could not be set.
    pub rxq_ovfl: Option<u64>,
    /// The same counter read with `SO_MEMINFO` at the test's end, minus its value at the
    /// start: every drop of the test, the last ones too. None where it cannot be read.
    pub total: Option<u64>,
}

impl SocketDrops {
    /// The best count there is: the end reading, else the control messages'.
    pub(crate) fn best(&self) -> Option<u64> {
        self.total.or(self.rxq_ovfl)
    }
}

/// Where loss and time went, from the receiving host's point of view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KernelStats {
    /// The receiving socket's own drops.
    pub socket_drops: SocketDrops,
    /// The receiving host's counters over the test: UDP (`/proc/net/snmp`), backlog drops
    /// (`/proc/net/softnet_stat`), and each core's busy and softirq share from the test's
    /// start until the sender said Done (`/proc/stat`, `/proc/softirqs`).
    pub host: Delta,
    /// `lost` split: dropped at the receiver's socket buffer, in this host's backlog, not seen
    /// by this host.
    pub loss: LossSplit,
    /// The busy threads of both sides (percent of one core, user and system).
    pub threads: Vec<ThreadLoad>,
    /// One line naming the bottleneck.
    pub verdict: String,
}

/// One stream of a test as the receiver accounted it (its own sequence space).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StreamStats {
    pub stream: u16,
    pub accounting: Accounting,
    pub lost_pct: f64,
    pub bytes: u64,
    /// Bytes × 8 over the test's receive time (first to last datagram of any stream); null
    /// when that is no time (the datagrams came in one receive batch), as the receiver's.
    pub goodput_bps: Option<f64>,
    /// RFC 3550 jitter of this stream.
    pub jitter_us: f64,
}

impl StreamStats {
    pub fn new(
        stream: u16,
        accounting: Accounting,
        bytes: u64,
        duration_s: f64,
        jitter_us: f64,
    ) -> StreamStats {
        StreamStats {
            stream,
            lost_pct: pct_of(accounting.lost, accounting.sent),
            accounting,
            bytes,
            goodput_bps: (duration_s > 0.0).then(|| bytes as f64 * 8.0 / duration_s),
            jitter_us,
        }
    }
}

/// `part` in percent of `whole` (0 when `whole` is 0).
pub(crate) fn pct_of(part: u64, whole: u64) -> f64 {
    if whole > 0 {
        part as f64 * 100.0 / whole as f64
    } else {
        0.0
    }
}

// A TCP test: its settings, its streams' ends and interval samples.

/// Default write (and read) size of a TCP test.
pub const DEFAULT_LEN: usize = 128 * 1024;
/// The largest write size accepted.
pub(crate) const MAX_LEN: usize = 16 << 20;

/// The settings of a TCP test, sent by the client in `Setup` and applied by both ends to
/// their data sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpSpec {
    /// Connections per direction.
    pub streams: u16,
    pub mode: Mode,
    /// Bytes per write (and the reader's buffer size).
    pub len: u32,
    /// SO_SNDBUF/SO_RCVBUF in bytes (the kernel's autotuning without it).
    pub window: Option<u64>,
    /// TCP_MAXSEG.
    pub mss: Option<u32>,
    /// TCP_CONGESTION.
    pub congestion: Option<String>,
    pub no_delay: bool,
    /// SO_MAX_PACING_RATE in bits per second, per connection.
    pub fq_rate_bps: Option<u64>,
    /// Application pacing (token bucket), in bits per second over all connections of one
    /// direction.
    pub rate_bps: Option<u64>,
    /// Writers send with `MSG_ZEROCOPY` (`--zerocopy`). Absent when false, so a spec without
    /// it reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zerocopy: bool,
    /// Writers send with `sendfile(2)` from an in-memory file of the pattern (`--sendfile`,
    /// iperf3's `-Z`). Absent when false, so a spec without it reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sendfile: bool,
    /// The server sends its interval samples of the connections it writes (`-R`, `--bidir`)
    /// over control (`TcpInterval`), so the client shows the sender's figures live. Absent when
    /// false, so a spec without it reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intervals: bool,
    /// Every data connection on a thread of its own, on both ends (`--thread-per-stream`),
    /// rather than one thread for the writers (readers) that share a CPU. Absent when false,
    /// so a spec without it reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thread_per_stream: bool,
}

impl TcpSpec {
    /// `streams` streams of `mode` with `len`-byte writes: unpaced, the kernel's defaults,
    /// none of the options.
    pub fn plain(streams: u16, mode: Mode, len: u32) -> TcpSpec {
        TcpSpec {
            streams,
            mode,
            len,
            window: None,
            mss: None,
            congestion: None,
            no_delay: false,
            fq_rate_bps: None,
            rate_bps: None,
            zerocopy: false,
            sendfile: false,
            intervals: false,
            thread_per_stream: false,
        }
    }

    /// Each data connection's direction, in stream-id order (ids are indices).
    pub fn directions(&self) -> Vec<Dir> {
        self.mode.directions(self.streams as usize)
    }

    /// Checks values a peer might send that no netcore client would.
    pub fn check(&self) -> Result<(), String> {
        if self.streams == 0 || self.streams > MAX_STREAMS {
            return Err(format!("{} streams: use 1..={MAX_STREAMS}", self.streams));
        }
        if self.len == 0 || self.len as usize > MAX_LEN {
            return Err(format!(
                "write size {} out of range 1..={MAX_LEN}",
                self.len
            ));
        }
        Ok(())
    }
}

/// `TCP_INFO` of one connection, as reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TcpFigures {
    /// Segments retransmitted over the connection's life (`tcpi_total_retrans`).
    pub retransmits: u64,
    /// Congestion window in segments.
    pub cwnd: u32,
    pub mss: u32,
    /// Smoothed RTT and its variance.
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub pacing_rate_bps: u64,
    pub delivery_rate_bps: u64,
    pub bytes_acked: u64,
    pub bytes_retrans: u64,
    pub congestion: String,
}

impl TcpFigures {
    pub(crate) fn from_info(i: &TcpInfo, congestion: &str) -> TcpFigures {
        TcpFigures {
            retransmits: i.total_retrans as u64,
            cwnd: i.snd_cwnd,
            mss: i.snd_mss,
            rtt_us: i.rtt_us,
            rttvar_us: i.rttvar_us,
            pacing_rate_bps: i.pacing_rate.saturating_mul(8),
            delivery_rate_bps: i.delivery_rate.saturating_mul(8),
            bytes_acked: i.bytes_acked,
            bytes_retrans: i.bytes_retrans,
            congestion: congestion.to_string(),
        }
    }

    /// Retransmits, cwnd and RTT in one short cell (the report's per-stream rows): `retr`
    /// is `retr` where given (an interval's), else the connection's so far.
    pub fn short(&self, retr: Option<u64>) -> String {
        format!(
            "retr {} cwnd {} rtt {}/{}",
            fmt_count(retr.unwrap_or(self.retransmits)),
            fmt_count(self.cwnd as u64),
            fmt_micros(self.rtt_us as f64),
            fmt_micros(self.rttvar_us as f64)
        )
    }
}

/// A zero-copy writer's sends (`MSG_ZEROCOPY`) and what the kernel's completions said.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct ZeroCopyCounts {
    /// `send(MSG_ZEROCOPY)` calls that took data.
    pub sends: u64,
    /// Sends whose completion arrived (all of them unless the test was cut short).
    pub completed: u64,
    /// Of those, sends the kernel copied after all (to a local receiver: all of them).
    pub copied: u64,
}

/// One side's account of one data connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StreamEnd {
    pub id: u32,
    pub dir: Dir,
    /// Bytes written (the writing end) or read to EOF (the reading end).
    pub bytes: u64,
    /// From the connection's start to the last write (writer) or to EOF (reader).
    pub elapsed_s: f64,
    /// `TCP_INFO` at the end (the writer's figures are the ones reported).
    pub tcp: Option<TcpFigures>,
    /// The writer's zero-copy counts (`--zerocopy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zerocopy: Option<ZeroCopyCounts>,
    /// The socket buffers the kernel granted this end (absent from a peer that predates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffers: Option<Buffers>,
}

/// The socket buffers the kernel granted a data connection, in bytes, as `getsockopt`
/// reports them (Linux doubles what was asked for its bookkeeping, within
/// `net.core.[rw]mem_max` unless forced; without `--window` they grow with autotuning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Buffers {
    pub sndbuf: u64,
    pub rcvbuf: u64,
}

/// One stream in an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StreamSample {
    pub id: u32,
    pub dir: Dir,
    /// Bytes this side moved on the stream so far.
    pub bytes: u64,
    pub bps: f64,
    pub tcp: Option<TcpFigures>,
    /// Bytes moved in this interval (absent from a peer that predates it).
    #[serde(default)]
    pub interval_bytes: u64,
    /// Segments retransmitted in this interval (`tcp.retransmits` counts the connection's
    /// life); absent where the writer's figures are not this side's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_retransmits: Option<u64>,
}

/// One interval as seen by the side that printed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TcpInterval {
    pub start: f64,
    pub t: f64,
    pub streams: Vec<StreamSample>,
    pub sum_bps: f64,
    /// Who sampled it: "client" or "server" (the side that writes `-R` streams sends its
    /// samples over control). Absent in reports older than this field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
}

impl TcpInterval {
    /// The same interval with only the streams of direction `dir`.
    pub fn only(mut self, dir: Dir) -> TcpInterval {
        self.streams.retain(|s| s.dir == dir);
        self.sum_bps = self.streams.iter().map(|s| s.bps).sum();
        self
    }
}

/// What a zero-copy send count says: whether any pages went out in place (`copied` of
/// `sends` the kernel copied after all). One wording for the UDP and TCP reports.
pub(crate) fn zerocopy_verdict(sends: u64, copied: u64) -> &'static str {
    if sends > 0 && copied == sends {
        "no pages were sent in place: a loopback or local receiver always copies"
    } else {
        "pages sent in place where not copied"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(streams: u16, mode: Mode) -> TcpSpec {
        TcpSpec::plain(streams, mode, DEFAULT_LEN as u32)
    }

    /// A stream's goodput over no receive time is unknown (null), not 0; over some time it is
    /// what it is, 0 too (#27 follow-up). An older peer's 0 still reads.
    #[test]
    fn stream_goodput_over_no_time_is_unknown() {
        let acc = Accounting::sum([]);
        let s = StreamStats::new(0, acc, 1472, 0.0, 0.0);
        assert_eq!(s.goodput_bps, None);
        let j = serde_json::to_value(&s).unwrap();
        assert!(j["goodput_bps"].is_null(), "{j}");
        assert_eq!(StreamStats::new(1, acc, 0, 2.0, 0.0).goodput_bps, Some(0.0));
        assert_eq!(
            StreamStats::new(1, acc, 1000, 2.0, 0.0).goodput_bps,
            Some(4000.0)
        );
        let mut old = j;
        old["goodput_bps"] = serde_json::json!(0.0);
        let read: StreamStats = serde_json::from_value(old).unwrap();
        assert_eq!(read.goodput_bps, Some(0.0));
    }

    #[test]
    fn directions_by_mode() {
        assert_eq!(spec(2, Mode::Forward).directions(), vec![Dir::Up, Dir::Up]);
        assert_eq!(spec(1, Mode::Reverse).directions(), vec![Dir::Down]);
        assert_eq!(
            spec(2, Mode::Bidir).directions(),
            vec![Dir::Up, Dir::Up, Dir::Down, Dir::Down]
        );
        assert!(spec(0, Mode::Forward).check().is_err());
        assert!(spec(MAX_STREAMS + 1, Mode::Forward).check().is_err());
        assert!(spec(4, Mode::Bidir).check().is_ok());
    }

    #[test]
    fn spec_round_trips_and_rejects_unknown_fields() {
        let s = spec(3, Mode::Bidir);
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<TcpSpec>(&j).unwrap(), s);
        let bad = j.replacen('{', r#"{"splice":true,"#, 1);
        assert!(serde_json::from_str::<TcpSpec>(&bad).is_err());
    }
}
