//! The relay's report: its settings and its ground truth, as a table, JSON or CSV.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::impair::{Counters, Settings};
use super::proxy::TcpCounters;
use super::truth::TestTruth;
use crate::stats::table::Table;
use crate::stats::Report;
use crate::units::{fmt_count, fmt_micros};

/// JSON schema name of the relay's report.
/// v2: v1 + `tcp`, the TCP proxy's counters.
/// v3: v2 + `returned` (the UDP return path), `iperf3_hellos`, and per test `kind` (iperf3 UDP
/// streams have a ground truth too; their `test_id` is the stream's source address).
pub(crate) const SCHEMA: &str = "netcore.relay.v3";

/// The UDP return path: datagrams the receiver sent back to a source's socket, returned to the
/// source unimpaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct ReturnReport {
    /// Sources that got a socket of their own towards `--to`.
    pub sources: u64,
    /// Sources whose socket was closed to make room for a new one (the table holds 1024).
    pub evicted: u64,
    /// Datagrams (and their bytes) returned to their sources.
    pub datagrams: u64,
    pub bytes: u64,
    /// Errors on the return path by errno (`ECONNREFUSED`: `--to` answered "port unreachable");
    /// what could not be returned is dropped.
    pub errors: BTreeMap<String, u64>,
}

/// The impairments in force, in the units of the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct SettingsReport {
    pub loss_pct: f64,
    /// Mean loss-burst length (datagrams); absent for independent losses.
    pub burst_mean: Option<f64>,
    pub reorder_pct: f64,
    /// Inclusive range `LOW..HIGH`.
    pub reorder_depth: String,
    pub duplicate_pct: f64,
    pub delay_us: f64,
    pub jitter_us: f64,
    pub rate: Option<String>,
    /// Seed of the random generator: the same seed and arrival order repeat the same run.
    pub seed: u64,
}

impl SettingsReport {
    pub fn new(s: &Settings) -> SettingsReport {
        SettingsReport {
            loss_pct: s.loss * 100.0,
            burst_mean: s.burst,
            reorder_pct: s.reorder * 100.0,
            reorder_depth: format!("{}..{}", s.reorder_depth.start(), s.reorder_depth.end()),
            duplicate_pct: s.duplicate * 100.0,
            delay_us: s.delay.as_secs_f64() * 1e6,
            jitter_us: s.jitter.as_secs_f64() * 1e6,
            rate: s.rate.map(|r| r.to_string()),
            seed: s.seed,
        }
    }
}

/// Everything the relay did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct RelayReport {
    pub schema: String,
    /// Where the report came from: netcore's version and revision, the host, kernel, CPUs,
    /// pinned threads, sysctls, when (`stats::meta`; absent in reports of older versions).
    #[serde(default)]
    pub meta: crate::stats::meta::Meta,
    pub listen: String,
    pub to: String,
    pub settings: SettingsReport,
    /// Datagrams received (all kinds).
    pub datagrams_in: u64,
    pub bytes_in: u64,
    /// Datagrams longer than the receive buffer (cut by the kernel), forwarded as cut.
    pub truncated_in: u64,
    /// Datagrams that are neither netcore test datagrams nor an iperf3 UDP stream's (forwarded
    /// and impaired like the others).
    pub other_in: u64,
    /// iperf3 UDP stream hellos (4 bytes, the first datagram of each stream): forwarded at
    /// once, unimpaired, outside the truth.
    pub iperf3_hellos: u64,
    /// What the impairment stages did (dropped, duplicated, held back, link overflow).
    pub impairments: Counters,
    /// Copies the kernel took on the way out (duplicates included).
    pub forwarded: u64,
    pub bytes_out: u64,
    /// Copies the kernel refused, by errno (dropped).
    pub send_errors: BTreeMap<String, u64>,
    /// The return path (unimpaired).
    pub returned: ReturnReport,
    pub elapsed_s: f64,
    /// Stopped by SIGINT/SIGTERM.
    pub interrupted: bool,
    /// Per-test ground truth for netcore datagrams and iperf3 UDP streams, as the receiver will
    /// count them.
    pub tests: Vec<TestTruth>,
    /// The TCP proxy's connections and bytes (absent with `--max-connections 0`).
    pub tcp: Option<TcpCounters>,
}

impl Report for RelayReport {
    fn meta(&self) -> &crate::stats::meta::Meta {
        &self.meta
    }

    fn to_table(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "netcore relay {} -> {}: loss {}%{} reorder {}% (depth {}) duplicate {}% delay {} jitter {} rate {} seed {}\n",
            self.listen,
            self.to,
            s.loss_pct,
            s.burst_mean
                .map(|m| format!(" (bursts of mean {m})"))
                .unwrap_or_default(),
            s.reorder_pct,
            s.reorder_depth,
            s.duplicate_pct,
            fmt_micros(s.delay_us),
            fmt_micros(s.jitter_us),
            s.rate.as_deref().unwrap_or("unlimited"),
            s.seed
        );
        let i = &self.impairments;
        let mut t = Table::new(["datagrams", "count"]);
        t.row(["in".to_string(), fmt_count(self.datagrams_in)])
            .row(["dropped (loss)".to_string(), fmt_count(i.dropped)])
            .row([
                "dropped (link queue full)".to_string(),
                fmt_count(i.overflow),
            ])
            .row([
                "dropped (send errors)".to_string(),
                fmt_count(self.send_errors.values().sum::<u64>()),
            ])
            .row(["duplicated".to_string(), fmt_count(i.duplicated)])
            .row(["held back".to_string(), fmt_count(i.held_back)])
            .row(["forwarded".to_string(), fmt_count(self.forwarded)])
            .row([
                "not netcore or iperf3".to_string(),
                fmt_count(self.other_in),
            ]);
        if self.iperf3_hellos > 0 {
            t.row([
                "iperf3 stream hellos (unimpaired)".to_string(),
                fmt_count(self.iperf3_hellos),
            ]);
        }
        let r = &self.returned;
        t.row([
            format!("returned to {} source(s) (unimpaired)", r.sources),
            fmt_count(r.datagrams),
        ]);
        if r.evicted > 0 {
            t.row([
                "sources evicted (table full)".to_string(),
                fmt_count(r.evicted),
            ]);
        }
        for (e, n) in &r.errors {
            t.row([format!("return errors: {e}"), fmt_count(*n)]);
        }
        if self.truncated_in > 0 {
            t.row(["truncated".to_string(), fmt_count(self.truncated_in)]);
        }
        out.push_str(&t.render());
        if !self.tests.is_empty() {
            let mut t = Table::new([
                "test",
                "kind",
                "in",
                "dropped",
                "forwarded",
                "lost",
                "duplicates",
                "reordered",
                "max extent",
            ]);
            for x in &self.tests {
                t.row([
                    x.test_id.clone(),
                    x.kind.clone(),
                    fmt_count(x.datagrams_in),
                    fmt_count(x.dropped),
                    fmt_count(x.forwarded),
                    fmt_count(x.lost),
                    fmt_count(x.duplicates),
                    fmt_count(x.reordered),
                    fmt_count(x.max_extent),
                ]);
            }
            out.push_str("ground truth per test (as the receiver will count it):\n");
            out.push_str(&t.render());
        }
        if let Some(c) = &self.tcp {
            out.push_str(&tcp_table(c));
        }
        if self.interrupted {
            out.push_str("interrupted\n");
        }
        out
    }

    fn to_csv(&self) -> String {
        let mut t = Table::new([
            "test_id",
            "kind",
            "datagrams_in",
            "unique_in",
            "dropped",
            "forwarded",
            "unique_out",
            "lost",
            "duplicates",
            "reordered",
            "max_extent",
            "too_late",
            "seed",
        ]);
        for x in &self.tests {
            t.row([
                x.test_id.clone(),
                x.kind.clone(),
                x.datagrams_in.to_string(),
                x.unique_in.to_string(),
                x.dropped.to_string(),
                x.forwarded.to_string(),
                x.unique_out.to_string(),
                x.lost.to_string(),
                x.duplicates.to_string(),
                x.reordered.to_string(),
                x.max_extent.to_string(),
                x.too_late.to_string(),
                self.settings.seed.to_string(),
            ]);
        }
        t.to_csv()
    }
}

/// The TCP proxy's counters as a table.
fn tcp_table(c: &TcpCounters) -> String {
    let mut t = Table::new(["tcp connections", "count"]);
    t.row(["proxied".to_string(), c.connections.to_string()])
        .row(["closed in order".to_string(), c.closed.to_string()]);
    for (e, n) in &c.errors {
        t.row([format!("ended by {e}"), n.to_string()]);
    }
    t.row(["refused (limit)".to_string(), c.refused.to_string()])
        .row(["connect failed".to_string(), c.connect_failed.to_string()])
        .row(["most open at once".to_string(), c.max_open.to_string()])
        .row(["bytes to --to".to_string(), c.bytes_to_server.to_string()])
        .row(["bytes back".to_string(), c.bytes_to_client.to_string()]);
    t.render()
}
