//! The UDP test report: one versioned schema for both sides, rendered as a table, JSON or CSV.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::flow::cpu::CpuUsage;
use crate::flow::kernel::{self, ThreadLoad};
use crate::flow::payload::{zerocopy_verdict, KernelStats, ReceiverStats, StreamStats};
use crate::flow::streams::SUM;
use crate::stats::hist::Percentiles;
use crate::stats::table::Table;
use crate::stats::unknown;
use crate::stats::Report;
use crate::sys::sockopt::BufMethod;
use crate::units::{
    fmt_bits_per_sec, fmt_bytes, fmt_count, fmt_micros, fmt_pct, fmt_pps, fmt_secs,
};

/// v3: `receiver.streams` (one row per stream, `-P`), CSV rows per stream and a SUM row.
/// v4: `receiver.kernel` (where loss and time went: the socket's drops, the receiving host's
/// counters, the loss split, the busy threads and cores, the verdict) and
/// `sender.sndbuf_errors`; CSV columns for them.
pub(crate) const SCHEMA: &str = "netcore.udp.v4";

/// A side's busy threads as a [`ThreadLoad`].
fn thread_load(role: &str, cpu: Option<usize>, c: &CpuUsage) -> ThreadLoad {
    let pct = |s: f64| {
        if c.wall_s > 0.0 {
            s / c.wall_s * 100.0
        } else {
            0.0
        }
    };
    ThreadLoad {
        role: role.into(),
        cpu,
        pct: c.pct_core,
        user_pct: pct(c.user_s),
        system_pct: pct(c.system_s),
    }
}

impl UdpReport {
    /// Fills `receiver.kernel`'s threads and verdict from both sides' CPU figures (each side
    /// calls it once it has the other's: the receiver after Done, the sender after the
    /// Report). `loopback`: both ends on this host's loopback.
    pub(crate) fn conclude(&mut self, loopback: bool) {
        let s = &self.sender;
        let r = &self.receiver;
        let Some(k) = self.receiver.kernel.as_ref() else {
            return;
        };
        let mut threads = Vec::new();
        if let Some(c) = &s.cpu_usage {
            threads.push(thread_load("sender", s.cpu, c));
        }
        if let Some(c) = &r.cpu_usage {
            threads.push(thread_load("receiver", r.cpu, c));
        }
        let verdict = kernel::verdict(&threads, &k.host.cores, loopback, &k.loss);
        let k = self.receiver.kernel.as_mut().expect("checked above");
        k.threads = threads;
        k.verdict = verdict;
    }
}

/// What the sender did. On the receiver's side only the fields of the Done message are known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SenderStats {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub rate_bps: f64,
    pub pps: f64,
    /// Send errors by errno name (each datagram was retried until the kernel took it).
    pub errors: BTreeMap<String, u64>,
    pub send_calls: Option<u64>,
    pub gso_segments: Option<u32>,
    pub batch: Option<usize>,
    pub pacing: Option<String>,
    pub sndbuf: Option<u64>,
    pub cpu: Option<usize>,
    /// The send backend that ran: "mio" (`sendmmsg`) or "uring" (linked `SEND` batches);
    /// `send_calls` counts `sendmmsg` or `io_uring_enter` calls. Unknown on the receiver.
    #[serde(default)]
    pub backend: Option<String>,
    /// `--zerocopy` (uring `SEND_ZC`): what the kernel's notifications said.
    #[serde(default)]
    pub zerocopy: Option<ZeroCopyStats>,
    /// The blasting thread's CPU over the test (schema v2; from Done on the receiver).
    #[serde(default)]
    pub cpu_usage: Option<CpuUsage>,
    /// The sending host's `SndbufErrors` (`/proc/net/snmp`) over the sending (schema v4;
    /// host-wide; from Done on the receiver). None where unknown.
    #[serde(default)]
    pub sndbuf_errors: Option<u64>,
}

/// The notifications of zero-copy sends.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct ZeroCopyStats {
    /// Notifications received (one per `SEND_ZC`).
    pub notifications: u64,
    /// Of those, sends whose data the kernel copied after all (on loopback: all of them).
    pub copied: u64,
}

/// One interval line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IntervalRow {
    /// Where the interval began, in seconds since the start of the test (the previous row's
    /// `t`; 0 for the first).
    #[serde(default)]
    pub start: f64,
    /// Where it ended, in seconds since the start of the test (receiver's clock on the
    /// receiver, sender's on the sender).
    pub t: f64,
    /// Datagrams sent since the test began (0 on the receiver's own rows).
    pub sent: u64,
    /// The interval's sending rate (bit/s).
    pub sent_bps: f64,
    /// Unique datagrams received since the test began.
    pub received: u64,
    /// The interval's receiving rate (bit/s).
    pub received_bps: f64,
    pub lost_so_far: u64,
    /// Datagrams sent in this interval (absent in older reports).
    #[serde(default)]
    pub interval_sent: u64,
    /// Unique datagrams received in this interval (absent in older reports).
    #[serde(default)]
    pub interval_received: u64,
}

/// The report both sides print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UdpReport {
    pub schema: String,
    /// Where the report came from: netcore's version and revision, the host, kernel, CPUs,
    /// pinned threads, sysctls, when (`stats::meta`; absent in reports of older versions).
    #[serde(default)]
    pub meta: crate::stats::meta::Meta,
    /// "sender" or "receiver": who printed it.
    pub role: String,
    pub test_id: String,
    pub len: u32,
    pub verify: bool,
    pub target: String,
    pub sender: SenderStats,
    pub receiver: ReceiverStats,
    pub intervals: Vec<IntervalRow>,
}

fn errors_text(e: &BTreeMap<String, u64>) -> String {
    if e.is_empty() {
        return "none".into();
    }
    e.iter()
        .map(|(k, v)| format!("{k} x{}", fmt_count(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Columns of the CSV report.
const CSV_COLUMNS: usize = CSV_HEADER.len();
/// The CSV's columns (`--csv`): a row per stream, then the SUM row.
const CSV_HEADER: [&str; 31] = [
    "test_id",
    "len",
    "stream",
    "sent",
    "unique",
    "lost",
    "lost_pct",
    "reordered",
    "max_extent",
    "duplicate",
    "too_late",
    "invalid",
    "send_bps",
    "goodput_bps",
    "recv_pps",
    "jitter_us",
    "lat_p50_us",
    "lat_p99_us",
    "lat_max_us",
    "sender_cpu_s",
    "sender_cpu_pct",
    "receiver_cpu_s",
    "receiver_cpu_pct",
    "lost_socket_buffer",
    "lost_backlog",
    "lost_not_seen",
    "loss_split_exact",
    "socket_rxq_ovfl",
    "host_rcvbuf_errors",
    "sender_sndbuf_errors",
    "verdict",
];

fn cpu_cell(v: Option<String>) -> String {
    v.unwrap_or_default()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

impl UdpReport {
    /// The interval line printed while a test runs: the interval's datagrams and rates, the
    /// loss so far.
    pub(crate) fn interval_line(r: &IntervalRow) -> String {
        format!(
            "[{:6.2}-{:6.2}s] sent {:>12} dgrams {:>14} | received {:>12} dgrams {:>14} | lost so far {}",
            r.start,
            r.t,
            fmt_count(r.interval_sent),
            fmt_bits_per_sec(r.sent_bps),
            fmt_count(r.interval_received),
            fmt_bits_per_sec(r.received_bps),
            fmt_count(r.lost_so_far)
        )
    }

    fn pct(p: &Percentiles) -> String {
        if p.count == 0 {
            return "-".into();
        }
        format!(
            "{} / {} / {} / {} / {}",
            fmt_micros(p.p50),
            fmt_micros(p.p90),
            fmt_micros(p.p99),
            fmt_micros(p.p999),
            fmt_micros(p.max)
        )
    }
}

impl UdpReport {
    /// One row per stream and a SUM row: sent, unique, lost, reordered, duplicates, too late,
    /// goodput and jitter.
    fn streams_table(&self) -> String {
        let r = &self.receiver;
        let mut t = Table::new([
            "stream",
            "sent",
            "unique",
            "lost",
            "reordered",
            "duplicates",
            "too late",
            "goodput",
            "jitter",
        ]);
        let sum = StreamStats {
            stream: 0,
            accounting: r.accounting,
            lost_pct: r.lost_pct,
            bytes: r.bytes,
            goodput_bps: unknown::known(r.goodput_bps),
            jitter_us: r.jitter_us,
        };
        let rows = r.streams.iter().map(|x| (x.stream.to_string(), x));
        for (label, x) in rows.chain([(SUM.to_string(), &sum)]) {
            let a = &x.accounting;
            t.row([
                label,
                fmt_count(a.sent),
                fmt_count(a.unique),
                format!("{} ({})", fmt_count(a.lost), fmt_pct(x.lost_pct)),
                fmt_count(a.reordered),
                fmt_count(a.duplicate),
                fmt_count(a.too_late),
                unknown::text(x.goodput_bps, fmt_bits_per_sec),
                fmt_micros(x.jitter_us),
            ]);
        }
        t.render()
    }
}

impl UdpReport {
    /// Where loss and time went: the loss split, the receiving host's counters, the cores, the
    /// busy threads and the verdict.
    fn kernel_lines(&self, k: &KernelStats) -> String {
        let l = &k.loss;
        let d = &k.socket_drops;
        let mut out = format!(
            "loss: {} lost = {} dropped at the receiver's socket buffer (SO_RXQ_OVFL {}, at the end {}) + {} in this host's backlog + {} not seen by this host (the path or the sender's side){}\n",
            fmt_count(l.lost),
            fmt_count(l.socket_buffer),
            opt(d.rxq_ovfl.map(fmt_count)),
            opt(d.total.map(fmt_count)),
            fmt_count(l.backlog),
            fmt_count(l.not_seen),
            match &l.note {
                Some(n) if !l.exact => format!("; not exact: {n}"),
                _ => String::new(),
            }
        );
        let udp = match k.host.udp {
            Some(u) => format!(
                "UDP InDatagrams +{}, InErrors +{}, RcvbufErrors +{}, SndbufErrors +{}",
                fmt_count(u.in_datagrams),
                fmt_count(u.in_errors),
                fmt_count(u.rcvbuf_errors),
                fmt_count(u.sndbuf_errors)
            ),
            None => "UDP counters unreadable".into(),
        };
        out.push_str(&format!(
            "kernel (receiving host): {udp}; backlog drops +{}; sender's host SndbufErrors {}\n",
            fmt_count(k.host.backlog_drops),
            opt(self
                .sender
                .sndbuf_errors
                .map(|n| format!("+{}", fmt_count(n)))),
        ));
        if !k.host.cores.is_empty() {
            let cores: Vec<String> = k
                .host
                .cores
                .iter()
                .map(|c| {
                    format!(
                        "CPU {} {:.0} % busy, {:.0} % softirq, {} NET_RX",
                        c.cpu,
                        c.busy_pct,
                        c.softirq_pct,
                        fmt_count(c.net_rx)
                    )
                })
                .collect();
            out.push_str(&format!("cores (start to Done): {}\n", cores.join("; ")));
        }
        if !k.threads.is_empty() {
            let threads: Vec<String> = k
                .threads
                .iter()
                .map(|t| {
                    format!(
                        "{} {:.0} %{} (user {:.0} %, system {:.0} %)",
                        t.role,
                        t.pct,
                        t.cpu.map(|c| format!(" of CPU {c}")).unwrap_or_default(),
                        t.user_pct,
                        t.system_pct
                    )
                })
                .collect();
            out.push_str(&format!("threads: {}\n", threads.join("; ")));
        }
        if !k.verdict.is_empty() {
            out.push_str(&format!("verdict: {}\n", k.verdict));
        }
        out
    }

    /// The table of counts: datagrams, bytes, time, rates, and the receiver's accounting.
    fn counts_table(&self) -> Table {
        let s = &self.sender;
        let r = &self.receiver;
        let a = &r.accounting;
        let mut t = Table::new(["", "sender", "receiver"]);
        t.row([
            "datagrams".to_string(),
            fmt_count(s.sent),
            format!("{} unique", fmt_count(a.unique)),
        ]);
        t.row(["bytes".to_string(), fmt_bytes(s.bytes), fmt_bytes(r.bytes)]);
        // The receiver times from its first datagram to its last: with one batch (a short
        // --count) that is no time at all, and its rates are unknown, not zero.
        let timed = |x: String| if r.duration_s > 0.0 { x } else { "n/a".into() };
        t.row([
            "time".to_string(),
            fmt_secs(s.elapsed_s),
            timed(fmt_secs(r.duration_s)),
        ]);
        t.row([
            "goodput".to_string(),
            fmt_bits_per_sec(s.rate_bps),
            timed(fmt_bits_per_sec(r.goodput_bps)),
        ]);
        t.row(["rate".to_string(), fmt_pps(s.pps), timed(fmt_pps(r.pps))]);
        t.row([
            "lost".to_string(),
            String::new(),
            format!("{} ({})", fmt_count(a.lost), fmt_pct(r.lost_pct)),
        ]);
        t.row([
            "reordered".to_string(),
            String::new(),
            format!(
                "{} (max extent {})",
                fmt_count(a.reordered),
                fmt_count(a.max_extent)
            ),
        ]);
        t.row([
            "duplicates".to_string(),
            String::new(),
            fmt_count(a.duplicate),
        ]);
        t.row([
            "too late".to_string(),
            String::new(),
            format!(
                "{} (window {}{})",
                fmt_count(a.too_late),
                fmt_count(r.window),
                if r.streams.len() > 1 {
                    " per stream"
                } else {
                    ""
                }
            ),
        ]);
        let invalid: u64 = r.invalid.values().sum();
        t.row([
            "invalid".to_string(),
            String::new(),
            if invalid == 0 {
                "0".to_string()
            } else {
                errors_text(&r.invalid)
            },
        ]);
        t
    }

    /// The first line: the test, the datagrams, whether it was interrupted.
    fn headline(&self) -> String {
        let r = &self.receiver;
        format!(
            "netcore UDP test {} to {}: {}-byte datagrams{}{}\n",
            self.test_id,
            self.target,
            self.len,
            if self.verify {
                ", payload verified"
            } else {
                ""
            },
            if r.interrupted { " (INTERRUPTED)" } else { "" }
        )
    }

    /// The sender's line: send calls, batching, GSO, pacing, CPU, buffer, errors.
    fn sender_line(&self) -> String {
        let s = &self.sender;
        format!(
            "sender:   {} {}, {} messages/call, GSO {}, {}, CPU {}, sndbuf {}, send errors (retried): {}\n",
            opt(s.send_calls.map(fmt_count)),
            match (s.backend.as_deref(), s.zerocopy.is_some()) {
                (Some("uring"), true) => "io_uring_enter calls (backend uring, linked SEND_ZC)",
                (Some("uring"), _) => "io_uring_enter calls (backend uring, linked SEND)",
                (Some("mio"), _) => "sendmmsg calls (backend mio)",
                _ => "send calls",
            },
            opt(s.batch),
            match s.gso_segments {
                Some(n) if n > 1 => format!("{n} datagrams/message"),
                Some(_) => "off".into(),
                None => "-".into(),
            },
            s.pacing.clone().unwrap_or_else(|| "unpaced".into()),
            s.cpu.map_or("unpinned".into(), |c| c.to_string()),
            s.sndbuf.map_or("-".into(), fmt_bytes),
            errors_text(&s.errors),
        )
    }

    /// The receiver's line: receive calls, GRO, CPU, buffer.
    fn receiver_line(&self) -> String {
        let r = &self.receiver;
        format!(
            "receiver: {} {}, GRO {}, CPU {}, rcvbuf {} ({})\n",
            fmt_count(r.recv_calls),
            match r.backend.as_str() {
                "uring" => "ring turns with data (backend uring, multishot RECVMSG)",
                _ => "recvmmsg calls (backend mio)",
            },
            if r.gro {
                format!("on ({} coalesced buffers)", fmt_count(r.coalesced_buffers))
            } else {
                "off".into()
            },
            r.cpu.map_or("unpinned".into(), |c| c.to_string()),
            fmt_bytes(r.rcvbuf),
            match r.rcvbuf_method {
                BufMethod::Forced => "SO_RCVBUFFORCE",
                BufMethod::Capped => "SO_RCVBUF, capped by net.core.rmem_max",
            }
        )
    }
}

impl Report for UdpReport {
    fn meta(&self) -> &crate::stats::meta::Meta {
        &self.meta
    }

    fn to_table(&self) -> String {
        let s = &self.sender;
        let r = &self.receiver;
        let mut out = self.headline();
        out.push_str(&self.counts_table().render());
        out.push_str(&format!("jitter (RFC 3550): {}\n", fmt_micros(r.jitter_us)));
        out.push_str(&format!(
            "one-way latency ({}): p50/p90/p99/p99.9/max {}\n",
            r.latency_clock,
            Self::pct(&r.latency_us)
        ));
        out.push_str(&self.sender_line());
        if let Some(z) = s.zerocopy {
            out.push_str(&format!(
                "zerocopy: {} notifications, the kernel copied {} of them ({})\n",
                fmt_count(z.notifications),
                fmt_count(z.copied),
                zerocopy_verdict(z.notifications, z.copied)
            ));
        }
        out.push_str(&self.receiver_line());
        for (who, c) in [("sender", s.cpu_usage), ("receiver", r.cpu_usage)] {
            if let Some(c) = c {
                out.push_str(&format!("cpu {who}: {}\n", c.line()));
            }
        }
        if let Some(k) = &r.kernel {
            out.push_str(&self.kernel_lines(k));
        }
        if r.streams.len() > 1 {
            out.push_str(&self.streams_table());
        }
        out
    }
    fn to_csv(&self) -> String {
        let mut t = Table::new(CSV_HEADER);
        // One row per stream (the figures only the stream has; the rest empty), then the SUM
        // row with everything.
        for x in &self.receiver.streams {
            let mut row = self.csv_stream_row(x);
            row.resize(CSV_COLUMNS, String::new());
            t.row(row);
        }
        t.row(self.csv_sum_row());
        t.to_csv()
    }
}

impl UdpReport {
    /// A stream's CSV row: the figures a stream has, in [`CSV_HEADER`]'s order.
    fn csv_stream_row(&self, x: &StreamStats) -> Vec<String> {
        let r = &self.receiver;
        let a = &x.accounting;
        vec![
            self.test_id.clone(),
            self.len.to_string(),
            x.stream.to_string(),
            a.sent.to_string(),
            a.unique.to_string(),
            a.lost.to_string(),
            format!("{:.4}", x.lost_pct),
            a.reordered.to_string(),
            a.max_extent.to_string(),
            a.duplicate.to_string(),
            a.too_late.to_string(),
            String::new(),
            String::new(),
            unknown::csv(x.goodput_bps),
            unknown::csv((r.duration_s > 0.0).then(|| a.unique as f64 / r.duration_s)),
            format!("{:.2}", x.jitter_us),
        ]
    }

    /// The SUM row: every column of [`CSV_HEADER`].
    fn csv_sum_row(&self) -> Vec<String> {
        let (s, r) = (&self.sender, &self.receiver);
        let (a, k) = (&r.accounting, r.kernel.as_ref());
        vec![
            self.test_id.clone(),
            self.len.to_string(),
            SUM.to_string(),
            s.sent.to_string(),
            a.unique.to_string(),
            a.lost.to_string(),
            format!("{:.4}", r.lost_pct),
            a.reordered.to_string(),
            a.max_extent.to_string(),
            a.duplicate.to_string(),
            a.too_late.to_string(),
            r.invalid.values().sum::<u64>().to_string(),
            format!("{:.0}", s.rate_bps),
            unknown::csv(unknown::known(r.goodput_bps)),
            unknown::csv(unknown::known(r.pps)),
            format!("{:.2}", r.jitter_us),
            format!("{:.2}", r.latency_us.p50),
            format!("{:.2}", r.latency_us.p99),
            format!("{:.2}", r.latency_us.max),
            cpu_cell(s.cpu_usage.map(|c| format!("{:.3}", c.cpu_s()))),
            cpu_cell(s.cpu_usage.map(|c| format!("{:.1}", c.pct_core))),
            cpu_cell(r.cpu_usage.map(|c| format!("{:.3}", c.cpu_s()))),
            cpu_cell(r.cpu_usage.map(|c| format!("{:.1}", c.pct_core))),
            cpu_cell(k.map(|k| k.loss.socket_buffer.to_string())),
            cpu_cell(k.map(|k| k.loss.backlog.to_string())),
            cpu_cell(k.map(|k| k.loss.not_seen.to_string())),
            cpu_cell(k.map(|k| k.loss.exact.to_string())),
            cpu_cell(
                k.and_then(|k| k.socket_drops.rxq_ovfl)
                    .map(|n| n.to_string()),
            ),
            cpu_cell(
                k.and_then(|k| k.host.udp)
                    .map(|u| u.rcvbuf_errors.to_string()),
            ),
            cpu_cell(s.sndbuf_errors.map(|n| n.to_string())),
            cpu_cell(k.map(|k| k.verdict.clone())),
        ]
    }
}

#[cfg(test)]
mod tests {}
