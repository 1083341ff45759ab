//! The latency probe datagram (pure): what `netcore rpm` sends and an admitted echo test of the
//! receiver sends back, stamped with the receiver's receive and send times.
//!
//! ```text
//! offset size field
//!      0    8 magic        "NCPROBE1"
//!      8    8 test id      the echo test the control channel admitted
//!     16    8 seq          from 0, one per probe
//!     24    8 send time    ns since the Unix epoch (CLOCK_REALTIME) at the prober
//!     32    8 echo rx      ns (CLOCK_REALTIME) at the echo's receive (kernel time if it gave one); 0 from the prober
//!     40    8 echo tx      ns (CLOCK_REALTIME) just before the echo's send; 0 from the prober
//!     48    .. padding     zeros, up to the probe's length
//! ```
//! All fields little-endian. The echo keeps the length, so the path carries the same bytes both
//! ways.

/// Bytes of the header; the smallest probe.
pub const HEADER_LEN: usize = 48;
/// The largest probe (and echo buffer).
pub(crate) const MAX_LEN: usize = 1472;
/// The default probe length.
pub const DEFAULT_LEN: usize = 64;
const MAGIC: [u8; 8] = *b"NCPROBE1";
/// Bytes of the request a handshake probe sends on its fresh TCP connection to the echo's
/// port (answered with the same bytes).
pub(crate) const REQUEST_LEN: usize = 8;

/// One probe's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probe {
    pub test_id: u64,
    pub seq: u64,
    pub send_ns: u64,
    pub echo_rx_ns: u64,
    pub echo_tx_ns: u64,
}

/// Why a datagram is not a probe of the expected test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Short,
    Long,
    Magic,
    TestId,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Probe {
    /// Writes the header into `buf` (at least [`HEADER_LEN`] bytes) and zeros the rest.
    pub fn encode(&self, buf: &mut [u8]) {
        assert!(buf.len() >= HEADER_LEN, "a probe buffer holds the header");
        buf[..8].copy_from_slice(&MAGIC);
        for (i, v) in [
            self.test_id,
            self.seq,
            self.send_ns,
            self.echo_rx_ns,
            self.echo_tx_ns,
        ]
        .into_iter()
        .enumerate()
        {
            buf[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        buf[HEADER_LEN..].fill(0);
    }

    /// Reads a probe of test `test_id` from a received datagram.
    pub fn decode(b: &[u8], test_id: u64) -> Result<Probe, Invalid> {
        if b.len() < HEADER_LEN {
            return Err(Invalid::Short);
        }
        if b.len() > MAX_LEN {
            return Err(Invalid::Long);
        }
        if b[..8] != MAGIC {
            return Err(Invalid::Magic);
        }
        let p = Probe {
            test_id: u64_at(b, 8),
            seq: u64_at(b, 16),
            send_ns: u64_at(b, 24),
            echo_rx_ns: u64_at(b, 32),
            echo_tx_ns: u64_at(b, 40),
        };
        if p.test_id != test_id {
            return Err(Invalid::TestId);
        }
        Ok(p)
    }
}

/// The echo's step: checks that `b` is a probe of `test_id` and stamps the receive and send
/// times in place; the caller sends `b` back unchanged otherwise.
pub(crate) fn stamp_echo(
    b: &mut [u8],
    test_id: u64,
    rx_ns: u64,
    tx_ns: u64,
) -> Result<(), Invalid> {
    Probe::decode(b, test_id)?;
    b[32..40].copy_from_slice(&rx_ns.to_le_bytes());
    b[40..48].copy_from_slice(&tx_ns.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn invalid_datagrams_are_named() {
        let mut b = [0u8; DEFAULT_LEN];
        Probe {
            test_id: 7,
            ..Probe::default()
        }
        .encode(&mut b);
        assert_eq!(Probe::decode(&b[..47], 7), Err(Invalid::Short));
        assert_eq!(Probe::decode(&b, 8), Err(Invalid::TestId));
        assert_eq!(Probe::decode(&[0u8; MAX_LEN + 1], 7), Err(Invalid::Long));
        b[0] = b'X';
        assert_eq!(Probe::decode(&b, 7), Err(Invalid::Magic));
        assert_eq!(stamp_echo(&mut b, 7, 1, 2), Err(Invalid::Magic));
    }

    proptest! {
        #[test]
        fn encode_stamp_decode(id: u64, seq: u64, send: u64, rx: u64, tx: u64,
                               len in HEADER_LEN..=MAX_LEN) {
            let mut b = vec![0xAAu8; len];
            let p = Probe { test_id: id, seq, send_ns: send, ..Probe::default() };
            p.encode(&mut b);
            prop_assert!(b[HEADER_LEN..].iter().all(|&x| x == 0));
            prop_assert_eq!(Probe::decode(&b, id), Ok(p));
            stamp_echo(&mut b, id, rx, tx).unwrap();
            prop_assert_eq!(
                Probe::decode(&b, id),
                Ok(Probe { echo_rx_ns: rx, echo_tx_ns: tx, ..p })
            );
        }

        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..1600),
                                          id: u64) {
            let mut b = b;
            let _ = Probe::decode(&b, id);
            let _ = stamp_echo(&mut b, id, 1, 2);
        }
    }
}
