//! `netcore recv` serving `iperf3 -c -u` (the client sends).
//!
//! Each iperf3 UDP stream opens with a 4-byte handshake datagram to the receiver's port, where
//! the receiver's own UDP socket (owned by its UDP thread) would take it. So for the handshake
//! phase the driver binds a second socket on the port (the receiver's socket has
//! `SO_REUSEPORT`) and steers the port's unconnected datagrams to it with a one-instruction
//! BPF program (`sys::sockopt::steer_reuseport`). For each handshake it binds a socket on the
//! port, connects it to the client's address (the kernel prefers a connected socket's exact
//! match, so that stream's data lands there and nowhere else) and answers from it. Once every
//! stream is connected the steering is removed and the handshake socket closed: the
//! receiver's socket gets the port's other traffic again.
//!
//! Every datagram is accounted with netcore's tracker (`Header::seq0`); iperf3's fields are
//! derived from it (see [`StreamRow`]).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::ctl::{cpu_util, Ctl, Iperf3Ctx, Iperf3Event, Refused, SLACK};
use super::report::{sum_of, Iperf3UdpReport, StreamRow};
use crate::flow::udp::tracker::{Tracker, DEFAULT_WINDOW};
use crate::interop::iperf3::msg::stream_id;
use crate::interop::iperf3::udp::{read_word, word, Header, CONNECT_MSG, CONNECT_REPLY};
use crate::interop::iperf3::{Params, Results, StreamResult};
use crate::sys::cpu::process_times;
use crate::sys::mmsg::RecvBatch;
use crate::sys::{realtime_ns, signal, sockopt};

/// iperf3's default UDP datagram size when the client sends none.
const DEFAULT_LEN: u32 = 1460;

/// What a stream's reader thread shares while it runs.
struct Live {
    /// Distinct sequence numbers so far.
    unique: AtomicU64,
    stop: AtomicBool,
}

/// A stream's reader thread's final state.
struct Out {
    tracker: Tracker,
    received: u64,
    bytes: u64,
    malformed: u64,
    jitter_s: f64,
    /// iperf3's own receiver counting: highest sequence and gap count.
    highest: u64,
    gaps: i64,
}

fn reader(sock: UdpSocket, counters64: bool, live: Arc<Live>) -> Out {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
    let mut batch = RecvBatch::new(64, 1 << 16);
    let mut o = Out {
        tracker: Tracker::new(DEFAULT_WINDOW),
        received: 0,
        bytes: 0,
        malformed: 0,
        jitter_s: 0.0,
        highest: 0,
        gaps: 0,
    };
    let mut prev_transit: Option<f64> = None;
    while !live.stop.load(Ordering::Relaxed) {
        let n = batch.recv(&sock, true).unwrap_or(0);
        if n == 0 {
            continue;
        }
        let now = realtime_ns();
        for i in 0..n {
            let (d, _) = batch.message(i);
            let Some(h) = Header::read(d, counters64) else {
                o.malformed += 1;
                continue;
            };
            o.received += 1;
            o.bytes += d.len() as u64;
            o.tracker.record(h.seq0());
            // iperf3's way, for comparison.
            if h.seq > o.highest {
                o.gaps += (h.seq - o.highest - 1) as i64;
                o.highest = h.seq;
            } else if o.gaps > 0 {
                o.gaps -= 1;
            }
            // RFC 3550 jitter on the send timestamps, as iperf3 computes it.
            let transit = (now as f64 - h.send_ns() as f64) / 1e9;
            if let Some(p) = prev_transit {
                o.jitter_s += ((transit - p).abs() - o.jitter_s) / 16.0;
            }
            prev_transit = Some(transit);
        }
        live.unique.store(o.tracker.unique(), Ordering::Relaxed);
    }
    o
}

/// Removes the steering and closes the handshake socket however the handshake phase ends.
struct Handshake(UdpSocket);

impl Drop for Handshake {
    fn drop(&mut self) {
        let _ = sockopt::unsteer_reuseport(&self.0);
    }
}

type Stream = (Arc<Live>, JoinHandle<Out>);

/// Stops every reader when dropped.
struct Readers(Vec<Stream>);

impl Drop for Readers {
    fn drop(&mut self) {
        for (l, _) in &self.0 {
            l.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Runs a UDP test whose parameters were read (the cookie is `test`).
pub fn run(
    c: &mut Ctl,
    peer: SocketAddr,
    ctx: &Iperf3Ctx,
    p: &Params,
    test: &str,
    on_event: &mut dyn FnMut(Iperf3Event),
) -> Result<()> {
    if p.reverse || p.bidirectional {
        return Err(Refused("UDP with -R or --bidir is not served yet".into()).into());
    }
    if p.omit > 0 {
        return Err(Refused("-O (omitting the first seconds) is not supported".into()).into());
    }
    let len = if p.len > 0 { p.len } else { DEFAULT_LEN };
    if len as usize > 65_507 || (len as usize) < Header::len(p.udp_counters_64bit) {
        return Err(Refused(format!("UDP datagram size {len}")).into());
    }
    let n = p.parallel.max(1) as usize;
    on_event(Iperf3Event::Started {
        peer,
        what: format!(
            "iperf3 {} client: UDP, {n} stream(s), {}, {len}-byte datagrams, {} bit/s per stream{}",
            p.client_version.as_deref().unwrap_or("(version not sent)"),
            match (p.bytes, p.blocks) {
                (0, 0) => format!("{} s", p.time),
                (0, k) => format!("{k} datagrams"),
                (b, _) => format!("{b} bytes"),
            },
            p.bandwidth,
            if p.udp_counters_64bit {
                ", 64-bit counters"
            } else {
                ""
            }
        ),
    });
    // The handshake socket joins the receiver's reuseport group as its second member and
    // takes every unconnected datagram until the streams are connected.
    let hs =
        Handshake(sockopt::udp_bind_reuseport(ctx.udp).context("iperf3 UDP handshake socket")?);
    sockopt::steer_reuseport(&hs.0, 1).context("steering the iperf3 UDP handshakes")?;
    hs.0.set_read_timeout(Some(Duration::from_millis(5)))?;
    c.sc.create_streams(&mut c.out);
    c.stage = "opening its UDP streams";
    c.flush()?;
    let mut readers = Readers(Vec::new());
    let mut peers: Vec<SocketAddr> = Vec::new();
    let t = Instant::now();
    while peers.len() < n {
        if t.elapsed() > Duration::from_secs(10) || signal::stop_requested() {
            bail!("only {} of {n} iperf3 UDP streams said hello", peers.len());
        }
        if let Some(e) = c.poll(Duration::from_millis(1))? {
            bail!("iperf3 client sent {e:?} while opening its UDP streams");
        }
        let mut b = [0u8; 64];
        let Ok((k, from)) = hs.0.recv_from(&mut b) else {
            continue;
        };
        if read_word(&b[..k]) != Some(CONNECT_MSG)
            || from.ip() != peer.ip()
            || peers.contains(&from)
        {
            continue;
        }
        let s = sockopt::udp_bind_reuseport(ctx.udp)?;
        s.connect(from)?;
        let _ = sockopt::size_buffer(&s, ctx.rcvbuf, true);
        s.send(&word(CONNECT_REPLY))?;
        let live = Arc::new(Live {
            unique: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let l = live.clone();
        let wide = p.udp_counters_64bit;
        let h = thread::Builder::new()
            .name(format!("netcore-iperf3-{}", peers.len()))
            .spawn(move || reader(s, wide, l))?;
        readers.0.push((live, h));
        peers.push(from);
    }
    drop(hs);
    c.sc.start(&mut c.out);
    c.stage = "running the test";
    c.flush()?;
    let cpu0 = process_times();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(p.time) + SLACK;
    c.until_test_end(ctx.listener, deadline, &mut || {})?;
    let t_end = t0.elapsed().as_secs_f64();
    let cpu1 = process_times();
    let client = c.client_results()?;
    let sent_of = |i: usize| {
        client
            .streams
            .iter()
            .find(|s| s.id == stream_id(i))
            .map(|s| s.packets.max(0) as u64)
    };
    // Stragglers: until every stream has all the client sent, or 250 ms without progress.
    let (mut last, mut at) = (u64::MAX, Instant::now());
    let stop_at = Instant::now() + Duration::from_secs(3);
    loop {
        let got: u64 = readers
            .0
            .iter()
            .map(|(l, _)| l.unique.load(Ordering::Relaxed))
            .sum();
        let all = (0..n).all(|i| {
            sent_of(i).is_some_and(|s| readers.0[i].0.unique.load(Ordering::Relaxed) >= s)
        });
        if got != last {
            (last, at) = (got, Instant::now());
        }
        if all || at.elapsed() > Duration::from_millis(250) || Instant::now() > stop_at {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mut rows = Vec::new();
    for (i, (l, h)) in std::mem::take(&mut readers.0).into_iter().enumerate() {
        l.stop.store(true, Ordering::Relaxed);
        let o = h
            .join()
            .map_err(|_| anyhow::anyhow!("an iperf3 UDP reader panicked"))?;
        let highest = o.tracker.highest().map_or(0, |h| h + 1);
        let sent = sent_of(i).unwrap_or(highest).max(highest);
        let a = o
            .tracker
            .finish(sent)
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", stream_id(i)))?;
        rows.push(StreamRow {
            id: stream_id(i),
            sent,
            received: o.received,
            bytes: o.bytes,
            in_order: a.in_order,
            reordered: a.reordered,
            max_extent: a.max_extent,
            duplicate: a.duplicate,
            too_late: a.too_late,
            lost: a.lost,
            malformed: o.malformed,
            jitter_ms: o.jitter_s * 1e3,
            iperf3_packets: o.highest,
            iperf3_errors: o.gaps.max(0) as u64,
        });
    }
    let (total, user, system) = cpu_util(cpu0, cpu1, t_end);
    let ours = Results {
        cpu_util_total: total,
        cpu_util_user: user,
        cpu_util_system: system,
        sender_has_retransmits: -1,
        congestion_used: None,
        streams: rows
            .iter()
            .map(|r| StreamResult {
                id: r.id,
                bytes: r.bytes,
                retransmits: -1,
                jitter: r.jitter_ms / 1e3,
                errors: r.lost as i64,
                omitted_errors: 0,
                packets: r.sent as i64,
                omitted_packets: 0,
                start_time: 0.0,
                end_time: t_end,
            })
            .collect(),
        server_output_text: None,
    };
    c.send_results(&ours)?;
    on_event(Iperf3Event::Exchanged {
        client: Box::new(client),
        server: Box::new(ours),
    });
    let sum = sum_of(&rows);
    on_event(Iperf3Event::Udp(Box::new(Iperf3UdpReport {
        schema: "netcore.iperf3.udp.v1".into(),
        peer: format!("{peer} ({test})"),
        client_version: p.client_version.clone(),
        len,
        counters_64bit: p.udp_counters_64bit,
        streams: rows,
        sum,
        interrupted: false,
    })));
    c.until_done()
}
