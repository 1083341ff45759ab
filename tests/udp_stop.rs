//! Regression tests for issues #16 and #17 (blast/recv): every wait bounded and stoppable,
//! smooth low-rate pacing, a hostile or silent peer never holds a side, interrupted tests
//! reported as such. Real binary over loopback; bounds are generous (a loaded 2-core machine):
//! they prove "not hung", not speed.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{addr_in, run, spawn, wait_output, Server};
use netcore::flow::control::{encode, Msg, Plan};
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn kill(child: &Child, sig: i32) {
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// `blast ARGS --json`, signalled with `sig` after `after`: exits within `limit` with
/// 128 + sig and prints a report marked interrupted.
fn interrupted_blast(args: &[&str], sig: i32, after: Duration, limit: Duration) -> Value {
    let child = spawn(&[&["blast", "--json"][..], args].concat(), Stdio::piped());
    std::thread::sleep(after);
    kill(&child, sig);
    let t = Instant::now();
    let out = wait_output(child, limit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(128 + sig),
        "{args:?}: stderr {stderr}"
    );
    assert!(t.elapsed() < limit);
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["receiver"]["interrupted"], true, "{r}");
    let a = &r["receiver"]["accounting"];
    assert_eq!(
        a["unique"].as_u64().unwrap() + a["lost"].as_u64().unwrap(),
        a["sent"].as_u64().unwrap()
    );
    r
}

/// #16.1: a low-rate blast keeps to --time and stops on SIGINT/SIGTERM (it slept a whole
/// token deficit, ~1000 s, in one sleep).
#[test]
fn low_rate_blast_keeps_time_and_stops_on_signals() {
    let t = Instant::now();
    let (st, out, err) = run(
        &["blast", "--rate", "1kbps", "--time", "2s", "--json"],
        Duration::from_secs(30),
    );
    assert!(st.success(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20));
    let r = json(&out);
    assert!(r["sender"]["elapsed_s"].as_f64().unwrap() < 5.0, "{r}");
    for sig in [libc::SIGINT, libc::SIGTERM] {
        interrupted_blast(
            &["--rate", "1bps", "--count", "2"],
            sig,
            Duration::from_millis(1500),
            Duration::from_secs(10),
        );
    }
}

/// #16.2: with GSO (the default), 1 Mbit/s goes out smoothly (~21 datagrams per 250 ms),
/// not as 88-datagram bursts once a second.
#[test]
fn low_rate_gso_pacing_is_smooth() {
    let (st, out, err) = run(
        &[
            "blast",
            "--rate",
            "1Mbps",
            "--time",
            "3s",
            "--interval",
            "250ms",
            "--json",
        ],
        Duration::from_secs(30),
    );
    assert!(st.success(), "{err}");
    let r = json(&out);
    let rows = r["intervals"].as_array().unwrap();
    assert!(rows.len() >= 6, "{r}");
    let mut prev = 0;
    let mut max_step = 0;
    for row in rows {
        let sent = row["sent"].as_u64().unwrap();
        max_step = max_step.max(sent - prev);
        prev = sent;
    }
    // 1 Mbit/s of 1472-byte datagrams: 85/s, 21 per 250 ms; a burst was 88.
    assert!(max_step <= 60, "a burst of {max_step} datagrams: {r}");
}

/// A fake receiver: answers Hello with Ready, then does `after_ready` with the connection.
fn fake_receiver(after_ready: impl FnOnce(TcpStream) + Send + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // The UDP port too, so datagrams are not refused.
    let u = UdpSocket::bind(addr).unwrap();
    std::thread::spawn(move || {
        let _u = u;
        let (c, _) = l.accept().unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        (&c).write_all(&encode(&Msg::Ready {
            port: None,
            rcvbuf: 1,
            gro: false,
        }))
        .unwrap();
        after_ready(c);
    });
    addr.to_string()
}

fn interval(i: u64) -> Vec<u8> {
    encode(&Msg::Interval {
        t: i as f64,
        datagrams: i,
        bytes: i,
        lost_so_far: 0,
    })
}

/// #16.4, #17.3: a receiver that keeps sending Intervals after Done and never reports: blast
/// gives up at its Report deadline (it re-armed it on every Interval), and sooner on SIGINT.
#[test]
fn intervals_after_done_do_not_hold_blast() {
    let keep_talking = |c: TcpStream| {
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        let _ = r.read_line(&mut line); // Done
        for i in 0..200 {
            if (&c).write_all(&interval(i)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let addr = fake_receiver(keep_talking);
    let t = Instant::now();
    let (st, _, err) = run(
        &["blast", "--to", &addr, "--count", "10"],
        Duration::from_secs(40),
    );
    assert!(!st.success());
    assert!(err.contains("no Report"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30));

    // Ctrl-C while waiting for the Report.
    let addr = fake_receiver(keep_talking);
    let child = spawn(&["blast", "--to", &addr, "--count", "10"], Stdio::piped());
    std::thread::sleep(Duration::from_millis(1500));
    kill(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(5));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
}

/// #17.3: Ctrl-C while waiting for Ready.
#[test]
fn signal_while_waiting_for_ready() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let child = spawn(&["blast", "--to", &addr, "--count", "10"], Stdio::piped());
    let (_c, _) = l.accept().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    kill(&child, libc::SIGTERM);
    let t = Instant::now();
    let out = wait_output(child, Duration::from_secs(5));
    assert!(t.elapsed() < Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted while waiting for Ready"), "{err}");
}

/// #17.3: an Interval flood prints a bounded number of lines (989,992 for a 3 s test).
#[test]
fn interval_flood_output_is_bounded() {
    let addr = fake_receiver(|c| {
        let blob: Vec<u8> = (0..1000).flat_map(interval).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && (&c).write_all(&blob).is_ok() {}
    });
    let (_, out, _) = run(
        &["blast", "--to", &addr, "--time", "2s"],
        Duration::from_secs(40),
    );
    let lines = out.lines().filter(|l| l.starts_with('[')).count();
    assert!(lines <= 2 * 100 + 10, "{lines} interval lines");
}

/// #16.5, #17.9: Ctrl-C on blast with its embedded receiver: both halves agree on the
/// interrupted test; the report is printed, marked interrupted, exit 130 (it was exit 0 with
/// `interrupted: false`, or "Connection reset by peer" and no report).
#[test]
fn embedded_blast_interrupted_reports() {
    for _ in 0..3 {
        let r = interrupted_blast(
            &["--time", "10s", "--rate", "300Mbps"],
            libc::SIGINT,
            Duration::from_millis(1500),
            Duration::from_secs(10),
        );
        assert!(r["sender"]["sent"].as_u64().unwrap() > 0);
        assert!(r["sender"]["elapsed_s"].as_f64().unwrap() < 9.0);
    }
}

/// Ctrl-C on `blast --bidir` (UDP) stops both halves: one report with both, each marked
/// interrupted and exact, exit 130.
#[test]
fn bidir_interrupted_reports_both_halves() {
    let child = spawn(
        &[
            "blast", "--bidir", "--json", "--time", "20s", "--rate", "100Mbps",
        ],
        Stdio::piped(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    kill(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(15));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr {stderr}");
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["schema"], "netcore.udp-bidir.v1");
    for half in ["forward", "reverse"] {
        let h = &r[half];
        assert_eq!(h["receiver"]["interrupted"], true, "{half}: {h}");
        let a = &h["receiver"]["accounting"];
        let sent = a["sent"].as_u64().unwrap();
        assert!(sent > 0, "{half}: {a}");
        assert_eq!(
            a["unique"].as_u64().unwrap() + a["lost"].as_u64().unwrap(),
            sent
        );
        assert!(
            h["sender"]["elapsed_s"].as_f64().unwrap() < 19.0,
            "{half} stopped early"
        );
    }
}

/// #16.6 end to end: `--rate 1GB/s` is 8 Gbit/s.
#[test]
fn byte_rates_on_the_command_line() {
    let (st, out, err) = run(
        &["blast", "--rate", "1GB/s", "--count", "100", "--json"],
        Duration::from_secs(30),
    );
    assert!(st.success(), "{err}");
    let r = json(&out);
    assert_eq!(r["sender"]["pacing"], "token bucket at 8.00 Gbit/s");
    let (st, _, _) = run(
        &["blast", "--rate", "1e6", "--count", "10", "--json"],
        Duration::from_secs(30),
    );
    assert!(st.success());
}

fn start_recv(extra: &[&str]) -> (Server, String) {
    let args = [
        &["recv", "--listen", "127.0.0.1:0", "--once", "--json"][..],
        extra,
    ]
    .concat();
    let (srv, line) = Server::start(&args, "listening on", true);
    let addr = addr_in(&line);
    (srv, addr)
}

/// #16.8: the receiver's report shows the sender's pacing and, after an interrupt, its
/// figures (it said "unpaced" and `0 B`).
#[test]
fn receiver_report_has_the_senders_pacing() {
    let (srv, addr) = start_recv(&[]);
    let (st, _, err) = run(
        &[
            "blast", "--to", &addr, "--rate", "100Mbps", "--count", "2000", "--json",
        ],
        Duration::from_secs(30),
    );
    assert!(st.success(), "{err}");
    let out = srv.wait(Duration::from_secs(20));
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        r["sender"]["pacing"], "token bucket at 100.00 Mbit/s",
        "{r}"
    );

    let (srv, addr) = start_recv(&[]);
    let s = interrupted_blast(
        &["--to", &addr, "--rate", "50Mbps", "--time", "10s"],
        libc::SIGINT,
        Duration::from_millis(1500),
        Duration::from_secs(10),
    );
    let out = srv.wait(Duration::from_secs(20));
    assert!(out.status.success());
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["receiver"]["interrupted"], true, "{r}");
    assert_eq!(r["sender"]["sent"], s["sender"]["sent"]);
    assert!(r["sender"]["bytes"].as_u64().unwrap() > 0, "{r}");
}

/// A Hello and the Setup of a UDP test (control protocol 2).
fn hello(plan: Plan) -> Vec<u8> {
    let mut b = encode(&Msg::Hello {
        version: netcore::flow::control::PROTOCOL_VERSION,
        test_id: 7,
        len: 1000,
        plan,
        streams: 1,
        verify: false,
        host: "elsewhere".into(),
        auth: false,
    });
    b.extend(encode(&Msg::Setup {
        tcp: None,
        reverse: None,
        echo: None,
        interval_ns: None,
    }));
    b
}

/// #17.5, #17.9: connections that never start a test (silent, a Hello for 2^64-1 ns then
/// silence, a port scan, garbage) do not hold `recv --once`: a real blast still runs and recv
/// exits 0 after it. Refusals say why.
#[test]
fn idle_connections_never_hold_the_receiver() {
    let (srv, addr) = start_recv(&[]);
    // A port scan: connect and close.
    drop(TcpStream::connect(&addr).unwrap());
    // Three silent connections.
    let silent: Vec<_> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // A Hello with an absurd plan: refused, saying why.
    let mut h = TcpStream::connect(&addr).unwrap();
    h.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    h.write_all(&hello(Plan::TimeNs(u64::MAX))).unwrap();
    let mut reply = String::new();
    BufReader::new(&h).read_line(&mut reply).unwrap();
    assert!(reply.contains("limit"), "{reply}");
    // Garbage: told it is malformed (it got a bare EOF).
    let mut g = TcpStream::connect(&addr).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    g.write_all(b"GET / HTTP/1.0\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&g).read_line(&mut reply).unwrap();
    assert!(reply.contains("malformed"), "{reply}");

    let (st, _, err) = run(
        &["blast", "--to", &addr, "--count", "1000", "--json"],
        Duration::from_secs(30),
    );
    assert!(st.success(), "{err}");
    let out = srv.wait(Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(silent);
}

/// #17.5: a Hello that is accepted and then silence (no datagram) ends within its deadline,
/// and the receiver serves the next test.
#[test]
fn silent_sender_after_hello_is_timed_out() {
    let (srv, addr) = Server::start(
        &["recv", "--listen", "127.0.0.1:0", "--json"],
        "listening on",
        true,
    );
    let addr = addr_in(&addr);
    let mut h = TcpStream::connect(&addr).unwrap();
    h.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    h.write_all(&hello(Plan::TimeNs(3600 * 1_000_000_000)))
        .unwrap();
    let mut r = BufReader::new(&h);
    let mut ready = String::new();
    r.read_line(&mut ready).unwrap();
    assert!(ready.contains("ready"), "{ready}");
    let t = Instant::now();
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    assert!(rest.contains("no datagram arrived"), "{rest}");
    assert!(t.elapsed() < Duration::from_secs(25));
    let (st, _, err) = run(
        &["blast", "--to", &addr, "--count", "1000", "--json"],
        Duration::from_secs(30),
    );
    assert!(st.success(), "{err}");
    drop(srv);
}

/// #17.9: a lying Done (`sent = u64::MAX`) is refused with the reason.
#[test]
fn lying_done_is_refused() {
    let (srv, addr) = start_recv(&[]);
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&hello(Plan::Count(10))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("ready"));
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.connect(&addr).unwrap();
    c.write_all(&encode(&Msg::Done {
        sent: u64::MAX,
        bytes: 0,
        elapsed_ns: 1,
        errors: Default::default(),
        interrupted: false,
        pacing: None,
        cpu: None,
        streams: Vec::new(),
        sndbuf_errors: None,
    }))
    .unwrap();
    let mut reply = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        reply.push_str(&line);
    }
    assert!(reply.contains("Done refused"), "{reply}");
    let out = srv.wait(Duration::from_secs(20));
    assert!(!out.status.success());
}

/// #17.9: with stdout closed, the report goes to stderr and the exit is not 0.
#[test]
fn closed_stdout_is_an_error() {
    let mut child = common::bin()
        .args(["blast", "--count", "1000", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = wait_output(child, Duration::from_secs(30));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"schema\""), "{err}");
}

/// #17.8: a relay whose --to is its own --listen is refused (one datagram became 305,150).
#[test]
fn relay_refuses_a_loop() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (l, t) in [
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")),
        (format!("0.0.0.0:{port}"), format!("127.0.0.1:{port}")),
    ] {
        let (st, _, err) = run(
            &["relay", "--listen", &l, "--to", &t, "--duplicate", "100%"],
            Duration::from_secs(10),
        );
        assert_eq!(st.code(), Some(1), "{err}");
        assert!(err.contains("loop back"), "{err}");
    }
}
