//! `netcore recv`'s metrics, fed from the receiver's events on the caller's thread.
//!
//! Live during a test, `interval` publishes the datagrams and bytes received so far (both
//! only grow within a test); at the end, `udp_finished` (or the TCP / iperf3 ends) adds what
//! the report has beyond what was published, so that once a test has ended every counter
//! equals the sum of the reports exactly. Loss, reordering, duplicates, too-late and invalid
//! datagrams are final only at the end of a test (a gap may still fill), so they are
//! published then. Tests are keyed by their id: events of tests running at once do not mix.
//!
//! Labels: `kind` (udp, tcp, iperf3), `peer` (bounded by [`super::Peers`]), `outcome` (ok,
//! interrupted) and `reason` (the receiver's fixed list of invalid reasons).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{Counters, Gauges, HdrFamily, Metrics};
use crate::flow::iperf3::report::Iperf3UdpReport;
use crate::flow::streams::Dir;
use crate::flow::tcp_engine::report::TcpReport;
use crate::flow::udp::report::UdpReport;
use crate::stats::hist::Hist;

/// Tests whose end has not been seen, at most; a stale one is dropped first (a receiver
/// serving for months must not grow with tests that vanished without an end).
const MAX_OPEN: usize = 256;

/// What was published of one running test.
#[derive(Debug, Clone)]
struct Open {
    peer: String,
    len: u64,
    datagrams: u64,
    bytes: u64,
    seq: u64,
}

/// The receiver's families, registered in a [`Metrics`].
#[derive(Debug)]
pub struct RecvMetrics {
    m: Arc<Metrics>,
    tests: Counters,
    errors: Counters,
    running: Gauges,
    datagrams: Counters,
    bytes: Counters,
    sent: Counters,
    lost: Counters,
    reordered: Counters,
    duplicate: Counters,
    too_late: Counters,
    invalid: Counters,
    latency: Arc<HdrFamily>,
    jitter: Arc<HdrFamily>,
    open: HashMap<u64, Open>,
    seq: u64,
}

impl RecvMetrics {
    /// Registers the families in `m` (before it is shared with the endpoint).
    #[allow(clippy::type_complexity)]
    fn register(
        m: &mut Metrics,
    ) -> (
        Counters,
        Counters,
        Gauges,
        [Counters; 8],
        [Arc<HdrFamily>; 2],
    ) {
        let tests = m.counters(
            "recv_tests",
            "Tests the receiver ended with a report, by kind (udp, tcp, iperf3) and outcome (ok, interrupted)",
        );
        let errors = m.counters(
            "recv_errors",
            "Tests refused or failed (each one line on the receiver's stderr)",
        );
        let running = m.gauges("recv_tests_running", "Tests running now");
        let c = [
            m.counters(
                "recv_datagrams",
                "Distinct datagrams received (UDP; live during a test)",
            ),
            m.counters(
                "recv_bytes",
                "Bytes received: UDP payload of the distinct datagrams, TCP bytes read",
            ),
            m.counters(
                "recv_sent_datagrams",
                "Datagrams the senders said they sent (at each test's end)",
            ),
            m.counters("recv_lost_datagrams", "Datagrams lost (at each test's end)"),
            m.counters(
                "recv_reordered_datagrams",
                "Datagrams that arrived after a later one (at each test's end)",
            ),
            m.counters(
                "recv_duplicate_datagrams",
                "Datagrams received again (at each test's end)",
            ),
            m.counters(
                "recv_too_late_datagrams",
                "Datagrams older than the tracking window (counted lost; at each test's end)",
            ),
            m.counters(
                "recv_invalid_datagrams",
                "Datagrams refused, by reason (at each test's end)",
            ),
        ];
        let latency = m.latency(
            "recv_one_way_latency",
            "One-way latency of the received datagrams (send timestamp to arrival)",
        );
        // 1 µs to 10 s, three buckets a decade.
        let bounds = (-6..=1)
            .flat_map(|e| [1.0, 2.5, 5.0].map(|m| m * 10f64.powi(e)))
            .collect();
        let jitter = m.histogram(
            "recv_jitter",
            "RFC 3550 jitter of each stream at its test's end (one sample per stream)",
            prometheus_client::registry::Unit::Seconds,
            1e9,
            bounds,
        );
        (tests, errors, running, c, [latency, jitter])
    }

    /// The receiver's metrics over a fresh registry (`m` is what the endpoint serves). The
    /// series without a peer label start at zero for every kind and outcome (the running
    /// gauge is kept for UDP tests only), so a scrape before the first test already has them.
    pub fn new() -> RecvMetrics {
        let mut m = Metrics::new();
        let (tests, errors, running, c, [latency, jitter]) = Self::register(&mut m);
        for kind in ["udp", "tcp", "iperf3"] {
            for outcome in ["ok", "interrupted"] {
                tests.add(&[("kind", kind), ("outcome", outcome)], 0);
            }
        }
        running.add(&[("kind", "udp")], 0);
        errors.add(&[], 0);
        let [datagrams, bytes, sent, lost, reordered, duplicate, too_late, invalid] = c;
        RecvMetrics {
            m: Arc::new(m),
            tests,
            errors,
            running,
            datagrams,
            bytes,
            sent,
            lost,
            reordered,
            duplicate,
            too_late,
            invalid,
            latency,
            jitter,
            open: HashMap::new(),
            seq: 0,
        }
    }

    /// The registry to serve.
    pub fn registry(&self) -> Arc<Metrics> {
        self.m.clone()
    }

    fn peer_label(&self, ip: Option<IpAddr>) -> String {
        ip.map_or_else(|| "unknown".to_string(), |ip| self.m.peer(ip))
    }

    /// A netcore UDP test began: `len`-byte datagrams from `peer`.
    pub(crate) fn udp_started(&mut self, test_id: u64, peer: SocketAddr, len: u32) {
        if self.open.len() >= MAX_OPEN {
            if let Some(old) = self.open.iter().min_by_key(|(_, o)| o.seq).map(|(k, _)| *k) {
                self.open.remove(&old);
                self.running.add(&[("kind", "udp")], -1);
            }
        }
        self.seq += 1;
        let o = Open {
            peer: self.peer_label(Some(peer.ip())),
            len: u64::from(len),
            datagrams: 0,
            bytes: 0,
            seq: self.seq,
        };
        if self.open.insert(test_id, o).is_none() {
            self.running.add(&[("kind", "udp")], 1);
        }
    }

    /// Progress of UDP test `test_id`: `received` distinct datagrams so far (cumulative).
    /// A test not started here (a reverse one, sent from here) or already ended is ignored.
    pub(crate) fn udp_interval(&mut self, test_id: u64, received: u64) {
        let Some(o) = self.open.get_mut(&test_id) else {
            return;
        };
        // netcore's datagrams of a test all have the announced length, so the bytes of
        // `received` distinct datagrams are received × len (never more than the report's).
        let (d, b) = (received, received.saturating_mul(o.len));
        let l = [("kind", "udp"), ("peer", o.peer.as_str())];
        self.datagrams.add(&l, d.saturating_sub(o.datagrams));
        self.bytes.add(&l, b.saturating_sub(o.bytes));
        o.datagrams = o.datagrams.max(d);
        o.bytes = o.bytes.max(b);
    }

    /// A netcore UDP test ended with this report (the receiving side's).
    pub(crate) fn udp_finished(&mut self, r: &UdpReport, latency: Option<&Hist>) {
        let id = u64::from_str_radix(&r.test_id, 16).ok();
        let open = id.and_then(|id| self.open.remove(&id));
        if open.is_some() {
            self.running.add(&[("kind", "udp")], -1);
        }
        let outcome = if r.receiver.interrupted {
            "interrupted"
        } else {
            "ok"
        };
        self.tests.add(&[("kind", "udp"), ("outcome", outcome)], 1);
        if r.role != "receiver" {
            // A reverse test: this side sent; nothing was received here.
            return;
        }
        let (peer, published_d, published_b) = match &open {
            Some(o) => (o.peer.clone(), o.datagrams, o.bytes),
            None => (self.peer_label(None), 0, 0),
        };
        let s = &r.receiver;
        let a = &s.accounting;
        let l = [("kind", "udp"), ("peer", peer.as_str())];
        self.datagrams.add(&l, a.unique.saturating_sub(published_d));
        self.bytes.add(&l, s.bytes.saturating_sub(published_b));
        self.sent.add(&l, a.sent);
        self.lost.add(&l, a.lost);
        self.reordered.add(&l, a.reordered);
        self.duplicate.add(&l, a.duplicate);
        self.too_late.add(&l, a.too_late);
        for (reason, n) in &s.invalid {
            self.invalid.add(
                &[("kind", "udp"), ("peer", peer.as_str()), ("reason", reason)],
                *n,
            );
        }
        if let Some(h) = latency {
            self.latency.merge(&l, h);
        }
        let mut j = Hist::new();
        if s.streams.is_empty() {
            j.record((s.jitter_us * 1e3) as u64);
        }
        for st in &s.streams {
            j.record((st.jitter_us * 1e3) as u64);
        }
        self.jitter.merge(&l, &j);
    }

    /// A TCP test ended (netcore's or an iperf3 client's): bytes this side read.
    pub(crate) fn tcp_finished(&mut self, kind: &'static str, peer: Option<IpAddr>, r: &TcpReport) {
        let outcome = if r.interrupted { "interrupted" } else { "ok" };
        self.tests.add(&[("kind", kind), ("outcome", outcome)], 1);
        let peer = self.peer_label(peer);
        let read: u64 = r
            .streams
            .iter()
            .filter(|s| s.dir == Dir::Up)
            .map(|s| s.read)
            .sum();
        self.bytes
            .add(&[("kind", kind), ("peer", peer.as_str())], read);
    }

    /// An iperf3 client's UDP test ended.
    pub(crate) fn iperf3_udp_finished(&mut self, r: &Iperf3UdpReport) {
        let outcome = if r.interrupted { "interrupted" } else { "ok" };
        self.tests
            .add(&[("kind", "iperf3"), ("outcome", outcome)], 1);
        let ip = r
            .peer
            .parse::<SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| r.peer.parse::<IpAddr>())
            .ok();
        let peer = self.peer_label(ip);
        let l = [("kind", "iperf3"), ("peer", peer.as_str())];
        let s = &r.sum;
        self.datagrams.add(&l, s.in_order + s.reordered);
        self.bytes.add(&l, s.bytes);
        self.sent.add(&l, s.sent);
        self.lost.add(&l, s.lost);
        self.reordered.add(&l, s.reordered);
        self.duplicate.add(&l, s.duplicate);
        self.too_late.add(&l, s.too_late);
        self.invalid.add(
            &[
                ("kind", "iperf3"),
                ("peer", peer.as_str()),
                ("reason", "malformed"),
            ],
            s.malformed,
        );
        let mut j = Hist::new();
        for st in &r.streams {
            j.record((st.jitter_ms * 1e6) as u64);
        }
        self.jitter.merge(&l, &j);
    }

    /// A test refused, or one that failed (the receiver's one line on stderr).
    pub fn failed(&mut self) {
        self.errors.add(&[], 1);
    }

    /// The counter values (for tests): `family{labels}`.
    pub fn render(&self) -> String {
        self.m.render()
    }
}

impl Default for RecvMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tracker::Accounting;

    fn report(test_id: u64, unique: u64, lost: u64, bytes: u64) -> UdpReport {
        let receiver: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fuzz_receiver_stats.json")).unwrap();
        let mut r: UdpReport = serde_json::from_value(serde_json::json!({
            "schema": "netcore.udp.v4", "role": "receiver", "test_id": "", "len": 100,
            "verify": false, "target": "127.0.0.1:5300",
            "sender": crate::flow::udp::report::SenderStats::default(), "receiver": receiver,
            "intervals": []
        }))
        .unwrap();
        r.test_id = format!("{test_id:016x}");
        r.receiver.accounting = Accounting {
            sent: unique + lost,
            unique,
            lost,
            in_order: unique,
            reordered: 0,
            duplicate: 0,
            too_late: 0,
            max_extent: 0,
        };
        r.receiver.bytes = bytes;
        r
    }

    fn value(text: &str, key: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn live_figures_are_reconciled_with_the_report() {
        let mut m = RecvMetrics::new();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        m.udp_started(1, peer, 100);
        m.udp_interval(1, 10);
        m.udp_interval(1, 30);
        let key = "netcore_recv_datagrams_total{kind=\"udp\",peer=\"127.0.0.1\"}";
        assert_eq!(value(&m.render(), key), 30);
        m.udp_finished(&report(1, 42, 8, 4200), None);
        let t = m.render();
        assert_eq!(value(&t, key), 42);
        assert_eq!(
            value(
                &t,
                "netcore_recv_bytes_total{kind=\"udp\",peer=\"127.0.0.1\"}"
            ),
            4200
        );
        assert_eq!(
            value(
                &t,
                "netcore_recv_lost_datagrams_total{kind=\"udp\",peer=\"127.0.0.1\"}"
            ),
            8
        );
        assert_eq!(
            value(&t, "netcore_recv_tests_total{kind=\"udp\",outcome=\"ok\"}"),
            1
        );
        assert_eq!(value(&t, "netcore_recv_tests_running{kind=\"udp\"}"), 0);
        // An interval after the end (or of no test) changes nothing.
        m.udp_interval(1, 1000);
        m.udp_interval(7, 1000);
        assert_eq!(value(&m.render(), key), 42);
    }

    #[test]
    fn tests_at_once_do_not_mix_and_open_tests_are_bounded() {
        let mut m = RecvMetrics::new();
        let a: SocketAddr = "10.0.0.1:9".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:9".parse().unwrap();
        m.udp_started(1, a, 10);
        m.udp_started(2, b, 10);
        // Live: each test's intervals go to its own peer's series, whichever started last.
        m.udp_interval(1, 5);
        m.udp_interval(2, 7);
        m.udp_interval(1, 6);
        let t = m.render();
        let d = |t: &str, ip: &str| {
            value(
                t,
                &format!("netcore_recv_datagrams_total{{kind=\"udp\",peer=\"{ip}\"}}"),
            )
        };
        assert_eq!((d(&t, "10.0.0.1"), d(&t, "10.0.0.2")), (6, 7));
        m.udp_finished(&report(1, 6, 0, 60), None);
        m.udp_finished(&report(2, 9, 1, 90), None);
        let t = m.render();
        assert_eq!((d(&t, "10.0.0.1"), d(&t, "10.0.0.2")), (6, 9));
        for i in 0..(MAX_OPEN as u64 + 20) {
            m.udp_started(100 + i, a, 10);
        }
        assert_eq!(m.open.len(), MAX_OPEN);
        assert_eq!(
            value(&m.render(), "netcore_recv_tests_running{kind=\"udp\"}"),
            MAX_OPEN as u64
        );
    }
}
