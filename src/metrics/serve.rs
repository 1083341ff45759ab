//! `netcore serve`'s metrics: read at scrape time from the server's own counters
//! ([`crate::proto::Counters`], in memory shared across `fork`), so serving them costs the
//! request path nothing and every model, `fork` included, exposes the same totals it prints.
//! The request-latency histogram is kept beside them in fixed buckets
//! ([`crate::proto::counters::LATENCY_BOUNDS_NS`], timed by [`crate::server::timing`]),
//! exposed as they are (cumulative `le` buckets in seconds).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::{Labels, Metrics};
use crate::proto::counters::LATENCY_BOUNDS_NS;
use crate::proto::Counters;

/// The server's families over its counters.
#[derive(Debug)]
struct ServeCollector {
    counters: Counters,
    model: &'static str,
    proto: &'static str,
}

impl ServeCollector {
    fn labels(&self) -> Labels {
        vec![("model", self.model.into()), ("proto", self.proto.into())]
    }

    fn counter(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        series: &[(Labels, u64)],
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (l, v) in series {
            ConstCounter::new(*v).encode(family.encode_family(l)?)?;
        }
        Ok(())
    }
}

impl Collector for ServeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.counters.snapshot();
        let base = self.labels();
        let with = |k: &'static str, v: &str| {
            let mut l = base.clone();
            l.push((k, v.to_string()));
            l
        };
        self.counter(
            &mut encoder,
            "serve_requests",
            "Requests answered (failed ones included)",
            &[(base.clone(), t.requests)],
        )?;
        let by_kind: Vec<(Labels, u64)> = self
            .counters
            .errors_by_kind()
            .iter()
            .map(|(k, n)| (with("kind", k.name()), *n))
            .collect();
        self.counter(
            &mut encoder,
            "serve_errors",
            "Failed requests by kind: bad_request, not_found, too_large, timeout",
            &by_kind,
        )?;
        self.counter(
            &mut encoder,
            "serve_connections",
            "Connections accepted",
            &[(base.clone(), t.connections)],
        )?;
        self.counter(
            &mut encoder,
            "serve_bytes",
            "Bytes read from (direction=in) and written to (direction=out) clients",
            &[
                (with("direction", "in"), t.bytes_in),
                (with("direction", "out"), t.bytes_out),
            ],
        )?;
        let mut g = encoder.encode_descriptor(
            "serve_connections_open",
            "Connections open now",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(t.active as i64).encode(g.encode_family(&base)?)?;
        if self.counters.times_requests() {
            let l = self.counters.latency();
            let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_NS
                .iter()
                .map(|&b| b as f64 / 1e9)
                .chain([f64::INFINITY])
                .zip(l.buckets)
                .collect();
            let mut h = encoder.encode_descriptor(
                "serve_request_latency",
                "Time from the read that completed a request to the hand-off of its answer to the socket",
                Some(&Unit::Seconds),
                prometheus_client::metrics::MetricType::Histogram,
            )?;
            h.encode_family(&base)?.encode_histogram::<Labels>(
                l.sum_ns as f64 / 1e9,
                l.count(),
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

/// Registers the server's families over `counters` in `m`.
pub(crate) fn register(
    m: &mut Metrics,
    counters: Counters,
    model: &'static str,
    proto: &'static str,
) {
    m.registry.register_collector(Box::new(ServeCollector {
        counters,
        model,
        proto,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_servers_counters_at_scrape_time() {
        let c = Counters::local().timing_requests();
        let mut m = Metrics::new();
        register(&mut m, c, "epoll", "http");
        c.conn_opened();
        let text = m.render();
        for line in [
            "netcore_serve_connections_total{model=\"epoll\",proto=\"http\"} 1",
            "netcore_serve_connections_open{model=\"epoll\",proto=\"http\"} 1",
            "netcore_serve_requests_total{model=\"epoll\",proto=\"http\"} 0",
            "netcore_serve_errors_total{model=\"epoll\",proto=\"http\",kind=\"timeout\"} 0",
            "netcore_serve_bytes_total{model=\"epoll\",proto=\"http\",direction=\"in\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        c.conn_closed();
        assert!(m
            .render()
            .contains("netcore_serve_connections_open{model=\"epoll\",proto=\"http\"} 0"));
        c.request_latency(2, 20_000);
        c.request_latency(1, 3_000_000);
        let text = m.render();
        for line in [
            "# TYPE netcore_serve_request_latency_seconds histogram",
            "netcore_serve_request_latency_seconds_count{model=\"epoll\",proto=\"http\"} 3",
            // Cumulative: 20 µs is under 25 µs, 3 ms under 5 ms.
            "netcore_serve_request_latency_seconds_bucket{le=\"0.00001\",model=\"epoll\",proto=\"http\"} 0",
            "netcore_serve_request_latency_seconds_bucket{le=\"0.000025\",model=\"epoll\",proto=\"http\"} 2",
            "netcore_serve_request_latency_seconds_bucket{le=\"0.0025\",model=\"epoll\",proto=\"http\"} 2",
            "netcore_serve_request_latency_seconds_bucket{le=\"0.005\",model=\"epoll\",proto=\"http\"} 3",
            "netcore_serve_request_latency_seconds_bucket{le=\"+Inf\",model=\"epoll\",proto=\"http\"} 3",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let sum: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "netcore_serve_request_latency_seconds_sum{model=\"epoll\",proto=\"http\"} ",
                )
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sum in {text}"));
        assert!((sum - 0.00304).abs() < 1e-12, "{sum}");
        // Counters that do not time requests expose no histogram.
        let mut m = Metrics::new();
        register(&mut m, Counters::local(), "fork", "task");
        assert!(!m.render().contains("request_latency"));
    }
}
