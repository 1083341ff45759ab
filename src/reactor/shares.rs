//! Per-peer shares of a server's bounded resources (connections, queue places, test slots), pure:
//! one address may hold at most `per_peer` of them, so a single client cannot keep the others
//! out. IPv4 addresses count one by one (an IPv4-mapped IPv6 address is its IPv4 address); an
//! IPv6 address counts as its /64, the block one host is usually given.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// The address a peer is counted under: itself for IPv4, its /64 for IPv6.
pub(crate) fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// How many of a resource each peer holds, and the most one may hold.
#[derive(Debug, Clone)]
pub struct Shares {
    per_peer: usize,
    held: HashMap<IpAddr, usize>,
}

impl Shares {
    /// At most `per_peer` (at least 1) per address.
    pub fn new(per_peer: usize) -> Shares {
        Shares {
            per_peer: per_peer.max(1),
            held: HashMap::new(),
        }
    }

    /// The most one peer may hold.
    pub fn per_peer(&self) -> usize {
        self.per_peer
    }

    /// Takes one for `ip` if its share is not used up; false (nothing taken) if it is.
    pub(crate) fn try_take(&mut self, ip: IpAddr) -> bool {
        let n = self.held.entry(peer_key(ip)).or_insert(0);
        if *n >= self.per_peer {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives one back for `ip` (a no-op if it holds none).
    pub(crate) fn release(&mut self, ip: IpAddr) {
        let key = peer_key(ip);
        if let Some(n) = self.held.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&key);
            }
        }
    }

    /// How many `ip` holds.
    pub fn held(&self, ip: IpAddr) -> usize {
        self.held.get(&peer_key(ip)).copied().unwrap_or(0)
    }

    /// How many peers hold any.
    pub fn peers(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_peer_cannot_take_more_than_its_share() {
        let mut s = Shares::new(2);
        assert!(s.try_take(ip("127.0.0.2")));
        assert!(s.try_take(ip("127.0.0.2")));
        assert!(!s.try_take(ip("127.0.0.2")));
        assert_eq!(s.held(ip("127.0.0.2")), 2);
        // Another address is not affected.
        assert!(s.try_take(ip("127.0.0.3")));
        s.release(ip("127.0.0.2"));
        assert!(s.try_take(ip("127.0.0.2")));
        s.release(ip("127.0.0.2"));
        s.release(ip("127.0.0.2"));
        s.release(ip("127.0.0.2")); // more releases than takes: no underflow
        assert_eq!(s.held(ip("127.0.0.2")), 0);
        s.release(ip("127.0.0.3"));
        assert_eq!(s.peers(), 0, "empty entries are dropped");
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_v4_as_v4() {
        let mut s = Shares::new(1);
        assert!(s.try_take(ip("2001:db8:1:2::1")));
        assert!(!s.try_take(ip("2001:db8:1:2::ffff:9")), "same /64");
        assert!(s.try_take(ip("2001:db8:1:3::1")), "another /64");
        assert!(s.try_take(ip("10.0.0.1")));
        assert!(!s.try_take(ip("::ffff:10.0.0.1")), "the same IPv4 host");
        assert_eq!(Shares::new(0).per_peer(), 1);
    }
}
