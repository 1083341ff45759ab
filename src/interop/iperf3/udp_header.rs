//! iperf3's UDP data: the stream handshake datagram and the header at the front of every
//! datagram (send time in seconds and microseconds, then a sequence number), all big-endian
//! but the handshake words, which iperf3 writes in the host's order (little-endian here).
//!
//! iperf3 numbers datagrams from 1; netcore's tracker numbers them from 0, so
//! [`Header::seq0`] is the sequence number the tracker takes.

/// What a client sends on a new UDP stream (iperf3 3.x: "6789").
pub(crate) const CONNECT_MSG: u32 = 0x3637_3839;
/// What the server answers once the stream is accepted ("9876").
pub(crate) const CONNECT_REPLY: u32 = 0x3938_3736;
/// What servers before iperf3 3.17 answered; clients still take it.
pub(crate) const LEGACY_CONNECT_REPLY: u32 = 987_654_321;

/// The handshake word as it goes on the wire.
pub fn word(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// The handshake word in a received datagram, if it is exactly one.
pub(crate) fn read_word(d: &[u8]) -> Option<u32> {
    let b: [u8; 4] = d.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// The data header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub sec: u32,
    pub usec: u32,
    /// iperf3's sequence number (the first datagram is 1).
    pub seq: u64,
}

impl Header {
    /// Bytes of the header: 12, or 16 with 64-bit counters.
    pub const fn len(counters64: bool) -> usize {
        if counters64 {
            16
        } else {
            12
        }
    }

    /// Reads the header at the front of a datagram; `None` if it is too short, or carries
    /// sequence number 0 (iperf3 never sends it).
    pub fn read(d: &[u8], counters64: bool) -> Option<Header> {
        let sec = u32::from_be_bytes(d.get(0..4)?.try_into().ok()?);
        let usec = u32::from_be_bytes(d.get(4..8)?.try_into().ok()?);
        let seq = if counters64 {
            u64::from_be_bytes(d.get(8..16)?.try_into().ok()?)
        } else {
            u32::from_be_bytes(d.get(8..12)?.try_into().ok()?) as u64
        };
        (seq != 0).then_some(Header { sec, usec, seq })
    }

    /// Writes the header at the front of `d` (which must hold [`Header::len`] bytes).
    pub fn write(&self, d: &mut [u8], counters64: bool) {
        d[0..4].copy_from_slice(&self.sec.to_be_bytes());
        d[4..8].copy_from_slice(&self.usec.to_be_bytes());
        if counters64 {
            d[8..16].copy_from_slice(&self.seq.to_be_bytes());
        } else {
            d[8..12].copy_from_slice(&(self.seq as u32).to_be_bytes());
        }
    }

    /// A header for netcore's sequence number `seq0` (from 0) sent at `ns` (CLOCK_REALTIME).
    pub fn at(seq0: u64, ns: u64) -> Header {
        Header {
            sec: (ns / 1_000_000_000) as u32,
            usec: ((ns % 1_000_000_000) / 1_000) as u32,
            seq: seq0 + 1,
        }
    }

    /// The send time in nanoseconds (microsecond resolution).
    pub fn send_ns(&self) -> u64 {
        self.sec as u64 * 1_000_000_000 + self.usec as u64 * 1_000
    }

    /// The sequence number from 0, as netcore's tracker counts.
    pub(crate) fn seq0(&self) -> u64 {
        self.seq - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn handshake_words_are_ascii_on_the_wire() {
        assert_eq!(&word(CONNECT_MSG), b"9876");
        assert_eq!(&word(CONNECT_REPLY), b"6789");
        assert_eq!(read_word(b"9876"), Some(CONNECT_MSG));
        assert_eq!(read_word(b"98765"), None);
    }

    #[test]
    fn header_is_big_endian() {
        let mut d = [0u8; 16];
        Header {
            sec: 1,
            usec: 2,
            seq: 3,
        }
        .write(&mut d, false);
        assert_eq!(&d[..12], &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
        assert_eq!(Header::read(&d[..11], false), None);
        assert_eq!(
            Header::read(&[0u8; 12], false),
            None,
            "sequence 0 is never sent"
        );
    }

    proptest! {
        #[test]
        fn header_round_trips(seq0 in 0u64..u32::MAX as u64 - 1, ns in any::<u32>(), wide: bool) {
            let ns = ns as u64 * 1_000_000;
            let h = Header::at(seq0, ns);
            let mut d = vec![0u8; Header::len(wide)];
            h.write(&mut d, wide);
            let r = Header::read(&d, wide).unwrap();
            prop_assert_eq!(r, h);
            prop_assert_eq!(r.seq0(), seq0);
            prop_assert_eq!(r.send_ns(), ns);
        }

        #[test]
        fn any_bytes_read_without_panic(d in proptest::collection::vec(any::<u8>(), 0..40), wide: bool) {
            let _ = Header::read(&d, wide);
        }
    }
}
