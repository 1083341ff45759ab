//! The metrics endpoint: `GET /metrics` over HTTP/1.1 on its own thread, driven by our reactor
//! (not a second runtime), parsed by [`crate::proto::http`]. Everything is bounded, also against
//! clients that mean harm (issue #25):
//!
//! * at most [`MAX_CONNS`] connections, and [`PER_PEER`] from one address (an IPv6 /64), so
//!   one client cannot keep the others' scrapes out; a connection over either is answered
//!   `503` (best effort) and closed;
//! * a request head of [`http::MAX_HEAD`] bytes (`431`), arriving whole within
//!   [`HEAD_DEADLINE`] of its first byte however it trickles (`408`);
//! * a connection with neither a request nor a byte read or written for [`IDLE`] is closed;
//! * backpressure: a connection with more than [`OUT_CAP`] bytes of answers waiting for its
//!   peer is neither answered nor read until the peer takes them, so a client that pipelines
//!   requests and never reads keeps them in its own socket buffers, not in our memory.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::Interest;

use super::{Metrics, CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::proto::http::{self, Parsed, Route, Status};
use crate::reactor::{drain_read, Budget, Ctx, Drained, Entry, Handle, Handler, Key, OutBuf};
use crate::reactor::{Reactor, Ready, Shares};

/// Connections served at once; more are refused on accept.
pub(crate) const MAX_CONNS: usize = 64;
/// Connections one address (an IPv6 /64) may hold at once; more are refused on accept.
pub(crate) const PER_PEER: usize = MAX_CONNS / 4;
/// How long a connection may go without a byte read or written.
pub(crate) const IDLE: Duration = Duration::from_secs(10);
/// How long a request head may take to arrive, from its first byte. Not shorter than [`IDLE`]:
/// one timer per connection, re-armed for whichever comes first, then sees both in time.
pub(crate) const HEAD_DEADLINE: Duration = IDLE;
/// Answers waiting for the peer beyond which a connection is neither answered nor read.
pub(crate) const OUT_CAP: usize = 64 * 1024;
/// Unanswered input beyond which a connection is not read.
const IN_CAP: usize = 2 * http::MAX_HEAD;

enum Item {
    Listener(TcpListener),
    Conn(Conn),
}

struct Conn {
    sock: TcpStream,
    peer: IpAddr,
    inbuf: Vec<u8>,
    out: OutBuf,
    closing: bool,
    /// The last byte read or written.
    last: Instant,
    /// When the first byte of the request head still incomplete in `inbuf` arrived.
    head_since: Option<Instant>,
}

impl Entry for Item {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Item::Listener(l) => l,
            Item::Conn(c) => &mut c.sock,
        }
    }
}

/// A running endpoint; dropping it stops the thread.
pub struct Endpoint {
    addr: SocketAddr,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Binds `listen` and serves `metrics` on it from a new thread.
    pub fn start(listen: SocketAddr, metrics: Arc<Metrics>) -> io::Result<Endpoint> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let mut reactor: Reactor<Item> = Reactor::new(256)?;
        reactor
            .cx()
            .insert(Item::Listener(listener), Interest::READABLE)?;
        let handle = reactor.handle();
        let thread = thread::Builder::new()
            .name("netcore-metrics".into())
            .spawn(move || {
                let mut h = Server {
                    metrics,
                    conns: 0,
                    shares: Shares::new(PER_PEER),
                };
                if let Err(e) = reactor.run(&mut h) {
                    eprintln!("netcore: metrics endpoint stopped: {e}");
                }
            })?;
        Ok(Endpoint {
            addr,
            handle,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Server {
    metrics: Arc<Metrics>,
    conns: usize,
    shares: Shares,
}

const IDLE_TIMER: u64 = 1;

/// What a connection waits for after a step.
enum Next {
    Close,
    /// Register for `interest`; `more`: work is left that no event will announce (input left
    /// unread or whole requests left unanswered): dispatch it again next turn.
    Wait {
        interest: Interest,
        more: bool,
    },
}

/// Why [`Conn::answer`] stopped.
#[derive(PartialEq, Eq)]
enum Answered {
    /// Every whole request is answered; the rest (if any) is an incomplete head.
    All,
    /// Whole requests are left: the answers waiting for the peer are past [`OUT_CAP`].
    Backlogged,
}

/// The answer to a connection refused on accept: `503`, closing, saying why.
fn refusal(why: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: netcore\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nRetry-After: 10\r\nConnection: close\r\n\r\n{why}\n",
        why.len() + 1
    )
    .into_bytes()
}

impl Server {
    fn accept(&mut self, cx: &mut Ctx<Item>, key: Key) {
        loop {
            let Some(Item::Listener(l)) = cx.slab.get_mut(key) else {
                return;
            };
            match l.accept() {
                Ok((sock, peer)) => self.admit(cx, sock, peer.ip()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // WouldBlock, or a transient accept error
            }
        }
    }

    /// Serves a new connection, or refuses it (over [`MAX_CONNS`] or its address's share).
    fn admit(&mut self, cx: &mut Ctx<Item>, mut sock: TcpStream, peer: IpAddr) {
        let why = if self.conns >= MAX_CONNS {
            Some(format!(
                "metrics endpoint: {MAX_CONNS} connections open; try again later"
            ))
        } else if !self.shares.try_take(peer) {
            Some(format!(
                "metrics endpoint: {PER_PEER} connections open from {peer}; close one first"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            // A fresh socket's send buffer is empty: the write either goes whole or not at all.
            let _ = sock.write(&refusal(&why));
            return; // dropped: closed
        }
        let _ = sock.set_nodelay(true);
        let c = Conn {
            sock,
            peer,
            inbuf: Vec::new(),
            out: OutBuf::new(),
            closing: false,
            last: cx.now(),
            head_since: None,
        };
        match cx.insert(Item::Conn(c), Interest::READABLE) {
            Ok(k) => {
                self.conns += 1;
                cx.add_timer_after(IDLE, k, IDLE_TIMER);
            }
            Err(_) => self.shares.release(peer),
        }
    }

    fn close(&mut self, cx: &mut Ctx<Item>, key: Key) {
        if let Some(Item::Conn(c)) = cx.remove(key) {
            self.conns -= 1;
            self.shares.release(c.peer);
        }
    }

    /// Reads, answers, writes, within the caps; closes when done or broken.
    fn serve(&mut self, cx: &mut Ctx<Item>, key: Key) {
        let now = cx.now();
        let Some(Item::Conn(c)) = cx.slab.get_mut(key) else {
            return;
        };
        match c.step(&self.metrics, now) {
            Next::Close => self.close(cx, key),
            Next::Wait { interest, more } => {
                let _ = cx.reregister(key, interest);
                if more {
                    cx.defer(key);
                }
            }
        }
    }
}

impl Conn {
    /// Whether to read: not while closing, nor while answers or requests are backed up.
    fn may_read(&self) -> bool {
        !self.closing && self.out.pending() <= OUT_CAP && self.inbuf.len() <= IN_CAP
    }

    /// One step of the connection, whatever woke it (edge-triggered: a read that finds nothing
    /// is cheap, and reading only on a readable event would strand input left unread while
    /// the output was backed up).
    fn step(&mut self, metrics: &Metrics, now: Instant) -> Next {
        let mut more = false;
        if self.may_read() {
            let mut scratch = [0u8; 4096];
            let mut budget = Budget::default();
            let inbuf = &mut self.inbuf;
            match drain_read(&mut self.sock, &mut scratch, &mut budget, |d| {
                inbuf.extend_from_slice(d);
                inbuf.len() <= IN_CAP
            }) {
                Ok(Drained::Eof) => self.closing = true,
                Ok(Drained::Budget | Drained::Paused) => more = true,
                Ok(Drained::WouldBlock) => {}
                Err(_) => return Next::Close,
            }
            self.last = now;
        }
        let answered = self.answer(metrics, now);
        let before = self.out.pending();
        if self.out.flush(&mut self.sock, 64 * 1024).is_err() {
            return Next::Close;
        }
        if self.out.pending() < before {
            self.last = now;
        }
        if self.closing && self.out.is_empty() {
            return Next::Close;
        }
        if self.out.pending() > OUT_CAP {
            // Backpressure: nothing more until the peer takes some (a writable edge).
            return Next::Wait {
                interest: Interest::WRITABLE,
                more: false,
            };
        }
        let interest = if self.out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        more |= answered == Answered::Backlogged;
        Next::Wait { interest, more }
    }

    /// Answers the whole requests at the front of `inbuf` until the answers waiting pass
    /// [`OUT_CAP`]; notes when an incomplete head started arriving.
    fn answer(&mut self, metrics: &Metrics, now: Instant) -> Answered {
        while !self.closing {
            if self.out.pending() > OUT_CAP {
                return Answered::Backlogged;
            }
            match http::parse_request(&self.inbuf) {
                Parsed::Partial => {
                    if self.inbuf.is_empty() {
                        self.head_since = None;
                    } else if self.head_since.is_none() {
                        self.head_since = Some(now);
                    }
                    return Answered::All;
                }
                Parsed::Invalid(status) => {
                    http::write_invalid(self.out.vec(), status);
                    self.inbuf.clear();
                    self.closing = true;
                }
                Parsed::Request(req) => {
                    self.head_since = None;
                    let om = wants_openmetrics(&self.inbuf[..req.len]);
                    self.inbuf.drain(..req.len);
                    let status = respond(self.out.vec(), &req, om, metrics);
                    if !http::keeps_open(&req, status) {
                        self.closing = true;
                    }
                }
            }
        }
        Answered::All
    }

    /// When the connection's timer must next look at it: its idle deadline or its head's,
    /// whichever comes first.
    fn deadline(&self) -> Instant {
        let idle = self.last + IDLE;
        self.head_since
            .map_or(idle, |t| (t + HEAD_DEADLINE).min(idle))
    }
}

/// Whether a request (its head, already parsed once) asks for OpenMetrics in `Accept`, as
/// Prometheus does; others get the classic text format.
fn wants_openmetrics(raw: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Request::new(&mut headers);
    if r.parse(raw).is_err() {
        return false;
    }
    r.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("accept")
            && String::from_utf8_lossy(h.value).contains("application/openmetrics-text")
    })
}

/// Writes the answer to one request; returns its status.
fn respond(out: &mut Vec<u8>, req: &http::Request, om: bool, metrics: &Metrics) -> Status {
    let status = match req.route {
        Ok(Route::Metrics) => {
            let (body, ty) = if om {
                (metrics.render(), CONTENT_TYPE)
            } else {
                (metrics.render_text(), TEXT_CONTENT_TYPE)
            };
            http::write_typed(out, req, Status::Ok, ty, body.as_bytes());
            Status::Ok
        }
        Ok(_) => Status::NotFound,
        Err(s) => s,
    };
    if status != Status::Ok {
        let body = format!("{} {}\n", status.code(), status.reason());
        http::write_response(out, req, status, body.as_bytes());
    }
    status
}

impl Handler<Item> for Server {
    fn on_event(&mut self, cx: &mut Ctx<Item>, key: Key, _ready: Ready) {
        match cx.slab.get_mut(key) {
            Some(Item::Listener(_)) => self.accept(cx, key),
            Some(Item::Conn(_)) => self.serve(cx, key),
            None => {}
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx<Item>, key: Key, _tag: u64) {
        let now = cx.now();
        let Some(Item::Conn(c)) = cx.slab.get_mut(key) else {
            return;
        };
        let due = c.deadline();
        if due > now {
            cx.add_timer(due, key, IDLE_TIMER);
            return;
        }
        if c.head_since.is_some_and(|t| t + HEAD_DEADLINE <= now) {
            http::write_invalid(c.out.vec(), Status::Timeout);
            let _ = c.out.flush(&mut c.sock, 0);
        }
        self.close(cx, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn exchange(addr: SocketAddr, send: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(send).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let mut m = Metrics::new();
        let c = m.counters("tests", "Tests run");
        c.add(&[("kind", "udp")], 3);
        let ep = Endpoint::start("127.0.0.1:0".parse().unwrap(), Arc::new(m)).unwrap();
        let addr = ep.local_addr();

        // Two pipelined scrapes on one connection, the second closing it; asking for
        // OpenMetrics (as Prometheus does) gets it.
        let got = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\nGET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
        assert!(
            got.contains(&format!("Content-Type: {CONTENT_TYPE}")),
            "{got}"
        );
        assert!(got.contains("netcore_tests_total{kind=\"udp\"} 3"), "{got}");
        assert!(got.ends_with("# EOF\n"), "{got}");
        // Without it: the classic text format.
        let got = exchange(addr, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(
            got.contains(&format!("Content-Type: {TEXT_CONTENT_TYPE}")),
            "{got}"
        );
        assert!(got.contains("# TYPE netcore_tests_total counter"), "{got}");
        assert!(!got.contains("# EOF"), "{got}");

        let got = exchange(addr, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 404"), "{got}");
        let got = exchange(addr, b"\x00\x01garbage\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let got = exchange(addr, huge.as_bytes());
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
        // Still serving.
        let got = exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
        assert!(got.starts_with("HTTP/1.0 200"), "{got}");
        drop(ep);
    }
}
