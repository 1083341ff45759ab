//! What each client sends and what it expects back.
//!
//! For the `task` protocol every request line is checked up front by running it through the
//! project's own [`Session`](crate::proto::Session) (the same code every server model drives):
//! its answer becomes the expected reply, so the load generator never re-implements the
//! protocol, and a request the protocol rejects (`ERR ...`) is refused before any connection
//! is made. `STATS` answers vary, so for it any non-`ERR` line is accepted; `BYE` is refused
//! because it ends the connection (the load generator closes connections itself).
//!
//! For the `echo` protocol a request is `size` bytes: an 8-byte little-endian sequence number
//! (truncated if `size < 8`) followed by a fixed pattern, and the reply must equal it byte for
//! byte (the same check as the C `rr_load`).
//!
//! For `http` a request is a `GET` of a path (keep-alive), and any server may answer it: any
//! status, any body. What netcore's own server answers (status and body length) comes from
//! the same session speaking HTTP ([`Proto::Http`]); the engine holds a response to it only
//! when the response says it is netcore's (`Server: netcore`), so `serve --proto http` is
//! checked exactly and every other server is measured as wrk measures it. `/stats` (whose body
//! varies) is checked by status only.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::Rng;

use crate::proto::{Counters, Proto, Session, SessionConfig, Step};

/// Longest request line accepted in a task script or mix file.
pub(crate) const MAX_REQUEST: usize = 16 * 1024;
/// Largest echo payload.
pub(crate) const MAX_ECHO_SIZE: usize = 1 << 20;

/// The reply a request must get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Exactly this line (without its `\n`).
    Line(Vec<u8>),
    /// Any line that does not start with `ERR`.
    AnyOk,
}

/// One task-protocol request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The line as sent, `\n` included.
    pub line: Vec<u8>,
    pub expect: Expect,
}

/// The requests of a run.
#[derive(Debug, Clone)]
pub enum Workload {
    /// Task protocol. With one request every task sends it; with several (a mix) each task
    /// picks one uniformly with the client's seeded generator.
    Task { requests: Vec<Request>, seed: u64 },
    /// Raw echo of `size`-byte payloads.
    Echo { size: usize },
    /// HTTP/1.1 GETs, one path or a mix of them picked like the task mix.
    Http {
        requests: Vec<HttpRequest>,
        seed: u64,
    },
}

/// One HTTP request and what netcore's own server answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The request as sent.
    pub wire: Vec<u8>,
    /// netcore's answer (None: not one keep-alive answer, nothing to check).
    pub netcore: Option<HttpAnswer>,
}

/// The status and body length of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    /// The body length (None: any, for `/stats`).
    pub body: Option<u64>,
}

impl HttpAnswer {
    /// Whether a response of `status` with `body` bytes is this answer.
    pub fn matches(&self, status: u16, body: u64) -> bool {
        self.status == status && self.body.is_none_or(|n| n == body)
    }
}

impl Workload {
    /// A task workload of one request line.
    pub fn task(line: &str) -> Result<Workload> {
        Ok(Workload::Task {
            requests: vec![request(line)?],
            seed: 0,
        })
    }

    /// A task workload from a mix file: one request per line; empty lines and lines starting
    /// with `#` are ignored. A line may start with `N*` (e.g. `3* SLEEP 10`) to weight it N
    /// times.
    pub fn mix(path: &Path, seed: u64) -> Result<Workload> {
        Ok(Workload::Task {
            requests: mix_file(path, request)?,
            seed,
        })
    }

    /// Like [`Workload::mix`] from the file's text.
    pub fn mix_text(text: &str, seed: u64) -> Result<Workload> {
        Ok(Workload::Task {
            requests: mix_lines(text, request)?,
            seed,
        })
    }

    /// An HTTP workload of one path (`/`, `/bytes/N`, ...), `Host: localhost`.
    pub fn http(path: &str) -> Result<Workload> {
        Workload::http_to(path, "localhost")
    }

    /// An HTTP workload of one path with `Host: host` (a URL's authority, as wrk sends it).
    pub(crate) fn http_to(path: &str, host: &str) -> Result<Workload> {
        Ok(Workload::Http {
            requests: vec![http_request_to(path, host)?],
            seed: 0,
        })
    }

    /// An HTTP workload from a mix file of paths (the syntax of [`Workload::mix`]).
    pub(crate) fn http_mix(path: &Path, seed: u64) -> Result<Workload> {
        Ok(Workload::Http {
            requests: mix_file(path, http_request)?,
            seed,
        })
    }

    /// An echo workload of `size`-byte payloads.
    pub fn echo(size: usize) -> Result<Workload> {
        if size == 0 || size > MAX_ECHO_SIZE {
            bail!("--size must be 1..={MAX_ECHO_SIZE} bytes");
        }
        Ok(Workload::Echo { size })
    }

    pub fn proto(&self) -> Proto {
        match self {
            Workload::Task { .. } => Proto::Task,
            Workload::Echo { .. } => Proto::Echo,
            Workload::Http { .. } => Proto::Http,
        }
    }

    /// The longest expected reply line (to bound a client's reply buffer).
    pub(crate) fn max_reply(&self) -> usize {
        match self {
            Workload::Task { requests, .. } => requests
                .iter()
                .map(|r| match &r.expect {
                    Expect::Line(l) => l.len(),
                    Expect::AnyOk => 4096,
                })
                .max()
                .unwrap_or(0),
            Workload::Echo { size } => *size,
            Workload::Http { .. } => crate::proto::http::MAX_HEAD,
        }
    }
}

/// The requests of a mix file, each line parsed by `parse`.
fn mix_file<R: Clone>(path: &Path, parse: impl Fn(&str) -> Result<R>) -> Result<Vec<R>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read mix file '{}'", path.display()))?;
    mix_lines(&text, parse).with_context(|| format!("mix file '{}'", path.display()))
}

/// The requests of a mix file's text, each line parsed by `parse` (see [`Workload::mix`]).
fn mix_lines<R: Clone>(text: &str, parse: impl Fn(&str) -> Result<R>) -> Result<Vec<R>> {
    let mut requests = Vec::new();
    for (no, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (weight, l) = match l.split_once('*') {
            Some((w, rest)) if !w.is_empty() && w.trim().chars().all(|c| c.is_ascii_digit()) => {
                let w: usize = w.trim().parse().unwrap_or(0);
                if w == 0 || w > 1000 {
                    bail!("line {}: weight must be 1..=1000", no + 1);
                }
                (w, rest.trim())
            }
            _ => (1, l),
        };
        let r = parse(l).with_context(|| format!("line {}", no + 1))?;
        for _ in 0..weight {
            requests.push(r.clone());
        }
        if requests.len() > 100_000 {
            bail!("too many requests (at most 100000 after weighting)");
        }
    }
    if requests.is_empty() {
        bail!("no requests in the mix");
    }
    Ok(requests)
}

/// Checks one request line with the task session and derives its expected reply.
pub fn request(line: &str) -> Result<Request> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() {
        bail!("empty request");
    }
    if line.len() > MAX_REQUEST {
        bail!("request longer than {MAX_REQUEST} bytes");
    }
    if line.contains('\n') {
        bail!("a request is one line");
    }
    let verb = line.split(' ').next().unwrap_or("");
    if verb.eq_ignore_ascii_case("BYE") {
        bail!("'BYE' closes the connection; the load generator closes connections itself");
    }
    let mut wire = line.as_bytes().to_vec();
    wire.push(b'\n');
    let mut s = Session::new(SessionConfig::default());
    let counters = expect_counters();
    let mut out = Vec::new();
    let step = s.input(&wire, &mut out, &counters);
    let step = s.complete_inline(step, &mut out, &counters, |_| {});
    if step != Step::NeedInput || out.last() != Some(&b'\n') {
        bail!("request '{line}' does not get exactly one reply");
    }
    out.pop();
    if out.starts_with(b"ERR") {
        bail!(
            "request '{line}' is rejected by the task protocol: {}",
            String::from_utf8_lossy(&out)
        );
    }
    let expect = if verb.eq_ignore_ascii_case("STATS") {
        Expect::AnyOk
    } else {
        Expect::Line(out)
    };
    Ok(Request { line: wire, expect })
}

/// Builds the GET of `path` and derives netcore's answer from the HTTP session.
pub(crate) fn http_request(path: &str) -> Result<HttpRequest> {
    http_request_to(path, "localhost")
}

/// [`http_request`] with `Host: host`.
pub(crate) fn http_request_to(path: &str, host: &str) -> Result<HttpRequest> {
    use crate::proto::http::{parse_response, write_get, ParsedResponse};
    let path = path.trim();
    if !path.starts_with('/') || path.len() > 1024 || path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        bail!("'{path}' is not a request path (e.g. /, /index.html, /bytes/1000)");
    }
    if host.is_empty() || host.len() > 255 || host.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        bail!("'{host}' is not a host name for the Host header");
    }
    let mut wire = Vec::new();
    write_get(&mut wire, path, host);
    let mut s = Session::new(SessionConfig {
        proto: Proto::Http,
        ..SessionConfig::default()
    });
    let counters = expect_counters();
    let mut out = Vec::new();
    let step = s.input(&wire, &mut out, &counters);
    let step = s.complete_inline(step, &mut out, &counters, |_| {});
    let netcore = match parse_response(&out, false) {
        ParsedResponse::Response(r)
            if step == Step::NeedInput && r.head + r.body as usize == out.len() =>
        {
            let stats = path.split('?').next() == Some("/stats");
            Some(HttpAnswer {
                status: r.status,
                body: (!stats).then_some(r.body),
            })
        }
        _ => None,
    };
    Ok(HttpRequest { wire, netcore })
}

/// One set of (process-lifetime) counters for the expectation sessions.
fn expect_counters() -> Counters {
    static C: std::sync::OnceLock<Counters> = std::sync::OnceLock::new();
    *C.get_or_init(Counters::local)
}

/// A client's request picker: the seeded generator of client `client` for a mix.
#[derive(Debug, Clone)]
pub(crate) struct Picker {
    rng: crate::seeded::SeededRng,
    n: usize,
}

impl Picker {
    /// The picker of client number `client` (seeded from the workload seed and the client).
    pub fn new(w: &Workload, client: u64) -> Self {
        let (seed, n) = match w {
            Workload::Task { requests, seed } => (*seed, requests.len()),
            Workload::Http { requests, seed } => (*seed, requests.len()),
            Workload::Echo { .. } => (0, 1),
        };
        Picker {
            rng: crate::seeded::rng(seed ^ client.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            n,
        }
    }

    /// The index of the next request.
    pub fn pick(&mut self) -> usize {
        if self.n <= 1 {
            0
        } else {
            self.rng.random_range(0..self.n)
        }
    }
}

/// The echo payload byte at offset `i` of request `seq` (see the module docs).
#[inline]
pub(crate) fn echo_byte(seq: u64, i: usize) -> u8 {
    if i < 8 {
        seq.to_le_bytes()[i]
    } else {
        (i as u8).wrapping_mul(31).wrapping_add(7)
    }
}

/// Appends the echo payload of request `seq` to `out`.
pub(crate) fn echo_payload(seq: u64, size: usize, out: &mut Vec<u8>) {
    let h = size.min(8);
    out.extend_from_slice(&seq.to_le_bytes()[..h]);
    out.extend((h..size).map(|i| echo_byte(seq, i)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_come_from_the_session() {
        let r = request("ECHO hi").unwrap();
        assert_eq!(r.line, b"ECHO hi\n");
        assert_eq!(r.expect, Expect::Line(b"hi".to_vec()));
        let r = request("SLEEP 1000").unwrap();
        assert_eq!(r.expect, Expect::Line(b"OK slept 1000ms".to_vec()));
        assert_eq!(
            request("UPPER abc").unwrap().expect,
            Expect::Line(b"ABC".to_vec())
        );
        assert_eq!(request("STATS").unwrap().expect, Expect::AnyOk);
        assert!(request("FROB x")
            .unwrap_err()
            .to_string()
            .contains("unknown verb"));
        assert!(request("SLEEP 99999999").is_err());
        assert!(request("BYE").is_err());
        assert!(request("").is_err());
    }

    #[test]
    fn mix_weights_and_seeded_choice() {
        let w = Workload::mix_text("# comment\n\nECHO a\n3* ECHO b\n", 7).unwrap();
        let Workload::Task { requests, .. } = &w else {
            panic!()
        };
        assert_eq!(requests.len(), 4);
        let picks = |c| {
            let mut p = Picker::new(&w, c);
            (0..50).map(|_| p.pick()).collect::<Vec<_>>()
        };
        assert_eq!(picks(1), picks(1), "same seed, same choices");
        assert_ne!(picks(1), picks(2));
        assert!(Workload::mix_text("# only comments\n", 1).is_err());
        assert!(Workload::mix_text("0* ECHO a\n", 1).is_err());
        assert!(Workload::mix_text("NOPE\n", 1)
            .unwrap_err()
            .to_string()
            .contains("line 1"));
    }

    #[test]
    fn http_expectations_come_from_the_session() {
        let Workload::Http { requests, .. } = Workload::http("/bytes/123").unwrap() else {
            panic!()
        };
        assert_eq!(
            requests[0].wire,
            b"GET /bytes/123 HTTP/1.1\r\nHost: localhost\r\n\r\n"
        );
        let answer = |p: &str| http_request(p).unwrap().netcore.unwrap();
        assert_eq!(
            answer("/bytes/123"),
            HttpAnswer {
                status: 200,
                body: Some(123)
            }
        );
        let root = crate::proto::http::ROOT_BODY.len() as u64;
        assert_eq!(answer("/").body, Some(root));
        assert_eq!(answer("/sleep/5").body, Some(10));
        assert_eq!(answer("/stats").body, None);
        // Any path may be loaded (another server may have it); netcore's answer is known.
        assert_eq!(answer("/index.html").status, 404);
        assert!(answer("/").matches(200, root) && !answer("/").matches(200, 3));
        assert!(!answer("/index.html").matches(200, 10));
        assert!(http_request("nope").is_err());
        assert!(http_request("/a b").is_err());
    }

    #[test]
    fn echo_payloads() {
        let mut v = Vec::new();
        echo_payload(0x0102, 12, &mut v);
        assert_eq!(v.len(), 12);
        assert_eq!(&v[..2], &[2, 1]);
        for (i, b) in v.iter().enumerate() {
            assert_eq!(*b, echo_byte(0x0102, i));
        }
        v.clear();
        echo_payload(5, 3, &mut v);
        assert_eq!(v, vec![5, 0, 0]);
        assert!(Workload::echo(0).is_err());
    }
}
