//! The receiver: a TCP control listener and a UDP socket on the same port, serving tests one
//! after another.
//!
//! Two threads. The control thread (the caller's) accepts a control connection, reads the
//! Hello, starts the test, forwards interval figures to the sender, and on Done asks for the
//! final figures and sends the Report. The UDP thread (pinned when asked) owns the socket and
//! the per-test state, drains the socket with `recvmmsg` batches (GRO buffers split by their
//! segment size, so accounting stays per datagram) and feeds every datagram to the tracker.
//! They talk over channels; the UDP thread checks for commands once per batch.
//!
//! The UDP thread runs one of two backends ([`Backend`]): the `recvmmsg` loop here, or the
//! io_uring loop (multishot `RECVMSG` into provided buffers, `crate::flow::udp::uring`). Both hand every
//! buffer to the same [`Core`] (per-datagram accounting, intervals, the end of a test).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver as Rx, RecvTimeoutError, Sender as Tx, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::echo::EchoJob;
use super::session::{Action, Limits, RecvSession, ReverseJob, SessionCtx};
use crate::flow::access::{self, AllowList, Key};
use crate::flow::backend::{self, Backend};
use crate::flow::control::{Conn, Malformed, Msg, Plan, Reverse};
use crate::flow::host::host_name;
use crate::flow::iperf3::detect::SILENT_GRACE;
use crate::flow::iperf3::{self, Iperf3Ctx, Iperf3Event, Opener};
use crate::flow::payload::TcpSpec;
use crate::flow::rxwait::RxWait;
use crate::flow::tcp::spec::{decode_preamble, preamble_prefix, PREAMBLE_LEN};
use crate::flow::tcp::{self, server::ServerCtx};
use crate::flow::tcp_engine::report::TcpEvent;
use crate::flow::tracker::DEFAULT_WINDOW;
use crate::flow::udp::recv_core::MAX_TESTS;
use crate::flow::udp::recv_core::{Cmd, Core, Out, UdpCtx};
use crate::flow::udp::report::{IntervalRow, UdpReport};
use crate::flow::udp::sender::{self, BlastOptions};
use crate::flow::udp::wire;
use crate::reactor::shares::peer_key;
use crate::sys::signal;
use crate::sys::sockopt::{self, BufMethod};

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct RecvOptions {
    pub listen: SocketAddr,
    pub interval: Duration,
    pub cpu: Option<usize>,
    /// Busy-poll the socket instead of sleeping in `recvmmsg`.
    pub wait: RxWait,
    /// Receive buffer to ask for, in bytes.
    pub rcvbuf: usize,
    pub gro: bool,
    /// How long to wait for stragglers after Done once datagrams stop arriving.
    pub drain: Duration,
    pub window: u64,
    /// Messages per `recvmmsg`.
    pub batch: usize,
    /// mio (`recvmmsg`), uring (multishot `RECVMSG`), or auto (uring where it works).
    pub backend: Backend,
    /// Tests served at once (`--max-tests`; at most [`MAX_TESTS`]).
    pub max_tests: usize,
    /// What a sender cannot exceed (`--max-duration`, `--max-streams`, `--max-rate`).
    pub limits: Limits,
    /// Who may connect (`--allow`; empty: everyone).
    pub allow: AllowList,
    /// The shared key senders must prove (`--auth-key-file`).
    pub auth_key: Option<Key>,
    /// A first stop request (SIGTERM, SIGHUP, SIGINT) stops new tests and lets running ones
    /// finish; a second interrupts them (`recv`). Without it, the first interrupts.
    pub graceful: bool,
    /// Every TCP data connection on a thread of its own (`--thread-per-stream`).
    pub thread_per_stream: bool,
}

impl Default for RecvOptions {
    fn default() -> Self {
        RecvOptions {
            listen: "127.0.0.1:5300".parse().expect("valid address"),
            interval: Duration::from_secs(1),
            cpu: None,
            wait: RxWait::Poll,
            rcvbuf: 128 << 20,
            gro: true,
            drain: Duration::from_millis(250),
            window: DEFAULT_WINDOW,
            batch: 64,
            backend: Backend::Auto,
            max_tests: 1,
            thread_per_stream: false,
            limits: Limits::default(),
            allow: AllowList::default(),
            auth_key: None,
            graceful: false,
        }
    }
}

/// What the receiver tells its caller as tests come and go.
#[derive(Debug)]
pub enum Event {
    Started {
        peer: SocketAddr,
        test_id: u64,
        len: u32,
    },
    /// A UDP test's interval: the receiving side's row of a test sent here, the sending
    /// side's of a reverse test (`-R`) sent from here. Tests run at once: the id tells whose.
    Interval {
        test_id: u64,
        row: IntervalRow,
    },
    Finished(Box<UdpReport>),
    /// A TCP test's progress and report; `peer` is the client's control connection.
    Tcp {
        test_id: u64,
        peer: SocketAddr,
        ev: TcpEvent,
    },
    /// An iperf3 client's test (`flow::iperf3`).
    Iperf3(Iperf3Event),
    /// A test that could not run or was cut short (the report, if any, came as Finished).
    Failed(String),
    /// A first stop request on a graceful receiver (`recv`): no new tests; `running` tests
    /// finish first (a second request interrupts them).
    Stopping {
        running: usize,
    },
}

/// A bound receiver, ready to serve.
pub struct Receiver {
    udp: UdpSocket,
    listener: TcpListener,
    opts: RecvOptions,
    rcvbuf: usize,
    rcvbuf_method: BufMethod,
    gro: bool,
    /// `SO_RXQ_OVFL` is on (each datagram carries the socket's drop total).
    rxq_ovfl: bool,
    backend: Backend,
    /// Set by whoever started the receiver to stop waiting for a test (see
    /// [`Receiver::stopper`]).
    stop: Arc<AtomicBool>,
}

/// The UDP socket has `SO_REUSEPORT` so that an iperf3 client's streams can each have a
/// connected socket on the same port (`flow::iperf3::udp`); the TCP listener has not, so a
/// second receiver on the port still fails with "address already in use".
fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    sockopt::bind_udp_and_tcp(addr, true)
}

impl Receiver {
    /// Binds the UDP socket and the control listener on the same address and sizes the
    /// receive buffer.
    /// `--backend uring` where io_uring is unavailable fails here, naming the cause.
    pub fn bind(opts: RecvOptions) -> Result<Receiver> {
        let backend = backend::resolve_recv(opts.backend)?;
        let (udp, listener) = bind_pair(opts.listen).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                anyhow::anyhow!("cannot listen on {}: address already in use", opts.listen)
            } else {
                anyhow::anyhow!("cannot listen on {}: {e}", opts.listen)
            }
        })?;
        let (rcvbuf, rcvbuf_method) =
            sockopt::size_buffer(&udp, opts.rcvbuf, true).context("setting the receive buffer")?;
        let gro = opts.gro && sockopt::set_udp_gro(&udp, true).is_ok();
        let rxq_ovfl = sockopt::set_rxq_ovfl(&udp).is_ok();
        listener.set_nonblocking(true)?;
        Ok(Receiver {
            udp,
            listener,
            opts,
            rcvbuf,
            rcvbuf_method,
            gro,
            rxq_ovfl,
            backend,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A flag that makes [`Receiver::serve`] return once no test is running: an embedded
    /// receiver whose sender failed before connecting would otherwise wait for it forever.
    pub(crate) fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The backend the UDP thread runs (mio or uring).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The address tests are received on (UDP and TCP control share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves tests until Ctrl-C (or after one test with `once`). Each test's outcome goes to
    /// `on_event`. Returns an error only if the receiver itself fails; with `once`, a test
    /// that could not run is an error too.
    pub fn serve(self, once: bool, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        let (cmd_tx, out_rx, worker) = self.spawn_udp_thread()?;
        let result = self.control_loop(once, &cmd_tx, &out_rx, on_event);
        let _ = cmd_tx.send(Cmd::Quit);
        let _ = worker.join();
        result
    }

    /// Starts the UDP thread on the bound socket (its backend, pinned when asked): the
    /// commands' sender, the news' receiver and the thread.
    fn spawn_udp_thread(&self) -> Result<(Tx<Cmd>, News, thread::JoinHandle<()>)> {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (out_tx, out_rx) = mpsc::channel();
        let udp = self.udp.try_clone()?;
        let ctx = UdpCtx {
            wait: self.opts.wait,
            batch: self.opts.batch.max(1),
            cpu: self.opts.cpu,
            rcvbuf: self.rcvbuf as u64,
            rcvbuf_method: self.rcvbuf_method,
            gro: self.gro,
            drain: self.opts.drain,
            window: self.opts.window,
            backend: self.backend,
            sock: udp.as_raw_fd(),
            rxq_ovfl: self.rxq_ovfl,
            allow: self.opts.allow.clone(),
        };
        let core = Core::new(ctx, cmd_rx, out_tx);
        let backend = self.backend;
        let worker =
            thread::Builder::new()
                .name("netcore-recv".into())
                .spawn(move || match backend {
                    #[cfg(feature = "uring")]
                    Backend::Uring => crate::flow::udp::uring::recv_thread(udp, core),
                    _ => crate::flow::udp::recv_mmsg::udp_thread(udp, core),
                })?;
        Ok((cmd_tx, out_rx, worker))
    }

    /// The client's end of a reverse test (`-R`, see [`super::reverse`]): this receiver's UDP
    /// thread and a [`RecvSession`] take the test that `hello` (already sent on `conn`, and
    /// answered with Ready) describes; the session's Ready becomes the opener datagrams to
    /// `server`, the rest of its messages go to the server, which sends the datagrams and
    /// Done. Returns the receiver's report.
    pub(crate) fn receive_reverse(
        self,
        mut conn: Conn,
        hello: Msg,
        server: SocketAddr,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<UdpReport> {
        let Msg::Hello { test_id, .. } = hello else {
            bail!("receive_reverse needs the test's Hello");
        };
        let (cmd_tx, out_rx, worker) = self.spawn_udp_thread()?;
        let opener = self.udp.try_clone()?;
        let now = Instant::now();
        let mut session = RecvSession::new(self.session_ctx(server), now);
        session.on_msg(hello, now);
        session.on_msg(
            Msg::Setup {
                tcp: None,
                reverse: None,
                echo: None,
                interval_ns: None,
            },
            now,
        );
        let mut report = None;
        let result = loop {
            let now = Instant::now();
            while let Ok((_, o)) = out_rx.try_recv() {
                session.on_udp(o, now);
            }
            read_control(&mut session, &mut conn, now);
            let stop = signal::stop_requested();
            session.on_tick(now, stop, stop);
            let mut ended = None;
            for a in session.take_actions() {
                match a {
                    Action::Send(Msg::Ready { .. }) => {
                        // The UDP thread has the test: open the path (a few, for a lossy one).
                        for _ in 0..3 {
                            let _ = opener.send_to(&wire::opener(test_id), server);
                        }
                    }
                    Action::Send(m) => {
                        if let Err(e) = conn.send(&m) {
                            session.on_control_lost(format!("{e:#}"), now);
                        }
                    }
                    Action::Cmd(c) => cmd_tx.send(c)?,
                    Action::Interval(row) => on_event(Event::Interval { test_id, row }),
                    Action::Finished(r) => report = Some(r),
                    Action::End(r) => ended = Some(r),
                    Action::Started { .. }
                    | Action::Tcp { .. }
                    | Action::UdpReverse(_)
                    | Action::Echo(_) => {}
                }
            }
            if let Some(r) = ended {
                break r;
            }
            if let Ok((_, o)) = out_rx.recv_timeout(Duration::from_millis(5)) {
                session.on_udp(o, Instant::now());
            }
        };
        let _ = cmd_tx.send(Cmd::Quit);
        let _ = worker.join();
        match (report, result) {
            (Some(r), Ok(())) => Ok(*r),
            (_, Err(why)) => bail!("{why}"),
            (None, Ok(())) => bail!("the test ended without a report"),
        }
    }

    /// The control thread: connections waiting for their Hello (each with its deadline, none
    /// holding the receiver), up to `max_tests` tests at once, every wait bounded (see
    /// [`RecvSession`]). UDP tests run here (their datagrams in the UDP thread, told apart by
    /// test id); TCP and reverse UDP tests run on threads of their own, whose events come back
    /// over a channel, so `on_event` is only ever called on this thread.
    fn control_loop(
        &self,
        once: bool,
        cmd_tx: &Tx<Cmd>,
        out_rx: &Rx<(u64, Out)>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let max_tests = if once {
            1
        } else {
            self.opts.max_tests.clamp(1, MAX_TESTS)
        };
        let mut c = Control::new(once, max_tests);
        loop {
            let (stopping, interrupt) = self.stop_requests(&mut c, on_event);
            if let Some(r) = c.reap_jobs(on_event) {
                return r;
            }
            if stopping && c.slots.is_empty() && c.jobs.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            self.accept_new(&mut c.fresh, now, on_event);
            if let Some(r) = self.sort_fresh(&mut c, stopping, now, on_event) {
                return r;
            }
            // What the UDP thread says goes to the test it names (or to none: dropped).
            loop {
                match out_rx.try_recv() {
                    Ok((id, o)) => route_out(&mut c.slots, id, o, now),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => bail!("receive thread ended"),
                }
            }
            let turn = Turn {
                stopping,
                interrupt,
                now,
                iperf3: false,
            };
            if let Some(r) = self.turn_slots(&mut c, turn, cmd_tx, on_event)? {
                return r;
            }
            // Tests that ended no longer keep an iperf3 client out.
            c.hold_state().netcore = running(&c.slots, &c.jobs);
            // Nothing here waits long: a turn every few milliseconds sees signals, deadlines,
            // new connections and the UDP thread's news.
            match out_rx.recv_timeout(Duration::from_millis(5)) {
                Ok((id, o)) => route_out(&mut c.slots, id, o, Instant::now()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("receive thread ended"),
            }
        }
    }

    /// Whether a stop was asked (`stopping`: no new tests) and whether running tests are to be
    /// interrupted; the first stop on a graceful receiver is announced once, an interrupt
    /// reaches every job.
    fn stop_requests(&self, c: &mut Control, on_event: &mut dyn FnMut(Event)) -> (bool, bool) {
        let asked = self.stop.load(Ordering::Relaxed);
        let stopping = stop_asked(&self.stop);
        let interrupt = asked
            || if self.opts.graceful {
                signal::signal_count() >= 2
            } else {
                signal::stop_requested()
            };
        if stopping && self.opts.graceful && !c.announced {
            c.announced = true;
            // An iperf3 test holding the receiver finishes first too.
            let iperf3 = usize::from(c.hold_state().iperf3.is_some());
            on_event(Event::Stopping {
                running: running(&c.slots, &c.jobs) + iperf3,
            });
        }
        if interrupt {
            for j in &c.jobs {
                j.interrupt.store(true, Ordering::Relaxed);
            }
        }
        (stopping, interrupt)
    }

    /// Accepts every connection waiting on the listener into `fresh` (a peer outside
    /// `--allow` is told so and closed).
    fn accept_new(
        &self,
        fresh: &mut Vec<(TcpStream, SocketAddr, Instant)>,
        now: Instant,
        on_event: &mut dyn FnMut(Event),
    ) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.opts.allow.admits(peer.ip()) {
                        fresh.push((stream, peer, now));
                    } else {
                        refuse_conn(
                            &stream,
                            &format!("{} is not allowed to start tests here (--allow)", peer.ip()),
                        );
                        on_event(Event::Failed(format!(
                            "connection from {peer} refused: not in --allow"
                        )));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    on_event(Event::Failed(format!("accept failed: {e}")));
                    thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
    }

    /// New connections wait in `fresh` until their first bytes say who they are: an iperf3
    /// cookie (`flow::iperf3::detect`), a TCP test's data connection (its preamble), or
    /// netcore's control (anything else, a new slot). Returns the outcome of an iperf3 test
    /// that ends `--once`.
    fn sort_fresh(
        &self,
        c: &mut Control,
        stopping: bool,
        now: Instant,
        on_event: &mut dyn FnMut(Event),
    ) -> Option<Result<()>> {
        let mut k = 0;
        while k < c.fresh.len() {
            let (ref stream, _, since) = c.fresh[k];
            let opener = iperf3::opener(stream, since, now);
            let mut cookie = None;
            let data = match opener {
                Opener::Wait => {
                    k += 1;
                    continue;
                }
                Opener::Iperf3 => match iperf3_cookie(stream, since, now) {
                    Preamble::Wait => {
                        k += 1;
                        continue;
                    }
                    Preamble::Data((_, head)) => {
                        cookie = Some(head);
                        None
                    }
                    Preamble::No => None,
                },
                Opener::Netcore => match data_preamble(stream, since, now) {
                    Preamble::Wait => {
                        k += 1;
                        continue;
                    }
                    Preamble::Data(id) => Some(id),
                    Preamble::No => None,
                },
            };
            let (stream, peer, _) = c.fresh.swap_remove(k);
            let running = running(&c.slots, &c.jobs);
            if let Some(id) = data {
                route_data(stream, id, &c.jobs);
                continue;
            }
            if opener == Opener::Iperf3 {
                let busy = if stopping {
                    Some(STOPPING)
                } else if running > 0 {
                    Some("the receiver is busy")
                } else {
                    None
                };
                match self.iperf3(c, (stream, peer), cookie, busy) {
                    Ok(Some(why)) => on_event(iperf3_refused(peer, why)),
                    Ok(None) => {}
                    Err(e) => on_event(Event::Failed(format!("iperf3 client {peer}: {e:#}"))),
                }
                continue;
            }
            if let Some(why) = queue_refusal(&c.slots, running.saturating_sub(c.jobs.len()), peer) {
                refuse_conn(&stream, &why);
            } else if let Some(slot) = self.slot(stream, peer, now) {
                c.slots.push(slot);
            }
        }
        None
    }

    /// One turn of every session: its next message (a Hello admitted or refused), its tick,
    /// its actions carried out; a session that hands its test on becomes a job, one that ended
    /// is dropped. Returns the outcome of a test that ends `--once`.
    fn turn_slots(
        &self,
        c: &mut Control,
        turn: Turn,
        cmd_tx: &Tx<Cmd>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Option<Result<()>>> {
        let mut i = 0;
        while i < c.slots.len() {
            c.feed(i, turn);
            let slot = &mut c.slots[i];
            slot.session
                .on_tick(turn.now, turn.stopping, turn.interrupt);
            let Carried { job, ended } = carry_out(slot, cmd_tx, turn.now, on_event)?;
            if let Some(kind) = job {
                // The session is over; the test goes on on a thread of its own with the
                // control connection.
                let slot = c.slots.remove(i);
                c.jobs.push(self.spawn_job(slot, kind, &c.ev_tx)?);
                continue;
            }
            // Actions queued while carrying out the others (a failed send) come next turn.
            if let Some(r) = ended {
                let slot = c.slots.remove(i);
                if let Some(r) = c.slot_ended(slot, r, on_event) {
                    return Ok(Some(r));
                }
                continue;
            }
            i += 1;
        }
        Ok(None)
    }

    /// Starts a TCP test or a reverse UDP test on a thread of its own, on `slot`'s control
    /// connection; its events go to `ev`.
    fn spawn_job(&self, slot: Slot, kind: JobKind, ev: &Tx<Event>) -> Result<Job> {
        let Slot {
            mut conn,
            peer,
            session,
            ..
        } = slot;
        let secret = session.secret();
        let interrupt = Arc::new(AtomicBool::new(false));
        let stop = interrupt.clone();
        let ev = ev.clone();
        let cpu = self.opts.cpu;
        let wait = self.opts.wait;
        let thread_per_stream = self.opts.thread_per_stream;
        let max_time = self.opts.limits.max_plan;
        let max_rate_bps = self.opts.limits.max_rate_bps;
        let limit_every = self.opts.interval;
        let local = self.local_addr();
        let (test_id, data, run): (u64, _, TestRun) = match kind {
            JobKind::Tcp(test_id, plan, spec, interval) => {
                let (data_tx, data_rx) = mpsc::channel();
                let run = move || {
                    let ctx = ServerCtx {
                        conns: data_rx,
                        interval,
                        cpu,
                        wait,
                        thread_per_stream,
                        target: local.to_string(),
                        interrupt: stop,
                        max_time,
                        max_rate_bps,
                        limit_every,
                        secret,
                    };
                    let r = tcp::server::run_test(&mut conn, ctx, test_id, plan, spec, &mut |e| {
                        let _ = ev.send(Event::Tcp {
                            test_id,
                            peer,
                            ev: e,
                        });
                    });
                    r.map_err(|e| format!("{e:#}"))
                };
                (test_id, Some(data_tx), Box::new(run))
            }
            JobKind::Reverse(job) => {
                let test_id = job.test_id;
                let run = move || {
                    let r = super::reverse::serve(
                        &mut conn,
                        job,
                        local.ip(),
                        peer.ip(),
                        cpu,
                        &stop,
                        &mut |row| {
                            let _ = ev.send(Event::Interval { test_id, row: *row });
                        },
                    );
                    match r {
                        Ok(report) => {
                            let _ = ev.send(Event::Finished(Box::new(report)));
                            Ok(())
                        }
                        Err(e) => Err(format!("{e:#}")),
                    }
                };
                (job.test_id, None, Box::new(run))
            }
            JobKind::Echo(job) => {
                let run = move || {
                    let stopped = || stop.load(Ordering::Relaxed);
                    super::echo::serve(&mut conn, job, local.ip(), peer.ip(), &stopped)
                        .map(|_| ())
                        .map_err(|e| format!("{e:#}"))
                };
                (job.test_id, None, Box::new(run))
            }
        };
        let handle = thread::Builder::new()
            .name("netcore-test".into())
            .spawn(run)?;
        Ok(Job {
            test_id,
            peer,
            data,
            iperf3: None,
            interrupt,
            handle,
        })
    }

    /// A connection that opened with an iperf3 cookie (`cookie`: its first bytes, when they
    /// arrived whole): a data connection of the iperf3 test with that cookie goes to it;
    /// otherwise it is a new client, served on a thread of its own, or refused when the
    /// receiver is `busy` (why: a netcore test runs, or it is stopping), keyed (told as
    /// SERVER_ERROR "test authorization failed": iperf3 cannot prove a key), held by another
    /// iperf3 test, or has [`MAX_IPERF3_WAITING`] iperf3 clients that hold nothing yet (told as
    /// ACCESS_DENIED, "the server is busy"). Returns why it refused, for the log. A client
    /// admitted here is refused the same way at its parameter exchange when the receiver is no
    /// longer free by then (`Iperf3Ctx::hold`: another test took it, or a signal came).
    fn iperf3(
        &self,
        c: &mut Control,
        (stream, peer): (TcpStream, SocketAddr),
        cookie: Option<Vec<u8>>,
        busy: Option<&'static str>,
    ) -> Result<Option<&'static str>> {
        let owner = cookie.as_ref().and_then(|k| {
            c.jobs
                .iter()
                .find_map(|j| j.iperf3.as_ref().filter(|i| &i.cookie == k))
        });
        if let (Some(i), Some(head)) = (owner, &cookie) {
            let mut p = vec![0u8; head.len()];
            stream.set_read_timeout(Some(Duration::from_millis(100)))?;
            std::io::Read::read_exact(&mut &stream, &mut p)?;
            let _ = i.conns.send((stream, p));
            return Ok(None);
        }
        if self.opts.auth_key.is_some() {
            iperf3::ctl::deny_unauthorized(stream);
            return Ok(Some(
                "a key is required (--auth-key-file), which iperf3 cannot prove",
            ));
        }
        let waiting = c.jobs.iter().filter(|j| j.iperf3.is_some()).count();
        let refusal = busy
            .or_else(|| {
                c.hold_state()
                    .iperf3
                    .map(|_| "another iperf3 test holds the receiver")
            })
            .or_else(|| {
                (waiting >= MAX_IPERF3_WAITING).then_some("too many iperf3 clients waiting")
            });
        if let Some(why) = refusal {
            iperf3::ctl::deny(stream);
            return Ok(Some(why));
        }
        let job = self.spawn_iperf3(c, stream, peer, cookie.unwrap_or_default())?;
        c.jobs.push(job);
        Ok(None)
    }

    /// Starts an iperf3 test on a thread of its own (see [`Receiver::iperf3`]).
    fn spawn_iperf3(
        &self,
        c: &mut Control,
        stream: TcpStream,
        peer: SocketAddr,
        cookie: Vec<u8>,
    ) -> Result<Job> {
        c.serial += 1;
        let serial = c.serial;
        let (conns_tx, conns_rx) = mpsc::channel();
        let hold = c.hold.clone();
        let stop = self.stop.clone();
        let interrupt = Arc::new(AtomicBool::new(false));
        let ctx = Iperf3Ctx {
            conns: conns_rx,
            hold: Box::new(move || {
                let mut h = hold.lock().unwrap_or_else(|e| e.into_inner());
                // Asked under the lock the stopping line counts a running iperf3 test under:
                // a test that took the receiver before the signal is counted, one whose
                // parameters come after it is refused, as a netcore Hello is then.
                if stop_asked(&stop) {
                    Err(STOPPING)
                } else if h.netcore > 0 || h.iperf3.is_some() {
                    Err("another test holds the receiver")
                } else {
                    h.iperf3 = Some(serial);
                    Ok(())
                }
            }),
            interval: self.opts.interval,
            cpu: self.opts.cpu,
            wait: self.opts.wait,
            thread_per_stream: self.opts.thread_per_stream,
            target: self.local_addr().to_string(),
            udp: self.udp.local_addr()?,
            rcvbuf: self.rcvbuf,
            max_time: self.opts.limits.max_plan,
            max_streams: self.opts.limits.max_streams,
            max_rate_bps: self.opts.limits.max_rate_bps,
            interrupt: interrupt.clone(),
        };
        let ev = c.ev_tx.clone();
        let refused = Arc::new(AtomicBool::new(false));
        let denied = refused.clone();
        let run = move || {
            let r = iperf3::serve(stream, peer, ctx, &mut |e| {
                let _ = ev.send(Event::Iperf3(e));
            });
            // Refused at its parameters: logged as a refusal at its cookie is, not as a test.
            if let Some(iperf3::ctl::Denied(why)) = r.as_ref().err().and_then(|e| e.downcast_ref())
            {
                denied.store(true, Ordering::Relaxed);
                let _ = ev.send(iperf3_refused(peer, why));
                return Ok(());
            }
            r.map_err(|e| format!("{e:#}").replace('\n', " "))
        };
        let handle = thread::Builder::new()
            .name("netcore-iperf3".into())
            .spawn(run)?;
        Ok(Job {
            test_id: 0,
            peer,
            data: None,
            iperf3: Some(Iperf3Job {
                serial,
                cookie,
                conns: conns_tx,
                refused,
            }),
            interrupt,
            handle,
        })
    }

    /// A session for a new connection (None if the socket cannot be set up).
    fn slot(&self, stream: TcpStream, peer: SocketAddr, now: Instant) -> Option<Slot> {
        stream.set_nonblocking(false).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .ok()?;
        let conn = Conn::new(stream).ok()?;
        let mut ctx = self.session_ctx(peer);
        ctx.auth = self.opts.auth_key.clone().map(|k| (k, access::nonce()));
        Some(Slot {
            conn,
            peer,
            session: RecvSession::new(ctx, now),
            udp: false,
        })
    }

    /// What a session with `peer` needs to know of this receiver.
    fn session_ctx(&self, peer: SocketAddr) -> SessionCtx {
        SessionCtx {
            host: host_name(),
            peer_loopback: peer.ip().is_loopback(),
            target: self.local_addr().to_string(),
            interval: self.opts.interval,
            rcvbuf: self.rcvbuf as u64,
            gro: self.gro,
            limits: self.opts.limits,
            auth: None,
        }
    }
}

/// Feeds the session what its control connection has (when it reads): a message, a line that
/// is not one, or the connection's end.
fn read_control(session: &mut RecvSession, conn: &mut Conn, now: Instant) {
    if !session.reading() {
        return;
    }
    match conn.try_recv() {
        Ok(Some(m)) => session.on_msg(m, now),
        Ok(None) => {}
        Err(e) if e.downcast_ref::<Malformed>().is_some() => {
            session.on_bad_input(format!("{e:#}"), now)
        }
        Err(e) => session.on_control_lost(format!("{e:#}"), now),
    }
}

/// A reverse test (`-R`) from the client's side: a receiver bound on the address that routes
/// to the server (port 0), Hello and Setup{reverse} to the server, its Ready with the port it
/// sends from, then [`Receiver::receive_reverse`]. `opts` is `blast`'s (plan, streams, length,
/// rate for the server to send), `rx` the receiving side's settings.
pub(crate) fn run_reverse(
    opts: &BlastOptions,
    rx: RecvOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<UdpReport> {
    let opts = &sender::resolve(opts)?;
    // The local address that routes to the server (no packet is sent by connecting): --bind's
    // when given, as the control connection's, so the opener comes from the host the receiver
    // admitted (it sends nothing to another).
    let probe = UdpSocket::bind(match opts.client.bind {
        Some(ip) => SocketAddr::new(ip, 0),
        None => sender::unspecified(opts.target),
    })?;
    probe
        .connect(opts.control)
        .with_context(|| format!("cannot reach {}", opts.control))?;
    let r = Receiver::bind(RecvOptions {
        listen: SocketAddr::new(probe.local_addr()?.ip(), 0),
        ..rx
    })?;
    let rate_bps = opts.rate.map(|r| r.bits_per_sec(opts.len));
    let (mut c, test_id) = sender::open(opts, Some(Reverse { rate_bps }))?;
    let port = match sender::expect_ready(&mut c)? {
        Msg::Ready { port: Some(p), .. } => p,
        Msg::Ready { .. } => bail!("the receiver answered -R without a port to receive from"),
        other => bail!("expected Ready from the receiver, got {}", other.name()),
    };
    let hello = sender::hello(opts, test_id);
    r.receive_reverse(c, hello, SocketAddr::new(opts.control.ip(), port), on_event)
}

/// The UDP thread's news, each with the test id it is about.
type News = Rx<(u64, Out)>;
/// A test run on a thread of its own: Ok, or why it failed.
type TestRun = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Connections waiting for their Hello at most; more are told to try again.
const MAX_WAITING: usize = 16;
/// Connections from one address (an IPv6 /64) waiting for their Hello at most, so that one
/// client's silent connections cannot keep another's Hello out (issue #25).
const MAX_WAITING_PER_PEER: usize = MAX_WAITING / 4;

/// Why a new control connection from `peer` may not wait for its Hello (the queue is full,
/// or `peer`'s share of it), if it may not; `with_test` of `slots` have a test.
fn queue_refusal(slots: &[Slot], with_test: usize, peer: SocketAddr) -> Option<String> {
    let waiting = slots.len().saturating_sub(with_test);
    let key = peer_key(peer.ip());
    let from_peer = slots
        .iter()
        .filter(|s| !s.session.has_test() && peer_key(s.peer.ip()) == key)
        .count();
    if waiting >= MAX_WAITING {
        Some(format!(
            "receiver has {MAX_WAITING} connections waiting for a Hello; try again"
        ))
    } else if from_peer >= MAX_WAITING_PER_PEER {
        Some(format!(
            "receiver has {MAX_WAITING_PER_PEER} connections from {} waiting for a Hello; \
             send one or close one first",
            peer.ip()
        ))
    } else {
        None
    }
}

/// One control connection and its session.
struct Slot {
    conn: Conn,
    peer: SocketAddr,
    session: RecvSession,
    /// The UDP thread was given this session's test.
    udp: bool,
}

impl Slot {
    /// The next message on the control connection, when the session reads one; a line that
    /// is not one, or the connection's end, goes to the session.
    fn next_msg(&mut self) -> Option<Msg> {
        if !self.session.reading() {
            return None;
        }
        let now = Instant::now();
        match self.conn.try_recv() {
            Ok(m) => m,
            Err(e) if e.downcast_ref::<Malformed>().is_some() => {
                self.session.on_bad_input(format!("{e:#}"), now);
                None
            }
            Err(e) => {
                self.session.on_control_lost(format!("{e:#}"), now);
                None
            }
        }
    }
}

/// A TCP test or a reverse UDP test running on a thread of its own.
struct Job {
    test_id: u64,
    peer: SocketAddr,
    /// A TCP test's data connections go here (admitted by their preamble).
    data: Option<Tx<(TcpStream, Vec<u8>)>>,
    /// An iperf3 test's cookie, where its data connections go, and its serial number.
    iperf3: Option<Iperf3Job>,
    /// Set to end the test now (a second signal).
    interrupt: Arc<AtomicBool>,
    handle: thread::JoinHandle<Result<(), String>>,
}

/// An iperf3 test on a thread of its own.
struct Iperf3Job {
    serial: u64,
    cookie: Vec<u8>,
    conns: Tx<(TcpStream, Vec<u8>)>,
    /// Refused at its parameter exchange (told ACCESS_DENIED): it ran no test, so it does not
    /// end `--once`.
    refused: Arc<AtomicBool>,
}

/// Who holds the receiver, shared with the iperf3 tests on their threads (each asks once its
/// parameters are accepted, see `Iperf3Ctx::hold`): how many netcore tests run, and which
/// iperf3 test holds it. Netcore tests are admitted under the same lock.
#[derive(Debug, Default)]
struct Hold {
    netcore: usize,
    iperf3: Option<u64>,
}

/// iperf3 clients that hold nothing yet (before their parameters are accepted) at most;
/// more are told ACCESS_DENIED.
const MAX_IPERF3_WAITING: usize = 4;

/// What a session handed on to a thread.
enum JobKind {
    /// The test id, its plan, its settings and its interval (its Setup's, or `--interval`).
    Tcp(u64, Plan, TcpSpec, Duration),
    Reverse(ReverseJob),
    Echo(EchoJob),
}

/// The control thread's state (see [`Receiver::serve`]).
struct Control {
    once: bool,
    max_tests: usize,
    slots: Vec<Slot>,
    jobs: Vec<Job>,
    /// Accepted connections whose first bytes have not arrived yet.
    fresh: Vec<(TcpStream, SocketAddr, Instant)>,
    ev_tx: Tx<Event>,
    ev_rx: Rx<Event>,
    /// A graceful stop was announced (`Event::Stopping`).
    announced: bool,
    /// Who holds the receiver (shared with iperf3 tests), and the last iperf3 serial.
    hold: Arc<std::sync::Mutex<Hold>>,
    serial: u64,
}

/// What a turn of the control thread knows of stop requests, and its time.
#[derive(Clone, Copy)]
struct Turn {
    stopping: bool,
    interrupt: bool,
    now: Instant,
    /// An iperf3 test holds the receiver (known under the lock, see [`Control::feed`]).
    iperf3: bool,
}

impl Control {
    fn new(once: bool, max_tests: usize) -> Control {
        let (ev_tx, ev_rx) = mpsc::channel::<Event>();
        Control {
            once,
            max_tests,
            slots: Vec::new(),
            jobs: Vec::new(),
            fresh: Vec::new(),
            ev_tx,
            ev_rx,
            announced: false,
            hold: Arc::default(),
            serial: 0,
        }
    }

    /// The shared state of who holds the receiver (a poisoned lock is still the state).
    fn hold_state(&self) -> std::sync::MutexGuard<'_, Hold> {
        self.hold.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Passes the jobs' events on and joins the jobs that ended (their failures reported).
    /// Returns the outcome of a job that ends `--once`.
    fn reap_jobs(&mut self, on_event: &mut dyn FnMut(Event)) -> Option<Result<()>> {
        while let Ok(e) = self.ev_rx.try_recv() {
            on_event(e);
        }
        // Tests on threads of their own that ended.
        let mut k = 0;
        while k < self.jobs.len() {
            if !self.jobs[k].handle.is_finished() {
                k += 1;
                continue;
            }
            let job = self.jobs.swap_remove(k);
            if let Some(i) = &job.iperf3 {
                let mut h = self.hold_state();
                if h.iperf3 == Some(i.serial) {
                    h.iperf3 = None;
                }
                h.netcore = running(&self.slots, &self.jobs);
            }
            let r = job
                .handle
                .join()
                .unwrap_or_else(|_| Err("the test's thread panicked".into()));
            while let Ok(e) = self.ev_rx.try_recv() {
                on_event(e);
            }
            if let Err(why) = &r {
                on_event(Event::Failed(format!("test from {}: {why}", job.peer)));
            }
            let refused = |i: &Iperf3Job| i.refused.load(Ordering::Relaxed);
            if self.once && !job.iperf3.as_ref().is_some_and(refused) {
                return Some(r.map_err(|e| anyhow::anyhow!(e)));
            }
        }
        None
    }

    /// Feeds slot `i`'s session its next message; a Hello is first checked against the
    /// admission rules (stopping, `max_tests`, a test id in use) and refused if it fails them.
    /// With a shared key, the rules are checked once the key is proved instead (issue #25:
    /// before, a sender without the key learned how many tests run and which test ids).
    fn feed(&mut self, i: usize, turn: Turn) {
        let msg = self.slots[i].next_msg();
        // Admitted under the lock iperf3 tests take the receiver with.
        let hold = self.hold.clone();
        let mut hold = hold.lock().unwrap_or_else(|e| e.into_inner());
        let turn = Turn {
            iperf3: hold.iperf3.is_some(),
            ..turn
        };
        let session = &self.slots[i].session;
        let refusal = match &msg {
            Some(Msg::Hello { test_id, .. }) if !session.has_test() && !session.keyed() => {
                self.refusal(i, *test_id, turn, 0)
            }
            _ => None,
        };
        let auth = matches!(msg, Some(Msg::Auth { .. }));
        if let (Some(m), None) = (msg, &refusal) {
            self.slots[i].session.on_msg(m, turn.now);
        }
        let session = &self.slots[i].session;
        let refusal = match refusal {
            // Proved: the session has its test now (it counts itself among those running).
            None if auth && session.has_test() => self.refusal(i, session.test_id(), turn, 1),
            r => r,
        };
        if let Some(why) = refusal {
            self.slots[i].session.refuse(why);
        }
        hold.netcore = running(&self.slots, &self.jobs);
    }

    /// Why slot `i`'s test `test_id` may not start, if it may not; `own`: whether slot `i`
    /// counts among the running tests already.
    fn refusal(&self, i: usize, test_id: u64, turn: Turn, own: usize) -> Option<String> {
        let peer = self.slots[i].peer.ip();
        let admit = Admission {
            running: running(&self.slots, &self.jobs).saturating_sub(own),
            from_peer: running_from(&self.slots, &self.jobs, peer).saturating_sub(own),
            max_tests: self.max_tests,
            stopping: turn.stopping,
            iperf3: turn.iperf3,
        };
        admit.refusal(id_in_use(&self.slots, &self.jobs, i, test_id))
    }

    /// A session that ended with `r`: its failure reported. Returns the outcome when it ends
    /// `--once`.
    fn slot_ended(
        &self,
        slot: Slot,
        r: Result<(), String>,
        on_event: &mut dyn FnMut(Event),
    ) -> Option<Result<()>> {
        let had_test = slot.udp;
        if let Err(why) = &r {
            on_event(Event::Failed(if had_test {
                format!("test from {}: {why}", slot.peer)
            } else {
                format!("connection from {}: {why}", slot.peer)
            }));
        }
        // A connection that never started a test (a port scan, a refused Hello) does not end
        // `--once`.
        if self.once && had_test {
            return Some(r.map_err(|e| anyhow::anyhow!(e)));
        }
        None
    }
}

/// Carries out the actions a slot's session queued: messages to its peer, commands to the
/// UDP thread, events to the caller.
fn carry_out(
    slot: &mut Slot,
    cmd_tx: &Tx<Cmd>,
    now: Instant,
    on_event: &mut dyn FnMut(Event),
) -> Result<Carried> {
    let mut ended = None;
    let mut job = None;
    for a in slot.session.take_actions() {
        match a {
            Action::Send(m) => {
                if let Err(e) = slot.conn.send(&m) {
                    slot.session.on_control_lost(format!("{e:#}"), now);
                }
            }
            Action::Cmd(c) => {
                if let Cmd::Start(_) = c {
                    slot.udp = true;
                }
                cmd_tx.send(c)?;
            }
            Action::Started { test_id, len } => on_event(Event::Started {
                peer: slot.peer,
                test_id,
                len,
            }),
            Action::Interval(row) => on_event(Event::Interval {
                test_id: slot.session.test_id(),
                row,
            }),
            Action::Finished(r) => on_event(Event::Finished(r)),
            Action::Tcp {
                test_id,
                plan,
                spec,
                interval,
            } => job = Some(JobKind::Tcp(test_id, plan, spec, interval)),
            Action::UdpReverse(r) => job = Some(JobKind::Reverse(r)),
            Action::Echo(e) => job = Some(JobKind::Echo(e)),
            Action::End(r) => ended = Some(r),
        }
    }
    Ok(Carried { job, ended })
}

/// What carrying out a session's actions left to do.
struct Carried {
    /// The job the session handed its test to.
    job: Option<JobKind>,
    /// How the session ended, if it did.
    ended: Option<Result<(), String>>,
}

/// netcore tests running: sessions past their Hello and tests on threads of their own
/// (iperf3's hold the receiver apart, see [`Hold`]).
fn running(slots: &[Slot], jobs: &[Job]) -> usize {
    slots.iter().filter(|s| s.session.has_test()).count()
        + jobs.iter().filter(|j| j.iperf3.is_none()).count()
}

/// netcore tests running from `peer`'s address (an IPv6 /64), as [`running`] counts them.
fn running_from(slots: &[Slot], jobs: &[Job], peer: IpAddr) -> usize {
    let key = peer_key(peer);
    let ours = |ip: IpAddr| peer_key(ip) == key;
    slots
        .iter()
        .filter(|s| s.session.has_test() && ours(s.peer.ip()))
        .count()
        + jobs
            .iter()
            .filter(|j| j.iperf3.is_none() && ours(j.peer.ip()))
            .count()
}

/// Whether test id `id` runs already (in a session but slot `i`'s, or on a thread).
fn id_in_use(slots: &[Slot], jobs: &[Job], i: usize, id: u64) -> bool {
    let in_slot =
        |(j, s): (usize, &Slot)| j != i && s.session.has_test() && s.session.test_id() == id;
    slots.iter().enumerate().any(in_slot)
        || jobs.iter().any(|j| j.iperf3.is_none() && j.test_id == id)
}

/// With `--max-tests` of at least this many, one address may hold all the slots but one.
const SHARED_SLOTS_FROM: usize = 3;

/// Whether a new Hello may start a test.
struct Admission {
    running: usize,
    /// Of those, the ones from the new test's address.
    from_peer: usize,
    max_tests: usize,
    stopping: bool,
    /// An iperf3 test holds the receiver.
    iperf3: bool,
}

impl Admission {
    /// Why a Hello is refused (`in_use`: its test id is running already), if it is.
    fn refusal(&self, in_use: bool) -> Option<String> {
        if self.stopping {
            Some(STOPPING.into())
        } else if self.iperf3 {
            Some(iperf3::ctl::BUSY.into())
        } else if self.running >= self.max_tests {
            match RecvSession::busy_message(self.running) {
                Msg::Error { message } => Some(message),
                _ => None,
            }
        } else if self.max_tests >= SHARED_SLOTS_FROM && self.from_peer + 1 >= self.max_tests {
            Some(format!(
                "the receiver is busy: {} of its {} test slots are this address's; the last \
                 one stays for another address",
                self.from_peer, self.max_tests
            ))
        } else if in_use {
            Some("a test with this test id is running already".into())
        } else {
            None
        }
    }
}

/// The UDP thread's news about test `id`, to the session that has it.
fn route_out(slots: &mut [Slot], id: u64, o: Out, now: Instant) {
    if let Some(s) = slots
        .iter_mut()
        .find(|s| s.udp && s.session.test_id() == id)
    {
        s.session.on_udp(o, now);
    }
}

/// A data connection (its preamble read) to its TCP test; refused when no such test runs.
fn route_data(stream: TcpStream, (id, preamble): (u64, Vec<u8>), jobs: &[Job]) {
    let job = jobs.iter().find(|j| j.test_id == id);
    match job.and_then(|j| j.data.as_ref()) {
        Some(tx) => {
            if let Err(mpsc::SendError((s, _))) = tx.send((stream, preamble)) {
                refuse_conn(&s, "the test has ended");
            }
        }
        None => refuse_conn(&stream, "no such test is running here"),
    }
}

/// Why a new test is refused once a stop was asked (a netcore client is told it; an iperf3
/// client, ACCESS_DENIED).
const STOPPING: &str = "the receiver is stopping";

/// Whether a stop was asked: by whoever started the receiver (`stop`) or by a signal; no new
/// test starts then.
fn stop_asked(stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed) || signal::stop_requested()
}

/// The log line of an iperf3 client refused (at its cookie or its parameters) for `why`.
fn iperf3_refused(peer: SocketAddr, why: &str) -> Event {
    Event::Failed(format!("iperf3 client {peer} refused: {why}"))
}

/// Tells a connection why it is refused (one control message, 100 ms at most) and closes it.
fn refuse_conn(stream: &TcpStream, why: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let m = Msg::Error {
        message: why.to_string(),
    };
    let _ = std::io::Write::write_all(&mut &*stream, &crate::flow::control::encode(&m));
}

/// Peeks (non-blocking) at a connection that opened like an iperf3 client for its whole
/// cookie: `Data((0, cookie))` once all of it is there, `Wait` while part of it is (for as
/// long as [`SILENT_GRACE`]), `No` after that.
fn iperf3_cookie(s: &TcpStream, since: Instant, now: Instant) -> Preamble {
    let mut b = [0u8; crate::interop::iperf3::msg::COOKIE_LEN];
    let _ = s.set_nonblocking(true);
    let n = s.peek(&mut b).unwrap_or(0);
    let _ = s.set_nonblocking(false);
    if n == b.len() {
        Preamble::Data((0, b.to_vec()))
    } else if now.duration_since(since) < SILENT_GRACE {
        Preamble::Wait
    } else {
        Preamble::No
    }
}

/// What a new connection's first bytes say about a TCP test's data connection.
enum Preamble {
    /// Part of a preamble so far: ask again.
    Wait,
    /// A data connection of test `.0`; the preamble has been read off the socket.
    Data((u64, Vec<u8>)),
    /// Not a data connection.
    No,
}

/// Peeks (non-blocking) at a connection that is not iperf3's for a TCP data connection's
/// preamble; `since`: when it was accepted (a partial preamble is waited for as long as
/// [`SILENT_GRACE`]).
fn data_preamble(s: &TcpStream, since: Instant, now: Instant) -> Preamble {
    let mut b = [0u8; PREAMBLE_LEN];
    let _ = s.set_nonblocking(true);
    let n = s.peek(&mut b).unwrap_or(0);
    let _ = s.set_nonblocking(false);
    if n == 0 || !preamble_prefix(&b[..n]) {
        return Preamble::No;
    }
    if n < PREAMBLE_LEN {
        return if now.duration_since(since) < SILENT_GRACE {
            Preamble::Wait
        } else {
            Preamble::No
        };
    }
    match decode_preamble(&b).map(|p| p.test_id) {
        Some(id) => {
            let mut p = vec![0u8; PREAMBLE_LEN];
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            match std::io::Read::read_exact(&mut &*s, &mut p) {
                Ok(()) => Preamble::Data((id, p)),
                Err(_) => Preamble::No,
            }
        }
        None => Preamble::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(running: usize, from_peer: usize, max_tests: usize) -> Admission {
        Admission {
            running,
            from_peer,
            max_tests,
            stopping: false,
            iperf3: false,
        }
    }

    #[test]
    fn one_address_may_hold_every_slot_but_one() {
        // --max-tests 4: three from one address, the fourth only for another.
        assert_eq!(admission(2, 2, 4).refusal(false), None);
        let why = admission(3, 3, 4).refusal(false).expect("refused");
        assert!(why.contains("3 of its 4 test slots"), "{why}");
        assert_eq!(admission(3, 1, 4).refusal(false), None, "another address");
        // Two slots or one: no share (a UDP --bidir is two tests from one address).
        assert_eq!(admission(1, 1, 2).refusal(false), None);
        assert!(admission(2, 0, 2).refusal(false).is_some(), "full is full");
        // The other reasons come first.
        let full = admission(4, 0, 4).refusal(false).unwrap();
        assert!(!full.contains("this address"), "{full}");
    }
}
