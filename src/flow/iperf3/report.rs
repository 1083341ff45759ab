//! netcore's report of an iperf3 UDP test (pure), either role: per stream netcore received,
//! netcore's classes beside the fields iperf3 exchanges; per stream netcore sent (`-R`,
//! `--bidir`), what it sent beside the receiver's own figures from the results exchange.

use serde::Serialize;

use crate::stats::table::Table;
use crate::stats::Report;
use crate::units::{fmt_bytes, fmt_count, fmt_micros};

/// The report's schema name.
pub(crate) const SCHEMA: &str = "netcore.iperf3.udp.v2";

/// One received stream's figures, netcore's classes and the iperf3 fields derived from them.
///
/// iperf3's receiver counts `packets` as the highest sequence number seen and `errors` as the
/// gaps below it minus every datagram arriving below the highest (a duplicate or a late one
/// "fills" a gap it did not fill). netcore answers with exact figures instead: `packets` =
/// what the client says it sent, `errors` = `lost` (sent − distinct sequences received), so
/// the client's "lost/total" line is exact; duplicates and reordering are reported here only.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamRow {
    pub id: i64,
    /// What the sender says it sent (its results document).
    pub sent: u64,
    /// Datagrams received (duplicates included) and their bytes.
    pub received: u64,
    pub bytes: u64,
    pub in_order: u64,
    pub reordered: u64,
    pub max_extent: u64,
    pub duplicate: u64,
    pub too_late: u64,
    pub lost: u64,
    /// Datagrams too short for iperf3's header (or with sequence 0).
    pub malformed: u64,
    pub jitter_ms: f64,
    /// What iperf3's own server would have answered: the highest sequence number seen...
    pub iperf3_packets: u64,
    /// ...and its gap count (gaps minus arrivals below the highest, floored at 0).
    pub iperf3_errors: u64,
}

/// One stream netcore sent on, and the receiver's figures for it as the receiver reported
/// them in the results exchange (iperf3's counting: `peer_packets` is the highest sequence
/// number it saw, `peer_lost` its gap count; `None` if it reported nothing for the stream).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SentRow {
    pub id: i64,
    /// Datagrams the kernel took, and their bytes.
    pub sent: u64,
    pub bytes: u64,
    pub peer_bytes: Option<u64>,
    pub peer_packets: Option<i64>,
    pub peer_lost: Option<i64>,
    pub peer_jitter_ms: Option<f64>,
}

/// netcore's report of an iperf3 UDP test.
#[derive(Debug, Clone, Serialize)]
pub struct Iperf3UdpReport {
    pub schema: String,
    /// Where the report came from: netcore's version and revision, the host, kernel, CPUs,
    /// pinned threads, sysctls, when (`stats::meta`; absent in reports of older versions).
    #[serde(default)]
    pub meta: crate::stats::meta::Meta,
    /// "server" (`netcore recv` serving `iperf3 -c`) or "client" (`blast --to iperf3://`).
    pub role: String,
    pub peer: String,
    /// The iperf3 client's version, when netcore serves it (a server sends none).
    pub client_version: Option<String>,
    pub len: u32,
    pub counters_64bit: bool,
    /// forward, reverse or bidir, as iperf3's client asked.
    pub mode: String,
    /// netcore's senders handed the kernel multi-datagram buffers (UDP GSO).
    pub gso: bool,
    /// The streams netcore received, and their SUM (all zero when there are none).
    pub streams: Vec<StreamRow>,
    pub sum: StreamRow,
    /// The streams netcore sent (-R, --bidir), and their SUM.
    pub sent: Vec<SentRow>,
    pub sent_sum: SentRow,
    pub interrupted: bool,
}

const COLS: &str = "stream,sent,received,bytes,in_order,reordered,max_extent,duplicate,too_late,lost,malformed,jitter_ms,iperf3_packets,iperf3_errors";

impl StreamRow {
    /// The row's cells: raw numbers for CSV, or (`human`) through [`crate::units`]' formatter.
    fn cells(&self, name: &str, human: bool) -> [String; 14] {
        let n = |v: u64| if human { fmt_count(v) } else { v.to_string() };
        [
            name.to_string(),
            n(self.sent),
            n(self.received),
            if human {
                fmt_bytes(self.bytes)
            } else {
                self.bytes.to_string()
            },
            n(self.in_order),
            n(self.reordered),
            n(self.max_extent),
            n(self.duplicate),
            n(self.too_late),
            n(self.lost),
            n(self.malformed),
            if human {
                fmt_micros(self.jitter_ms * 1e3)
            } else {
                format!("{:.3}", self.jitter_ms)
            },
            n(self.iperf3_packets),
            n(self.iperf3_errors),
        ]
    }
}

const SENT_COLS: &str = "stream,sent,bytes,peer_bytes,peer_packets,peer_lost,peer_jitter_ms";

impl SentRow {
    fn cells(&self, name: &str, human: bool) -> [String; 7] {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let n = |v: u64| if human { fmt_count(v) } else { v.to_string() };
        let b = |v: u64| if human { fmt_bytes(v) } else { v.to_string() };
        [
            name.to_string(),
            n(self.sent),
            b(self.bytes),
            opt(self.peer_bytes.map(b)),
            opt(self.peer_packets.map(|p| n(p.max(0) as u64))),
            opt(self.peer_lost.map(|p| p.to_string())),
            opt(self.peer_jitter_ms.map(|j| {
                if human {
                    fmt_micros(j * 1e3)
                } else {
                    format!("{j:.3}")
                }
            })),
        ]
    }
}

impl Iperf3UdpReport {
    fn table(&self, human: bool) -> Table {
        let mut t = Table::new(COLS.split(',').map(|c| match (human, c) {
            (true, "jitter_ms") => "jitter",
            _ => c,
        }));
        for r in &self.streams {
            t.row(r.cells(&r.id.to_string(), human));
        }
        t.row(self.sum.cells("SUM", human));
        t
    }

    fn sent_table(&self, human: bool) -> Table {
        let mut t = Table::new(SENT_COLS.split(',').map(|c| match (human, c) {
            (true, "peer_jitter_ms") => "peer_jitter",
            _ => c,
        }));
        for r in &self.sent {
            t.row(r.cells(&r.id.to_string(), human));
        }
        t.row(self.sent_sum.cells("SUM", human));
        t
    }

    fn peer_side(&self) -> &'static str {
        if self.role == "server" {
            "client"
        } else {
            "server"
        }
    }
}

impl Report for Iperf3UdpReport {
    fn meta(&self) -> &crate::stats::meta::Meta {
        &self.meta
    }

    fn to_table(&self) -> String {
        let mut s = if self.role == "server" {
            format!(
                "netcore UDP test for iperf3 {} client {}",
                self.client_version.as_deref().unwrap_or("?"),
                self.peer
            )
        } else {
            format!("netcore UDP test against iperf3 server {}", self.peer)
        };
        s.push_str(&format!(
            ": {}, {}-byte datagrams, {}-bit counters{}{}\n",
            self.mode,
            self.len,
            if self.counters_64bit { 64 } else { 32 },
            if self.gso { ", sent with GSO" } else { "" },
            if self.interrupted {
                " (INTERRUPTED)"
            } else {
                ""
            }
        ));
        if !self.streams.is_empty() {
            s.push_str(&format!(
                "received by netcore:\n{}",
                self.table(true).render()
            ));
            s.push_str(&format!(
                "(sent: what the {} says it sent; iperf3_packets/iperf3_errors: what iperf3's \
                 own receiver counts{})\n",
                self.peer_side(),
                if self.role == "server" {
                    "; netcore answered packets = sent, errors = lost"
                } else {
                    ""
                }
            ));
        }
        if !self.sent.is_empty() {
            s.push_str(&format!(
                "sent by netcore:\n{}",
                self.sent_table(true).render()
            ));
            s.push_str(&format!(
                "(peer_*: the iperf3 {}'s own receiver figures, as it reported them in the \
                 results exchange: packets = the highest sequence number it saw)\n",
                self.peer_side()
            ));
        }
        s
    }

    fn to_csv(&self) -> String {
        match (self.streams.is_empty(), self.sent.is_empty()) {
            (false, true) | (true, true) => self.table(false).to_csv(),
            (true, false) => self.sent_table(false).to_csv(),
            (false, false) => format!(
                "{}{}",
                self.table(false).to_csv(),
                self.sent_table(false).to_csv()
            ),
        }
    }
}

/// The SUM row of sent `rows` (a peer figure is summed where every row has one).
pub(crate) fn sent_sum_of(rows: &[SentRow]) -> SentRow {
    SentRow {
        id: 0,
        sent: rows.iter().map(|r| r.sent).sum(),
        bytes: rows.iter().map(|r| r.bytes).sum(),
        peer_bytes: rows.iter().map(|r| r.peer_bytes).sum(),
        peer_packets: rows.iter().map(|r| r.peer_packets).sum(),
        peer_lost: rows.iter().map(|r| r.peer_lost).sum(),
        peer_jitter_ms: rows
            .iter()
            .filter_map(|r| r.peer_jitter_ms)
            .reduce(f64::max),
    }
}

/// The SUM row of `rows`.
pub(crate) fn sum_of(rows: &[StreamRow]) -> StreamRow {
    let mut s = StreamRow::default();
    for r in rows {
        s.sent += r.sent;
        s.received += r.received;
        s.bytes += r.bytes;
        s.in_order += r.in_order;
        s.reordered += r.reordered;
        s.max_extent = s.max_extent.max(r.max_extent);
        s.duplicate += r.duplicate;
        s.too_late += r.too_late;
        s.lost += r.lost;
        s.malformed += r.malformed;
        s.jitter_ms = s.jitter_ms.max(r.jitter_ms);
        s.iperf3_packets += r.iperf3_packets;
        s.iperf3_errors += r.iperf3_errors;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Format;

    #[test]
    fn sum_and_renderings() {
        let row = |id, sent, lost| StreamRow {
            id,
            sent,
            received: sent - lost,
            in_order: sent - lost,
            lost,
            jitter_ms: id as f64,
            ..StreamRow::default()
        };
        let rows = vec![row(1, 10, 2), row(3, 5, 0)];
        let sum = sum_of(&rows);
        assert_eq!((sum.sent, sum.lost, sum.in_order), (15, 2, 13));
        assert_eq!(sum.jitter_ms, 3.0);
        let mut r = Iperf3UdpReport {
            schema: SCHEMA.into(),
            meta: Default::default(),
            role: "server".into(),
            peer: "p".into(),
            client_version: Some("3.12".into()),
            len: 1400,
            counters_64bit: false,
            mode: "forward".into(),
            gso: false,
            streams: rows,
            sum,
            sent: Vec::new(),
            sent_sum: SentRow::default(),
            interrupted: false,
        };
        let csv = r.render(Format::Csv);
        assert_eq!(csv.lines().count(), 4, "{csv}");
        assert!(csv.starts_with(COLS));
        let table = r.render(Format::Table);
        assert!(table.contains("SUM") && !table.contains("sent by netcore"));
        let j: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(j["sum"]["lost"], 2);
        // --bidir: the streams netcore sent, with the client's figures where it gave them.
        let sent = |id, peer: Option<i64>| SentRow {
            id,
            sent: 10,
            bytes: 14_000,
            peer_bytes: peer.map(|p| p as u64 * 1400),
            peer_packets: peer,
            peer_lost: peer.map(|p| 10 - p),
            peer_jitter_ms: peer.map(|_| 0.5),
        };
        r.sent = vec![sent(4, Some(9)), sent(5, Some(10))];
        r.sent_sum = sent_sum_of(&r.sent);
        assert_eq!(
            (
                r.sent_sum.sent,
                r.sent_sum.peer_packets,
                r.sent_sum.peer_lost
            ),
            (20, Some(19), Some(1))
        );
        assert!(r.render(Format::Table).contains("sent by netcore"));
        assert_eq!(r.render(Format::Csv).lines().count(), 4 + 4);
        r.sent[1].peer_packets = None;
        assert_eq!(
            sent_sum_of(&r.sent).peer_packets,
            None,
            "unknown, not partial"
        );
    }
}
