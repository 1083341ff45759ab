//! netcore's report of an iperf3 UDP test (pure): per stream, netcore's classes beside the
//! fields iperf3 exchanges.

use serde::Serialize;

use crate::stats::table::Table;
use crate::stats::Report;
use crate::units::{fmt_bytes, fmt_count, fmt_micros};

/// One stream's figures, netcore's classes and the iperf3 fields derived from them.
///
/// iperf3's receiver counts `packets` as the highest sequence number seen and `errors` as the
/// gaps below it minus every datagram arriving below the highest (a duplicate or a late one
/// "fills" a gap it did not fill). netcore answers with exact figures instead: `packets` =
/// what the client says it sent, `errors` = `lost` (sent − distinct sequences received), so
/// the client's "lost/total" line is exact; duplicates and reordering are reported here only.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamRow {
    pub id: i64,
    /// What the client says it sent (its results document).
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

/// netcore's report of an iperf3 UDP test.
#[derive(Debug, Clone, Serialize)]
pub struct Iperf3UdpReport {
    pub schema: String,
    pub peer: String,
    pub client_version: Option<String>,
    pub len: u32,
    pub counters_64bit: bool,
    pub streams: Vec<StreamRow>,
    pub sum: StreamRow,
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
}

impl Report for Iperf3UdpReport {
    fn to_table(&self) -> String {
        format!(
            "netcore UDP test for iperf3 {} client {}: {}-byte datagrams, {}-bit counters{}\n{}\
             (iperf3_packets/iperf3_errors: what iperf3's own server would have answered; \
             netcore answered packets = sent, errors = lost)\n",
            self.client_version.as_deref().unwrap_or("?"),
            self.peer,
            self.len,
            if self.counters_64bit { 64 } else { 32 },
            if self.interrupted {
                " (INTERRUPTED)"
            } else {
                ""
            },
            self.table(true).render()
        )
    }

    fn to_csv(&self) -> String {
        self.table(false).to_csv()
    }
}

/// The SUM row of `rows`.
pub fn sum_of(rows: &[StreamRow]) -> StreamRow {
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
        let r = Iperf3UdpReport {
            schema: "netcore.iperf3.udp.v1".into(),
            peer: "p".into(),
            client_version: Some("3.12".into()),
            len: 1400,
            counters_64bit: false,
            streams: rows,
            sum,
            interrupted: false,
        };
        let csv = r.render(Format::Csv);
        assert_eq!(csv.lines().count(), 4, "{csv}");
        assert!(csv.starts_with(COLS));
        assert!(r.render(Format::Table).contains("SUM"));
        let j: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(j["sum"]["lost"], 2);
    }
}
