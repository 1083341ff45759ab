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

use super::spec::encode_preamble;
use crate::flow::access::{TestSecret, TOKEN_LEN};
use crate::flow::control::{ClientId, Conn, Msg, Plan, PROTOCOL_VERSION};
use crate::flow::cpu::CpuUsage;
use crate::flow::host::host_name;
use crate::flow::payload::{StreamEnd, TcpInterval, TcpSpec};
use crate::flow::rxwait::RxWait;
use crate::flow::streams::cpu_for;
use crate::flow::streams::Dir;
use crate::flow::tcp_engine::report::{BufferSides, CpuSides, IntervalMeter, TcpReport, SCHEMA};
use crate::flow::tcp_engine::stream::{self, bytes_moved, job_for, sample, DataConn, Live, Stops};
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
    /// This side's interval.
    pub interval: Duration,
    /// The interval the receiver is asked to sample at (its samples of the streams it
    /// writes, `-R`, `--bidir`): `--to` with `--interval`; None: the receiver's own.
    pub receiver_interval: Option<Duration>,
    /// How this side's readers (`-R`, `--bidir`) wait for data.
    pub wait: RxWait,
    /// The source address and shared key (`--bind`, `--auth-key-file`).
    pub client: ClientId,
    /// The test's id (chosen by the caller, so that what it prints first can name it).
    pub test_id: u64,
}

/// Runs one TCP test against a receiver and returns the client's copy of the report.
pub fn run(opts: &TcpOptions, on_interval: &mut dyn FnMut(&TcpInterval)) -> Result<TcpReport> {
    let spec = &opts.spec;
    spec.check().map_err(anyhow::Error::msg)?;
    let (mut c, data, secret) = open_test(opts)?;
    let stop = Arc::new(AtomicBool::new(false));
    let conns = connect_streams(opts, data, secret.as_ref())?;
    let running = stream::start(conns, &Stops::one(&stop), spec.thread_per_stream)?;
    let live = running.live.clone();
    // The server sends its samples of the streams it writes (the sender's figures: retransmits,
    // cwnd); this side shows its own for the streams it writes.
    let mut rows = Rows::new(opts.interval, spec.intervals);
    let control_error = rows.until_finished(&mut c, &running, &stop, on_interval);
    let (ends, cpu, interrupted) = running.join()?;
    // A signal here cuts the test; the receiver still gets our account and answers with its
    // own (an embedded receiver, cut by the same signal, waits for it).
    let signalled = signal::stop_requested();
    let cut_here = interrupted || signalled;
    if let Some(e) = control_error.filter(|_| !signalled) {
        bail!("the receiver ended the test early: {e}");
    }
    // The last, partial interval of the streams this side reports (the receiver's rows cover
    // the others: a row of them here would overlap its last one), so that the rows add up.
    if !rows.intervals.is_empty() {
        rows.sample_own(&live, on_interval);
    }
    let cpu = cpu.finish(bytes_moved(&ends));
    let answer = finish(&mut c, &ends, cpu, cut_here, rows.remote);
    let (server, server_cpu, server_cut) = match answer {
        Ok(a) => a,
        // Cut short here and the receiver did not answer: this side's account alone.
        Err(_) if signalled => (Vec::new(), CpuUsage::default(), true),
        Err(e) => return Err(e),
    };
    let server = if server.is_empty() {
        unanswered(&ends)
    } else {
        server
    };
    let buffers = BufferSides::of(&ends, &server);
    let streams = TcpReport::join_streams(&ends, &server);
    Ok(TcpReport {
        schema: SCHEMA.into(),
        meta: crate::stats::meta::Meta::gather(),
        role: "client".into(),
        test_id: format!("{:016x}", opts.test_id),
        target: opts.control.to_string(),
        settings: spec.clone(),
        sum: TcpReport::sums(&streams),
        streams,
        cpu: CpuSides {
            client: cpu,
            server: server_cpu,
        },
        interrupted: cut_here || server_cut,
        intervals: rows.intervals,
        buffers,
    })
}

/// Connects the control connection, sends Hello and Setup and reads Ready: the connection,
/// where the data connections go (with --window the receiver names a listener of this
/// test's own, its buffers sized before the handshakes, on the control address's host) and,
/// with a key, the secret they prove it with.
fn open_test(opts: &TcpOptions) -> Result<(Conn, SocketAddr, Option<TestSecret>)> {
    let spec = &opts.spec;
    let mut c = Conn::connect_from(opts.control, opts.client.bind)?;
    let secret = c.open_test(
        Msg::Hello {
            version: PROTOCOL_VERSION,
            test_id: opts.test_id,
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
        interval_ns: opts.receiver_interval.map(|d| d.as_nanos() as u64),
    })?;
    let data = match c.expect("Ready", Duration::from_secs(10))? {
        Msg::Ready { port: Some(p), .. } => SocketAddr::new(opts.control.ip(), p),
        Msg::Ready { .. } => opts.control,
        other => bail!("expected Ready from the receiver, got {other:?}"),
    };
    Ok((c, data, secret))
}

/// Opens the test's data connections to `data`, each with its preamble (a keyed test's
/// token in it) and its job.
fn connect_streams(
    opts: &TcpOptions,
    data: SocketAddr,
    secret: Option<&TestSecret>,
) -> Result<Vec<DataConn>> {
    let spec = &opts.spec;
    let mut conns = Vec::new();
    for (id, dir) in spec.directions().into_iter().enumerate() {
        let token = secret.map_or([0; TOKEN_LEN], |s| s.token(id as u32));
        let preamble = encode_preamble(opts.test_id, id as u32, token);
        let sock = stream::connect_from(data, opts.client.bind, spec, &preamble)?;
        let mut job = job_for(spec, opts.plan, dir, id, true, cpu_for(&opts.cpus, id));
        job.wait = opts.wait.for_window(spec.window);
        conns.push(DataConn {
            sock,
            id: id as u32,
            dir,
            job,
        });
    }
    Ok(conns)
}

/// The client's interval rows: its own samples and, with `remote`, the receiver's of the
/// streams it writes.
struct Rows {
    t0: Instant,
    meter: IntervalMeter,
    intervals: Vec<TcpInterval>,
    /// When the next own sample is due.
    next: Instant,
    every: Duration,
    /// The receiver sends its samples of the streams it writes.
    remote: bool,
}

impl Rows {
    fn new(every: Duration, remote: bool) -> Rows {
        let t0 = Instant::now();
        Rows {
            t0,
            meter: IntervalMeter::default(),
            intervals: Vec::new(),
            next: t0 + every,
            every,
            remote,
        }
    }

    /// Samples this side's streams (those it writes, with `remote`); a row with streams is
    /// shown and kept.
    fn sample_own(&mut self, live: &[Arc<Live>], on_interval: &mut dyn FnMut(&TcpInterval)) {
        let row = sample(
            &mut self.meter,
            self.t0.elapsed().as_secs_f64(),
            live,
            "client",
        );
        let row = if self.remote { row.only(Dir::Up) } else { row };
        if !row.streams.is_empty() {
            on_interval(&row);
            self.intervals.push(row);
        }
    }

    /// Until the streams have finished: samples on time and reads the receiver's rows; a
    /// refusal, an unexpected message or a lost connection stops the streams and is returned.
    fn until_finished(
        &mut self,
        c: &mut Conn,
        running: &stream::Running,
        stop: &AtomicBool,
        on_interval: &mut dyn FnMut(&TcpInterval),
    ) -> Option<String> {
        let mut control_error = None;
        while !running.is_finished() {
            if Instant::now() >= self.next {
                self.sample_own(&running.live, on_interval);
                self.next += self.every;
            }
            let wait = Instant::now()
                + self
                    .next
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20));
            let failed = match c.recv_until(wait) {
                Ok(None) => continue,
                Ok(Some(Msg::TcpInterval { row })) if self.remote => {
                    on_interval(&row);
                    self.intervals.push(row);
                    continue;
                }
                Ok(Some(Msg::Error { message })) => format!("peer refused: {message}"),
                Ok(Some(other)) => format!("unexpected message from the receiver: {other:?}"),
                Err(e) => format!("{e:#}"),
            };
            control_error.get_or_insert(failed);
            stop.store(true, Ordering::Relaxed);
        }
        control_error
    }
}

/// Sends this side's account (`TcpDone`) and waits for the receiver's (`TcpReport`): within
/// 30 s, or 3 s when the test was cut short here. Returns the receiver's streams, CPU and
/// whether it cut the test.
fn finish(
    c: &mut Conn,
    ends: &[StreamEnd],
    cpu: CpuUsage,
    cut_here: bool,
    remote: bool,
) -> Result<(Vec<StreamEnd>, CpuUsage, bool)> {
    c.send(&Msg::TcpDone {
        streams: ends.to_vec(),
        cpu,
        interrupted: cut_here,
    })?;
    let wait = if cut_here { 3 } else { 30 };
    // A last TcpInterval may cross the TcpDone on the way: skipped, within the same wait.
    let deadline = Instant::now() + Duration::from_secs(wait);
    let answer = loop {
        match c.recv_until(deadline)? {
            Some(Msg::TcpInterval { .. }) if remote => continue,
            Some(m) => break m,
            None => bail!("no TcpReport from the receiver within {wait} s"),
        }
    };
    match answer {
        Msg::TcpReport {
            streams,
            cpu,
            interrupted,
        } => Ok((streams, cpu, interrupted)),
        Msg::Error { message } => bail!("the receiver refused: {message}"),
        other => bail!("expected TcpReport from the receiver, got {}", other.name()),
    }
}

/// The receiver's side of `ends` when it never answered (the test was cut here and the
/// receiver was gone): every stream with nothing counted on that side, no `TCP_INFO`.
fn unanswered(ends: &[StreamEnd]) -> Vec<StreamEnd> {
    ends.iter()
        .map(|e| StreamEnd {
            id: e.id,
            dir: e.dir,
            bytes: 0,
            elapsed_s: 0.0,
            tcp: None,
            zerocopy: None,
            buffers: None,
        })
        .collect()
}
