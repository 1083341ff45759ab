//! The pacer: a token bucket in datagrams, fed by elapsed nanoseconds.
//!
//! Pure arithmetic on a caller-supplied clock, so it is exact in tests and accurate at any rate:
//! tokens accrue as `rate × elapsed` (a float, so no rounding drift), are capped at a burst, and
//! the sender asks how many datagrams it may send now and how long until it may send a batch.
//! There is no sleep per datagram; at 10 Gbit/s the sender wakes once per batch.

/// A token bucket in datagrams.
#[derive(Debug, Clone)]
pub struct Pacer {
    per_ns: f64,
    burst: f64,
    tokens: f64,
    last_ns: u64,
}

impl Pacer {
    /// `pps` datagrams per second; at most `burst` datagrams may go back to back after an idle
    /// spell. The bucket starts with one token, so the first datagram goes at once.
    pub fn new(pps: f64, burst: u64, now_ns: u64) -> Pacer {
        assert!(pps > 0.0 && pps.is_finite());
        let burst = burst.max(1) as f64;
        Pacer {
            per_ns: pps / 1e9,
            burst,
            tokens: 1.0,
            last_ns: now_ns,
        }
    }

    fn refill(&mut self, now_ns: u64) {
        if now_ns > self.last_ns {
            let add = (now_ns - self.last_ns) as f64 * self.per_ns;
            self.tokens = (self.tokens + add).min(self.burst);
            self.last_ns = now_ns;
        }
    }

    /// How many datagrams may be sent at `now_ns` (up to `want`).
    pub fn allowance(&mut self, now_ns: u64, want: u64) -> u64 {
        self.refill(now_ns);
        (self.tokens.floor() as u64).min(want)
    }

    /// Takes `n` datagrams' worth of tokens (after they were sent).
    pub fn consume(&mut self, n: u64) {
        self.tokens -= n as f64;
    }

    /// Nanoseconds from `now_ns` until `n` datagrams (capped at the burst) may be sent.
    pub(crate) fn wait_ns(&mut self, now_ns: u64, n: u64) -> u64 {
        self.refill(now_ns);
        let need = (n as f64).min(self.burst) - self.tokens;
        if need <= 0.0 {
            0
        } else {
            (need / self.per_ns).ceil() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drives a pacer on a simulated clock the way the sender does (send a batch when allowed,
    /// else wait as told) and returns datagrams sent by `end_ns`.
    fn simulate(pps: f64, batch: u64, burst: u64, end_ns: u64, jitter: u64) -> u64 {
        let mut now = 0u64;
        let mut p = Pacer::new(pps, burst, now);
        let mut sent = 0;
        let mut k = 0u64;
        while now < end_ns {
            let n = p.allowance(now, batch);
            if n > 0 {
                p.consume(n);
                sent += n;
            } else {
                // The sender oversleeps a little, as real sleeps do.
                k = k
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                now += p.wait_ns(now, batch).max(1) + (k >> 33) % (jitter + 1);
            }
        }
        sent
    }

    #[test]
    fn ten_gigabit_is_accurate() {
        // 10 Gbit/s of 1472-byte datagrams = 849 kpps for one simulated second.
        let pps = 10e9 / (1472.0 * 8.0);
        let sent = simulate(pps, 64, 128, 1_000_000_000, 20_000) as f64;
        assert!((sent - pps).abs() / pps < 0.002, "sent {sent}, want {pps}");
    }

    #[test]
    fn burst_caps_catch_up() {
        let mut p = Pacer::new(1000.0, 10, 0);
        // After a long stall, no more than the burst goes at once.
        assert_eq!(p.allowance(10_000_000_000, 1_000_000), 10);
    }

    #[test]
    fn wait_is_time_to_next_batch() {
        let mut p = Pacer::new(1e6, 64, 0); // one datagram per microsecond
        let n = p.allowance(0, 64);
        p.consume(n);
        let w = p.wait_ns(0, 10);
        assert!((9_000..=10_000).contains(&w), "{w}");
        assert_eq!(p.allowance(w, 64), 10);
    }

    proptest! {
        #[test]
        fn long_run_rate_is_kept(pps in 1_000.0f64..5_000_000.0, batch in 1u64..128) {
            let end = 200_000_000u64; // 0.2 s
            // The burst covers the simulated oversleep (up to 5 µs), as the sender's does (1 ms).
            let burst = batch * 2 + (pps * 1e-5) as u64;
            let sent = simulate(pps, batch, burst, end, 5_000) as f64;
            let want = pps * end as f64 / 1e9;
            // Within what the last simulated oversleep (5 µs) and two batches account for.
            let slack = 2.0 * batch as f64 + 2.0 + pps * 5e-6;
            prop_assert!((sent - want).abs() <= slack, "sent {} want {}", sent, want);
        }
    }
}
