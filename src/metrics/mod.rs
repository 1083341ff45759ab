//! OpenMetrics for Prometheus: a registry of netcore's counters and histograms (pure: drivers
//! publish into it, it imports no driver) and [`endpoint`], the HTTP listener that serves it on
//! our own reactor.
//!
//! The exposition format is `prometheus-client`'s (the Prometheus project's Rust client: its
//! text encoder writes `application/openmetrics-text; version=1.0.0` with `_total` counters,
//! cumulative `le` buckets and `# EOF`). Latency stays in HDR histograms where it is measured
//! ([`crate::stats::hist::Hist`]); at scrape time an [`HdrFamily`] maps each one onto fixed
//! cumulative buckets, so a driver's hot path never pays for Prometheus.
//!
//! Cardinality is bounded: label values are enums of a few names, and peers go through
//! [`Peers`], which keeps the first [`MAX_PEERS`] addresses and calls every later one `other`.
//!
//! A family's series come out in label order at every scrape (a [`Family`] keeps them in a
//! `BTreeMap`), as Prometheus' own exporters write them: prometheus-client's `Family` keeps a
//! `HashMap`, whose order differed from one process to the next and changed as series were
//! added. `serve`'s collector writes its series in a fixed order, sorted too.

pub mod endpoint;
pub mod recv;
pub mod relay;
pub mod serve;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::stats::hist::Hist;

/// The content type of the exposition.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic Prometheus text format (for clients that do not ask for
/// OpenMetrics: curl, `promtool check metrics`).
pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition: a counter's
/// `HELP`/`TYPE` name the `_total` series (as that format's parsers, promtool's among them,
/// group samples by exact name), `UNIT` and `# EOF` are left out; samples are unchanged.
pub(crate) fn to_text_format(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{p}{name}{total} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
/// Distinct peer addresses labelled by name; later ones are `other`.
pub(crate) const MAX_PEERS: usize = 64;

/// A label set: a few `(name, value)` pairs.
pub(crate) type Labels = Vec<(&'static str, String)>;

fn labels(l: &[(&'static str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// What a [`Family`] keeps per label set, and how it writes one series at a scrape.
pub(crate) trait Kind: Debug + Send + Sync + 'static {
    /// One series' state.
    type Value: Default + Debug + Send;
    const TYPE: MetricType;
    fn encode(&self, v: &Self::Value, e: MetricEncoder) -> Result<(), std::fmt::Error>;
}

/// Series of one of prometheus-client's metrics (a counter, a gauge), written as it writes them.
#[derive(Debug)]
pub(crate) struct Plain<M>(PhantomData<fn() -> M>);

impl<M: EncodeMetric + TypedMetric + Default + Debug + Send + 'static> Kind for Plain<M> {
    type Value = M;
    const TYPE: MetricType = M::TYPE;
    fn encode(&self, v: &M, e: MetricEncoder) -> Result<(), std::fmt::Error> {
        v.encode(e)
    }
}

/// HDR histograms of integer samples (nanoseconds, say), exposed in units (`scale` samples per
/// unit) over fixed cumulative bucket bounds.
#[derive(Debug)]
pub(crate) struct Buckets {
    scale: f64,
    bounds: Vec<f64>,
}

impl Kind for Buckets {
    type Value = Hist;
    const TYPE: MetricType = MetricType::Histogram;
    fn encode(&self, h: &Hist, mut e: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.of(h);
        e.encode_histogram::<Labels>(sum, count, &buckets, None)
    }
}

impl Buckets {
    /// `(sum, count, per-bucket counts)` of a series, in units, the last bucket `+Inf`.
    fn of(&self, h: &Hist) -> (f64, u64, Vec<(f64, u64)>) {
        let mut out = Vec::with_capacity(self.bounds.len() + 1);
        let mut below = 0;
        for &b in &self.bounds {
            let le = h.count_le((b * self.scale) as u64);
            out.push((b, le - below));
            below = le;
        }
        out.push((f64::INFINITY, h.len() - below));
        (h.sum() / self.scale, h.len(), out)
    }
}

/// A family's series by label set, in label order: every scrape writes them sorted.
#[derive(Debug)]
pub(crate) struct Family<K: Kind> {
    kind: K,
    series: Mutex<BTreeMap<Labels, K::Value>>,
}

impl<K: Kind> Family<K> {
    /// Runs `f` on the series `l` (made at its default if new: the series then exists, so a
    /// query over it finds 0, not nothing).
    fn with<R>(&self, l: &[(&'static str, &str)], f: impl FnOnce(&mut K::Value) -> R) -> R {
        let mut m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(labels(l)).or_default())
    }
}

/// The registered form of a [`Family`]: a collector encoded at each scrape.
#[derive(Debug)]
struct Registered<K: Kind> {
    name: String,
    help: String,
    unit: Option<Unit>,
    family: Arc<Family<K>>,
}

impl<K: Kind> Collector for Registered<K> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The descriptor even with no series yet: a scrape before the first sample shows the
        // family.
        let m = self.family.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut metric =
            encoder.encode_descriptor(&self.name, &self.help, self.unit.as_ref(), K::TYPE)?;
        for (l, v) in m.iter() {
            self.family.kind.encode(v, metric.encode_family(l)?)?;
        }
        Ok(())
    }
}

/// A family of counters (`NAME_total{labels}`).
#[derive(Clone, Debug)]
pub struct Counters(Arc<Family<Plain<Counter>>>);

impl Counters {
    /// Adds `n` (0 too: the series then exists, so a query over it finds 0, not nothing).
    pub fn add(&self, l: &[(&'static str, &str)], n: u64) {
        self.0.with(l, |c| c.inc_by(n));
    }

    /// The current value (for tests and reports).
    pub fn get(&self, l: &[(&'static str, &str)]) -> u64 {
        self.0.with(l, |c| c.get())
    }
}

/// A family of gauges.
#[derive(Clone, Debug)]
pub(crate) struct Gauges(Arc<Family<Plain<Gauge>>>);

impl Gauges {
    pub fn set(&self, l: &[(&'static str, &str)], v: i64) {
        self.0.with(l, |g| g.set(v));
    }

    pub fn add(&self, l: &[(&'static str, &str)], v: i64) {
        self.0.with(l, |g| g.inc_by(v));
    }
}

/// A family of histograms kept as HDR histograms (see [`Buckets`]).
pub(crate) type HdrFamily = Family<Buckets>;

impl HdrFamily {
    /// Adds every sample of `h` to the series `l`.
    pub(crate) fn merge(&self, l: &[(&'static str, &str)], h: &Hist) {
        if !h.is_empty() {
            self.with(l, |s| s.add(h));
        }
    }
}

/// A command's metrics: the registry (prefix `netcore_`) and the families registered in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    peers: Peers,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with `netcore_build_info{version, revision} 1` in it from the start (a
    /// scrape before any test has a series, and says which build answers).
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("netcore"),
            peers: Peers::default(),
        };
        let info = m.gauges(
            "build_info",
            "The netcore build answering: its version and git revision (always 1)",
        );
        info.set(
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", crate::stats::meta::GIT_REVISION),
            ],
            1,
        );
        m
    }

    /// Registers a family `netcore_NAME[_UNIT]` of `kind`, its HELP `help` and a full stop.
    fn family<K: Kind>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        kind: K,
    ) -> Arc<Family<K>> {
        let family = Arc::new(Family {
            kind,
            series: Mutex::new(BTreeMap::new()),
        });
        self.registry.register_collector(Box::new(Registered {
            name: name.to_string(),
            help: format!("{help}."),
            unit,
            family: family.clone(),
        }));
        family
    }

    /// Registers a counter family `netcore_NAME_total`.
    pub fn counters(&mut self, name: &str, help: &str) -> Counters {
        Counters(self.family(name, help, None, Plain(PhantomData)))
    }

    /// Registers a gauge family `netcore_NAME`.
    pub(crate) fn gauges(&mut self, name: &str, help: &str) -> Gauges {
        Gauges(self.family(name, help, None, Plain(PhantomData)))
    }

    /// Registers a histogram family `netcore_NAME_seconds` over HDR samples in nanoseconds.
    pub(crate) fn latency(&mut self, name: &str, help: &str) -> Arc<HdrFamily> {
        // 10 µs to 10 s, three buckets a decade.
        let bounds = (-5..=1)
            .flat_map(|e| [1.0, 2.5, 5.0].map(|m| m * 10f64.powi(e)))
            .collect();
        self.histogram(name, help, Unit::Seconds, 1e9, bounds)
    }

    /// Registers a histogram family with the given unit, samples per unit and bucket bounds.
    pub(crate) fn histogram(
        &mut self,
        name: &str,
        help: &str,
        unit: Unit,
        scale: f64,
        bounds: Vec<f64>,
    ) -> Arc<HdrFamily> {
        self.family(name, help, Some(unit), Buckets { scale, bounds })
    }

    /// The bounded label for a peer address.
    pub fn peer(&self, ip: IpAddr) -> String {
        self.peers.label(ip)
    }

    /// The classic Prometheus text format of [`Metrics::render`].
    pub(crate) fn render_text(&self) -> String {
        to_text_format(&self.render())
    }

    /// The whole exposition, `# EOF` last: every family registered, with its HELP and TYPE
    /// even before its first series, its series in label order.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// Peer addresses as label values, at most [`MAX_PEERS`] distinct ones.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    seen: Mutex<HashSet<IpAddr>>,
}

impl Peers {
    pub fn label(&self, ip: IpAddr) -> String {
        let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if s.contains(&ip) || (s.len() < MAX_PEERS && s.insert(ip)) {
            ip.to_string()
        } else {
            "other".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_openmetrics() {
        let mut m = Metrics::new();
        let c = m.counters("datagrams_received", "Datagrams received");
        let lat = m.latency("one_way_latency", "One-way latency");
        c.add(&[("kind", "udp"), ("peer", "127.0.0.1")], 5);
        c.add(&[("kind", "udp"), ("peer", "127.0.0.1")], 7);
        let mut h = Hist::new();
        for us in [5u64, 20, 20, 3_000, 2_000_000] {
            h.record(us * 1000);
        }
        lat.merge(&[("kind", "udp")], &h);
        let text = m.render();
        assert!(
            text.contains("# TYPE netcore_datagrams_received counter"),
            "{text}"
        );
        assert!(
            text.contains("netcore_datagrams_received_total{kind=\"udp\",peer=\"127.0.0.1\"} 12"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE netcore_one_way_latency_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("netcore_one_way_latency_seconds_count{kind=\"udp\"} 5"),
            "{text}"
        );
        // Cumulative: 5 µs is under the first bound (10 µs); 20 µs under 25 µs; all under +Inf.
        for (le, n) in [("0.00001", 1), ("0.000025", 3), ("0.005", 4), ("+Inf", 5)] {
            let line =
                format!("netcore_one_way_latency_seconds_bucket{{le=\"{le}\",kind=\"udp\"}} {n}\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// Every kind of family writes its series in label order, added in any order (a
    /// `HashMap` wrote them in an order of its own), the same at every scrape; a family with
    /// no series yet has its HELP and TYPE.
    #[test]
    fn series_come_out_in_label_order() {
        let mut m = Metrics::new();
        let c = m.counters("c", "C");
        let g = m.gauges("g", "G");
        let lat = m.latency("l", "L");
        let _none = m.counters("none", "None yet");
        let mut h = Hist::new();
        h.record(1000);
        let mut peers: Vec<String> = (0..40).map(|i| format!("p{:02}", i * 17 % 40)).collect();
        for p in &peers {
            c.add(&[("kind", "udp"), ("peer", p)], 1);
            g.set(&[("peer", p)], 1);
            lat.merge(&[("peer", p)], &h);
        }
        let text = m.render();
        let written = |series: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(series)?.split('"').nth(1))
                .map(str::to_string)
                .collect()
        };
        peers.sort();
        assert_eq!(
            written("netcore_c_total{kind=\"udp\",peer="),
            peers,
            "{text}"
        );
        assert_eq!(written("netcore_g{peer="), peers, "{text}");
        assert_eq!(written("netcore_l_seconds_count{peer="), peers, "{text}");
        assert_eq!(m.render(), text);
        for line in [
            "# HELP netcore_none None yet.\n",
            "# TYPE netcore_none counter\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_text_format_names_counters_by_their_series() {
        let mut m = Metrics::new();
        let c = m.counters("requests", "Requests");
        let lat = m.latency("wait", "Wait");
        c.add(&[("kind", "x")], 3);
        let mut h = Hist::new();
        h.record(1000);
        lat.merge(&[], &h);
        let t = m.render_text();
        assert!(
            t.contains("# HELP netcore_requests_total Requests.\n"),
            "{t}"
        );
        assert!(t.contains("# TYPE netcore_requests_total counter\n"), "{t}");
        assert!(t.contains("netcore_requests_total{kind=\"x\"} 3\n"), "{t}");
        assert!(t.contains("# TYPE netcore_wait_seconds histogram\n"), "{t}");
        assert!(!t.contains("# EOF") && !t.contains("# UNIT"), "{t}");
    }

    #[test]
    fn buckets_add_up_and_peers_are_bounded() {
        let mut m = Metrics::new();
        let lat = m.latency("x", "x");
        let mut h = Hist::new();
        for v in 0..1000u64 {
            h.record(v * 37_000);
        }
        let (sum, count, b) = lat.kind.of(&h);
        assert_eq!(count, 1000);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 1000);
        let exact: f64 = (0..1000u64).map(|v| v as f64 * 37e-6).sum();
        assert!((sum - exact).abs() / exact < 0.01, "{sum} vs {exact}");
        for i in 0..(MAX_PEERS + 10) {
            let ip = IpAddr::from([10, 0, (i / 256) as u8, i as u8]);
            let l = m.peer(ip);
            assert_eq!(l == "other", i >= MAX_PEERS, "{i}: {l}");
        }
        assert_eq!(m.peer(IpAddr::from([10, 0, 0, 0])), "10.0.0.0");
    }
}
