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
//! io_uring loop (multishot `RECVMSG` into provided buffers, `super::uring`). Both hand every
//! buffer to the same [`Core`] (per-datagram accounting, intervals, the end of a test).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver as Rx, RecvTimeoutError, Sender as Tx, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use super::recv_core::RxWait;
use super::recv_core::{Cmd, Core, Out, UdpCtx, POLL_NAP};
use super::recv_session::{Action, Limits, RecvSession, SessionCtx};
use super::report::{IntervalRow, UdpReport};
use super::sender::{self, BlastOptions};
use super::tracker::DEFAULT_WINDOW;
use super::wire;
use crate::flow::backend::{self, Backend};
use crate::flow::control::{Conn, Malformed, Msg, Reverse};
use crate::flow::host::host_name;
use crate::flow::iperf3::{self, Iperf3Ctx, Iperf3Event, Opener};
use crate::flow::tcp::{self, server::ServerCtx, server::TcpEvent};
use crate::sys::mmsg::{gro_segment_in, rxq_ovfl_in, RecvBatch};
use crate::sys::sockopt::{self, BufMethod};
use crate::sys::{affinity, realtime_ns, signal};

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
    Interval(IntervalRow),
    Finished(Box<UdpReport>),
    /// A TCP test's progress and report.
    Tcp(TcpEvent),
    /// An iperf3 client's test (`flow::iperf3`).
    Iperf3(Iperf3Event),
    /// A test that could not run or was cut short (the report, if any, came as Finished).
    Failed(String),
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
    if addr.port() != 0 {
        let udp = sockopt::udp_bind_reuseport(addr)?;
        let tcp = TcpListener::bind(addr)?;
        return Ok((udp, tcp));
    }
    // Port 0: find a port free for both UDP and TCP.
    let mut last = None;
    for _ in 0..32 {
        let udp = sockopt::udp_bind_reuseport(addr)?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
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
    pub fn stopper(&self) -> Arc<AtomicBool> {
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
    fn spawn_udp_thread(&self) -> Result<(Tx<Cmd>, Rx<Out>, thread::JoinHandle<()>)> {
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
            interval: self.opts.interval,
            backend: self.backend,
            sock: udp.as_raw_fd(),
            rxq_ovfl: self.rxq_ovfl,
        };
        let core = Core::new(ctx, cmd_rx, out_tx);
        let backend = self.backend;
        let worker =
            thread::Builder::new()
                .name("netcore-recv".into())
                .spawn(move || match backend {
                    #[cfg(feature = "uring")]
                    Backend::Uring => super::uring::recv_thread(udp, core),
                    _ => udp_thread(udp, core),
                })?;
        Ok((cmd_tx, out_rx, worker))
    }

    /// The client's end of a reverse test (`-R`, see [`super::reverse`]): this receiver's UDP
    /// thread and a [`RecvSession`] take the test that `hello` (already sent on `conn`, and
    /// answered with Ready) describes; the session's Ready becomes the opener datagrams to
    /// `server`, the rest of its messages go to the server, which sends the datagrams and
    /// Done. Returns the receiver's report.
    pub fn receive_reverse(
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
            },
            now,
        );
        let mut report = None;
        let result = loop {
            let now = Instant::now();
            while let Ok(o) = out_rx.try_recv() {
                session.on_udp(o, now);
            }
            read_control(&mut session, &mut conn, now);
            session.on_tick(now, signal::stop_requested());
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
                    Action::Interval(row) => on_event(Event::Interval(row)),
                    Action::Finished(r) => report = Some(r),
                    Action::End(r) => ended = Some(r),
                    Action::Started { .. } | Action::Tcp { .. } | Action::UdpReverse(_) => {}
                }
            }
            if let Some(r) = ended {
                break r;
            }
            if let Ok(o) = out_rx.recv_timeout(Duration::from_millis(5)) {
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
    /// holding the receiver), at most one test, every wait bounded (see [`RecvSession`]).
    fn control_loop(
        &self,
        once: bool,
        cmd_tx: &Tx<Cmd>,
        out_rx: &Rx<Out>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let mut slots: Vec<Slot> = Vec::new();
        // Accepted connections whose first byte has not arrived yet.
        let mut fresh: Vec<(TcpStream, SocketAddr, Instant)> = Vec::new();
        // The slot whose session holds the test, if any.
        let mut active: Option<usize> = None;
        loop {
            let stop = signal::stop_requested() || self.stop.load(Ordering::Relaxed);
            if stop && active.is_none() && slots.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            // New connections wait in `fresh` until their first byte says who they are
            // (`flow::iperf3::detect`): an iperf3 cookie goes to the iperf3 driver, anything
            // else to netcore's session.
            loop {
                match self.listener.accept() {
                    Ok((stream, peer)) => fresh.push((stream, peer, now)),
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
            let mut k = 0;
            while k < fresh.len() {
                let opener = iperf3::opener(&fresh[k].0, fresh[k].2, now);
                if opener == Opener::Wait {
                    k += 1;
                    continue;
                }
                let (stream, peer, _) = fresh.swap_remove(k);
                if opener == Opener::Iperf3 {
                    let ran = self.iperf3(stream, peer, active.is_some(), &mut slots, on_event);
                    if once && ran.is_some() {
                        return ran.unwrap_or(Ok(()));
                    }
                    continue;
                }
                // Told at once when the receiver is busy or has too many waiting.
                let refuse = if active.is_some() {
                    Some(RecvSession::busy_message())
                } else if slots.len() >= MAX_WAITING {
                    Some(Msg::Error {
                        message: format!(
                            "receiver has {MAX_WAITING} connections waiting for a Hello; try again"
                        ),
                    })
                } else {
                    None
                };
                match refuse {
                    Some(m) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                        let _ = std::io::Write::write_all(
                            &mut &stream,
                            &crate::flow::control::encode(&m),
                        );
                    }
                    None => {
                        if let Some(slot) = self.slot(stream, peer, now) {
                            slots.push(slot);
                        }
                    }
                }
            }
            // What the UDP thread says belongs to the test (or to none: dropped).
            loop {
                match out_rx.try_recv() {
                    Ok(o) => {
                        if let Some(i) = active {
                            slots[i].session.on_udp(o, now);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => bail!("receive thread ended"),
                }
            }
            let mut i = 0;
            while i < slots.len() {
                let slot = &mut slots[i];
                read_control(&mut slot.session, &mut slot.conn, now);
                slot.session.on_tick(now, stop);
                let mut ended = None;
                let mut tcp_job = None;
                let mut reverse_job = None;
                for a in slot.session.take_actions() {
                    match a {
                        Action::Send(m) => {
                            if let Err(e) = slot.conn.send(&m) {
                                slot.session.on_control_lost(format!("{e:#}"), now);
                            }
                        }
                        Action::Cmd(c) => {
                            if let Cmd::Start(_) = c {
                                // Drop anything a previous test's result left behind.
                                while out_rx.try_recv().is_ok() {}
                                active = Some(i);
                            }
                            cmd_tx.send(c)?;
                        }
                        Action::Started { test_id, len } => on_event(Event::Started {
                            peer: slot.peer,
                            test_id,
                            len,
                        }),
                        Action::Interval(row) => on_event(Event::Interval(row)),
                        Action::Finished(r) => on_event(Event::Finished(r)),
                        Action::Tcp {
                            test_id,
                            plan,
                            spec,
                        } => tcp_job = Some((test_id, plan, spec)),
                        Action::UdpReverse(job) => reverse_job = Some(job),
                        Action::End(r) => ended = Some(r),
                    }
                }
                let tcp_ran = tcp_job.is_some() || reverse_job.is_some();
                if let Some(job) = reverse_job {
                    // A reverse UDP test holds the receiver until it ends, sending from a
                    // socket of its own (`super::reverse`).
                    for (j, other) in slots.iter_mut().enumerate() {
                        if j != i {
                            let _ = other.conn.send(&RecvSession::busy_message());
                        }
                    }
                    let r = super::reverse::serve(
                        &mut slots[i].conn,
                        job,
                        self.local_addr().ip(),
                        self.opts.cpu,
                        &mut |row| on_event(Event::Interval(*row)),
                    );
                    ended = Some(match r {
                        Ok(report) => {
                            on_event(Event::Finished(Box::new(report)));
                            Ok(())
                        }
                        Err(e) => Err(format!("{e:#}")),
                    });
                }
                if let Some((test_id, plan, spec)) = tcp_job {
                    // A TCP test holds the receiver until it ends: its data connections arrive
                    // on this listener, and run_test admits them by their preamble.
                    for (j, other) in slots.iter_mut().enumerate() {
                        if j != i {
                            let _ = other.conn.send(&RecvSession::busy_message());
                        }
                    }
                    let ctx = ServerCtx {
                        listener: &self.listener,
                        interval: self.opts.interval,
                        cpu: self.opts.cpu,
                        target: self.local_addr().to_string(),
                    };
                    let conn = &mut slots[i].conn;
                    let r = tcp::server::run_test(conn, ctx, test_id, plan, spec, &mut |e| {
                        on_event(Event::Tcp(e))
                    });
                    ended = Some(r.map_err(|e| format!("{e:#}")));
                }
                // Actions queued while carrying out the others (a failed send) come next turn.
                let had_test = active == Some(i) || tcp_ran;
                if let Some(r) = ended {
                    let peer = slots[i].peer;
                    slots.remove(i);
                    if active == Some(i) {
                        active = None;
                    } else if let Some(a) = active.as_mut() {
                        if *a > i {
                            *a -= 1;
                        }
                    }
                    if let Err(why) = &r {
                        on_event(Event::Failed(if had_test {
                            format!("test from {peer}: {why}")
                        } else {
                            format!("connection from {peer}: {why}")
                        }));
                    }
                    // A connection that never started a test (a port scan, a refused
                    // Hello) does not end `--once`.
                    if once && had_test {
                        return r.map_err(|e| anyhow::anyhow!(e));
                    }
                    continue;
                }
                if active == Some(i) {
                    // The test has the receiver: whoever else waits is told so.
                    let mut j = 0;
                    slots.retain_mut(|s| {
                        let keep = j == i;
                        if !keep {
                            let _ = s.conn.send(&RecvSession::busy_message());
                        }
                        j += 1;
                        keep
                    });
                    i = 0;
                    active = Some(0);
                }
                i += 1;
            }
            // Nothing here waits long: a turn every few milliseconds sees signals, deadlines
            // and the UDP thread's news.
            match active {
                Some(_) => match out_rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(o) => {
                        if let Some(i) = active {
                            slots[i].session.on_udp(o, Instant::now());
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => bail!("receive thread ended"),
                },
                None => thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Serves an iperf3 client (its first byte started a cookie) on this thread: the test holds
    /// the receiver while it runs, as a TCP test does, and whoever waits for a Hello is told
    /// the receiver is busy. Refused with ACCESS_DENIED while a netcore test runs. Returns
    /// the test's outcome, or None when it was refused.
    fn iperf3(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        busy: bool,
        slots: &mut Vec<Slot>,
        on_event: &mut dyn FnMut(Event),
    ) -> Option<Result<()>> {
        if busy {
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = std::io::Write::write_all(
                &mut &stream,
                &[crate::interop::iperf3::State::AccessDenied.byte()],
            );
            return None;
        }
        for s in slots.drain(..) {
            let mut c = s.conn;
            let _ = c.send(&RecvSession::busy_message());
        }
        let ctx = Iperf3Ctx {
            listener: &self.listener,
            interval: self.opts.interval,
            cpu: self.opts.cpu,
            target: self.local_addr().to_string(),
            udp: self.udp.local_addr().ok()?,
            rcvbuf: self.rcvbuf,
        };
        let r = iperf3::serve(stream, peer, ctx, &mut |e| on_event(Event::Iperf3(e)));
        if let Err(e) = &r {
            on_event(Event::Failed(format!(
                "iperf3 client {peer}: {}",
                format!("{e:#}").replace('\n', " ")
            )));
        }
        Some(r)
    }

    /// A session for a new connection (None if the socket cannot be set up).
    fn slot(&self, stream: TcpStream, peer: SocketAddr, now: Instant) -> Option<Slot> {
        stream.set_nonblocking(false).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .ok()?;
        let conn = Conn::new(stream).ok()?;
        Some(Slot {
            conn,
            peer,
            session: RecvSession::new(self.session_ctx(peer), now),
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
            limits: Limits::default(),
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
pub fn run_reverse(
    opts: &BlastOptions,
    rx: RecvOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<UdpReport> {
    let opts = &sender::resolve(opts)?;
    // The local address that routes to the server (no packet is sent by connecting).
    let probe = UdpSocket::bind(sender::unspecified(opts.target))?;
    probe
        .connect(opts.control)
        .with_context(|| format!("cannot reach {}", opts.control))?;
    let r = Receiver::bind(RecvOptions {
        listen: SocketAddr::new(probe.local_addr()?.ip(), 0),
        ..rx
    })?;
    let pps = opts.rate.map(|r| r.packets_per_sec(opts.len));
    let (mut c, test_id) = sender::open(opts, Some(Reverse { pps }))?;
    let port = match sender::expect_ready(&mut c)? {
        Msg::Ready { port: Some(p), .. } => p,
        Msg::Ready { .. } => bail!("the receiver answered -R without a port to receive from"),
        other => bail!("expected Ready from the receiver, got {}", other.name()),
    };
    let hello = sender::hello(opts, test_id);
    r.receive_reverse(c, hello, SocketAddr::new(opts.control.ip(), port), on_event)
}

/// Connections waiting for their Hello at most; more are told to try again.
const MAX_WAITING: usize = 16;

/// One control connection and its session.
struct Slot {
    conn: Conn,
    peer: SocketAddr,
    session: RecvSession,
}

/// The `mio` backend's UDP thread: `recvmmsg` batches. Between tests it blocks (10 ms socket
/// timeout, so commands are seen); during a test it waits as `RxWait` says.
fn udp_thread(sock: UdpSocket, mut core: Core) {
    if let Some(cpu) = core.ctx.cpu {
        affinity::pin_current(cpu);
    }
    let _ = sock.set_read_timeout(Some(Duration::from_millis(10)));
    let mut batch = RecvBatch::new(core.ctx.batch, 1 << 16);
    while core.commands() {
        let block = !core.in_test() || core.ctx.wait == RxWait::Block;
        // An error here is a timeout, EINTR, an empty socket (non-blocking read), or an ICMP
        // error queued on the socket.
        let n = batch.recv(&sock, block).unwrap_or_default();
        if n == 0 && !block && core.ctx.wait == RxWait::Poll {
            std::thread::sleep(POLL_NAP);
        }
        if n > 0 && core.in_test() {
            let now_ns = realtime_ns();
            let mut drops = None;
            for i in 0..n {
                let (m, truncated) = batch.message(i);
                let control = batch.control(i);
                core.on_buffer(m, truncated, gro_segment_in(control), now_ns);
                drops = rxq_ovfl_in(control).or(drops);
            }
            if let Some(d) = drops {
                core.on_drops(d);
            }
        }
        core.end_batch(n > 0);
    }
}
