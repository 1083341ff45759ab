//! [`Session`] speaking HTTP/1.1 ([`Proto::Http`](super::Proto::Http)): requests are framed
//! and answered by [`crate::proto::http`], in order, with the session's machinery around them:
//! `/sleep/MS` is the deferred [`Step::Sleep`], `/hash/ROUNDS` above the offload threshold a
//! [`Step::Cpu`], the output bound holds (a large `/bytes/N` body is written a piece at a
//! time, [`Step::Flush`] between pieces), an incomplete head is a partial line (the drivers'
//! line deadline answers it `408`), and an error that breaks the framing closes. The `Date` of
//! every answer is read once per batch: the requests answered in one call share it.

use std::fmt;
use std::io::Write;

use super::{Counters, Pending, Session, Step};
use crate::proto::http::{self, HttpDate, Parsed, Request, Route, Status};
use crate::proto::task::CpuJob;

/// What an HTTP session keeps between requests.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HttpState {
    /// The request a pending `/sleep` or `/hash` answers.
    pending: Option<Request>,
    /// The part of a `/bytes/N` body still to write, and its offset.
    body_left: u64,
    body_at: u64,
    /// Close once the body is out (the request did not keep the connection).
    close_after_body: bool,
}

impl Session {
    /// [`Session::resume`] for HTTP: answers the complete requests buffered.
    pub(super) fn resume_http(&mut self, out: &mut Vec<u8>, srv: &Counters) -> Step {
        // One clock read for the requests of this call, at the first one.
        let mut date: Option<HttpDate> = None;
        loop {
            if self.http.body_left > 0 && !self.write_body(out, srv) {
                return Step::Flush;
            }
            if self.closed {
                return Step::Close;
            }
            if self.pending != Pending::None {
                return Step::Pending;
            }
            if self.start == self.buf.len() || self.scanned == self.buf.len() {
                // Nothing held, or an incomplete request no new byte has been added to.
                return self.wait_for_input();
            }
            let parsed = http::parse_request(&self.buf[self.start..]);
            if !matches!(parsed, Parsed::Partial) && out.len() >= self.out_limit {
                return Step::Flush;
            }
            match parsed {
                Parsed::Partial => {
                    self.scanned = self.buf.len();
                    return self.wait_for_input();
                }
                Parsed::Invalid(status) => {
                    self.http_fail_and_close(out, srv, status);
                    return Step::Close;
                }
                Parsed::Request(req) => {
                    self.start += req.len;
                    self.scanned = self.start;
                    let len0 = out.len();
                    let date = date.get_or_insert_with(HttpDate::now);
                    let step = self.execute_http(req, out, srv, date);
                    self.count_out(out.len() - len0, srv);
                    if let Some(s) = step {
                        return s;
                    }
                }
            }
        }
    }

    /// Every complete request is answered: read more, or close after a half-close (an
    /// incomplete request then gets no answer). sockperf's framing shares it.
    pub(super) fn wait_for_input(&mut self) -> Step {
        if self.eof {
            self.closed = true;
            self.buf = Vec::new();
            self.start = 0;
            self.scanned = 0;
            return Step::Close;
        }
        self.compact();
        Step::NeedInput
    }

    /// Writes what the output bound leaves room for of a `/bytes/N` body; true when it is all
    /// out.
    fn write_body(&mut self, out: &mut Vec<u8>, srv: &Counters) -> bool {
        let room = self.out_limit.saturating_sub(out.len());
        let k = self.http.body_left.min(room as u64) as usize;
        http::write_pattern(out, self.http.body_at, k);
        self.count_out(k, srv);
        self.http.body_at += k as u64;
        self.http.body_left -= k as u64;
        if self.http.body_left > 0 {
            return false;
        }
        if std::mem::take(&mut self.http.close_after_body) {
            self.closed = true;
        }
        true
    }

    /// Answers `status` to input that is not a request and closes.
    pub(super) fn http_fail_and_close(
        &mut self,
        out: &mut Vec<u8>,
        srv: &Counters,
        status: Status,
    ) {
        self.close_with(out, srv, |s, out| {
            s.count_error(srv, error_kind(status));
            http::write_invalid(out, status);
        });
    }

    /// Completes the pending request with a `200` whose body is `body` and a line end.
    pub(super) fn http_finish(&mut self, out: &mut Vec<u8>, body: fmt::Arguments<'_>) {
        let Some(req) = self.http.pending.take() else {
            return;
        };
        let mut text = Vec::with_capacity(32);
        let _ = writeln!(text, "{body}");
        self.answer(out, &req, Status::Ok, &text, &HttpDate::now());
    }

    /// Writes a whole answer; closes when the request does not keep the connection.
    fn answer(
        &mut self,
        out: &mut Vec<u8>,
        req: &Request,
        status: Status,
        body: &[u8],
        date: &HttpDate,
    ) {
        http::write_response_at(out, req, status, body, date);
        if !http::keeps_open(req, status) {
            self.closed = true;
        }
    }

    /// Runs one request. Returns a step if the driver must act before the next request.
    fn execute_http(
        &mut self,
        req: Request,
        out: &mut Vec<u8>,
        srv: &Counters,
        date: &HttpDate,
    ) -> Option<Step> {
        self.stats.requests += 1;
        srv.add(super::REQUESTS, 1);
        match req.route {
            // No metrics are wired into `serve`.
            Err(_) | Ok(Route::Metrics) => {
                let status = req.route.err().unwrap_or(Status::NotFound);
                self.count_error(srv, error_kind(status));
                let mut body = status.reason().as_bytes().to_vec();
                body.push(b'\n');
                self.answer(out, &req, status, &body, date);
            }
            Ok(Route::Root) => self.answer(out, &req, Status::Ok, http::ROOT_BODY, date),
            Ok(Route::Bytes(n)) => {
                http::write_bytes_head(out, &req, n, date);
                if !req.head {
                    self.http.body_left = n;
                    self.http.body_at = 0;
                }
                if !http::keeps_open(&req, Status::Ok) {
                    if self.http.body_left > 0 {
                        self.http.close_after_body = true;
                    } else {
                        self.closed = true;
                    }
                }
            }
            Ok(Route::Sleep(0)) => self.answer(out, &req, Status::Ok, b"slept 0ms\n", date),
            Ok(Route::Sleep(ms)) => {
                self.pending = Pending::Sleep(ms);
                self.http.pending = Some(req);
                if self.eof {
                    self.write_probe(out);
                }
                return Some(Step::Sleep(std::time::Duration::from_millis(ms)));
            }
            Ok(Route::Hash { rounds, seed }) => {
                let job = CpuJob::new(seed, rounds);
                if rounds > self.cfg.offload_rounds {
                    self.pending = Pending::Cpu;
                    self.http.pending = Some(req);
                    return Some(Step::Cpu(job));
                }
                let body = format!("{:016x}\n", job.run());
                self.answer(out, &req, Status::Ok, body.as_bytes(), date);
            }
            Ok(Route::Stats) => {
                let mut body = Vec::with_capacity(200);
                self.write_stats(&mut body, srv);
                body.push(b'\n');
                self.answer(out, &req, Status::Ok, &body, date);
            }
        }
        // A body still to write is written by the caller's loop (within the output bound).
        (self.closed && self.http.body_left == 0).then_some(Step::Close)
    }
}

/// The error counter a failed request's status counts in.
fn error_kind(status: Status) -> super::ErrorKind {
    use super::ErrorKind;
    match status {
        Status::NotFound | Status::MethodNotAllowed => ErrorKind::NotFound,
        Status::TooLarge | Status::HeadersTooLarge => ErrorKind::TooLarge,
        Status::Timeout => ErrorKind::Timeout,
        Status::Ok | Status::BadRequest => ErrorKind::BadRequest,
    }
}
