//! CPU figures of a test, shared by every protocol: how much CPU each side's busy threads
//! (the ones moving data) used over the test, and how many bits that CPU moved.
//!
//! A busy thread takes a [`ThreadMeter`] when it starts moving data and reads it when it
//! stops; the side adds its threads' [`CpuUsage`] with [`CpuUsage::add`] and finishes the
//! figures with [`CpuUsage::finish`] (wall time and bits moved).

use serde::{Deserialize, Serialize};

use crate::sys::cpu::{thread_times, ThreadTimes};

/// CPU used by one side's busy threads over a test. A figure no thread of this side measured
/// is null in JSON, not 0 (an iperf3 peer's side: only `pct_core`, its own figure, may be
/// known); in memory it is 0 with `threads` 0, and the JSON form is `CpuJson`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(into = "CpuJson", from = "CpuJson")]
pub struct CpuUsage {
    pub threads: u32,
    pub user_s: f64,
    pub system_s: f64,
    pub wall_s: f64,
    pub pct_core: f64,
    pub bits_per_cpu_s: f64,
}

/// [`CpuUsage`] as JSON: `null` for what was not measured (every figure when no thread of
/// this side was measured, but a peer's `pct_core`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct CpuJson {
    /// Busy threads counted (null: none of ours was).
    pub threads: Option<u32>,
    /// User-mode CPU seconds, summed over those threads.
    pub user_s: Option<f64>,
    /// Kernel-mode CPU seconds, summed over those threads.
    pub system_s: Option<f64>,
    /// The side's wall time over which the threads ran (the longest of them).
    pub wall_s: Option<f64>,
    /// (user + system) / wall, in percent of one core (200 = two cores busy); an iperf3
    /// peer's own figure where `threads` is null.
    pub pct_core: Option<f64>,
    /// Payload bits this side moved per CPU-second of its busy threads.
    pub bits_per_cpu_s: Option<f64>,
}

impl From<CpuUsage> for CpuJson {
    fn from(c: CpuUsage) -> CpuJson {
        let ours = c.threads > 0;
        let known = |v: f64| ours.then_some(v);
        CpuJson {
            threads: ours.then_some(c.threads),
            user_s: known(c.user_s),
            system_s: known(c.system_s),
            wall_s: known(c.wall_s),
            pct_core: (ours || c.pct_core > 0.0).then_some(c.pct_core),
            bits_per_cpu_s: known(c.bits_per_cpu_s),
        }
    }
}

impl From<CpuJson> for CpuUsage {
    fn from(j: CpuJson) -> CpuUsage {
        CpuUsage {
            threads: j.threads.unwrap_or(0),
            user_s: j.user_s.unwrap_or(0.0),
            system_s: j.system_s.unwrap_or(0.0),
            wall_s: j.wall_s.unwrap_or(0.0),
            pct_core: j.pct_core.unwrap_or(0.0),
            bits_per_cpu_s: j.bits_per_cpu_s.unwrap_or(0.0),
        }
    }
}

impl CpuUsage {
    /// CPU seconds in all.
    pub(crate) fn cpu_s(&self) -> f64 {
        self.user_s + self.system_s
    }

    /// Adds another thread's (or side's) CPU time; the wall time is the longer of the two.
    pub fn add(&mut self, o: &CpuUsage) {
        self.threads += o.threads;
        self.user_s += o.user_s;
        self.system_s += o.system_s;
        self.wall_s = self.wall_s.max(o.wall_s);
    }

    /// Fills the derived figures for `bytes` moved.
    pub fn finish(mut self, bytes: u64) -> CpuUsage {
        let cpu = self.cpu_s();
        self.pct_core = if self.wall_s > 0.0 {
            cpu / self.wall_s * 100.0
        } else {
            0.0
        };
        self.bits_per_cpu_s = if cpu > 0.0 {
            bytes as f64 * 8.0 / cpu
        } else {
            0.0
        };
        self
    }

    /// One line: `user 1.200 s, system 3.400 s (95.1% of one core, 2 threads), 21.30 Gbit per
    /// CPU-second`.
    pub fn line(&self) -> String {
        use crate::units::{fmt_pct, fmt_secs};
        if self.threads == 0 {
            // No thread of ours measured it: a peer's figure (iperf3 says only its share of
            // a core), or nothing at all.
            return match self.pct_core {
                p if p > 0.0 => format!(
                    "{} of one core (the peer's figure; the rest n/a)",
                    fmt_pct(p)
                ),
                _ => "n/a".into(),
            };
        }
        format!(
            "user {}, system {} ({} of one core, {} thread{}), {} per CPU-second",
            fmt_secs(self.user_s),
            fmt_secs(self.system_s),
            fmt_pct(self.pct_core),
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            crate::units::fmt_bits_per_sec(self.bits_per_cpu_s).replace("/s", ""),
        )
    }
}

/// A busy thread's CPU clock, started where it begins moving data.
pub(crate) struct ThreadMeter {
    start: ThreadTimes,
    wall: std::time::Instant,
}

impl ThreadMeter {
    /// Starts measuring the calling thread.
    pub fn start() -> ThreadMeter {
        ThreadMeter {
            start: thread_times(),
            wall: std::time::Instant::now(),
        }
    }

    /// The calling thread's CPU since [`ThreadMeter::start`] (call it on the same thread).
    pub fn stop(&self) -> CpuUsage {
        let now = thread_times();
        CpuUsage {
            threads: 1,
            user_s: now.user_ns.saturating_sub(self.start.user_ns) as f64 / 1e9,
            system_s: now.system_ns.saturating_sub(self.start.system_ns) as f64 / 1e9,
            wall_s: self.wall.elapsed().as_secs_f64(),
            ..CpuUsage::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_side_no_thread_of_ours_measured_is_not_zero_but_unknown() {
        // #26.8: the side an iperf3 peer describes (only its share of a core), and nothing.
        let peer = CpuUsage {
            pct_core: 70.8,
            ..Default::default()
        };
        assert_eq!(
            peer.line(),
            "70.8% of one core (the peer's figure; the rest n/a)"
        );
        assert_eq!(CpuUsage::default().line(), "n/a");
    }

    #[test]
    fn json_says_null_for_what_no_thread_of_ours_measured() {
        // #26.8: the client's CPU when the peer is iperf3 was all zeros in JSON.
        let json = |c: CpuUsage| serde_json::to_value(c).unwrap();
        let none = json(CpuUsage::default());
        for k in [
            "threads",
            "user_s",
            "system_s",
            "wall_s",
            "pct_core",
            "bits_per_cpu_s",
        ] {
            assert!(none[k].is_null(), "{k}: {none}");
        }
        let peer = json(CpuUsage {
            pct_core: 70.8,
            ..Default::default()
        });
        assert_eq!(peer["pct_core"], 70.8, "{peer}");
        assert!(
            peer["user_s"].is_null() && peer["threads"].is_null(),
            "{peer}"
        );
        let ours = CpuUsage {
            threads: 1,
            wall_s: 1.0,
            ..Default::default()
        };
        let j = json(ours);
        assert_eq!(
            (j["threads"].clone(), j["user_s"].clone()),
            (1.into(), 0.0.into())
        );
        // Back from JSON (a control message), nulls and all.
        for c in [ours, CpuUsage::default()] {
            assert_eq!(serde_json::from_value::<CpuUsage>(json(c)).unwrap(), c);
        }
    }

    #[test]
    fn figures() {
        let mut a = CpuUsage {
            threads: 1,
            user_s: 0.5,
            system_s: 1.5,
            wall_s: 4.0,
            ..Default::default()
        };
        a.add(&CpuUsage {
            threads: 1,
            user_s: 0.0,
            system_s: 2.0,
            wall_s: 2.0,
            ..Default::default()
        });
        let f = a.finish(1_000_000_000);
        assert_eq!(f.threads, 2);
        assert_eq!(f.wall_s, 4.0);
        assert!((f.pct_core - 100.0).abs() < 1e-9);
        assert!((f.bits_per_cpu_s - 2e9).abs() < 1e-3);
        assert!(
            f.line().contains("100% of one core, 2 threads"),
            "{}",
            f.line()
        );
        assert_eq!(CpuUsage::default().finish(5).bits_per_cpu_s, 0.0);
    }

    #[test]
    fn meter_measures_this_thread() {
        let m = ThreadMeter::start();
        let t = std::time::Instant::now();
        let mut x = 1u64;
        while t.elapsed() < std::time::Duration::from_millis(20) {
            x = x.wrapping_mul(7).wrapping_add(3);
        }
        std::hint::black_box(x);
        let u = m.stop();
        assert_eq!(u.threads, 1);
        assert!(u.cpu_s() > 0.0 && u.wall_s >= 0.02);
    }

    proptest! {
        #[test]
        fn adding_keeps_totals(parts in proptest::collection::vec((0.0f64..10.0, 0.0f64..10.0, 0.0f64..20.0), 1..10)) {
            let mut sum = CpuUsage::default();
            for &(u, s, w) in &parts {
                sum.add(&CpuUsage { threads: 1, user_s: u, system_s: s, wall_s: w, ..Default::default() });
            }
            let cpu: f64 = parts.iter().map(|p| p.0 + p.1).sum();
            let wall = parts.iter().map(|p| p.2).fold(0.0, f64::max);
            prop_assert_eq!(sum.threads as usize, parts.len());
            prop_assert!((sum.cpu_s() - cpu).abs() < 1e-9);
            prop_assert_eq!(sum.wall_s, wall);
            let f = sum.finish(1000);
            prop_assert!(f.pct_core >= 0.0 && f.bits_per_cpu_s >= 0.0);
        }
    }
}
