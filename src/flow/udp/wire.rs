//! The datagram wire format (fixed header, little-endian, versioned) and the payload pattern.
//!
//! ```text
//! offset size field
//!      0    4 magic        b"NCud"
//!      4    1 version      1
//!      5    1 flags        bit 0: VERIFY (payload is the sequence pattern, checksum is set)
//!      6    2 stream
//!      8    8 test id      random per test, agreed in the control channel's Hello
//!     16    8 sequence     0, 1, 2, ... per test (dense: only datagrams the kernel took count)
//!     24    8 send time    ns since the Unix epoch (CLOCK_REALTIME), one reading per batch
//!     32    4 payload len  bytes after the header
//!     36    4 checksum     of the payload with VERIFY, else 0
//!     40      payload
//! ```
//! Without VERIFY the payload is a fixed pattern written once per buffer (no per-datagram cost);
//! with VERIFY every payload is derived from its sequence number and checksummed, so corruption
//! and misdelivery are detected per datagram.

use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 4] = *b"NCud";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 40;
/// Largest UDP payload over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 65_507;
pub(crate) const FLAG_VERIFY: u8 = 1;
/// An opener (`-R`): the client's datagram that opens the path for a receiver that sends; a
/// bare header, sequence 0, no payload.
pub(crate) const FLAG_OPEN: u8 = 2;

/// The opener datagram of test `test_id`.
pub fn opener(test_id: u64) -> [u8; HEADER_LEN] {
    let mut d = [0u8; HEADER_LEN];
    Header {
        flags: FLAG_OPEN,
        stream: 0,
        test_id,
        seq: 0,
        send_ns: 0,
        payload_len: 0,
        checksum: 0,
    }
    .encode(&mut d);
    d
}

/// Whether `d` is test `test_id`'s opener.
pub(crate) fn is_opener(d: &[u8], test_id: u64) -> bool {
    Header::decode(d).is_ok_and(|h| h.flags & FLAG_OPEN != 0 && h.test_id == test_id)
}

/// A decoded datagram header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub stream: u16,
    pub test_id: u64,
    pub seq: u64,
    pub send_ns: u64,
    pub payload_len: u32,
    pub checksum: u32,
}

/// Why a datagram was not counted as a test datagram. Each reason is counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invalid {
    /// Shorter than the header.
    Short,
    /// Does not start with the magic bytes.
    Magic,
    /// A wire version this receiver does not speak.
    Version,
    /// The header's payload length does not match the datagram's length.
    Length,
    /// Carries another test's id (a stray from an earlier or a foreign test).
    TestId,
    /// The payload does not match its checksum or its sequence pattern.
    Checksum,
    /// Larger than the receive buffer (cut by the kernel).
    Truncated,
    /// Carries a stream number the test did not announce (`-P`).
    Stream,
    /// Came from an address outside the receiver's `--allow` (dropped before it was decoded).
    NotAllowed,
}

impl Invalid {
    pub(crate) const ALL: [Invalid; 9] = [
        Invalid::Short,
        Invalid::Magic,
        Invalid::Version,
        Invalid::Length,
        Invalid::TestId,
        Invalid::Checksum,
        Invalid::Truncated,
        Invalid::Stream,
        Invalid::NotAllowed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Invalid::Short => "short",
            Invalid::Magic => "magic",
            Invalid::Version => "version",
            Invalid::Length => "length",
            Invalid::TestId => "test_id",
            Invalid::Checksum => "checksum",
            Invalid::Truncated => "truncated",
            Invalid::Stream => "stream",
            Invalid::NotAllowed => "not_allowed",
        }
    }
}

#[inline]
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    pub fn encode(&self, buf: &mut [u8]) {
        let b = &mut buf[..HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = self.flags;
        b[6..8].copy_from_slice(&self.stream.to_le_bytes());
        b[8..16].copy_from_slice(&self.test_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.send_ns.to_le_bytes());
        b[32..36].copy_from_slice(&self.payload_len.to_le_bytes());
        b[36..40].copy_from_slice(&self.checksum.to_le_bytes());
    }

    /// Decodes and checks the framing of one datagram (magic, version, length). The test id and
    /// the checksum are the receiver's to check: see [`check_payload`].
    #[inline]
    pub fn decode(d: &[u8]) -> Result<Header, Invalid> {
        if d.len() < HEADER_LEN {
            return Err(Invalid::Short);
        }
        if d[0..4] != MAGIC {
            return Err(Invalid::Magic);
        }
        if d[4] != VERSION {
            return Err(Invalid::Version);
        }
        let h = Header {
            flags: d[5],
            stream: u16::from_le_bytes([d[6], d[7]]),
            test_id: u64_at(d, 8),
            seq: u64_at(d, 16),
            send_ns: u64_at(d, 24),
            payload_len: u32_at(d, 32),
            checksum: u32_at(d, 36),
        };
        if h.payload_len as usize != d.len() - HEADER_LEN {
            return Err(Invalid::Length);
        }
        Ok(h)
    }
}

/// Rewrites only the per-datagram fields (sequence and send time) of an encoded header: the
/// sender's hot path.
#[inline]
pub fn stamp(buf: &mut [u8], seq: u64, send_ns: u64) {
    buf[16..24].copy_from_slice(&seq.to_le_bytes());
    buf[24..32].copy_from_slice(&send_ns.to_le_bytes());
}

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// Fills `payload` with the pattern of sequence `seq` (a cheap per-8-byte mix).
pub(crate) fn fill_pattern(payload: &mut [u8], seq: u64) {
    let mut x = seq.wrapping_mul(K) ^ 0x5555_5555_5555_5555;
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        x = x.wrapping_add(K);
        c.copy_from_slice(&x.to_le_bytes());
    }
    x = x.wrapping_add(K);
    let rest = chunks.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&x.to_le_bytes()[..n]);
}

/// A 32-bit checksum of the payload (word-wise multiply-rotate mix; cheap, not cryptographic).
pub fn checksum(payload: &[u8]) -> u32 {
    let mut acc: u64 = payload.len() as u64;
    let mut chunks = payload.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        acc = (acc ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    acc = (acc ^ u64::from_le_bytes(last)).wrapping_mul(K);
    (acc ^ (acc >> 32)) as u32
}

/// Writes a VERIFY payload for `seq` after the header and sets the header's checksum field.
pub fn fill_verified(datagram: &mut [u8], seq: u64) {
    let (head, payload) = datagram.split_at_mut(HEADER_LEN);
    fill_pattern(payload, seq);
    let c = checksum(payload);
    head[36..40].copy_from_slice(&c.to_le_bytes());
}

/// With VERIFY set, checks the payload against the header's checksum and the sequence pattern.
/// (Inline: without VERIFY, the receiver's per-datagram path is one flag test.)
#[inline]
pub fn check_payload(h: &Header, datagram: &[u8]) -> Result<(), Invalid> {
    if h.flags & FLAG_VERIFY == 0 {
        return Ok(());
    }
    verify_payload(h, datagram)
}

#[cold]
fn verify_payload(h: &Header, datagram: &[u8]) -> Result<(), Invalid> {
    let payload = &datagram[HEADER_LEN..];
    if checksum(payload) != h.checksum {
        return Err(Invalid::Checksum);
    }
    let mut expect = [0u8; 64];
    let n = payload.len().min(64);
    fill_pattern(&mut expect[..n], h.seq);
    if payload[..n] != expect[..n] {
        return Err(Invalid::Checksum);
    }
    Ok(())
}

/// Builds a complete datagram (header and payload) of `len` bytes: the tests' and the relay's
/// way to craft datagrams.
pub fn build(len: usize, test_id: u64, seq: u64, send_ns: u64, verify: bool) -> Vec<u8> {
    assert!(len >= HEADER_LEN);
    let mut d = vec![0u8; len];
    Header {
        flags: if verify { FLAG_VERIFY } else { 0 },
        stream: 0,
        test_id,
        seq,
        send_ns,
        payload_len: (len - HEADER_LEN) as u32,
        checksum: 0,
    }
    .encode(&mut d);
    if verify {
        fill_verified(&mut d, seq);
    } else {
        fill_pattern(&mut d[HEADER_LEN..], test_id);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opener_is_a_bare_header_of_its_test() {
        let d = opener(42);
        assert!(is_opener(&d, 42));
        assert!(!is_opener(&d, 43));
        assert!(!is_opener(&build(100, 42, 0, 0, false), 42));
        assert!(!is_opener(&d[..10], 42));
        assert_eq!(Header::decode(&d).unwrap().payload_len, 0);
    }
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let d = build(1472, 42, 7, 1234, false);
        let h = Header::decode(&d).unwrap();
        assert_eq!(
            (h.test_id, h.seq, h.send_ns, h.payload_len),
            (42, 7, 1234, 1432)
        );
        assert_eq!(check_payload(&h, &d), Ok(()));
    }

    #[test]
    fn stamp_rewrites_seq_and_time() {
        let mut d = build(100, 1, 0, 0, false);
        stamp(&mut d, 99, 555);
        let h = Header::decode(&d).unwrap();
        assert_eq!((h.seq, h.send_ns), (99, 555));
    }

    #[test]
    fn invalid_reasons() {
        assert_eq!(Header::decode(&[0u8; 10]), Err(Invalid::Short));
        let mut d = build(64, 1, 0, 0, false);
        d[0] = b'X';
        assert_eq!(Header::decode(&d), Err(Invalid::Magic));
        let mut d = build(64, 1, 0, 0, false);
        d[4] = 9;
        assert_eq!(Header::decode(&d), Err(Invalid::Version));
        let d = build(64, 1, 0, 0, false);
        assert_eq!(Header::decode(&d[..63]), Err(Invalid::Length));
    }

    #[test]
    fn verify_detects_corruption() {
        let mut d = build(200, 1, 5, 0, true);
        let h = Header::decode(&d).unwrap();
        assert_eq!(check_payload(&h, &d), Ok(()));
        d[150] ^= 1;
        assert_eq!(check_payload(&h, &d), Err(Invalid::Checksum));
        // A payload of another sequence with a matching checksum is still caught.
        let other = build(200, 1, 6, 0, true);
        let mut forged = d.clone();
        forged[HEADER_LEN..].copy_from_slice(&other[HEADER_LEN..]);
        forged[36..40].copy_from_slice(&other[36..40]);
        let h = Header::decode(&forged).unwrap();
        assert_eq!(check_payload(&h, &forged), Err(Invalid::Checksum));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Header::decode(&bytes).map(|h| check_payload(&h, &bytes));
        }

        #[test]
        fn encode_decode(test_id: u64, seq: u64, ts: u64, len in HEADER_LEN..2000usize, verify: bool) {
            let d = build(len, test_id, seq, ts, verify);
            let h = Header::decode(&d).unwrap();
            prop_assert_eq!((h.test_id, h.seq, h.send_ns), (test_id, seq, ts));
            prop_assert_eq!(h.payload_len as usize, len - HEADER_LEN);
            prop_assert_eq!(check_payload(&h, &d), Ok(()));
        }
    }
}
