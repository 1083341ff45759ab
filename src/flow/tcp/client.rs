//! The side that starts a TCP test (`blast --proto tcp`): the control handshake, the data
//! connections (all opened from here, so the test works through NAT, whichever way the data
//! goes), interval lines from this side's counters and `TCP_INFO`, and the final agreement.
//!
//! ```text
//! client                               server
//!   Hello, Setup{tcp}  --------------->
//!                      <---------------  Ready            (or Error)
//!   N data connections, each opening with a preamble (test id, stream id)
//!   ... data both ways as the mode says; each writer shuts down when its plan is done ...
//!   TcpDone{streams, cpu} ------------>  (once every connection here has finished)
//!                      <---------------  TcpReport{streams, cpu}
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::report::{CpuSides, IntervalMeter, TcpReport, SCHEMA};
use super::spec::encode_preamble;
use super::stream::{self, bytes_moved, DataConn, Job, Live, Stops};
use crate::flow::control::{ClientId, Conn, Msg, Plan, PROTOCOL_VERSION};
use crate::flow::host::host_name;
use crate::flow::payload::{TcpInterval, TcpSpec};
use crate::flow::rxwait::RxWait;
pub use crate::flow::streams::cpu_for;
use crate::flow::streams::Dir;
use crate::sys::signal;

/// Client settings.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// The receiver's control address (data connections go to the same address).
    pub control: SocketAddr,
    pub spec: TcpSpec,
    pub plan: Plan,
    /// CPUs for the data connection threads, one per stream in turn (none: unpinned).
    pub cpus: Vec<usize>,
    pub interval: Duration,
    /// How this side's readers (`-R`, `--bidir`) wait for data.
    pub wait: RxWait,
    /// The source address and shared key (`--bind`, `--auth-key-file`).
    pub client: ClientId,
}

/// The job of stream `i` (of direction `dir`) on the end that writes `Up` streams (`client`)
/// or the other: the plan split over the streams of one direction, pacing likewise.
pub fn job_for(
    spec: &TcpSpec,
    plan: Plan,
    dir: Dir,
    i: usize,
    client: bool,
    cpu: Option<usize>,
) -> Job {
    let n = spec.streams as usize;
    Job {
        write: (dir == Dir::Up) == client,
        plan: stream::stream_plan(plan, i % n, n),
        len: spec.len as usize,
        rate_bps: spec.rate_bps.map(|r| (r / n as u64).max(1)),
        zerocopy: spec.zerocopy,
        sendfile: spec.sendfile,
        cpu,
        wait: RxWait::Poll,
    }
}

/// Samples every live connection: bytes moved so far and `TCP_INFO`; `by` names the side.
pub fn sample(meter: &mut IntervalMeter, t: f64, live: &[Arc<Live>], by: &str) -> TcpInterval {
    let mut row = meter.sample(
        t,
        live.iter()
            .map(|l| (l.id, l.dir, l.bytes.load(Ordering::Relaxed), l.figures())),
    );
    row.by = by.into();
    row
}

/// Runs one TCP test against a receiver and returns the client's copy of the report.
pub fn run(opts: &TcpOptions, on_interval: &mut dyn FnMut(&TcpInterval)) -> Result<TcpReport> {
    let spec = &opts.spec;
    spec.check().map_err(anyhow::Error::msg)?;
    let mut c = Conn::connect_from(opts.control, opts.client.bind)?;
    let test_id: u64 = rand::random();
    c.open_test(
        Msg::Hello {
            version: PROTOCOL_VERSION,
            test_id,
            len: spec.len,
            plan: opts.plan,
            streams: spec.streams,
            verify: false,
            host: host_name(),
            auth: false,
        },
        &opts.client,
    )?;
    c.send(&Msg::Setup {
        reverse: None,
        tcp: Some(spec.clone()),
        echo: None,
    })?;
    match c.expect("Ready", Duration::from_secs(10))? {
        Msg::Ready { .. } => {}
        other => bail!("expected Ready from the receiver, got {other:?}"),
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut conns = Vec::new();
    for (id, dir) in spec.directions().into_iter().enumerate() {
        let preamble = encode_preamble(test_id, id as u32);
        let sock = stream::connect_from(opts.control, opts.client.bind, spec, &preamble)?;
        let mut job = job_for(spec, opts.plan, dir, id, true, cpu_for(&opts.cpus, id));
        job.wait = opts.wait;
        conns.push(DataConn {
            sock,
            id: id as u32,
            dir,
            job,
        });
    }
    let running = stream::start(conns, &Stops::one(&stop), spec.thread_per_stream)?;
    let live = running.live.clone();

    let t0 = Instant::now();
    let mut meter = IntervalMeter::default();
    let mut intervals = Vec::new();
    let mut next = t0 + opts.interval;
    let mut control_error = None;
    // The server sends its samples of the streams it writes (the sender's figures: retransmits,
    // cwnd); this side shows its own for the streams it writes.
    let remote = spec.intervals;
    while !running.is_finished() {
        if Instant::now() >= next {
            let row = sample(&mut meter, t0.elapsed().as_secs_f64(), &live, "client");
            let row = if remote { row.only(Dir::Up) } else { row };
            if !row.streams.is_empty() {
                on_interval(&row);
                intervals.push(row);
            }
            next += opts.interval;
        }
        let wait = Instant::now()
            + next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20));
        match c.recv_until(wait) {
            Ok(None) => {}
            Ok(Some(Msg::TcpInterval { row })) if remote => {
                on_interval(&row);
                intervals.push(row);
            }
            Ok(Some(Msg::Error { message })) => {
                control_error.get_or_insert(format!("peer refused: {message}"));
                stop.store(true, Ordering::Relaxed);
            }
            Ok(Some(other)) => {
                control_error
                    .get_or_insert(format!("unexpected message from the receiver: {other:?}"));
                stop.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                control_error.get_or_insert(format!("{e:#}"));
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
    let (ends, cpu, mut interrupted) = running.join()?;
    if let Some(e) = control_error {
        bail!("the receiver ended the test early: {e}");
    }
    // The last, partial interval, so that the rows add up to the totals.
    if !intervals.is_empty() {
        let row = sample(&mut meter, t0.elapsed().as_secs_f64(), &live, "client");
        on_interval(&row);
        intervals.push(row);
    }
    let cpu = cpu.finish(bytes_moved(&ends));
    c.send(&Msg::TcpDone {
        streams: ends.clone(),
        cpu,
    })?;
    // A last TcpInterval may cross the TcpDone on the way: skipped, within the same 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match c.recv_until(deadline)? {
            Some(Msg::TcpInterval { .. }) if remote => continue,
            Some(m) => break m,
            None => bail!("no TcpReport from the receiver within 30 s"),
        }
    };
    let (server, server_cpu, server_cut) = match answer {
        Msg::TcpReport {
            streams,
            cpu,
            interrupted,
        } => (streams, cpu, interrupted),
        Msg::Error { message } => bail!("the receiver refused: {message}"),
        other => bail!("expected TcpReport from the receiver, got {}", other.name()),
    };
    interrupted |= server_cut || signal::stop_requested();
    let streams = TcpReport::join_streams(&ends, &server);
    Ok(TcpReport {
        schema: SCHEMA.into(),
        meta: crate::stats::meta::Meta::gather(),
        role: "client".into(),
        test_id: format!("{test_id:016x}"),
        target: opts.control.to_string(),
        settings: spec.clone(),
        sum: TcpReport::sums(&streams),
        streams,
        cpu: CpuSides {
            client: cpu,
            server: server_cpu,
        },
        interrupted,
        intervals,
    })
}
