//! The receiver's control state machine for one test (pure: no socket, no thread, the clock
//! comes in with every input). The control thread (`super::receiver`) feeds it what arrives
//! on the control connection, what the UDP thread reports, and a tick; it carries out the
//! actions the session queues (messages to send, commands for the UDP thread, events for the
//! caller) until [`Action::End`].
//!
//! ```text
//! Hello ─► Starting ─(UDP thread started)─► Ready sent, Running ─(Done)─► Finishing ─► Report
//!   every state has a deadline: Hello 5 s, start 5 s, first datagram 10 s + interval,
//!   silence 30 s (+ the planned time), the sender's Done 1 s after a stop request
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::echo::EchoJob;
use crate::flow::access::{self, Key, TestSecret, NONCE_LEN, OVERRUN_GRACE};
use crate::flow::control::{Msg, Plan, PROTOCOL_VERSION};
use crate::flow::cpu::CpuUsage;
use crate::flow::payload::TcpSpec;
use crate::flow::streams::{Dir, MAX_STREAMS};
use crate::flow::udp::recv_core::{Cmd, Out, TestParams};
use crate::flow::udp::report::{IntervalRow, SenderStats, UdpReport, SCHEMA};
use crate::flow::udp::wire::{HEADER_LEN, MAX_DATAGRAM};

/// How long each state may last.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From the connection to a Hello.
    pub hello: Duration,
    /// From Hello to the UDP thread having the test (then Ready goes out).
    pub start: Duration,
    /// From Ready to the first datagram (plus one of the receiver's intervals: progress is
    /// seen per limits check).
    pub first_datagram: Duration,
    /// No new datagram and no Done for this long (plus the planned time) ends the test.
    pub silence: Duration,
    /// After a stop request, how long the sender has to say Done (a sender in the same
    /// process does within a few milliseconds) before the test ends without it.
    pub stop_grace: Duration,
    /// The longest planned sending time a Hello may ask for (`--max-duration`); a test still
    /// running [`OVERRUN_GRACE`] past it is cut.
    pub max_plan: Duration,
    /// The most streams a test may have (`--max-streams`).
    pub max_streams: u16,
    /// The fastest a sender may send, in bits a second (`--max-rate`): an interval over it by
    /// more than [`RATE_SLACK`] cuts the test; a reverse test is sent at most at it.
    pub max_rate_bps: Option<f64>,
}

/// How far over `--max-rate` one interval may be (pacing is not exact over an interval).
pub(crate) const RATE_SLACK: f64 = 1.25;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hello: Duration::from_secs(5),
            start: Duration::from_secs(5),
            first_datagram: Duration::from_secs(10),
            silence: Duration::from_secs(30),
            stop_grace: Duration::from_secs(1),
            max_plan: Duration::from_secs(24 * 3600),
            max_streams: MAX_STREAMS,
            max_rate_bps: None,
        }
    }
}

/// What the receiver is and has, as the session needs it.
#[derive(Debug, Clone)]
pub struct SessionCtx {
    /// This host's name (a Hello from the same host compares one clock with itself).
    pub host: String,
    /// The peer's address is loopback.
    pub peer_loopback: bool,
    /// The receiver's address, for the report.
    pub target: String,
    /// The receiver's own interval (`--interval`): a test's unless its Setup asks for one.
    pub interval: Duration,
    pub rcvbuf: u64,
    pub gro: bool,
    pub limits: Limits,
    /// The shared key a sender must prove (`--auth-key-file`), and this connection's nonce.
    pub auth: Option<(Key, [u8; NONCE_LEN])>,
}

/// Something for the driver to do.
#[derive(Debug)]
pub enum Action {
    /// Send this on the control connection.
    Send(Msg),
    /// Give the UDP thread this command.
    Cmd(Cmd),
    /// The test started (Ready went out).
    Started {
        test_id: u64,
        len: u32,
    },
    Interval(IntervalRow),
    Finished(Box<UdpReport>),
    /// The test is TCP (`Setup` carried a spec): the driver runs it on this connection with
    /// `flow::tcp::server` and then ends the slot. The session is over.
    Tcp {
        test_id: u64,
        plan: Plan,
        spec: TcpSpec,
        /// The test's interval (its Setup's, or the receiver's own).
        interval: Duration,
    },
    /// The test is UDP the other way (`-R`): the driver sends it on this connection with
    /// `super::reverse::serve`. The session is over.
    UdpReverse(ReverseJob),
    /// The test is an echo of latency probes (`rpm`): the driver serves it on this connection
    /// with `super::echo::serve`. The session is over.
    Echo(EchoJob),
    /// The session is over: Ok, or why the test failed (after any report).
    End(Result<(), String>),
}

/// A reverse UDP test as its Hello and Setup asked for it.
#[derive(Debug, Clone, Copy)]
pub struct ReverseJob {
    pub test_id: u64,
    pub len: u32,
    pub plan: Plan,
    pub streams: u16,
    pub verify: bool,
    /// Bits per second of payload over all streams (None: unpaced).
    pub rate_bps: Option<f64>,
    /// Sending is cut this long after it started, whatever the plan (`--max-duration`).
    pub max_time: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHello,
    /// Hello taken, Challenge sent: the sender's Auth comes next.
    AwaitAuth,
    /// Hello taken (protocol 2): the Setup that says UDP or TCP comes next.
    AwaitSetup,
    Starting,
    Running,
    /// Finish was asked of the UDP thread; its result is awaited.
    Finishing,
    Ended,
}

#[derive(Debug, Clone)]
struct DoneInfo {
    sent: u64,
    bytes: u64,
    elapsed_ns: u64,
    errors: BTreeMap<String, u64>,
    pacing: Option<String>,
    cpu: Option<CpuUsage>,
    sndbuf_errors: Option<u64>,
}

/// One control connection's test, from Hello to Report.
#[derive(Debug)]
pub struct RecvSession {
    ctx: SessionCtx,
    state: State,
    since: Instant,
    test_id: u64,
    len: u32,
    verify: bool,
    plan: Plan,
    streams: u16,
    /// The UDP thread's parameters, from the Hello until Setup says UDP.
    params: Option<TestParams>,
    /// The test's interval: its Setup's, else the receiver's. (Progress is seen once per
    /// limits check, on the receiver's own interval.)
    interval: Duration,
    last_progress: (Instant, u64),
    prev_t: f64,
    prev_bytes: u64,
    prev_datagrams: u64,
    /// The time and bytes of the last limits check (`Out::Check`).
    checked: (f64, u64),
    intervals: Vec<IntervalRow>,
    done: Option<DoneInfo>,
    failure: Option<String>,
    stop_seen: Option<Instant>,
    finishing_since: Option<Instant>,
    interrupted: bool,
    conn_lost: bool,
    actions: Vec<Action>,
}

impl RecvSession {
    /// A session for a connection accepted at `now`.
    pub fn new(ctx: SessionCtx, now: Instant) -> RecvSession {
        RecvSession {
            interval: ctx.interval,
            ctx,
            state: State::AwaitHello,
            since: now,
            test_id: 0,
            len: 0,
            verify: false,
            plan: Plan::Count(0),
            streams: 1,
            params: None,
            last_progress: (now, 0),
            prev_t: 0.0,
            prev_bytes: 0,
            prev_datagrams: 0,
            checked: (0.0, 0),
            intervals: Vec::new(),
            done: None,
            failure: None,
            stop_seen: None,
            finishing_since: None,
            interrupted: false,
            conn_lost: false,
            actions: Vec::new(),
        }
    }

    /// Takes the actions queued so far, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Whether the session is over.
    pub fn ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Whether a Hello was taken (the receiver is then busy with this test).
    /// (Awaiting Setup counts: the Hello named the test.)
    pub(crate) fn has_test(&self) -> bool {
        !matches!(
            self.state,
            State::AwaitHello | State::AwaitAuth | State::Ended
        )
    }

    /// Whether a sender must prove the shared key (`--auth-key-file`) before its test is
    /// admitted.
    pub fn keyed(&self) -> bool {
        self.ctx.auth.is_some()
    }

    /// A keyed test's secret (the key and this connection's nonce), which its TCP data
    /// connections must prove; None without `--auth-key-file`. Meaningful once the key is
    /// proved (a test starts only then).
    pub fn secret(&self) -> Option<TestSecret> {
        let (key, nonce) = self.ctx.auth.as_ref()?;
        Some(TestSecret::new(key.clone(), self.test_id, *nonce))
    }

    /// The test id a Hello named (0 before one).
    pub fn test_id(&self) -> u64 {
        self.test_id
    }

    /// Whether the UDP thread has (or is being given) this test.
    fn udp_has_test(&self) -> bool {
        matches!(
            self.state,
            State::Starting | State::Running | State::Finishing
        )
    }

    fn end(&mut self, r: Result<(), String>) {
        self.state = State::Ended;
        self.actions.push(Action::End(r));
    }

    /// Refuses: tells the peer why (unless the connection is gone) and ends, stopping the
    /// UDP thread's test if it has one.
    pub fn refuse(&mut self, why: String) {
        if !self.conn_lost {
            self.actions.push(Action::Send(Msg::Error {
                message: why.clone(),
            }));
        }
        if self.udp_has_test() && self.state != State::Finishing {
            // The UDP thread ends the test; its result is dropped (nothing to report).
            self.actions.push(Action::Cmd(Cmd::Finish {
                test_id: self.test_id,
                sent: None,
            }));
        }
        self.end(Err(why));
    }

    /// Ends a running test now (no Done): the UDP thread reports what it has.
    fn cut_short(&mut self, failure: Option<String>) {
        if failure.is_some() {
            self.failure = failure;
        } else {
            self.interrupted = true;
        }
        self.actions.push(Action::Cmd(Cmd::Finish {
            test_id: self.test_id,
            sent: None,
        }));
        self.state = State::Finishing;
    }

    /// Checks a Hello; the parameters for the UDP thread or why it is refused.
    fn check_hello(&self, m: &Msg) -> Result<TestParams, String> {
        let Msg::Hello {
            version,
            test_id,
            plan,
            host,
            streams,
            auth,
            ..
        } = m
        else {
            return Err(format!("expected Hello, got {}", m.name()));
        };
        if *version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {version} not supported (this receiver speaks {PROTOCOL_VERSION})"
            ));
        }
        if let Plan::TimeNs(ns) = plan {
            if Duration::from_nanos(*ns) > self.ctx.limits.max_plan {
                return Err(format!(
                    "planned time of {:.0} s is over this receiver's limit of {} s (--max-duration)",
                    *ns as f64 / 1e9,
                    self.ctx.limits.max_plan.as_secs()
                ));
            }
        }
        check_streams(*streams, self.ctx.limits.max_streams)?;
        match (&self.ctx.auth, auth) {
            (Some(_), false) => {
                return Err(
                    "this receiver requires a shared key: run blast with --auth-key-file".into(),
                )
            }
            (None, true) => {
                return Err(
                    "this receiver has no --auth-key-file: run blast without --auth-key-file"
                        .into(),
                )
            }
            _ => {}
        }
        Ok(TestParams {
            test_id: *test_id,
            same_host: *host == self.ctx.host || self.ctx.peer_loopback,
            streams: 1,
            interval: self.ctx.interval,
            check_every: self.ctx.interval,
        })
    }

    /// Checks the test as its Setup makes it final against every limit (issue #25: a TCP
    /// Setup's streams got past `--max-streams`, and a test planned by count, paced so slowly
    /// that it would run for ever, past `--max-duration`): `streams` per direction, `len`
    /// bytes a datagram or write, `client_bps` the rate the client asks to send at (a TCP
    /// spec's), `server_bps` the rate this side will send at (a reverse test's, after the
    /// `--max-rate` cap; None: unpaced).
    fn check_final(
        &self,
        streams: u16,
        len: u32,
        client_bps: Option<f64>,
        server_bps: Option<f64>,
    ) -> Result<(), String> {
        let l = &self.ctx.limits;
        check_streams(streams, l.max_streams)?;
        if let (Some(asked), Some(max)) = (client_bps, l.max_rate_bps) {
            if asked > max {
                return Err(format!(
                    "the test asks to send at {}, over this receiver's limit of {} (--max-rate)",
                    crate::units::fmt_bits_per_sec(asked),
                    crate::units::fmt_bits_per_sec(max)
                ));
            }
        }
        let bps = server_bps.or(client_bps);
        if let (Plan::Count(n), Some(bps)) = (self.plan, bps) {
            let secs = n as f64 * f64::from(len) * 8.0 / bps;
            if secs > l.max_plan.as_secs_f64() {
                return Err(format!(
                    "{n} x {len} bytes at {} take {secs:.3e} s, over this receiver's limit of {} s (--max-duration)",
                    crate::units::fmt_bits_per_sec(bps),
                    l.max_plan.as_secs_f64()
                ));
            }
        }
        Ok(())
    }

    /// [`RecvSession::check_final`] for a TCP test: its spec's streams and write size, the
    /// rate it asks its client to send at, the rate this side sends at (capped at
    /// `--max-rate`) when it sends.
    fn check_tcp(&self, spec: &TcpSpec) -> Result<(), String> {
        spec.check()?;
        let dirs = spec.directions();
        let rate = spec.rate_bps.map(|r| r as f64);
        let client = rate.filter(|_| dirs.contains(&Dir::Up));
        let server =
            dirs.contains(&Dir::Down)
                .then(|| match (rate, self.ctx.limits.max_rate_bps) {
                    (Some(r), Some(m)) => Some(r.min(m)),
                    (r, m) => r.or(m),
                });
        // Both ways: the slower side sets the time.
        let bps = match (client, server.flatten()) {
            (Some(c), Some(s)) => Some(c.min(s)),
            (c, s) => c.or(s),
        };
        self.check_final(spec.streams, spec.len, client, bps)
    }

    /// Checks what only a UDP test needs of its Hello (a TCP test's `len` is its write size).
    fn check_udp(&self) -> Result<(), String> {
        let len = self.len;
        if !(HEADER_LEN..=MAX_DATAGRAM).contains(&(len as usize)) {
            return Err(format!("datagram length {len} out of range"));
        }
        if self.streams == 0 || self.streams > MAX_STREAMS {
            return Err(format!(
                "{} UDP streams requested: use 1..={MAX_STREAMS}",
                self.streams
            ));
        }
        Ok(())
    }

    /// The per-stream counts of a Done: its `streams` (one per stream, adding up to `sent`),
    /// or `[sent]` for a one-stream test that leaves them out.
    fn per_stream(&self, sent: u64, streams: Vec<u64>) -> Result<Vec<u64>, String> {
        if streams.is_empty() && self.streams == 1 {
            return Ok(vec![sent]);
        }
        if streams.len() != self.streams as usize {
            return Err(format!(
                "Done counts {} streams, the test has {}",
                streams.len(),
                self.streams
            ));
        }
        let total = streams.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        if total != Some(sent) {
            return Err(format!(
                "Done's per-stream counts do not add up to its {sent} datagrams"
            ));
        }
        Ok(streams)
    }

    /// A reverse test's rate: the client's, at most `--max-rate`.
    fn reverse_rate_bps(&self, asked: Option<f64>) -> Option<f64> {
        match (asked, self.ctx.limits.max_rate_bps) {
            (Some(r), Some(cap)) => Some(r.min(cap)),
            (r, None) => r,
            (None, cap) => cap,
        }
    }

    /// Checks an interval's figures against the limits a sender cannot exceed: why to cut
    /// the test, if so.
    fn over_limits(&self, row: &IntervalRow, datagrams: u64) -> Option<String> {
        if let Plan::Count(n) = self.plan {
            if datagrams > n {
                return Some(format!(
                    "cut: {datagrams} datagrams arrived, more than the {n} planned"
                ));
            }
        }
        let max = self.ctx.limits.max_rate_bps?;
        // At least 64 KiB over the interval: a burst of a few datagrams is not a rate.
        let bytes = row.received_bps * (row.t - row.start) / 8.0;
        if row.received_bps > max * RATE_SLACK && bytes > 65536.0 {
            return Some(format!(
                "cut: the sender sent at {}, over this receiver's limit of {} (--max-rate)",
                crate::units::fmt_bits_per_sec(row.received_bps),
                crate::units::fmt_bits_per_sec(max)
            ));
        }
        None
    }

    /// Checks a Done against the test: the figures must be possible.
    fn check_done(&self, sent: u64, bytes: u64, elapsed_ns: u64) -> Result<(), String> {
        if let Plan::Count(n) = self.plan {
            if sent > n {
                return Err(format!(
                    "Done says {sent} datagrams were sent, more than the {n} planned"
                ));
            }
        }
        if sent.checked_mul(self.len as u64) != Some(bytes) {
            return Err(format!(
                "Done says {sent} datagrams of {} bytes but {bytes} bytes",
                self.len
            ));
        }
        // A datagram takes the kernel well over a nanosecond: 10^9 a second is beyond any
        // sender (1 ms of slack for a short test).
        if sent > elapsed_ns.saturating_add(1_000_000) {
            return Err(format!(
                "Done says {sent} datagrams in {elapsed_ns} ns, over 10^9 a second"
            ));
        }
        Ok(())
    }

    /// A message from the sender arrived at `now`.
    pub fn on_msg(&mut self, msg: Msg, now: Instant) {
        match self.state {
            State::AwaitHello => self.on_hello(msg, now),
            State::AwaitAuth => self.on_auth(msg, now),
            State::AwaitSetup => self.on_setup(msg, now),
            State::Starting => {
                self.refuse(format!("{} before Ready", msg.name()));
            }
            State::Running => self.on_running(msg),
            // After Done the sender only waits; anything it says is ignored.
            State::Finishing | State::Ended => {}
        }
    }

    /// The first message: a Hello within the limits takes the test's parameters, then a
    /// Challenge (with a key) or the Setup is awaited.
    fn on_hello(&mut self, msg: Msg, now: Instant) {
        match self.check_hello(&msg) {
            Ok(p) => {
                if let Msg::Hello {
                    test_id,
                    len,
                    plan,
                    verify,
                    streams,
                    ..
                } = msg
                {
                    (self.test_id, self.len, self.plan, self.verify) = (test_id, len, plan, verify);
                    self.streams = streams;
                }
                self.params = Some(p);
                self.since = now;
                match &self.ctx.auth {
                    Some((_, nonce)) => {
                        self.actions.push(Action::Send(Msg::Challenge {
                            nonce: access::hex(nonce),
                        }));
                        self.state = State::AwaitAuth;
                    }
                    None => self.state = State::AwaitSetup,
                }
            }
            Err(why) => self.refuse(why),
        }
    }

    /// The answer to the Challenge: the key proved, or the test refused.
    fn on_auth(&mut self, msg: Msg, now: Instant) {
        match (msg, &self.ctx.auth) {
            (Msg::Auth { mac }, Some((key, nonce))) => {
                if access::verify(key.bytes(), self.test_id, nonce, &mac) {
                    self.state = State::AwaitSetup;
                    self.since = now;
                } else {
                    self.refuse("authentication failed: wrong key (--auth-key-file)".into());
                }
            }
            (other, _) => self.refuse(format!("expected Auth, got {}", other.name())),
        }
    }

    /// The Setup: a UDP test starts in the UDP thread; a reverse UDP test, a TCP test and an
    /// echo of latency probes are handed on (the session ends there).
    fn on_setup(&mut self, msg: Msg, now: Instant) {
        if let Msg::Setup {
            interval_ns: Some(ns),
            ..
        } = msg
        {
            // The codec has checked its range (`control::check_interval`).
            self.interval = Duration::from_nanos(ns);
        }
        match msg {
            Msg::Setup {
                tcp: None,
                reverse: None,
                echo: Some(e),
                ..
            } => {
                self.actions.push(Action::Echo(EchoJob {
                    test_id: self.test_id,
                    plan: self.plan,
                    rate: e.rate,
                }));
                self.state = State::Ended;
            }
            Msg::Setup {
                tcp: None,
                reverse: Some(r),
                echo: None,
                ..
            } => match self.check_udp().and_then(|()| {
                let bps = self.reverse_rate_bps(r.rate_bps);
                self.check_final(self.streams, self.len, None, bps)
            }) {
                Ok(()) => {
                    self.actions.push(Action::UdpReverse(ReverseJob {
                        test_id: self.test_id,
                        len: self.len,
                        plan: self.plan,
                        streams: self.streams,
                        verify: self.verify,
                        rate_bps: self.reverse_rate_bps(r.rate_bps),
                        max_time: self.ctx.limits.max_plan,
                    }));
                    self.state = State::Ended;
                }
                Err(why) => self.refuse(why),
            },
            Msg::Setup {
                tcp: None,
                reverse: None,
                echo: None,
                ..
            } => match (self.check_udp(), self.params.take()) {
                (Ok(()), Some(mut p)) => {
                    p.streams = self.streams;
                    p.interval = self.interval;
                    self.state = State::Starting;
                    self.since = now;
                    self.actions.push(Action::Cmd(Cmd::Start(p)));
                }
                (Err(why), _) => self.refuse(why),
                (Ok(()), None) => self.refuse("Setup without a Hello".into()),
            },
            Msg::Setup {
                tcp: Some(spec), ..
            } => match self.check_tcp(&spec) {
                Ok(()) => {
                    self.actions.push(Action::Tcp {
                        test_id: self.test_id,
                        plan: self.plan,
                        spec,
                        interval: self.interval,
                    });
                    self.state = State::Ended;
                }
                Err(why) => self.refuse(why),
            },
            Msg::Setup { .. } => {
                self.refuse("a Setup asks for one test: a reverse UDP test or an echo".into())
            }
            other => self.refuse(format!("expected Setup, got {}", other.name())),
        }
    }

    /// During the test: the sender's Done (checked, then the UDP thread is told to finish), or
    /// its Error.
    fn on_running(&mut self, msg: Msg) {
        match msg {
            Msg::Done {
                sent,
                bytes,
                elapsed_ns,
                errors,
                interrupted,
                pacing,
                cpu,
                streams,
                sndbuf_errors,
            } => {
                let per_stream = match self
                    .check_done(sent, bytes, elapsed_ns)
                    .and_then(|()| self.per_stream(sent, streams))
                {
                    Ok(p) => p,
                    Err(why) => return self.refuse(format!("Done refused: {why}")),
                };
                self.interrupted |= interrupted;
                self.done = Some(DoneInfo {
                    sent,
                    bytes,
                    elapsed_ns,
                    errors,
                    pacing,
                    cpu,
                    sndbuf_errors,
                });
                self.actions.push(Action::Cmd(Cmd::Finish {
                    test_id: self.test_id,
                    sent: Some(per_stream),
                }));
                self.state = State::Finishing;
            }
            // The peer gave up (with -R: the side that sends) and says why.
            Msg::Error { message } => self.refuse(format!("the peer gave up: {message}")),
            other => self.refuse(format!(
                "unexpected control message {} during the test",
                other.name()
            )),
        }
    }

    /// The control connection failed or closed (`why`).
    pub fn on_control_lost(&mut self, why: String, _now: Instant) {
        self.conn_lost = true;
        match self.state {
            State::AwaitHello | State::AwaitAuth | State::AwaitSetup | State::Starting => {
                self.refuse(why)
            }
            State::Running => {
                self.cut_short(Some(format!("control channel lost before Done: {why}")))
            }
            State::Finishing | State::Ended => {}
        }
    }

    /// News from the UDP thread.
    pub fn on_udp(&mut self, out: Out, now: Instant) {
        match out {
            Out::Started if self.state == State::Starting => {
                self.state = State::Running;
                self.since = now;
                self.last_progress = (now, 0);
                self.actions.push(Action::Send(Msg::Ready {
                    rcvbuf: self.ctx.rcvbuf,
                    gro: self.ctx.gro,
                    port: None,
                }));
                self.actions.push(Action::Started {
                    test_id: self.test_id,
                    len: self.len,
                });
            }
            Out::Started => {}
            Out::Failed(why) => {
                if self.udp_has_test() {
                    self.state = State::Ended; // the UDP thread has no test any more
                    if !self.conn_lost {
                        self.actions.push(Action::Send(Msg::Error {
                            message: why.clone(),
                        }));
                    }
                    self.actions.push(Action::End(Err(why)));
                }
            }
            Out::Interval {
                t,
                datagrams,
                bytes,
                lost_so_far,
            } => self.on_interval(t, datagrams, bytes, lost_so_far, now),
            Out::Check {
                t,
                datagrams,
                bytes,
            } => self.on_check(t, datagrams, bytes, now),
            Out::Finished(stats) => {
                if self.state != State::Finishing {
                    return;
                }
                let mut stats = stats;
                stats.interrupted |= self.interrupted;
                let report = self.report(&stats);
                if self.failure.is_none() && !self.conn_lost {
                    // With the threads and the verdict the receiver concluded.
                    self.actions.push(Action::Send(Msg::Report {
                        receiver: Box::new(report.receiver.clone()),
                    }));
                }
                self.actions.push(Action::Finished(Box::new(report)));
                let r = match self.failure.take() {
                    Some(f) => Err(f),
                    None => Ok(()),
                };
                self.end(r);
            }
        }
    }

    /// The UDP thread's interval figures: a row for the caller and the sender, progress for
    /// the silence deadline.
    fn on_interval(&mut self, t: f64, datagrams: u64, bytes: u64, lost_so_far: u64, now: Instant) {
        if !matches!(self.state, State::Running | State::Finishing) {
            return;
        }
        let row = IntervalRow {
            start: self.prev_t,
            t,
            sent: 0,
            sent_bps: 0.0,
            received: datagrams,
            received_bps: bytes.saturating_sub(self.prev_bytes) as f64 * 8.0
                / (t - self.prev_t).max(1e-9),
            lost_so_far,
            interval_sent: 0,
            interval_received: datagrams.saturating_sub(self.prev_datagrams),
        };
        self.intervals.push(row);
        (self.prev_t, self.prev_bytes, self.prev_datagrams) = (t, bytes, datagrams);
        if datagrams > self.last_progress.1 {
            self.last_progress = (now, datagrams);
        }
        if self.failure.is_none() && !self.conn_lost {
            self.actions.push(Action::Send(Msg::Interval {
                t,
                datagrams,
                bytes,
                lost_so_far,
            }));
        }
        self.actions.push(Action::Interval(row));
    }

    /// The UDP thread's totals on the receiver's cadence: progress for the silence deadline,
    /// the limits checked (`--max-rate`, the plan's count) since the last check.
    fn on_check(&mut self, t: f64, datagrams: u64, bytes: u64, now: Instant) {
        if !matches!(self.state, State::Running | State::Finishing) {
            return;
        }
        if datagrams > self.last_progress.1 {
            self.last_progress = (now, datagrams);
        }
        let (start, before) = std::mem::replace(&mut self.checked, (t, bytes));
        let row = IntervalRow {
            start,
            t,
            received: datagrams,
            received_bps: bytes.saturating_sub(before) as f64 * 8.0 / (t - start).max(1e-9),
            ..IntervalRow::default()
        };
        if self.state == State::Running && self.failure.is_none() {
            if let Some(why) = self.over_limits(&row, datagrams) {
                self.cut_with(why);
            }
        }
    }

    fn report(&self, stats: &crate::flow::payload::ReceiverStats) -> UdpReport {
        let sender = match &self.done {
            Some(d) => {
                let secs = d.elapsed_ns as f64 / 1e9;
                SenderStats {
                    sent: d.sent,
                    bytes: d.bytes,
                    elapsed_s: secs,
                    rate_bps: if secs > 0.0 {
                        d.bytes as f64 * 8.0 / secs
                    } else {
                        0.0
                    },
                    pps: if secs > 0.0 {
                        d.sent as f64 / secs
                    } else {
                        0.0
                    },
                    errors: d.errors.clone(),
                    pacing: d.pacing.clone(),
                    cpu_usage: d.cpu,
                    sndbuf_errors: d.sndbuf_errors,
                    ..Default::default()
                }
            }
            // No Done: the sender's figures are unknown; what the receiver infers (the highest
            // sequence number seen + 1, its bytes) stands in, over the receiver's time.
            None => {
                let sent = stats.accounting.sent;
                let bytes = sent.saturating_mul(self.len as u64);
                let secs = stats.duration_s;
                SenderStats {
                    sent,
                    bytes,
                    elapsed_s: secs,
                    rate_bps: if secs > 0.0 {
                        bytes as f64 * 8.0 / secs
                    } else {
                        0.0
                    },
                    pps: if secs > 0.0 { sent as f64 / secs } else { 0.0 },
                    pacing: Some("unknown (no Done from the sender)".into()),
                    ..Default::default()
                }
            }
        };
        let mut report = UdpReport {
            schema: SCHEMA.into(),
            meta: crate::stats::meta::Meta::gather(),
            role: "receiver".into(),
            test_id: format!("{:016x}", self.test_id),
            len: self.len,
            verify: self.verify,
            target: self.ctx.target.clone(),
            sender,
            receiver: stats.clone(),
            intervals: self.intervals.clone(),
        };
        report.conclude(self.ctx.peer_loopback);
        report
    }

    /// Ends a running test now for `why`, telling the sender (the receiver's report, marked
    /// interrupted, still comes out).
    fn cut_with(&mut self, why: String) {
        if !self.conn_lost {
            self.actions.push(Action::Send(Msg::Error {
                message: why.clone(),
            }));
        }
        self.cut_short(Some(why));
    }

    /// Time passes (`now`); `stop`: the receiver is stopping (no new test starts);
    /// `interrupt`: running tests are to end now (after the sender's grace to say Done).
    pub fn on_tick(&mut self, now: Instant, stop: bool, interrupt: bool) {
        let l = self.ctx.limits;
        match self.state {
            State::AwaitAuth if now.duration_since(self.since) >= l.hello => self.refuse(format!(
                "no Auth within {} s of the Challenge",
                l.hello.as_secs()
            )),
            State::AwaitAuth if stop => self.refuse("the receiver is stopping".into()),
            State::AwaitHello if now.duration_since(self.since) >= l.hello => {
                self.refuse(format!("no Hello within {} s", l.hello.as_secs()))
            }
            State::AwaitHello if stop => self.refuse("the receiver is stopping".into()),
            State::AwaitSetup if now.duration_since(self.since) >= l.hello => self.refuse(format!(
                "no Setup within {} s of the Hello",
                l.hello.as_secs()
            )),
            State::AwaitSetup if stop => self.refuse("the receiver is stopping".into()),
            State::Starting if now.duration_since(self.since) >= l.start => {
                self.refuse("the receive thread did not start the test".into())
            }
            State::Running => {
                if interrupt {
                    let seen = *self.stop_seen.get_or_insert(now);
                    if now.duration_since(seen) >= l.stop_grace {
                        return self.cut_short(None);
                    }
                }
                let planned = match self.plan {
                    Plan::TimeNs(ns) => Duration::from_nanos(ns),
                    Plan::Count(_) => Duration::ZERO,
                };
                let running = now.duration_since(self.since);
                if self.done.is_none() && running > l.max_plan + OVERRUN_GRACE {
                    return self.cut_with(format!(
                        "cut: the sender kept sending past this receiver's limit of {} s (--max-duration)",
                        l.max_plan.as_secs_f64()
                    ));
                }
                let first = l.first_datagram + self.ctx.interval;
                if self.last_progress.1 == 0 && running >= first {
                    let why = format!("no datagram arrived within {:.0} s", first.as_secs_f64());
                    if !self.conn_lost {
                        self.actions.push(Action::Send(Msg::Error {
                            message: why.clone(),
                        }));
                    }
                    return self.cut_short(Some(why));
                }
                let limit = l.silence + planned + self.ctx.interval;
                if now.duration_since(self.last_progress.0) > limit && running > limit {
                    let why = "the sender went silent (no datagrams and no Done)".to_string();
                    if !self.conn_lost {
                        self.actions.push(Action::Send(Msg::Error {
                            message: why.clone(),
                        }));
                    }
                    self.cut_short(Some(why));
                }
            }
            State::Finishing => {
                // The UDP thread ends a test within 8 drains; past this it is not coming.
                let since = *self.finishing_since.get_or_insert(now);
                if now.duration_since(since) >= l.silence {
                    self.end(Err("the receive thread did not finish the test".into()));
                }
            }
            _ => {}
        }
    }

    /// Whether the control connection should be read (a message may change the state).
    pub fn reading(&self) -> bool {
        !self.conn_lost
            && matches!(
                self.state,
                State::AwaitHello
                    | State::AwaitAuth
                    | State::AwaitSetup
                    | State::Starting
                    | State::Running
            )
    }

    /// The peer sent something that is not a control message (`why`): it is told so.
    pub fn on_bad_input(&mut self, why: String, _now: Instant) {
        match self.state {
            State::AwaitHello | State::AwaitAuth | State::AwaitSetup | State::Starting => {
                self.refuse(why)
            }
            State::Running => self.refuse(format!("bad control message during the test: {why}")),
            State::Finishing | State::Ended => {}
        }
    }

    /// Another connection asked for a test while `running` tests hold the receiver.
    pub(crate) fn busy_message(running: usize) -> Msg {
        Msg::Error {
            message: format!("receiver is busy ({running} tests running)"),
        }
    }
}

/// Refuses more streams than `--max-streams` (a number past the protocol's range too: the
/// test's own check names that range, but no test may get past the limit without a check).
fn check_streams(streams: u16, max: u16) -> Result<(), String> {
    if streams > max {
        return Err(format!(
            "{streams} streams requested, over this receiver's limit of {max} (--max-streams)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::streams::Mode;

    fn session(streams: u16) -> RecvSession {
        let t0 = Instant::now();
        let mut s = RecvSession::new(ctx_with(Limits::default(), None), t0);
        s.on_msg(
            Msg::Hello {
                version: PROTOCOL_VERSION,
                test_id: 1,
                len: 100,
                plan: Plan::Count(100),
                streams,
                verify: false,
                host: "h".into(),
                auth: false,
            },
            t0,
        );
        s.on_msg(
            Msg::Setup {
                tcp: None,
                reverse: None,
                echo: None,
                interval_ns: None,
            },
            t0,
        );
        s
    }

    fn actions(s: &mut RecvSession) -> Vec<String> {
        s.take_actions().iter().map(|a| format!("{a:?}")).collect()
    }

    /// An echo Setup hands the test to the echo driver with the Hello's id and plan; a Setup
    /// asking for two tests is refused.
    #[test]
    fn an_echo_setup_is_an_echo_job() {
        let echo = Some(crate::flow::control::EchoSpec {
            len: 64,
            rate: 100.0,
        });
        for (reverse, want) in [
            (
                None,
                "Echo(EchoJob { test_id: 9, plan: TimeNs(1000), rate: 100.0 })",
            ),
            (
                Some(crate::flow::control::Reverse { rate_bps: None }),
                "a Setup asks for one test",
            ),
        ] {
            let t0 = Instant::now();
            let mut s = RecvSession::new(ctx_with(Limits::default(), None), t0);
            s.on_msg(hello_msg(1, Plan::TimeNs(1000), false), t0);
            s.on_msg(
                Msg::Setup {
                    tcp: None,
                    reverse,
                    echo,
                    interval_ns: None,
                },
                t0,
            );
            let got = actions(&mut s).join(" ");
            assert!(got.contains(want), "{got}");
            assert!(s.ended(), "{got}");
        }
    }

    /// A Setup's interval is the test's: the UDP thread's and a TCP job's; without one, the
    /// receiver's own (#27 follow-up: a `--to` receiver sampled at its own).
    #[test]
    fn the_setup_interval_is_the_tests() {
        let ms = Duration::from_millis;
        for (asked, tcp, want) in [
            (Some(200), false, ms(200)),
            (None, false, ms(1000)),
            (Some(300), true, ms(300)),
            (None, true, ms(1000)),
        ] {
            let t0 = Instant::now();
            let mut s = RecvSession::new(ctx_with(Limits::default(), None), t0);
            s.on_msg(hello_msg(1, Plan::TimeNs(1000), false), t0);
            s.on_msg(
                Msg::Setup {
                    tcp: tcp.then(|| TcpSpec::plain(1, Mode::Reverse, 1000)),
                    reverse: None,
                    echo: None,
                    interval_ns: asked.map(|a| a * 1_000_000),
                },
                t0,
            );
            let got = match s.take_actions().pop() {
                Some(Action::Cmd(Cmd::Start(p))) => p.interval,
                Some(Action::Tcp { interval, .. }) => interval,
                other => panic!("{asked:?} {tcp}: {other:?}"),
            };
            assert_eq!(got, want, "{asked:?} {tcp}");
        }
    }

    fn done(sent: u64, streams: Vec<u64>) -> Msg {
        Msg::Done {
            sent,
            bytes: sent * 100,
            elapsed_ns: 1_000_000_000,
            errors: BTreeMap::new(),
            cpu: None,
            interrupted: false,
            pacing: None,
            streams,
            sndbuf_errors: None,
        }
    }

    fn running(streams: u16) -> RecvSession {
        let mut s = session(streams);
        let a = actions(&mut s);
        assert!(a[0].contains(&format!("streams: {streams}")), "{a:?}");
        s.on_udp(Out::Started, Instant::now());
        s.take_actions();
        s
    }

    #[test]
    fn udp_streams_out_of_range_are_refused() {
        for n in [0, MAX_STREAMS + 1] {
            let mut s = session(n);
            let a = actions(&mut s);
            // 0: the protocol's range; over it: the receiver's limit, checked first.
            assert!(a.iter().any(|x| x.contains(" streams requested")), "{a:?}");
            assert!(s.ended());
        }
    }

    #[test]
    fn done_carries_a_count_per_stream() {
        let mut s = running(3);
        s.on_msg(done(100, vec![34, 33, 33]), Instant::now());
        let a = actions(&mut s);
        assert!(a[0].contains("Some([34, 33, 33])"), "{a:?}");

        let mut s = running(1);
        s.on_msg(done(100, Vec::new()), Instant::now());
        assert!(actions(&mut s)[0].contains("Some([100])"));

        for (sent, per) in [(100, vec![50, 50]), (100, vec![]), (100, vec![1, 2, 3])] {
            let mut s = running(3);
            s.on_msg(done(sent, per.clone()), Instant::now());
            let a = actions(&mut s);
            assert!(a[0].contains("Done refused"), "{per:?}: {a:?}");
        }
        let mut s = running(2);
        s.on_msg(done(100, vec![u64::MAX, 101]), Instant::now());
        assert!(actions(&mut s)[0].contains("do not add up"));
    }

    #[test]
    fn an_error_from_the_peer_ends_the_test_with_its_reason() {
        let mut s = running(1);
        s.on_msg(
            Msg::Error {
                message: "no opener datagram".into(),
            },
            Instant::now(),
        );
        let a = actions(&mut s);
        assert!(s.ended());
        assert!(
            a.iter()
                .any(|x| x.contains("End(Err(\"the peer gave up: no opener datagram\"))")),
            "{a:?}"
        );
    }

    fn ctx_with(limits: Limits, auth: Option<(Key, [u8; NONCE_LEN])>) -> SessionCtx {
        SessionCtx {
            host: "h".into(),
            peer_loopback: true,
            target: "127.0.0.1:1".into(),
            interval: Duration::from_secs(1),
            rcvbuf: 1,
            gro: false,
            limits,
            auth,
        }
    }

    fn hello_msg(streams: u16, plan: Plan, auth: bool) -> Msg {
        Msg::Hello {
            version: PROTOCOL_VERSION,
            test_id: 9,
            len: 100,
            plan,
            streams,
            verify: false,
            host: "h".into(),
            auth,
        }
    }

    #[test]
    fn the_key_is_proved_before_setup() {
        let dir = std::env::temp_dir().join(format!("netcore-sess-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k"), "k1").unwrap();
        let key = Key::read(&dir.join("k")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let nonce = [3u8; NONCE_LEN];
        let t0 = Instant::now();
        for (mac, ok) in [
            (access::answer(b"k1", 9, &nonce), true),
            (access::answer(b"k2", 9, &nonce), false),
            (access::answer(b"k1", 8, &nonce), false),
            ("nothex".to_string(), false),
        ] {
            let mut s =
                RecvSession::new(ctx_with(Limits::default(), Some((key.clone(), nonce))), t0);
            s.on_msg(hello_msg(1, Plan::Count(10), true), t0);
            let a = actions(&mut s);
            assert!(
                a[0].contains("Challenge") && a[0].contains(&access::hex(&nonce)),
                "{a:?}"
            );
            assert!(!s.has_test(), "not a test before the proof");
            s.on_msg(Msg::Auth { mac }, t0);
            let a = actions(&mut s);
            if ok {
                assert!(a.is_empty() && s.has_test(), "{a:?}");
            } else {
                assert!(a[0].contains("wrong key") && s.ended(), "{a:?}");
            }
        }
        // No proof offered, or a Setup instead of the proof: refused.
        let mut s = RecvSession::new(ctx_with(Limits::default(), Some((key.clone(), nonce))), t0);
        s.on_msg(hello_msg(1, Plan::Count(10), false), t0);
        assert!(actions(&mut s)[0].contains("requires a shared key"));
        let mut s = RecvSession::new(ctx_with(Limits::default(), Some((key, nonce))), t0);
        s.on_msg(hello_msg(1, Plan::Count(10), true), t0);
        s.on_msg(
            Msg::Setup {
                tcp: None,
                reverse: None,
                echo: None,
                interval_ns: None,
            },
            t0,
        );
        assert!(actions(&mut s)[1].contains("expected Auth"));
        // A keyed Hello to a receiver without a key.
        let mut s = RecvSession::new(ctx_with(Limits::default(), None), t0);
        s.on_msg(hello_msg(1, Plan::Count(10), true), t0);
        assert!(actions(&mut s)[0].contains("has no --auth-key-file"));
    }

    #[test]
    fn limits_refuse_the_plan_and_cut_the_run() {
        let limits = Limits {
            max_plan: Duration::from_secs(1),
            max_streams: 2,
            max_rate_bps: Some(1e6),
            ..Limits::default()
        };
        let t0 = Instant::now();
        let start = |plan| {
            let mut s = RecvSession::new(ctx_with(limits, None), t0);
            s.on_msg(hello_msg(1, plan, false), t0);
            s.on_msg(
                Msg::Setup {
                    tcp: None,
                    reverse: None,
                    echo: None,
                    interval_ns: None,
                },
                t0,
            );
            s.on_udp(Out::Started, t0);
            s.take_actions();
            s
        };
        let mut s = RecvSession::new(ctx_with(limits, None), t0);
        s.on_msg(hello_msg(3, Plan::Count(10), false), t0);
        assert!(actions(&mut s)[0].contains("(--max-streams)"));
        let mut s = RecvSession::new(ctx_with(limits, None), t0);
        s.on_msg(hello_msg(1, Plan::TimeNs(2_000_000_000), false), t0);
        assert!(actions(&mut s)[0].contains("(--max-duration)"));

        // The limits are checked on the receiver's cadence (Out::Check), not per interval row.
        let interval = |t: f64, datagrams: u64, bytes: u64| Out::Check {
            t,
            datagrams,
            bytes,
        };
        let mut s = start(Plan::Count(10));
        s.on_udp(
            Out::Interval {
                t: 0.1,
                datagrams: 11,
                bytes: 1100,
                lost_so_far: 0,
            },
            t0,
        );
        assert!(!actions(&mut s).iter().any(|x| x.contains("planned")));
        // More datagrams than planned.
        let mut s = start(Plan::Count(10));
        s.on_udp(interval(0.1, 11, 1100), t0);
        let a = actions(&mut s);
        assert!(
            a.iter().any(|x| x.contains("more than the 10 planned")),
            "{a:?}"
        );
        assert!(a.iter().any(|x| x.contains("Finish")), "{a:?}");
        // Over the rate by more than the slack (and 64 KiB), not within it.
        let mut s = start(Plan::Count(1 << 30));
        s.on_udp(interval(1.0, 1000, 1_200_000 / 8), t0);
        assert!(!actions(&mut s).iter().any(|x| x.contains("cut")));
        s.on_udp(interval(2.0, 2000, 1_200_000 / 8 + 2_000_000 / 8), t0);
        assert!(actions(&mut s).iter().any(|x| x.contains("(--max-rate)")));
        // Sending on past --max-duration (+ the grace).
        let mut s = start(Plan::TimeNs(500_000_000));
        s.on_udp(interval(0.5, 10, 1000), t0);
        s.take_actions();
        s.on_tick(t0 + Duration::from_millis(2900), false, false);
        assert!(!actions(&mut s).iter().any(|x| x.contains("cut")));
        s.on_tick(t0 + Duration::from_millis(3100), false, false);
        assert!(actions(&mut s)
            .iter()
            .any(|x| x.contains("(--max-duration)")));
    }

    #[test]
    fn a_reverse_test_is_sent_at_most_at_max_rate() {
        let limits = Limits {
            max_rate_bps: Some(8e5),
            ..Limits::default()
        };
        let t0 = Instant::now();
        for (asked, sent) in [(None, 8e5), (Some(8000.0), 8000.0), (Some(4e6), 8e5)] {
            let mut s = RecvSession::new(ctx_with(limits, None), t0);
            s.on_msg(hello_msg(1, Plan::Count(10), false), t0);
            s.on_msg(
                Msg::Setup {
                    tcp: None,
                    reverse: Some(crate::flow::control::Reverse { rate_bps: asked }),
                    echo: None,
                    interval_ns: None,
                },
                t0,
            );
            let a = actions(&mut s);
            assert!(a[0].contains(&format!("rate_bps: Some({sent:?})")), "{a:?}");
        }
    }

    #[test]
    fn the_final_plan_is_checked_against_every_limit() {
        let limits = Limits {
            max_plan: Duration::from_secs(3),
            max_streams: 2,
            max_rate_bps: Some(1e6),
            ..Limits::default()
        };
        let t0 = Instant::now();
        let setup = |plan, m: Msg| {
            let mut s = RecvSession::new(ctx_with(limits, None), t0);
            s.on_msg(hello_msg(1, plan, false), t0);
            s.on_msg(m, t0);
            actions(&mut s)
        };
        let tcp = |streams, mode, rate_bps| Msg::Setup {
            tcp: Some(TcpSpec {
                rate_bps,
                ..TcpSpec::plain(streams, mode, 1000)
            }),
            reverse: None,
            echo: None,
            interval_ns: None,
        };
        let reverse = |rate_bps| Msg::Setup {
            tcp: None,
            reverse: Some(crate::flow::control::Reverse { rate_bps }),
            echo: None,
            interval_ns: None,
        };
        let refused = |a: Vec<String>, flag: &str| {
            assert!(
                a.iter().any(|x| x.contains("Error") && x.contains(flag)),
                "{a:?}"
            )
        };
        // The Hello said one stream; the Setup asks for 16.
        refused(
            setup(Plan::Count(10), tcp(16, Mode::Reverse, None)),
            "(--max-streams)",
        );
        // A client asking to send faster than the limit.
        refused(
            setup(Plan::Count(10), tcp(1, Mode::Forward, Some(2_000_000))),
            "(--max-rate)",
        );
        // A reverse plan whose pacing (or the --max-rate cap) makes it outlast --max-duration.
        refused(
            setup(Plan::Count(1000), reverse(Some(1.0))),
            "(--max-duration)",
        );
        refused(
            setup(Plan::Count(100_000), reverse(None)),
            "(--max-duration)",
        );
        refused(
            setup(Plan::Count(10_000), tcp(1, Mode::Reverse, None)),
            "(--max-duration)",
        );
        refused(
            setup(Plan::Count(10_000), tcp(1, Mode::Bidir, Some(1000))),
            "(--max-duration)",
        );
        // Within every limit: handed on.
        let a = setup(Plan::Count(100), reverse(Some(80_000.0)));
        assert!(a.iter().any(|x| x.starts_with("UdpReverse")), "{a:?}");
        let a = setup(Plan::Count(100), tcp(2, Mode::Reverse, None));
        assert!(a.iter().any(|x| x.starts_with("Tcp")), "{a:?}");
        let a = setup(
            Plan::TimeNs(2_000_000_000),
            tcp(2, Mode::Forward, Some(500_000)),
        );
        assert!(a.iter().any(|x| x.starts_with("Tcp")), "{a:?}");
    }
}
