//! The preamble a TCP test's data connection opens with (pure), so the receiver can tell it
//! from a control connection on the same port. The test's settings (`TcpSpec`) are a control
//! message's payload: `flow::payload`.

use crate::flow::access::TOKEN_LEN;

/// Bytes of the preamble a data connection sends first.
pub(crate) const PREAMBLE_LEN: usize = 24 + TOKEN_LEN;
const MAGIC: [u8; 8] = *b"NCTCPv3\0";

/// The first bytes of a data connection: magic, the test id, the stream id, 4 bytes of zeros
/// and the token that binds it to a keyed test's control connection (zeros without a key;
/// `flow::access::TestSecret`).
pub fn encode_preamble(test_id: u64, stream: u32, token: [u8; TOKEN_LEN]) -> [u8; PREAMBLE_LEN] {
    let mut b = [0u8; PREAMBLE_LEN];
    b[..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&test_id.to_le_bytes());
    b[16..20].copy_from_slice(&stream.to_le_bytes());
    b[24..].copy_from_slice(&token);
    b
}

/// Whether `b` (a connection's first bytes, any number) could start a preamble.
pub(crate) fn preamble_prefix(b: &[u8]) -> bool {
    let n = b.len().min(MAGIC.len());
    b[..n] == MAGIC[..n]
}

/// A data connection's preamble, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Preamble {
    pub test_id: u64,
    pub stream: u32,
    pub token: [u8; TOKEN_LEN],
}

/// The test id, stream id and token of a preamble, or None if it is not one.
pub(crate) fn decode_preamble(b: &[u8]) -> Option<Preamble> {
    if b.len() != PREAMBLE_LEN || b[..8] != MAGIC || b[20..24] != [0; 4] {
        return None;
    }
    Some(Preamble {
        test_id: u64::from_le_bytes(b[8..16].try_into().ok()?),
        stream: u32::from_le_bytes(b[16..20].try_into().ok()?),
        token: b[24..].try_into().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn preamble() {
        let p = encode_preamble(0xdead_beef, 7, [5; TOKEN_LEN]);
        let want = Preamble {
            test_id: 0xdead_beef,
            stream: 7,
            token: [5; TOKEN_LEN],
        };
        assert_eq!(decode_preamble(&p), Some(want));
        assert_eq!(decode_preamble(&p[..10]), None);
        assert_eq!(decode_preamble(b"{\"type\":\"hello\",\"ver"), None);
    }

    proptest! {
        #[test]
        fn preamble_round_trips(id in any::<u64>(), s in any::<u32>(), t in any::<[u8; 16]>()) {
            let p = decode_preamble(&encode_preamble(id, s, t)).unwrap();
            prop_assert_eq!((p.test_id, p.stream, p.token), (id, s, t));
        }

        #[test]
        fn preamble_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_preamble(&b);
        }
    }
}
