//! HTTP/1.1 (and 1.0) responses as a client reads them from any server, incrementally and
//! pure: [`Reader`] takes a connection's bytes in whatever pieces they arrive and yields each
//! complete response ([`Done`]: status, decoded body length, whether the connection stays open,
//! whether the server said it is netcore). Bodies are counted, never buffered; only a head is
//! held (at most [`MAX_HEAD`] bytes). `load --proto http` drives one per connection.
//!
//! Framing, after RFC 9112 section 6.3 (the requests are GETs):
//! * `1xx` heads but `101` are interim: skipped, the final response follows; `101` is refused
//!   (netcore never asks to switch protocols);
//! * `204` and `304` have no body;
//! * `Transfer-Encoding` ending in `chunked`: chunks decoded byte by byte (size line in hex,
//!   extensions ignored, data, CRLF; the last chunk's trailers skipped), each line bounded;
//!   with a `Content-Length` too, the encoding wins and the connection is not reused;
//!   another final encoding: the body runs until the server closes;
//! * `Content-Length` (every value the same): that many bytes;
//! * neither: the body runs until the server closes ([`Reader::eof`] completes it).
//!
//! The connection stays open after a response when it is HTTP/1.1 without `Connection: close`,
//! or HTTP/1.0 with `Connection: keep-alive`, and its body was not delimited by the close.
//! Whatever cannot be read so is a [`Malformed`] reason; the reader then stays failed (the
//! client reconnects). Every byte is looked at once (the head's end is searched from where the
//! last search stopped), so the work is linear in the input, however it is split.

/// The most bytes a response head may take (status line, headers, the empty line).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most headers a response may carry.
pub(crate) const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (size, extensions), without its line end.
pub(crate) const MAX_CHUNK_LINE: u32 = 4096;
/// The most bytes of trailers after the last chunk.
pub(crate) const MAX_TRAILERS: u32 = 64 * 1024;

/// One complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub status: u16,
    /// Body bytes (decoded: chunk framing not counted).
    pub body: u64,
    /// The connection may carry the next request.
    pub keep_alive: bool,
    /// The head said `Server: netcore` (netcore's own `serve --proto http`).
    pub netcore: bool,
}

/// Why a response cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not an HTTP/1.x status line and headers.
    Garbage,
    /// A head over [`MAX_HEAD`] bytes.
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] headers.
    TooManyHeaders,
    /// A `Content-Length` that is not a number, or two that differ.
    BadContentLength,
    /// A chunk-size line that is not hex digits (then extensions), or one too long.
    BadChunkSize,
    /// Chunk data not followed by CRLF.
    BadChunkEnd,
    /// Trailers over [`MAX_TRAILERS`] bytes.
    TrailersTooLarge,
    /// A body whose length does not fit 64 bits.
    BodyTooLarge,
    /// `101 Switching Protocols`.
    Upgrade,
}

impl Malformed {
    /// A few words for the report.
    pub fn reason(self) -> &'static str {
        match self {
            Malformed::Garbage => "not an HTTP/1.x response",
            Malformed::HeadTooLarge => "response head over 64 KiB",
            Malformed::TooManyHeaders => "more than 128 response headers",
            Malformed::BadContentLength => "bad Content-Length",
            Malformed::BadChunkSize => "bad chunk size line",
            Malformed::BadChunkEnd => "chunk data not ended by CRLF",
            Malformed::TrailersTooLarge => "trailers over 64 KiB",
            Malformed::BodyTooLarge => "body length over 2^64",
            Malformed::Upgrade => "101 Switching Protocols",
        }
    }
}

/// What [`Reader::eof`] makes of the server's close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eof {
    /// Between responses: nothing was cut.
    Clean,
    /// The close ended a body delimited by it.
    Response(Done),
    /// The close cut a response short (or the reader had failed).
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The size line: `n` so far, `digits` read.
    Size { n: u64, digits: u8 },
    /// After the size: extensions up to the line end; `len` bytes of the line so far.
    Ext { n: u64, len: u32 },
    /// A CR ended the size line: its LF.
    SizeLf { n: u64 },
    /// `left` bytes of chunk data.
    Data { left: u64 },
    /// The CR after the data.
    DataCr,
    /// The LF after the data.
    DataLf,
    /// Trailer lines after the last chunk: `line` bytes of the current one, `total` in all.
    Trailer { line: u32, total: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a head into the buffer; its end was searched up to `scanned`.
    Head {
        scanned: usize,
    },
    /// `left` bytes of a `Content-Length` body.
    Length {
        left: u64,
    },
    Chunked(Chunk),
    /// The body runs until the server closes.
    UntilClose,
    Failed(Malformed),
}

/// The incremental reader of one connection's responses (see the module docs).
#[derive(Debug, Clone)]
pub struct Reader {
    state: State,
    head: Vec<u8>,
    /// The response being read (its body so far in `body`).
    cur: Done,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader {
            state: State::Head { scanned: 0 },
            head: Vec::new(),
            cur: Done {
                status: 0,
                body: 0,
                keep_alive: false,
                netcore: false,
            },
        }
    }

    /// Whether part of a response has been read (a close now would cut it).
    pub fn mid_response(&self) -> bool {
        !matches!(self.state, State::Head { .. }) || !self.head.is_empty()
    }

    /// Reads from the front of `data` until one response is complete (returned, `data` left
    /// after it) or `data` is used up (`Ok(None)`). After an error every call returns it.
    pub fn next(&mut self, data: &mut &[u8]) -> Result<Option<Done>, Malformed> {
        loop {
            match self.state {
                State::Failed(m) => return Err(m),
                State::Head { scanned } => {
                    if data.is_empty() {
                        return Ok(None);
                    }
                    match self.head_step(scanned, data) {
                        Err(m) => return Err(self.fail(m)),
                        Ok(Some(done)) => return Ok(Some(done)),
                        Ok(None) => {}
                    }
                }
                State::Length { left } => {
                    let k = left.min(data.len() as u64);
                    *data = &data[k as usize..];
                    self.cur.body += k;
                    if k == left {
                        return Ok(Some(self.complete()));
                    }
                    self.state = State::Length { left: left - k };
                    return Ok(None);
                }
                State::Chunked(c) => {
                    let Some(&b) = data.first() else {
                        return Ok(None);
                    };
                    if let Chunk::Data { left } = c {
                        let k = left.min(data.len() as u64);
                        *data = &data[k as usize..];
                        self.cur.body += k;
                        self.state = State::Chunked(if k == left {
                            Chunk::DataCr
                        } else {
                            Chunk::Data { left: left - k }
                        });
                        continue;
                    }
                    *data = &data[1..];
                    match chunk_byte(c, b) {
                        Err(m) => return Err(self.fail(m)),
                        Ok(None) => return Ok(Some(self.complete())),
                        Ok(Some(Chunk::Data { left })) => {
                            if self.cur.body.checked_add(left).is_none() {
                                return Err(self.fail(Malformed::BodyTooLarge));
                            }
                            self.state = State::Chunked(Chunk::Data { left });
                        }
                        Ok(Some(next)) => self.state = State::Chunked(next),
                    }
                }
                State::UntilClose => {
                    self.cur.body = self.cur.body.saturating_add(data.len() as u64);
                    *data = &[];
                    return Ok(None);
                }
            }
        }
    }

    /// The server closed the connection.
    pub fn eof(&mut self) -> Eof {
        match self.state {
            State::UntilClose => Eof::Response(self.complete()),
            State::Head { .. } if self.head.is_empty() => Eof::Clean,
            _ => Eof::Truncated,
        }
    }

    fn fail(&mut self, m: Malformed) -> Malformed {
        self.state = State::Failed(m);
        self.head = Vec::new();
        m
    }

    /// The response just read; the reader waits for the next head.
    fn complete(&mut self) -> Done {
        self.state = State::Head { scanned: 0 };
        let d = self.cur;
        self.cur.body = 0;
        d
    }

    /// Takes head bytes from `data` (up to the head's end, or the bound) and, once the head is
    /// whole, parses it and chooses the framing. `Ok(Some)`: a response without a body.
    fn head_step(&mut self, scanned: usize, data: &mut &[u8]) -> Result<Option<Done>, Malformed> {
        let room = MAX_HEAD + 1 - self.head.len();
        let take = data.len().min(room);
        self.head.extend_from_slice(&data[..take]);
        let Some(end) = head_end(&self.head, scanned) else {
            *data = &data[take..];
            if self.head.len() > MAX_HEAD {
                return Err(Malformed::HeadTooLarge);
            }
            self.state = State::Head {
                scanned: self.head.len(),
            };
            return Ok(None);
        };
        // The head ended inside what was taken: give the rest back.
        let extra = self.head.len() - end;
        *data = &data[take - extra..];
        self.head.truncate(end);
        let head = std::mem::take(&mut self.head);
        let r = self.framing(&head);
        self.head = head;
        self.head.clear();
        r
    }

    /// Parses a whole head and sets the state for its body. `Ok(Some)`: no body (done);
    /// `Ok(None)`: a body follows, or the head was interim (`1xx`).
    fn framing(&mut self, head: &[u8]) -> Result<Option<Done>, Malformed> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(Malformed::TooManyHeaders),
            _ => return Err(Malformed::Garbage),
        }
        let status = resp.code.unwrap_or(0);
        let h = Headers::of(resp.headers, resp.version == Some(1))?;
        self.cur = Done {
            status,
            body: 0,
            keep_alive: h.keep_alive,
            netcore: h.netcore,
        };
        match status {
            101 => return Err(Malformed::Upgrade),
            100..=199 => {
                self.state = State::Head { scanned: 0 };
                return Ok(None);
            }
            204 | 304 => return Ok(Some(self.complete())),
            _ => {}
        }
        self.state = match (h.encoding, h.length) {
            (Some(true), length) => {
                self.cur.keep_alive &= length.is_none();
                State::Chunked(Chunk::Size { n: 0, digits: 0 })
            }
            (Some(false), _) | (None, None) => {
                self.cur.keep_alive = false;
                State::UntilClose
            }
            (None, Some(0)) => return Ok(Some(self.complete())),
            (None, Some(n)) => State::Length { left: n },
        };
        Ok(None)
    }
}

/// What a head's headers say about framing and the connection.
struct Headers {
    /// `Transfer-Encoding` present: whether its last coding is `chunked`.
    encoding: Option<bool>,
    length: Option<u64>,
    keep_alive: bool,
    netcore: bool,
}

impl Headers {
    fn of(headers: &[httparse::Header], http11: bool) -> Result<Headers, Malformed> {
        let mut h = Headers {
            encoding: None,
            length: None,
            keep_alive: http11,
            netcore: false,
        };
        let (mut close, mut keep) = (false, false);
        for hd in headers {
            let name = hd.name;
            if name.eq_ignore_ascii_case("content-length") {
                for v in hd.value.split(|&b| b == b',') {
                    let n = content_length(v)?;
                    if h.length.is_some_and(|m| m != n) {
                        return Err(Malformed::BadContentLength);
                    }
                    h.length = Some(n);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                let last = hd.value.split(|&b| b == b',').next_back().unwrap_or(b"");
                h.encoding = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for t in hd.value.split(|&b| b == b',').map(trim) {
                    close |= t.eq_ignore_ascii_case(b"close");
                    keep |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("server") {
                h.netcore = trim(hd.value) == b"netcore";
            }
        }
        // `close` wins over `keep-alive` in one head, whatever their order.
        h.keep_alive = !close && (http11 || keep);
        Ok(h)
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(s, |i| i + 1);
    &v[s..e]
}

fn content_length(v: &[u8]) -> Result<u64, Malformed> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Malformed::BadContentLength);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + (d - b'0') as u64))
}

/// The end of the head in `buf` (just after its empty line: `\r\n\r\n` or `\n\n`), searching
/// from `from` (bytes before it were searched already; the terminator may straddle).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + p;
        if at + 1 < buf.len() && buf[at + 1] == b'\n' {
            return Some(at + 2);
        }
        if at + 2 < buf.len() && buf[at + 1] == b'\r' && buf[at + 2] == b'\n' {
            return Some(at + 3);
        }
        i = at + 1;
    }
    None
}

/// One byte of chunk framing (not data) in state `c`: the next state, `Ok(None)` when the
/// trailers' empty line ended the body.
fn chunk_byte(c: Chunk, b: u8) -> Result<Option<Chunk>, Malformed> {
    let line_end = |n: u64| {
        Some(if n == 0 {
            Chunk::Trailer { line: 0, total: 0 }
        } else {
            Chunk::Data { left: n }
        })
    };
    Ok(match c {
        Chunk::Size { n, digits } => match (b as char).to_digit(16) {
            Some(d) if digits < 16 => Some(Chunk::Size {
                n: n << 4 | d as u64,
                digits: digits + 1,
            }),
            Some(_) => return Err(Malformed::BodyTooLarge),
            None if digits == 0 => return Err(Malformed::BadChunkSize),
            None => match b {
                b';' | b' ' | b'\t' => Some(Chunk::Ext {
                    n,
                    len: digits as u32 + 1,
                }),
                b'\r' => Some(Chunk::SizeLf { n }),
                b'\n' => line_end(n),
                _ => return Err(Malformed::BadChunkSize),
            },
        },
        Chunk::Ext { n, len } => match b {
            b'\r' => Some(Chunk::SizeLf { n }),
            b'\n' => line_end(n),
            _ if len >= MAX_CHUNK_LINE => return Err(Malformed::BadChunkSize),
            _ => Some(Chunk::Ext { n, len: len + 1 }),
        },
        Chunk::SizeLf { n } => match b {
            b'\n' => line_end(n),
            _ => return Err(Malformed::BadChunkSize),
        },
        Chunk::DataCr => match b {
            b'\r' => Some(Chunk::DataLf),
            b'\n' => Some(Chunk::Size { n: 0, digits: 0 }),
            _ => return Err(Malformed::BadChunkEnd),
        },
        Chunk::DataLf => match b {
            b'\n' => Some(Chunk::Size { n: 0, digits: 0 }),
            _ => return Err(Malformed::BadChunkEnd),
        },
        Chunk::Trailer { line, total } => {
            if total >= MAX_TRAILERS {
                return Err(Malformed::TrailersTooLarge);
            }
            match b {
                b'\n' if line == 0 => None,
                b'\n' => Some(Chunk::Trailer {
                    line: 0,
                    total: total + 1,
                }),
                b'\r' => Some(Chunk::Trailer {
                    line,
                    total: total + 1,
                }),
                _ => Some(Chunk::Trailer {
                    line: line + 1,
                    total: total + 1,
                }),
            }
        }
        Chunk::Data { left } => Some(Chunk::Data { left }),
    })
}

#[cfg(test)]
mod tests;
