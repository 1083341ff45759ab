//! The traffic report: per-interval samples and per-flow totals.

use std::collections::BTreeMap;

use serde::Serialize;

use super::messages::{Counters, Flow};
use crate::stats::table::Table;
use crate::stats::Report;
use crate::units::{fmt_bits_per_sec, fmt_bytes, fmt_bytes_short, fmt_count, fmt_secs};

pub(crate) const SCHEMA: &str = "netcore.traffic.v1";

/// What one flow's client received in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FlowInterval {
    pub bytes: u64,
    pub msgs: u64,
}

/// One monitor sample.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Sample {
    /// Index of the interval, from 1.
    pub n: u64,
    /// Seconds since the start at the end of this interval.
    pub t: f64,
    pub flows: BTreeMap<Flow, FlowInterval>,
}

/// Totals of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FlowTotals {
    #[serde(flatten)]
    pub counters: Counters,
    /// Sent but not received (UDP loss; zero for TCP, which loses nothing).
    pub lost_msgs: u64,
    /// TCP: generated but not yet received when the run ended (in the sender's buffer or the
    /// kernel's), not lost; zero for UDP.
    pub in_flight_msgs: u64,
    pub recv_bits_per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TrafficReport {
    pub schema: &'static str,
    /// Where the report came from: netcore's version and revision, the host, kernel, CPUs,
    /// pinned threads, sysctls, when (`stats::meta`; absent in reports of older versions).
    #[serde(default)]
    pub meta: crate::stats::meta::Meta,
    pub seed: u64,
    /// The planned `--duration`.
    pub duration_s: f64,
    /// How long the run took (start to report), drain included.
    pub elapsed_s: f64,
    /// Stopped by SIGINT/SIGTERM before the planned end.
    pub interrupted: bool,
    pub interval_s: f64,
    pub min_size: usize,
    pub max_size: usize,
    pub pace: String,
    pub intervals: Vec<Sample>,
    pub totals: BTreeMap<Flow, FlowTotals>,
}

impl TrafficReport {
    /// The line printed per interval, in the spirit of the tutorial this grew from:
    /// `second 3: TCP=1.2 KB, UDP=0.9 KB (messages TCP=3, UDP=3; UDP lost so far 0)`.
    pub(crate) fn interval_line(
        s: &Sample,
        interval_s: f64,
        udp_lost_so_far: Option<u64>,
    ) -> String {
        let label = if (interval_s - 1.0).abs() < 1e-9 {
            format!("second {}", s.n)
        } else {
            format!("t={:.2}s", s.t)
        };
        let bytes: Vec<String> = s
            .flows
            .iter()
            .map(|(f, v)| format!("{}={}", f.name(), fmt_bytes_short(v.bytes)))
            .collect();
        let msgs: Vec<String> = s
            .flows
            .iter()
            .map(|(f, v)| format!("{}={}", f.name(), fmt_count(v.msgs)))
            .collect();
        let mut line = format!(
            "{label}: {} (messages {}",
            bytes.join(", "),
            msgs.join(", ")
        );
        if let Some(l) = udp_lost_so_far {
            line.push_str(&format!(
                "; UDP sent but not received so far {}",
                fmt_count(l)
            ));
        }
        line.push(')');
        line
    }
}

impl Report for TrafficReport {
    fn meta(&self) -> &crate::stats::meta::Meta {
        &self.meta
    }

    fn to_table(&self) -> String {
        let mut t = Table::new([
            "flow",
            "sent msgs",
            "sent bytes",
            "received msgs",
            "received bytes",
            "lost msgs",
            "in flight",
            "received rate",
        ]);
        for (f, v) in &self.totals {
            t.row([
                f.name().to_string(),
                fmt_count(v.counters.sent_msgs),
                fmt_bytes(v.counters.sent_bytes),
                fmt_count(v.counters.recv_msgs),
                fmt_bytes(v.counters.recv_bytes),
                fmt_count(v.lost_msgs),
                fmt_count(v.in_flight_msgs),
                fmt_bits_per_sec(v.recv_bits_per_sec),
            ]);
        }
        let ran = if self.interrupted {
            format!(
                "interrupted after {} of {}",
                fmt_secs(self.elapsed_s),
                fmt_secs(self.duration_s)
            )
        } else {
            fmt_secs(self.duration_s)
        };
        format!(
            "netcore traffic: {ran}, messages of {}..{} bytes, {}, seed {}\n{}",
            self.min_size,
            self.max_size,
            self.pace,
            self.seed,
            t.render()
        )
    }

    fn to_csv(&self) -> String {
        let mut t = Table::new(["interval", "t", "flow", "bytes", "msgs"]);
        for s in &self.intervals {
            for (f, v) in &s.flows {
                t.row([
                    s.n.to_string(),
                    format!("{:.3}", s.t),
                    f.name().to_string(),
                    v.bytes.to_string(),
                    v.msgs.to_string(),
                ]);
            }
        }
        t.to_csv()
    }
}
