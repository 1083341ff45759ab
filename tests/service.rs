//! `recv` as a long-running service (#14): several tests at once with exact reports, the busy
//! refusal, limits a sender cannot exceed, `--allow`, `--auth-key-file`, the graceful stop on
//! SIGTERM/SIGHUP, and 500 tests in a row without growing fds or memory. Real binary, loopback,
//! every wait bounded; counts, not times.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::control::{self, expect_error, held_test, hello};
use common::proc::Proc;
use common::{addr_in, run, scratch_dir, spawn, wait_output};
use netcore::flow::control::{ClientId, Conn, Msg, Plan};
use netcore::flow::udp::wire;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Every JSON document on a stream (recv prints one report after another).
fn docs(s: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(s)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("not JSON ({e}): {s}")))
        .collect()
}

/// `recv --listen 127.0.0.1:0 --json EXTRA` and its address.
fn recv(extra: &[&str]) -> (Proc, String) {
    let args = [&["recv", "--listen", "127.0.0.1:0", "--json"][..], extra].concat();
    let mut p = Proc::netcore(&args);
    let line = p.wait_line("listening on");
    (p, addr_in(&line))
}

/// A UDP report's accounting holds `unique + lost == sent`, with the sender's count; not
/// interrupted.
pub(crate) fn exact_udp(r: &Value) {
    let a = &r["receiver"]["accounting"];
    let (sent, unique, lost) = (
        a["sent"].as_u64().unwrap(),
        a["unique"].as_u64().unwrap(),
        a["lost"].as_u64().unwrap(),
    );
    assert_eq!(unique + lost, sent, "unique + lost == sent: {a}");
    assert_eq!(r["sender"]["sent"].as_u64().unwrap(), sent, "{r}");
    assert!(unique > 0, "{a}");
    assert_eq!(r["receiver"]["interrupted"], false, "{r}");
}

/// A TCP report: every stream and sum row exact (bytes written == bytes read).
fn exact_tcp(r: &Value) {
    for row in r["streams"]
        .as_array()
        .unwrap()
        .iter()
        .chain(r["sum"].as_array().unwrap())
    {
        assert_eq!(row["exact"], true, "{row}");
    }
    assert_eq!(r["interrupted"], false, "{r}");
}

/// Sends `n` datagrams of test `test_id` (from 0) and Done; the receiver's Report.
fn finish_test(c: &mut Conn, addr: &str, test_id: u64, len: usize, n: u64) -> Value {
    let u = control::data_socket(addr, None);
    control::send_datagrams(&u, test_id, len, 0..n);
    let r = control::done_and_report(c, n, len as u64, 1_000_000_000);
    serde_json::to_value(&*r).unwrap()
}

/// A UDP and a TCP `blast ARGS --count 500 --json` to `addr` that succeed, each report exact.
fn admitted(addr: &str, args: &[&str]) {
    for proto in ["udp", "tcp"] {
        let base = [
            "blast", "--to", addr, "--proto", proto, "--count", "500", "--json",
        ];
        let (st, out, err) = run(&[&base[..], args].concat(), LIMIT);
        assert!(st.success(), "{proto}: {err}");
        let r = json(&out);
        if proto == "udp" {
            exact_udp(&r);
        } else {
            exact_tcp(&r);
        }
    }
}

/// One line on stderr, exit 1, nothing on stdout: a refused sender.
fn refused(args: &[&str], needle: &str) {
    let (st, out, err) = run(args, LIMIT);
    assert_eq!(st.code(), Some(1), "{args:?}: {err}");
    assert!(out.is_empty(), "{args:?}: {out}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
}

#[test]
fn four_tests_at_once_are_each_exact_and_a_fifth_is_told_busy() {
    let (p, addr) = recv(&["--max-tests", "4"]);
    // Four tests hold the receiver (each past Ready, so all four run at once for sure); the
    // fourth from another address (one address may hold all the slots but one).
    let ids = [11u64, 12, 13, 14];
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut held: Vec<Conn> = ids
        .iter()
        .map(|&id| {
            let from = (id == 14).then_some(other);
            held_test(&addr, id, 200, Plan::Count(3000), from)
        })
        .collect();
    // A fifth, UDP or TCP, is told so in one line and exits 1.
    refused(
        &["blast", "--to", &addr, "--count", "10"],
        "receiver is busy (4 tests running)",
    );
    refused(
        &["blast", "--to", &addr, "--proto", "tcp", "--count", "10"],
        "receiver is busy (4 tests running)",
    );
    // The four send interleaved (each its own test id on the one port) and end exact.
    let threads: Vec<_> = ids
        .iter()
        .zip(held.drain(..))
        .map(|(&id, mut c)| {
            let addr = addr.clone();
            std::thread::spawn(move || finish_test(&mut c, &addr, id, 200, 3000))
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        let a = &r["accounting"];
        assert_eq!(
            a["unique"].as_u64().unwrap() + a["lost"].as_u64().unwrap(),
            3000,
            "{a}"
        );
        assert!(a["unique"].as_u64().unwrap() > 0);
        assert_eq!(
            r["invalid"],
            serde_json::json!({}),
            "no datagram crossed tests: {r}"
        );
    }

    // Real senders, four UDP then four TCP at once: every report exact on both sides.
    for proto in ["udp", "tcp"] {
        let amount: &[&str] = if proto == "udp" {
            &["--count", "3000", "--rate", "20Mbps"]
        } else {
            &["--size", "3MB"]
        };
        // The fourth from another address (one address may hold all the slots but one).
        let kids: Vec<_> = (0..4)
            .map(|i| {
                let bind: &[&str] = if i == 3 {
                    &["--bind", "127.0.0.2"]
                } else {
                    &[]
                };
                let args = [
                    &["blast", "--to", &addr, "--proto", proto, "--json"][..],
                    amount,
                    bind,
                ]
                .concat();
                spawn(&args, std::process::Stdio::piped())
            })
            .collect();
        for k in kids {
            let o = wait_output(k, LIMIT);
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let r = json(&text);
            if proto == "udp" {
                exact_udp(&r);
            } else {
                exact_tcp(&r);
            }
        }
    }
    signal(&p, libc::SIGTERM);
    let (st, out, err) = p.finish(LIMIT);
    assert_eq!(st.code(), Some(128 + libc::SIGTERM), "{err}");
    // recv printed 4 held + 4 UDP + 4 TCP reports, each exact.
    let reports = docs(&out);
    assert_eq!(reports.len(), 12, "{out}");
    for r in &reports {
        if r["schema"].as_str().unwrap().starts_with("netcore.udp") {
            let a = &r["receiver"]["accounting"];
            assert_eq!(
                a["unique"].as_u64().unwrap() + a["lost"].as_u64().unwrap(),
                a["sent"].as_u64().unwrap()
            );
        } else {
            exact_tcp(r);
        }
    }
}

fn signal(p: &Proc, sig: i32) {
    netcore::sys::process::kill(p.pid() as i32, sig).expect("kill");
}

#[test]
fn allow_refuses_a_sender_outside_and_admits_one_inside() {
    let (p, addr) = recv(&["--allow", "127.0.0.2/32,::1/128"]);
    refused(
        &["blast", "--to", &addr, "--count", "100"],
        "127.0.0.1 is not allowed to start tests here (--allow)",
    );
    admitted(&addr, &["--bind", "127.0.0.2"]);
    drop(p);
    // Bad blocks are usage errors.
    let (st, _, err) = run(&["recv", "--allow", "10.0.0.0/33"], LIMIT);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("prefix length"), "{err}");
}

#[test]
fn auth_key_refuses_a_wrong_or_missing_key_and_admits_the_right_one() {
    let dir = scratch_dir("auth");
    let (right, wrong, empty) = (dir.join("k1"), dir.join("k2"), dir.join("k0"));
    std::fs::write(&right, "the right key\n").unwrap();
    std::fs::write(&wrong, "the wrong key\n").unwrap();
    std::fs::write(&empty, "\n").unwrap();
    let (right, wrong, empty) = (
        right.to_str().unwrap(),
        wrong.to_str().unwrap(),
        empty.to_str().unwrap(),
    );
    let (p, addr) = recv(&["--auth-key-file", right]);
    refused(
        &["blast", "--to", &addr, "--count", "100"],
        "requires a shared key",
    );
    refused(
        &[
            "blast",
            "--to",
            &addr,
            "--count",
            "100",
            "--auth-key-file",
            wrong,
        ],
        "authentication failed: wrong key",
    );
    admitted(&addr, &["--auth-key-file", right]);
    // A proof for another test id (a replayed answer) is refused: the MAC binds the id.
    let mut c = Conn::connect(addr.parse().unwrap()).unwrap();
    let mut h = hello(5, 200, Plan::Count(10));
    if let Msg::Hello { auth, .. } = &mut h {
        *auth = true;
    }
    c.send(&h).unwrap();
    let Msg::Challenge { nonce } = c.expect("Challenge", Duration::from_secs(10)).unwrap() else {
        panic!("no challenge");
    };
    let nonce = netcore::flow::access::unhex(&nonce).unwrap();
    c.send(&Msg::Auth {
        mac: netcore::flow::access::answer(b"the right key", 6, &nonce),
    })
    .unwrap();
    assert!(expect_error(&mut c).contains("wrong key"));
    drop(p);
    // An empty or missing key file: one line, exit 2, on either side.
    for args in [
        vec!["recv", "--auth-key-file", empty],
        vec!["blast", "--count", "1", "--auth-key-file", empty],
        vec![
            "blast",
            "--count",
            "1",
            "--auth-key-file",
            "/nonexistent/key",
        ],
    ] {
        let (st, _, err) = run(&args, LIMIT);
        assert_eq!(st.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("key file"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sender_over_the_limits_is_cut_with_the_reason() {
    let (p, addr) = recv(&[
        "--max-duration",
        "1s",
        "--max-rate",
        "2Mbps",
        "--max-streams",
        "2",
        "--interval",
        "100ms",
    ]);
    // Plans over the limits are refused at the Hello.
    refused(
        &["blast", "--to", &addr, "--time", "5s"],
        "over this receiver's limit of 1 s (--max-duration)",
    );
    refused(
        &["blast", "--to", &addr, "-P", "3", "--count", "30"],
        "over this receiver's limit of 2 (--max-streams)",
    );
    // Faster than allowed: a sender whose plan is within the limits sends at far over
    // --max-rate (64 kB a round, rounds a few ms apart: tens of Mbit/s) and is cut with the
    // reason. It sends until it is cut (bounded by its plan's count and by time), so the cut
    // cannot miss it by its having finished first.
    let mut c = held_test(&addr, 20, 1000, Plan::Count(1_000_000), None);
    let u = control::data_socket(&addr, None);
    let t = Instant::now();
    let mut seq = 0;
    let why = loop {
        control::send_datagrams(&u, 20, 1000, seq..seq + 64);
        seq += 64;
        assert!(
            seq < 1_000_000 && t.elapsed() < LIMIT / 2,
            "not cut after {seq} datagrams"
        );
        match c.recv_until(Instant::now() + Duration::from_millis(1)) {
            Ok(Some(Msg::Error { message })) => break message,
            Ok(_) => {}
            Err(e) => panic!("{e:#}"),
        }
    };
    assert!(why.contains("(--max-rate)"), "{why}");

    // The same for TCP; and for both, with the longest interval a test may ask for: the
    // limit is checked on the receiver's own cadence (its --interval), not the test's.
    for args in [
        &["--proto", "tcp", "--size", "2GB"][..],
        &["--proto", "tcp", "--size", "2GB", "--interval", "60s"],
        &["--time", "900ms", "--rate", "200Mbps", "--interval", "60s"],
    ] {
        let (st, _, err) = run(&[&["blast", "--to", &addr][..], args].concat(), LIMIT);
        assert_eq!(st.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("(--max-rate)"), "{args:?}: {err}");
    }

    // A sender that says 10 datagrams and sends 300 is cut.
    let mut c = held_test(&addr, 21, 100, Plan::Count(10), None);
    for seq in 0..300 {
        u.send(&wire::build(100, 21, seq, 1, false)).unwrap();
    }
    let why = expect_error(&mut c);
    assert!(why.contains("more than the 10 planned"), "{why}");

    // A sender that plans 0.5 s and goes on sending is cut at --max-duration (a datagram now
    // and then: under the rate limit).
    let mut c = held_test(&addr, 22, 100, Plan::TimeNs(500_000_000), None);
    let mut seq = 0;
    let why = loop {
        u.send(&wire::build(100, 22, seq, 1, false)).unwrap();
        seq += 1;
        assert!(seq < 2000, "not cut after {seq} datagrams");
        match c.recv_until(Instant::now() + Duration::from_millis(20)) {
            Ok(Some(Msg::Error { message })) => break message,
            Ok(_) => {}
            Err(e) => panic!("{e:#}"),
        }
    };
    assert!(why.contains("(--max-duration)"), "{why}");

    signal(&p, libc::SIGTERM);
    let (st, out, err) = p.finish(LIMIT);
    assert_eq!(st.code(), Some(128 + libc::SIGTERM), "{err}");
    // The receiver's side: a line naming each cut, and the reports marked interrupted.
    for needle in [
        "(--max-rate)",
        "more than the 10 planned",
        "(--max-duration)",
    ] {
        assert!(
            err.contains(needle),
            "'{needle}' not in recv's stderr: {err}"
        );
    }
    let cut: Vec<_> = docs(&out)
        .into_iter()
        .filter(|r| r["receiver"]["interrupted"] == true)
        .collect();
    // UDP: the raw sender over the rate, blast over it with 60 s intervals, 300 of 10, past
    // the duration.
    assert_eq!(cut.len(), 4, "{out}");
}

#[test]
fn reverse_sends_nothing_to_an_opener_from_another_host() {
    let (p, addr) = recv(&[]);
    let server: SocketAddr = addr.parse().unwrap();
    // The control connection comes from 127.0.0.2 ...
    let mut c = Conn::connect_from(server, Some("127.0.0.2".parse().unwrap())).unwrap();
    c.open_test(hello(31, 200, Plan::Count(1000)), &ClientId::default())
        .unwrap();
    c.send(&Msg::Setup {
        tcp: None,
        reverse: Some(netcore::flow::control::Reverse { rate_bps: None }),
        echo: None,
        interval_ns: None,
    })
    .unwrap();
    let port = match c.expect("Ready", Duration::from_secs(10)).unwrap() {
        Msg::Ready { port: Some(p), .. } => p,
        m => panic!("{m:?}"),
    };
    // ... and the opener from 127.0.0.1: the receiver must not send there.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        u.send_to(&wire::opener(31), SocketAddr::new(server.ip(), port))
            .unwrap();
    }
    let why = expect_error(&mut c);
    assert!(why.contains("no opener datagram"), "{why}");
    u.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        u.recv(&mut buf).is_err(),
        "the receiver sent to an unadmitted source"
    );
    drop(p);
}

#[test]
fn sigterm_and_sighup_let_running_tests_finish_a_second_signal_interrupts() {
    for sig in [libc::SIGTERM, libc::SIGHUP] {
        let (mut p, addr) = recv(&[]);
        let mut c = held_test(&addr, 41, 200, Plan::Count(2000), None);
        signal(&p, sig);
        p.wait_line("stopping");
        // New tests are refused while the running one goes on.
        refused(
            &["blast", "--to", &addr, "--count", "10"],
            "the receiver is stopping",
        );
        let r = finish_test(&mut c, &addr, 41, 200, 2000);
        assert_eq!(r["interrupted"], false, "{r}");
        let (st, out, err) = p.finish(LIMIT);
        // Drained, yet a signal ended the run: 128 + the signal, as every command.
        assert_eq!(st.code(), Some(128 + sig), "{err}");
        let reports = docs(&out);
        assert_eq!(reports.len(), 1, "{out}");
        assert_eq!(reports[0]["receiver"]["interrupted"], false);
        assert_eq!(reports[0]["receiver"]["accounting"]["sent"], 2000);
    }
    // Two signals: the running test ends now, its report marked interrupted.
    let (mut p, addr) = recv(&[]);
    let mut c = held_test(&addr, 42, 200, Plan::Count(2000), None);
    signal(&p, libc::SIGTERM);
    p.wait_line("stopping");
    signal(&p, libc::SIGTERM);
    let report = loop {
        if let Msg::Report { receiver } = c.expect("Report", Duration::from_secs(20)).unwrap() {
            break receiver;
        }
    };
    assert!(report.interrupted);
    let (st, out, _) = p.finish(LIMIT);
    assert_eq!(st.code(), Some(128 + libc::SIGTERM));
    assert_eq!(docs(&out)[0]["receiver"]["interrupted"], true);
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The fd count once the receiver has closed what the last test left (bounded wait: the
/// receiver ends a test's connection just after the sender has its report).
fn settled_fds(pid: u32, baseline: usize) -> usize {
    let mut n = fds(pid);
    for _ in 0..50 {
        if n <= baseline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        n = fds(pid);
    }
    n
}

#[test]
fn five_hundred_tests_in_a_row_leave_fds_and_memory_where_they_were() {
    let (p, addr) = recv(&[]);
    let pid = p.pid();
    let one = |i: u64| {
        let id = 1000 + i;
        if i % 10 == 9 {
            // Every tenth test is TCP.
            let (st, out, err) = run(
                &[
                    "blast", "--to", &addr, "--proto", "tcp", "--count", "4", "--len", "16KiB",
                    "--json",
                ],
                LIMIT,
            );
            assert!(st.success(), "{err}");
            exact_tcp(&json(&out));
        } else {
            let mut c = held_test(&addr, id, 100, Plan::Count(20), None);
            let r = finish_test(&mut c, &addr, id, 100, 20);
            assert_eq!(r["accounting"]["sent"], 20);
        }
    };
    for i in 0..10 {
        one(i);
    }
    // The least of a few looks: a test's connection may still be closing.
    let fds0 = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            fds(pid)
        })
        .min()
        .unwrap();
    let rss0 = rss_kib(pid);
    for i in 10..500 {
        one(i);
    }
    let fds1 = settled_fds(pid, fds0);
    let rss1 = rss_kib(pid);
    assert_eq!(fds1, fds0, "open fds after 10 tests and after 500");
    // A little slack for the allocator's caches (one test's tracker is 2 MiB).
    assert!(
        rss1 <= rss0 + 4096,
        "RSS grew from {rss0} KiB after 10 tests to {rss1} KiB after 500"
    );
    drop(p);
}
