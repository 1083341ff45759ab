//! HTTP/1.1 (and 1.0) as a pure core: one request parsed from the front of a buffer
//! ([`parse_request`], over `httparse`), its route, the keep-alive decision, and the answer
//! written into the caller's output ([`write_response`]); plus a strict parser of these answers
//! ([`parse_response`]: what `load` expects of netcore, and the tests' reader; `load` reads any
//! server with [`super::http_client`]). No socket: the session frames the connection
//! and the drivers move the bytes. Every answer carries a `Date` header ([`HttpDate`], RFC 9110
//! IMF-fixdate); the one clock here is [`HttpDate::now`], which reads the wall clock and formats
//! it only when its second changed (a cache per thread). The `_at` writers take the date from
//! the caller, who reads it once per batch of requests.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | `200`, a small fixed body ([`ROOT_BODY`]) |
//! | `GET /bytes/N` | `200`, N bytes (`0 <= N <=` [`MAX_BYTES`]) |
//! | `GET /sleep/MS` | `200` after MS milliseconds (the task protocol's `SLEEP`) |
//! | `GET /hash/ROUNDS` | `200`, 16 hex digits (the task protocol's `HASH` over the path) |
//! | `GET /stats` | `200`, the server's counters |
//! | `GET /metrics` | `200`, OpenMetrics text, where the command serves metrics (else `404`) |
//! | `HEAD` of any of these | the same head, no body |
//!
//! Errors: `400` (malformed request, bad `Content-Length`, chunked bodies), `404` (no route),
//! `405` (a method other than GET/HEAD), `413` (a body over [`MAX_BODY`]), `431` (a head over
//! [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers), `408` (a head not complete in time: the
//! driver's timer). Every error but `404` and `405` closes the connection, since the framing
//! can no longer be trusted.

use std::cell::Cell;
use std::io::Write;

use crate::sys::realtime_coarse_secs;

/// The most bytes a request or response head may take.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// The most headers a request or response may carry.
pub(crate) const MAX_HEADERS: usize = 32;
/// The largest request body accepted (and skipped: no route takes one).
pub(crate) const MAX_BODY: u64 = 64 * 1024;
/// The largest `/bytes/N`.
pub(crate) const MAX_BYTES: u64 = 16 << 20;
/// The body of `GET /`.
pub const ROOT_BODY: &[u8] = b"Hello from netcore\n";

/// Bytes of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) const DATE_LEN: usize = 29;
/// The last second an IMF-fixdate can name (9999-12-31 23:59:59 UTC): later clocks are held
/// there.
pub(crate) const MAX_DATE_SECS: u64 = 253_402_300_799;

const WEEKDAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// The value of a `Date` header: one second of Unix time as an IMF-fixdate (RFC 9110 5.6.7),
/// formatted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpDate {
    secs: u64,
    text: [u8; DATE_LEN],
}

thread_local! {
    /// The date [`HttpDate::now`] formatted last on this thread (`secs == u64::MAX`: none yet).
    static NOW: Cell<HttpDate> = const {
        Cell::new(HttpDate {
            secs: u64::MAX,
            text: [0; DATE_LEN],
        })
    };
}

impl HttpDate {
    /// The date of `secs` seconds after the Unix epoch (UTC), at most [`MAX_DATE_SECS`].
    pub(crate) fn from_unix(secs: u64) -> HttpDate {
        let secs = secs.min(MAX_DATE_SECS);
        let days = secs / 86_400;
        let day_secs = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        let mut text = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        // 1970-01-01 was a Thursday.
        text[..3].copy_from_slice(WEEKDAYS[((days + 4) % 7) as usize]);
        put_digits(&mut text[5..7], day);
        text[8..11].copy_from_slice(MONTHS[month - 1]);
        put_digits(&mut text[12..16], year);
        put_digits(&mut text[17..19], day_secs / 3600);
        put_digits(&mut text[20..22], day_secs / 60 % 60);
        put_digits(&mut text[23..25], day_secs % 60);
        HttpDate { secs, text }
    }

    /// The date now: one read of the wall clock (the coarse one, [`realtime_coarse_secs`]: a
    /// few ms late at most, about 50 instructions where `SystemTime::now` took about 140 under
    /// callgrind); formatted only when its second changed since this thread last asked.
    pub fn now() -> HttpDate {
        let secs = realtime_coarse_secs().min(MAX_DATE_SECS);
        NOW.with(|cached| {
            let date = cached.get();
            if date.secs == secs {
                return date;
            }
            let date = HttpDate::from_unix(secs);
            cached.set(date);
            date
        })
    }

    /// Seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.secs
    }

    /// The header's value (29 ASCII bytes).
    pub fn as_bytes(&self) -> &[u8; DATE_LEN] {
        &self.text
    }
}

/// (year, month 1-12, day 1-31) of `days` after 1970-01-01 in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, in unsigned arithmetic: days before 1970 never occur).
fn civil_from_days(days: u64) -> (u64, usize, u64) {
    // Shifted to 0000-03-01 so that a leap day ends the year, in 400-year eras.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (era * 400 + yoe + u64::from(month <= 2), month as usize, day)
}

/// Writes `n` as `out.len()` decimal digits, zero-padded (high digits beyond are dropped).
fn put_digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// A status netcore answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Timeout,
    TooLarge,
    HeadersTooLarge,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::Timeout => 408,
            Status::TooLarge => 413,
            Status::HeadersTooLarge => 431,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::Timeout => "Request Timeout",
            Status::TooLarge => "Content Too Large",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
        }
    }

    /// The code and reason as they follow the version in a status line (`200 OK`).
    fn line(self) -> &'static [u8] {
        match self {
            Status::Ok => b"200 OK",
            Status::BadRequest => b"400 Bad Request",
            Status::NotFound => b"404 Not Found",
            Status::MethodNotAllowed => b"405 Method Not Allowed",
            Status::Timeout => b"408 Request Timeout",
            Status::TooLarge => b"413 Content Too Large",
            Status::HeadersTooLarge => b"431 Request Header Fields Too Large",
        }
    }

    /// Whether the connection can go on after this answer.
    pub(crate) fn keeps_connection(self) -> bool {
        matches!(
            self,
            Status::Ok | Status::NotFound | Status::MethodNotAllowed
        )
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Root,
    Bytes(u64),
    /// Milliseconds.
    Sleep(u64),
    /// Rounds, over the seed the path gives.
    Hash {
        rounds: u64,
        seed: u64,
    },
    Stats,
    /// `/metrics`: the OpenMetrics exposition, where the command serves one.
    Metrics,
}

/// One parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The route, or the error status that answers the request.
    pub route: Result<Route, Status>,
    /// HEAD: the answer has no body.
    pub head: bool,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// HTTP/1.0 (answers say 1.0 too, and `Connection: keep-alive` when kept).
    pub http10: bool,
    /// Bytes of the buffer the request took, its body included.
    pub len: usize,
}

/// The result of looking at the front of a connection's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet (the head is shorter than [`MAX_HEAD`]).
    Partial,
    Request(Request),
    /// The input cannot be a request: answer with this status and close.
    Invalid(Status),
}

/// Parses the request at the front of `buf`.
pub fn parse_request(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Parsed::Invalid(Status::HeadersTooLarge),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Invalid(Status::HeadersTooLarge)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid(Status::HeadersTooLarge),
        Err(_) => return Parsed::Invalid(Status::BadRequest),
    };
    let http10 = req.version == Some(0);
    let mut keep_alive = !http10;
    let mut body: u64 = 0;
    let mut seen_length = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for tok in h.value.split(|&b| b == b',') {
                let tok = tok.trim_ascii();
                if tok.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match v {
                // Two different lengths are a smuggling attempt, not a request.
                Some(n) if !seen_length || n == body => body = n,
                _ => return Parsed::Invalid(Status::BadRequest),
            }
            seen_length = true;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Invalid(Status::BadRequest);
        }
    }
    if body > MAX_BODY {
        return Parsed::Invalid(Status::TooLarge);
    }
    let len = head_len + body as usize;
    if buf.len() < len {
        return Parsed::Partial;
    }
    let method = req.method.unwrap_or("");
    let head = method == "HEAD";
    let route = if method == "GET" || head {
        route(req.path.unwrap_or(""))
    } else {
        Err(Status::MethodNotAllowed)
    };
    Parsed::Request(Request {
        route,
        head,
        keep_alive,
        http10,
        len,
    })
}

/// The route of a request target (the query, if any, is ignored).
pub fn route(target: &str) -> Result<Route, Status> {
    // A byte search: `split('?')` ran a char searcher, measurable per request.
    let path = match target.bytes().position(|b| b == b'?') {
        Some(i) => &target[..i],
        None => target,
    };
    let arg = |prefix: &str, max: u64| -> Option<u64> {
        let v = path.strip_prefix(prefix)?;
        if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse::<u64>().ok().filter(|n| *n <= max)
    };
    match path {
        "/" => Ok(Route::Root),
        "/stats" => Ok(Route::Stats),
        "/metrics" => Ok(Route::Metrics),
        _ => {
            if let Some(n) = arg("/bytes/", MAX_BYTES) {
                Ok(Route::Bytes(n))
            } else if let Some(ms) = arg("/sleep/", super::task::MAX_SLEEP_MS) {
                Ok(Route::Sleep(ms))
            } else if let Some(r) = arg("/hash/", super::task::MAX_HASH_ROUNDS).filter(|r| *r >= 1)
            {
                Ok(Route::Hash {
                    rounds: r,
                    seed: super::task::fnv1a64(path.as_bytes()),
                })
            } else {
                Err(Status::NotFound)
            }
        }
    }
}

/// Writes a whole answer: status line, `Server`, `Date` (now: [`HttpDate::now`]),
/// `Content-Length`, `Connection` where it differs from the version's default, and the body
/// unless the request was HEAD.
pub(crate) fn write_response(out: &mut Vec<u8>, req: &Request, status: Status, body: &[u8]) {
    write_response_at(out, req, status, body, &HttpDate::now());
}

/// [`write_response`] dated `date`.
pub(crate) fn write_response_at(
    out: &mut Vec<u8>,
    req: &Request,
    status: Status,
    body: &[u8],
    date: &HttpDate,
) {
    write_head(out, req, status, body.len() as u64, date);
    if !req.head {
        out.extend_from_slice(body);
    }
}

/// Writes a whole answer whose body has a `Content-Type` (the metrics endpoint's), dated now.
pub(crate) fn write_typed(
    out: &mut Vec<u8>,
    req: &Request,
    status: Status,
    kind: &str,
    body: &[u8],
) {
    write_head_with(out, req, status, body.len() as u64, kind, &HttpDate::now());
    if !req.head {
        out.extend_from_slice(body);
    }
}

/// Writes an answer of `n` bytes of a fixed pattern (`/bytes/N`).
pub fn write_bytes(out: &mut Vec<u8>, req: &Request, n: u64, date: &HttpDate) {
    write_bytes_head(out, req, n, date);
    if !req.head {
        write_pattern(out, 0, n as usize);
    }
}

/// Writes the head of a `/bytes/N` answer only: the body follows through [`write_pattern`]
/// (the session writes a large one a piece at a time, within its output bound).
pub(crate) fn write_bytes_head(out: &mut Vec<u8>, req: &Request, n: u64, date: &HttpDate) {
    write_head(out, req, Status::Ok, n, date);
}

/// The repeating pattern of `/bytes/N` bodies.
const PATTERN: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n";

/// Writes `n` bytes of the `/bytes/N` body starting at body offset `from`.
pub(crate) fn write_pattern(out: &mut Vec<u8>, from: u64, n: usize) {
    let mut at = (from % PATTERN.len() as u64) as usize;
    let mut left = n;
    out.reserve(left);
    while left > 0 {
        let k = left.min(PATTERN.len() - at);
        out.extend_from_slice(&PATTERN[at..at + k]);
        left -= k;
        at = 0;
    }
}

/// Writes an error answer for input that is not a request (no `Request` to answer to): 1.1,
/// closing, dated now.
pub(crate) fn write_invalid(out: &mut Vec<u8>, status: Status) {
    write_invalid_at(out, status, &HttpDate::now());
}

/// [`write_invalid`] dated `date`.
pub(crate) fn write_invalid_at(out: &mut Vec<u8>, status: Status, date: &HttpDate) {
    let req = Request {
        route: Err(status),
        head: false,
        keep_alive: false,
        http10: false,
        len: 0,
    };
    let body = status.reason().as_bytes();
    write_head(out, &req, status, body.len() as u64 + 1, date);
    out.extend_from_slice(body);
    out.push(b'\n');
}

fn write_head(out: &mut Vec<u8>, req: &Request, status: Status, len: u64, date: &HttpDate) {
    write_head_with(out, req, status, len, "", date);
}

fn write_head_with(
    out: &mut Vec<u8>,
    req: &Request,
    status: Status,
    len: u64,
    kind: &str,
    date: &HttpDate,
) {
    // The hot path of every answer: plain copies of fixed pieces, no `core::fmt` (which cost
    // about 1 100 of the 3 000 instructions a `GET /` took end to end; tools/callgrind-http.sh).
    let keep = req.keep_alive && status.keeps_connection();
    let conn: &[u8] = match (req.http10, keep) {
        (false, true) => b"",
        (true, true) => b"Connection: keep-alive\r\n",
        (_, false) => b"Connection: close\r\n",
    };
    out.extend_from_slice(if req.http10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.line());
    out.extend_from_slice(b"\r\nServer: netcore\r\nDate: ");
    out.extend_from_slice(date.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(out, len);
    out.extend_from_slice(b"\r\n");
    if !kind.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(conn);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Whether the connection stays open after answering `req` with `status`.
pub(crate) fn keeps_open(req: &Request, status: Status) -> bool {
    req.keep_alive && status.keeps_connection()
}

/// One parsed response (the client's half, for `load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Bytes of the body.
    pub body: u64,
    /// Bytes of the head.
    pub head: usize,
    /// The server keeps the connection open.
    pub keep_alive: bool,
}

/// What the front of a client's input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedResponse {
    /// The head is not complete yet.
    Partial,
    /// A head; the body (`body` bytes) follows it.
    Response(Response),
    /// Not a response netcore can read (malformed, no `Content-Length`, chunked, too big).
    Invalid(&'static str),
}

/// Parses the response head at the front of `buf`, strictly as netcore's own server writes it:
/// responses without a `Content-Length` (or chunked) are refused. Any server's responses, in
/// any framing and fed in pieces, are [`super::http_client::Reader`]'s.
pub fn parse_response(buf: &[u8], head_request: bool) -> ParsedResponse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return ParsedResponse::Partial,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return ParsedResponse::Invalid("response head too large")
        }
        Err(_) => return ParsedResponse::Invalid("malformed response"),
    };
    let mut keep_alive = resp.version == Some(1);
    let mut body = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            if body.is_none() {
                return ParsedResponse::Invalid("bad Content-Length");
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return ParsedResponse::Invalid("chunked responses are not supported");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let status = resp.code.unwrap_or(0);
    let body = if head_request || status == 204 || status == 304 {
        0
    } else {
        match body {
            Some(n) => n,
            None => return ParsedResponse::Invalid("response without Content-Length"),
        }
    };
    ParsedResponse::Response(Response {
        status,
        body,
        head,
        keep_alive,
    })
}

/// A GET request for `path` (HTTP/1.1, keep-alive), as `load` sends it.
pub(crate) fn write_get(out: &mut Vec<u8>, path: &str, host: &str) {
    let _ = write!(out, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(text: &str) -> Request {
        match parse_request(text.as_bytes()) {
            Parsed::Request(r) => r,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn routes_and_keep_alive() {
        let r = req("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.route, Ok(Route::Root));
        assert!(r.keep_alive && !r.http10 && !r.head);
        assert_eq!(r.len, 27);
        assert_eq!(
            req("GET /bytes/100 HTTP/1.1\r\n\r\n").route,
            Ok(Route::Bytes(100))
        );
        assert_eq!(
            req("GET /sleep/5?x=1 HTTP/1.1\r\n\r\n").route,
            Ok(Route::Sleep(5))
        );
        assert!(matches!(
            req("GET /hash/10 HTTP/1.1\r\n\r\n").route,
            Ok(Route::Hash { rounds: 10, .. })
        ));
        assert_eq!(req("GET /stats HTTP/1.1\r\n\r\n").route, Ok(Route::Stats));
        assert_eq!(
            req("GET /nope HTTP/1.1\r\n\r\n").route,
            Err(Status::NotFound)
        );
        assert_eq!(
            req("GET /bytes/99999999999 HTTP/1.1\r\n\r\n").route,
            Err(Status::NotFound)
        );
        assert_eq!(
            req("GET /hash/0 HTTP/1.1\r\n\r\n").route,
            Err(Status::NotFound)
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").route,
            Err(Status::MethodNotAllowed)
        );
        assert!(!req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!req("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(req("HEAD / HTTP/1.1\r\n\r\n").head);
    }

    #[test]
    fn errors_name_their_status() {
        let p = |s: &str| parse_request(s.as_bytes());
        assert_eq!(p("GET / HTTP/1.1\r\n"), Parsed::Partial);
        assert_eq!(p("garbage\r\n\r\n"), Parsed::Invalid(Status::BadRequest));
        assert_eq!(
            p("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Parsed::Invalid(Status::BadRequest)
        );
        assert_eq!(
            p("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Parsed::Invalid(Status::BadRequest)
        );
        assert_eq!(
            p("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Invalid(Status::BadRequest)
        );
        assert_eq!(
            p("POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"),
            Parsed::Invalid(Status::TooLarge)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(p(&big), Parsed::Invalid(Status::HeadersTooLarge));
        let endless = format!("GET /{}", "a".repeat(MAX_HEAD + 1));
        assert_eq!(p(&endless), Parsed::Invalid(Status::HeadersTooLarge));
        let many: String = (0..40).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            p(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Parsed::Invalid(Status::HeadersTooLarge)
        );
        // A body not all here yet is partial; it is skipped once here.
        assert_eq!(
            p("GET / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab"),
            Parsed::Partial
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdNEXT").len,
            41
        );
    }

    #[test]
    fn answers_parse_back() {
        let r = req("GET /bytes/1000 HTTP/1.1\r\n\r\n");
        let mut out = Vec::new();
        write_bytes(&mut out, &r, 1000, &HttpDate::from_unix(0));
        let ParsedResponse::Response(resp) = parse_response(&out, false) else {
            panic!("{}", String::from_utf8_lossy(&out))
        };
        assert_eq!((resp.status, resp.body, resp.keep_alive), (200, 1000, true));
        assert_eq!(resp.head + 1000, out.len());

        let r = req("HEAD / HTTP/1.0\r\n\r\n");
        out.clear();
        write_response(&mut out, &r, Status::Ok, ROOT_BODY);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Connection: close\r\n") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
        let ParsedResponse::Response(resp) = parse_response(&out, true) else {
            panic!()
        };
        assert_eq!((resp.body, resp.keep_alive), (0, false));

        out.clear();
        write_invalid(&mut out, Status::HeadersTooLarge);
        let ParsedResponse::Response(resp) = parse_response(&out, false) else {
            panic!()
        };
        assert_eq!((resp.status, resp.keep_alive), (431, false));
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            ParsedResponse::Invalid("chunked responses are not supported")
        );
    }

    #[test]
    fn a_body_written_in_pieces_is_the_whole_body() {
        let r = req("GET /bytes/1000 HTTP/1.1\r\n\r\n");
        let date = HttpDate::from_unix(784_111_777);
        let mut whole = Vec::new();
        write_bytes(&mut whole, &r, 1000, &date);
        let mut pieces = Vec::new();
        write_bytes_head(&mut pieces, &r, 1000, &date);
        let mut at = 0;
        for k in [1, 63, 64, 65, 300, 507] {
            write_pattern(&mut pieces, at, k);
            at += k as u64;
        }
        assert_eq!(at, 1000);
        assert_eq!(pieces, whole);
    }

    /// The head as `write!` formatted it before the hand-written copies replaced it, with the
    /// `Date` of [`date_reference`].
    fn head_reference(req: &Request, status: Status, len: u64, kind: &str, secs: u64) -> String {
        let version = if req.http10 { "1.0" } else { "1.1" };
        let keep = req.keep_alive && status.keeps_connection();
        let conn = match (req.http10, keep) {
            (false, true) => "",
            (true, true) => "Connection: keep-alive\r\n",
            (_, false) => "Connection: close\r\n",
        };
        let kind = if kind.is_empty() {
            String::new()
        } else {
            format!("Content-Type: {kind}\r\n")
        };
        format!(
            "HTTP/{version} {} {}\r\nServer: netcore\r\nDate: {}\r\nContent-Length: {len}\r\n{kind}{conn}\r\n",
            status.code(),
            status.reason(),
            date_reference(secs)
        )
    }

    /// IMF-fixdate of `secs` by walking the calendar a year and a month at a time.
    fn date_reference(secs: u64) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const NAMES: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = secs / 86_400;
        let weekday = DAYS[(days % 7) as usize];
        let mut year = 1970;
        while days >= if leap(year) { 366 } else { 365 } {
            days -= if leap(year) { 366 } else { 365 };
            year += 1;
        }
        let mut month = 0;
        loop {
            let len = [
                31,
                28 + u64::from(leap(year)),
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ][month];
            if days < len {
                break;
            }
            days -= len;
            month += 1;
        }
        let t = secs % 86_400;
        format!(
            "{weekday}, {:02} {} {year} {:02}:{:02}:{:02} GMT",
            days + 1,
            NAMES[month],
            t / 3600,
            t / 60 % 60,
            t % 60
        )
    }

    #[test]
    fn dates_are_imf_fixdates() {
        let d = |secs| String::from_utf8(HttpDate::from_unix(secs).as_bytes().to_vec()).unwrap();
        assert_eq!(d(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 9110's example.
        assert_eq!(d(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(d(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(d(1_796_212_800), "Wed, 02 Dec 2026 12:00:00 GMT");
        assert_eq!(d(MAX_DATE_SECS), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(
            HttpDate::from_unix(u64::MAX),
            HttpDate::from_unix(MAX_DATE_SECS)
        );
    }

    #[test]
    fn now_is_the_clock_second() {
        // Before on the coarse clock (it never goes back), after on the fine one (never behind).
        let fine = || crate::sys::realtime_ns() / 1_000_000_000;
        for _ in 0..3 {
            let before = realtime_coarse_secs();
            let now = HttpDate::now();
            let after = fine();
            assert!((before..=after).contains(&now.unix_secs()), "{now:?}");
            assert_eq!(now, HttpDate::from_unix(now.unix_secs()));
        }
    }

    const STATUSES: [Status; 7] = [
        Status::Ok,
        Status::BadRequest,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::Timeout,
        Status::TooLarge,
        Status::HeadersTooLarge,
    ];

    proptest! {
        #[test]
        fn heads_are_what_write_formatted(
            s in 0..STATUSES.len(),
            http10 in any::<bool>(),
            keep_alive in any::<bool>(),
            typed in any::<bool>(),
            len in prop_oneof![0u64..1000, any::<u64>()],
            secs in 0..=MAX_DATE_SECS,
        ) {
            let status = STATUSES[s];
            let req = Request { route: Ok(Route::Root), head: true, keep_alive, http10, len: 0 };
            let kind = if typed { "text/plain; version=0.0.4" } else { "" };
            let mut out = b"before".to_vec();
            write_head_with(&mut out, &req, status, len, kind, &HttpDate::from_unix(secs));
            let want = format!("before{}", head_reference(&req, status, len, kind, secs));
            prop_assert_eq!(String::from_utf8(out).unwrap(), want);
        }

        #[test]
        fn dates_are_what_a_calendar_walk_gives(
            secs in prop_oneof![0..=MAX_DATE_SECS, 946_684_000u64..4_102_445_000],
        ) {
            let d = HttpDate::from_unix(secs);
            prop_assert_eq!(d.unix_secs(), secs);
            prop_assert_eq!(String::from_utf8(d.as_bytes().to_vec()).unwrap(), date_reference(secs));
        }

        #[test]
        fn pipelined_requests_parse_one_by_one(paths in proptest::collection::vec(0u64..5000, 1..8)) {
            let mut buf = Vec::new();
            for n in &paths {
                write_get(&mut buf, &format!("/bytes/{n}"), "h");
            }
            let mut at = 0;
            for n in &paths {
                let Parsed::Request(r) = parse_request(&buf[at..]) else { panic!() };
                prop_assert_eq!(r.route, Ok(Route::Bytes(*n)));
                at += r.len;
            }
            prop_assert_eq!(at, buf.len());
        }

        #[test]
        fn any_bytes_parse_without_panic(d in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_request(&d);
            let _ = parse_response(&d, false);
        }
    }
}
