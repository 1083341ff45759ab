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

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver as Rx, RecvTimeoutError, Sender as Tx, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use super::recv_core::RxWait;
use super::recv_core::{Cmd, Core, Out, TestParams, UdpCtx, POLL_NAP};
use super::report::{IntervalRow, SenderStats, UdpReport, SCHEMA};
use super::tracker::DEFAULT_WINDOW;
use super::wire::{HEADER_LEN, MAX_DATAGRAM};
use crate::flow::backend::{self, Backend};
use crate::flow::control::{Conn, Msg, Plan, PROTOCOL_VERSION};
use crate::flow::host::host_name;
use crate::flow::tcp::{self, server::ServerCtx, server::TcpEvent};
use crate::sys::mmsg::RecvBatch;
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
    /// A test that could not run or was cut short (the report, if any, came as Finished).
    Failed(String),
    /// A TCP test's interval or report (TCP tests are served by `flow::tcp::server`).
    Tcp(TcpEvent),
}

/// A bound receiver, ready to serve.
pub struct Receiver {
    udp: UdpSocket,
    listener: TcpListener,
    opts: RecvOptions,
    rcvbuf: usize,
    rcvbuf_method: BufMethod,
    gro: bool,
    backend: Backend,
    /// Set by whoever started the receiver to stop waiting for a test (see
    /// [`Receiver::stopper`]).
    stop: Arc<AtomicBool>,
}

fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr)?;
        let tcp = TcpListener::bind(addr)?;
        return Ok((udp, tcp));
    }
    // Port 0: find a port free for both UDP and TCP.
    let mut last = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind(addr)?;
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
        listener.set_nonblocking(true)?;
        Ok(Receiver {
            udp,
            listener,
            opts,
            rcvbuf,
            rcvbuf_method,
            gro,
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
        let mut result = Ok(());
        loop {
            if signal::stop_requested() || self.stop.load(Ordering::Relaxed) {
                break;
            }
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    on_event(Event::Failed(format!("accept failed: {e}")));
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let outcome = self.run_test(stream, peer, &cmd_tx, &out_rx, on_event);
            if let Err(e) = &outcome {
                on_event(Event::Failed(format!("test from {peer}: {e:#}")));
            }
            if once {
                result = outcome;
                break;
            }
        }
        let _ = cmd_tx.send(Cmd::Quit);
        let _ = worker.join();
        result
    }

    fn run_test(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        cmd_tx: &Tx<Cmd>,
        out_rx: &Rx<Out>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<()> {
        stream.set_nonblocking(false)?;
        let mut c = Conn::new(stream)?;
        let hello = c.expect("Hello", Duration::from_secs(5))?;
        let Msg::Hello {
            version,
            test_id,
            len,
            plan,
            streams,
            verify,
            host,
        } = hello
        else {
            let _ = c.send(&Msg::Error {
                message: "expected Hello".into(),
            });
            bail!("expected Hello, got {hello:?}");
        };
        let refuse = |c: &mut Conn, why: String| -> Result<()> {
            let _ = c.send(&Msg::Error {
                message: why.clone(),
            });
            bail!(why)
        };
        if version != PROTOCOL_VERSION {
            return refuse(
                &mut c,
                format!("protocol version {version} not supported (this receiver speaks {PROTOCOL_VERSION})"),
            );
        }
        match c.expect("Setup", Duration::from_secs(5))? {
            Msg::Setup { tcp: None } => {}
            Msg::Setup { tcp: Some(spec) } => {
                let ctx = ServerCtx {
                    listener: &self.listener,
                    interval: self.opts.interval,
                    cpu: self.opts.cpu,
                    target: self.local_addr().to_string(),
                };
                return tcp::server::run_test(&mut c, ctx, test_id, plan, spec, &mut |e| {
                    on_event(Event::Tcp(e))
                });
            }
            other => return refuse(&mut c, format!("expected Setup, got {other:?}")),
        }
        if !(HEADER_LEN..=MAX_DATAGRAM).contains(&(len as usize)) {
            return refuse(&mut c, format!("datagram length {len} out of range"));
        }
        if streams != 1 {
            return refuse(
                &mut c,
                format!("{streams} streams requested; one is supported"),
            );
        }
        let same_host = host == host_name() || peer.ip().is_loopback();
        // Drop anything a previous test's result left behind.
        while out_rx.try_recv().is_ok() {}
        cmd_tx.send(Cmd::Start(TestParams { test_id, same_host }))?;
        // Ready only once the UDP thread has the test: no early datagram is taken for a stray.
        match out_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Out::Started) => {}
            Ok(Out::Failed(why)) => {
                let _ = c.send(&Msg::Error {
                    message: why.clone(),
                });
                bail!(why)
            }
            _ => bail!("receive thread did not start the test"),
        }
        c.send(&Msg::Ready {
            rcvbuf: self.rcvbuf as u64,
            gro: self.gro,
        })?;
        on_event(Event::Started { peer, test_id, len });

        let started = Instant::now();
        let silence_limit = match plan {
            Plan::TimeNs(ns) => Duration::from_nanos(ns) + Duration::from_secs(30),
            Plan::Count(_) => Duration::from_secs(30),
        };
        let mut last_progress = (Instant::now(), 0u64);
        let (mut prev_t, mut prev_bytes) = (0.0f64, 0u64);
        let mut done: Option<(u64, u64, u64, BTreeMap<String, u64>)> = None;
        let mut finish_asked = false;
        let mut sender_cpu = None;
        let mut failure: Option<String> = None;
        let mut intervals = Vec::new();
        loop {
            // Results and interval figures from the UDP thread.
            let out = if done.is_some() || failure.is_some() {
                match out_rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(o) => Some(o),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => bail!("receive thread ended"),
                }
            } else {
                match out_rx.try_recv() {
                    Ok(o) => Some(o),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => bail!("receive thread ended"),
                }
            };
            match out {
                Some(Out::Interval {
                    t,
                    datagrams,
                    bytes,
                    lost_so_far,
                }) => {
                    let row = IntervalRow {
                        start: prev_t,
                        t,
                        sent: 0,
                        sent_bps: 0.0,
                        received: datagrams,
                        received_bps: bytes.saturating_sub(prev_bytes) as f64 * 8.0
                            / (t - prev_t).max(1e-9),
                        lost_so_far,
                    };
                    intervals.push(row);
                    (prev_t, prev_bytes) = (t, bytes);
                    if datagrams > last_progress.1 {
                        last_progress = (Instant::now(), datagrams);
                    }
                    if failure.is_none() {
                        let _ = c.send(&Msg::Interval {
                            t,
                            datagrams,
                            bytes,
                            lost_so_far,
                        });
                    }
                    on_event(Event::Interval(row));
                }
                Some(Out::Finished(stats)) => {
                    let (sent, sbytes, elapsed_ns, errors) = done.clone().unwrap_or_else(|| {
                        let s = stats.accounting.sent;
                        (s, 0, 0, BTreeMap::new())
                    });
                    let secs = elapsed_ns as f64 / 1e9;
                    let report = UdpReport {
                        schema: SCHEMA.into(),
                        role: "receiver".into(),
                        test_id: format!("{test_id:016x}"),
                        len,
                        verify,
                        target: self.local_addr().to_string(),
                        sender: SenderStats {
                            sent,
                            bytes: sbytes,
                            elapsed_s: secs,
                            rate_bps: if secs > 0.0 {
                                sbytes as f64 * 8.0 / secs
                            } else {
                                0.0
                            },
                            pps: if secs > 0.0 { sent as f64 / secs } else { 0.0 },
                            errors,
                            cpu_usage: sender_cpu,
                            ..Default::default()
                        },
                        receiver: (*stats).clone(),
                        intervals,
                    };
                    if failure.is_none() {
                        c.send(&Msg::Report { receiver: stats })?;
                    }
                    on_event(Event::Finished(Box::new(report)));
                    return match failure {
                        Some(f) => bail!(f),
                        None => Ok(()),
                    };
                }
                Some(Out::Started) => {}
                Some(Out::Failed(why)) => {
                    let _ = c.send(&Msg::Error {
                        message: why.clone(),
                    });
                    bail!(why);
                }
                None => {}
            }
            if finish_asked {
                continue;
            }
            // Another sender knocking while this test runs is told so, not left waiting.
            if let Ok((mut other, _)) = self.listener.accept() {
                let _ = std::io::Write::write_all(
                    &mut other,
                    &crate::flow::control::encode(&Msg::Error {
                        message: "receiver is busy with another test".into(),
                    }),
                );
            }
            let interrupted = signal::stop_requested();
            let silent =
                last_progress.0.elapsed() > silence_limit && started.elapsed() > silence_limit;
            if interrupted || silent {
                failure = Some(if interrupted {
                    "interrupted".into()
                } else {
                    "the sender went silent (no datagrams and no Done)".into()
                });
                cmd_tx.send(Cmd::Finish { sent: None })?;
                finish_asked = true;
                continue;
            }
            match c.recv_until(Instant::now() + Duration::from_millis(20)) {
                Ok(Some(Msg::Done {
                    sent,
                    bytes,
                    elapsed_ns,
                    errors,
                    cpu,
                })) => {
                    sender_cpu = cpu;
                    done = Some((sent, bytes, elapsed_ns, errors));
                    cmd_tx.send(Cmd::Finish { sent: Some(sent) })?;
                    finish_asked = true;
                }
                Ok(Some(other)) => {
                    failure = Some(format!("unexpected control message {other:?}"));
                    cmd_tx.send(Cmd::Finish { sent: None })?;
                    finish_asked = true;
                }
                Ok(None) => {}
                Err(e) => {
                    failure = Some(format!("control channel lost before Done: {e:#}"));
                    cmd_tx.send(Cmd::Finish { sent: None })?;
                    finish_asked = true;
                }
            }
        }
    }
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
            for i in 0..n {
                let (m, truncated) = batch.message(i);
                core.on_buffer(m, truncated, batch.gro_segment(i), now_ns);
            }
        }
        core.end_batch(n > 0);
    }
}
