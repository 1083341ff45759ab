//! The side that serves a TCP test (`recv`, and `blast`'s embedded receiver). The UDP
//! receiver's control thread reads the Hello and the Setup and hands a TCP test here, with the
//! control connection and the listener: data connections arrive on that same listener and
//! name their test and stream in a preamble.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::client::{job_for, sample};
use super::report::{CpuSides, IntervalMeter, StreamEnd, TcpInterval, TcpReport, SCHEMA};
use super::spec::{decode_preamble, Dir, TcpSpec, PREAMBLE_LEN};
use super::stream::{self, bytes_moved, configure, Running};
use crate::flow::control::{encode, Conn, Msg, Plan};
use crate::flow::cpu::CpuUsage;
use crate::sys::signal;

/// What the server side of a TCP test reports as it runs.
#[derive(Debug)]
pub enum TcpEvent {
    Interval(TcpInterval),
    Finished(Box<TcpReport>),
}

/// The receiver's surroundings a TCP test runs in.
pub struct ServerCtx<'a> {
    /// The control listener (non-blocking); data connections arrive here too.
    pub listener: &'a TcpListener,
    pub interval: Duration,
    /// The CPU for every data connection thread, if pinned.
    pub cpu: Option<usize>,
    /// The address the report names.
    pub target: String,
}

/// How long the client has to open every data connection after Ready.
const CONNECT_WINDOW: Duration = Duration::from_secs(10);

fn busy(mut s: TcpStream) {
    let _ = s.write_all(&encode(&Msg::Error {
        message: "receiver is busy with another test".into(),
    }));
}

/// The next data connection waiting on the shared (non-blocking) listener and its first
/// `head` bytes, read within 5 s; None when nothing waits or the connection sent less. Shared
/// by every driver that admits data connections from the receiver's listener (netcore's TCP
/// test by its preamble, iperf3's by its cookie).
pub fn next_data_conn(listener: &TcpListener, head: usize) -> Option<(TcpStream, Vec<u8>)> {
    let (s, _) = listener.accept().ok()?;
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut p = vec![0u8; head];
    (&s).read_exact(&mut p).ok()?;
    Some((s, p))
}

/// A data connection's stream id if its preamble belongs to `test_id`; anything else is told
/// the receiver is busy.
fn admit(s: TcpStream, p: &[u8], test_id: u64, n: usize) -> Option<(u32, TcpStream)> {
    match decode_preamble(p) {
        Some((id, stream)) if id == test_id && (stream as usize) < n => Some((stream, s)),
        _ => {
            busy(s);
            None
        }
    }
}

/// Serves one TCP test on an accepted control connection whose Hello and Setup were read.
pub fn run_test(
    c: &mut Conn,
    ctx: ServerCtx,
    test_id: u64,
    plan: Plan,
    spec: TcpSpec,
    on_event: &mut dyn FnMut(TcpEvent),
) -> Result<()> {
    let refuse = |c: &mut Conn, why: String| -> Result<()> {
        let _ = c.send(&Msg::Error {
            message: why.clone(),
        });
        bail!(why)
    };
    if let Err(why) = spec.check() {
        return refuse(c, why);
    }
    c.send(&Msg::Ready {
        rcvbuf: 0,
        gro: false,
        port: None,
    })?;
    let dirs = spec.directions();
    let stop = Arc::new(AtomicBool::new(false));
    let mut slots: Vec<Option<Running>> = (0..dirs.len()).map(|_| None).collect();
    let t = Instant::now();
    while slots.iter().any(Option::is_none) {
        if t.elapsed() > CONNECT_WINDOW || signal::stop_requested() {
            let n = slots.iter().filter(|s| s.is_some()).count();
            stop.store(true, Ordering::Relaxed);
            return refuse(
                c,
                format!("only {n} of {} data connections arrived", dirs.len()),
            );
        }
        let Some((s, p)) = next_data_conn(ctx.listener, PREAMBLE_LEN) else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let Some((id, sock)) = admit(s, &p, test_id, dirs.len()) else {
            continue;
        };
        let i = id as usize;
        if slots[i].is_some() {
            continue;
        }
        if let Err(e) = configure(&sock, &spec) {
            stop.store(true, Ordering::Relaxed);
            return refuse(c, format!("{e:#}"));
        }
        let job = job_for(&spec, plan, dirs[i], i, false, ctx.cpu);
        slots[i] = Some(stream::spawn(sock, id, dirs[i], job, stop.clone())?);
    }
    let (live, handles): (Vec<_>, Vec<_>) = slots.into_iter().map(Option::unwrap).unzip();

    let silence = match plan {
        Plan::TimeNs(ns) => Duration::from_nanos(ns) + Duration::from_secs(30),
        Plan::Count(_) => Duration::from_secs(30),
    };
    let t0 = Instant::now();
    let mut meter = IntervalMeter::default();
    let mut intervals = Vec::new();
    let mut next = t0 + ctx.interval;
    let mut done: Option<(Vec<StreamEnd>, CpuUsage)> = None;
    let mut done_at = None;
    let mut failure: Option<String> = None;
    loop {
        let finished = handles.iter().all(|h| h.is_finished());
        if finished && (done.is_some() || failure.is_some()) {
            break;
        }
        if Instant::now() >= next {
            let row = sample(&mut meter, t0.elapsed().as_secs_f64(), &live, "server");
            if spec.intervals && done.is_none() && failure.is_none() {
                // A lost control connection shows at the next receive.
                let _ = c.send(&Msg::TcpInterval {
                    row: row.clone().only(Dir::Down),
                });
            }
            on_event(TcpEvent::Interval(row.clone()));
            intervals.push(row);
            next += ctx.interval;
        }
        if let Ok((s, _)) = ctx.listener.accept() {
            busy(s);
        }
        let cut = signal::stop_requested()
            || done_at.is_some_and(|d: Instant| d.elapsed() > Duration::from_secs(10))
            || (failure.is_none() && done.is_none() && t0.elapsed() > silence);
        if cut && !stop.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            if done.is_none() {
                failure.get_or_insert("interrupted".into());
            }
        }
        if done.is_some() || failure.is_some() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match c.recv_until(Instant::now() + Duration::from_millis(20)) {
            Ok(None) => {}
            Ok(Some(Msg::TcpDone { streams, cpu })) => {
                done = Some((streams, cpu));
                done_at = Some(Instant::now());
            }
            Ok(Some(other)) => {
                failure = Some(format!("unexpected control message {other:?}"));
                stop.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                failure = Some(format!("control channel lost before TcpDone: {e:#}"));
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
    let (ends, cpu, interrupted) = stream::join_all(handles)?;
    let cpu = cpu.finish(bytes_moved(&ends));
    if failure.is_none() {
        c.send(&Msg::TcpReport {
            streams: ends.clone(),
            cpu,
            interrupted,
        })?;
    }
    let (client, client_cpu) = done.unwrap_or_default();
    let streams = TcpReport::join_streams(&client, &ends);
    on_event(TcpEvent::Finished(Box::new(TcpReport {
        schema: SCHEMA.into(),
        role: "server".into(),
        test_id: format!("{test_id:016x}"),
        target: ctx.target,
        settings: spec,
        sum: TcpReport::sums(&streams),
        streams,
        cpu: CpuSides {
            client: client_cpu,
            server: cpu,
        },
        interrupted: interrupted || failure.is_some(),
        intervals,
    })));
    match failure {
        Some(f) => bail!(f),
        None => Ok(()),
    }
}
