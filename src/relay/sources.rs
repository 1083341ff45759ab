//! The relay's UDP flows: one socket per source address, connected to `--to`, so that what the
//! receiver answers (iperf3's stream handshake, anything a receiver sends back to where a
//! datagram came from) arrives on that source's socket and can be returned to it.
//!
//! The table is bounded ([`MAX_FLOWS`] sources). A new source when it is full takes the place of
//! the one quiet the longest; that one's socket leaves the poll at once (nothing more comes back
//! to it) and closes once the datagrams still inside the pipeline have left through it.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::rc::Rc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::sys::sockopt;

/// Sources with a socket of their own at once.
pub(crate) const MAX_FLOWS: usize = 1024;
/// The poll token of flow slot `i` is `FIRST_TOKEN + i` (below the TCP proxy's tokens).
const FIRST_TOKEN: usize = 16;
/// Send buffer of each flow's socket.
const SNDBUF: usize = 4 << 20;

/// What a source's datagrams carry, as far as the ground truth is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// netcore's datagrams (or anything else: what does not decode is "other").
    Netcore,
    /// An iperf3 UDP stream (it sent iperf3's stream hello); its counter width once its first
    /// data datagram told it (`Some(true)`: 64-bit).
    Iperf3(Option<bool>),
}

/// One source and its socket towards `--to`.
pub struct Flow {
    pub from: SocketAddr,
    /// Shared with the datagrams in the pipeline, which leave through it.
    pub sock: Rc<UdpSocket>,
    /// When it was last used (nanoseconds on the relay's clock).
    pub last: u64,
    pub proto: Proto,
}

/// The bounded table of flows.
pub struct Flows {
    to: SocketAddr,
    /// At most this many flows ([`MAX_FLOWS`]).
    max: usize,
    slots: Vec<Option<Flow>>,
    index: HashMap<SocketAddr, usize>,
    /// The last source looked up and its slot: with one source, no hashing per datagram.
    recent: Option<(SocketAddr, usize)>,
    /// A socket opened (and so `--to` checked) before the first source came.
    spare: Option<UdpSocket>,
    /// Flows opened, and closed to make room.
    pub opened: u64,
    pub evicted: u64,
}

/// A UDP socket connected to `to` (from an ephemeral port of the same family).
pub fn connect(to: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = if to.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any)?;
    s.connect(to)?;
    sockopt::size_buffer(&s, SNDBUF, false)?;
    Ok(s)
}

impl Flows {
    /// A table of at most `max` flows (1..=[`MAX_FLOWS`]) whose first flow takes `spare` (a
    /// socket from [`connect`]).
    pub fn new(to: SocketAddr, spare: UdpSocket, max: usize) -> Flows {
        Flows {
            to,
            max: max.clamp(1, MAX_FLOWS),
            slots: Vec::new(),
            index: HashMap::new(),
            recent: None,
            spare: Some(spare),
            opened: 0,
            evicted: 0,
        }
    }

    /// The slot of `from`'s flow, opened (and registered for reading under its token) if it
    /// has none.
    pub fn slot(&mut self, registry: &Registry, from: SocketAddr, now: u64) -> io::Result<usize> {
        if let Some((a, i)) = self.recent {
            if a == from {
                return Ok(i);
            }
        }
        let i = match self.index.get(&from) {
            Some(&i) => i,
            None => self.open(registry, from, now)?,
        };
        self.recent = Some((from, i));
        Ok(i)
    }

    fn open(&mut self, registry: &Registry, from: SocketAddr, now: u64) -> io::Result<usize> {
        let sock = match self.spare.take() {
            Some(s) => s,
            None => connect(self.to)?,
        };
        let i = if self.index.len() >= self.max {
            self.evict(registry)
        } else if let Some(free) = self.slots.iter().position(Option::is_none) {
            free
        } else {
            self.slots.push(None);
            self.slots.len() - 1
        };
        registry.register(
            &mut SourceFd(&sock.as_raw_fd()),
            Token(FIRST_TOKEN + i),
            Interest::READABLE,
        )?;
        self.slots[i] = Some(Flow {
            from,
            sock: Rc::new(sock),
            last: now,
            proto: Proto::Netcore,
        });
        self.index.insert(from, i);
        self.opened += 1;
        Ok(i)
    }

    /// Closes the flow quiet the longest; returns its slot.
    fn evict(&mut self, registry: &Registry) -> usize {
        let (i, _) = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.as_ref().map(|f| (i, f.last)))
            .min_by_key(|&(_, last)| last)
            .expect("a full table has flows");
        if let Some(f) = self.slots[i].take() {
            let _ = registry.deregister(&mut SourceFd(&f.sock.as_raw_fd()));
            self.index.remove(&f.from);
        }
        self.recent = None;
        self.evicted += 1;
        i
    }

    pub fn get(&self, i: usize) -> Option<&Flow> {
        self.slots.get(i)?.as_ref()
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Flow> {
        self.slots.get_mut(i)?.as_mut()
    }

    /// The slot a poll token belongs to, if it is a flow's.
    pub(crate) fn slot_of(token: Token) -> Option<usize> {
        let i = token.0.checked_sub(FIRST_TOKEN)?;
        (i < MAX_FLOWS).then_some(i)
    }

    /// Flows open now.
    pub fn open_now(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::Poll;

    #[test]
    fn a_full_table_closes_the_flow_quiet_the_longest() {
        let poll = Poll::new().unwrap();
        let r = poll.registry();
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sink.local_addr().unwrap();
        let mut f = Flows::new(to, connect(to).unwrap(), 2);
        let a: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:1003".parse().unwrap();
        let sa = f.slot(r, a, 10).unwrap();
        let sb = f.slot(r, b, 20).unwrap();
        assert_ne!(sa, sb);
        assert_eq!(
            f.slot(r, a, 30).unwrap(),
            sa,
            "the same source keeps its flow"
        );
        f.get_mut(sa).unwrap().last = 30;
        let a_sock = f.get(sa).unwrap().sock.clone();
        // Full: c takes b's place (quiet since 20), a keeps its socket.
        let sc = f.slot(r, c, 40).unwrap();
        assert_eq!(sc, sb);
        assert_eq!((f.opened, f.evicted, f.open_now()), (3, 1, 2));
        assert_eq!(f.get(sc).unwrap().from, c);
        let again = f.slot(r, a, 50).unwrap();
        assert_eq!(again, sa);
        assert!(Rc::ptr_eq(&f.get(again).unwrap().sock, &a_sock));
        // b comes back: a new flow, in the place of the one quiet the longest now (c, at 40).
        f.get_mut(sa).unwrap().last = 50;
        assert_eq!(f.slot(r, b, 60).unwrap(), sc);
        assert_eq!(Flows::slot_of(Token(FIRST_TOKEN + sc)), Some(sc));
        assert_eq!(Flows::slot_of(Token(2)), None);
        assert_eq!(Flows::slot_of(Token(FIRST_TOKEN + MAX_FLOWS)), None);
        // Each flow's socket is connected to `to` from a port of its own.
        let ports: Vec<u16> = [sa, sc]
            .iter()
            .map(|&i| f.get(i).unwrap().sock.local_addr().unwrap().port())
            .collect();
        assert_ne!(ports[0], ports[1]);
    }
}
