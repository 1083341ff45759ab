//! sockperf's message framing, as its server answers it (`sockperf ping-pong`, `under-load`,
//! `throughput` against `netcore serve --proto sockperf`).
//!
//! Every message starts with a 14-byte big-endian header: sequence number (u64), flags (u16:
//! bit 0 *client*, bit 1 *pong request*, bit 2 *warm-up*) and the length of the whole message,
//! header included (u32); the payload follows. On a stream the messages are back to back. The
//! server answers a client message that asks for a pong (and is not a warm-up message) with the
//! same bytes, the client flag cleared; everything else (warm-up messages, messages without the
//! pong flag as in `throughput`, messages from another server) is read and not answered. A
//! length shorter than the header or longer than [`MAX_MESSAGE`] breaks the framing: the
//! session closes the connection.

/// Header length in bytes: sequence u64, flags u16, length u32.
pub const HEADER_LEN: usize = 14;
/// The longest message accepted, header included (sockperf's own limit is 65,506 bytes of
/// message; a little headroom does not hurt and bounds the buffer).
pub const MAX_MESSAGE: usize = 65_536;

/// The header's flag bits.
pub const FLAG_CLIENT: u16 = 1;
pub const FLAG_PONG: u16 = 2;
pub const FLAG_WARMUP: u16 = 4;

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub flags: u16,
    /// The whole message's length, header included.
    pub len: u32,
}

impl Header {
    /// Reads a header from the first [`HEADER_LEN`] bytes of `b` (`None` when shorter).
    pub fn read(b: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            seq: u64::from_be_bytes(b[0..8].try_into().ok()?),
            flags: u16::from_be_bytes([b[8], b[9]]),
            len: u32::from_be_bytes([b[10], b[11], b[12], b[13]]),
        })
    }

    /// The header's 14 bytes.
    pub fn bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..10].copy_from_slice(&self.flags.to_be_bytes());
        b[10..14].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// True when the server owes this message an answer.
    pub(crate) fn wants_reply(&self) -> bool {
        self.flags & FLAG_CLIENT != 0
            && self.flags & FLAG_PONG != 0
            && self.flags & FLAG_WARMUP == 0
    }
}

/// What the start of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole message yet.
    Partial,
    /// A whole message of `len` bytes (header included).
    Message { header: Header, len: usize },
    /// The header's length cannot be a message's: the framing is lost.
    Invalid(&'static str),
}

/// Frames the first message of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(header) = Header::read(buf) else {
        return Parsed::Partial;
    };
    let len = header.len as usize;
    if len < HEADER_LEN {
        return Parsed::Invalid("message length shorter than its header");
    }
    if len > MAX_MESSAGE {
        return Parsed::Invalid("message length over 64 KiB");
    }
    if buf.len() < len {
        return Parsed::Partial;
    }
    Parsed::Message { header, len }
}

/// Appends the answer to the whole message `msg` (as [`parse`] framed it) to `out`: the same
/// bytes with the client flag cleared, or nothing when the message asks for no answer.
/// Returns whether it answered.
pub fn answer(msg: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(h) = Header::read(msg) else {
        return false;
    };
    if !h.wants_reply() {
        return false;
    }
    let at = out.len();
    out.extend_from_slice(msg);
    let flags = (h.flags & !FLAG_CLIENT).to_be_bytes();
    out[at + 8] = flags[0];
    out[at + 9] = flags[1];
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(seq: u64, flags: u16, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            seq,
            flags,
            len: (HEADER_LEN + payload.len()) as u32,
        };
        let mut v = h.bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_layout_is_big_endian() {
        let b = msg(0x0102_0304_0506_0708, 0x0003, b"xy");
        assert_eq!(
            b,
            [1, 2, 3, 4, 5, 6, 7, 8, 0, 3, 0, 0, 0, 16, b'x', b'y'].to_vec()
        );
    }

    #[test]
    fn pong_requests_are_answered_with_the_client_flag_cleared() {
        let m = msg(7, FLAG_CLIENT | FLAG_PONG, b"payload");
        let mut out = Vec::new();
        assert!(answer(&m, &mut out));
        let h = Header::read(&out).unwrap();
        assert_eq!(h.flags, FLAG_PONG);
        assert_eq!(h.seq, 7);
        assert_eq!(&out[HEADER_LEN..], b"payload");
    }

    #[test]
    fn warmups_and_non_pongs_and_server_messages_get_nothing() {
        let mut out = Vec::new();
        for flags in [
            FLAG_CLIENT | FLAG_PONG | FLAG_WARMUP,
            FLAG_CLIENT,
            FLAG_PONG,
            0,
        ] {
            assert!(!answer(&msg(1, flags, b"x"), &mut out), "flags {flags}");
        }
        assert!(out.is_empty());
    }

    #[test]
    fn bad_lengths_break_the_framing() {
        let mut m = msg(1, 3, b"");
        m[13] = 13;
        assert!(matches!(parse(&m), Parsed::Invalid(_)));
        let big = Header {
            seq: 0,
            flags: 3,
            len: MAX_MESSAGE as u32 + 1,
        };
        assert!(matches!(parse(&big.bytes()), Parsed::Invalid(_)));
        assert_eq!(parse(&m[..13]), Parsed::Partial);
    }

    proptest! {
        /// Any sequence of messages, cut anywhere: each is framed once, whole, in order, and
        /// the answers are the pong requests with the client flag cleared.
        #[test]
        fn framing_survives_any_split(
            msgs in prop::collection::vec((any::<u64>(), 0u16..8, prop::collection::vec(any::<u8>(), 0..40)), 1..12),
            cut in any::<prop::sample::Index>(),
        ) {
            let stream: Vec<u8> = msgs.iter().flat_map(|(s, f, p)| msg(*s, *f, p)).collect();
            let cut = cut.index(stream.len() + 1);
            let mut buf = Vec::new();
            let mut seen = Vec::new();
            let mut out = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                buf.extend_from_slice(part);
                loop {
                    match parse(&buf) {
                        Parsed::Partial => break,
                        Parsed::Invalid(w) => prop_assert!(false, "{w}"),
                        Parsed::Message { header, len } => {
                            answer(&buf[..len], &mut out);
                            seen.push(header);
                            buf.drain(..len);
                        }
                    }
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(seen.len(), msgs.len());
            let want: Vec<u8> = msgs
                .iter()
                .filter(|(_, f, _)| f & 7 == FLAG_CLIENT | FLAG_PONG)
                .flat_map(|(s, f, p)| msg(*s, f & !FLAG_CLIENT, p))
                .collect();
            prop_assert_eq!(out, want);
        }

        /// Any bytes: parse never panics and never frames more than it holds.
        #[test]
        fn parse_any_bytes(b in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Parsed::Message { len, .. } = parse(&b) {
                prop_assert!(len >= HEADER_LEN && len <= b.len());
            }
        }
    }
}
