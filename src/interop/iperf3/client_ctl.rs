//! The client's side of an iperf3 control connection, sans-IO (netcore driving a stock
//! `iperf3 -s`). The mirror of [`super::server_ctl`]: the server's state bytes and results come in
//! ([`ClientCtl::input`] / [`ClientCtl::poll`]), and the driver answers with
//! [`ClientCtl::params`], [`ClientCtl::end`], [`ClientCtl::results`] and
//! [`ClientCtl::done`].
//!
//! ```text
//! hello(): cookie        ------------->
//!   Event::ParamExchange <-------------   PARAM_EXCHANGE   -> params()
//!   Event::CreateStreams <-------------   CREATE_STREAMS   -> connect the streams
//!   Event::TestStart     <-------------   TEST_START
//!   Event::TestRunning   <-------------   TEST_RUNNING     -> send (or receive) data
//!                                                          -> end(): TEST_END
//!   Event::ExchangeResults <-----------   EXCHANGE_RESULTS -> results(ours)
//!   Event::ServerResults <-------------   results (JSON)
//!   Event::DisplayResults <------------   DISPLAY_RESULTS  -> done(): IPERF_DONE
//! ```
//! ACCESS_DENIED, SERVER_ERROR (with its two error numbers) and SERVER_TERMINATE end the
//! exchange in any state.

use super::msg::{read_json, write_json, Cookie, Inbox, Params, ProtoError, Results, State};
use super::msg::{COOKIE_LEN, MAX_RESULTS_JSON};

/// What the server said.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ParamExchange,
    CreateStreams,
    TestStart,
    TestRunning,
    ExchangeResults,
    ServerResults(Results),
    DisplayResults,
    /// The server refused the test (busy, or not allowed).
    AccessDenied,
    /// The server failed: iperf3's error number and the errno.
    ServerError {
        i_errno: i32,
        errno: i32,
    },
    /// The server stopped the test (its Ctrl-C).
    ServerTerminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    States,
    /// EXCHANGE_RESULTS came; the server's results follow ours.
    Results,
    Closed,
}

/// The client's control state machine.
#[derive(Debug)]
pub struct ClientCtl {
    phase: Phase,
    buf: Inbox,
    /// The next state byte the server may send (PARAM_EXCHANGE first).
    next: State,
}

impl ClientCtl {
    /// A new exchange; writes the cookie, the first thing a client sends.
    pub fn hello(cookie: &Cookie, out: &mut Vec<u8>) -> ClientCtl {
        out.extend_from_slice(&cookie.0[..COOKIE_LEN]);
        ClientCtl {
            phase: Phase::States,
            buf: Inbox::new(4 + MAX_RESULTS_JSON + 16),
            next: State::ParamExchange,
        }
    }

    /// Bytes from the server (bounded: one results frame at most is ever buffered).
    pub fn input(&mut self, data: &[u8]) -> Result<(), ProtoError> {
        self.buf
            .push(data)
            .inspect_err(|_| self.phase = Phase::Closed)
    }

    /// The next event the buffered input makes, if any.
    pub fn poll(&mut self) -> Result<Option<Event>, ProtoError> {
        let r = self.step();
        if r.is_err() {
            self.phase = Phase::Closed;
            self.buf.clear();
        }
        r
    }

    fn step(&mut self) -> Result<Option<Event>, ProtoError> {
        match self.phase {
            Phase::Closed => Ok(None),
            Phase::Results => {
                let Some((m, n)) = read_json(self.buf.bytes(), MAX_RESULTS_JSON)? else {
                    return Ok(None);
                };
                self.buf.take(n);
                let r = Results::from_json(&m)?;
                self.phase = Phase::States;
                self.next = State::DisplayResults;
                Ok(Some(Event::ServerResults(r)))
            }
            Phase::States => {
                let Some(&b) = self.buf.bytes().first() else {
                    return Ok(None);
                };
                let s = State::from_byte(b).ok_or(ProtoError::UnknownState(b))?;
                if s == State::ServerError {
                    // The state byte, then two big-endian i32s.
                    let Some(e) = self.buf.bytes().get(1..9) else {
                        return Ok(None);
                    };
                    let i_errno = i32::from_be_bytes([e[0], e[1], e[2], e[3]]);
                    let errno = i32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                    self.buf.take(9);
                    self.phase = Phase::Closed;
                    return Ok(Some(Event::ServerError { i_errno, errno }));
                }
                self.buf.take(1);
                let ev = match s {
                    State::AccessDenied => {
                        self.phase = Phase::Closed;
                        return Ok(Some(Event::AccessDenied));
                    }
                    State::ServerTerminate => {
                        self.phase = Phase::Closed;
                        return Ok(Some(Event::ServerTerminate));
                    }
                    s if s != self.next => return Err(ProtoError::wrong(s, self.next.name())),
                    State::ParamExchange => Event::ParamExchange,
                    State::CreateStreams => Event::CreateStreams,
                    State::TestStart => Event::TestStart,
                    State::TestRunning => Event::TestRunning,
                    State::ExchangeResults => Event::ExchangeResults,
                    State::DisplayResults => Event::DisplayResults,
                    other => return Err(ProtoError::wrong(other, self.next.name())),
                };
                self.next = match s {
                    State::ParamExchange => State::CreateStreams,
                    State::CreateStreams => State::TestStart,
                    State::TestStart => State::TestRunning,
                    State::TestRunning => State::ExchangeResults,
                    // The server's results come after ours: see results().
                    _ => State::IperfDone,
                };
                Ok(Some(ev))
            }
        }
    }

    /// After [`Event::ParamExchange`]: writes the parameters.
    pub fn params(&mut self, p: &Params, out: &mut Vec<u8>) {
        write_json(out, &p.to_json());
    }

    /// The test's time is up (or its amount sent): writes TEST_END.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        out.push(State::TestEnd.byte());
    }

    /// After [`Event::ExchangeResults`]: writes our results; the server's come next.
    pub fn results(&mut self, ours: &Results, out: &mut Vec<u8>) {
        write_json(out, &ours.to_json());
        self.phase = Phase::Results;
    }

    /// After [`Event::DisplayResults`]: writes IPERF_DONE; the exchange is over.
    pub fn done(&mut self, out: &mut Vec<u8>) {
        out.push(State::IperfDone.byte());
        self.phase = Phase::Closed;
    }

    /// Stops the test early (Ctrl-C): writes CLIENT_TERMINATE.
    pub fn terminate(&mut self, out: &mut Vec<u8>) {
        out.push(State::ClientTerminate.byte());
        self.phase = Phase::Closed;
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
}
