//! Generation-checked storage for the reactor's entries: a [`Key`] is a slot index plus the
//! slot's generation, so a stale event for a closed, reused slot is ignored.

use mio::Token;

/// Slots the slab can hold (two tokens are the waker's and the signal pipe's).
const MAX_SLOTS: usize = (u32::MAX - 2) as usize;

/// Names a slab entry: slot index plus the slot's generation when the entry was inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    index: u32,
    gen: u32,
}

impl Key {
    /// A key that never names an entry (for timers not tied to one).
    pub const NONE: Key = Key {
        index: u32::MAX,
        gen: u32::MAX,
    };

    /// The `mio` token for this key: `gen << 32 | index`.
    pub fn token(self) -> Token {
        Token(((self.gen as usize) << 32) | self.index as usize)
    }

    pub(super) fn from_token(t: Token) -> Key {
        Key {
            index: t.0 as u32,
            gen: (t.0 >> 32) as u32,
        }
    }

    #[cfg(feature = "uring")]
    /// The key as one integer (the token's value), e.g. for an io_uring `user_data` tag.
    pub(crate) fn to_u64(self) -> u64 {
        ((self.gen as u64) << 32) | self.index as u64
    }

    #[cfg(feature = "uring")]
    /// The key back from [`Key::to_u64`].
    pub(crate) fn from_u64(v: u64) -> Key {
        Key {
            index: v as u32,
            gen: (v >> 32) as u32,
        }
    }

    /// The slot index (dense, reused): handy to index per-connection side tables.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// A slab entry: anything that can hand out its `mio` source for (de)registration.
pub trait Entry {
    fn source(&mut self) -> &mut dyn mio::event::Source;
}

#[derive(Debug)]
struct Slot<S> {
    gen: u32,
    queued: bool,
    value: Option<S>,
}

/// Generation-checked storage for the reactor's entries.
#[derive(Debug)]
pub struct Slab<S> {
    slots: Vec<Slot<S>>,
    free: Vec<u32>,
    len: usize,
}

impl<S> Default for Slab<S> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<S> Slab<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value`; reuses a freed slot if there is one.
    pub fn insert(&mut self, value: S) -> Key {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            let s = &mut self.slots[i as usize];
            s.value = Some(value);
            s.queued = false;
            return Key {
                index: i,
                gen: s.gen,
            };
        }
        assert!(self.slots.len() < MAX_SLOTS, "reactor slab full");
        self.slots.push(Slot {
            gen: 0,
            queued: false,
            value: Some(value),
        });
        Key {
            index: (self.slots.len() - 1) as u32,
            gen: 0,
        }
    }

    fn slot(&self, key: Key) -> Option<&Slot<S>> {
        self.slots
            .get(key.index as usize)
            .filter(|s| s.gen == key.gen && s.value.is_some())
    }

    /// Marks `key` queued for a deferred dispatch; false if it was already queued or is stale.
    pub(super) fn mark_queued(&mut self, key: Key) -> bool {
        match self.slot_mut(key) {
            Some(s) if !s.queued => {
                s.queued = true;
                true
            }
            _ => false,
        }
    }

    /// Clears `key`'s queued mark; true if it was queued (and is still live).
    pub(super) fn take_queued(&mut self, key: Key) -> bool {
        match self.slot_mut(key) {
            Some(s) if s.queued => {
                s.queued = false;
                true
            }
            _ => false,
        }
    }

    fn slot_mut(&mut self, key: Key) -> Option<&mut Slot<S>> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.gen == key.gen && s.value.is_some())
    }

    pub fn contains(&self, key: Key) -> bool {
        self.slot(key).is_some()
    }

    pub fn get(&self, key: Key) -> Option<&S> {
        self.slot(key).and_then(|s| s.value.as_ref())
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut S> {
        self.slot_mut(key).and_then(|s| s.value.as_mut())
    }

    /// Takes the entry out; the slot's generation moves on, invalidating `key` everywhere.
    pub(crate) fn remove(&mut self, key: Key) -> Option<S> {
        let s = self.slot_mut(key)?;
        let v = s.value.take();
        s.gen = s.gen.wrapping_add(1);
        s.queued = false;
        self.free.push(key.index);
        self.len -= 1;
        v
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys of all live entries (allocates; for shutdown and diagnostics).
    pub fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.value.is_some())
            .map(|(i, s)| Key {
                index: i as u32,
                gen: s.gen,
            })
            .collect()
    }
}
