//! The relay's ground truth: what it received, dropped and forwarded, and how the forwarded
//! netcore datagrams (and iperf3 UDP streams' datagrams) will look to a receiver, computed from
//! the exact order the relay sent them.
//!
//! This is the oracle for the receiver's [tracker](crate::flow::tracker), so it shares none of
//! its code: where the tracker keeps a bitmap ring, [`SeqSet`] keeps the highest sequence seen
//! and the *missing* sequences below it as ranges in a `BTreeMap`. The classes are those of
//! RFC 4737 as the receiver defines them: above the highest is in order, equal to the highest or
//! seen before is a duplicate, missing below the highest is reordered with extent
//! `highest - seq`, and `window` or more below the highest is too late. Memory grows with the
//! number of gaps inside the window, not with the number of datagrams.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The receiver's default tracking window (sequences at least this far below the highest are
/// too late), which the ground truth assumes.
pub(crate) const WINDOW: u64 = crate::flow::tracker::DEFAULT_WINDOW;

/// Tests (distinct test ids) tracked one by one; datagrams of further tests are only counted.
pub(crate) const MAX_TESTS: usize = 64;

/// Missing ranges kept per sequence set (two sets per test): with more gaps inside the window
/// (e.g. only even sequence numbers), the lowest are forgotten and arrivals below them count as
/// too late. Bounds the truth to ~`MAX_TESTS * 2 * MAX_GAPS` map entries (a few MB), where a
/// million even sequence numbers took the relay from 4.4 to 77 MB.
pub(crate) const MAX_GAPS: usize = 4096;

/// The counter width of an iperf3 UDP data datagram: `Some(true)` for 64-bit counters, `None`
/// for a datagram too short to tell. iperf3 numbers datagrams from 1 and writes the counter
/// big-endian after the 8-byte timestamp: with 32-bit counters bytes 8..12 are the (never zero)
/// number, with 64-bit counters they are its high half, zero below 2^32 datagrams.
pub(crate) fn iperf3_wide(d: &[u8]) -> Option<bool> {
    let high = d.get(8..12)?;
    if high != [0u8; 4] {
        return Some(false);
    }
    (d.len() >= 16).then_some(true)
}

/// How a sequence number arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    Reordered { extent: u64 },
    Duplicate,
    TooLate,
}

/// The set of sequence numbers seen, as the highest plus the ranges missing below it.
#[derive(Debug, Clone)]
pub struct SeqSet {
    window: u64,
    highest: Option<u64>,
    /// Missing sequences: start -> end (exclusive), disjoint, all below `highest`, none below
    /// the floor `highest - (window - 1)`.
    missing: BTreeMap<u64, u64>,
    /// Below this, gaps were forgotten ([`MAX_GAPS`]): arrivals are too late.
    forgot_below: u64,
}

impl SeqSet {
    /// A set that classifies like a receiver with a tracking window of `window` (>= 1).
    pub fn new(window: u64) -> SeqSet {
        SeqSet {
            window: window.max(1),
            highest: None,
            missing: BTreeMap::new(),
            forgot_below: 0,
        }
    }

    /// The highest sequence seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Ranges currently missing (for tests and memory checks).
    pub fn gaps(&self) -> usize {
        self.missing.len()
    }

    fn floor(&self, highest: u64) -> u64 {
        highest.saturating_sub(self.window - 1)
    }

    /// Records one arrival of `seq` and classifies it.
    pub fn insert(&mut self, seq: u64) -> Arrival {
        let h = match self.highest {
            None => {
                self.raise(0, seq);
                return Arrival::InOrder;
            }
            Some(h) => h,
        };
        if seq > h {
            self.raise(h + 1, seq);
            return Arrival::InOrder;
        }
        if seq == h {
            return Arrival::Duplicate;
        }
        if seq < self.floor(h) || seq < self.forgot_below {
            return Arrival::TooLate;
        }
        // The missing range holding seq, if any.
        let Some((&start, &end)) = self.missing.range(..=seq).next_back() else {
            return Arrival::Duplicate;
        };
        if seq >= end {
            return Arrival::Duplicate;
        }
        self.missing.remove(&start);
        if start < seq {
            self.missing.insert(start, seq);
        }
        if seq + 1 < end {
            self.missing.insert(seq + 1, end);
        }
        Arrival::Reordered { extent: h - seq }
    }

    /// `seq` is the new highest; `from..seq` were skipped.
    fn raise(&mut self, from: u64, seq: u64) {
        self.highest = Some(seq);
        let floor = self.floor(seq);
        let from = from.max(floor);
        if from < seq {
            self.missing.insert(from, seq);
        }
        // Forget what fell out of the window.
        while let Some((&start, &end)) = self.missing.first_key_value() {
            if start >= floor {
                break;
            }
            self.missing.remove(&start);
            if end > floor {
                self.missing.insert(floor, end);
            }
        }
        while self.missing.len() > MAX_GAPS {
            if let Some((_, end)) = self.missing.pop_first() {
                self.forgot_below = self.forgot_below.max(end);
            }
        }
    }
}

/// Ground truth of one test (one netcore test id, or one iperf3 UDP stream), as the receiver
/// will count it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct TestTruth {
    /// `netcore`, or `iperf3` / `iperf3-64` (an iperf3 UDP stream with 32- or 64-bit counters).
    pub kind: String,
    /// netcore: the test id, 16 hex digits (as the receiver's report writes it). iperf3: the
    /// stream's source address as the relay saw it (iperf3's datagrams carry no test id; the
    /// client's `-J` lists each stream's local port).
    pub test_id: String,
    /// Datagrams of this test that came in.
    pub datagrams_in: u64,
    /// Distinct sequence numbers that came in.
    pub unique_in: u64,
    /// Datagrams dropped by the relay (loss process, full link queue, send errors).
    pub dropped: u64,
    /// Datagrams sent on (copies included).
    pub forwarded: u64,
    /// Distinct sequence numbers sent on.
    pub unique_out: u64,
    /// Sequence numbers that came in but were never sent on: the receiver's `lost` when nothing
    /// was lost on the way into the relay (`unique_in` equals the sender's count).
    pub lost: u64,
    /// Copies of a sequence sent after it (the receiver's `duplicate`).
    pub duplicates: u64,
    /// Sent after a higher sequence (the receiver's `reordered`).
    pub reordered: u64,
    /// Largest `highest - seq` of a reordered datagram (RFC 4737 extent).
    pub max_extent: u64,
    /// Sent `WINDOW` or more below the highest (the receiver's `too_late`).
    pub too_late: u64,
}

/// Whose sequence numbers a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// A netcore test: its test id.
    Netcore(u64),
    /// An iperf3 UDP stream: the client socket it came from, and whether its counters are 64-bit.
    Iperf3 { from: SocketAddr, wide: bool },
}

#[derive(Debug, Clone)]
struct Test {
    key: Key,
    datagrams_in: u64,
    unique_in: u64,
    dropped: u64,
    forwarded: u64,
    unique_out: u64,
    duplicates: u64,
    reordered: u64,
    max_extent: u64,
    too_late: u64,
    input: SeqSet,
    output: SeqSet,
}

impl Test {
    fn new(key: Key) -> Test {
        Test {
            key,
            datagrams_in: 0,
            unique_in: 0,
            dropped: 0,
            forwarded: 0,
            unique_out: 0,
            duplicates: 0,
            reordered: 0,
            max_extent: 0,
            too_late: 0,
            input: SeqSet::new(WINDOW),
            output: SeqSet::new(WINDOW),
        }
    }

    fn report(&self) -> TestTruth {
        let (kind, test_id) = match self.key {
            Key::Netcore(id) => ("netcore", format!("{id:016x}")),
            Key::Iperf3 { from, wide: false } => ("iperf3", from.to_string()),
            Key::Iperf3 { from, wide: true } => ("iperf3-64", from.to_string()),
        };
        TestTruth {
            kind: kind.into(),
            test_id,
            datagrams_in: self.datagrams_in,
            unique_in: self.unique_in,
            dropped: self.dropped,
            forwarded: self.forwarded,
            unique_out: self.unique_out,
            lost: self.unique_in.saturating_sub(self.unique_out),
            duplicates: self.duplicates,
            reordered: self.reordered,
            max_extent: self.max_extent,
            too_late: self.too_late,
        }
    }
}

/// A datagram's identity: (whose, sequence from 0 as the receiver's tracker counts).
pub(crate) type Tag = Option<(Key, u64)>;

/// The ground truth over all tests that crossed the relay.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroundTruth {
    tests: Vec<Test>,
    index: HashMap<Key, usize>,
    /// The last key looked up and its test: one test at a time needs no hashing.
    recent: Option<(Key, usize)>,
    /// Datagrams that are neither netcore's nor an iperf3 stream's (or of tests beyond
    /// [`MAX_TESTS`]).
    pub other_in: u64,
}

impl GroundTruth {
    pub fn new() -> GroundTruth {
        GroundTruth::default()
    }

    fn test(&mut self, key: Key) -> Option<&mut Test> {
        if let Some((k, i)) = self.recent {
            if k == key {
                return Some(&mut self.tests[i]);
            }
        }
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None if self.tests.len() < MAX_TESTS => {
                self.tests.push(Test::new(key));
                self.index.insert(key, self.tests.len() - 1);
                self.tests.len() - 1
            }
            None => return None,
        };
        self.recent = Some((key, i));
        Some(&mut self.tests[i])
    }

    /// A datagram came in. Returns the tag to carry with it (`None` for untracked datagrams).
    pub(crate) fn came_in(&mut self, tag: Tag) -> Tag {
        let Some((id, seq)) = tag else {
            self.other_in += 1;
            return None;
        };
        let Some(t) = self.test(id) else {
            self.other_in += 1;
            return None;
        };
        t.datagrams_in += 1;
        if matches!(
            t.input.insert(seq),
            Arrival::InOrder | Arrival::Reordered { .. }
        ) {
            t.unique_in += 1;
        }
        tag
    }

    /// A datagram (all its copies) was dropped.
    pub fn dropped(&mut self, tag: Tag) {
        if let Some((id, _)) = tag {
            if let Some(t) = self.test(id) {
                t.dropped += 1;
            }
        }
    }

    /// One copy of a datagram was sent (the kernel took it).
    pub fn sent(&mut self, tag: Tag) {
        let Some((id, seq)) = tag else { return };
        let Some(t) = self.test(id) else { return };
        t.forwarded += 1;
        match t.output.insert(seq) {
            Arrival::InOrder => t.unique_out += 1,
            Arrival::Reordered { extent } => {
                t.unique_out += 1;
                t.reordered += 1;
                t.max_extent = t.max_extent.max(extent);
            }
            Arrival::Duplicate => t.duplicates += 1,
            Arrival::TooLate => t.too_late += 1,
        }
    }

    /// Per-test truth, in order of first appearance.
    pub fn tests(&self) -> Vec<TestTruth> {
        self.tests.iter().map(Test::report).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_bounded() {
        // Issue #17.8: a million even sequence numbers kept half a million gaps.
        let mut s = SeqSet::new(WINDOW);
        for i in 0..200_000u64 {
            s.insert(i * 2);
            assert!(s.gaps() <= MAX_GAPS);
        }
        assert_eq!(s.insert(1), Arrival::TooLate);
        assert!(matches!(s.insert(399_997), Arrival::Reordered { .. }));
    }
    use crate::flow::tracker::{Class, Tracker};
    use proptest::prelude::*;

    #[test]
    fn classes() {
        let mut s = SeqSet::new(WINDOW);
        assert_eq!(s.insert(0), Arrival::InOrder);
        assert_eq!(s.insert(3), Arrival::InOrder);
        assert_eq!(s.insert(3), Arrival::Duplicate);
        assert_eq!(s.insert(1), Arrival::Reordered { extent: 2 });
        assert_eq!(s.insert(1), Arrival::Duplicate);
        assert_eq!(s.insert(0), Arrival::Duplicate);
        assert_eq!(s.insert(2), Arrival::Reordered { extent: 1 });
        assert_eq!(s.gaps(), 0);
        // A first datagram above zero leaves the ones below missing, as the receiver sees it.
        let mut s = SeqSet::new(WINDOW);
        assert_eq!(s.insert(5), Arrival::InOrder);
        assert_eq!(s.insert(0), Arrival::Reordered { extent: 5 });
    }

    #[test]
    fn window_and_huge_jumps() {
        let mut s = SeqSet::new(64);
        assert_eq!(s.insert(0), Arrival::InOrder);
        assert_eq!(s.insert(u64::MAX - 1), Arrival::InOrder);
        assert_eq!(s.gaps(), 1);
        assert_eq!(s.insert(0), Arrival::TooLate);
        assert_eq!(s.insert(u64::MAX - 64), Arrival::Reordered { extent: 63 });
        assert_eq!(s.insert(u64::MAX - 65), Arrival::TooLate);
        assert_eq!(s.insert(u64::MAX), Arrival::InOrder);
    }

    #[test]
    fn truth_counts() {
        let mut g = GroundTruth::new();
        let t = |s| Some((Key::Netcore(9), s));
        for s in 0..5 {
            g.came_in(t(s));
        }
        g.came_in(None);
        g.dropped(t(2));
        for s in [0, 3, 1, 1, 4] {
            g.sent(t(s));
        }
        let r = &g.tests()[0];
        assert_eq!(r.test_id, "0000000000000009");
        assert_eq!(r.kind, "netcore");
        assert_eq!(
            (
                r.datagrams_in,
                r.unique_in,
                r.dropped,
                r.forwarded,
                r.unique_out
            ),
            (5, 5, 1, 5, 4)
        );
        assert_eq!(
            (r.lost, r.duplicates, r.reordered, r.max_extent),
            (1, 1, 1, 2)
        );
        assert_eq!(g.other_in, 1);
    }

    #[test]
    fn iperf3_counter_width() {
        use crate::interop::iperf3::udp_header::Header;
        for wide in [false, true] {
            for seq0 in [0u64, 1, 70_000, u32::MAX as u64 - 2] {
                let mut d = vec![0u8; 1400];
                Header::at(seq0, 1_700_000_000_000_000_000).write(&mut d, wide);
                assert_eq!(iperf3_wide(&d), Some(wide), "seq0 {seq0}");
            }
        }
        assert_eq!(iperf3_wide(&[0u8; 11]), None);
        assert_eq!(iperf3_wide(&[0u8; 12]), None);
    }

    #[test]
    fn iperf3_streams_are_tests_of_their_own() {
        let mut g = GroundTruth::new();
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let a = |s| Some((Key::Iperf3 { from, wide: true }, s));
        let b = |s| Some((Key::Netcore(1), s));
        for s in 0..3 {
            g.came_in(a(s));
            g.came_in(b(s));
        }
        for s in [0, 2, 2, 1] {
            g.sent(a(s));
        }
        let t = g.tests();
        assert_eq!(
            (t[0].kind.as_str(), t[0].test_id.as_str()),
            ("iperf3-64", "127.0.0.1:40000")
        );
        assert_eq!(
            (t[0].duplicates, t[0].reordered, t[0].max_extent),
            (1, 1, 1)
        );
        assert_eq!((t[1].kind.as_str(), t[1].forwarded), ("netcore", 0));
    }

    proptest! {
        // The oracle and the receiver's tracker agree on every arrival order (small windows
        // exercise the too-late boundary).
        #[test]
        fn agrees_with_the_tracker(
            seqs in proptest::collection::vec(0u64..400, 0..600),
            window in prop_oneof![Just(64u64), Just(128), Just(1 << 20)],
        ) {
            let mut s = SeqSet::new(window);
            let mut t = Tracker::new(window);
            for q in seqs {
                let a = s.insert(q);
                let c = t.record(q);
                let same = matches!(
                    (a, c),
                    (Arrival::InOrder, Class::InOrder)
                        | (Arrival::Duplicate, Class::Duplicate)
                        | (Arrival::TooLate, Class::TooLate)
                ) || matches!((a, c), (Arrival::Reordered { extent: x }, Class::Reordered { extent: y }) if x == y);
                prop_assert!(same, "seq {}: oracle {:?}, tracker {:?}", q, a, c);
            }
        }
    }
}
