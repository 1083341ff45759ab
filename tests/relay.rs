//! `netcore relay` as the receiver's oracle: real binaries over loopback (and, with root, over
//! a veth pair between two network namespaces). The receiver's report must equal the relay's
//! ground truth number for number.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::proc::Proc;
use common::{addr_in, json, num as u, run};
use netcore::flow::udp::wire;
use serde_json::Value;

/// The loopback runs go one at a time: three processes each, paced, on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

const LIMIT: Duration = Duration::from_secs(60);

/// Runs recv, relay (with `impair` flags) and blast of `count` datagrams at `rate`; returns
/// (receiver report, relay report). The sender reaches the receiver's control port directly
/// (`--control`).
fn through_relay(impair: &[&str], count: u64) -> (Value, Value) {
    through_relay_with(impair, count, true).0
}

/// [`through_relay`], with the control channel direct or through the relay's TCP proxy; also
/// returns the sender's report.
fn through_relay_with(impair: &[&str], count: u64, control: bool) -> ((Value, Value), Value) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut recv = Proc::netcore(&["recv", "--listen", "127.0.0.1:0", "--once", "--json"]);
    let recv_addr = addr_in(&recv.wait_line("listening on"));
    let n = count.to_string();
    let mut args = vec![
        "--count", &n,
        // Ends the run (with a report that shows the shortfall) should loopback lose some.
        "--once", "--idle", "3s", "--json",
    ];
    args.extend_from_slice(impair);
    let (relay, relay_addr) = Proc::relay(&recv_addr, &args);
    let mut blast = vec![
        "blast",
        "--to",
        &relay_addr,
        "--count",
        &n,
        "--rate",
        "30kpps",
        "--len",
        "200",
        "--verify",
        "--json",
    ];
    if control {
        blast.extend_from_slice(&["--control", &recv_addr]);
    }
    let (st, out, err) = run(&blast, LIMIT);
    assert!(st.success(), "blast failed: {err}\n{out}");
    let sender = json(&out);
    let (st, relay_out, relay_err) = relay.finish(LIMIT);
    assert!(st.success(), "relay failed: {relay_err}");
    let (st, recv_out, recv_err) = recv.finish(LIMIT);
    assert!(st.success(), "recv failed: {recv_err}");
    let rx = json(&recv_out);
    let truth = json(&relay_out);
    assert_eq!(
        u(&sender["receiver"]["accounting"], "sent"),
        count,
        "sender"
    );
    assert_eq!(rx["test_id"], sender["test_id"]);
    ((rx, truth), sender)
}

/// The receiver's accounting equals the relay's ground truth, number for number.
fn assert_exact(rx: &Value, truth: &Value, count: u64) -> Value {
    let tests = truth["tests"].as_array().expect("tests");
    assert_eq!(tests.len(), 1, "one test through the relay: {truth}");
    let t = &tests[0];
    assert_eq!(t["test_id"], rx["test_id"]);
    assert_eq!(u(truth, "other_in"), 0);
    let a = &rx["receiver"]["accounting"];
    // What the receiver must count as lost: what the relay never sent on. That is the relay's
    // own `lost` when everything reached it; should loopback drop some on the way in (a busy
    // machine, small socket buffers), the comparison stays exact against the sender's count.
    let into_relay = u(t, "unique_in");
    if into_relay == count {
        assert_eq!(u(a, "lost"), u(t, "lost"), "receiver: {a}\nrelay: {t}");
    } else {
        eprintln!(
            "note: {} datagrams lost on the way into the relay",
            count - into_relay
        );
    }
    assert_eq!(
        u(a, "lost"),
        count - u(t, "unique_out"),
        "receiver: {a}\nrelay: {t}"
    );
    let pairs = [
        ("duplicate", "duplicates"),
        ("reordered", "reordered"),
        ("max_extent", "max_extent"),
        ("too_late", "too_late"),
        ("unique", "unique_out"),
    ];
    for (rk, tk) in pairs {
        assert_eq!(
            u(a, rk),
            u(t, tk),
            "receiver {rk} != relay {tk}\nreceiver: {a}\nrelay: {t}"
        );
    }
    assert_eq!(u(a, "sent"), count);
    assert_eq!(
        rx["receiver"]["invalid"].as_object().map_or(0, |m| m.len()),
        0,
        "{rx}"
    );
    // The relay's own books balance.
    let imp = &truth["impairments"];
    assert_eq!(
        u(truth, "forwarded"),
        u(truth, "datagrams_in") - u(imp, "dropped") - u(imp, "overflow") + u(imp, "duplicated")
    );
    t.clone()
}

#[test]
fn loss_only_at_two_seeds() {
    for seed in ["1", "7"] {
        let (rx, truth) = through_relay(&["--loss", "2%", "--seed", seed], 20_000);
        let t = assert_exact(&rx, &truth, 20_000);
        assert!(u(&t, "lost") > 100, "{t}");
        assert_eq!(u(&t, "reordered") + u(&t, "duplicates"), 0, "{t}");
    }
}

/// Datagrams the relay drops never reach the receiving host: the receiver's report puts its loss
/// under "not seen by this host", none at its socket.
#[test]
fn the_relays_drops_are_not_seen_by_the_receiving_host() {
    let (rx, truth) = through_relay(&["--loss", "3%", "--seed", "9"], 20_000);
    let t = assert_exact(&rx, &truth, 20_000);
    let lost = u(&rx["receiver"]["accounting"], "lost");
    assert!(lost > 300, "{t}");
    let k = &rx["receiver"]["kernel"];
    let split = &k["loss"];
    assert_eq!(u(&k["socket_drops"], "total"), 0, "{k}");
    assert_eq!(u(split, "socket_buffer"), 0, "{k}");
    assert_eq!(u(split, "lost"), lost, "{k}");
    assert_eq!(u(split, "backlog") + u(split, "not_seen"), lost, "{k}");
    // Backlog drops are host-wide: only other traffic on this host could put some there.
    if u(&k["host"], "backlog_drops") == 0 {
        assert_eq!(u(split, "not_seen"), lost, "{k}");
    }
}

#[test]
fn reorder_only() {
    let (rx, truth) = through_relay(
        &["--reorder", "3%", "--reorder-depth", "1..32", "--seed", "2"],
        20_000,
    );
    let t = assert_exact(&rx, &truth, 20_000);
    assert!(u(&t, "reordered") > 300, "{t}");
    assert!(u(&t, "max_extent") >= 20, "{t}");
    assert_eq!(u(&t, "lost") + u(&t, "duplicates"), 0, "{t}");
}

#[test]
fn duplicates_only() {
    let (rx, truth) = through_relay(&["--duplicate", "2%", "--seed", "3"], 20_000);
    let t = assert_exact(&rx, &truth, 20_000);
    assert!(u(&t, "duplicates") > 200, "{t}");
    assert_eq!(u(&t, "lost") + u(&t, "reordered"), 0, "{t}");
}

/// Loss, reordering and duplication at once.
const MIXED: [&str; 8] = [
    "--loss",
    "1%",
    "--reorder",
    "2%",
    "--reorder-depth",
    "1..64",
    "--duplicate",
    "1%",
];

#[test]
fn everything_at_once_at_two_seeds() {
    for seed in ["4", "11"] {
        let more = ["--delay", "1ms", "--jitter", "300us", "--seed", seed];
        let (rx, truth) = through_relay(&[&MIXED[..], &more].concat(), 20_000);
        let t = assert_exact(&rx, &truth, 20_000);
        assert!(u(&t, "lost") > 0 && u(&t, "duplicates") > 0 && u(&t, "reordered") > 0);
    }
}

/// No `--control`: the control channel goes through the relay's TCP proxy, the datagrams
/// through its impairments; the receiver's report (also as the sender got it back through the
/// proxy) equals the ground truth, and the relay counts the one connection.
#[test]
fn blast_without_control_through_the_tcp_proxy() {
    let impair = [&MIXED[..], &["--seed", "9"]].concat();
    let ((rx, truth), sender) = through_relay_with(&impair, 20_000, false);
    let t = assert_exact(&rx, &truth, 20_000);
    assert!(u(&t, "lost") > 0 && u(&t, "duplicates") > 0 && u(&t, "reordered") > 0);
    assert_eq!(
        sender["receiver"]["accounting"], rx["receiver"]["accounting"],
        "the sender's copy of the report came back through the proxy"
    );
    let tcp = &truth["tcp"];
    assert_eq!(u(tcp, "connections"), 1, "{tcp}");
    assert_eq!(u(tcp, "closed"), 1, "{tcp}");
    assert_eq!(tcp["errors"].as_object().map_or(0, |m| m.len()), 0, "{tcp}");
    assert_eq!(u(tcp, "refused") + u(tcp, "connect_failed"), 0, "{tcp}");
    assert!(u(tcp, "bytes_to_server") > 0 && u(tcp, "bytes_to_client") > 0);
}

/// What the test's server behind the relay does with its n-th connection.
fn proxy_peer(mut s: TcpStream, n: usize, tx: &mpsc::Sender<(usize, u64)>) {
    match n {
        // A firehose into a client that never reads: writes until the relay's backpressure
        // stalls it, reports how much it wrote, then holds the connection.
        0 => {
            s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            let chunk = vec![7u8; 64 * 1024];
            let mut total = 0u64;
            while total < 1 << 30 {
                match s.write(&chunk) {
                    Ok(k) => total += k as u64,
                    Err(_) => break,
                }
            }
            tx.send((n, total)).unwrap();
            let _ = s.read(&mut [0u8; 1]);
        }
        // Echo until the end of stream, then half-close.
        1 => {
            let mut v = Vec::new();
            s.read_to_end(&mut v).unwrap();
            s.write_all(&v).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            tx.send((n, v.len() as u64)).unwrap();
            let _ = s.read(&mut [0u8; 1]);
        }
        // Reads one byte, then resets the connection.
        2 => {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
            tx.send((n, 1)).unwrap();
        }
        // Reads one byte (so the relay has joined the pair before the test goes on), then
        // holds the connection until the relay closes it.
        _ => {
            let mut b = [0u8; 1];
            let got = s.read_exact(&mut b).map_or(0, |_| 1);
            tx.send((n, got)).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        }
    }
}

/// Reads until the end or an error (a reset), bounded; returns the bytes and whether it ended
/// with an error.
fn read_all(s: &mut TcpStream) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut v = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (v, false),
            Ok(k) => v.extend_from_slice(&buf[..k]),
            Err(e) => {
                assert_ne!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "no end within 20 s"
                );
                return (v, true);
            }
        }
    }
}

/// Bad peers on the TCP proxy: a client that never reads (the server behind is stalled by
/// backpressure, the relay's memory stays bounded, other connections still work), a server
/// that resets (the client sees the connection end, the relay counts it), one connection over
/// `--max-connections` (refused), and SIGINT with connections open (closed, counted).
#[test]
fn tcp_proxy_survives_bad_peers() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = server.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, s) in server.incoming().enumerate().take(4) {
            let tx = tx.clone();
            let Ok(s) = s else { return };
            std::thread::spawn(move || proxy_peer(s, n, &tx));
        }
    });
    let (relay, relay_addr) = Proc::relay(&to, &["--max-connections", "2", "--json"]);
    let next = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("server side")
    };

    // 0: never reads. The server's writes stall: what it wrote fits the socket buffers and
    // the relay's 64 KiB per direction (without backpressure it would write its whole GiB).
    let _silent = TcpStream::connect(&relay_addr).unwrap();
    let (n, wrote) = next();
    assert_eq!(n, 0);
    assert!(
        wrote < 256 << 20,
        "the firehose was not stalled: {wrote} bytes"
    );

    // 1: echo through the proxy while connection 0 is stalled; the half-close goes through.
    let mut echo = TcpStream::connect(&relay_addr).unwrap();
    echo.write_all(b"hello through the relay").unwrap();
    echo.shutdown(Shutdown::Write).unwrap();
    let (back, failed) = read_all(&mut echo);
    assert_eq!(back, b"hello through the relay");
    assert!(!failed);
    assert_eq!(next(), (1, 23));

    // 2: the server resets; the client's connection ends too.
    let mut reset = TcpStream::connect(&relay_addr).unwrap();
    reset.write_all(b"x").unwrap();
    assert_eq!(next(), (2, 1));
    let (got, _) = read_all(&mut reset);
    assert!(got.is_empty());

    // 3 is held open: with 0, the limit of 2; the next one is refused.
    let mut held = TcpStream::connect(&relay_addr).unwrap();
    held.write_all(b"a").unwrap();
    assert_eq!(next(), (3, 1));
    let mut over = TcpStream::connect(&relay_addr).unwrap();
    let (got, _) = read_all(&mut over);
    assert!(got.is_empty());

    netcore::sys::process::kill(relay.pid() as i32, libc::SIGINT).unwrap();
    let (st, out, err) = relay.finish(LIMIT);
    assert_eq!(st.code(), Some(130), "relay: {err}");
    let tcp = &json(&out)["tcp"];
    assert_eq!(u(tcp, "connections"), 4, "{tcp}");
    assert_eq!(u(tcp, "closed"), 1, "{tcp}");
    assert_eq!(u(tcp, "refused"), 1, "{tcp}");
    assert_eq!(u(tcp, "connect_failed"), 0, "{tcp}");
    assert_eq!(u(tcp, "max_open"), 2, "{tcp}");
    assert_eq!(u(&tcp["errors"], "ECONNRESET"), 1, "{tcp}");
    assert_eq!(u(&tcp["errors"], "stopped"), 2, "{tcp}");
    assert_eq!(u(tcp, "bytes_to_server"), 23 + 1 + 1, "{tcp}");
    assert!(u(tcp, "bytes_to_client") >= 23, "{tcp}");
    // The silent client got at most what the relay holds plus the socket buffers.
    assert!(u(tcp, "bytes_to_client") <= wrote + 23, "{tcp}");
    held.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(
        !matches!(held.read(&mut [0u8; 1]), Ok(1)),
        "closed by the relay"
    );
}

/// The return path: each source gets a socket of its own towards `--to`, so a server behind the
/// relay that answers where a datagram came from reaches the right source, through the relay's
/// port, unimpaired (the forward direction loses half), and the relay counts what it returned.
#[test]
fn answers_return_to_each_source_unimpaired() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let to = server.local_addr().unwrap().to_string();
    let (relay, relay_addr) = Proc::relay(
        &to,
        &[
            "--loss",
            "50%",
            "--seed",
            "3",
            "--once",
            "--idle",
            "1s",
            "--max-connections",
            "0",
            "--json",
        ],
    );
    let relay_addr: SocketAddr = relay_addr.parse().unwrap();
    // Echoes each datagram twice to where it came from, until quiet after traffic.
    let echo = std::thread::spawn(move || {
        let mut seen: BTreeMap<SocketAddr, Vec<Vec<u8>>> = BTreeMap::new();
        let mut buf = [0u8; 2048];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            match server.recv_from(&mut buf) {
                Ok((n, from)) => {
                    seen.entry(from).or_default().push(buf[..n].to_vec());
                    for _ in 0..2 {
                        server.send_to(&buf[..n], from).unwrap();
                    }
                }
                Err(_) if !seen.is_empty() => break,
                Err(_) => {}
            }
        }
        seen
    });
    let clients: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (c, s) in clients.iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        // Few enough that the answers fit the client's receive buffer until it reads them.
        for i in 0..100 {
            s.send_to(format!("{c}:{i}").as_bytes(), relay_addr)
                .unwrap();
        }
    }
    let seen = echo.join().unwrap();
    // Two sources, neither a client's own address (the relay's sockets).
    assert_eq!(seen.len(), 2, "{seen:?}");
    let mut forwarded = 0;
    for (c, s) in clients.iter().enumerate() {
        let mine = format!("{c}:");
        let (_, got) = seen
            .iter()
            .find(|(_, v)| v[0].starts_with(mine.as_bytes()))
            .expect("the server saw this client's datagrams");
        assert!(got.iter().all(|d| d.starts_with(mine.as_bytes())));
        forwarded += got.len();
        let mut back = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            assert_eq!(from, relay_addr, "answers come from the relay's port");
            back.push(buf[..n].to_vec());
        }
        let want: Vec<Vec<u8>> = got.iter().flat_map(|d| [d.clone(), d.clone()]).collect();
        assert_eq!(back, want, "client {c} got every answer, in order");
    }
    assert!(
        forwarded > 50 && forwarded < 150,
        "{forwarded} of 200 forwarded"
    );
    let (st, out, err) = relay.finish(LIMIT);
    assert!(st.success(), "relay: {err}");
    let r = json(&out);
    assert_eq!(u(&r, "datagrams_in"), 200);
    assert_eq!(u(&r, "forwarded"), forwarded as u64);
    assert_eq!(u(&r, "other_in"), 200);
    let back = &r["returned"];
    assert_eq!(u(back, "sources"), 2, "{back}");
    assert_eq!(u(back, "evicted"), 0, "{back}");
    assert_eq!(u(back, "datagrams"), 2 * forwarded as u64, "{back}");
    assert_eq!(
        back["errors"].as_object().map_or(0, |m| m.len()),
        0,
        "{back}"
    );
}

#[test]
fn burst_loss() {
    let (rx, truth) = through_relay(
        &["--loss", "3%", "--burst-loss", "6", "--seed", "5"],
        20_000,
    );
    let t = assert_exact(&rx, &truth, 20_000);
    assert!(u(&t, "lost") > 200, "{t}");
}

#[test]
fn rate_limited_link() {
    // 20 kpps link under 30 kpps offered, 8192-datagram queue: nothing overflows in 5000
    // datagrams, but the link paces them.
    let (rx, truth) = through_relay(&["--rate", "20kpps", "--loss", "1%", "--seed", "6"], 5_000);
    assert_exact(&rx, &truth, 5_000);
    assert_eq!(u(&truth["impairments"], "overflow"), 0);
}

#[test]
fn bad_flags_are_usage_errors() {
    let base = ["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"];
    for bad in [
        &["--loss", "150%"][..],
        &["--duplicate", "-1%"],
        &["--reorder-depth", "0"],
        &["--reorder-depth", "5..2"],
        &["--delay", "3parsecs"],
        &["--rate", "5furlongs"],
        &["--burst-loss", "0.5"],
        &["--burst-loss", "4"],
        &["--loss", "90%", "--burst-loss", "1"],
        &["--count", "0"],
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(bad);
        let (st, out, err) = run(&args, Duration::from_secs(20));
        assert!(!st.success(), "{bad:?} was accepted: {out}");
        assert_eq!(st.code(), Some(2), "{bad:?}: {err}");
        assert!(err.starts_with("netcore: error: "), "{bad:?}: {err}");
    }
}

#[test]
fn sigint_flushes_held_datagrams_and_the_report() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let to = sink.local_addr().unwrap().to_string();
    // An hour of delay: nothing leaves the relay until SIGINT flushes it.
    let (mut relay, relay_addr) = Proc::relay(&to, &["--delay", "1h", "--json"]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(&wire::build(100, 42, 0, 0, false), &relay_addr)
        .unwrap();
    relay.wait_line("traffic started");
    let pid = relay.pid().to_string();
    // The shell's builtin kill: no dependency on a kill binary.
    let st = Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .unwrap();
    assert!(st.success());
    let mut buf = [0u8; 2048];
    let n = sink.recv(&mut buf).expect("the held datagram is flushed");
    assert_eq!(wire::Header::decode(&buf[..n]).unwrap().seq, 0);
    let (st, out, err) = relay.finish(LIMIT);
    assert_eq!(st.code(), Some(130), "{err}");
    let r = json(&out);
    assert_eq!(r["interrupted"], true);
    assert_eq!((u(&r, "datagrams_in"), u(&r, "forwarded")), (1, 1));
    assert_eq!(r["tests"][0]["test_id"], "000000000000002a");
}

// ---- two hosts: network namespaces joined by a veth pair -------------------------------------

#[test]
fn two_hosts_over_veth() {
    let ns = match Netns::create("relay") {
        Ok(ns) => ns,
        Err(why) => {
            println!("skipping two_hosts_over_veth: {why}");
            return;
        }
    };
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Host a receives; host b sends, directly and then through a relay running on host b.
    let mut recv = Proc::spawn(ns.exec(&ns.a, &["recv", "--listen", "10.0.0.1:5300", "--json"]));
    recv.wait_line("listening on");
    let blast = |to: &str| {
        let mut c = ns.exec(
            &ns.b,
            &[
                "blast",
                "--to",
                to,
                "--control",
                "10.0.0.1:5300",
                "--count",
                "20000",
                "--rate",
                "20kpps",
                "--len",
                "1000",
                "--json",
            ],
        );
        let p = Proc::spawn({
            c.stdin(Stdio::null());
            c
        });
        let (st, out, err) = p.finish(LIMIT);
        assert!(st.success(), "blast in {}: {err}", ns.b);
        json(&out)
    };
    let direct = blast("10.0.0.1:5300");
    let a = &direct["receiver"]["accounting"];
    assert_eq!(u(a, "sent"), 20_000);
    assert_eq!(u(a, "unique") + u(a, "lost"), 20_000);
    assert!(u(a, "unique") > 0);
    assert_eq!(direct["target"], "10.0.0.1:5300");

    let mut relay = Proc::spawn(ns.exec(
        &ns.b,
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "10.0.0.1:5300",
            "--count",
            "20000",
            "--once",
            "--idle",
            "3s",
            "--loss",
            "1%",
            "--reorder",
            "1%",
            "--duplicate",
            "1%",
            "--seed",
            "8",
            "--json",
        ],
    ));
    let relay_addr = addr_in(&relay.wait_line("listening on"));
    let through = blast(&relay_addr);
    let (st, out, err) = relay.finish(LIMIT);
    assert!(st.success(), "relay: {err}");
    let truth = json(&out);
    // The sender's copy of the receiver's report carries the receiver's accounting.
    assert_exact(&through, &truth, 20_000);
}
