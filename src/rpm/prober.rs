//! The probing threads: UDP probes to the receiver's admitted echo at a steady rate, and TCP
//! handshakes of fresh connections, each sample credited to the phase running when it was
//! sent. The phase in force is an atomic the run switches; [`NO_PHASE`] pauses the sending
//! (the gaps between phases) while echoes still in flight are taken in.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::tracker::{Echo, Fate, ProbeTracker};
use crate::flow::probe::{Probe, MAX_LEN, REQUEST_LEN};
use crate::sys::poll::{self, poll_fd, POLLIN};
use crate::sys::tstamp::{enable_rx_timestamps, recv_stamped};
use crate::sys::{realtime_ns, signal};

/// The phase index that means "between phases": nothing is sent.
pub(crate) const NO_PHASE: usize = usize::MAX;

/// Decided probes remembered to tell duplicates from strays.
const WINDOW: usize = 1 << 16;
/// How long echoes in flight are awaited after Ctrl-C.
const INTERRUPTED_DRAIN: Duration = Duration::from_millis(300);
/// At most this many samples are kept per phase and kind (the HDR histograms count all).
const MAX_SAMPLES: usize = 1 << 20;

/// What the run and its probing threads share.
#[derive(Debug, Clone)]
pub struct Shared {
    pub phase: Arc<AtomicUsize>,
    pub stop: Arc<AtomicBool>,
    /// CLOCK_REALTIME ns at the run's start (timeline's zero).
    pub t0_ns: u64,
}

/// The UDP prober's settings.
#[derive(Debug, Clone)]
pub(crate) struct UdpProbing {
    pub echo: SocketAddr,
    pub test_id: u64,
    pub rate: f64,
    pub len: usize,
    pub late_after: Duration,
    pub phases: usize,
    pub same_clock: bool,
}

/// What the UDP prober measured.
#[derive(Debug)]
pub(crate) struct UdpProbed {
    pub tracker: ProbeTracker,
    /// Round trips in ms, per phase.
    pub samples_ms: Vec<Vec<f64>>,
    /// (seconds since the start at the send, round trip in ms) of each probe that came back.
    pub timeline: Vec<(f64, f64)>,
    /// Whether the kernel stamped the echoes' arrival.
    pub kernel_timestamps: bool,
}

/// Starts the UDP prober on a thread of its own; it runs until `shared.stop`, then waits up
/// to `late_after` for the echoes still in flight.
pub(crate) fn start_udp(p: UdpProbing, shared: Shared) -> Result<JoinHandle<Result<UdpProbed>>> {
    let bind: SocketAddr = if p.echo.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind).context("binding the probe socket")?;
    sock.connect(p.echo)
        .with_context(|| format!("connecting the probe socket to {}", p.echo))?;
    sock.set_nonblocking(true)?;
    let kernel = enable_rx_timestamps(&sock).is_ok();
    Ok(thread::Builder::new()
        .name("netcore-rpm-probe".into())
        .spawn(move || udp_loop(&sock, &p, &shared, kernel))?)
}

fn udp_loop(sock: &UdpSocket, p: &UdpProbing, sh: &Shared, kernel: bool) -> Result<UdpProbed> {
    let late_ns = p.late_after.as_nanos() as u64;
    let mut out = UdpProbed {
        tracker: ProbeTracker::new(p.phases, late_ns, WINDOW, p.same_clock),
        samples_ms: vec![Vec::new(); p.phases],
        timeline: Vec::new(),
        kernel_timestamps: kernel,
    };
    let every = Duration::from_secs_f64(1.0 / p.rate.max(0.001));
    let mut next = Instant::now();
    let mut buf = [0u8; MAX_LEN];
    let mut probe = vec![0u8; p.len];
    let mut stopped_at: Option<Instant> = None;
    let mut last_expire = Instant::now();
    loop {
        let now = Instant::now();
        if stopped_at.is_none() && sh.stop.load(Ordering::Relaxed) {
            stopped_at = Some(now);
        }
        if let Some(at) = stopped_at {
            let outstanding = out.tracker.phases().iter().any(|ph| ph.pending() > 0);
            // After Ctrl-C the echoes in flight get a short while, not the whole late bound:
            // the run is cut anyway (and says so).
            let wait = if signal::stop_requested() {
                p.late_after.min(INTERRUPTED_DRAIN)
            } else {
                p.late_after
            };
            if !outstanding || now.duration_since(at) > wait {
                break;
            }
        }
        let phase = sh.phase.load(Ordering::Relaxed);
        if now >= next {
            if stopped_at.is_none() && phase != NO_PHASE {
                send_probe(sock, p, &mut out.tracker, phase, &mut probe);
            }
            next += every;
            if next < now {
                next = now + every; // fell behind (a stall): no burst to catch up
            }
        }
        if now.duration_since(last_expire) > Duration::from_millis(100) {
            out.tracker.expire(realtime_ns());
            last_expire = now;
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_micros(100), Duration::from_millis(20));
        receive(sock, p, sh, &mut out, &mut buf, wait);
    }
    out.tracker.finish();
    Ok(out)
}

fn send_probe(
    sock: &UdpSocket,
    p: &UdpProbing,
    tracker: &mut ProbeTracker,
    phase: usize,
    buf: &mut [u8],
) {
    let send_ns = realtime_ns();
    let seq = tracker.send(send_ns, phase);
    Probe {
        test_id: p.test_id,
        seq,
        send_ns,
        ..Probe::default()
    }
    .encode(buf);
    // A probe the kernel refused (a full buffer, an ICMP error of an earlier one) is sent and
    // lost: its fate is counted like any other's.
    let _ = sock.send(buf);
}

/// Takes in the echoes that are there, waiting up to `wait` for the first.
fn receive(
    sock: &UdpSocket,
    p: &UdpProbing,
    sh: &Shared,
    out: &mut UdpProbed,
    buf: &mut [u8],
    wait: Duration,
) {
    let mut fds = [poll_fd(sock.as_raw_fd(), POLLIN)];
    if !matches!(poll::wait(&mut fds, wait), Ok(n) if n > 0) {
        return;
    }
    for _ in 0..64 {
        // The socket does not block: an error is "nothing more queued" (or an ICMP error of a
        // probe, which is then lost).
        let Ok(got) = recv_stamped(sock, buf) else {
            return;
        };
        let rx_ns = got.kernel_ns.unwrap_or_else(realtime_ns);
        let Ok(probe) = Probe::decode(&buf[..got.len], p.test_id) else {
            continue;
        };
        let fate = out.tracker.echo(Echo {
            seq: probe.seq,
            send_ns: probe.send_ns,
            echo_rx_ns: probe.echo_rx_ns,
            echo_tx_ns: probe.echo_tx_ns,
            rx_ns,
        });
        if let Fate::Answered(rtt, phase) | Fate::Late(rtt, phase) = fate {
            let ms = rtt as f64 / 1e6;
            if out.samples_ms[phase].len() < MAX_SAMPLES {
                out.samples_ms[phase].push(ms);
            }
            if out.timeline.len() < MAX_SAMPLES {
                let t = probe.send_ns.saturating_sub(sh.t0_ns) as f64 / 1e9;
                out.timeline.push((t, ms));
            }
        }
    }
}

/// TCP handshakes of fresh connections: one every `every` while a phase runs, each followed
/// by one request/response (8 bytes each way) and closed; per phase, the handshake and the
/// request times in ms (a connection or request that fails or takes longer than `timeout`
/// counts in `failed`).
#[derive(Debug, Default)]
pub(crate) struct Connects {
    pub samples_ms: Vec<Vec<f64>>,
    pub request_ms: Vec<Vec<f64>>,
    pub failed: Vec<u64>,
}

/// Starts the connect prober on a thread of its own, until `shared.stop`.
pub(crate) fn start_connects(
    to: SocketAddr,
    every: Duration,
    timeout: Duration,
    phases: usize,
    shared: Shared,
) -> Result<JoinHandle<Connects>> {
    Ok(thread::Builder::new()
        .name("netcore-rpm-connect".into())
        .spawn(move || {
            let mut out = Connects {
                samples_ms: vec![Vec::new(); phases],
                request_ms: vec![Vec::new(); phases],
                failed: vec![0; phases],
            };
            let mut n = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                let phase = shared.phase.load(Ordering::Relaxed);
                if phase != NO_PHASE {
                    n += 1;
                    match connect_and_ask(to, timeout, n) {
                        Some((c, r)) if out.samples_ms[phase].len() < MAX_SAMPLES => {
                            out.samples_ms[phase].push(c);
                            out.request_ms[phase].push(r);
                        }
                        Some(_) => {}
                        None => out.failed[phase] += 1,
                    }
                }
                sleep_unless(&shared.stop, every);
            }
            out
        })?)
}

/// One handshake and one request/response on the fresh connection: both times in ms.
fn connect_and_ask(to: SocketAddr, timeout: Duration, n: u64) -> Option<(f64, f64)> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&to, timeout).ok()?;
    let connect = t.elapsed().as_secs_f64() * 1e3;
    s.set_nodelay(true).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let ask = n.to_le_bytes();
    let t = Instant::now();
    s.write_all(&ask).ok()?;
    let mut back = [0u8; REQUEST_LEN];
    s.read_exact(&mut back).ok()?;
    let request = t.elapsed().as_secs_f64() * 1e3;
    (back == ask).then_some((connect, request))
}

/// Sleeps `d` in slices, returning early once `stop` is set.
pub(crate) fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(Duration::from_millis(10)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::probe::stamp_echo;

    /// An echo on loopback that drops every 5th probe and sends every 7th twice, until it has
    /// seen `stop` set and its socket is quiet.
    fn fake_echo(test_id: u64, stop: Arc<AtomicBool>) -> (SocketAddr, JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let h = thread::spawn(move || {
            let mut buf = [0u8; MAX_LEN];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                };
                let seq = Probe::decode(&buf[..n], test_id).unwrap().seq;
                if seq % 5 == 0 {
                    continue;
                }
                stamp_echo(&mut buf[..n], test_id, realtime_ns(), realtime_ns()).unwrap();
                for _ in 0..if seq % 7 == 0 { 2 } else { 1 } {
                    sock.send_to(&buf[..n], from).unwrap();
                }
            }
        });
        (addr, h)
    }

    #[test]
    fn every_probe_gets_its_fate_over_loopback() {
        let echo_stop = Arc::new(AtomicBool::new(false));
        let (echo, h) = fake_echo(42, echo_stop.clone());
        let shared = Shared {
            phase: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            t0_ns: realtime_ns(),
        };
        let prober = start_udp(
            UdpProbing {
                echo,
                test_id: 42,
                rate: 500.0,
                len: 64,
                late_after: Duration::from_millis(500),
                phases: 2,
                same_clock: true,
            },
            shared.clone(),
        )
        .unwrap();
        thread::sleep(Duration::from_millis(200));
        shared.phase.store(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(200));
        shared.phase.store(NO_PHASE, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(50));
        shared.stop.store(true, Ordering::Relaxed);
        let got = prober.join().unwrap().unwrap();
        echo_stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        let sent: u64 = got.tracker.phases().iter().map(|p| p.sent).sum();
        assert!(sent > 20, "{sent} probes in 400 ms at 500/s");
        let dropped = (0..sent).filter(|s| s % 5 == 0).count() as u64;
        let doubled = (0..sent).filter(|s| s % 7 == 0 && s % 5 != 0).count() as u64;
        let sum = |f: fn(&super::super::tracker::PhaseProbes) -> u64| -> u64 {
            got.tracker.phases().iter().map(f).sum()
        };
        assert_eq!(sum(|p| p.lost), dropped);
        assert_eq!(sum(|p| p.answered) + sum(|p| p.late), sent - dropped);
        assert_eq!(sum(|p| p.duplicates), doubled);
        assert_eq!(got.tracker.strays(), 0);
        for (i, p) in got.tracker.phases().iter().enumerate() {
            assert!(p.sent > 0, "phase {i}");
            assert_eq!(got.samples_ms[i].len() as u64, p.answered + p.late);
            assert_eq!(p.up.len(), p.answered + p.late, "one clock: one-way delays");
        }
        assert_eq!(got.timeline.len() as u64, sent - dropped);
        assert!(got.kernel_timestamps);
    }
}
