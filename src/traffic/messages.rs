//! The pure core of `traffic`: flow kinds and settings, the seeded message generator, the
//! message header and the TCP frame parser.

use crate::seeded::SeededRng;
use rand::Rng;
use std::time::Duration;

/// Bytes of the message header: length (u32) and sequence (u64).
pub const HEADER: usize = 12;
/// Largest message: a UDP datagram's payload limit.
pub const MAX_MESSAGE: usize = 65_507;

/// A flow kind.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    Tcp,
    Udp,
}

impl Flow {
    pub fn name(self) -> &'static str {
        match self {
            Flow::Tcp => "TCP",
            Flow::Udp => "UDP",
        }
    }

    fn index(self) -> u64 {
        match self {
            Flow::Tcp => 0,
            Flow::Udp => 1,
        }
    }
}

/// How often servers send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// One message per flow every this long (the first at time zero).
    Every(Duration),
    /// Message bytes per second per flow.
    BitsPerSec(f64),
}

/// A traffic run's settings.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    pub duration: Duration,
    pub interval: Duration,
    /// Message sizes, inclusive, header included.
    pub min_size: usize,
    pub max_size: usize,
    pub pace: Pace,
    pub flows: Vec<Flow>,
    pub seed: u64,
}

/// The seeded message-size generator of one flow.
pub struct MessageGen {
    rng: SeededRng,
    min: usize,
    max: usize,
}

impl MessageGen {
    pub fn new(seed: u64, flow: Flow, min: usize, max: usize) -> MessageGen {
        assert!(HEADER <= min && min <= max);
        // Each flow gets its own stream, so adding a flow does not change another's sizes.
        let s = seed ^ (flow.index() + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        MessageGen {
            rng: crate::seeded::rng(s),
            min,
            max,
        }
    }

    pub(crate) fn next_size(&mut self) -> usize {
        self.rng.random_range(self.min..=self.max)
    }
}

/// The first `n` message sizes of a flow for a seed (what a run with that seed sends).
pub fn sizes(seed: u64, flow: Flow, min: usize, max: usize, n: usize) -> Vec<usize> {
    let mut g = MessageGen::new(seed, flow, min, max);
    (0..n).map(|_| g.next_size()).collect()
}

/// Writes message `seq` of `size` bytes into `out` (appending).
pub fn encode_message(out: &mut Vec<u8>, seq: u64, size: usize) {
    debug_assert!((HEADER..=MAX_MESSAGE).contains(&size));
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let fill = (seq as u8).wrapping_mul(31).wrapping_add(7);
    out.resize(out.len() + size - HEADER, fill);
}

/// Reads the header of a message: (length, sequence), if it is well formed.
pub fn decode_header(b: &[u8]) -> Option<(usize, u64)> {
    if b.len() < HEADER {
        return None;
    }
    let len = u32::from_le_bytes(b[0..4].try_into().ok()?) as usize;
    let seq = u64::from_le_bytes(b[4..12].try_into().ok()?);
    (HEADER..=MAX_MESSAGE).contains(&len).then_some((len, seq))
}

/// Finds message boundaries in a TCP byte stream, however it is split into reads.
#[derive(Debug, Default)]
pub struct FrameParser {
    header: Vec<u8>,
    /// Bytes of the current message still to come (after its header).
    remaining: usize,
    /// Set when a header was malformed: the stream is out of sync for good.
    pub broken: bool,
}

impl FrameParser {
    /// Consumes `data`; returns (complete messages, their total bytes) finished in it.
    pub fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut msgs, mut bytes) = (0, 0);
        while !data.is_empty() && !self.broken {
            if self.remaining > 0 {
                let take = self.remaining.min(data.len());
                self.remaining -= take;
                data = &data[take..];
                continue;
            }
            let need = HEADER - self.header.len();
            let take = need.min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() == HEADER {
                match decode_header(&self.header) {
                    Some((len, _)) => {
                        msgs += 1;
                        bytes += len as u64;
                        self.remaining = len - HEADER;
                    }
                    None => self.broken = true,
                }
                self.header.clear();
            }
        }
        (msgs, bytes)
    }
}

/// Per-flow counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Counters {
    pub sent_msgs: u64,
    pub sent_bytes: u64,
    pub recv_msgs: u64,
    pub recv_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generator_is_seeded_and_bounded() {
        let a = sizes(7, Flow::Tcp, 50, 500, 100);
        assert_eq!(a, sizes(7, Flow::Tcp, 50, 500, 100));
        assert_ne!(a, sizes(8, Flow::Tcp, 50, 500, 100));
        assert_ne!(a, sizes(7, Flow::Udp, 50, 500, 100));
        assert!(a.iter().all(|s| (50..=500).contains(s)));
    }

    #[test]
    fn header_round_trip() {
        let mut v = Vec::new();
        encode_message(&mut v, 42, 100);
        assert_eq!(v.len(), 100);
        assert_eq!(decode_header(&v), Some((100, 42)));
        assert_eq!(decode_header(&v[..5]), None);
        v[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(decode_header(&v), None);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_count(
            sizes in proptest::collection::vec(HEADER..2000usize, 0..40),
            cuts in proptest::collection::vec(1usize..300, 1..50),
        ) {
            let mut stream = Vec::new();
            for (i, s) in sizes.iter().enumerate() {
                encode_message(&mut stream, i as u64, *s);
            }
            let mut p = FrameParser::default();
            let (mut m, mut b) = (0, 0);
            let mut rest = &stream[..];
            let mut c = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*c.next().unwrap()).min(rest.len());
                let (x, y) = p.feed(&rest[..n]);
                m += x;
                b += y;
                rest = &rest[n..];
            }
            prop_assert!(!p.broken);
            prop_assert_eq!(m, sizes.len() as u64);
            prop_assert_eq!(b, sizes.iter().sum::<usize>() as u64);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..500)) {
            let mut p = FrameParser::default();
            let _ = p.feed(&bytes);
        }
    }
}
