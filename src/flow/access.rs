//! Who may start a test on a receiver (pure): `--allow` address blocks (IPv4 and IPv6 CIDR)
//! and the shared key of `--auth-key-file`, which a sender proves it knows without sending it.
//!
//! The proof is a challenge-response: after the sender's Hello (which says it will prove a
//! key), the receiver sends a fresh random nonce (`Challenge`); the sender answers `Auth` with
//! HMAC-SHA256(key, [`MAC_CONTEXT`] ‖ test id (8 bytes, little-endian) ‖ nonce). The receiver
//! checks it in constant time (`hmac`'s `verify_slice`). The nonce is new for every
//! connection, so a recorded answer is worth nothing on another connection; the key never
//! crosses the wire.
//!
//! A keyed TCP test's data connections are bound to that proof: each preamble carries a
//! [`TestSecret::token`], HMAC-SHA256(key, [`DATA_CONTEXT`] ‖ test id ‖ nonce ‖ stream id) cut
//! to [`TOKEN_LEN`] bytes, which only the sender that answered this connection's challenge can
//! make. Knowing a running test's id is not enough to join it.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long past `--max-duration` a sender may still be sending (its Done on its way)
/// before the receiver cuts the test.
pub(crate) const OVERRUN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Bytes of a challenge's nonce.
pub(crate) const NONCE_LEN: usize = 32;
/// Domain separation for the MAC (a key used elsewhere cannot be made to answer for us).
pub(crate) const MAC_CONTEXT: &[u8] = b"netcore control auth v1\0";
/// Domain separation for a data connection's token (never equal to a control proof).
pub(crate) const DATA_CONTEXT: &[u8] = b"netcore data conn v1\0";
/// Bytes of a data connection's token.
pub const TOKEN_LEN: usize = 16;
/// The longest key file read.
pub(crate) const MAX_KEY: usize = 4096;

/// One address block: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/BITS` or a bare address (all bits), IPv4 or IPv6.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{text}' is not an address block (ADDR/BITS)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("'{text}': prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the block. An IPv4 address seen as IPv6 (`::ffff:a.b.c.d`, a
    /// dual-stack listener's view) is compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `--allow`: the blocks a peer must be in (empty: everyone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(pub Vec<Cidr>);

impl AllowList {
    /// Parses `CIDR,CIDR,...` (at least one).
    pub fn parse(text: &str) -> Result<AllowList, String> {
        let list = text
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err("--allow needs at least one address block".into());
        }
        Ok(AllowList(list))
    }

    /// Whether `ip` may start a test.
    pub(crate) fn admits(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|c| c.contains(ip))
    }
}

/// A shared key (`--auth-key-file`); debug output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Arc<Vec<u8>>);

impl Key {
    /// Reads a key file ([`read_key`]).
    pub fn read(path: &Path) -> Result<Key, String> {
        read_key(path).map(|k| Key(Arc::new(k)))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<hidden>)")
    }
}

/// Reads a shared key file: its bytes, without one trailing newline. An unreadable, empty
/// or oversized file is an error naming it.
pub(crate) fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let mut key = std::fs::read(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    if key.len() > MAX_KEY {
        return Err(format!(
            "the key file {} is over {MAX_KEY} bytes",
            path.display()
        ));
    }
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    if key.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(format!("the key file {} is empty", path.display()));
    }
    Ok(key)
}

fn mac_for(key: &[u8], test_id: u64, nonce: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(MAC_CONTEXT);
    m.update(&test_id.to_le_bytes());
    m.update(nonce);
    m
}

/// The sender's answer to a challenge: the MAC in lowercase hex.
pub fn answer(key: &[u8], test_id: u64, nonce: &[u8]) -> String {
    hex(&mac_for(key, test_id, nonce).finalize().into_bytes())
}

/// Whether `mac_hex` is the right answer (constant-time in the MAC's bytes).
pub fn verify(key: &[u8], test_id: u64, nonce: &[u8], mac_hex: &str) -> bool {
    match unhex(mac_hex) {
        Some(mac) => mac_for(key, test_id, nonce).verify_slice(&mac).is_ok(),
        None => false,
    }
}

/// What binds a keyed test's data connections to its authenticated control connection: the
/// key and the nonce of that connection's challenge (both sides hold it once the key is
/// proved).
#[derive(Clone, Debug)]
pub struct TestSecret {
    key: Key,
    test_id: u64,
    nonce: [u8; NONCE_LEN],
}

impl TestSecret {
    pub fn new(key: Key, test_id: u64, nonce: [u8; NONCE_LEN]) -> TestSecret {
        TestSecret {
            key,
            test_id,
            nonce,
        }
    }

    fn mac(&self, stream: u32) -> Hmac<Sha256> {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(self.key.bytes()).expect("any key length");
        m.update(DATA_CONTEXT);
        m.update(&self.test_id.to_le_bytes());
        m.update(&self.nonce);
        m.update(&stream.to_le_bytes());
        m
    }

    /// The token data connection `stream` of this test opens with.
    pub fn token(&self, stream: u32) -> [u8; TOKEN_LEN] {
        let tag = self.mac(stream).finalize().into_bytes();
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(&tag[..TOKEN_LEN]);
        t
    }

    /// Whether `token` is data connection `stream`'s (constant-time in its bytes).
    pub(crate) fn admits(&self, stream: u32, token: &[u8]) -> bool {
        token.len() == TOKEN_LEN && self.mac(stream).verify_truncated_left(token).is_ok()
    }
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of a hex string (None if it is not one, or over 256 bytes).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 512 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A fresh random nonce.
pub fn nonce() -> [u8; NONCE_LEN] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks() {
        let l = AllowList::parse("10.0.0.0/8, 192.168.1.7,2001:db8::/32").unwrap();
        assert!(l.admits(ip("10.1.2.3")));
        assert!(!l.admits(ip("11.0.0.1")));
        assert!(l.admits(ip("192.168.1.7")));
        assert!(!l.admits(ip("192.168.1.8")));
        assert!(l.admits(ip("2001:db8::1")));
        assert!(!l.admits(ip("2001:db9::1")));
        assert!(l.admits(ip("::ffff:10.9.9.9")));
        assert!(AllowList::parse("0.0.0.0/0").unwrap().admits(ip("1.2.3.4")));
        assert!(!AllowList::parse("0.0.0.0/0").unwrap().admits(ip("::1")));
        assert!(AllowList::parse("::/0").unwrap().admits(ip("::1")));
        assert!(AllowList::default().admits(ip("1.2.3.4")));
        for bad in [
            "",
            ",",
            "10.0.0.0/33",
            "::/129",
            "host/8",
            "10.0.0.0/-1",
            "1.2.3.4/x",
        ] {
            assert!(AllowList::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Cidr::parse("127.0.0.1").unwrap().to_string(),
            "127.0.0.1/32"
        );
    }

    #[test]
    fn mac_round_trip_and_refusals() {
        let nonce = [7u8; NONCE_LEN];
        let a = answer(b"secret", 42, &nonce);
        assert_eq!(a.len(), 64);
        assert!(verify(b"secret", 42, &nonce, &a));
        assert!(!verify(b"secreT", 42, &nonce, &a));
        assert!(!verify(b"secret", 43, &nonce, &a));
        assert!(!verify(b"secret", 42, &[8u8; NONCE_LEN], &a));
        assert!(!verify(b"secret", 42, &nonce, &a[..62]));
        assert!(!verify(b"secret", 42, &nonce, "zz"));
        assert!(!verify(b"secret", 42, &nonce, ""));
    }

    #[test]
    fn key_files() {
        let dir = std::env::temp_dir().join(format!("netcore-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("k");
        std::fs::write(&f, "abc\n").unwrap();
        assert_eq!(read_key(&f).unwrap(), b"abc");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_key(&f).unwrap_err().contains("is empty"));
        std::fs::write(&f, "").unwrap();
        assert!(read_key(&f).unwrap_err().contains("is empty"));
        std::fs::write(&f, vec![b'k'; MAX_KEY + 1]).unwrap();
        assert!(read_key(&f).unwrap_err().contains("over"));
        assert!(read_key(&dir.join("none"))
            .unwrap_err()
            .contains("cannot read the key file"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        /// A block contains exactly the addresses that share its first `prefix` bits.
        #[test]
        fn v4_membership_is_the_prefix(net in any::<u32>(), ip in any::<u32>(), p in 0u8..=32) {
            let c = Cidr::parse(&format!("{}/{p}", std::net::Ipv4Addr::from(net))).unwrap();
            let same = p == 0 || (net ^ ip) >> (32 - p as u32) == 0;
            prop_assert_eq!(c.contains(IpAddr::V4(ip.into())), same);
        }

        #[test]
        fn v6_membership_is_the_prefix(net in any::<u128>(), ip in any::<u128>(), p in 0u8..=128) {
            let c = Cidr::parse(&format!("{}/{p}", std::net::Ipv6Addr::from(net))).unwrap();
            let same = p == 0 || (net ^ ip) >> (128 - p as u32) == 0;
            prop_assert_eq!(c.contains(IpAddr::V6(ip.into())), same);
        }

        /// Hex of any bytes reads back; any string is parsed without a panic.
        #[test]
        fn hex_round_trip(b in prop::collection::vec(any::<u8>(), 0..64), s in ".{0,80}") {
            prop_assert_eq!(unhex(&hex(&b)), Some(b));
            let _ = unhex(&s);
        }
    }

    #[test]
    fn a_data_token_is_bound_to_key_test_nonce_and_stream() {
        let k = |b: &[u8]| Key(Arc::new(b.to_vec()));
        let s = TestSecret::new(k(b"key"), 9, [1; NONCE_LEN]);
        let t = s.token(2);
        assert!(s.admits(2, &t));
        assert!(!s.admits(3, &t), "another stream");
        assert!(!s.admits(2, &t[..8]), "a cut token");
        for other in [
            TestSecret::new(k(b"other"), 9, [1; NONCE_LEN]),
            TestSecret::new(k(b"key"), 8, [1; NONCE_LEN]),
            TestSecret::new(k(b"key"), 9, [2; NONCE_LEN]),
        ] {
            assert!(!other.admits(2, &t), "{other:?}");
        }
    }
}
