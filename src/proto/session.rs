//! [`Session`]: one connection's protocol state machine (see the [module docs](super)).

use std::io::Write;
use std::time::Duration;

use super::counters::{Counters, ErrorKind, BYTES_IN, BYTES_OUT, REQUESTS};
use super::echo;
use super::task::{self, CpuJob, Request};

/// Which protocol a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// The line-based task protocol.
    Task,
    /// Raw echo, no framing.
    Echo,
    /// HTTP/1.1 (and 1.0) over [`super::http`]: keep-alive, pipelining.
    Http,
    /// sockperf's framing over [`super::sockperf`]: pong requests answered.
    Sockperf,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Task => "task",
            Proto::Echo => "echo",
            Proto::Http => "http",
            Proto::Sockperf => "sockperf",
        }
    }
}

/// Limits of a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub proto: Proto,
    /// Longest accepted line in bytes, without its terminator.
    pub max_line: usize,
    /// `HASH` with more rounds than this is returned as [`Step::Cpu`] instead of run inline.
    pub offload_rounds: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            proto: Proto::Task,
            max_line: task::DEFAULT_MAX_LINE,
            offload_rounds: task::DEFAULT_OFFLOAD_ROUNDS,
        }
    }
}

/// What the driver must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// All complete requests are answered: write the output, read more input.
    NeedInput,
    /// Wait this long (a timer, or sleep the thread), then call [`Session::finish_sleep`] and
    /// [`Session::resume`].
    Sleep(Duration),
    /// Run this job (inline or on a worker pool), then call [`Session::finish_cpu`] with its
    /// result and [`Session::resume`].
    Cpu(CpuJob),
    /// A deferred operation is still outstanding; nothing to do until it completes.
    Pending,
    /// The output vector holds at least the session's output limit
    /// ([`Session::with_out_limit`]): write it, then call [`Session::resume`] to answer the
    /// lines held behind it. Read nothing more meanwhile (that is the backpressure).
    Flush,
    /// Write the output, then close the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Sleep(u64),
    Cpu,
}

/// Per-connection counters, reported by `STATS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub requests: u64,
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One connection's protocol state. Buffers are kept and reused: in steady state a request
/// allocates nothing (the input buffer and the caller's output vector keep their capacity).
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    /// Unconsumed input is `buf[start..]`; no `\n` in `buf[start..scanned]`.
    buf: Vec<u8>,
    start: usize,
    scanned: usize,
    pending: Pending,
    eof: bool,
    closed: bool,
    stats: ConnStats,
    /// Stop answering while the output vector holds this many bytes ([`Step::Flush`]).
    out_limit: usize,
    /// The first byte of the pending `SLEEP`'s answer went out early (the peer half-closed).
    probe: bool,
    /// HTTP: the state between requests ([`http_session`]).
    http: http_session::HttpState,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Self {
        Session {
            cfg,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            pending: Pending::None,
            eof: false,
            closed: false,
            stats: ConnStats::default(),
            out_limit: usize::MAX,
            probe: false,
            http: http_session::HttpState::default(),
        }
    }

    /// Bounds the output: once the output vector holds `limit` bytes, no further line is
    /// answered until the driver has written it out and called [`Session::resume`]
    /// ([`Step::Flush`]). The vector then holds at most `limit` bytes plus one answer. Without
    /// it, one read of small requests with large answers (`STATS`: 6 bytes in, ~130 out) is
    /// answered whole, however much that is.
    pub(crate) fn with_out_limit(mut self, limit: usize) -> Self {
        self.out_limit = limit.max(1);
        self
    }

    pub fn stats(&self) -> ConnStats {
        self.stats
    }

    /// True once the session decided to close (after `BYE`, a too-long line or EOF).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True while a `SLEEP` or CPU job is outstanding.
    pub fn is_pending(&self) -> bool {
        self.pending != Pending::None
    }

    /// Requests whose answer is in the output so far: every request taken but a pending
    /// `SLEEP`'s or CPU job's (an HTTP body over the output bound counts once its first part
    /// is there).
    pub fn answered(&self) -> u64 {
        self.stats.requests - u64::from(self.is_pending())
    }

    /// True while a request is owed an answer: one pending, or complete ones held in the
    /// input (behind it, or behind a full output).
    pub(crate) fn holds_requests(&self) -> bool {
        !self.closed && (self.is_pending() || (self.buffered() > 0 && !self.partial_line()))
    }

    /// Bytes of input held (an incomplete line, or lines waiting behind a pending operation).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// True when the session waits for the rest of a request line (HTTP: of a request head or
    /// body): it holds input with no line terminator, nothing is pending, and every complete
    /// line has been answered.
    pub fn partial_line(&self) -> bool {
        !self.closed
            && self.pending == Pending::None
            && !self.eof
            && self.scanned == self.buf.len()
            && self.start < self.buf.len()
    }

    /// True once the peer has half-closed ([`Session::eof`]).
    pub fn saw_eof(&self) -> bool {
        self.eof
    }

    /// True while a `SLEEP` is pending after the peer half-closed. Its answer's first byte has
    /// then already been written (see [`Session::eof`]): a peer that has gone, rather than just
    /// half-closed, answers that byte with a reset, which the driver should watch for (the
    /// socket's pending error) and then drop the connection instead of sleeping on.
    pub fn probing(&self) -> bool {
        self.probe
    }

    /// The driver's request-line deadline passed with a line still incomplete (a client that
    /// sends a line byte by byte, slower than the idle timeout, must not hold a connection
    /// forever): answers `ERR line timeout` (HTTP: `408`) and closes. Returns [`Step::Close`].
    pub(crate) fn line_timeout(&mut self, out: &mut Vec<u8>, srv: &Counters) -> Step {
        if self.cfg.proto == Proto::Http {
            self.http_fail_and_close(out, srv, super::http::Status::Timeout);
        } else if self.cfg.proto == Proto::Sockperf {
            self.count_error(srv, ErrorKind::Timeout);
            self.close_with(out, srv, |_, _| {});
        } else {
            self.fail_and_close(out, srv, ErrorKind::Timeout, format_args!("line timeout"));
        }
        Step::Close
    }

    /// Takes received bytes, answers every complete request into `out`.
    pub fn input(&mut self, data: &[u8], out: &mut Vec<u8>, srv: &Counters) -> Step {
        self.stats.bytes_in += data.len() as u64;
        srv.add(BYTES_IN, data.len() as u64);
        if self.closed {
            return Step::Close;
        }
        if self.cfg.proto == Proto::Echo {
            echo::answer(data, out);
            self.stats.requests += 1;
            self.stats.bytes_out += data.len() as u64;
            srv.add(REQUESTS, 1);
            srv.add(BYTES_OUT, data.len() as u64);
            return Step::NeedInput;
        }
        self.buf.extend_from_slice(data);
        self.resume(out, srv)
    }

    /// The peer will send nothing more: answer what was received, then [`Step::Close`] (or
    /// [`Step::Sleep`]/[`Step::Cpu`]/[`Step::Pending`] first, then `Close` from `resume`).
    ///
    /// A half-close and a peer that has gone look the same here (a FIN), and the answers are
    /// owed to the first. So a `SLEEP` pending now, or started after this, writes the first
    /// byte of its answer (`O`) at once and the rest when it ends: the byte stream is the same,
    /// and a peer that has gone answers the early byte with a reset ([`Session::probing`]).
    pub fn eof(&mut self, out: &mut Vec<u8>, srv: &Counters) -> Step {
        self.eof = true;
        if self.cfg.proto == Proto::Echo {
            self.closed = true;
            return Step::Close;
        }
        if let Pending::Sleep(_) = self.pending {
            let len0 = out.len();
            self.write_probe(out);
            self.count_out(out.len() - len0, srv);
        }
        self.resume(out, srv)
    }

    /// Writes the pending `SLEEP`'s first answer byte now (not counted here: the caller counts).
    fn write_probe(&mut self, out: &mut Vec<u8>) {
        if !self.probe {
            self.probe = true;
            out.push(self.probe_byte());
        }
    }

    /// The first byte of a `SLEEP`'s answer: `O` of `OK slept`, `H` of `HTTP/1.x`.
    fn probe_byte(&self) -> u8 {
        if self.cfg.proto == Proto::Http {
            b'H'
        } else {
            b'O'
        }
    }

    /// Answers the lines buffered so far (call after completing a deferred operation).
    pub fn resume(&mut self, out: &mut Vec<u8>, srv: &Counters) -> Step {
        match self.cfg.proto {
            Proto::Http => return self.resume_http(out, srv),
            Proto::Sockperf => return self.resume_sockperf(out, srv),
            Proto::Task | Proto::Echo => {}
        }
        loop {
            if self.closed {
                return Step::Close;
            }
            if self.pending != Pending::None {
                return Step::Pending;
            }
            let nl = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
            let (line_end, next) = match nl {
                Some(i) => {
                    let end = self.scanned + i;
                    (end, end + 1)
                }
                None => {
                    self.scanned = self.buf.len();
                    let held = self.buf.len() - self.start;
                    if held > self.cfg.max_line + 1 {
                        self.too_long(out, srv);
                        return Step::Close;
                    }
                    if self.eof {
                        if held == 0 {
                            self.closed = true;
                            return Step::Close;
                        }
                        // A final line without terminator.
                        (self.buf.len(), self.buf.len())
                    } else {
                        self.compact();
                        return Step::NeedInput;
                    }
                }
            };
            if out.len() >= self.out_limit {
                // Answer this line once the output has been written out.
                return Step::Flush;
            }
            let mut end = line_end;
            if end > self.start && self.buf[end - 1] == b'\r' {
                end -= 1;
            }
            if end - self.start > self.cfg.max_line {
                self.too_long(out, srv);
                return Step::Close;
            }
            let (start, len0) = (self.start, out.len());
            self.start = next;
            self.scanned = next;
            // Move the buffer out so the line can be borrowed while `self` is updated.
            let buf = std::mem::take(&mut self.buf);
            let step = self.execute(&buf[start..end], out, srv);
            self.buf = buf;
            self.count_out(out.len() - len0, srv);
            if let Some(s) = step {
                return s;
            }
        }
    }

    /// Completes a [`Step::Sleep`]: writes its response. Call [`Session::resume`] next.
    pub fn finish_sleep(&mut self, out: &mut Vec<u8>, srv: &Counters) {
        if let Pending::Sleep(ms) = self.pending {
            self.pending = Pending::None;
            let len0 = out.len();
            // After a probe, the `O` is already out.
            let skip = usize::from(std::mem::take(&mut self.probe));
            if self.cfg.proto == Proto::Http {
                self.http_finish(out, format_args!("slept {ms}ms"));
            } else {
                let _ = writeln!(out, "OK slept {ms}ms");
            }
            out.drain(len0..len0 + skip);
            self.count_out(out.len() - len0, srv);
        }
    }

    /// Completes a [`Step::Cpu`] with the job's result. Call [`Session::resume`] next.
    pub fn finish_cpu(&mut self, result: u64, out: &mut Vec<u8>, srv: &Counters) {
        if self.pending == Pending::Cpu {
            self.pending = Pending::None;
            let len0 = out.len();
            if self.cfg.proto == Proto::Http {
                self.http_finish(out, format_args!("{result:016x}"));
            } else {
                let _ = writeln!(out, "{result:016x}");
            }
            self.count_out(out.len() - len0, srv);
        }
    }

    /// Drives `step` to [`Step::NeedInput`] or [`Step::Close`] by completing deferred
    /// operations in place: `sleep` is called for a `SLEEP` (blocking models sleep the thread),
    /// CPU jobs run on the calling thread.
    pub(crate) fn complete_inline(
        &mut self,
        mut step: Step,
        out: &mut Vec<u8>,
        srv: &Counters,
        mut sleep: impl FnMut(Duration),
    ) -> Step {
        loop {
            match step {
                Step::Sleep(d) => {
                    sleep(d);
                    self.finish_sleep(out, srv);
                }
                Step::Cpu(job) => self.finish_cpu(job.run(), out, srv),
                s => return s,
            }
            step = self.resume(out, srv);
        }
    }

    fn count_out(&mut self, n: usize, srv: &Counters) {
        self.stats.bytes_out += n as u64;
        srv.add(BYTES_OUT, n as u64);
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
        } else if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
        }
        self.scanned -= self.start;
        self.start = 0;
        // Do not keep a huge buffer around after one long line.
        if self.buf.is_empty() && self.buf.capacity() > 2 * self.cfg.max_line.max(4096) {
            self.buf = Vec::new();
        }
    }

    fn too_long(&mut self, out: &mut Vec<u8>, srv: &Counters) {
        self.fail_and_close(out, srv, ErrorKind::TooLarge, format_args!("line too long"));
    }

    /// Answers the line held with `ERR msg` and closes, dropping the input.
    fn fail_and_close(
        &mut self,
        out: &mut Vec<u8>,
        srv: &Counters,
        kind: ErrorKind,
        msg: std::fmt::Arguments<'_>,
    ) {
        self.close_with(out, srv, |s, out| s.error(out, srv, kind, msg));
    }

    /// Counts one failed request, writes its answer with `answer`, closes and drops the input.
    fn close_with(
        &mut self,
        out: &mut Vec<u8>,
        srv: &Counters,
        answer: impl FnOnce(&mut Self, &mut Vec<u8>),
    ) {
        self.stats.requests += 1;
        srv.add(REQUESTS, 1);
        let len0 = out.len();
        answer(self, out);
        self.count_out(out.len() - len0, srv);
        self.closed = true;
        self.buf = Vec::new();
        self.start = 0;
        self.scanned = 0;
    }

    fn error(
        &mut self,
        out: &mut Vec<u8>,
        srv: &Counters,
        kind: ErrorKind,
        msg: std::fmt::Arguments<'_>,
    ) {
        self.count_error(srv, kind);
        let _ = writeln!(out, "ERR {msg}");
    }

    fn count_error(&mut self, srv: &Counters, kind: ErrorKind) {
        self.stats.errors += 1;
        srv.error(kind);
    }

    /// The `STATS` answer (without its line end): this connection's and the server's counters.
    fn write_stats(&self, out: &mut Vec<u8>, srv: &Counters) {
        let t = srv.snapshot();
        let s = self.stats;
        let _ = write!(
            out,
            "requests={} errors={} bytes_in={} bytes_out={} server_connections={} server_active={} server_requests={} server_errors={}",
            s.requests, s.errors, s.bytes_in, s.bytes_out, t.connections, t.active, t.requests, t.errors
        );
    }

    /// Runs one request line. Returns a step if the driver must act before the next line.
    fn execute(&mut self, line: &[u8], out: &mut Vec<u8>, srv: &Counters) -> Option<Step> {
        self.stats.requests += 1;
        srv.add(REQUESTS, 1);
        let req = match task::parse(line) {
            Ok(req) => req,
            Err(e) => {
                self.error(out, srv, ErrorKind::BadRequest, format_args!("{e}"));
                return None;
            }
        };
        match req {
            Request::Echo(text) => {
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            }
            Request::Upper(text) => task::write_upper(text, out),
            Request::Reverse(text) => task::write_reverse(text, out),
            Request::Sum(sum) => {
                let _ = writeln!(out, "{sum}");
            }
            Request::Hash(job) => {
                if job.rounds() > self.cfg.offload_rounds {
                    self.pending = Pending::Cpu;
                    return Some(Step::Cpu(job));
                }
                let _ = writeln!(out, "{:016x}", job.run());
            }
            Request::Sleep(0) => {
                let _ = writeln!(out, "OK slept 0ms");
            }
            Request::Sleep(ms) => {
                self.pending = Pending::Sleep(ms);
                if self.eof {
                    self.write_probe(out);
                }
                return Some(Step::Sleep(Duration::from_millis(ms)));
            }
            Request::Stats => {
                self.write_stats(out, srv);
                out.push(b'\n');
            }
            Request::Bye => {
                out.extend_from_slice(b"Goodbye!\n");
                self.closed = true;
                return Some(Step::Close);
            }
        }
        None
    }
}

mod http_session;
mod sockperf_session;

#[cfg(test)]
mod tests;
