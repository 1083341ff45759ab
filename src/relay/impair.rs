//! The impairment core: per-datagram decisions ([`Impairer`]) and the queues that carry them out
//! ([`Pipeline`]). Pure: no sockets, no clock (times are nanoseconds the caller passes in), one
//! seeded [`SeededRng`] (PCG-64).
//!
//! # Stages
//! A datagram offered to the [`Pipeline`] goes through, in this order:
//! 1. **loss**: dropped with probability `loss`, independently (Bernoulli) or in bursts
//!    (Gilbert: a two-state chain whose bad state drops everything, with geometric bursts of mean
//!    `burst` datagrams and an overall loss rate of `loss`);
//! 2. **delay**: released at `arrival + delay + U(-jitter, +jitter)` (never before its arrival)
//!    from a timer queue ordered by release time, ties in arrival order. Jitter therefore
//!    *reorders* datagrams whose release times cross, as on a real path (and as netem does);
//!    with `jitter = 0` the delay stage keeps the order;
//! 3. **reorder**: with probability `reorder`, held back until `k` datagrams that arrived after
//!    it have been emitted, `k` drawn uniformly from `reorder_depth` — so, with nothing else going on, the
//!    receiver sees it with an RFC 4737 extent of exactly `k`. A held datagram waits at most
//!    [`HOLD_LIMIT_NS`] (the end of a stream has no later datagrams) and is released at once when
//!    the input is [closed](Pipeline::close) and nothing is left in the delay stage;
//! 4. **duplicate**: with probability `duplicate`, emitted twice, back to back;
//! 5. **rate**: with a `rate`, emitted datagrams queue for a link of that speed (at most
//!    [`LINK_QUEUE_LIMIT`] waiting; more are tail-dropped and counted apart).
//!
//! Random draws happen once per datagram at arrival, in a fixed order (loss, duplicate, reorder,
//! depth, jitter), so one seed and one arrival order give one outcome.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::seeded::SeededRng;
use rand::Rng;

use crate::units::Rate;

/// Longest a reordered datagram is held back waiting for later ones (50 ms).
pub(crate) const HOLD_LIMIT_NS: u64 = 50_000_000;
/// Datagrams that may wait for the rate-limited link; more are tail-dropped.
pub(crate) const LINK_QUEUE_LIMIT: usize = 8192;
/// Largest accepted reorder depth.
pub(crate) const MAX_DEPTH: u32 = 4096;

/// What to do to the traffic. Probabilities are fractions in `0..=1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Fraction of datagrams dropped.
    pub loss: f64,
    /// Mean loss-burst length in datagrams (`>= 1`); `None` for independent losses.
    pub burst: Option<f64>,
    /// Fraction of datagrams held back.
    pub reorder: f64,
    /// How many later datagrams a held-back one waits for (inclusive range, `1..=MAX_DEPTH`).
    pub reorder_depth: RangeInclusive<u32>,
    /// Fraction of datagrams emitted twice.
    pub duplicate: f64,
    /// Base one-way delay added by the relay.
    pub delay: Duration,
    /// Half-width of the uniform variation around `delay`.
    pub jitter: Duration,
    /// Speed of the outgoing link; `None` for no limit.
    pub rate: Option<Rate>,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            loss: 0.0,
            burst: None,
            reorder: 0.0,
            reorder_depth: 1..=8,
            duplicate: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate: None,
            seed: 0,
        }
    }
}

impl Settings {
    /// Checks that the settings describe a realisable impairment; the error is one line naming
    /// the flag.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("--loss", self.loss),
            ("--reorder", self.reorder),
            ("--duplicate", self.duplicate),
        ] {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(format!(
                    "{name} {}% is out of range: use 0%..100%",
                    p * 100.0
                ));
            }
        }
        let (lo, hi) = (*self.reorder_depth.start(), *self.reorder_depth.end());
        if lo == 0 || lo > hi || hi > MAX_DEPTH {
            return Err(format!(
                "--reorder-depth {lo}..{hi} is out of range: use 1..{MAX_DEPTH}, low <= high"
            ));
        }
        if let Some(mean) = self.burst {
            if mean.is_nan() || mean < 1.0 {
                return Err(format!("--burst-loss {mean} must be at least 1 datagram"));
            }
            if self.loss == 0.0 {
                return Err("--burst-loss needs --loss (the average loss rate)".into());
            }
            if self.loss >= 1.0 || self.loss / (mean * (1.0 - self.loss)) > 1.0 {
                return Err(format!(
                    "--loss {}% cannot be reached with bursts of mean {mean}: at most {:.2}%",
                    self.loss * 100.0,
                    mean / (1.0 + mean) * 100.0
                ));
            }
        }
        if let Some(r) = self.rate {
            let v = match r {
                Rate::BitsPerSec(v) | Rate::PacketsPerSec(v) => v,
            };
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("--rate {r} must be a positive rate"));
            }
        }
        Ok(())
    }
}

/// Parses a reorder depth: `8` (exactly 8), `1..64` or `1..=64` (both inclusive).
pub(crate) fn parse_depth(text: &str) -> Result<RangeInclusive<u32>, String> {
    let t = text.trim();
    let num = |s: &str| -> Result<u32, String> {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("invalid reorder depth '{text}' (use N or LOW..HIGH, e.g. 1..64)"))
    };
    let (lo, hi) = match t.split_once("..") {
        Some((a, b)) => (num(a)?, num(b.strip_prefix('=').unwrap_or(b))?),
        None => {
            let n = num(t)?;
            (n, n)
        }
    };
    if lo == 0 {
        return Err(format!(
            "reorder depth '{text}': a datagram is held back for at least 1 later one"
        ));
    }
    if lo > hi {
        return Err(format!(
            "reorder depth '{text}': the low end is above the high end"
        ));
    }
    if hi > MAX_DEPTH {
        return Err(format!(
            "reorder depth '{text}' is out of range: at most {MAX_DEPTH}"
        ));
    }
    Ok(lo..=hi)
}

/// The fate of one datagram, decided at its arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Dropped (nothing else applies).
    pub drop: bool,
    /// Copies to emit: 1, or 2 when duplicated.
    pub copies: u8,
    /// Later datagrams to wait for (0: not held back).
    pub hold: u32,
    /// Delay from arrival to the reorder stage, in nanoseconds.
    pub delay_ns: u64,
}

/// Loss process.
#[derive(Debug, Clone)]
enum Loss {
    None,
    Bernoulli(f64),
    /// Gilbert chain: `to_bad` from the good state, `to_good` from the bad one.
    Burst {
        to_bad: f64,
        to_good: f64,
        bad: bool,
    },
}

/// Decides each datagram's [`Verdict`] from the settings and a seeded generator.
#[derive(Debug, Clone)]
pub(crate) struct Impairer {
    s: Settings,
    loss: Loss,
    rng: SeededRng,
}

impl Impairer {
    /// An impairer for valid settings (see [`Settings::validate`]).
    pub fn new(s: Settings) -> Impairer {
        let loss = match s.burst {
            _ if s.loss == 0.0 => Loss::None,
            None => Loss::Bernoulli(s.loss),
            Some(mean) => {
                let to_good = 1.0 / mean;
                Loss::Burst {
                    to_bad: (s.loss * to_good / (1.0 - s.loss)).min(1.0),
                    to_good,
                    bad: false,
                }
            }
        };
        Impairer {
            rng: crate::seeded::rng(s.seed),
            loss,
            s,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.s
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    fn lose(&mut self) -> bool {
        match self.loss {
            Loss::None => false,
            Loss::Bernoulli(p) => self.chance(p),
            Loss::Burst {
                to_bad,
                to_good,
                bad,
            } => {
                let flip = self.chance(if bad { to_good } else { to_bad });
                let now_bad = bad != flip;
                if let Loss::Burst { bad, .. } = &mut self.loss {
                    *bad = now_bad;
                }
                now_bad
            }
        }
    }

    /// Decides the fate of the next datagram.
    pub(crate) fn decide(&mut self) -> Verdict {
        if self.lose() {
            return Verdict {
                drop: true,
                copies: 0,
                hold: 0,
                delay_ns: 0,
            };
        }
        let copies = if self.chance(self.s.duplicate) { 2 } else { 1 };
        let hold = if self.chance(self.s.reorder) {
            self.rng.random_range(self.s.reorder_depth.clone())
        } else {
            0
        };
        let base = self.s.delay.as_nanos() as i128;
        let j = self.s.jitter.as_nanos() as i128;
        let delay = if j > 0 {
            base + self.rng.random_range(-j..=j)
        } else {
            base
        };
        Verdict {
            drop: false,
            copies,
            hold,
            delay_ns: delay.clamp(0, u64::MAX as i128) as u64,
        }
    }
}

/// The most datagrams the pipeline holds (delayed, held back, queued for the link): a long
/// `--delay` at a high rate cannot make the relay buffer without bound.
pub const MAX_INSIDE: usize = 1 << 15;

/// Counts of what the pipeline did.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct Counters {
    /// Datagrams offered.
    pub offered: u64,
    /// Dropped by the loss process.
    pub dropped: u64,
    /// Tail-dropped because the rate-limited link's queue was full, or the pipeline held
    /// [`MAX_INSIDE`] datagrams.
    pub overflow: u64,
    /// Datagrams emitted twice (extra copies made).
    pub duplicated: u64,
    /// Datagrams held back for reordering.
    pub held_back: u64,
    /// Held-back datagrams released by the time limit or the end of input, before their `k`
    /// later datagrams came.
    pub released_early: u64,
}

/// One emitted datagram: send `copies` copies of `item`, in this order.
#[derive(Debug, PartialEq, Eq)]
pub struct Emit<T> {
    pub item: T,
    pub copies: u8,
    pub len: usize,
}

/// A datagram in the delay stage, ordered by (release time, arrival serial).
struct Delayed<T> {
    due: u64,
    serial: u64,
    item: T,
    len: usize,
    v: Verdict,
}

impl<T> PartialEq for Delayed<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.serial) == (o.due, o.serial)
    }
}
impl<T> Eq for Delayed<T> {}
impl<T> PartialOrd for Delayed<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Delayed<T> {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.due, self.serial).cmp(&(o.due, o.serial))
    }
}

struct Held<T> {
    /// Arrival order: only datagrams that arrived later count towards `remaining`.
    serial: u64,
    item: T,
    len: usize,
    copies: u8,
    remaining: u32,
    deadline: u64,
}

/// What [`Pipeline::offer`] did with a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// Taken: it will come out of [`Pipeline::poll`].
    Accepted,
    /// Dropped by the loss process; the item is handed back.
    Dropped(T),
}

/// The impairment stages around an [`Impairer`]: see the [module docs](self). Generic over the
/// datagram handle `T` (the driver's buffer), which it moves but never looks into.
pub struct Pipeline<T> {
    imp: Impairer,
    serial: u64,
    delayed: BinaryHeap<Reverse<Delayed<T>>>,
    held: Vec<Held<T>>,
    link: VecDeque<(u64, Emit<T>)>,
    /// When the link finishes sending what it has queued (ns).
    link_free: u64,
    /// Datagrams tail-dropped by the link, for the caller to collect.
    overflowed: Vec<T>,
    closed: bool,
    counters: Counters,
}

impl<T> Pipeline<T> {
    pub fn new(s: Settings) -> Pipeline<T> {
        Pipeline {
            imp: Impairer::new(s),
            serial: 0,
            delayed: BinaryHeap::new(),
            held: Vec::new(),
            link: VecDeque::new(),
            link_free: 0,
            overflowed: Vec::new(),
            closed: false,
            counters: Counters::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        self.imp.settings()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Offers a datagram of `len` bytes that arrived at `now` (ns). With [`MAX_INSIDE`]
    /// datagrams inside already, it is dropped as an overflow (the decision is still drawn, so
    /// the seeded sequence of fates does not shift).
    pub fn offer(&mut self, now: u64, item: T, len: usize) -> Offer<T> {
        self.counters.offered += 1;
        let v = self.imp.decide();
        if v.drop {
            self.counters.dropped += 1;
            return Offer::Dropped(item);
        }
        if self.len() >= MAX_INSIDE {
            self.counters.overflow += 1;
            return Offer::Dropped(item);
        }
        self.serial += 1;
        self.delayed.push(Reverse(Delayed {
            due: now.saturating_add(v.delay_ns),
            serial: self.serial,
            item,
            len,
            v,
        }));
        Offer::Accepted
    }

    /// No more input: held-back datagrams are released as soon as the delay stage is empty.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Nothing left inside.
    pub fn is_empty(&self) -> bool {
        self.delayed.is_empty() && self.held.is_empty() && self.link.is_empty()
    }

    /// Datagrams inside (delayed, held back or waiting for the link).
    pub fn len(&self) -> usize {
        self.delayed.len() + self.held.len() + self.link.len()
    }

    /// Datagrams the link tail-dropped since the last call (to recycle their buffers).
    pub fn take_overflowed(&mut self) -> std::vec::Drain<'_, T> {
        self.overflowed.drain(..)
    }

    /// The earliest time something inside becomes due (ns), if anything is inside.
    pub fn next_deadline(&self) -> Option<u64> {
        let d = self.delayed.peek().map(|Reverse(d)| d.due);
        let h = if self.closed && self.delayed.is_empty() && !self.held.is_empty() {
            Some(0)
        } else {
            self.held.iter().map(|h| h.deadline).min()
        };
        let l = self.link.front().map(|(due, _)| *due);
        [d, h, l].into_iter().flatten().min()
    }

    /// The next datagram to send at `now`, in send order; `None` when nothing is due.
    /// `poll(u64::MAX)` until `None` flushes everything, in order.
    pub fn poll(&mut self, now: u64) -> Option<Emit<T>> {
        loop {
            if let Some((due, _)) = self.link.front() {
                if *due <= now {
                    return self.link.pop_front().map(|(_, e)| e);
                }
            }
            // Advance the earliest event among the delay and hold stages; stop when none is due.
            let next_delayed = self
                .delayed
                .peek()
                .map(|Reverse(d)| d.due)
                .filter(|&t| t <= now);
            let release_all = self.closed && self.delayed.is_empty() && !self.held.is_empty();
            let next_held = self
                .held
                .iter()
                .enumerate()
                .filter(|(_, h)| release_all || h.deadline <= now)
                .min_by_key(|(i, h)| (if release_all { 0 } else { h.deadline }, *i))
                .map(|(i, h)| (i, h.deadline));
            match (next_delayed, next_held) {
                (None, None) => return None,
                (Some(t), Some((i, hd))) if hd < t || release_all => self.release_held(i, hd),
                (Some(_), _) => {
                    let Reverse(d) = self.delayed.pop().expect("peeked");
                    if d.v.hold > 0 {
                        self.counters.held_back += 1;
                        self.held.push(Held {
                            serial: d.serial,
                            item: d.item,
                            len: d.len,
                            copies: d.v.copies,
                            remaining: d.v.hold,
                            deadline: d.due.saturating_add(HOLD_LIMIT_NS),
                        });
                    } else {
                        self.emit(d.due, d.serial, d.item, d.len, d.v.copies);
                    }
                }
                (None, Some((i, hd))) => self.release_held(i, hd),
            }
        }
    }

    fn release_held(&mut self, i: usize, at: u64) {
        let h = self.held.remove(i);
        self.counters.released_early += 1;
        self.emit(at, h.serial, h.item, h.len, h.copies);
    }

    /// Emits a datagram (arrival `serial`) at `at` and, in turn, every held-back one it
    /// completes: each held-back datagram counts the emissions of datagrams that arrived after
    /// it, so with nothing else going on it is passed by exactly its `k`.
    fn emit(&mut self, at: u64, serial: u64, item: T, len: usize, copies: u8) {
        let mut next = Some((serial, item, len, copies));
        while let Some((serial, item, len, copies)) = next.take() {
            self.enqueue_link(at, item, len, copies);
            for h in &mut self.held {
                if h.serial < serial {
                    h.remaining = h.remaining.saturating_sub(1);
                }
            }
            // The earliest-held complete datagram goes next (one at a time, so the release of
            // one counts for the others held before it).
            if let Some(i) = self.held.iter().position(|h| h.remaining == 0) {
                let h = self.held.remove(i);
                next = Some((h.serial, h.item, h.len, h.copies));
            }
        }
    }

    fn enqueue_link(&mut self, at: u64, item: T, len: usize, copies: u8) {
        if copies > 1 {
            self.counters.duplicated += 1;
        }
        let e = Emit { item, copies, len };
        let Some(rate) = self.imp.s.rate else {
            self.link.push_back((at, e));
            return;
        };
        if self.link.len() >= LINK_QUEUE_LIMIT {
            self.counters.overflow += 1;
            if copies > 1 {
                self.counters.duplicated -= 1;
            }
            self.overflowed.push(e.item);
            return;
        }
        let per_copy = match rate {
            Rate::BitsPerSec(b) => len as f64 * 8.0 * 1e9 / b,
            Rate::PacketsPerSec(p) => 1e9 / p,
        };
        let start = self.link_free.max(at);
        self.link_free = start.saturating_add((per_copy * copies as f64).round() as u64);
        self.link.push_back((self.link_free, e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(p: &mut Pipeline<u64>, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(e) = p.poll(now) {
            for _ in 0..e.copies {
                out.push(e.item);
            }
        }
        out
    }

    fn run(s: Settings, n: u64) -> (Vec<u64>, Counters) {
        let mut p = Pipeline::new(s);
        let mut out = Vec::new();
        for i in 0..n {
            let now = i * 1000;
            let _ = p.offer(now, i, 100);
            out.extend(drain(&mut p, now));
        }
        p.close();
        out.extend(drain(&mut p, u64::MAX));
        assert!(p.is_empty());
        (out, p.counters())
    }

    #[test]
    fn parse_flags() {
        assert_eq!(parse_depth("1..64"), Ok(1..=64));
        assert_eq!(parse_depth("2..=3"), Ok(2..=3));
        assert_eq!(parse_depth("5"), Ok(5..=5));
        assert!(parse_depth("0").is_err());
        assert!(parse_depth("0..4").is_err());
        assert!(parse_depth("5..2").is_err());
        assert!(parse_depth("1..99999").is_err());
        assert!(parse_depth("a..b").is_err());
    }

    #[test]
    fn validate_settings() {
        assert!(Settings::default().validate().is_ok());
        let bad = |f: fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(|s| s.loss = 1.5).contains("--loss"));
        assert!(bad(|s| s.burst = Some(3.0)).contains("needs --loss"));
        assert!(bad(|s| {
            s.loss = 0.6;
            s.burst = Some(1.0)
        })
        .contains("cannot be reached"));
        assert!(bad(|s| s.reorder_depth = 0..=3).contains("--reorder-depth"));
    }

    #[test]
    fn no_impairment_is_a_wire() {
        let (out, c) = run(Settings::default(), 1000);
        assert_eq!(out, (0..1000).collect::<Vec<_>>());
        assert_eq!(c.offered, 1000);
        assert_eq!(c.dropped + c.duplicated + c.held_back, 0);
    }

    #[test]
    fn same_seed_same_outcome() {
        let s = Settings {
            loss: 0.05,
            reorder: 0.05,
            duplicate: 0.05,
            jitter: Duration::from_micros(3),
            seed: 7,
            ..Settings::default()
        };
        assert_eq!(run(s.clone(), 5000), run(s.clone(), 5000));
        let other = Settings {
            seed: 8,
            ..s.clone()
        };
        assert_ne!(run(s, 5000).0, run(other, 5000).0);
    }

    #[test]
    fn bernoulli_loss_rate() {
        let s = Settings {
            loss: 0.1,
            seed: 1,
            ..Settings::default()
        };
        let (out, c) = run(s, 100_000);
        assert_eq!(out.len() as u64 + c.dropped, 100_000);
        assert!((9_000..11_000).contains(&c.dropped), "{c:?}");
        assert!(out.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn burst_loss_rate_and_burst_length() {
        let s = Settings {
            loss: 0.05,
            burst: Some(8.0),
            seed: 3,
            ..Settings::default()
        };
        let (out, c) = run(s, 200_000);
        assert!((8_000..12_000).contains(&c.dropped), "{c:?}");
        // Mean burst length: dropped datagrams over the number of gaps.
        let gaps = out.windows(2).filter(|w| w[1] != w[0] + 1).count() as f64;
        let mean = c.dropped as f64 / gaps;
        assert!((6.5..9.5).contains(&mean), "mean burst {mean}");
    }

    #[test]
    fn hold_back_gives_exact_extent() {
        // Every 10th datagram held for exactly 3 later ones.
        let mut p = Pipeline::new(Settings {
            reorder: 1.0,
            reorder_depth: 3..=3,
            ..Settings::default()
        });
        // reorder = 1.0 holds everything; a held datagram released frees the ones before it
        // in cascade, so check the simplest case instead with one held datagram:
        let _ = p.offer(0, 0u64, 10);
        assert_eq!(p.poll(0), None);
        assert_eq!(p.len(), 1);
        assert_eq!(p.next_deadline(), Some(HOLD_LIMIT_NS));
        assert_eq!(drain(&mut p, HOLD_LIMIT_NS), vec![0]);
        assert_eq!(p.counters().released_early, 1);

        let n = 3000;
        let (out, c) = run(
            Settings {
                reorder: 0.1,
                reorder_depth: 3..=3,
                seed: 11,
                ..Settings::default()
            },
            n,
        );
        assert!(c.held_back > 200, "{c:?}");
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        // Each held-back datagram is passed by exactly 3 later ones (its `k`), except at the end
        // of the stream, where it is released when the input closes.
        let mut passed = Vec::new();
        for (i, &s) in out.iter().enumerate() {
            let passers = out[..i].iter().filter(|&&x| x > s).count();
            if passers > 0 {
                passed.push((s, passers));
            }
        }
        assert!(passed.iter().all(|&(_, p)| p == 3), "{passed:?}");
        assert!(c.held_back - passed.len() as u64 <= 3);
        assert_eq!(c.released_early, c.held_back - passed.len() as u64);
    }

    #[test]
    fn duplicates_come_back_to_back() {
        let (out, c) = run(
            Settings {
                duplicate: 0.2,
                seed: 5,
                ..Settings::default()
            },
            10_000,
        );
        assert_eq!(out.len() as u64, 10_000 + c.duplicated);
        assert!((1_700..2_300).contains(&c.duplicated), "{c:?}");
        let mut dedup = out.clone();
        dedup.dedup();
        assert_eq!(dedup, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn delay_and_jitter() {
        let mut p = Pipeline::new(Settings {
            delay: Duration::from_millis(2),
            ..Settings::default()
        });
        let _ = p.offer(1_000, 1u64, 10);
        assert_eq!(p.next_deadline(), Some(2_001_000));
        assert_eq!(p.poll(2_000_999), None);
        assert_eq!(p.poll(2_001_000).map(|e| e.item), Some(1));

        // Jitter larger than the spacing reorders; every datagram comes out exactly once, within
        // delay +- jitter of its arrival.
        let mut p = Pipeline::new(Settings {
            delay: Duration::from_micros(100),
            jitter: Duration::from_micros(50),
            seed: 9,
            ..Settings::default()
        });
        let mut out = Vec::new();
        for i in 0..10_000u64 {
            let _ = p.offer(i * 1_000, i, 10);
            while let Some(e) = p.poll(i * 1_000) {
                let due = (i * 1_000) as i64 - (e.item * 1_000) as i64;
                assert!((50_000..=151_000).contains(&due), "{due}");
                out.push(e.item);
            }
        }
        out.extend(drain(&mut p, u64::MAX));
        assert!(out.windows(2).any(|w| w[0] > w[1]));
        out.sort();
        assert_eq!(out, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn what_is_inside_is_bounded() {
        // Issue #17.8: the delay queue had no bound.
        let mut p = Pipeline::new(Settings {
            delay: Duration::from_secs(3600),
            ..Settings::default()
        });
        for i in 0..(MAX_INSIDE as u64 + 100) {
            let _ = p.offer(0, i, 100);
        }
        assert_eq!(p.len(), MAX_INSIDE);
        assert_eq!(p.counters().overflow, 100);
    }

    #[test]
    fn rate_paces_and_overflows() {
        let mut p = Pipeline::new(Settings {
            rate: Some(Rate::PacketsPerSec(1000.0)),
            ..Settings::default()
        });
        for i in 0..(LINK_QUEUE_LIMIT as u64 + 10) {
            let _ = p.offer(0, i, 100);
        }
        assert_eq!(p.poll(0), None);
        assert_eq!(p.poll(1_000_000).map(|e| e.item), Some(0));
        assert_eq!(p.poll(1_999_999), None);
        assert_eq!(p.poll(2_000_000).map(|e| e.item), Some(1));
        assert_eq!(p.counters().overflow, 10);
        assert_eq!(p.take_overflowed().count(), 10);
        let rest = drain(&mut p, u64::MAX);
        assert_eq!(rest.len(), LINK_QUEUE_LIMIT - 2);

        let mut p = Pipeline::new(Settings {
            rate: Some(Rate::BitsPerSec(8e6)),
            ..Settings::default()
        });
        let _ = p.offer(0, 0u64, 1000); // 1000 bytes at 8 Mbit/s: 1 ms
        assert_eq!(p.next_deadline(), Some(0));
        assert_eq!(p.poll(0), None);
        assert_eq!(p.next_deadline(), Some(1_000_000));
    }
}
