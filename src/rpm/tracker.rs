//! The probe tracker (pure): every probe's fate, exactly, per phase.
//!
//! A probe is *answered* when its first echo comes back within `late_after` of its send,
//! *late* when its first echo comes back after that, *lost* when none has come back (a probe
//! still in flight at [`ProbeTracker::expire`] past `late_after` is counted lost; an echo that
//! comes after that moves it from lost to late). Further echoes of a probe are *duplicates*.
//! So `sent == answered + late + lost + pending` at every step, and `pending` is 0 after
//! [`ProbeTracker::finish`]. Each probe that came back adds one round trip to its phase's HDR
//! histogram (answered and late ones), less the time the echo held it (its own two stamps, so
//! this needs no common clock); one-way delays are kept when the caller says the clocks are one.

use std::collections::VecDeque;

use crate::stats::hist::Hist;

/// What became of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Pending { send_ns: u64, phase: usize },
    Answered { phase: usize },
    Late { phase: usize },
    Lost { send_ns: u64, phase: usize },
}

/// What one echo was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The first echo, in time: the round trip in ns and the probe's phase.
    Answered(u64, usize),
    /// The first echo, after `late_after`: the round trip in ns and the probe's phase.
    Late(u64, usize),
    /// Another echo of a probe that came back already.
    Duplicate,
    /// An echo of no probe sent (a sequence number never used, a send time that does not match
    /// the one recorded) or of one forgotten (older than the window).
    Stray,
}

/// One phase's probes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseProbes {
    pub sent: u64,
    pub answered: u64,
    pub late: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Round trips in ns (answered and late probes, one each).
    pub rtt: Hist,
    /// One-way delays in ns, prober to echo and back (when the clocks are one).
    pub up: Hist,
    pub down: Hist,
}

impl PhaseProbes {
    /// Probes sent whose fate is not decided yet.
    pub fn pending(&self) -> u64 {
        self.sent - self.answered - self.late - self.lost
    }
}

/// An echo as received: the probe's fields and this side's receive time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub seq: u64,
    pub send_ns: u64,
    pub echo_rx_ns: u64,
    pub echo_tx_ns: u64,
    pub rx_ns: u64,
}

/// The tracker of one run's probes, over all its phases.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    /// Sequence number of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot>,
    /// Slots kept for decided probes (older ones are forgotten: their echoes are strays).
    window: usize,
    late_after_ns: u64,
    same_clock: bool,
    phases: Vec<PhaseProbes>,
    strays: u64,
}

impl ProbeTracker {
    /// A tracker for `phases` phases; echoes later than `late_after_ns` are late; `window`
    /// decided probes are remembered to tell duplicates (at least 1).
    pub fn new(phases: usize, late_after_ns: u64, window: usize, same_clock: bool) -> Self {
        ProbeTracker {
            base: 0,
            slots: VecDeque::new(),
            window: window.max(1),
            late_after_ns,
            same_clock,
            phases: vec![PhaseProbes::default(); phases],
            strays: 0,
        }
    }

    /// Records a probe sent at `send_ns` in `phase` and returns its sequence number.
    pub fn send(&mut self, send_ns: u64, phase: usize) -> u64 {
        assert!(phase < self.phases.len(), "phase {phase} out of range");
        let seq = self.base + self.slots.len() as u64;
        self.slots.push_back(Slot::Pending { send_ns, phase });
        self.phases[phase].sent += 1;
        self.forget();
        seq
    }

    /// Drops the oldest decided slots beyond the window (pending ones are kept).
    fn forget(&mut self) {
        while self.slots.len() > self.window {
            match self.slots.front() {
                Some(Slot::Pending { .. }) | None => break,
                Some(_) => {
                    self.slots.pop_front();
                    self.base += 1;
                }
            }
        }
    }

    /// Accounts one echo.
    pub fn echo(&mut self, e: Echo) -> Fate {
        let Some(i) = e
            .seq
            .checked_sub(self.base)
            .filter(|&i| i < self.slots.len() as u64)
        else {
            self.strays += 1;
            return Fate::Stray;
        };
        let i = i as usize;
        let (send_ns, phase, was_lost) = match self.slots[i] {
            Slot::Pending { send_ns, phase } => (send_ns, phase, false),
            Slot::Lost { send_ns, phase } => (send_ns, phase, true),
            Slot::Answered { phase } | Slot::Late { phase } => {
                self.phases[phase].duplicates += 1;
                return Fate::Duplicate;
            }
        };
        if e.send_ns != send_ns {
            self.strays += 1;
            return Fate::Stray;
        }
        let rtt = self.round_trip(&e, send_ns);
        let p = &mut self.phases[phase];
        if was_lost {
            p.lost -= 1;
        }
        let late = was_lost || rtt > self.late_after_ns;
        if late {
            p.late += 1;
        } else {
            p.answered += 1;
        }
        p.rtt.record(rtt);
        if self.same_clock {
            if let (Some(up), Some(down)) = (
                e.echo_rx_ns.checked_sub(send_ns),
                e.rx_ns.checked_sub(e.echo_tx_ns),
            ) {
                p.up.record(up);
                p.down.record(down);
            }
        }
        self.slots[i] = if late {
            Slot::Late { phase }
        } else {
            Slot::Answered { phase }
        };
        if late {
            Fate::Late(rtt, phase)
        } else {
            Fate::Answered(rtt, phase)
        }
    }

    /// The round trip less the time the echo held the probe (when its stamps are sane).
    fn round_trip(&self, e: &Echo, send_ns: u64) -> u64 {
        let rtt = e.rx_ns.saturating_sub(send_ns);
        let held = e.echo_tx_ns.saturating_sub(e.echo_rx_ns);
        if e.echo_rx_ns != 0 && held < rtt {
            rtt - held
        } else {
            rtt
        }
    }

    /// Probes pending for longer than `late_after` at `now_ns` become lost.
    pub(crate) fn expire(&mut self, now_ns: u64) {
        for s in self.slots.iter_mut() {
            if let Slot::Pending { send_ns, phase } = *s {
                if now_ns.saturating_sub(send_ns) > self.late_after_ns {
                    *s = Slot::Lost { send_ns, phase };
                    self.phases[phase].lost += 1;
                }
            }
        }
        self.forget();
    }

    /// The end: every probe still pending is lost.
    pub fn finish(&mut self) {
        self.expire(u64::MAX);
    }

    pub fn phases(&self) -> &[PhaseProbes] {
        &self.phases
    }

    /// Echoes of no known probe.
    pub fn strays(&self) -> u64 {
        self.strays
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn echo(seq: u64, send_ns: u64, rx_ns: u64) -> Echo {
        Echo {
            seq,
            send_ns,
            echo_rx_ns: 0,
            echo_tx_ns: 0,
            rx_ns,
        }
    }

    #[test]
    fn each_fate_once() {
        let mut t = ProbeTracker::new(2, 1000 * MS, 1024, false);
        let a = t.send(0, 0);
        let b = t.send(10 * MS, 0);
        let c = t.send(20 * MS, 1);
        let d = t.send(30 * MS, 1);
        assert_eq!(t.echo(echo(a, 0, 5 * MS)), Fate::Answered(5 * MS, 0));
        assert_eq!(t.echo(echo(a, 0, 6 * MS)), Fate::Duplicate);
        assert_eq!(t.echo(echo(b, 11, 12 * MS)), Fate::Stray, "wrong send time");
        assert_eq!(t.echo(echo(99, 0, 12 * MS)), Fate::Stray);
        t.expire(1500 * MS);
        assert_eq!(t.phases()[0].lost, 1);
        assert_eq!(t.phases()[1].lost, 2);
        assert_eq!(
            t.echo(echo(c, 20 * MS, 1600 * MS)),
            Fate::Late(1580 * MS, 1)
        );
        t.finish();
        let (p0, p1) = (&t.phases()[0], &t.phases()[1]);
        assert_eq!(
            (p0.sent, p0.answered, p0.late, p0.lost, p0.duplicates),
            (2, 1, 0, 1, 1)
        );
        assert_eq!((p1.sent, p1.answered, p1.late, p1.lost), (2, 0, 1, 1));
        assert_eq!(t.strays(), 2);
        assert_eq!(p1.rtt.len(), 1);
        let _ = d;
    }

    #[test]
    fn the_echo_hold_time_is_not_a_round_trip() {
        let mut t = ProbeTracker::new(1, 1000 * MS, 16, true);
        let s = t.send(100 * MS, 0);
        let f = t.echo(Echo {
            seq: s,
            send_ns: 100 * MS,
            echo_rx_ns: 104 * MS,
            echo_tx_ns: 107 * MS,
            rx_ns: 110 * MS,
        });
        assert_eq!(f, Fate::Answered(7 * MS, 0));
        let p = &t.phases()[0];
        // Within the histogram's 3 significant digits.
        assert!((p.up.summary(1.0).max - 4e6).abs() < 4e3);
        assert!((p.down.summary(1.0).max - 3e6).abs() < 3e3);
    }

    /// A probe as the test plans it: its phase, when its echoes arrive (ms after its send).
    #[derive(Debug, Clone)]
    struct Plan {
        phase: usize,
        echoes: Vec<u64>,
    }

    fn plans() -> impl Strategy<Value = Vec<Plan>> {
        proptest::collection::vec(
            (0usize..3, proptest::collection::vec(0u64..3000, 0..4))
                .prop_map(|(phase, echoes)| Plan { phase, echoes }),
            0..200,
        )
    }

    proptest! {
        /// Against an oracle that decides each probe from its first echo alone: answered
        /// within `late_after`, late after it, lost without; the rest are duplicates; and
        /// `sent == answered + late + lost` per phase, whatever the expiry times.
        #[test]
        fn fates_match_the_oracle(plans in plans(), expiries in proptest::collection::vec(0u64..30_000, 0..20)) {
            let late_after = 1000 * MS;
            let mut t = ProbeTracker::new(3, late_after, 4096, false);
            // Probes go out every 10 ms; events in time order (sends first at equal times).
            let mut events: Vec<(u64, u8, usize)> = Vec::new();
            for (i, p) in plans.iter().enumerate() {
                events.push((i as u64 * 10 * MS, 0, i));
                for &d in &p.echoes {
                    events.push((i as u64 * 10 * MS + d * MS, 1, i));
                }
            }
            for &x in &expiries {
                events.push((x * MS, 2, 0));
            }
            events.sort();
            let mut seqs = vec![0u64; plans.len()];
            for &(at, kind, i) in &events {
                match kind {
                    0 => seqs[i] = t.send(at, plans[i].phase),
                    1 => { t.echo(echo(seqs[i], i as u64 * 10 * MS, at)); }
                    _ => t.expire(at),
                }
                for p in t.phases() {
                    prop_assert_eq!(p.sent, p.answered + p.late + p.lost + p.pending());
                }
            }
            t.finish();
            for ph in 0..3 {
                let of: Vec<&Plan> = plans.iter().filter(|p| p.phase == ph).collect();
                let first = |p: &Plan| p.echoes.iter().min().copied();
                let answered = of.iter().filter(|p| first(p).is_some_and(|d| d * MS <= late_after)).count() as u64;
                let late = of.iter().filter(|p| first(p).is_some_and(|d| d * MS > late_after)).count() as u64;
                let dups: u64 = of.iter().map(|p| p.echoes.len().saturating_sub(1) as u64).sum();
                let got = &t.phases()[ph];
                prop_assert_eq!(got.sent, of.len() as u64);
                prop_assert_eq!(got.answered, answered);
                prop_assert_eq!(got.late, late);
                prop_assert_eq!(got.lost, of.len() as u64 - answered - late);
                prop_assert_eq!(got.duplicates, dups);
                prop_assert_eq!(got.rtt.len(), answered + late);
                prop_assert_eq!(got.pending(), 0);
            }
            prop_assert_eq!(t.strays(), 0);
        }

        /// A small window forgets decided probes: their later echoes are strays, never a
        /// second fate, and the fates still add up.
        #[test]
        fn a_small_window_only_makes_strays(plans in plans(), window in 1usize..8) {
            let mut t = ProbeTracker::new(3, 1000 * MS, window, false);
            let seqs: Vec<u64> = plans.iter().enumerate().map(|(i, p)| t.send(i as u64, p.phase)).collect();
            for (i, p) in plans.iter().enumerate() {
                if !p.echoes.is_empty() {
                    t.echo(echo(seqs[i], i as u64, i as u64 + 1));
                }
            }
            t.expire(0); // forgets decided probes beyond the window
            let mut extra = 0u64;
            for (i, p) in plans.iter().enumerate() {
                for _ in 1..p.echoes.len() {
                    t.echo(echo(seqs[i], i as u64, i as u64 + 2));
                    extra += 1;
                }
            }
            t.finish();
            let dups: u64 = t.phases().iter().map(|p| p.duplicates).sum();
            prop_assert_eq!(dups + t.strays(), extra);
            let back: u64 = t.phases().iter().map(|p| p.answered).sum();
            prop_assert_eq!(back, plans.iter().filter(|p| !p.echoes.is_empty()).count() as u64);
        }
    }
}
