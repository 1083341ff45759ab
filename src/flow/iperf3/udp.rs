//! `netcore recv` serving `iperf3 -c -u`: forward (the client sends), `-R` (netcore sends)
//! and `--bidir` (both; the client's sending streams first), `-P N` streams each way.
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
//! Received streams: every datagram is accounted with netcore's tracker (`Header::seq0`);
//! iperf3's fields are derived from it (see [`super::report::StreamRow`]). Sent streams
//! (`super::dgram`): iperf3-format datagrams at the client's `-b` per stream and `-l` size,
//! from TEST_RUNNING until TEST_END (or `-n`/`-k` sent); the client's summary takes what netcore
//! sent from its results, its receiver figures are its own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::ctl::{cpu_util, Ctl, Iperf3Ctx, Iperf3Event, Refused, SLACK};
use super::dgram::{Streams, TxPlan};
use super::report::{sent_sum_of, sum_of, Iperf3UdpReport, SCHEMA};
use crate::flow::streams::{split_count, Dir, Mode};
use crate::interop::iperf3::udp_header::{read_word, word, Header, CONNECT_MSG, CONNECT_REPLY};
use crate::interop::iperf3::{Params, Results};
use crate::sys::cpu::process_times;
use crate::sys::sockopt;

/// iperf3's default UDP datagram size when the client sends none.
const DEFAULT_LEN: u32 = 1460;

/// Removes the steering and closes the handshake socket however the handshake phase ends.
struct Handshake(std::net::UdpSocket);

impl Drop for Handshake {
    fn drop(&mut self) {
        let _ = sockopt::unsteer_reuseport(&self.0);
    }
}

/// The `k`th of `n` sending streams' plan: `-n` bytes in whole datagrams or `-k` datagrams
/// (split over the streams), else until TEST_END; the client's `-b` is per stream.
pub(crate) fn tx_plan(p: &Params, len: u32, k: usize, n: usize) -> TxPlan {
    let total = if p.bytes > 0 {
        p.bytes.div_ceil(len as u64)
    } else if p.blocks > 0 {
        p.blocks
    } else {
        u64::MAX
    };
    TxPlan {
        len: len as usize,
        counters64: p.udp_counters_64bit,
        count: if total == u64::MAX {
            total
        } else {
            split_count(total, k, n)
        },
        pps: (p.bandwidth > 0).then(|| p.bandwidth as f64 / (len as f64 * 8.0)),
        // The client's --gsro: iperf3's server would send with GSO; so does netcore.
        gso: p.gso,
        cpu: None,
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
    let len = datagram_len(p)?;
    let n = p.parallel.max(1) as usize;
    let mode = Mode::of(p.reverse, p.bidirectional);
    let dirs = mode.directions(n);
    on_event(Iperf3Event::Started {
        peer,
        what: started_line(p, mode, n, len),
    });
    let mut st = accept_streams(c, peer, ctx, p, &dirs)?;
    c.sc.start(&mut c.out);
    c.stage = "running the test";
    c.flush()?;
    st.start_senders(&|k, n| tx_plan(p, len, k, n))?;
    let cpu0 = process_times();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(p.time) + SLACK;
    let cut_at = t0 + ctx.max_time + crate::flow::access::OVERRUN_GRACE;
    c.until_test_end(&ctx.conns, (deadline, cut_at), &mut || Ok(()))?;
    st.stop_senders()?;
    let t_end = t0.elapsed().as_secs_f64();
    let cpu1 = process_times();
    let client = c.client_results()?;
    let theirs = |id: i64| client.streams.iter().find(|s| s.id == id).cloned();
    let sent_of = |id: i64| theirs(id).map(|s| s.packets.max(0) as u64);
    st.await_stragglers(&sent_of);
    let (total, user, system) = cpu_util(cpu0, cpu1, t_end);
    let mut results = st.results(len as usize, t_end);
    let gso = st.gso();
    let (rows, sent) = st.finish(len as usize, &sent_of, &theirs)?;
    // Received streams: exact figures (packets = what the client sent, errors = lost).
    for r in &rows {
        if let Some(x) = results.iter_mut().find(|x| x.id == r.id) {
            x.bytes = r.bytes;
            x.jitter = r.jitter_ms / 1e3;
            x.errors = r.lost as i64;
            x.packets = r.sent as i64;
        }
    }
    let ours = Results {
        cpu_util_total: total,
        cpu_util_user: user,
        cpu_util_system: system,
        sender_has_retransmits: if sent.is_empty() { -1 } else { 0 },
        congestion_used: None,
        streams: results,
        server_output_text: None,
    };
    c.send_results(&ours)?;
    on_event(Iperf3Event::Exchanged {
        client: Box::new(client),
        server: Box::new(ours),
    });
    let sum = sum_of(&rows);
    let sent_sum = sent_sum_of(&sent);
    on_event(Iperf3Event::Udp(Box::new(Iperf3UdpReport {
        schema: SCHEMA.into(),
        meta: crate::stats::meta::Meta::gather(),
        role: "server".into(),
        peer: format!("{peer} ({test})"),
        client_version: p.client_version.clone(),
        len,
        counters_64bit: p.udp_counters_64bit,
        mode: mode.name().into(),
        gso,
        streams: rows,
        sum,
        sent,
        sent_sum,
        interrupted: false,
    })));
    c.until_done()
}

/// The client's datagram size (iperf3's default without one); a test without
/// `-O` and with a size that holds iperf3's header, or refused.
fn datagram_len(p: &Params) -> Result<u32> {
    if p.omit > 0 {
        return Err(Refused("-O (omitting the first seconds) is not supported".into()).into());
    }
    let len = if p.len > 0 { p.len } else { DEFAULT_LEN };
    if len as usize > 65_507 || (len as usize) < Header::len(p.udp_counters_64bit) {
        return Err(Refused(format!("UDP datagram size {len}")).into());
    }
    Ok(len)
}

/// The line that says what the client asked for.
fn started_line(p: &Params, mode: Mode, n: usize, len: u32) -> String {
    format!(
        "iperf3 {} client: UDP, {n} stream(s), {}, {}, {len}-byte datagrams, {} bit/s per stream{}",
        p.client_version.as_deref().unwrap_or("(version not sent)"),
        mode.name(),
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
    )
}

/// CREATE_STREAMS, then a connected socket per stream that says hello (in the client's
/// order, `dirs`), within 10 s. The handshake socket joins the receiver's reuseport group as
/// its second member and takes every unconnected datagram until the streams are connected.
fn accept_streams(
    c: &mut Ctl,
    peer: SocketAddr,
    ctx: &Iperf3Ctx,
    p: &Params,
    dirs: &[Dir],
) -> Result<Streams> {
    let hs =
        Handshake(sockopt::udp_bind_reuseport(ctx.udp).context("iperf3 UDP handshake socket")?);
    sockopt::steer_reuseport(&hs.0, 1).context("steering the iperf3 UDP handshakes")?;
    hs.0.set_read_timeout(Some(Duration::from_millis(5)))?;
    c.sc.create_streams(&mut c.out);
    c.stage = "opening its UDP streams";
    c.flush()?;
    let mut st = Streams::new(p.udp_counters_64bit);
    let mut peers: Vec<SocketAddr> = Vec::new();
    let t = Instant::now();
    while peers.len() < dirs.len() {
        if t.elapsed() > Duration::from_secs(10) || c.interrupted() {
            bail!(
                "only {} of {} iperf3 UDP streams said hello",
                peers.len(),
                dirs.len()
            );
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
        let receive = dirs[peers.len()] == Dir::Up;
        st.add(answer_hello(ctx, from, receive)?, receive)?;
        peers.push(from);
    }
    Ok(st)
}

/// A socket on the receiver's port connected to the stream at `from` (its buffer sized for
/// the way it goes), which answers the stream's hello.
fn answer_hello(ctx: &Iperf3Ctx, from: SocketAddr, receive: bool) -> Result<std::net::UdpSocket> {
    let s = sockopt::udp_bind_reuseport(ctx.udp)?;
    s.connect(from)?;
    let _ = if receive {
        sockopt::size_buffer(&s, ctx.rcvbuf, true)
    } else {
        sockopt::size_buffer(&s, 4 << 20, false)
    };
    s.send(&word(CONNECT_REPLY))?;
    Ok(s)
}
