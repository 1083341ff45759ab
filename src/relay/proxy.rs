//! The relay's TCP side: a plain, bounded proxy. Every connection accepted on the relay's
//! listen port (the UDP port's number, on TCP) is joined to a new connection to the same port
//! of `--to`, and bytes are copied both ways unchanged and unimpaired, so that control
//! channels (netcore's, iperf3's) and TCP tests work through the relay.
//!
//! - [`Pipe`] is the pure core of one direction: a fixed buffer between a reader and a writer
//!   (any `Read`/`Write`; the tests drive it with scripted ones). It reads only while it has
//!   room (backpressure: a peer that does not read stalls the other side's sending, the relay's
//!   memory stays `2 x BUF` per connection), writes what it holds, and after the reader's end of
//!   stream and the last byte written shuts the writer's sending side (half-close), so each
//!   direction ends on its own.
//! - [`Proxy`] drives the pairs on the relay's `mio` poll: accept (at most `max` open pairs; one
//!   more is closed at once and counted as refused), a non-blocking connect to `--to`, then both
//!   pipes on every readiness event of either socket. A pair ends when both directions have
//!   ended, or at the first error on either socket (a reset, a refused connect): then both
//!   sockets are closed with `SO_LINGER 0`, so the other peer sees a reset too.
//! - Held against squatters (issue #25): a pair that has moved no byte either way
//!   [`FIRST_BYTE`] after its accept is reset, and so is one that moved none for the proxy's
//!   idle timeout (`--tcp-idle`); both count under `errors.idle`. (No per-address share: a
//!   relay's clients are often one host, a `-P 32` test is 33 connections from it.)

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use serde::{Deserialize, Serialize};

/// Bytes buffered per direction of a connection.
pub(crate) const BUF: usize = 64 * 1024;
/// Bytes read per direction per turn of the relay's loop; a connection with more to read is
/// driven again at the next turn, after the datagrams and the other connections had theirs.
const TURN: usize = 4 * BUF;
/// How long a new pair may go without a byte either way before it is reset: every client the
/// relay carries (netcore's control channel, iperf3's) speaks at once.
pub(crate) const FIRST_BYTE: Duration = Duration::from_secs(10);
/// How often the pairs are checked for their deadlines.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// What one call of [`Pipe::pump`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pumped {
    pub read: usize,
    pub written: usize,
    /// Stopped reading at the call's limit with the reader maybe still readable: call again
    /// (an edge-triggered poll will not say so).
    pub more: bool,
}

/// One direction of a proxied connection: bytes read from one socket waiting to be written to
/// the other.
#[derive(Debug)]
pub struct Pipe {
    buf: Box<[u8]>,
    /// Buffered bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The reader reached its end of stream.
    eof: bool,
    /// The writer's sending side was shut (this direction is over).
    shut: bool,
    /// Bytes written to the writer.
    pub bytes: u64,
}

impl Pipe {
    pub fn new(cap: usize) -> Pipe {
        assert!(cap > 0, "a pipe holds at least one byte");
        Pipe {
            buf: vec![0u8; cap].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            shut: false,
            bytes: 0,
        }
    }

    /// Bytes held (read, not yet written).
    pub fn held(&self) -> usize {
        self.end - self.start
    }

    /// The direction has ended: the reader's end of stream was passed on.
    pub fn done(&self) -> bool {
        self.shut
    }

    /// Moves bytes from `src` to `dst` until neither can make progress (both would block, the
    /// buffer is full and the writer blocks, or the direction is over), reading at most about
    /// `limit` bytes (so that one busy connection cannot hold the relay's loop). `shut_write`
    /// is called once, after the reader's end of stream and the last byte written. Errors
    /// other than "would block" and "interrupted" are returned (the connection is then over).
    pub(crate) fn pump<R: Read, W: Write>(
        &mut self,
        src: &mut R,
        dst: &mut W,
        limit: usize,
        mut shut_write: impl FnMut(&mut W) -> io::Result<()>,
    ) -> io::Result<Pumped> {
        let mut did = Pumped::default();
        loop {
            let mut progress = false;
            if !self.eof && did.read >= limit {
                did.more = true;
            } else if !self.eof {
                if self.end == self.buf.len() && self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                }
                if self.end < self.buf.len() {
                    match src.read(&mut self.buf[self.end..]) {
                        Ok(0) => {
                            self.eof = true;
                            progress = true;
                        }
                        Ok(n) => {
                            self.end += n;
                            did.read += n;
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                        Err(e) => return Err(e),
                    }
                }
            }
            if self.start < self.end {
                match dst.write(&self.buf[self.start..self.end]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.start += n;
                        self.bytes += n as u64;
                        did.written += n;
                        progress = true;
                        if self.start == self.end {
                            self.start = 0;
                            self.end = 0;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(e) => return Err(e),
                }
            }
            if self.eof && self.start == self.end && !self.shut {
                self.shut = true;
                shut_write(dst)?;
            }
            if !progress {
                return Ok(did);
            }
        }
    }
}

/// The proxy's counters, in the relay's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct TcpCounters {
    /// Connections accepted and joined to `--to`.
    pub connections: u64,
    /// Connections that ended with both directions closed in order (half-close passed on).
    pub closed: u64,
    /// Connections that ended on an error (a reset on either side), by the error; `stopped`:
    /// still open when the relay stopped (closed with a reset).
    pub errors: BTreeMap<String, u64>,
    /// Connections accepted over the limit of open ones and closed at once.
    pub refused: u64,
    /// Connections whose connect to `--to` failed (closed at once).
    pub connect_failed: u64,
    /// Bytes copied from the connecting side to `--to`.
    pub bytes_to_server: u64,
    /// Bytes copied from `--to` back to the connecting side.
    pub bytes_to_client: u64,
    /// Most connections open at once.
    pub max_open: u64,
}

/// A proxied connection: the accepted socket, the one to `--to`, a pipe each way.
struct Pair {
    client: TcpStream,
    server: TcpStream,
    connected: bool,
    up: Pipe,
    down: Pipe,
    /// Accepted at.
    born: Instant,
    /// The last byte moved either way (None: none yet).
    last: Option<Instant>,
}

impl Pair {
    /// Whether the pair is past its deadline at `now`: no byte within [`FIRST_BYTE`] of its
    /// accept, or none for `idle` since the last.
    fn expired(&self, now: Instant, idle: Duration) -> bool {
        match self.last {
            None => now.duration_since(self.born) >= FIRST_BYTE.min(idle),
            Some(t) => now.duration_since(t) >= idle,
        }
    }
}

/// Tokens of the pairs' sockets: client `FIRST + 2i`, server `FIRST + 2i + 1`.
const FIRST: usize = 1 << 16;

/// The relay's TCP proxy on its poll.
pub(crate) struct Proxy {
    listener: Option<TcpListener>,
    listen_token: Token,
    to: SocketAddr,
    max: usize,
    pairs: Vec<Option<Pair>>,
    open: usize,
    counters: TcpCounters,
    /// Pairs that stopped at [`TURN`] with more to read.
    hot: Vec<usize>,
    /// A pair that moved no byte for this long is reset.
    idle: Duration,
    /// When the pairs are next checked for their deadlines.
    next_sweep: Instant,
}

/// How a pair ended, if it did.
enum End {
    Open,
    Closed,
    Failed(io::Error),
    ConnectFailed,
    /// Past its deadline ([`Pair::expired`]).
    Idle,
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

/// Closes a socket with a reset (`SO_LINGER 0`), so its peer learns the connection failed.
fn abort(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
    drop(s);
}

impl Proxy {
    /// A proxy accepting on `listener` (registered under `listen_token`), at most `max`
    /// connections open at once, each joined to `to`
    /// and reset after `idle` without a byte either way.
    pub fn new(
        registry: &Registry,
        listener: std::net::TcpListener,
        listen_token: Token,
        to: SocketAddr,
        max: usize,
        idle: Duration,
    ) -> io::Result<Proxy> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        registry.register(&mut listener, listen_token, Interest::READABLE)?;
        Ok(Proxy {
            listener: Some(listener),
            listen_token,
            to,
            max,
            pairs: Vec::new(),
            open: 0,
            counters: TcpCounters::default(),
            hot: Vec::new(),
            idle,
            next_sweep: Instant::now() + SWEEP_EVERY,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
    }

    /// The counters, with the bytes of the connections still open.
    pub fn counters(&self) -> TcpCounters {
        let mut c = self.counters.clone();
        for p in self.pairs.iter().flatten() {
            c.bytes_to_server += p.up.bytes;
            c.bytes_to_client += p.down.bytes;
        }
        c
    }

    /// Stops accepting: the listener is closed (open connections go on).
    pub(crate) fn stop_accepting(&mut self, registry: &Registry) {
        if let Some(mut l) = self.listener.take() {
            let _ = registry.deregister(&mut l);
        }
    }

    /// Closes every connection at once (with a reset) and stops accepting.
    pub(crate) fn close_all(&mut self, registry: &Registry) {
        self.stop_accepting(registry);
        for i in 0..self.pairs.len() {
            if self.pairs[i].is_some() {
                self.finish(registry, i, End::Failed(io::Error::other("stopped")));
            }
        }
    }

    /// Connections that have more to move without waiting for an event.
    pub(crate) fn has_hot(&self) -> bool {
        !self.hot.is_empty()
    }

    /// Drives the connections that stopped at their turn's limit; returns the bytes moved.
    pub(crate) fn run_hot(&mut self, registry: &Registry) -> usize {
        let hot = std::mem::take(&mut self.hot);
        hot.into_iter().map(|i| self.drive(registry, i)).sum()
    }

    /// Handles a readiness event; returns whether it was the proxy's and how many bytes moved.
    pub fn on_event(&mut self, registry: &Registry, token: Token) -> Option<usize> {
        if token == self.listen_token {
            self.accept(registry);
            return Some(0);
        }
        let t = token.0.checked_sub(FIRST)?;
        let i = t / 2;
        if i >= self.pairs.len() {
            return None;
        }
        Some(self.drive(registry, i))
    }

    fn accept(&mut self, registry: &Registry) {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            let (client, _) = match l.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A connection that went away before it was accepted, or out of descriptors:
                // nothing to join; later ones may do.
                Err(_) => return,
            };
            if self.open >= self.max {
                self.counters.refused += 1;
                abort(client);
                continue;
            }
            let server = match TcpStream::connect(self.to) {
                Ok(s) => s,
                Err(_) => {
                    self.counters.connect_failed += 1;
                    abort(client);
                    continue;
                }
            };
            let i = match self.pairs.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.pairs.push(None);
                    self.pairs.len() - 1
                }
            };
            let mut pair = Pair {
                client,
                server,
                connected: false,
                up: Pipe::new(BUF),
                down: Pipe::new(BUF),
                born: Instant::now(),
                last: None,
            };
            let both = Interest::READABLE | Interest::WRITABLE;
            let ok = registry
                .register(&mut pair.client, Token(FIRST + 2 * i), both)
                .and_then(|_| registry.register(&mut pair.server, Token(FIRST + 2 * i + 1), both));
            if ok.is_err() {
                let _ = registry.deregister(&mut pair.client);
                self.counters.connect_failed += 1;
                abort(pair.client);
                abort(pair.server);
                continue;
            }
            self.pairs[i] = Some(pair);
            self.open += 1;
            self.counters.max_open = self.counters.max_open.max(self.open as u64);
        }
    }

    /// Moves what can be moved on pair `i`; returns the bytes written.
    fn drive(&mut self, registry: &Registry, i: usize) -> usize {
        let Some(p) = self.pairs[i].as_mut() else {
            return 0;
        };
        let mut moved = 0;
        let end = 'end: {
            if !p.connected {
                // The connect finished (or failed) when the socket reports an error or a peer.
                match p.server.take_error() {
                    Ok(Some(_)) | Err(_) => break 'end End::ConnectFailed,
                    Ok(None) => {}
                }
                match p.server.peer_addr() {
                    Ok(_) => {
                        p.connected = true;
                        self.counters.connections += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break 'end End::Open,
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => break 'end End::Open,
                    Err(_) => break 'end End::ConnectFailed,
                }
            }
            let Pair {
                client,
                server,
                up,
                down,
                ..
            } = p;
            let r = up
                .pump(client, server, TURN, shut)
                .and_then(|a| down.pump(server, client, TURN, shut).map(|b| (a, b)));
            match r {
                Ok((a, b)) => {
                    moved += a.written + b.written;
                    if a.read + a.written + b.read + b.written > 0 {
                        p.last = Some(Instant::now());
                    }
                    if (a.more || b.more) && !self.hot.contains(&i) {
                        self.hot.push(i);
                    }
                }
                Err(e) => break 'end End::Failed(e),
            }
            if up.done() && down.done() {
                End::Closed
            } else {
                End::Open
            }
        };
        self.finish(registry, i, end);
        moved
    }

    /// Ends pair `i` as `end` says (or leaves it open), keeping the byte counts current.
    fn finish(&mut self, registry: &Registry, i: usize, end: End) {
        if matches!(end, End::Open) {
            return;
        }
        let Some(mut p) = self.pairs[i].take() else {
            return;
        };
        self.open -= 1;
        self.hot.retain(|&h| h != i);
        self.counters.bytes_to_server += p.up.bytes;
        self.counters.bytes_to_client += p.down.bytes;
        let _ = registry.deregister(&mut p.client);
        let _ = registry.deregister(&mut p.server);
        match end {
            End::Open => unreachable!("handled above"),
            End::Closed => {
                self.counters.closed += 1;
                drop(p);
            }
            End::ConnectFailed => {
                self.counters.connect_failed += 1;
                abort(p.client);
                abort(p.server);
            }
            End::Failed(e) => {
                *self.counters.errors.entry(errno_name(&e)).or_default() += 1;
                abort(p.client);
                abort(p.server);
            }
            End::Idle => {
                *self.counters.errors.entry("idle".into()).or_default() += 1;
                abort(p.client);
                abort(p.server);
            }
        }
    }

    /// Resets the pairs past their deadlines (looked at every [`SWEEP_EVERY`] at most);
    /// returns how many.
    pub(crate) fn expire(&mut self, registry: &Registry, now: Instant) -> usize {
        if now < self.next_sweep {
            return 0;
        }
        self.next_sweep = now + SWEEP_EVERY;
        let idle = self.idle;
        let due: Vec<usize> = (0..self.pairs.len())
            .filter(|&i| self.pairs[i].as_ref().is_some_and(|p| p.expired(now, idle)))
            .collect();
        for &i in &due {
            self.finish(registry, i, End::Idle);
        }
        due.len()
    }
}

/// Shuts the sending side; a peer already gone is not an error here (the next read says so).
fn shut(s: &mut TcpStream) -> io::Result<()> {
    match s.shutdown(Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    /// A reader that follows a script: `Some(n)` offers the next `n` bytes of a counting
    /// pattern, `None` would block once; after the script, end of stream.
    struct Src {
        script: VecDeque<Option<usize>>,
        next: u8,
        given: Vec<u8>,
    }

    impl Read for Src {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.script.pop_front() {
                None => Ok(0),
                Some(None) => Err(io::ErrorKind::WouldBlock.into()),
                Some(Some(n)) => {
                    let k = n.min(buf.len());
                    if k < n {
                        self.script.push_front(Some(n - k));
                    }
                    for b in &mut buf[..k] {
                        *b = self.next;
                        self.next = self.next.wrapping_add(1);
                    }
                    self.given.extend_from_slice(&buf[..k]);
                    Ok(k)
                }
            }
        }
    }

    /// A writer that takes at most the scripted count per call (0: would block); after the
    /// script, everything. Records what it took and whether its sending side was shut.
    struct Dst {
        script: VecDeque<usize>,
        took: Vec<u8>,
        shut: u32,
    }

    impl Write for Dst {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            assert_eq!(self.shut, 0, "written after shutdown");
            let k = match self.script.pop_front() {
                Some(0) => return Err(io::ErrorKind::WouldBlock.into()),
                Some(n) => n.min(buf.len()),
                None => buf.len(),
            };
            self.took.extend_from_slice(&buf[..k]);
            Ok(k)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn shut(d: &mut Dst) -> io::Result<()> {
        d.shut += 1;
        Ok(())
    }

    #[test]
    fn copies_in_order_and_half_closes_once() {
        let mut src = Src {
            script: [Some(10), None, Some(5)].into(),
            next: 0,
            given: Vec::new(),
        };
        let mut dst = Dst {
            script: [3, 0, 0].into(),
            took: Vec::new(),
            shut: 0,
        };
        let mut p = Pipe::new(8);
        // First call: reads 8 (the buffer's room), writes 3, moves the 5 left to the front,
        // reads the 2 left of the first chunk; the writer blocks, then the reader.
        let a = p.pump(&mut src, &mut dst, usize::MAX, shut).unwrap();
        assert_eq!((a.read, a.written, a.more), (10, 3, false));
        assert_eq!(p.held(), 7);
        assert_eq!(dst.shut, 0);
        assert!(!p.done());
        let mut turns = 0;
        while !p.done() {
            p.pump(&mut src, &mut dst, usize::MAX, shut).unwrap();
            turns += 1;
            assert!(turns < 10, "pipe did not finish");
        }
        assert_eq!(dst.took, src.given);
        assert_eq!(dst.took.len(), 15);
        assert_eq!(dst.shut, 1);
        assert_eq!(p.bytes, 15);
        // Over: more calls move nothing and do not shut again.
        assert_eq!(
            p.pump(&mut src, &mut dst, usize::MAX, shut).unwrap(),
            Pumped::default()
        );
        assert_eq!(dst.shut, 1);
    }

    #[test]
    fn a_writer_that_never_takes_stalls_the_reader_at_the_buffer() {
        let mut src = Src {
            script: [Some(1 << 20)].into(),
            next: 0,
            given: Vec::new(),
        };
        let mut dst = Dst {
            script: std::iter::repeat_n(0, 100).collect(),
            took: Vec::new(),
            shut: 0,
        };
        let mut p = Pipe::new(4096);
        for _ in 0..50 {
            p.pump(&mut src, &mut dst, usize::MAX, shut).unwrap();
        }
        assert_eq!(src.given.len(), 4096, "read only what the buffer holds");
        assert_eq!(p.held(), 4096);
        assert!(dst.took.is_empty());
    }

    #[test]
    fn errors_are_returned() {
        struct Reset;
        impl Read for Reset {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
        }
        let mut dst = Dst {
            script: VecDeque::new(),
            took: Vec::new(),
            shut: 0,
        };
        let mut p = Pipe::new(16);
        let e = p.pump(&mut Reset, &mut dst, usize::MAX, shut).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(dst.shut, 0, "a reset is not an orderly end");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Any pattern of short reads, short writes and would-blocks: every byte read comes out
        /// once, in order; the buffer never holds more than its size; the sending side is shut
        /// exactly once, after the last byte.
        #[test]
        fn any_schedule_delivers_everything_once(
            reads in prop::collection::vec(prop::option::of(1usize..300), 0..40),
            writes in prop::collection::vec(0usize..200, 0..80),
            cap in 1usize..128,
            limit in 1usize..400,
        ) {
            let total: usize = reads.iter().flatten().sum();
            let mut src = Src { script: reads.into(), next: 0, given: Vec::new() };
            let mut dst = Dst { script: writes.into(), took: Vec::new(), shut: 0 };
            let mut p = Pipe::new(cap);
            let mut turns = 0;
            while !p.done() {
                let did = p.pump(&mut src, &mut dst, limit, shut).unwrap();
                prop_assert!(p.held() <= cap);
                prop_assert!(did.read < limit + cap, "read {} at limit {limit}", did.read);
                turns += 1;
                // Each turn ends, meets a scripted would-block or reads up to its limit.
                prop_assert!(turns <= 200 + total / limit, "no end after {turns} turns");
            }
            prop_assert_eq!(&dst.took, &src.given);
            prop_assert_eq!(dst.shut, 1);
            prop_assert_eq!(p.bytes, src.given.len() as u64);
            prop_assert_eq!(p.held(), 0);
        }
    }
}
