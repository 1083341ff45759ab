//! The receiver's sequence tracker: classifies every valid datagram by its sequence number, in
//! the style of RFC 4737, with memory bounded by a fixed window rather than by the test's length.
//!
//! # Classes
//! - The first datagram, and any datagram whose sequence is above the highest seen so far, is
//!   **in order** (gaps are allowed: the missing ones may still arrive later).
//! - A datagram whose sequence equals the highest, or was already received, is a **duplicate**.
//! - A datagram below the highest, not received before and within the window, is **reordered**,
//!   with extent `highest - seq` (RFC 4737's reordering extent).
//! - A datagram at least `window` below the highest is **too late**: it falls outside the
//!   bitmap, so whether it is new or a duplicate cannot be told. It is counted apart and never
//!   counted as unique (so it counts as lost in the final accounting).
//!
//! # The window
//! The tracker remembers which of the `window` sequence numbers `highest - window + 1 ..= highest`
//! were received, in a ring of `window / 64` `u64` words indexed by `seq & (window - 1)` (the
//! window is a power of two). When the highest advances from `h` to `s`, the slots of `h + 1 .. s`
//! are cleared (they held sequence numbers that just left the window) and the bit of `s` is set.
//! The in-order step (`s == h + 1`) only sets one bit; a jump of `window` or more clears the whole
//! ring, so any jump costs at most `window / 64` word writes. [`DEFAULT_WINDOW`] is 2^24 sequence
//! numbers (a 2 MiB bitmap): at 10 million datagrams per second a datagram may arrive 1.6 s after
//! a higher one and still be classified.
//!
//! At the end, [`Tracker::finish`] turns the counts into an [`Accounting`] against the number of
//! datagrams the sender says it sent: `lost = sent - unique`, and `unique + lost == sent`.

/// Sequence numbers tracked in flight by default (a 2 MiB bitmap).
pub const DEFAULT_WINDOW: u64 = 1 << 24;

/// Smallest window: one bitmap word.
const MIN_WINDOW: u64 = 64;

/// The class of one received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The first datagram, or a sequence above every one seen before (gaps allowed).
    InOrder,
    /// A sequence below the highest seen, not seen before, within the window.
    Reordered {
        /// `highest - seq` at arrival (RFC 4737 reordering extent), in `1 .. window`.
        extent: u64,
    },
    /// A sequence already received (within the window), or equal to the highest.
    Duplicate,
    /// A sequence at least `window` below the highest: outside the bitmap, not classifiable.
    TooLate,
}

/// Running counts per class.
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
pub struct Counts {
    /// Datagrams classified [`Class::InOrder`].
    pub in_order: u64,
    /// Datagrams classified [`Class::Reordered`].
    pub reordered: u64,
    /// Datagrams classified [`Class::Duplicate`].
    pub duplicate: u64,
    /// Datagrams classified [`Class::TooLate`].
    pub too_late: u64,
    /// The largest reordering extent seen (0 when nothing was reordered).
    pub max_extent: u64,
}

/// The final accounting of a test: the tracker's counts against what the sender sent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Accounting {
    /// Datagrams the sender says it sent (sequence numbers `0 .. sent`).
    pub sent: u64,
    /// Distinct sequence numbers received and classified: `in_order + reordered`.
    pub unique: u64,
    /// `sent - unique` (too-late datagrams count as lost).
    pub lost: u64,
    /// Datagrams classified [`Class::InOrder`].
    pub in_order: u64,
    /// Datagrams classified [`Class::Reordered`].
    pub reordered: u64,
    /// Datagrams classified [`Class::Duplicate`].
    pub duplicate: u64,
    /// Datagrams classified [`Class::TooLate`].
    pub too_late: u64,
    /// The largest reordering extent seen.
    pub max_extent: u64,
}

impl Accounting {
    /// The accounting of several streams together (each its own sequence space): every count
    /// added, the largest extent. `unique + lost == sent` holds for the sum when it holds for
    /// each part.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Accounting>) -> Accounting {
        let mut s = Accounting {
            sent: 0,
            unique: 0,
            lost: 0,
            in_order: 0,
            reordered: 0,
            duplicate: 0,
            too_late: 0,
            max_extent: 0,
        };
        for a in parts {
            s.sent += a.sent;
            s.unique += a.unique;
            s.lost += a.lost;
            s.in_order += a.in_order;
            s.reordered += a.reordered;
            s.duplicate += a.duplicate;
            s.too_late += a.too_late;
            s.max_extent = s.max_extent.max(a.max_extent);
        }
        s
    }
}

/// The tracker's counts contradict the sender's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// The receiver saw a sequence number the sender never sent.
    #[error("receiver saw sequence {seq} but the sender says it sent only {sent}")]
    BeyondSent {
        /// The highest sequence number received.
        seq: u64,
        /// The sender's count (valid sequences are `0 .. sent`).
        sent: u64,
    },
}

/// Classifies received sequence numbers; see the [module documentation](self).
#[derive(Clone)]
pub struct Tracker {
    /// Ring of `window / 64` words; bit `seq & mask` says whether `seq` was received, for the
    /// sequences `highest - window + 1 ..= highest`.
    bits: Box<[u64]>,
    /// `window - 1`.
    mask: u64,
    highest: Option<u64>,
    counts: Counts,
}

impl Tracker {
    /// A tracker for `window` sequence numbers in flight, rounded up to a power of two and to at
    /// least 64. Memory: `window / 8` bytes.
    ///
    /// # Panics
    /// If the rounded window does not fit in a `u64` (above 2^63).
    pub fn new(window: u64) -> Tracker {
        let window = window
            .max(MIN_WINDOW)
            .checked_next_power_of_two()
            .expect("tracker window above 2^63");
        let words = usize::try_from(window / 64).expect("tracker window too large for memory");
        Tracker {
            bits: vec![0u64; words].into_boxed_slice(),
            mask: window - 1,
            highest: None,
            counts: Counts::default(),
        }
    }

    /// The window (a power of two, at least 64): sequences at least this far below the highest
    /// are [`Class::TooLate`].
    pub fn window(&self) -> u64 {
        self.mask + 1
    }

    /// Classifies one received sequence number and updates the counts.
    #[inline]
    pub fn record(&mut self, seq: u64) -> Class {
        match self.highest {
            Some(h) if seq > h => {
                if seq - h != 1 {
                    self.clear_gap(h, seq);
                }
                self.set(seq);
                self.highest = Some(seq);
                self.counts.in_order += 1;
                Class::InOrder
            }
            Some(h) => self.record_old(h, seq),
            None => {
                self.set(seq);
                self.highest = Some(seq);
                self.counts.in_order += 1;
                Class::InOrder
            }
        }
    }

    /// `seq <= h`: duplicate, too late or reordered.
    #[inline]
    fn record_old(&mut self, h: u64, seq: u64) -> Class {
        let extent = h - seq;
        if extent == 0 {
            self.counts.duplicate += 1;
            return Class::Duplicate;
        }
        if extent > self.mask {
            self.counts.too_late += 1;
            return Class::TooLate;
        }
        let (word, bit) = self.slot(seq);
        let w = &mut self.bits[word];
        if *w & bit != 0 {
            self.counts.duplicate += 1;
            return Class::Duplicate;
        }
        *w |= bit;
        self.counts.reordered += 1;
        self.counts.max_extent = self.counts.max_extent.max(extent);
        Class::Reordered { extent }
    }

    /// The word index and bit mask of `seq` in the ring.
    #[inline(always)]
    fn slot(&self, seq: u64) -> (usize, u64) {
        (((seq & self.mask) >> 6) as usize, 1u64 << (seq & 63))
    }

    #[inline(always)]
    fn set(&mut self, seq: u64) {
        let (word, bit) = self.slot(seq);
        self.bits[word] |= bit;
    }

    /// Clears the slots of `h + 1 .. s` (exclusive of `s`), `s > h + 1`, a word at a time; a
    /// jump of a whole window or more clears the ring.
    #[inline(never)]
    fn clear_gap(&mut self, h: u64, s: u64) {
        let jump = s - h;
        if jump > self.mask {
            self.bits.fill(0);
            return;
        }
        let mut pos = (h + 1) & self.mask;
        let mut left = jump - 1; // < window, so the range wraps at most once
        while left > 0 {
            let off = pos & 63;
            let n = (64 - off).min(left);
            let m = if n == 64 {
                !0
            } else {
                ((1u64 << n) - 1) << off
            };
            self.bits[(pos >> 6) as usize] &= !m;
            pos = (pos + n) & self.mask;
            left -= n;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The highest sequence number seen, `None` before the first datagram.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Distinct sequence numbers received: `in_order + reordered`.
    pub fn unique(&self) -> u64 {
        self.counts.in_order + self.counts.reordered
    }

    /// Sequence numbers up to the highest seen that have not (yet) arrived:
    /// `(highest + 1) - unique`, saturating; 0 before the first datagram.
    pub fn lost_so_far(&self) -> u64 {
        match self.highest {
            // unique >= 1 here (the first datagram is in order), so this is (h + 1) - unique
            // without overflow at h == u64::MAX.
            Some(h) => h.saturating_sub(self.unique() - 1),
            None => 0,
        }
    }

    /// The final accounting against `sent`, the number of datagrams the sender says it sent
    /// (sequences `0 .. sent`): `lost = sent - unique`.
    ///
    /// # Errors
    /// [`TrackerError::BeyondSent`] if a sequence `>= sent` was received.
    pub fn finish(&self, sent: u64) -> Result<Accounting, TrackerError> {
        if let Some(h) = self.highest {
            if h >= sent {
                return Err(TrackerError::BeyondSent { seq: h, sent });
            }
        }
        let unique = self.unique();
        // Every unique sequence is distinct and <= highest < sent, so unique <= sent.
        let lost = sent - unique;
        debug_assert_eq!(unique + lost, sent, "unique + lost must equal sent");
        let c = self.counts;
        Ok(Accounting {
            sent,
            unique,
            lost,
            in_order: c.in_order,
            reordered: c.reordered,
            duplicate: c.duplicate,
            too_late: c.too_late,
            max_extent: c.max_extent,
        })
    }
}

impl std::fmt::Debug for Tracker {
    /// Window, highest and counts; not the bitmap (2 MiB by default).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("window", &self.window())
            .field("highest", &self.highest)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Default for Tracker {
    /// A tracker with [`DEFAULT_WINDOW`].
    fn default() -> Self {
        Tracker::new(DEFAULT_WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// The reference model: every sequence ever accepted plus the running highest.
    struct Model {
        window: u64,
        seen: HashSet<u64>,
        highest: Option<u64>,
        counts: Counts,
    }

    impl Model {
        fn new(window: u64) -> Model {
            Model {
                window,
                seen: HashSet::new(),
                highest: None,
                counts: Counts::default(),
            }
        }

        fn record(&mut self, seq: u64) -> Class {
            let class = match self.highest {
                None => Class::InOrder,
                Some(h) if seq > h => Class::InOrder,
                Some(h) if seq == h => Class::Duplicate,
                Some(h) if h - seq >= self.window => Class::TooLate,
                Some(_) if self.seen.contains(&seq) => Class::Duplicate,
                Some(h) => Class::Reordered { extent: h - seq },
            };
            match class {
                Class::InOrder => {
                    self.highest = Some(seq);
                    self.seen.insert(seq);
                    self.counts.in_order += 1;
                }
                Class::Reordered { extent } => {
                    self.seen.insert(seq);
                    self.counts.reordered += 1;
                    self.counts.max_extent = self.counts.max_extent.max(extent);
                }
                Class::Duplicate => self.counts.duplicate += 1,
                Class::TooLate => self.counts.too_late += 1,
            }
            class
        }

        fn finish(&self, sent: u64) -> Option<Accounting> {
            if self.highest.is_some_and(|h| h >= sent) {
                return None;
            }
            let unique = self.counts.in_order + self.counts.reordered;
            let c = self.counts;
            Some(Accounting {
                sent,
                unique,
                lost: sent - unique,
                in_order: c.in_order,
                reordered: c.reordered,
                duplicate: c.duplicate,
                too_late: c.too_late,
                max_extent: c.max_extent,
            })
        }
    }

    fn run(window: u64, seqs: &[u64]) -> (Tracker, Vec<Class>) {
        let mut t = Tracker::new(window);
        let classes = seqs.iter().map(|&s| t.record(s)).collect();
        (t, classes)
    }

    #[test]
    fn window_is_rounded_up() {
        assert_eq!(Tracker::new(0).window(), 64);
        assert_eq!(Tracker::new(64).window(), 64);
        assert_eq!(Tracker::new(65).window(), 128);
        assert_eq!(Tracker::new(1000).window(), 1024);
        assert_eq!(Tracker::default().window(), DEFAULT_WINDOW);
    }

    #[test]
    fn debug_omits_the_bitmap() {
        let mut t = Tracker::default();
        t.record(3);
        let d = format!("{t:?}");
        assert!(
            d.contains("window: 16777216") && d.contains("highest: Some(3)"),
            "{d}"
        );
        assert!(d.len() < 300, "{d}");
    }

    #[test]
    fn empty_tracker() {
        let t = Tracker::new(64);
        assert_eq!(t.highest(), None);
        assert_eq!(t.unique(), 0);
        assert_eq!(t.lost_so_far(), 0);
        assert_eq!(t.counts(), Counts::default());
        let a = t.finish(0).unwrap();
        assert_eq!((a.sent, a.unique, a.lost), (0, 0, 0));
        let a = t.finish(10).unwrap();
        assert_eq!((a.sent, a.unique, a.lost), (10, 0, 10));
    }

    #[test]
    fn in_order_with_gaps() {
        let (t, c) = run(64, &[0, 1, 2, 5, 6, 100]);
        assert!(c.iter().all(|&c| c == Class::InOrder));
        assert_eq!(t.highest(), Some(100));
        assert_eq!(t.unique(), 6);
        assert_eq!(t.lost_so_far(), 95);
        let a = t.finish(101).unwrap();
        assert_eq!((a.unique, a.lost, a.in_order), (6, 95, 6));
    }

    #[test]
    fn first_datagram_is_in_order_whatever_its_sequence() {
        let (t, c) = run(64, &[1000, 990, 1000]);
        assert_eq!(
            c,
            [
                Class::InOrder,
                Class::Reordered { extent: 10 },
                Class::Duplicate
            ]
        );
        assert_eq!(t.lost_so_far(), 999);
    }

    #[test]
    fn reordered_and_its_duplicates() {
        let (t, c) = run(64, &[0, 3, 1, 2, 1, 2, 3, 0]);
        assert_eq!(
            c,
            [
                Class::InOrder,
                Class::InOrder,
                Class::Reordered { extent: 2 },
                Class::Reordered { extent: 1 },
                Class::Duplicate,
                Class::Duplicate,
                Class::Duplicate,
                Class::Duplicate,
            ]
        );
        let k = t.counts();
        assert_eq!(
            k,
            Counts {
                in_order: 2,
                reordered: 2,
                duplicate: 4,
                too_late: 0,
                max_extent: 2
            }
        );
        assert_eq!(t.lost_so_far(), 0);
    }

    #[test]
    fn duplicate_of_highest() {
        let (t, c) = run(64, &[7, 7, 7]);
        assert_eq!(c, [Class::InOrder, Class::Duplicate, Class::Duplicate]);
        assert_eq!(t.unique(), 1);
    }

    #[test]
    fn window_edges() {
        let w = 256;
        // exactly window - 1 back: still tracked
        let (t, c) = run(w, &[0, w, 1]);
        assert_eq!(c[2], Class::Reordered { extent: w - 1 });
        assert_eq!(t.counts().max_extent, w - 1);
        // window back: too late, and not unique
        let (t, c) = run(w, &[0, w, 0]);
        assert_eq!(c[2], Class::TooLate);
        let (t2, c2) = run(w, &[1, w + 1, 1]);
        assert_eq!(c2[2], Class::TooLate);
        assert_eq!(t.unique(), 2);
        assert_eq!(t.counts().too_late, 1);
        assert_eq!(t2.counts().too_late, 1);
        // a duplicate of something now outside the window is too late, not duplicate
        let (_, c) = run(w, &[0, 1, 2, 2 + w, 1]);
        assert_eq!(c[4], Class::TooLate);
        // a missing sequence at window - 1 back arrives after the ring wrapped around
        let mut seqs: Vec<u64> = (0..3 * w).filter(|&s| s != 2 * w + 10).collect();
        seqs.push(2 * w + 10);
        let (t, c) = run(w, &seqs);
        assert_eq!(
            *c.last().unwrap(),
            Class::Reordered {
                extent: 3 * w - 1 - (2 * w + 10)
            }
        );
        assert_eq!(t.lost_so_far(), 0);
        let a = t.finish(3 * w).unwrap();
        assert_eq!((a.unique, a.lost, a.duplicate), (3 * w, 0, 0));
    }

    #[test]
    fn gap_clears_stale_bits() {
        let w = 64;
        // 0..64 all received, then a jump to 100: slots of 64..100 held 0..36 and must be clear
        let mut seqs: Vec<u64> = (0..64).collect();
        seqs.push(100);
        for s in 64..100 {
            seqs.push(s);
        }
        let (t, c) = run(w, &seqs);
        for (i, s) in (64..100u64).enumerate() {
            assert_eq!(c[65 + i], Class::Reordered { extent: 100 - s }, "seq {s}");
        }
        assert_eq!(t.lost_so_far(), 0);
    }

    #[test]
    fn gaps_across_word_boundaries() {
        // jumps of many sizes, each leaves every skipped sequence reorderable exactly once
        for w in [64u64, 128, 1024] {
            let jumps = (2..=130).chain([w / 2, w - 1, w, w + 1, 5 * w]);
            for jump in jumps {
                for start in [0u64, 1, 31, 63, 64, 65, w - 1, w, 3 * w + 17] {
                    let mut t = Tracker::new(w);
                    let mut m = Model::new(w);
                    // fill the whole ring with set bits first
                    for s in start..start + w {
                        assert_eq!(t.record(s), m.record(s));
                    }
                    let h = start + w - 1;
                    let s = h + jump;
                    assert_eq!(t.record(s), m.record(s));
                    for x in (h.saturating_sub(w)..s).rev() {
                        assert_eq!(t.record(x), m.record(x), "w {w} jump {jump} start {start}");
                    }
                    assert_eq!(t.counts(), m.counts);
                }
            }
        }
    }

    #[test]
    fn big_jumps_do_not_overflow() {
        let (t, c) = run(
            DEFAULT_WINDOW,
            &[0, 1 << 40, 5, (1 << 40) - 1, u64::MAX, u64::MAX - 1],
        );
        assert_eq!(
            c,
            [
                Class::InOrder,
                Class::InOrder,
                Class::TooLate,
                Class::Reordered { extent: 1 },
                Class::InOrder,
                Class::Reordered { extent: 1 },
            ]
        );
        assert_eq!(t.highest(), Some(u64::MAX));
        assert_eq!(t.unique(), 5);
        assert_eq!(t.lost_so_far(), u64::MAX - 4); // 2^64 - 5, exact
        assert_eq!(
            t.finish(u64::MAX),
            Err(TrackerError::BeyondSent {
                seq: u64::MAX,
                sent: u64::MAX
            })
        );
    }

    #[test]
    fn near_half_of_u64() {
        let base = u64::MAX / 2 - 100;
        let seqs: Vec<u64> = [0u64, 2, 1, 3, 3, 200, 150, 150]
            .iter()
            .map(|&d| base + d)
            .collect();
        let (t, c) = run(256, &seqs);
        assert_eq!(
            c,
            [
                Class::InOrder,
                Class::InOrder,
                Class::Reordered { extent: 1 },
                Class::InOrder,
                Class::Duplicate,
                Class::InOrder,
                Class::Reordered { extent: 50 },
                Class::Duplicate,
            ]
        );
        let a = t.finish(base + 201).unwrap();
        assert_eq!(a.unique, 6);
        assert_eq!(a.unique + a.lost, a.sent);
    }

    #[test]
    fn finish_rejects_sequences_never_sent() {
        let (t, _) = run(64, &[0, 1, 2]);
        let e = t.finish(2).unwrap_err();
        assert_eq!(e, TrackerError::BeyondSent { seq: 2, sent: 2 });
        assert_eq!(
            e.to_string(),
            "receiver saw sequence 2 but the sender says it sent only 2"
        );
        let a = t.finish(3).unwrap();
        assert_eq!((a.unique, a.lost), (3, 0));
    }

    #[test]
    fn too_late_counts_as_lost() {
        let (t, _) = run(64, &[0, 100, 1, 2]);
        let a = t.finish(101).unwrap();
        assert_eq!((a.unique, a.too_late, a.lost), (2, 2, 99));
    }

    /// A delivery: the sequences `base + i` for `i` in a (fully or locally) shuffled `0..n`,
    /// with some dropped and some duplicated, and the window.
    fn delivery() -> impl Strategy<Value = (u64, u64, u64, Vec<u64>)> {
        let window = prop_oneof![64u64..=256, 1u64 << 10..=1 << 16, Just(DEFAULT_WINDOW)];
        let base = prop_oneof![Just(0u64), 0..u64::MAX / 2];
        (0usize..2000, window, base, any::<bool>()).prop_flat_map(|(n, window, base, local)| {
            let order: BoxedStrategy<Vec<u64>> = if local {
                // each sequence displaced by up to 300 places: realistic, mostly within window
                prop::collection::vec(0u64..300, n)
                    .prop_map(|jit| {
                        let mut v: Vec<(u64, u64)> = jit
                            .iter()
                            .enumerate()
                            .map(|(i, &j)| (i as u64 + j, i as u64))
                            .collect();
                        v.sort_unstable();
                        v.into_iter().map(|(_, s)| s).collect()
                    })
                    .boxed()
            } else {
                Just((0..n as u64).collect::<Vec<_>>())
                    .prop_shuffle()
                    .boxed()
            };
            let drops = prop::collection::vec(prop::bool::weighted(0.1), n);
            let dups = prop::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
                0..n / 4 + 1,
            );
            (Just(n as u64), Just(window), Just(base), order, drops, dups).prop_map(
                |(n, window, base, order, drops, dups)| {
                    let mut v: Vec<u64> = order
                        .into_iter()
                        .zip(drops)
                        .filter(|&(_, d)| !d)
                        .map(|(s, _)| base + s)
                        .collect();
                    if !v.is_empty() {
                        for (from, to) in dups {
                            let s = v[from.index(v.len())];
                            let at = to.index(v.len() + 1);
                            v.insert(at, s);
                        }
                    }
                    (n, window, base, v)
                },
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn sum_of_streams_keeps_the_invariant(
            streams in prop::collection::vec((0u64..500, prop::collection::vec(0u64..600, 0..300)), 1..6)
        ) {
            let parts: Vec<Accounting> = streams
                .iter()
                .map(|(sent, seqs)| {
                    let mut t = Tracker::new(64);
                    for &s in seqs.iter().filter(|&&s| s < *sent) {
                        t.record(s);
                    }
                    t.finish(*sent).unwrap()
                })
                .collect();
            let s = Accounting::sum(&parts);
            prop_assert_eq!(s.unique + s.lost, s.sent);
            prop_assert_eq!(s.sent, parts.iter().map(|a| a.sent).sum::<u64>());
            prop_assert_eq!(s.in_order + s.reordered, s.unique);
            prop_assert_eq!(s.max_extent, parts.iter().map(|a| a.max_extent).max().unwrap());
            prop_assert_eq!(Accounting::sum(&parts[..1]), parts[0]);
        }

        #[test]
        fn matches_reference_model((n, window, base, seqs) in delivery()) {
            let mut t = Tracker::new(window);
            let mut m = Model::new(t.window());
            for &s in &seqs {
                prop_assert_eq!(t.record(s), m.record(s), "seq {}", s);
            }
            prop_assert_eq!(t.counts(), m.counts);
            prop_assert_eq!(t.highest(), m.highest);
            prop_assert_eq!(t.unique(), m.seen.len() as u64);
            let expected_lost = m.highest.map_or(0, |h| h + 1 - m.seen.len() as u64);
            prop_assert_eq!(t.lost_so_far(), expected_lost);

            let sent = base + n;
            let a = t.finish(sent).unwrap();
            prop_assert_eq!(Some(a), m.finish(sent));
            prop_assert_eq!(a.unique + a.lost, a.sent);
            prop_assert_eq!(a.in_order + a.reordered + a.duplicate + a.too_late, seqs.len() as u64);

            // a sender count below the highest received is refused, as in the model
            if let Some(h) = t.highest() {
                prop_assert_eq!(t.finish(h), Err(TrackerError::BeyondSent { seq: h, sent: h }));
                prop_assert_eq!(m.finish(h), None);
            }
        }
    }
}
