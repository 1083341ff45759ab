//! The metrics endpoint: `GET /metrics` over HTTP/1.1 on its own thread, driven by our reactor
//! (not a second runtime), parsed by [`crate::proto::http`]. Everything is bounded: at most
//! [`MAX_CONNS`] connections, a request head of [`http::MAX_HEAD`] bytes, and a connection idle
//! (or stuck in a partial request) for [`IDLE`] is closed (`408` if a request was started).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::Interest;

use super::{Metrics, CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::proto::http::{self, Parsed, Route, Status};
use crate::reactor::{drain_read, Budget, Ctx, Drained, Entry, Handle, Handler, Key, OutBuf};
use crate::reactor::{Reactor, Ready};

/// Connections served at once; more are closed on accept.
pub const MAX_CONNS: usize = 64;
/// How long a connection may be idle, or sit on an incomplete request.
pub const IDLE: Duration = Duration::from_secs(10);

enum Item {
    Listener(TcpListener),
    Conn(Conn),
}

struct Conn {
    sock: TcpStream,
    inbuf: Vec<u8>,
    out: OutBuf,
    closing: bool,
    last: Instant,
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
                let mut h = Server { metrics, conns: 0 };
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
}

const IDLE_TIMER: u64 = 1;

impl Server {
    fn accept(&mut self, cx: &mut Ctx<Item>, key: Key) {
        loop {
            let Some(Item::Listener(l)) = cx.slab.get_mut(key) else {
                return;
            };
            match l.accept() {
                Ok((sock, _)) => {
                    if self.conns >= MAX_CONNS {
                        continue; // dropped: closed at once
                    }
                    let _ = sock.set_nodelay(true);
                    let c = Conn {
                        sock,
                        inbuf: Vec::new(),
                        out: OutBuf::new(),
                        closing: false,
                        last: cx.now(),
                    };
                    if let Ok(k) = cx.insert(Item::Conn(c), Interest::READABLE) {
                        self.conns += 1;
                        cx.add_timer_after(IDLE, k, IDLE_TIMER);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // WouldBlock, or a transient accept error
            }
        }
    }

    fn close(&mut self, cx: &mut Ctx<Item>, key: Key) {
        if cx.remove(key).is_some() {
            self.conns -= 1;
        }
    }

    /// Reads, answers every whole request, writes; closes when done or broken.
    fn serve(&mut self, cx: &mut Ctx<Item>, key: Key, ready: Ready) {
        let now = cx.now();
        let Some(Item::Conn(c)) = cx.slab.get_mut(key) else {
            return;
        };
        let mut broken = false;
        let mut over_budget = false;
        if ready.is_readable() && !c.closing {
            let mut scratch = [0u8; 4096];
            let mut budget = Budget::default();
            let inbuf = &mut c.inbuf;
            match drain_read(&mut c.sock, &mut scratch, &mut budget, |d| {
                inbuf.extend_from_slice(d);
                inbuf.len() <= 2 * http::MAX_HEAD
            }) {
                Ok(Drained::Eof) => c.closing = true,
                Ok(Drained::Budget) => over_budget = true,
                Ok(_) => {}
                Err(_) => broken = true,
            }
            c.last = now;
        }
        if !broken {
            answer(c, &self.metrics);
            broken = c.out.flush(&mut c.sock, 64 * 1024).is_err();
        }
        let done = c.closing && c.out.is_empty();
        let want = if c.out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        if broken || done {
            self.close(cx, key);
        } else {
            let _ = cx.reregister(key, want);
            if over_budget {
                cx.defer(key);
            }
        }
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

/// Answers the whole requests at the front of `c.inbuf`.
fn answer(c: &mut Conn, metrics: &Metrics) {
    while !c.closing {
        match http::parse_request(&c.inbuf) {
            Parsed::Partial => return,
            Parsed::Invalid(status) => {
                http::write_invalid(c.out.vec(), status);
                c.inbuf.clear();
                c.closing = true;
            }
            Parsed::Request(req) => {
                let om = wants_openmetrics(&c.inbuf[..req.len]);
                c.inbuf.drain(..req.len);
                let status = match req.route {
                    Ok(Route::Metrics) => {
                        let (body, ty) = if om {
                            (metrics.render(), CONTENT_TYPE)
                        } else {
                            (metrics.render_text(), TEXT_CONTENT_TYPE)
                        };
                        let out = c.out.vec();
                        http::write_typed(out, &req, Status::Ok, ty, body.as_bytes());
                        Status::Ok
                    }
                    Ok(_) => Status::NotFound,
                    Err(s) => s,
                };
                if status != Status::Ok {
                    let body = format!("{} {}\n", status.code(), status.reason());
                    http::write_response(c.out.vec(), &req, status, body.as_bytes());
                }
                if !http::keeps_open(&req, status) {
                    c.closing = true;
                }
            }
        }
    }
}

impl Handler<Item> for Server {
    fn on_event(&mut self, cx: &mut Ctx<Item>, key: Key, ready: Ready) {
        match cx.slab.get_mut(key) {
            Some(Item::Listener(_)) => self.accept(cx, key),
            Some(Item::Conn(_)) => self.serve(cx, key, ready),
            None => {}
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx<Item>, key: Key, _tag: u64) {
        let now = cx.now();
        let Some(Item::Conn(c)) = cx.slab.get_mut(key) else {
            return;
        };
        let idle = now.duration_since(c.last);
        if idle < IDLE {
            cx.add_timer_after(IDLE - idle, key, IDLE_TIMER);
            return;
        }
        if !c.inbuf.is_empty() {
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
