//! The server's side of an iperf3 control connection, sans-IO: bytes from the client go in
//! ([`ServerCtl::input`]), events come out ([`ServerCtl::poll`]), and the driver's decisions
//! become bytes to write ([`ServerCtl::accept`], [`ServerCtl::create_streams`], ...).
//!
//! ```text
//! client                                   server
//!   cookie (37 bytes)     ------------->   Event::Cookie   -> accept() or deny()
//!                         <-------------   PARAM_EXCHANGE
//!   parameters (JSON)     ------------->   Event::Params   -> create_streams() or error()
//!                         <-------------   CREATE_STREAMS
//!   data connections / UDP handshakes (not on this connection) -> start()
//!                         <-------------   TEST_START, TEST_RUNNING
//!   TEST_END              ------------->   Event::TestEnd  -> exchange()
//!                         <-------------   EXCHANGE_RESULTS
//!   results (JSON)        ------------->   Event::ClientResults -> results(ours)
//!                         <-------------   results (JSON), DISPLAY_RESULTS
//!   IPERF_DONE            ------------->   Event::Done
//! ```
//! CLIENT_TERMINATE is taken in any state after the cookie (`Event::Terminated`). Anything
//! else out of turn is a [`ProtoError`], after which the machine takes no more input.

use super::msg::{read_json, write_json, Cookie, Inbox, Params, ProtoError, Results, State};
use super::msg::{COOKIE_LEN, MAX_PARAMS_JSON, MAX_RESULTS_JSON};

/// What the client said.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Cookie(Cookie),
    Params(Params),
    TestEnd,
    ClientResults(Results),
    Done,
    /// The client ended the test early (CLIENT_TERMINATE).
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Cookie,
    /// Cookie read; waiting for the driver's accept/deny.
    Accepting,
    Params,
    /// Parameters read; waiting for the driver to ask for streams.
    Checking,
    /// CREATE_STREAMS sent; the client sends nothing here but TEST_END/CLIENT_TERMINATE.
    Streams,
    Running,
    /// TEST_END read; waiting for the driver's exchange().
    Ending,
    ClientResults,
    /// Client results read; waiting for ours.
    OurResults,
    /// DISPLAY_RESULTS sent; waiting for IPERF_DONE.
    Done,
    Closed,
}

/// The server's control state machine. See the module documentation.
#[derive(Debug)]
pub struct ServerCtl {
    phase: Phase,
    buf: Inbox,
}

impl Default for ServerCtl {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCtl {
    pub fn new() -> Self {
        ServerCtl {
            phase: Phase::Cookie,
            buf: Inbox::new(4 + MAX_RESULTS_JSON),
        }
    }

    /// Bytes from the client. Input is buffered only up to what the current phase can take
    /// (a cookie, one bounded JSON frame, a state byte), so a flood is refused, not stored.
    pub fn input(&mut self, data: &[u8]) -> Result<(), ProtoError> {
        if self.phase == Phase::Closed {
            if data.is_empty() {
                return Ok(());
            }
            self.phase = Phase::Closed;
            return Err(ProtoError::Trailing);
        }
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
            Phase::Cookie => {
                let Some(b) = self.buf.bytes().get(..COOKIE_LEN) else {
                    return Ok(None);
                };
                let c = Cookie::parse(b)?;
                self.buf.take(COOKIE_LEN);
                self.phase = Phase::Accepting;
                Ok(Some(Event::Cookie(c)))
            }
            Phase::Params => {
                if self.peek_terminate()? {
                    return Ok(Some(Event::Terminated));
                }
                let Some((m, n)) = read_json(self.buf.bytes(), MAX_PARAMS_JSON)? else {
                    return Ok(None);
                };
                self.buf.take(n);
                let p = Params::from_json(&m)?;
                self.phase = Phase::Checking;
                Ok(Some(Event::Params(p)))
            }
            Phase::Streams | Phase::Running => {
                let Some(s) = self.state_byte()? else {
                    return Ok(None);
                };
                match s {
                    State::TestEnd => {
                        self.phase = Phase::Ending;
                        Ok(Some(Event::TestEnd))
                    }
                    State::ClientTerminate => {
                        self.phase = Phase::Closed;
                        Ok(Some(Event::Terminated))
                    }
                    other => Err(ProtoError::wrong(other, "TEST_END")),
                }
            }
            Phase::ClientResults => {
                if self.peek_terminate()? {
                    return Ok(Some(Event::Terminated));
                }
                let Some((m, n)) = read_json(self.buf.bytes(), MAX_RESULTS_JSON)? else {
                    return Ok(None);
                };
                self.buf.take(n);
                let r = Results::from_json(&m)?;
                self.phase = Phase::OurResults;
                Ok(Some(Event::ClientResults(r)))
            }
            Phase::Done => {
                let Some(s) = self.state_byte()? else {
                    return Ok(None);
                };
                match s {
                    State::IperfDone | State::ClientTerminate => {
                        self.phase = Phase::Closed;
                        Ok(Some(Event::Done))
                    }
                    other => Err(ProtoError::wrong(other, "IPERF_DONE")),
                }
            }
            // Waiting for the driver: nothing is read meanwhile.
            Phase::Accepting | Phase::Checking | Phase::Ending | Phase::OurResults => {
                if self.peek_terminate()? {
                    Ok(Some(Event::Terminated))
                } else {
                    Ok(None)
                }
            }
            Phase::Closed => Ok(None),
        }
    }

    /// A CLIENT_TERMINATE where a JSON frame would start (its length's first byte is 0 for any
    /// frame under 16 MiB, so the two cannot be confused).
    fn peek_terminate(&mut self) -> Result<bool, ProtoError> {
        if self.buf.bytes().first() == Some(&State::ClientTerminate.byte()) {
            self.phase = Phase::Closed;
            self.buf.clear();
            return Ok(true);
        }
        Ok(false)
    }

    fn state_byte(&mut self) -> Result<Option<State>, ProtoError> {
        let Some(b) = self.buf.pop() else {
            return Ok(None);
        };
        State::from_byte(b)
            .map(Some)
            .ok_or(ProtoError::UnknownState(b))
    }

    fn expect(&self, p: Phase, call: &str) {
        debug_assert_eq!(self.phase, p, "ServerCtl::{call} out of turn");
    }

    /// Takes the test (after [`Event::Cookie`]): writes PARAM_EXCHANGE.
    pub fn accept(&mut self, out: &mut Vec<u8>) {
        self.expect(Phase::Accepting, "accept");
        out.push(State::ParamExchange.byte());
        self.phase = Phase::Params;
    }

    /// Refuses the client (busy, or not allowed): writes ACCESS_DENIED. The driver closes.
    pub fn deny(&mut self, out: &mut Vec<u8>) {
        out.push(State::AccessDenied.byte());
        self.phase = Phase::Closed;
    }

    /// Parameters accepted and the data listener ready: writes CREATE_STREAMS.
    pub(crate) fn create_streams(&mut self, out: &mut Vec<u8>) {
        self.expect(Phase::Checking, "create_streams");
        out.push(State::CreateStreams.byte());
        self.phase = Phase::Streams;
    }

    /// Every stream is connected: writes TEST_START and TEST_RUNNING.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        self.expect(Phase::Streams, "start");
        out.push(State::TestStart.byte());
        out.push(State::TestRunning.byte());
        self.phase = Phase::Running;
    }

    /// After [`Event::TestEnd`]: writes EXCHANGE_RESULTS; the client's results come next.
    pub fn exchange(&mut self, out: &mut Vec<u8>) {
        self.expect(Phase::Ending, "exchange");
        out.push(State::ExchangeResults.byte());
        self.phase = Phase::ClientResults;
    }

    /// After [`Event::ClientResults`]: writes our results and DISPLAY_RESULTS.
    pub fn results(&mut self, ours: &Results, out: &mut Vec<u8>) {
        self.expect(Phase::OurResults, "results");
        write_json(out, &ours.to_json());
        out.push(State::DisplayResults.byte());
        self.phase = Phase::Done;
    }

    /// A server-side failure the client should print: SERVER_ERROR, then iperf3's error number
    /// and the errno, each a big-endian i32. `i_errno` 0 is taken by clients as "no message".
    pub fn error(&mut self, i_errno: i32, errno: i32, out: &mut Vec<u8>) {
        out.push(State::ServerError.byte());
        out.extend_from_slice(&i_errno.to_be_bytes());
        out.extend_from_slice(&errno.to_be_bytes());
        self.phase = Phase::Closed;
    }

    /// The test is being stopped by this side (Ctrl-C): writes SERVER_TERMINATE.
    pub fn terminate(&mut self, out: &mut Vec<u8>) {
        out.push(State::ServerTerminate.byte());
        self.phase = Phase::Closed;
    }

    /// True once the exchange is over (IPERF_DONE, a terminate, an error or a refusal).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// True while the test runs (TEST_RUNNING sent, TEST_END not yet read).
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }
}
