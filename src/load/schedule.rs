//! The open-loop schedule of `--rate`: when each request is *meant* to be sent.
//!
//! A total rate of `R` tasks/s over `C` clients gives every client one request every `C / R`
//! seconds; client `c`'s requests are offset by `c / R` so that the clients' sends interleave
//! evenly instead of arriving in bursts. Request `k` of client `c` is due at
//! `base + c/R + k*C/R`, computed from `k` (never by adding intervals, so there is no drift).
//!
//! Latency is measured from that intended time, not from when the request actually left: if
//! the server (or the generator) falls behind, the waiting time shows up in the latency
//! instead of being hidden by sending later (no coordinated omission).

use std::time::{Duration, Instant};

/// The send times of one client.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    base: Instant,
    phase: Duration,
    interval: Duration,
}

impl Schedule {
    /// Client `client` of `clients` at a total of `rate` requests per second, from `base`.
    pub fn new(base: Instant, rate: f64, clients: u32, client: u32) -> Schedule {
        let rate = rate.max(1e-9);
        Schedule {
            base,
            phase: Duration::from_secs_f64(client as f64 / rate),
            interval: Duration::from_secs_f64(clients.max(1) as f64 / rate),
        }
    }

    /// The intended send time of request `k` (0-based).
    pub fn at(&self, k: u64) -> Instant {
        let off = self.interval.as_nanos().saturating_mul(k as u128);
        let off = Duration::from_nanos(off.min(u64::MAX as u128) as u64);
        self.base + self.phase + off
    }

    /// Time between two requests of this client.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How many requests are due at `now` (those with `at(k) <= now`).
    pub(crate) fn due(&self, now: Instant) -> u64 {
        let start = self.base + self.phase;
        if now < start {
            return 0;
        }
        let el = (now - start).as_nanos();
        let iv = self.interval.as_nanos().max(1);
        (el / iv) as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_interleaved_and_drift_free() {
        let t0 = Instant::now();
        // 1000 req/s over 4 clients: each client every 4 ms, offsets 0,1,2,3 ms.
        let s: Vec<Schedule> = (0..4).map(|c| Schedule::new(t0, 1000.0, 4, c)).collect();
        assert_eq!(s[0].interval(), Duration::from_millis(4));
        let mut all: Vec<Duration> = s
            .iter()
            .flat_map(|sc| (0..5).map(move |k| sc.at(k) - t0))
            .collect();
        all.sort();
        let want: Vec<Duration> = (0..20).map(Duration::from_millis).collect();
        assert_eq!(all, want);
        // Request 1e6 is exactly 1e6 intervals away.
        assert_eq!(
            s[1].at(1_000_000) - t0,
            Duration::from_millis(1 + 4_000_000)
        );
    }

    #[test]
    fn due_counts() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 100.0, 1, 0); // every 10 ms from t0
        assert_eq!(s.due(t0), 1);
        assert_eq!(s.due(t0 + Duration::from_millis(9)), 1);
        assert_eq!(s.due(t0 + Duration::from_millis(10)), 2);
        assert_eq!(s.due(t0 + Duration::from_millis(95)), 10);
        let late = Schedule::new(t0, 100.0, 2, 1); // offset 10 ms
        assert_eq!(late.due(t0), 0);
        for k in 0..100 {
            assert_eq!(late.due(late.at(k)), k + 1);
        }
    }
}
