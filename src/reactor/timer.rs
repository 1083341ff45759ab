//! Timers: a binary min-heap of deadlines with lazy cancellation.
//!
//! Each timer has a slot (index + generation, like the source slab) holding its payload; the
//! heap holds `(deadline, sequence, index, generation)`. Cancelling frees the slot and bumps its
//! generation, so the heap entry left behind is recognised as stale when it surfaces and is
//! skipped. When stale entries outnumber live ones the heap is compacted, so memory stays
//! proportional to the live timers. Add, cancel and pop are O(log n); thousands of timers are
//! cheap. Timers with the same deadline fire in the order they were added.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::slab::Key;

/// Identifies one armed timer (for [`Timers::cancel`]). Stale ids are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    gen: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    gen: u32,
    live: bool,
    key: Key,
    tag: u64,
}

/// The timer set of one reactor. A fired timer yields the [`Key`] and `tag` it was armed with.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, u32, u32)>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    seq: u64,
}

impl Timers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms a timer firing at `at` with payload (`key`, `tag`).
    pub fn add(&mut self, at: Instant, key: Key, tag: u64) -> TimerId {
        let index = match self.free.pop() {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                s.live = true;
                s.key = key;
                s.tag = tag;
                i
            }
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    live: true,
                    key,
                    tag,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let gen = self.slots[index as usize].gen;
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, index, gen)));
        self.live += 1;
        TimerId { index, gen }
    }

    fn release(&mut self, index: u32) {
        let s = &mut self.slots[index as usize];
        s.live = false;
        s.gen = s.gen.wrapping_add(1);
        self.free.push(index);
        self.live -= 1;
    }

    fn is_current(&self, index: u32, gen: u32) -> bool {
        let s = &self.slots[index as usize];
        s.live && s.gen == gen
    }

    /// Cancels a timer. Returns false if it already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        if (id.index as usize) < self.slots.len() && self.is_current(id.index, id.gen) {
            self.release(id.index);
            if self.heap.len() > 2 * self.live + 1024 {
                let slots = &self.slots;
                self.heap.retain(|Reverse((_, _, i, g))| {
                    let s = &slots[*i as usize];
                    s.live && s.gen == *g
                });
            }
            true
        } else {
            false
        }
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn drop_stale_top(&mut self) {
        while let Some(Reverse((_, _, i, g))) = self.heap.peek() {
            if self.is_current(*i, *g) {
                break;
            }
            self.heap.pop();
        }
    }

    /// The earliest live deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale_top();
        self.heap.peek().map(|Reverse((at, ..))| *at)
    }

    /// Removes and returns the earliest timer due at `now` or before.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(Key, u64)> {
        self.drop_stale_top();
        match self.heap.peek() {
            Some(Reverse((at, _, i, _))) if *at <= now => {
                let i = *i;
                self.heap.pop();
                let s = self.slots[i as usize];
                self.release(i);
                Some((s.key, s.tag))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fire_in_deadline_then_insertion_order() {
        let mut t = Timers::new();
        let t0 = Instant::now();
        t.add(t0 + Duration::from_millis(30), Key::NONE, 3);
        t.add(t0 + Duration::from_millis(10), Key::NONE, 1);
        t.add(t0 + Duration::from_millis(20), Key::NONE, 2);
        t.add(t0 + Duration::from_millis(20), Key::NONE, 22);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.pop_expired(t0), None);
        let mut got = vec![];
        while let Some((_, tag)) = t.pop_expired(t0 + Duration::from_secs(1)) {
            got.push(tag);
        }
        assert_eq!(got, vec![1, 2, 22, 3]);
        assert!(t.is_empty());
    }

    #[test]
    fn cancel_and_stale_ids() {
        let mut t = Timers::new();
        let t0 = Instant::now();
        let a = t.add(t0, Key::NONE, 1);
        let b = t.add(t0, Key::NONE, 2);
        assert!(t.cancel(a));
        assert!(!t.cancel(a));
        // The freed slot is reused; the old id must not cancel the new timer.
        let c = t.add(t0, Key::NONE, 3);
        assert!(!t.cancel(a));
        assert_eq!(t.len(), 2);
        let mut got = vec![];
        while let Some((_, tag)) = t.pop_expired(t0) {
            got.push(tag);
        }
        assert_eq!(got, vec![2, 3]);
        assert!(!t.cancel(b) && !t.cancel(c));
    }

    #[test]
    fn many_cancellations_keep_heap_bounded() {
        let mut t = Timers::new();
        let t0 = Instant::now();
        for i in 0..100_000u64 {
            let id = t.add(t0 + Duration::from_secs(10), Key::NONE, i);
            t.cancel(id);
        }
        assert!(t.heap.len() <= 2048);
        assert!(t.is_empty());
    }
}
