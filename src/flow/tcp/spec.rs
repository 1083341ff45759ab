//! The preamble a TCP test's data connection opens with (pure), so the receiver can tell it
//! from a control connection on the same port. The test's settings (`TcpSpec`) are a control
//! message's payload: `flow::payload`.

/// Bytes of the preamble a data connection sends first.
pub const PREAMBLE_LEN: usize = 24;
const MAGIC: [u8; 8] = *b"NCTCPv2\0";

/// The first bytes of a data connection: magic, the test id and the stream id.
pub fn encode_preamble(test_id: u64, stream: u32) -> [u8; PREAMBLE_LEN] {
    let mut b = [0u8; PREAMBLE_LEN];
    b[..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&test_id.to_le_bytes());
    b[16..20].copy_from_slice(&stream.to_le_bytes());
    b
}

/// Whether `b` (a connection's first bytes, any number) could start a preamble.
pub fn preamble_prefix(b: &[u8]) -> bool {
    let n = b.len().min(MAGIC.len());
    b[..n] == MAGIC[..n]
}

/// The test id and stream id of a preamble, or None if it is not one.
pub fn decode_preamble(b: &[u8]) -> Option<(u64, u32)> {
    if b.len() != PREAMBLE_LEN || b[..8] != MAGIC || b[20..] != [0; 4] {
        return None;
    }
    Some((
        u64::from_le_bytes(b[8..16].try_into().ok()?),
        u32::from_le_bytes(b[16..20].try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn preamble() {
        let p = encode_preamble(0xdead_beef, 7);
        assert_eq!(decode_preamble(&p), Some((0xdead_beef, 7)));
        assert_eq!(decode_preamble(&p[..10]), None);
        assert_eq!(decode_preamble(b"{\"type\":\"hello\",\"ver"), None);
    }

    proptest! {
        #[test]
        fn preamble_round_trips(id in any::<u64>(), s in any::<u32>()) {
            prop_assert_eq!(decode_preamble(&encode_preamble(id, s)), Some((id, s)));
        }

        #[test]
        fn preamble_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_preamble(&b);
        }
    }
}
