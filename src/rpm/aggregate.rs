//! RPM (pure): round trips per minute, after the IETF draft "Responsiveness under Working
//! Conditions" (draft-ietf-ippm-responsiveness).
//!
//! The draft computes `60000 / (1/6·(TM(tcp_f) + TM(tls_f) + TM(http_f)) + 1/2·TM(http_s))`
//! milliseconds, where TM is the 95 % trimmed mean (the highest 5 % of the samples dropped),
//! `_f` are *foreign* probes (on connections of their own: the TCP handshake, the TLS handshake,
//! an HTTP request/response) and `_s` *self* probes (a request/response on a loaded
//! connection). Foreign and self weigh one half each.
//!
//! netcore has no TLS or HTTP on its load connections, so its aggregate is, in the same shape:
//!
//! ```text
//! foreign = mean of the kinds present of TM(tcp connect), TM(request/response on that fresh
//!           connection), TM(udp probe round trip)
//! self    = TM(smoothed RTT of the loaded TCP connections, TCP_INFO), when the phase has load
//! RPM     = 60 s / (foreign/2 + self/2)    or 60 s / foreign without self samples
//! ```
//! The fresh connection's 8-byte request/response is the draft's foreign request without HTTP,
//! and the UDP probe round trip another foreign probe (a small request answered at once on a
//! flow of its own); the kernel's RTT of a loaded connection
//! measures what the draft's self probe does (its queue), without the sender's socket buffer
//! (which the draft's HTTP/2 request also waits behind).

/// The share of the highest samples the trimmed mean drops.
pub(crate) const TRIM: f64 = 0.05;

/// The mean of `samples` without its highest `TRIM` share (at least one sample kept); None
/// for no samples or a sample that is not a finite number.
pub(crate) fn trimmed_mean(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() || samples.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let drop = (v.len() as f64 * TRIM).floor() as usize;
    let keep = &v[..v.len() - drop.min(v.len() - 1)];
    Some(keep.iter().sum::<f64>() / keep.len() as f64)
}

/// One phase's round trips, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundTrips {
    /// TCP handshakes of fresh connections (foreign).
    pub tcp_connect_ms: Vec<f64>,
    /// A request/response on each of those fresh connections (foreign).
    pub tcp_request_ms: Vec<f64>,
    /// UDP probe round trips (foreign).
    pub udp_ms: Vec<f64>,
    /// Smoothed RTT samples of the loaded connections (self).
    pub loaded_ms: Vec<f64>,
}

impl RoundTrips {
    /// Adds another phase's samples (the run's RPM pools its loaded phases).
    pub fn extend(&mut self, other: &RoundTrips) {
        self.tcp_connect_ms.extend_from_slice(&other.tcp_connect_ms);
        self.tcp_request_ms.extend_from_slice(&other.tcp_request_ms);
        self.udp_ms.extend_from_slice(&other.udp_ms);
        self.loaded_ms.extend_from_slice(&other.loaded_ms);
    }
}

/// RPM and its parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rpm {
    pub rpm: f64,
    /// The foreign and self aggregates in ms (self absent without load).
    pub foreign_ms: f64,
    pub self_ms: Option<f64>,
}

/// The aggregate above; None without any foreign sample (or with a zero round trip).
pub fn rpm(rt: &RoundTrips) -> Option<Rpm> {
    let kinds: Vec<f64> = [
        trimmed_mean(&rt.tcp_connect_ms),
        trimmed_mean(&rt.tcp_request_ms),
        trimmed_mean(&rt.udp_ms),
    ]
    .into_iter()
    .flatten()
    .collect();
    if kinds.is_empty() {
        return None;
    }
    let foreign_ms = kinds.iter().sum::<f64>() / kinds.len() as f64;
    let self_ms = trimmed_mean(&rt.loaded_ms);
    let ms = match self_ms {
        Some(s) => foreign_ms / 2.0 + s / 2.0,
        None => foreign_ms,
    };
    (ms > 0.0).then(|| Rpm {
        rpm: 60_000.0 / ms,
        foreign_ms,
        self_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_draft_shape() {
        // 100 ms foreign, 200 ms self: 60000 / 150 = 400 RPM.
        let rt = RoundTrips {
            tcp_connect_ms: vec![100.0; 20],
            tcp_request_ms: vec![100.0; 20],
            udp_ms: vec![100.0; 40],
            loaded_ms: vec![200.0; 10],
        };
        let r = rpm(&rt).unwrap();
        assert!((r.rpm - 400.0).abs() < 1e-9, "{r:?}");
        // The top 5 % are dropped: one outlier of 20 does not count.
        let mut v = vec![10.0; 19];
        v.push(10_000.0);
        assert_eq!(trimmed_mean(&v), Some(10.0));
        assert_eq!(trimmed_mean(&[5.0]), Some(5.0));
        assert_eq!(trimmed_mean(&[]), None);
        assert_eq!(trimmed_mean(&[f64::NAN]), None);
        assert_eq!(rpm(&RoundTrips::default()), None);
        // Idle: no self samples, foreign alone.
        let idle = RoundTrips {
            udp_ms: vec![1.0; 10],
            ..RoundTrips::default()
        };
        assert_eq!(rpm(&idle).unwrap().rpm, 60_000.0);
    }

    fn ms() -> impl Strategy<Value = Vec<f64>> {
        proptest::collection::vec(0.01f64..5000.0, 0..60)
    }

    proptest! {
        /// The trimmed mean lies between the samples' minimum and their mean, and a constant
        /// series is its own trimmed mean.
        #[test]
        fn trimmed_mean_bounds(v in proptest::collection::vec(0.0f64..1e6, 1..300)) {
            let t = trimmed_mean(&v).unwrap();
            let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            prop_assert!(t >= min - 1e-6 && t <= mean + 1e-6 * mean.max(1.0), "{t} {min} {mean}");
            prop_assert!((trimmed_mean(&vec![v[0]; v.len()]).unwrap() - v[0]).abs() <= 1e-9 * v[0].max(1.0));
        }

        /// RPM is 60 s over a round trip between the smallest and largest aggregate, falls
        /// when every sample grows, and is absent only without foreign samples.
        #[test]
        fn rpm_is_sixty_seconds_over_a_round_trip(tcp in ms(), req in ms(), udp in ms(), loaded in ms(), k in 1.0f64..10.0) {
            let rt = RoundTrips { tcp_connect_ms: tcp.clone(), tcp_request_ms: req.clone(), udp_ms: udp.clone(), loaded_ms: loaded.clone() };
            let got = rpm(&rt);
            prop_assert_eq!(got.is_none(), tcp.is_empty() && req.is_empty() && udp.is_empty());
            if let Some(r) = got {
                let all: Vec<f64> = tcp.iter().chain(&req).chain(&udp).chain(&loaded).cloned().collect();
                let lo = all.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = all.iter().cloned().fold(0.0, f64::max);
                let ms = 60_000.0 / r.rpm;
                prop_assert!(ms >= lo * (1.0 - 1e-9) && ms <= hi * (1.0 + 1e-9), "{ms} not in {lo}..{hi}");
                prop_assert_eq!(r.self_ms.is_some(), !loaded.is_empty());
                let scaled = |v: &Vec<f64>| v.iter().map(|x| x * k).collect::<Vec<_>>();
                let slower = rpm(&RoundTrips { tcp_connect_ms: scaled(&tcp), tcp_request_ms: scaled(&req), udp_ms: scaled(&udp), loaded_ms: scaled(&loaded) }).unwrap();
                prop_assert!((slower.rpm * k - r.rpm).abs() <= 1e-6 * r.rpm);
            }
        }
    }
}
