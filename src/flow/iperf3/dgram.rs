//! iperf3 UDP streams on netcore's data paths, for either role (serving `iperf3 -c -u`, or
//! driving `iperf3 -s`): a sender thread per stream netcore sends on (`sendmmsg` batches of
//! iperf3-format datagrams paced by `flow::pacer`) and a reader thread per stream netcore
//! receives on (`recvmmsg` batches, every datagram through netcore's tracker, with iperf3's own
//! receiver counting alongside for comparison).

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::report::{SentRow, StreamRow};
use crate::flow::pacer::Pacer;
use crate::flow::tracker::{Tracker, DEFAULT_WINDOW};
use crate::interop::iperf3::msg::stream_id;
use crate::interop::iperf3::udp_header::Header;
use crate::interop::iperf3::StreamResult;
use crate::sys::mmsg::{RecvBatch, SendBatch};
use crate::sys::{realtime_ns, sockopt};

/// What a reader thread shares while it runs.
#[derive(Default)]
struct RxLive {
    /// Distinct sequence numbers so far.
    unique: AtomicU64,
    bytes: AtomicU64,
    /// iperf3's sequence number (from 1) of the highest datagram so far; 0: none yet.
    highest: AtomicU64,
    jitter_bits: AtomicU64,
    stop: AtomicBool,
}

/// A reader thread's final state.
struct RxOut {
    tracker: Tracker,
    received: u64,
    bytes: u64,
    malformed: u64,
    jitter_s: f64,
    /// iperf3's own receiver counting: highest sequence and gap count.
    highest: u64,
    gaps: i64,
}

fn reader(sock: UdpSocket, counters64: bool, live: Arc<RxLive>) -> RxOut {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
    let mut batch = RecvBatch::new(64, 1 << 16);
    let mut o = RxOut {
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
        live.bytes.store(o.bytes, Ordering::Relaxed);
        live.highest.store(o.highest, Ordering::Relaxed);
        live.jitter_bits
            .store(o.jitter_s.to_bits(), Ordering::Relaxed);
    }
    o
}

/// What a sender thread sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxPlan {
    /// Bytes per datagram, iperf3's header included.
    pub len: usize,
    pub counters64: bool,
    /// Datagrams to send at most (`u64::MAX`: until stopped).
    pub count: u64,
    /// Datagrams per second; `None`: as fast as the kernel takes them.
    pub pps: Option<f64>,
    /// Hand the kernel multi-datagram buffers (UDP GSO) where it takes them.
    pub gso: bool,
    pub cpu: Option<usize>,
}

/// Datagrams per message on `sock`: with GSO as many `len`-byte datagrams as fit in 64 KiB, up
/// to the kernel's limit per GSO send (probed: `sys::gso`), with the socket's `UDP_SEGMENT` set
/// to `len`; else 1 (GSO not asked for, or refused).
fn gso_segments(sock: &UdpSocket, len: usize, gso: bool) -> usize {
    let segs = (65_000 / len).min(crate::sys::gso::udp_max_segments());
    if gso && segs > 1 && sockopt::set_udp_segment(sock, len as u16).is_ok() {
        segs
    } else {
        1
    }
}

/// Sends `len`-byte datagrams with iperf3's header on a connected socket, `segs` datagrams a
/// message (GSO) in `sendmmsg` batches, paced by `flow::pacer`, until `count` datagrams (or
/// `stop`); returns the datagrams the kernel took (numbered densely from iperf3's 1). A signal
/// does not stop it by itself: its owner sets `stop` (`blast` at a signal; `recv` when the test
/// ends or it interrupts the test: a first signal there lets the test run to its end).
fn blaster(sock: UdpSocket, plan: TxPlan, segs: usize, stop: &AtomicBool) -> u64 {
    if let Some(c) = plan.cpu {
        crate::sys::affinity::pin_current(c);
    }
    let len = plan.len;
    let msgs = if segs > 1 { 8 } else { 64 };
    let per_batch = (msgs * segs) as u64;
    let mut batch = SendBatch::new(msgs, len * segs);
    let mut pacer = plan
        .pps
        .map(|r| Pacer::new(r.max(1e-3), per_batch, realtime_ns()));
    let mut seq0 = 0u64;
    while seq0 < plan.count && !stop.load(Ordering::Relaxed) {
        let now = realtime_ns();
        let mut n = (plan.count - seq0).min(per_batch);
        if let Some(p) = pacer.as_mut() {
            n = p.allowance(now, n);
            if n == 0 {
                // Short sleeps, so a stop is seen within 20 ms at any rate.
                let wait = p.wait_ns(now, 1).min(20_000_000);
                thread::sleep(Duration::from_nanos(wait));
                continue;
            }
        }
        // Message m carries datagrams m*segs.. of this batch, the last one what is left.
        let nm = (n as usize).div_ceil(segs);
        for m in 0..nm {
            let k = (n as usize - m * segs).min(segs);
            let slot = batch.slot_mut(m);
            for j in 0..k {
                let seq = seq0 + (m * segs + j) as u64;
                Header::at(seq, now).write(&mut slot[j * len..], plan.counters64);
            }
            batch.set_len(m, k * len);
        }
        match batch.send(&sock, 0, nm) {
            Ok(km) => {
                let took = ((km * segs) as u64).min(n);
                seq0 += took;
                if let Some(p) = pacer.as_mut() {
                    p.consume(took);
                }
            }
            // ENOBUFS, ECONNREFUSED from a queued ICMP error: try again.
            Err(_) => thread::sleep(Duration::from_micros(50)),
        }
    }
    seq0
}

enum Worker {
    Rx(Arc<RxLive>, JoinHandle<RxOut>),
    Tx(JoinHandle<u64>),
    /// Connected, not started yet (a sender before TEST_RUNNING).
    Idle(UdpSocket),
    Done,
}

/// One test's iperf3 UDP streams, in stream order. Every thread is stopped when dropped.
pub struct Streams {
    /// Per stream: whether netcore receives on it.
    rx: Vec<bool>,
    workers: Vec<Worker>,
    tx_stop: Arc<AtomicBool>,
    counters64: bool,
    /// Per sending stream, what its thread returned.
    sent: Vec<Option<u64>>,
    /// Whether a sender uses UDP GSO.
    gso: bool,
}

impl Streams {
    pub fn new(counters64: bool) -> Streams {
        Streams {
            rx: Vec::new(),
            workers: Vec::new(),
            tx_stop: Arc::new(AtomicBool::new(false)),
            counters64,
            sent: Vec::new(),
            gso: false,
        }
    }

    /// Whether the senders hand the kernel multi-datagram buffers (UDP GSO).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Adds the next stream (connected, its handshake done): a receiving one starts reading
    /// at once, a sending one waits for [`Streams::start_senders`].
    pub fn add(&mut self, sock: UdpSocket, receive: bool) -> Result<()> {
        let i = self.workers.len();
        self.rx.push(receive);
        self.sent.push(None);
        if !receive {
            self.workers.push(Worker::Idle(sock));
            return Ok(());
        }
        let live = Arc::new(RxLive::default());
        let l = live.clone();
        let wide = self.counters64;
        let h = thread::Builder::new()
            .name(format!("netcore-iperf3-rx-{i}"))
            .spawn(move || reader(sock, wide, l))?;
        self.workers.push(Worker::Rx(live, h));
        Ok(())
    }

    /// Starts every sending stream: `plan_of(k, n)` is the plan of the `k`th of `n` senders.
    pub(crate) fn start_senders(&mut self, plan_of: &dyn Fn(usize, usize) -> TxPlan) -> Result<()> {
        let n = self.rx.iter().filter(|r| !**r).count();
        let mut k = 0;
        for (i, w) in self.workers.iter_mut().enumerate() {
            if !matches!(w, Worker::Idle(_)) {
                continue;
            }
            let Worker::Idle(sock) = std::mem::replace(w, Worker::Done) else {
                continue;
            };
            let plan = plan_of(k, n);
            k += 1;
            let segs = gso_segments(&sock, plan.len, plan.gso);
            self.gso |= segs > 1;
            let stop = self.tx_stop.clone();
            let h = thread::Builder::new()
                .name(format!("netcore-iperf3-tx-{i}"))
                .spawn(move || blaster(sock, plan, segs, &stop))?;
            *w = Worker::Tx(h);
        }
        Ok(())
    }

    /// Whether every sender has sent its count (or there are none).
    pub(crate) fn senders_done(&self) -> bool {
        self.workers.iter().all(|w| match w {
            Worker::Tx(h) => h.is_finished(),
            _ => true,
        })
    }

    /// Datagrams received so far on every receiving stream (distinct sequence numbers).
    pub fn received(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| match w {
                Worker::Rx(l, _) => l.unique.load(Ordering::Relaxed),
                _ => 0,
            })
            .sum()
    }

    /// Stops the senders and keeps what each sent (final: the kernel took them).
    pub(crate) fn stop_senders(&mut self) -> Result<()> {
        self.tx_stop.store(true, Ordering::Relaxed);
        for (i, w) in self.workers.iter_mut().enumerate() {
            if let Worker::Tx(..) = w {
                let Worker::Tx(h) = std::mem::replace(w, Worker::Done) else {
                    continue;
                };
                let k = h
                    .join()
                    .map_err(|_| anyhow!("an iperf3 UDP sender thread panicked"))?;
                self.sent[i] = Some(k);
            }
        }
        Ok(())
    }

    /// What this side says of its streams in the results exchange, before the peer's figures
    /// are known: a sent stream's datagrams and bytes; a received stream's bytes, its highest
    /// sequence number as `packets` and the datagrams missing below it as `errors` (what is
    /// lost after the highest cannot be told yet), and jitter.
    pub fn results(&self, len: usize, end_time: f64) -> Vec<StreamResult> {
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut r = StreamResult {
                    id: stream_id(i),
                    retransmits: -1,
                    end_time,
                    ..StreamResult::default()
                };
                if let Some(k) = self.sent[i] {
                    r.bytes = k * len as u64;
                    r.packets = k as i64;
                } else if let Worker::Rx(l, _) = w {
                    let highest = l.highest.load(Ordering::Relaxed);
                    r.bytes = l.bytes.load(Ordering::Relaxed);
                    r.packets = highest as i64;
                    r.errors = highest.saturating_sub(l.unique.load(Ordering::Relaxed)) as i64;
                    r.jitter = f64::from_bits(l.jitter_bits.load(Ordering::Relaxed));
                }
                r
            })
            .collect()
    }

    /// Waits (bounded: 3 s, or 250 ms without a new datagram) until every receiving stream
    /// has as many distinct datagrams as `sent_of(stream id)` says were sent.
    pub(crate) fn await_stragglers(&self, sent_of: &dyn Fn(i64) -> Option<u64>) {
        let (mut last, mut at) = (u64::MAX, Instant::now());
        let stop_at = Instant::now() + Duration::from_secs(3);
        loop {
            let got = self.received();
            let all = self.workers.iter().enumerate().all(|(i, w)| match w {
                Worker::Rx(l, _) => {
                    sent_of(stream_id(i)).is_some_and(|s| l.unique.load(Ordering::Relaxed) >= s)
                }
                _ => true,
            });
            if got != last {
                (last, at) = (got, Instant::now());
            }
            if all || at.elapsed() > Duration::from_millis(250) || Instant::now() > stop_at {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the readers and makes the rows: received streams against `sent_of(id)` (what
    /// their sender says it sent), sent streams beside `peer_of(id)` (the receiver's own
    /// figures from the results exchange).
    pub fn finish(
        mut self,
        len: usize,
        sent_of: &dyn Fn(i64) -> Option<u64>,
        peer_of: &dyn Fn(i64) -> Option<StreamResult>,
    ) -> Result<(Vec<StreamRow>, Vec<SentRow>)> {
        self.stop_senders()?;
        let mut rows = Vec::new();
        let mut sent_rows = Vec::new();
        let workers = std::mem::take(&mut self.workers);
        for (i, w) in workers.into_iter().enumerate() {
            let id = stream_id(i);
            match w {
                Worker::Rx(l, h) => {
                    l.stop.store(true, Ordering::Relaxed);
                    let o = h
                        .join()
                        .map_err(|_| anyhow!("an iperf3 UDP reader thread panicked"))?;
                    rows.push(rx_row(id, &o, sent_of(id))?);
                }
                _ => {
                    let k = self.sent[i].unwrap_or(0);
                    let peer = peer_of(id);
                    sent_rows.push(SentRow {
                        id,
                        sent: k,
                        bytes: k * len as u64,
                        peer_bytes: peer.as_ref().map(|p| p.bytes),
                        peer_packets: peer.as_ref().map(|p| p.packets),
                        peer_lost: peer.as_ref().map(|p| p.errors),
                        peer_jitter_ms: peer.as_ref().map(|p| p.jitter * 1e3),
                    });
                }
            }
        }
        Ok((rows, sent_rows))
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.tx_stop.store(true, Ordering::Relaxed);
        for w in &self.workers {
            if let Worker::Rx(l, _) = w {
                l.stop.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// A received stream's row: netcore's classes against what the sender says it sent (or, if
/// it said nothing, the highest sequence seen), and iperf3's own receiver counting.
fn rx_row(id: i64, o: &RxOut, sent: Option<u64>) -> Result<StreamRow> {
    let highest = o.tracker.highest().map_or(0, |h| h + 1);
    let sent = sent.unwrap_or(highest).max(highest);
    let a = o
        .tracker
        .finish(sent)
        .map_err(|e| anyhow!("stream {id}: {e}"))?;
    Ok(StreamRow {
        id,
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender and a reader over loopback: every datagram counted once, in order, and the
    /// results-exchange figures say so.
    #[test]
    fn sender_and_reader_agree_over_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = crate::sys::sockopt::size_buffer(&b, 4 << 20, true);
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        let mut rx = Streams::new(true);
        rx.add(b, true).unwrap();
        let mut tx = Streams::new(true);
        tx.add(a, false).unwrap();
        tx.start_senders(&|_, _| TxPlan {
            len: 100,
            counters64: true,
            count: 500,
            pps: Some(100_000.0),
            gso: true,
            cpu: None,
        })
        .unwrap();
        let t = Instant::now();
        while !tx.senders_done() && t.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(5));
        }
        tx.stop_senders().unwrap();
        let sent = tx.results(100, 1.0);
        assert_eq!((sent[0].packets, sent[0].bytes), (500, 50_000));
        rx.await_stragglers(&|_| Some(500));
        let ours = rx.results(100, 1.0);
        assert_eq!(ours[0].packets, 500, "{ours:?}");
        let (rows, none) = rx.finish(100, &|_| Some(500), &|_| None).unwrap();
        assert!(none.is_empty());
        let r = &rows[0];
        assert_eq!((r.sent, r.in_order, r.lost, r.bytes), (500, 500, 0, 50_000));
        let (none, sent_rows) = tx
            .finish(100, &|_| None, &|_| ours.first().cloned())
            .unwrap();
        assert!(none.is_empty());
        assert_eq!(sent_rows[0].peer_packets, Some(500));
    }
}
