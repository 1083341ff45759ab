//! The TCP test report (pure): each side's view of its streams, joined into one row per data
//! connection (bytes written by one end, bytes read by the other, which must agree) plus a SUM
//! row per direction, the writer's `TCP_INFO` figures, interval samples, and both sides' CPU.
//! Schema `netcore.tcp.v1`, the same on both sides; rendered as a table, JSON or CSV.

use serde::{Deserialize, Serialize};

use crate::flow::control::Plan;
use crate::flow::cpu::CpuUsage;
use crate::flow::payload::{
    zerocopy_verdict, Buffers, StreamEnd, StreamSample, TcpFigures, TcpInterval, TcpSpec,
    ZeroCopyCounts,
};
use crate::flow::streams::{Dir, SUM};
use crate::stats::table::Table;
use crate::stats::unknown;
use crate::stats::Report;
use crate::units::{fmt_bits_per_sec, fmt_bytes, fmt_count, fmt_micros, fmt_secs};

pub(crate) const SCHEMA: &str = "netcore.tcp.v1";

/// The granted buffers of each end's first data connection, at the end of the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BufferSides {
    pub client: Option<Buffers>,
    pub server: Option<Buffers>,
}

impl BufferSides {
    /// From the two ends' accounts (None when neither end said).
    pub fn of(client: &[StreamEnd], server: &[StreamEnd]) -> Option<BufferSides> {
        let first = |e: &[StreamEnd]| e.iter().find_map(|e| e.buffers);
        let b = BufferSides {
            client: first(client),
            server: first(server),
        };
        (b.client.is_some() || b.server.is_some()).then_some(b)
    }

    /// `buffers granted by the kernel: client snd 8.00 KiB rcv 8.00 KiB, server ...` (n/a
    /// where unknown).
    pub fn line(&self) -> String {
        let side = |b: Option<Buffers>| match b {
            Some(b) => format!("snd {} rcv {}", fmt_bytes(b.sndbuf), fmt_bytes(b.rcvbuf)),
            None => "n/a".into(),
        };
        format!(
            "buffers granted by the kernel: client {}, server {}\n",
            side(self.client),
            side(self.server)
        )
    }
}

/// One data connection, both ends joined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StreamRow {
    /// Stream id, or "SUM".
    pub stream: String,
    pub dir: Dir,
    pub written: u64,
    pub read: u64,
    /// written == read.
    pub exact: bool,
    pub send_s: f64,
    pub recv_s: f64,
    /// Bytes read × 8 / the reader's time; null when that is no time (one read, or none).
    pub goodput_bps: Option<f64>,
    /// The writer's `TCP_INFO` (on SUM rows: retransmits and bytes acked summed).
    pub tcp: Option<TcpFigures>,
    /// The writer's zero-copy counts (`--zerocopy`; summed on SUM rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zerocopy: Option<ZeroCopyCounts>,
}

/// The CPU of both sides' busy threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CpuSides {
    /// The side that started the test (`blast`).
    pub client: CpuUsage,
    /// The side that served it (`recv`, or blast's embedded receiver).
    pub server: CpuUsage,
}

/// Turns cumulative per-stream counters into interval samples.
#[derive(Debug, Default)]
pub(crate) struct IntervalMeter {
    prev_t: f64,
    prev: Vec<u64>,
    prev_retr: Vec<u64>,
}

impl IntervalMeter {
    /// The interval ending at `t` (seconds since the start) given each stream's cumulative
    /// bytes and current `TCP_INFO`.
    pub(crate) fn sample(
        &mut self,
        t: f64,
        now: impl IntoIterator<Item = (u32, Dir, u64, Option<TcpFigures>)>,
    ) -> TcpInterval {
        let dt = (t - self.prev_t).max(1e-9);
        let mut streams = Vec::new();
        for (i, (id, dir, bytes, tcp)) in now.into_iter().enumerate() {
            if self.prev.len() <= i {
                self.prev.push(0);
                self.prev_retr.push(0);
            }
            let d = bytes.saturating_sub(self.prev[i]);
            self.prev[i] = bytes;
            let retr = tcp.as_ref().map(|f| {
                let d = f.retransmits.saturating_sub(self.prev_retr[i]);
                self.prev_retr[i] = f.retransmits;
                d
            });
            streams.push(StreamSample {
                id,
                dir,
                bytes,
                bps: d as f64 * 8.0 / dt,
                tcp,
                interval_bytes: d,
                interval_retransmits: retr,
            });
        }
        let row = TcpInterval {
            start: self.prev_t,
            t,
            sum_bps: streams.iter().map(|s| s.bps).sum(),
            streams,
            by: String::new(),
        };
        self.prev_t = t;
        row
    }
}

/// The report both sides print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TcpReport {
    pub schema: String,
    /// Where the report came from: netcore's version and revision, the host, kernel, CPUs,
    /// pinned threads, sysctls, when (`stats::meta`; absent in reports of older versions).
    #[serde(default)]
    pub meta: crate::stats::meta::Meta,
    /// "client" or "server": who printed it.
    pub role: String,
    pub test_id: String,
    pub target: String,
    pub settings: TcpSpec,
    /// Per data connection, then one SUM row per direction.
    pub streams: Vec<StreamRow>,
    pub sum: Vec<StreamRow>,
    pub cpu: CpuSides,
    /// The test ended early (Ctrl-C, a peer vanished): the figures cover what moved.
    pub interrupted: bool,
    pub intervals: Vec<TcpInterval>,
    /// The socket buffers the kernel granted each end (`--window` asks; this is what it got).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffers: Option<BufferSides>,
}

impl TcpReport {
    /// Joins the two sides' stream ends: for each stream the writer is the client on `Up`
    /// streams and the server on `Down` ones.
    pub(crate) fn join_streams(client: &[StreamEnd], server: &[StreamEnd]) -> Vec<StreamRow> {
        let mut rows = Vec::new();
        for c in client {
            let Some(s) = server.iter().find(|s| s.id == c.id) else {
                continue;
            };
            let (w, r) = match c.dir {
                Dir::Up => (c, s),
                Dir::Down => (s, c),
            };
            rows.push(StreamRow {
                stream: c.id.to_string(),
                dir: c.dir,
                written: w.bytes,
                read: r.bytes,
                exact: w.bytes == r.bytes,
                send_s: w.elapsed_s,
                recv_s: r.elapsed_s,
                goodput_bps: (r.elapsed_s > 0.0).then(|| r.bytes as f64 * 8.0 / r.elapsed_s),
                tcp: w.tcp.clone(),
                zerocopy: w.zerocopy,
            });
        }
        rows
    }

    /// One SUM row per direction present.
    pub fn sums(rows: &[StreamRow]) -> Vec<StreamRow> {
        let mut out = Vec::new();
        for dir in [Dir::Up, Dir::Down] {
            let of: Vec<&StreamRow> = rows.iter().filter(|r| r.dir == dir).collect();
            if of.is_empty() {
                continue;
            }
            let written = of.iter().map(|r| r.written).sum();
            let read: u64 = of.iter().map(|r| r.read).sum();
            let recv_s = of.iter().map(|r| r.recv_s).fold(0.0, f64::max);
            let tcps: Vec<&TcpFigures> = of.iter().filter_map(|r| r.tcp.as_ref()).collect();
            out.push(StreamRow {
                stream: SUM.into(),
                dir,
                written,
                read,
                exact: of.iter().all(|r| r.exact) && written == read,
                send_s: of.iter().map(|r| r.send_s).fold(0.0, f64::max),
                recv_s,
                goodput_bps: (recv_s > 0.0).then(|| read as f64 * 8.0 / recv_s),
                tcp: (!tcps.is_empty()).then(|| TcpFigures {
                    retransmits: tcps.iter().map(|t| t.retransmits).sum(),
                    bytes_acked: tcps.iter().map(|t| t.bytes_acked).sum(),
                    bytes_retrans: tcps.iter().map(|t| t.bytes_retrans).sum(),
                    pacing_rate_bps: tcps.iter().map(|t| t.pacing_rate_bps).sum(),
                    delivery_rate_bps: tcps.iter().map(|t| t.delivery_rate_bps).sum(),
                    congestion: tcps[0].congestion.clone(),
                    ..TcpFigures::default()
                }),
                zerocopy: of
                    .iter()
                    .filter_map(|r| r.zerocopy)
                    .reduce(|a, b| ZeroCopyCounts {
                        sends: a.sends + b.sends,
                        completed: a.completed + b.completed,
                        copied: a.copied + b.copied,
                    }),
            });
        }
        out
    }

    /// The interval lines of one sample: one per stream, plus a SUM line with more than one.
    pub(crate) fn interval_lines(i: &TcpInterval) -> String {
        let mut out = String::new();
        // Each interval's own bytes and retransmits (as iperf3 prints them), in the table's
        // binary units.
        for s in &i.streams {
            out.push_str(&format!(
                "[{:6.2}-{:6.2}s] stream {:>3} {:<4} {:>11} {:>14}{}\n",
                i.start,
                i.t,
                s.id,
                s.dir.name(),
                fmt_bytes(s.interval_bytes),
                fmt_bits_per_sec(s.bps),
                s.tcp
                    .as_ref()
                    .map(|t| format!(" | {}", t.short(s.interval_retransmits)))
                    .unwrap_or_default()
            ));
        }
        if i.streams.len() > 1 {
            out.push_str(&format!(
                "[{:6.2}-{:6.2}s] SUM                   {:>14}\n",
                i.start,
                i.t,
                fmt_bits_per_sec(i.sum_bps)
            ));
        }
        out
    }

    fn all_rows(&self) -> impl Iterator<Item = &StreamRow> {
        self.streams.iter().chain(&self.sum)
    }
}

fn opt_tcp<T: ToString>(t: &Option<TcpFigures>, f: impl Fn(&TcpFigures) -> T) -> String {
    t.as_ref().map(|t| f(t).to_string()).unwrap_or_default()
}

impl Report for TcpReport {
    fn meta(&self) -> &crate::stats::meta::Meta {
        &self.meta
    }

    fn to_table(&self) -> String {
        let s = &self.settings;
        let mut t = Table::new([
            "stream", "dir", "written", "read", "exact", "time", "goodput", "retr", "cwnd", "rtt",
            "rttvar", "pacing", "delivery",
        ]);
        for r in self.all_rows() {
            let is_sum = r.stream == SUM;
            t.row([
                r.stream.clone(),
                r.dir.name().to_string(),
                fmt_bytes(r.written),
                fmt_bytes(r.read),
                if r.exact { "yes" } else { "NO" }.to_string(),
                fmt_secs(r.recv_s),
                unknown::text(r.goodput_bps, fmt_bits_per_sec),
                opt_tcp(&r.tcp, |t| fmt_count(t.retransmits)),
                if is_sum {
                    String::new()
                } else {
                    opt_tcp(&r.tcp, |t| fmt_count(t.cwnd as u64))
                },
                if is_sum {
                    String::new()
                } else {
                    opt_tcp(&r.tcp, |t| fmt_micros(t.rtt_us as f64))
                },
                if is_sum {
                    String::new()
                } else {
                    opt_tcp(&r.tcp, |t| fmt_micros(t.rttvar_us as f64))
                },
                opt_tcp(&r.tcp, |t| fmt_bits_per_sec(t.pacing_rate_bps as f64)),
                opt_tcp(&r.tcp, |t| fmt_bits_per_sec(t.delivery_rate_bps as f64)),
            ]);
        }
        let cc = self
            .streams
            .iter()
            .find_map(|r| r.tcp.as_ref().map(|t| t.congestion.clone()))
            .unwrap_or_else(|| "-".into());
        let mut out = format!(
            "netcore TCP test {} to {}: {}, {} stream{}, {}-byte writes, congestion {}{}{}\n",
            self.test_id,
            self.target,
            s.mode.name(),
            s.streams,
            if s.streams == 1 { "" } else { "s" },
            s.len,
            cc,
            if s.no_delay { ", TCP_NODELAY" } else { "" },
            if self.interrupted {
                " (INTERRUPTED)"
            } else {
                ""
            },
        );
        out.push_str(&t.render());
        if let Some(b) = self.buffers.filter(|_| s.window.is_some()) {
            out.push_str(&b.line());
        }
        for r in self.sum.iter().filter(|r| r.zerocopy.is_some()) {
            let z = r.zerocopy.unwrap_or_default();
            out.push_str(&format!(
                "zerocopy {}: {} MSG_ZEROCOPY sends, {} completed, the kernel copied {} ({})\n",
                r.dir.name(),
                fmt_count(z.sends),
                fmt_count(z.completed),
                fmt_count(z.copied),
                zerocopy_verdict(z.sends, z.copied)
            ));
        }
        out.push_str(&format!("cpu client: {}\n", self.cpu.client.line()));
        out.push_str(&format!("cpu server: {}\n", self.cpu.server.line()));
        out
    }

    fn to_csv(&self) -> String {
        let mut t = Table::new([
            "test_id",
            "mode",
            "stream",
            "dir",
            "written",
            "read",
            "exact",
            "send_s",
            "recv_s",
            "goodput_bps",
            "retransmits",
            "cwnd",
            "rtt_us",
            "rttvar_us",
            "pacing_bps",
            "delivery_bps",
            "bytes_acked",
            "congestion",
            "client_cpu_s",
            "client_cpu_pct",
            "server_cpu_s",
            "server_cpu_pct",
        ]);
        let c = &self.cpu;
        for r in self.all_rows() {
            let one = |f: &dyn Fn(&TcpFigures) -> String| {
                if r.stream == SUM {
                    String::new()
                } else {
                    opt_tcp(&r.tcp, f)
                }
            };
            t.row([
                self.test_id.clone(),
                self.settings.mode.name().to_string(),
                r.stream.clone(),
                r.dir.name().to_string(),
                r.written.to_string(),
                r.read.to_string(),
                r.exact.to_string(),
                format!("{:.6}", r.send_s),
                format!("{:.6}", r.recv_s),
                unknown::csv(r.goodput_bps),
                opt_tcp(&r.tcp, |t| fmt_count(t.retransmits)),
                one(&|t| t.cwnd.to_string()),
                one(&|t| t.rtt_us.to_string()),
                one(&|t| t.rttvar_us.to_string()),
                opt_tcp(&r.tcp, |t| t.pacing_rate_bps),
                opt_tcp(&r.tcp, |t| t.delivery_rate_bps),
                opt_tcp(&r.tcp, |t| t.bytes_acked),
                opt_tcp(&r.tcp, |t| t.congestion.clone()),
                format!("{:.3}", c.client.cpu_s()),
                format!("{:.1}", c.client.pct_core),
                format!("{:.3}", c.server.cpu_s()),
                format!("{:.1}", c.server.pct_core),
            ]);
        }
        t.to_csv()
    }
}

/// What the server side of a TCP test reports as it runs.
#[derive(Debug)]
pub enum TcpEvent {
    /// The test was accepted (Ready sent): its plan and settings.
    Started(Plan, Box<TcpSpec>),
    Interval(TcpInterval),
    Finished(Box<TcpReport>),
}

/// Why an interval of the client's streams is over `--max-rate` (`max`), if it is: over by
/// more than a quarter and by at least 64 KiB (a burst is not a rate).
pub(crate) fn over_rate(row: &TcpInterval, max: Option<f64>) -> Option<String> {
    let max = max?;
    let up: f64 = row
        .streams
        .iter()
        .filter(|s| s.dir == Dir::Up)
        .map(|s| s.bps)
        .sum();
    let bytes = up * (row.t - row.start) / 8.0;
    (up > max * 1.25 && bytes > 65536.0).then(|| {
        format!(
            "cut: the client sent at {}, over this receiver's limit of {} (--max-rate)",
            fmt_bits_per_sec(up),
            fmt_bits_per_sec(max)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn end(id: u32, dir: Dir, bytes: u64, s: f64) -> StreamEnd {
        StreamEnd {
            id,
            dir,
            bytes,
            elapsed_s: s,
            tcp: Some(TcpFigures {
                retransmits: id as u64,
                cwnd: 10,
                ..Default::default()
            }),
            zerocopy: None,
            buffers: None,
        }
    }

    #[test]
    fn join_and_sum() {
        let client = [end(0, Dir::Up, 100, 1.0), end(1, Dir::Down, 7, 2.0)];
        let server = [end(1, Dir::Down, 7, 1.5), end(0, Dir::Up, 100, 2.0)];
        let rows = TcpReport::join_streams(&client, &server);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.exact));
        assert_eq!(rows[0].send_s, 1.0); // the client wrote stream 0
        assert_eq!(rows[0].recv_s, 2.0);
        assert_eq!(rows[1].send_s, 1.5); // the server wrote stream 1
        assert_eq!(rows[0].goodput_bps, Some(400.0));
        let sums = TcpReport::sums(&rows);
        assert_eq!(sums.len(), 2);
        assert_eq!(sums[0].stream, "SUM");
        let short = [end(0, Dir::Up, 99, 2.0)];
        let rows = TcpReport::join_streams(&client[..1], &short);
        assert!(!rows[0].exact && !TcpReport::sums(&rows)[0].exact);
    }

    /// A reader with no time (one read, or none) has no goodput: null in JSON, not 0; a reader
    /// that had time and read nothing has 0 (#27 follow-up).
    #[test]
    fn goodput_over_no_time_is_unknown() {
        let client = [end(0, Dir::Up, 100, 1.0), end(1, Dir::Up, 0, 1.0)];
        let server = [end(0, Dir::Up, 100, 0.0), end(1, Dir::Up, 0, 0.5)];
        let rows = TcpReport::join_streams(&client, &server);
        assert_eq!(rows[0].goodput_bps, None);
        assert_eq!(rows[1].goodput_bps, Some(0.0));
        assert!(serde_json::to_value(&rows[0]).unwrap()["goodput_bps"].is_null());
        let none = TcpReport::join_streams(&client[..1], &server[..1]);
        assert_eq!(TcpReport::sums(&none)[0].goodput_bps, None);
        assert_eq!(TcpReport::sums(&rows)[0].goodput_bps, Some(1600.0));
    }

    #[test]
    fn intervals_tile() {
        let mut m = IntervalMeter::default();
        let a = m.sample(1.0, [(0, Dir::Up, 1000, None), (1, Dir::Up, 500, None)]);
        assert_eq!(a.start, 0.0);
        assert_eq!(a.sum_bps, 12_000.0);
        let b = m.sample(1.5, [(0, Dir::Up, 1000, None), (1, Dir::Up, 1000, None)]);
        assert_eq!(b.start, 1.0);
        assert_eq!(b.sum_bps, 8_000.0);
        assert!(TcpReport::interval_lines(&b).contains("SUM"));
    }

    proptest! {
        #[test]
        fn sum_row_adds_the_streams(bytes in proptest::collection::vec((0u64..1<<40, any::<bool>()), 1..20)) {
            let c: Vec<_> = bytes.iter().enumerate().map(|(i, &(b, _))| end(i as u32, Dir::Up, b, 1.0)).collect();
            let s: Vec<_> = bytes.iter().enumerate().map(|(i, &(b, lose))| end(i as u32, Dir::Up, b - u64::from(lose && b > 0), 1.0)).collect();
            let rows = TcpReport::join_streams(&c, &s);
            let sum = &TcpReport::sums(&rows)[0];
            prop_assert_eq!(sum.written, bytes.iter().map(|b| b.0).sum::<u64>());
            prop_assert_eq!(sum.read, rows.iter().map(|r| r.read).sum::<u64>());
            prop_assert_eq!(sum.exact, rows.iter().all(|r| r.exact));
        }
    }
}
