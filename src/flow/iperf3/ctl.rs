//! The server's iperf3 control connection: blocking TCP with every read bounded, around the
//! sans-IO [`ServerCtl`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::Iperf3UdpReport;
use crate::flow::tcp_engine::report::TcpEvent;
use crate::flow::tcp_engine::stream::transient;
use crate::interop::iperf3::server_ctl::{Event, ServerCtl};
use crate::interop::iperf3::Results;
use crate::sys::cpu::ThreadTimes;

/// One read waits at most this long, so deadlines and stop requests are seen.
const SLICE: Duration = Duration::from_millis(20);

/// iperf3's error numbers the server sends with SERVER_ERROR (its `i_errno`).
pub mod ierr {
    /// "not implemented yet" (what netcore refuses to run).
    pub(crate) const UNIMP: i32 = 13;
    /// "received an unknown message" (the client broke the protocol).
    pub(crate) const MESSAGE: i32 = 110;
    /// "test authorization failed": what an iperf3 client is told where `--auth-key-file`
    /// asks for a key it cannot prove (iperf3 has no such handshake).
    pub(crate) const AUTH_TEST: i32 = 142;
    /// "number of parallel streams too large" (over `--max-streams`).
    pub(crate) const NUMSTREAMS: i32 = 6;
    /// "total required bandwidth is larger than server limit" (over `--max-rate`).
    pub(crate) const TOTALRATE: i32 = 27;
    /// "test duration too long" (over `--max-duration`, asked or reached). Not 37
    /// ("requested duration exceeds the server's maximum") nor 160 ("the server test duration
    /// expired"): iperf3 before 3.13 prints only their numbers.
    pub(crate) const DURATION: i32 = 5;
}

/// The receiver's surroundings an iperf3 test runs in, on a thread of its own (issue #25: a
/// stalled iperf3 client used to hold the receiver's control thread).
pub struct Iperf3Ctx {
    /// The test's data connections, each with its first
    /// [`COOKIE_LEN`](crate::interop::iperf3::msg::COOKIE_LEN) bytes (read), as the
    /// receiver's control thread routes them here by the test's cookie.
    pub conns: Receiver<(TcpStream, Vec<u8>)>,
    /// Asks the receiver for the right to run, once the parameters are accepted: why not
    /// when another test runs or the receiver is stopping (the client is then told
    /// ACCESS_DENIED, see [`Denied`]). Until then the test holds nothing, so a client that
    /// stalls before keeps no one out.
    pub hold: Box<dyn Fn() -> Result<(), &'static str> + Send>,
    pub interval: Duration,
    pub cpu: Option<usize>,
    /// How the readers wait for data (`recv --block`/`--spin`).
    pub wait: crate::flow::rxwait::RxWait,
    /// Every TCP data connection on a thread of its own (`recv --thread-per-stream`).
    pub thread_per_stream: bool,
    /// The address the report names.
    pub target: String,
    /// The receiver's UDP address (its socket has `SO_REUSEPORT`: see `super::udp`).
    pub udp: SocketAddr,
    /// Receive buffer for each UDP stream's socket.
    pub rcvbuf: usize,
    /// What a client may ask for: the receiver's `--max-duration`, `--max-streams` and
    /// `--max-rate` (bits a second).
    pub max_time: Duration,
    pub max_streams: u16,
    pub max_rate_bps: Option<f64>,
    /// Set when the receiver interrupts the test: the client is told SERVER_TERMINATE and
    /// every wait gives up. Nothing here reads the signal itself: on `recv` a first signal
    /// drains (a running test goes on to its end) and only a second interrupts.
    pub interrupt: Arc<AtomicBool>,
}

/// What an iperf3 test reports as it runs.
#[derive(Debug)]
pub enum Iperf3Event {
    /// The client's parameters were accepted.
    Started { peer: SocketAddr, what: String },
    /// Interval lines and netcore's own report (the TCP test's).
    Tcp(TcpEvent),
    /// netcore's own report of a UDP test.
    Udp(Box<Iperf3UdpReport>),
    /// The two results documents exchanged: what the client said it did, and what netcore
    /// answered (which the client prints as the server's figures).
    Exchanged {
        client: Box<Results>,
        server: Box<Results>,
    },
}

/// Bounds: the cookie and parameters each within 5 s, every data connection within 10 s of
/// CREATE_STREAMS, TEST_END within the planned time + 30 s, each later step within 5 s.
pub(crate) const STEP: Duration = Duration::from_secs(5);
pub(crate) const CONNECT_WINDOW: Duration = Duration::from_secs(10);
pub(crate) const SLACK: Duration = Duration::from_secs(30);

/// Parameters netcore does not run (the client is told SERVER_ERROR, the log says why).
#[derive(Debug, thiserror::Error)]
#[error("iperf3 test refused: {0}")]
pub(crate) struct Refused(pub String);

/// A test over one of the receiver's limits, refused at the parameter exchange or cut while
/// it runs: the client is told SERVER_ERROR with iperf3's error number `.0` (it prints
/// iperf3's text for it), the log says `.1`.
#[derive(Debug, thiserror::Error)]
#[error("iperf3 test over this receiver's limits: {1}")]
pub(crate) struct OverLimit(pub i32, pub String);

/// A client refused at its parameter exchange because the receiver is not free for its test
/// (another test holds it, or it is stopping): told ACCESS_DENIED, which iperf3 prints as "the
/// server is busy running a test"; `.0` says why, for the log.
#[derive(Debug, thiserror::Error)]
#[error("iperf3 client refused: {0}")]
pub(crate) struct Denied(pub &'static str);

/// Why parameters `p` are over a limit of `ctx`'s, with iperf3's error number, if they are
/// (issue #25: stock clients used to run past every limit).
pub(crate) fn check_limits(
    p: &crate::interop::iperf3::Params,
    ctx: &Iperf3Ctx,
) -> Result<(), OverLimit> {
    let streams = p.parallel.max(1);
    if streams > u32::from(ctx.max_streams) {
        return Err(OverLimit(
            ierr::NUMSTREAMS,
            format!(
                "{streams} streams requested, over this receiver's limit of {} (--max-streams)",
                ctx.max_streams
            ),
        ));
    }
    // iperf3's -b is per stream, in each direction.
    let bps = p.bandwidth as f64 * f64::from(streams);
    if let Some(max) = ctx.max_rate_bps.filter(|&m| bps > m) {
        return Err(OverLimit(
            ierr::TOTALRATE,
            format!(
                "{} requested, over this receiver's limit of {} (--max-rate)",
                crate::units::fmt_bits_per_sec(bps),
                crate::units::fmt_bits_per_sec(max)
            ),
        ));
    }
    let len = if p.len > 0 { p.len } else { 128 * 1024 };
    let secs = match (p.bytes, p.blocks) {
        (0, 0) => Some((p.time + p.omit) as f64),
        (n, 0) => (bps > 0.0).then(|| n as f64 * 8.0 / bps),
        (_, k) => (bps > 0.0).then(|| k as f64 * f64::from(len) * 8.0 / bps),
    };
    match secs {
        Some(t) if t > ctx.max_time.as_secs_f64() => Err(OverLimit(
            ierr::DURATION,
            format!(
                "a test of {t:.0} s requested, over this receiver's limit of {} s (--max-duration)",
                ctx.max_time.as_secs_f64()
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses a connection that arrives while a test runs: an iperf3 client reads
/// ACCESS_DENIED.
pub fn deny(mut s: TcpStream) {
    let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = std::io::Write::write_all(
        &mut s,
        &[crate::interop::iperf3::State::AccessDenied.byte()],
    );
}

/// Tells an iperf3 client that it cannot run here without a key: SERVER_ERROR
/// [`ierr::AUTH_TEST`] (iperf3 prints "test authorization failed").
pub(crate) fn deny_unauthorized(mut s: TcpStream) {
    let mut out = vec![crate::interop::iperf3::State::ServerError.byte()];
    out.extend_from_slice(&ierr::AUTH_TEST.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = std::io::Write::write_all(&mut s, &out);
}

/// What a netcore client arriving during an iperf3 test is told.
pub(crate) const BUSY: &str = "receiver is busy (an iperf3 test is running)";

pub struct Ctl {
    sock: TcpStream,
    pub sc: ServerCtl,
    /// Bytes to send at the next flush.
    pub out: Vec<u8>,
    /// The state the client is in, as the last event left it (for "vanished in ..." lines).
    pub stage: &'static str,
    /// The receiver's interrupt flag for this test ([`Iperf3Ctx::interrupt`]).
    interrupt: Arc<AtomicBool>,
}

impl Ctl {
    pub fn new(sock: TcpStream, interrupt: Arc<AtomicBool>) -> Result<Ctl> {
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(SLICE))?;
        sock.set_write_timeout(Some(Duration::from_secs(2)))?;
        let _ = sock.set_nodelay(true);
        Ok(Ctl {
            sock,
            sc: ServerCtl::new(),
            out: Vec::new(),
            stage: "sending its cookie",
            interrupt,
        })
    }

    /// Whether the receiver interrupted the test.
    pub(crate) fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed)
    }

    /// Writes what the state machine queued.
    pub fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.sock.write_all(&self.out);
        self.out.clear();
        r.with_context(|| format!("iperf3 client vanished while {}", self.stage))
    }

    /// The next event, waiting at most until `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Result<Event> {
        loop {
            if let Some(e) = self.poll(SLICE)? {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                bail!("iperf3 client went silent while {}", self.stage);
            }
            if self.interrupted() {
                bail!("interrupted while the iperf3 client was {}", self.stage);
            }
        }
    }

    /// An event if one is buffered or arrives within about `wait`.
    pub fn poll(&mut self, wait: Duration) -> Result<Option<Event>> {
        if let Some(e) = self.sc.poll()? {
            return Ok(Some(e));
        }
        let _ = self
            .sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let mut buf = [0u8; 4096];
        match self.sock.read(&mut buf) {
            Ok(0) => bail!(
                "iperf3 client vanished while {} (closed the control connection)",
                self.stage
            ),
            Ok(n) => {
                self.sc.input(&buf[..n])?;
                Ok(self.sc.poll()?)
            }
            Err(e) if transient(&e) => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("iperf3 client vanished while {}", self.stage))
            }
        }
    }

    /// Parameters `p` accepted: checks them against the receiver's limits (an [`OverLimit`])
    /// and takes the receiver for the test; when another test holds it or the receiver is
    /// stopping, the client is told ACCESS_DENIED (a [`Denied`]).
    pub(crate) fn take_receiver(
        &mut self,
        p: &crate::interop::iperf3::Params,
        ctx: &Iperf3Ctx,
    ) -> Result<()> {
        check_limits(p, ctx)?;
        if let Err(why) = (ctx.hold)() {
            self.out
                .push(crate::interop::iperf3::State::AccessDenied.byte());
            let _ = self.flush();
            return Err(Denied(why).into());
        }
        Ok(())
    }

    /// Tells the client the server failed (best effort): it prints iperf3's message for
    /// `i_errno`.
    pub fn fail(&mut self, i_errno: i32) {
        self.sc.error(i_errno, 0, &mut self.out);
        let _ = self.flush();
    }

    /// After telling the client why its test ends, gives it up to a second to read that and go
    /// while the streams still run: closing them first (unread data: a reset) would make
    /// iperf3 print "broken pipe" instead of the reason.
    fn linger_for_client(&mut self) {
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if !matches!(self.poll(Duration::from_millis(20)), Ok(None)) {
                return;
            }
        }
    }

    /// Waits for TEST_END while the test runs: more data connections (`conns`) are denied,
    /// `tick` runs every turn (interval lines; its error, a limit passed, ends the test), and
    /// the receiver's interrupt tells the client SERVER_TERMINATE. Bounded by `deadline`; cut at
    /// `cut_at` (`--max-duration`).
    pub(crate) fn until_test_end(
        &mut self,
        conns: &Receiver<(TcpStream, Vec<u8>)>,
        (deadline, cut_at): (Instant, Instant),
        tick: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        loop {
            while let Ok((s, _)) = conns.try_recv() {
                deny(s);
            }
            let over = match tick() {
                Err(e) => Some(e),
                Ok(()) if Instant::now() >= cut_at => Some(
                    OverLimit(
                        ierr::DURATION,
                        "cut: the test reached this receiver's limit (--max-duration)".into(),
                    )
                    .into(),
                ),
                Ok(()) => None,
            };
            if let Some(e) = over {
                // Told before the streams close, so the client prints why, not a broken pipe.
                if let Some(OverLimit(code, _)) = e.downcast_ref::<OverLimit>() {
                    self.fail(*code);
                    self.linger_for_client();
                }
                return Err(e);
            }
            match self.poll(Duration::from_millis(20))? {
                None => {}
                Some(Event::TestEnd) => return Ok(()),
                Some(Event::Terminated) => bail!("iperf3 client terminated the test"),
                Some(e) => bail!("iperf3 client sent {e:?} while the test ran"),
            }
            if self.interrupted() {
                // Told while the streams still run, as a limit is: the client prints that the
                // server ended the test, not a broken pipe.
                self.sc.terminate(&mut self.out);
                let _ = self.flush();
                self.linger_for_client();
                bail!("interrupted: iperf3 client told SERVER_TERMINATE");
            }
            if Instant::now() >= deadline {
                bail!("iperf3 client sent no TEST_END within its time + {SLACK:?}");
            }
        }
    }

    /// After TEST_END: EXCHANGE_RESULTS, then the client's results document.
    pub(crate) fn client_results(&mut self) -> Result<Results> {
        self.sc.exchange(&mut self.out);
        self.stage = "sending its results";
        self.flush()?;
        match self.next(Instant::now() + STEP)? {
            Event::ClientResults(r) => Ok(r),
            Event::Terminated => bail!("iperf3 client terminated before its results"),
            e => bail!("iperf3 client sent {e:?} instead of its results"),
        }
    }

    /// After DISPLAY_RESULTS: the client's IPERF_DONE.
    pub(crate) fn until_done(&mut self) -> Result<()> {
        match self.next(Instant::now() + STEP)? {
            Event::Done => Ok(()),
            e => bail!("iperf3 client sent {e:?} instead of IPERF_DONE"),
        }
    }

    /// Sends our results and DISPLAY_RESULTS.
    pub(crate) fn send_results(&mut self, ours: &Results) -> Result<()> {
        self.sc.results(ours, &mut self.out);
        self.stage = "displaying the results";
        self.flush()
    }
}

/// The process's CPU between two readings as iperf3's three percentages (total, user,
/// system) of `wall_s`.
pub(crate) fn cpu_util(a: ThreadTimes, b: ThreadTimes, wall_s: f64) -> (f64, f64, f64) {
    let user = b.user_ns.saturating_sub(a.user_ns) as f64 / 1e9;
    let system = b.system_ns.saturating_sub(a.system_ns) as f64 / 1e9;
    let pct = |x: f64| {
        if wall_s > 0.0 {
            100.0 * x / wall_s
        } else {
            0.0
        }
    };
    (pct(user + system), pct(user), pct(system))
}
