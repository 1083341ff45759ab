//! `netcore relay`'s metrics: what came in, what went out, and what the impairments did.
//! The relay's loop hands its running totals to [`RelayMetrics::publish`] a few times a
//! second; only the change since the last call is added, so the counters never go back.

use super::{Counters, Metrics};

/// The relay's running totals (all monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RelayTotals {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub forwarded: u64,
    pub bytes_out: u64,
    /// Dropped by the loss process.
    pub dropped: u64,
    /// Tail-dropped: the rate-limited queue or the pipeline was full.
    pub overflow: u64,
    pub duplicated: u64,
    pub held_back: u64,
    pub send_errors: u64,
    /// The TCP proxy: connections joined to `--to`, refused over the limit, failed to
    /// connect, ended by an error; bytes each way.
    pub tcp_connections: u64,
    pub tcp_refused: u64,
    pub tcp_connect_failed: u64,
    pub tcp_errors: u64,
    pub tcp_bytes_to_server: u64,
    pub tcp_bytes_to_client: u64,
}

/// The relay's counter families, registered in a [`Metrics`] (clones share the counters).
#[derive(Debug, Clone)]
pub(crate) struct RelayMetrics {
    datagrams: Counters,
    bytes: Counters,
    impaired: Counters,
    send_errors: Counters,
    tcp_connections: Counters,
    tcp_bytes: Counters,
    published: RelayTotals,
}

impl RelayMetrics {
    /// Registers the relay's families with every series at zero, so a scrape before the
    /// first datagram (or the loop's first publication) has them all.
    pub(crate) fn register(m: &mut Metrics) -> RelayMetrics {
        let mut r = RelayMetrics {
            datagrams: m.counters(
                "relay_datagrams",
                "Datagrams the relay received (direction=in) and sent on (direction=out)",
            ),
            bytes: m.counters("relay_bytes", "Bytes the relay received and sent on"),
            impaired: m.counters(
                "relay_impaired_datagrams",
                "Datagrams the impairments acted on: dropped (loss), overflow (queue full), duplicated, held_back (reordered)",
            ),
            send_errors: m.counters("relay_send_errors", "Send errors on the way out"),
            tcp_connections: m.counters(
                "relay_tcp_connections",
                "TCP connections the proxy took: proxied (joined to --to), refused (over the limit), connect_failed, error (ended by a reset or other error)",
            ),
            tcp_bytes: m.counters(
                "relay_tcp_bytes",
                "Bytes the TCP proxy copied: direction=to_server (to --to), to_client (back)",
            ),
            published: RelayTotals::default(),
        };
        r.publish(RelayTotals::default());
        r
    }

    /// Adds what changed since the last call.
    pub(crate) fn publish(&mut self, now: RelayTotals) {
        let p = self.published;
        let d = |a: u64, b: u64| a.saturating_sub(b);
        self.datagrams
            .add(&[("direction", "in")], d(now.datagrams_in, p.datagrams_in));
        self.datagrams
            .add(&[("direction", "out")], d(now.forwarded, p.forwarded));
        self.bytes
            .add(&[("direction", "in")], d(now.bytes_in, p.bytes_in));
        self.bytes
            .add(&[("direction", "out")], d(now.bytes_out, p.bytes_out));
        for (action, a, b) in [
            ("dropped", now.dropped, p.dropped),
            ("overflow", now.overflow, p.overflow),
            ("duplicated", now.duplicated, p.duplicated),
            ("held_back", now.held_back, p.held_back),
        ] {
            self.impaired.add(&[("action", action)], d(a, b));
        }
        self.send_errors.add(&[], d(now.send_errors, p.send_errors));
        for (outcome, a, b) in [
            ("proxied", now.tcp_connections, p.tcp_connections),
            ("refused", now.tcp_refused, p.tcp_refused),
            (
                "connect_failed",
                now.tcp_connect_failed,
                p.tcp_connect_failed,
            ),
            ("error", now.tcp_errors, p.tcp_errors),
        ] {
            self.tcp_connections.add(&[("outcome", outcome)], d(a, b));
        }
        for (direction, a, b) in [
            ("to_server", now.tcp_bytes_to_server, p.tcp_bytes_to_server),
            ("to_client", now.tcp_bytes_to_client, p.tcp_bytes_to_client),
        ] {
            self.tcp_bytes.add(&[("direction", direction)], d(a, b));
        }
        self.published = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_there_at_zero_before_any_traffic() {
        let mut m = Metrics::new();
        let _r = RelayMetrics::register(&mut m);
        let text = m.render();
        for line in [
            "netcore_relay_datagrams_total{direction=\"in\"} 0",
            "netcore_relay_datagrams_total{direction=\"out\"} 0",
            "netcore_relay_bytes_total{direction=\"in\"} 0",
            "netcore_relay_impaired_datagrams_total{action=\"held_back\"} 0",
            "netcore_relay_send_errors_total 0",
            "netcore_relay_tcp_connections_total{outcome=\"connect_failed\"} 0",
            "netcore_relay_tcp_bytes_total{direction=\"to_client\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn publishes_deltas_once() {
        let mut m = Metrics::new();
        let mut r = RelayMetrics::register(&mut m);
        let mut t = RelayTotals {
            datagrams_in: 10,
            forwarded: 8,
            dropped: 2,
            ..RelayTotals::default()
        };
        r.publish(t);
        r.publish(t);
        t.datagrams_in = 15;
        r.publish(t);
        let text = m.render();
        assert!(
            text.contains("netcore_relay_datagrams_total{direction=\"in\"} 15"),
            "{text}"
        );
        assert!(
            text.contains("netcore_relay_datagrams_total{direction=\"out\"} 8"),
            "{text}"
        );
        assert!(
            text.contains("netcore_relay_impaired_datagrams_total{action=\"dropped\"} 2"),
            "{text}"
        );
    }
}
