//! The search for the highest rate whose loss stays within a bound (`blast --find-rate`), as a
//! pure state machine: it says which rate to try next, takes each trial's outcome, and ends with
//! the highest passing rate, confirmed by a repeat trial (RFC 2544's throughput test, and the
//! no-drop-rate search of traffic generators such as TRex, done as a bisection).
//!
//! 1. The first trial is unpaced: if it passes, the sender's own ceiling is lossless and one
//!    unpaced repeat confirms it.
//! 2. Otherwise its delivered rate (what arrived) is the first guess, and every later trial
//!    bisects between the highest passing and the lowest failing rate, until they are within
//!    `precision` of each other.
//! 3. The highest passing rate is then tried again; a failed confirmation makes it the new
//!    upper bound and the search goes on. Trials are bounded (`max_trials`): a search cut short
//!    reports its best rate as unconfirmed.

use serde::Serialize;

use crate::stats::table::Table;
use crate::stats::Report;
use crate::units::{fmt_bits_per_sec, fmt_count, fmt_pct, fmt_pps};

/// One trial's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub(crate) struct Trial {
    /// The paced rate tried (bit/s of UDP payload); `None`: unpaced.
    pub rate_bps: Option<f64>,
    /// What the sender achieved (bit/s).
    pub sent_bps: f64,
    /// What arrived (bit/s of payload); 0 in memory, null in JSON, where the receiver's time
    /// is unknown (every datagram in one receive batch, or none arrived).
    #[serde(serialize_with = "crate::stats::unknown::zero::serialize")]
    #[schemars(with = "Option<f64>")]
    pub received_bps: f64,
    pub sent: u64,
    pub lost: u64,
    /// `lost / sent`.
    pub loss: f64,
    pub passed: bool,
    /// A repeat of the best passing rate.
    pub confirmation: bool,
}

/// The share of the sent rate a passing trial must deliver.
pub(crate) const MIN_DELIVERY: f64 = 0.95;

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Next {
    /// Run a trial at this rate (`None`: unpaced).
    Try(Option<f64>),
    /// The search is over.
    Done,
}

/// The search (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct Search {
    bound: f64,
    precision: f64,
    max_trials: usize,
    /// Highest rate that passed (bit/s), 0 before any.
    lo: f64,
    /// Lowest rate that failed.
    hi: f64,
    /// The next trial is a confirmation of `lo`.
    confirming: bool,
    /// The search found its rate (and confirmed it).
    found: bool,
    trials: Vec<Trial>,
}

impl Search {
    /// `bound`: the loss fraction allowed (0 for none); `precision`: relative width at which
    /// bisection stops (0.02 = 2 %); `max_trials` bounds the whole search.
    pub fn new(bound: f64, precision: f64, max_trials: usize) -> Search {
        Search {
            bound: bound.max(0.0),
            precision: precision.clamp(1e-4, 0.5),
            max_trials: max_trials.max(2),
            lo: 0.0,
            hi: f64::INFINITY,
            confirming: false,
            found: false,
            trials: Vec::new(),
        }
    }

    /// Whether a trial passes: `lost` of `sent` within the bound, and the path delivered at
    /// least [`MIN_DELIVERY`] of the rate sent (a queue that absorbs the excess for a trial's
    /// length loses nothing yet, but cannot keep that rate).
    pub fn passes(&self, sent: u64, lost: u64, sent_bps: f64, received_bps: f64) -> bool {
        let loss_ok = if self.bound == 0.0 {
            lost == 0
        } else {
            sent > 0 && (lost as f64) <= self.bound * sent as f64
        };
        // An unknown delivered rate (0: no receive time) leaves the verdict to the loss.
        loss_ok && (received_bps == 0.0 || received_bps >= MIN_DELIVERY * sent_bps)
    }

    /// The next trial.
    pub fn next(&self) -> Next {
        if self.found || self.trials.len() >= self.max_trials {
            return Next::Done;
        }
        let Some(first) = self.trials.first() else {
            return Next::Try(None);
        };
        if first.passed {
            // The unpaced ceiling passed once: repeat it unpaced.
            return Next::Try(None);
        }
        if self.confirming {
            return Next::Try(Some(self.lo));
        }
        if self.lo == 0.0 && self.trials.len() == 1 {
            // What got through the first time is the best first guess.
            return Next::Try(Some(
                (first.received_bps * 0.98).min(self.hi * 0.98).max(1.0),
            ));
        }
        let lo = if self.lo > 0.0 { self.lo } else { 0.0 };
        Next::Try(Some(((lo + self.hi) / 2.0).max(1.0)))
    }

    /// Records the outcome of the trial [`Search::next`] asked for.
    pub fn record(
        &mut self,
        rate: Option<f64>,
        sent_bps: f64,
        received_bps: f64,
        sent: u64,
        lost: u64,
    ) {
        let passed = self.passes(sent, lost, sent_bps, received_bps);
        let confirmation = self.confirming || (rate.is_none() && !self.trials.is_empty());
        self.trials.push(Trial {
            rate_bps: rate,
            sent_bps,
            received_bps,
            sent,
            lost,
            loss: if sent > 0 {
                lost as f64 / sent as f64
            } else {
                0.0
            },
            passed,
            confirmation,
        });
        let tried = rate.unwrap_or(sent_bps);
        if rate.is_none() {
            if passed {
                self.lo = self.lo.max(sent_bps);
                if confirmation {
                    self.found = true;
                }
            } else {
                self.hi = self.hi.min(sent_bps);
                self.cap_by_delivery(received_bps);
                if confirmation {
                    // The unpaced ceiling passed once and failed the repeat: search below it.
                    self.trials[0].passed = false;
                }
            }
            return;
        }
        if self.confirming {
            self.confirming = false;
            if passed {
                self.found = true;
            } else {
                // Not repeatable: the confirmed rate must be lower.
                self.hi = tried;
                self.lo *= 0.8;
            }
            return;
        }
        if passed {
            self.lo = self.lo.max(tried);
        } else {
            self.hi = self.hi.min(tried);
            self.cap_by_delivery(received_bps);
        }
        if self.lo > 0.0 && self.hi - self.lo <= self.precision * self.hi {
            self.confirming = true;
        }
    }

    /// A failed trial's delivered rate bounds what the path can carry: just above it is the
    /// new upper bound (never at or below a rate that passed).
    fn cap_by_delivery(&mut self, received_bps: f64) {
        if received_bps > 0.0 {
            let cap = (received_bps * 1.02).max(self.lo * (1.0 + self.precision));
            self.hi = self.hi.min(cap);
        }
    }

    pub fn trials(&self) -> &[Trial] {
        &self.trials
    }

    /// The highest rate found, and whether a repeat confirmed it.
    pub fn result(&self) -> (Option<f64>, bool) {
        ((self.lo > 0.0).then_some(self.lo), self.found)
    }
}

/// `blast --find-rate`'s report (schema `netcore.findrate.v1`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct FindRateReport {
    pub schema: &'static str,
    /// Where the report came from: netcore's version and revision, the host, kernel, CPUs,
    /// pinned threads, sysctls, when (`stats::meta`; absent in reports of older versions).
    #[serde(default)]
    pub meta: crate::stats::meta::Meta,
    pub target: String,
    /// Datagram payload bytes.
    pub len: usize,
    /// The loss fraction allowed.
    pub loss_bound: f64,
    /// Seconds per trial.
    pub trial_s: f64,
    pub trials: Vec<Trial>,
    /// The highest rate within the bound (bit/s), if any passed.
    pub rate_bps: Option<f64>,
    pub pps: Option<f64>,
    /// A repeat trial at `rate_bps` passed too.
    pub confirmed: bool,
    /// A signal ended the search early.
    pub interrupted: bool,
}

/// The schema name of [`FindRateReport`].
pub(crate) const SCHEMA: &str = "netcore.findrate.v1";

impl FindRateReport {
    /// The trials: raw numbers for CSV, or (`human`) through [`crate::units`]' formatter.
    fn table(&self, human: bool) -> Table {
        let mut t = Table::new([
            "trial",
            "rate",
            "sent",
            "received",
            "datagrams",
            "lost",
            "loss",
            "result",
        ]);
        for (i, x) in self.trials.iter().enumerate() {
            t.row([
                (i + 1).to_string(),
                x.rate_bps
                    .map_or_else(|| "unpaced".into(), fmt_bits_per_sec),
                fmt_bits_per_sec(x.sent_bps),
                crate::stats::unknown::text(
                    crate::stats::unknown::known(x.received_bps),
                    fmt_bits_per_sec,
                ),
                if human {
                    fmt_count(x.sent)
                } else {
                    x.sent.to_string()
                },
                if human {
                    fmt_count(x.lost)
                } else {
                    x.lost.to_string()
                },
                if human {
                    fmt_pct(x.loss * 100.0)
                } else {
                    format!("{:.4} %", x.loss * 100.0)
                },
                match (x.passed, x.confirmation) {
                    (true, true) => "pass (confirmed)",
                    (true, false) => "pass",
                    (false, true) => "FAIL (confirmation)",
                    (false, false) => "FAIL",
                }
                .into(),
            ]);
        }
        t
    }

    /// The closing line.
    pub fn summary(&self) -> String {
        let bound = if self.loss_bound == 0.0 {
            "no loss".to_string()
        } else {
            format!("loss within {}", fmt_pct(self.loss_bound * 100.0))
        };
        match (self.rate_bps, self.pps) {
            (Some(r), Some(p)) => format!(
                "highest rate with {bound}: {} ({}, {}-byte datagrams){}{}",
                fmt_bits_per_sec(r),
                fmt_pps(p),
                self.len,
                if self.confirmed {
                    ", confirmed"
                } else {
                    ", NOT confirmed (trials ran out)"
                },
                if self.interrupted {
                    " (interrupted)"
                } else {
                    ""
                }
            ),
            _ => format!(
                "no rate tried had {bound}{}",
                if self.interrupted {
                    " (interrupted)"
                } else {
                    ""
                }
            ),
        }
    }
}

impl Report for FindRateReport {
    fn meta(&self) -> &crate::stats::meta::Meta {
        &self.meta
    }

    fn to_table(&self) -> String {
        format!("{}{}\n", self.table(true).render(), self.summary())
    }

    fn to_csv(&self) -> String {
        self.table(false).to_csv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A link that loses nothing up to `cap` and everything above it in proportion.
    fn run(cap: f64, ceiling: f64, bound: f64) -> Search {
        let mut s = Search::new(bound, 0.02, 16);
        while let Next::Try(rate) = s.next() {
            let sent_bps = rate.unwrap_or(ceiling).min(ceiling);
            let sent = (sent_bps / 1e3) as u64;
            let got = sent_bps.min(cap);
            let lost = ((sent_bps - got) / 1e3) as u64;
            s.record(rate, sent_bps, got, sent, lost);
        }
        s
    }

    #[test]
    fn finds_a_link_limit_within_precision_and_confirms_it() {
        let s = run(200e6, 3e9, 0.0);
        let (r, confirmed) = s.result();
        let r = r.unwrap();
        assert!(confirmed, "{:?}", s.trials());
        assert!((0.95 * 200e6..=200e6).contains(&r), "{r}");
        assert!(s.trials().len() <= 16);
    }

    #[test]
    fn an_unpaced_pass_is_the_answer_after_a_repeat() {
        let s = run(10e9, 3e9, 0.0);
        assert_eq!(s.trials().len(), 2);
        assert_eq!(s.result(), (Some(3e9), true));
    }

    #[test]
    fn trials_are_bounded() {
        let mut s = Search::new(0.0, 0.001, 4);
        let mut n = 0;
        while let Next::Try(r) = s.next() {
            // Flaky link: passes and fails alternately.
            s.record(r, 1e9, 1e9, 1000, (n % 2) as u64);
            n += 1;
        }
        assert_eq!(n, 4);
        assert!(!s.result().1 || s.trials().iter().any(|t| t.confirmation));
    }

    proptest! {
        #[test]
        fn never_reports_a_rate_that_failed(cap in 1e6f64..5e9, ceiling in 1e7f64..1e10, bound in prop_oneof![Just(0.0), Just(0.001)]) {
            let s = run(cap, ceiling, bound);
            let (r, confirmed) = s.result();
            if let (Some(r), true) = (r, confirmed) {
                // The confirmed rate passed its last trial.
                let last = s.trials().iter().rev().find(|t| t.rate_bps.unwrap_or(t.sent_bps) == r).unwrap();
                prop_assert!(last.passed);
                prop_assert!(r <= ceiling * 1.0001);
            }
            prop_assert!(s.trials().len() <= 16);
        }
    }
}
