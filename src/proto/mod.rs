//! The protocols the servers speak, as pure sans-IO cores side by side (`task`, `echo`, `http`,
//! `sockperf`), and the per-connection [`Session`] that frames a connection's bytes and drives
//! one of them: shared by every server model.
//!
//! A [`Session`] takes the bytes a connection received and appends the response bytes to an
//! output vector, returning a [`Step`] that tells the driver what to do next: read more, close,
//! or complete a deferred operation (a `SLEEP` timer, or a CPU job too big to run inline) and
//! then call [`Session::finish_sleep`] / [`Session::finish_cpu`] and [`Session::resume`]. The
//! session never touches a socket or a thread, so each concurrency model (blocking threads,
//! forked processes, the reactor) is only a driver around this one implementation. Its one
//! clock is HTTP's `Date` header: the wall clock's second, read once per batch of requests and
//! formatted once per second per thread ([`http::HttpDate::now`]).
//!
//! # The `task` protocol
//! One request per line (`\n` or `\r\n`; responses always end in `\n`), one response line per
//! request, answered strictly in request order (a pending `SLEEP` holds back the responses of
//! the lines pipelined after it). Verbs are case-insensitive; the argument is everything after
//! the first space.
//!
//! | request | response |
//! |---|---|
//! | `ECHO text` | `text` |
//! | `UPPER text` | `text` upper-cased (Unicode) |
//! | `REVERSE text` | `text` with its characters (Unicode scalar values) reversed |
//! | `SUM n…` | the sum of the i64 arguments (`0` for none); `ERR` on overflow or a non-integer |
//! | `HASH rounds text` | 16 hex digits of [`hash`]`(rounds, text)`; `1 <= rounds <= 10_000_000` |
//! | `SLEEP ms` | `OK slept {ms}ms` after `ms` milliseconds, `0 <= ms <= 60_000` |
//! | `STATS` | `requests=… errors=… bytes_in=… bytes_out=… server_connections=… server_active=… server_requests=… server_errors=…` |
//! | `BYE` | `Goodbye!`, then the server closes |
//!
//! Unknown verbs, bad arguments, empty lines and invalid UTF-8 get `ERR reason` and the connection
//! stays open. A line longer than the limit (default 64 KiB, without its terminator) gets
//! `ERR line too long` and the connection is closed. When the peer half-closes, the lines already
//! received are answered (a final line without a terminator counts as a line), then the session
//! closes.
//!
//! # The `echo` protocol
//! Raw bytes are echoed back unchanged, no framing; each chunk of input counts as a request.
//!
//! # The `http` protocol
//! HTTP/1.1 and 1.0 as [`http`] parses and answers it (routes and statuses in its docs), framed
//! by the session like the task protocol's lines: pipelined requests answered in order,
//! `/sleep/MS` and `/hash/ROUNDS` as the deferred steps of `SLEEP` and `HASH`. Every answer
//! carries `Date` (the requests answered in one call share one clock read).
//!
//! # The `sockperf` protocol
//! sockperf's messages (a 14-byte header: sequence, flags, length) framed by [`sockperf`]:
//! each pong request is answered with its own bytes, the client flag cleared, in order; warm-up
//! and other messages are read and not answered. A length that breaks the framing closes.

pub mod counters;
pub mod echo;
pub mod http;
pub mod http_client;
pub mod session;
pub mod sockperf;
pub mod task;

pub use counters::{Counters, Totals};
pub use session::{Proto, Session, SessionConfig, Step};
pub use task::{
    fnv1a64, hash, CpuJob, DEFAULT_MAX_LINE, DEFAULT_OFFLOAD_ROUNDS, MAX_HASH_ROUNDS, MAX_SLEEP_MS,
};
