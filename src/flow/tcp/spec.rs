//! What a TCP test is (pure): the settings both ends apply, which way each data connection
//! carries data, how the plan is split over streams, and the preamble a data connection opens
//! with so the receiver can tell it from a control connection on the same port.

use serde::{Deserialize, Serialize};

/// Default write (and read) size of a TCP test.
pub const DEFAULT_LEN: usize = 128 * 1024;
/// The largest write size accepted.
pub const MAX_LEN: usize = 16 << 20;
pub use crate::flow::streams::{Dir, Mode, MAX_STREAMS};

/// The settings of a TCP test, sent by the client in `Setup` and applied by both ends to
/// their data sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpSpec {
    /// Connections per direction.
    pub streams: u16,
    pub mode: Mode,
    /// Bytes per write (and the reader's buffer size).
    pub len: u32,
    /// SO_SNDBUF/SO_RCVBUF in bytes (the kernel's autotuning without it).
    pub window: Option<u64>,
    /// TCP_MAXSEG.
    pub mss: Option<u32>,
    /// TCP_CONGESTION.
    pub congestion: Option<String>,
    pub no_delay: bool,
    /// SO_MAX_PACING_RATE in bits per second, per connection.
    pub fq_rate_bps: Option<u64>,
    /// Application pacing (token bucket), in bits per second over all connections of one
    /// direction.
    pub rate_bps: Option<u64>,
    /// Writers send with `MSG_ZEROCOPY` (`--zerocopy`). Absent when false, so a spec without
    /// it reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zerocopy: bool,
    /// Writers send with `sendfile(2)` from an in-memory file of the pattern (`--sendfile`,
    /// iperf3's `-Z`). Absent when false, so a spec without it reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sendfile: bool,
    /// The server sends its interval samples of the connections it writes (`-R`, `--bidir`)
    /// over control (`TcpInterval`), so the client shows the sender's figures live. Absent when
    /// false, so a spec without it reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intervals: bool,
    /// Every data connection on a thread of its own, on both ends (`--thread-per-stream`),
    /// rather than one thread for the writers (readers) that share a CPU. Absent when false,
    /// so a spec without it reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thread_per_stream: bool,
}

impl TcpSpec {
    /// Each data connection's direction, in stream-id order (ids are indices).
    pub fn directions(&self) -> Vec<Dir> {
        self.mode.directions(self.streams as usize)
    }

    /// Checks values a peer might send that no netcore client would.
    pub fn check(&self) -> Result<(), String> {
        if self.streams == 0 || self.streams > MAX_STREAMS {
            return Err(format!("{} streams: use 1..={MAX_STREAMS}", self.streams));
        }
        if self.len == 0 || self.len as usize > MAX_LEN {
            return Err(format!(
                "write size {} out of range 1..={MAX_LEN}",
                self.len
            ));
        }
        Ok(())
    }
}

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

    fn spec(streams: u16, mode: Mode) -> TcpSpec {
        TcpSpec {
            streams,
            mode,
            len: DEFAULT_LEN as u32,
            window: None,
            mss: None,
            congestion: None,
            no_delay: false,
            fq_rate_bps: None,
            rate_bps: None,
            zerocopy: false,
            sendfile: false,
            intervals: false,
            thread_per_stream: false,
        }
    }

    #[test]
    fn directions_by_mode() {
        assert_eq!(spec(2, Mode::Forward).directions(), vec![Dir::Up, Dir::Up]);
        assert_eq!(spec(1, Mode::Reverse).directions(), vec![Dir::Down]);
        assert_eq!(
            spec(2, Mode::Bidir).directions(),
            vec![Dir::Up, Dir::Up, Dir::Down, Dir::Down]
        );
        assert!(spec(0, Mode::Forward).check().is_err());
        assert!(spec(MAX_STREAMS + 1, Mode::Forward).check().is_err());
        assert!(spec(4, Mode::Bidir).check().is_ok());
    }

    #[test]
    fn spec_round_trips_and_rejects_unknown_fields() {
        let s = spec(3, Mode::Bidir);
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<TcpSpec>(&j).unwrap(), s);
        let bad = j.replacen('{', r#"{"splice":true,"#, 1);
        assert!(serde_json::from_str::<TcpSpec>(&bad).is_err());
    }

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
