//! `recv`, `serve` and `relay` as services against hostile clients (issue #25): the metrics
//! endpoint stays bounded for clients that never read and cannot be shut by trickling ones,
//! and the relay's TCP proxy lets go of connections that move nothing. Real binary, loopback
//! (distinct 127.0.0.x addresses as distinct clients); every wait bounded and generous, no
//! assertion on speed. Each test prints the figures it measured.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::control::{expect_error, held_test, hello};
use common::proc::Proc;
use common::{addr_in, json, metrics_addr, run};
use netcore::flow::control::{ClientId, Conn, Msg, Plan, Reverse};
use netcore::flow::payload::TcpSpec;
use netcore::flow::streams::Mode;
use socket2::{Domain, Socket, Type};

const LIMIT: Duration = Duration::from_secs(60);

/// A TCP connection to `to` from the local address `from` (port chosen by the kernel), with
/// `rcvbuf` asked for when given.
fn connect_from(from: &str, to: SocketAddr, rcvbuf: Option<usize>) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n).unwrap();
    }
    let from: SocketAddr = format!("{from}:0").parse().unwrap();
    s.bind(&from.into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(10))
        .unwrap();
    s.into()
}

/// `serve --model epoll --metrics 127.0.0.1:0`: the process and the metrics address.
fn serve_with_metrics() -> (Proc, SocketAddr) {
    let mut p = Proc::netcore(&[
        "serve",
        "--model",
        "epoll",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let maddr = metrics_addr(&p.wait_line("metrics on")).parse().unwrap();
    (p, maddr)
}

/// One scrape from `from`: whether it got a `200` with a body, within a generous time.
fn scrape_from(from: &str, to: SocketAddr) -> Result<(), String> {
    let mut s = connect_from(from, to, None);
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if !got.is_empty() => return Err(format!("{e} after {} bytes", got.len())),
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&got);
    if text.starts_with("HTTP/1.1 200") && text.contains("# TYPE") {
        Ok(())
    } else {
        Err(format!("answer: {:?}", &text[..text.len().min(200)]))
    }
}

/// Resident memory of `pid` in KiB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

// ---- 1: a scraper that never reads cannot make the endpoint hold its answers -------------

/// Four connections from 127.0.0.2 with 4 KiB receive buffers pipeline `GET /metrics` for
/// 8 s and never read. The endpoint must stop reading them while their answers wait (it used
/// to answer every request into memory: serve went from 7 MiB to about 1 GiB in 8 s), so its
/// memory grows by less than 16 MiB (the fixed endpoint holds at most 64 KiB of answers and
/// 16 KiB of requests per connection), and scrapes from 127.0.0.3 meanwhile succeed.
#[test]
fn a_never_reading_scraper_cannot_grow_the_metrics_endpoint() {
    const GROWTH_LIMIT_KB: u64 = 16 * 1024;
    let (p, maddr) = serve_with_metrics();
    let pid = p.pid();
    scrape_from("127.0.0.3", maddr).expect("a first scrape");
    let start = rss_kb(pid);
    let conns: Vec<TcpStream> = (0..4)
        .map(|_| connect_from("127.0.0.2", maddr, Some(4096)))
        .collect();
    for c in &conns {
        c.set_nonblocking(true).unwrap();
    }
    let reqs = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".repeat(500);
    let (mut sent, mut peak, mut scrapes) = (0usize, start, Vec::new());
    let t0 = Instant::now();
    let mut next_scrape = t0 + Duration::from_secs(2);
    while t0.elapsed() < Duration::from_secs(8) && peak - start < 4 * GROWTH_LIMIT_KB {
        for mut c in &conns {
            match c.write(&reqs) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("the endpoint dropped a pipelining client: {e}"),
            }
        }
        if Instant::now() >= next_scrape {
            scrapes.push(scrape_from("127.0.0.3", maddr));
            next_scrape += Duration::from_secs(2);
        }
        peak = peak.max(rss_kb(pid));
        thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "never-reading scrapers: {} KiB of requests taken, RSS {start} KiB -> peak {peak} KiB \
         (+{} KiB) in {:.1} s; other scrapes: {scrapes:?}",
        sent >> 10,
        peak - start,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        peak - start < GROWTH_LIMIT_KB,
        "RSS grew by {} KiB (peak {peak} KiB)",
        peak - start
    );
    assert!(
        !scrapes.is_empty() && scrapes.iter().all(Result::is_ok),
        "{scrapes:?}"
    );
    drop(conns);
    scrape_from("127.0.0.3", maddr).expect("a scrape after the flood");
}

// ---- 6: trickling clients cannot shut out scrapes ----------------------------------------

/// 64 connections from 127.0.0.2 send a request head one byte a second (the endpoint's
/// connection cap). Scrapes from 127.0.0.3 must all succeed meanwhile (127.0.0.2's share is
/// 16 connections: the others are refused with a `503` saying so), and the accepted tricklers
/// are closed with a `408` once their head is 10 s old, however they trickle. (They used to
/// hold every slot for as long as they kept trickling: every scrape failed.)
#[test]
fn trickling_clients_cannot_shut_out_scrapes() {
    const TRICKLERS: usize = 64;
    let (_p, maddr) = serve_with_metrics();
    let mut conns: Vec<Option<TcpStream>> = (0..TRICKLERS)
        .map(|_| Some(connect_from("127.0.0.2", maddr, None)))
        .collect();
    for c in conns.iter().flatten() {
        c.set_nonblocking(true).unwrap();
    }
    let scraper = thread::spawn(move || {
        (0..5)
            .map(|_| {
                thread::sleep(Duration::from_millis(1500));
                scrape_from("127.0.0.3", maddr)
            })
            .collect::<Vec<_>>()
    });
    let head = b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut answers: Vec<String> = vec![String::new(); TRICKLERS];
    let mut closed_at: Vec<Option<Duration>> = vec![None; TRICKLERS];
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(40) && closed_at.iter().any(Option::is_none) {
        for (k, slot) in conns.iter_mut().enumerate() {
            let Some(c) = slot else { continue };
            let mut buf = [0u8; 4096];
            let ended = loop {
                match c.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => answers[k].push_str(&String::from_utf8_lossy(&buf[..n])),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if ended || c.write(&head[i % head.len()..][..1]).is_err() {
                closed_at[k] = Some(t0.elapsed());
                *slot = None;
            }
        }
        i += 1;
        thread::sleep(Duration::from_secs(1));
    }
    let scrapes = scraper.join().unwrap();
    let refused = answers.iter().filter(|a| a.contains(" 503 ")).count();
    let timed_out = answers.iter().filter(|a| a.contains(" 408 ")).count();
    let last_close = closed_at.iter().flatten().max().copied();
    eprintln!(
        "{TRICKLERS} tricklers from 127.0.0.2: {refused} refused (503), {timed_out} cut (408), \
         the last closed after {last_close:?}; scrapes from 127.0.0.3: {scrapes:?}"
    );
    assert!(scrapes.iter().all(Result::is_ok), "{scrapes:?}");
    let refusal = answers.iter().find(|a| a.contains(" 503 ")).expect("a 503");
    assert!(
        refusal.contains("16 connections open from 127.0.0.2"),
        "{refusal}"
    );
    assert_eq!(refused, TRICKLERS - 16, "{answers:?}");
    assert_eq!(timed_out, 16, "{answers:?}");
    assert!(
        closed_at.iter().all(Option::is_some),
        "tricklers still open after 40 s: {closed_at:?}"
    );
}

// ---- 11: the relay's proxy lets go of connections that move nothing ------------------------

/// An echo server on loopback (one thread per connection, bounded by the test's connections).
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Echoes `msg` through `s`: whether it came back whole.
fn echoes(s: &mut TcpStream, msg: &[u8]) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.write_all(msg).is_ok() && s.read_exact(&mut got).is_ok() && got == msg
}

/// Whether the relay let go of `s` (EOF or a reset) within `limit`.
fn let_go(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => Some(t.elapsed()),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Some(t.elapsed()),
        _ => None,
    }
}

/// `relay --max-connections 8`: 8 silent connections fill the proxy (a ninth is reset at once);
/// they are reset 10 s after their accept, so later connections get through again. (They used
/// to be held for as long as they stayed, refusing every later connection.) The report counts
/// them under `errors.idle`.
#[test]
fn relay_proxy_lets_go_of_silent_connections() {
    let backend = echo_server();
    let (relay, addr) = Proc::relay(&backend.to_string(), &["--max-connections", "8", "--json"]);
    let addr: SocketAddr = addr.parse().unwrap();
    let t0 = Instant::now();
    let mut silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    thread::sleep(Duration::from_millis(500));
    let mut ninth = TcpStream::connect(addr).unwrap();
    assert!(
        let_go(&mut ninth, Duration::from_secs(10)).is_some(),
        "the ninth connection was not refused"
    );
    let freed: Vec<Option<Duration>> = silent
        .iter_mut()
        .map(|s| {
            let left = (t0 + Duration::from_secs(30)).saturating_duration_since(Instant::now());
            let_go(s, left.max(Duration::from_millis(10))).map(|_| t0.elapsed())
        })
        .collect();
    eprintln!("8 silent connections let go after {freed:?}");
    assert!(freed.iter().all(Option::is_some), "held: {freed:?}");
    let mut later = TcpStream::connect(addr).unwrap();
    assert!(
        echoes(&mut later, b"through"),
        "a later connection was refused"
    );
    drop(later);
    let tcp = stop_relay(relay);
    assert_eq!(tcp["errors"]["idle"].as_u64(), Some(8), "{tcp}");
    assert_eq!(tcp["refused"].as_u64(), Some(1), "{tcp}");
}

/// `relay --tcp-idle 4s`: a connection that echoes once and goes quiet is reset, one that
/// talks every second stays.
#[test]
fn relay_proxy_lets_go_of_idle_connections() {
    let backend = echo_server();
    let (relay, addr) = Proc::relay(&backend.to_string(), &["--tcp-idle", "4s", "--json"]);
    let addr: SocketAddr = addr.parse().unwrap();
    let mut quiet = TcpStream::connect(addr).unwrap();
    let mut busy = TcpStream::connect(addr).unwrap();
    assert!(echoes(&mut quiet, b"once"));
    let t1 = Instant::now();
    for k in 0..7 {
        assert!(
            echoes(&mut busy, b"again"),
            "the busy connection broke at {k} s"
        );
        thread::sleep(Duration::from_secs(1));
    }
    let quiet_gone = let_go(&mut quiet, Duration::from_secs(20)).map(|_| t1.elapsed());
    eprintln!("a quiet connection let go after {quiet_gone:?} (--tcp-idle 4s)");
    assert!(quiet_gone.is_some(), "the quiet connection was held");
    assert!(echoes(&mut busy, b"still"), "the busy connection was cut");
    drop(busy);
    let tcp = stop_relay(relay);
    assert_eq!(tcp["errors"]["idle"].as_u64(), Some(1), "{tcp}");
}

/// SIGINT to the relay; its report's `tcp` object.
fn stop_relay(relay: Proc) -> serde_json::Value {
    netcore::sys::process::kill(relay.pid() as i32, libc::SIGINT).unwrap();
    let (st, out, err) = relay.finish(LIMIT);
    assert_eq!(st.code(), Some(130), "relay after SIGINT: {err}");
    json(&out)["tcp"].clone()
}

// ---- 7: a reverse Setup's pacing is checked where it is read -----------------------------

/// `recv --json`: the process and its address.
fn recv(extra: &[&str]) -> (Proc, String) {
    let args = [&["recv", "--listen", "127.0.0.1:0", "--json"][..], extra].concat();
    let mut p = Proc::netcore(&args);
    let line = p.wait_line("listening on");
    (p, addr_in(&line))
}

/// A reverse test whose Setup paces at 0, a negative rate, under 1 bit/s or an absurd one is
/// refused with the reason before anything starts (0 used to get Ready, then panic a thread
/// of recv's in the pacer's assertion, with no word to the client); recv goes on serving.
#[test]
fn a_reverse_setup_pacing_at_zero_or_below_is_refused_with_the_reason() {
    let (p, addr) = recv(&[]);
    for (i, bps) in [0.0, -5.0, -0.0, 0.5, 1e17].into_iter().enumerate() {
        let mut c = Conn::connect_from(addr.parse().unwrap(), None).unwrap();
        c.open_test(
            hello(40 + i as u64, 100, Plan::Count(1000)),
            &ClientId::default(),
        )
        .unwrap();
        c.send(&Msg::Setup {
            tcp: None,
            reverse: Some(Reverse {
                rate_bps: Some(bps),
            }),
            echo: None,
            interval_ns: None,
        })
        .unwrap();
        let why = expect_error(&mut c);
        assert!(why.contains("not a rate"), "{bps} bit/s: {why}");
    }
    let (st, _, err) = run(
        &[
            "blast", "--to", &addr, "-R", "--count", "500", "--rate", "1000pps",
        ],
        LIMIT,
    );
    assert!(st.success(), "a later reverse test: {err}");
    netcore::sys::process::kill(p.pid() as i32, libc::SIGTERM).unwrap();
    let (_, _, err) = p.finish(LIMIT);
    assert!(!err.contains("panicked"), "{err}");
}

// ---- 4: --max-duration cuts a reverse test whatever its plan -----------------------------

/// `recv --max-duration 3s`: a reverse test planned by count at 2 Mbit/s (a year's worth) is
/// refused before it starts, naming the limit, and so is one a raw client paces at 1 bit/s
/// (which would hold its slot for days); an unpaced one planned by count
/// is cut at 3 s and the client told why (exit 1, the reason on stderr). (They used to run
/// until killed: 26 s and 137 s in the audit.)
#[test]
fn max_duration_cuts_reverse_tests_planned_by_count_or_paced_to_a_crawl() {
    let (p, addr) = recv(&["--max-duration", "3s"]);
    for (args, what) in [
        (&["--rate", "2Mbps", "--len", "1000"][..], "take"),
        (&["--len", "100"][..], "cut:"),
    ] {
        let t = Instant::now();
        let base = ["blast", "--to", &addr, "-R", "--count", "1000000000"];
        let (st, _, err) = run(&[&base[..], args].concat(), Duration::from_secs(30));
        let took = t.elapsed();
        eprintln!("blast -R --count 1e9 {args:?} vs --max-duration 3s: {st} after {took:?}: {err}");
        assert_eq!(st.code(), Some(1), "{err}");
        assert!(
            err.contains(what) && err.contains("--max-duration"),
            "{err}"
        );
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
    let mut c = Conn::connect_from(addr.parse().unwrap(), None).unwrap();
    c.open_test(hello(77, 100, Plan::Count(1000)), &ClientId::default())
        .unwrap();
    c.send(&Msg::Setup {
        tcp: None,
        reverse: Some(Reverse {
            rate_bps: Some(1.0),
        }),
        echo: None,
        interval_ns: None,
    })
    .unwrap();
    let why = expect_error(&mut c);
    eprintln!("a reverse test paced at 1 bit/s: {why:?}");
    assert!(why.contains("--max-duration"), "{why}");
    netcore::sys::process::kill(p.pid() as i32, libc::SIGTERM).unwrap();
    let (_, _, err) = p.finish(LIMIT);
    assert!(!err.contains("panicked"), "{err}");
}

// ---- 3: a TCP test's plan is checked where it is final -----------------------------------

/// A TCP Setup asking for `streams` streams of `mode`, 64 KiB writes, unpaced.
fn tcp_setup(streams: u16, mode: Mode) -> Msg {
    Msg::Setup {
        tcp: Some(TcpSpec::plain(streams, mode, 65536)),
        reverse: None,
        echo: None,
        interval_ns: None,
    }
}

/// `recv --max-streams 2`: a TCP test whose Hello says one stream and whose Setup asks for 16
/// (reverse: 16 threads writing from recv) is refused with the limit, and so is a Hello of
/// 200 streams (past the protocol's 128, which skipped the check). (Both used to be served:
/// 16 reverse streams took recv to 264 MiB and 19 threads.)
#[test]
fn max_streams_binds_the_tcp_setup_not_only_the_hello() {
    let (p, addr) = recv(&["--max-streams", "2"]);
    for (id, hello_streams, setup_streams) in [(51u64, 1u16, 16u16), (52, 200, 200)] {
        let mut c = Conn::connect_from(addr.parse().unwrap(), None).unwrap();
        let mut h = hello(id, 65536, Plan::TimeNs(2_000_000_000));
        if let Msg::Hello { streams, .. } = &mut h {
            *streams = hello_streams;
        }
        c.open_test(h, &ClientId::default()).unwrap();
        let _ = c.send(&tcp_setup(setup_streams, Mode::Reverse));
        let why = expect_error(&mut c);
        assert!(
            why.contains("(--max-streams)"),
            "{hello_streams}/{setup_streams}: {why}"
        );
    }
    let (st, _, err) = run(
        &[
            "blast", "--to", &addr, "--proto", "tcp", "-P", "2", "--count", "100",
        ],
        LIMIT,
    );
    assert!(st.success(), "a test within the limit: {err}");
    netcore::sys::process::kill(p.pid() as i32, libc::SIGTERM).unwrap();
    let (_, _, err) = p.finish(LIMIT);
    assert!(!err.contains("panicked"), "{err}");
}

// ---- 5: the Hello queue and the test slots cannot be squatted ----------------------------

/// 16 silent connections from 127.0.0.2 that reconnect whenever they are closed (the Hello
/// queue's size) cannot keep a blast from 127.0.0.1 out: one address waits with at most 4 of
/// them, the others are told so. (They used to refuse every blast: "16 connections waiting
/// for a Hello".)
#[test]
fn silent_connections_from_one_address_cannot_keep_another_out() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let (p, addr) = recv(&[]);
    let to: SocketAddr = addr.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let told = Arc::new(Mutex::new(Vec::<String>::new()));
    let holders: Vec<_> = (0..16)
        .map(|_| {
            let (stop, told) = (stop.clone(), told.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut s = connect_from("127.0.0.2", to, None);
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let mut got = Vec::new();
                    let mut buf = [0u8; 512];
                    while !stop.load(Ordering::Relaxed) {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            Err(e) if e.kind() == ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                    told.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&got).into_owned());
                    thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(2500));
    let blasts: Vec<Result<(), String>> = (0..3)
        .map(|_| {
            let (st, _, err) = run(
                &["blast", "--to", &addr, "--count", "500", "--rate", "10Mbps"],
                LIMIT,
            );
            thread::sleep(Duration::from_millis(500));
            if st.success() {
                Ok(())
            } else {
                Err(err)
            }
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    for h in holders {
        h.join().unwrap();
    }
    let told = told.lock().unwrap();
    let shared = told
        .iter()
        .filter(|t| t.contains("connections from 127.0.0.2 waiting for a Hello"))
        .count();
    eprintln!(
        "16 silent reconnecting holders from 127.0.0.2: {} connections closed, {shared} told \
         their share is used up; blasts from 127.0.0.1: {blasts:?}",
        told.len()
    );
    assert!(blasts.iter().all(Result::is_ok), "{blasts:?}");
    assert!(shared > 0, "{told:?}");
    netcore::sys::process::kill(p.pid() as i32, libc::SIGTERM).unwrap();
    let _ = p.finish(LIMIT);
}

/// `recv --max-tests 3`: one address holding two tests cannot take the third slot (it is told
/// why); another address can. (One address could hold every slot.)
#[test]
fn one_address_cannot_take_the_last_test_slot() {
    let (p, addr) = recv(&["--max-tests", "3"]);
    let from: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let plan = Plan::TimeNs(30_000_000_000);
    let held: Vec<Conn> = (0..2)
        .map(|i| held_test(&addr, 90 + i, 1000, plan, Some(from)))
        .collect();
    let mut third = Conn::connect_from(addr.parse().unwrap(), Some(from)).unwrap();
    third
        .open_test(hello(92, 1000, plan), &ClientId::default())
        .unwrap();
    let why = expect_error(&mut third);
    assert!(why.contains("2 of its 3 test slots"), "{why}");
    let (st, _, err) = run(&["blast", "--to", &addr, "--count", "1000"], LIMIT);
    assert!(st.success(), "another address was kept out: {err}");
    drop(held);
    drop(p);
}

/// Seconds until a `blast --count 100` to `addr` is admitted (tried every 100 ms, 30 s at
/// most).
fn until_admitted(addr: &str) -> Duration {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let (st, _, _) = run(&["blast", "--to", addr, "--count", "100"], LIMIT);
        if st.success() {
            return t.elapsed();
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("no test admitted within 30 s");
}

/// `recv --max-tests 1`: a client that sends Hello and Setup (TCP, or UDP `-R`) and closes its
/// control connection frees the slot at once (it used to hold it 10-11 s: recv did not look
/// at the control connection while it waited for the data connections or the opener).
#[test]
fn a_closed_control_connection_frees_its_slot_at_once() {
    let (p, addr) = recv(&["--max-tests", "1"]);
    let setups = [
        ("TCP", tcp_setup(1, Mode::Forward)),
        (
            "-R",
            Msg::Setup {
                tcp: None,
                reverse: Some(Reverse {
                    rate_bps: Some(8e6),
                }),
                echo: None,
                interval_ns: None,
            },
        ),
    ];
    for (i, (what, setup)) in setups.into_iter().enumerate() {
        let mut c = Conn::connect_from(addr.parse().unwrap(), None).unwrap();
        c.open_test(
            hello(60 + i as u64, 1000, Plan::Count(100)),
            &ClientId::default(),
        )
        .unwrap();
        c.send(&setup).unwrap();
        assert!(matches!(c.expect("Ready", LIMIT), Ok(Msg::Ready { .. })));
        drop(c);
        let took = until_admitted(&addr);
        eprintln!("{what}: Hello + Setup + close; the next test admitted after {took:?}");
        assert!(
            took < Duration::from_secs(5),
            "{what}: the slot was held {took:?}"
        );
    }
    netcore::sys::process::kill(p.pid() as i32, libc::SIGTERM).unwrap();
    let (_, _, err) = p.finish(LIMIT);
    assert!(err.contains("closed its control connection"), "{err}");
}

// ---- 9: a netcore client during an iperf3 test is told the receiver is busy ----------------

/// While a stock `iperf3 -c` test runs on recv, a netcore blast (UDP or TCP) is told
/// "receiver is busy" in one line, exit 1 (it used to get "Connection reset by peer"); the
/// iperf3 test is not disturbed.
#[test]
fn a_blast_during_an_iperf3_test_is_told_the_receiver_is_busy() {
    if !have_iperf3() {
        return;
    }
    let (p, addr) = recv(&[]);
    let sa: SocketAddr = addr.parse().unwrap();
    let iperf = std::process::Command::new("iperf3")
        .args(["-c", &sa.ip().to_string(), "-p", &sa.port().to_string()])
        .args(["-t", "4", "-b", "10M"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("iperf3");
    thread::sleep(Duration::from_millis(1500));
    let mut told = Vec::new();
    for proto in ["udp", "tcp"] {
        let (st, _, err) = run(
            &["blast", "--to", &addr, "--proto", proto, "--count", "100"],
            LIMIT,
        );
        told.push(format!("{proto}: {st}: {}", err.trim()));
    }
    let out = common::wait_output(iperf, LIMIT);
    eprintln!("blasts during an iperf3 test: {told:?}");
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for t in &told {
        assert!(
            t.contains("exit status: 1") && t.contains("receiver is busy"),
            "{t}"
        );
    }
    netcore::sys::process::kill(p.pid() as i32, libc::SIGTERM).unwrap();
    let _ = p.finish(LIMIT);
}

// ---- 2: stock iperf3 clients obey the receiver's limits ----------------------------------

fn have_iperf3() -> bool {
    let have = std::process::Command::new("iperf3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("skipped: iperf3 is not installed (apt-get install iperf3)");
    }
    have
}

/// `iperf3 -c ADDR ARGS` to its end (30 s at most): its exit status, its output (stdout and
/// stderr) and how long it took.
fn iperf3_client(addr: &str, args: &[&str]) -> (std::process::ExitStatus, String, Duration) {
    let sa: SocketAddr = addr.parse().unwrap();
    let t = Instant::now();
    let child = std::process::Command::new("iperf3")
        .args(["-c", &sa.ip().to_string(), "-p", &sa.port().to_string()])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("iperf3");
    let out = common::wait_output(child, Duration::from_secs(30));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text, t.elapsed())
}

/// `recv --max-duration 3s --max-streams 2 --max-rate 20Mbps` against a stock iperf3 client:
/// what asks for more is refused at the parameter exchange with iperf3's own text for the
/// reason (TCP and UDP, both ways), and an unpaced `-n` test is cut at run time, by the rate
/// or (on a receiver with only --max-duration) by the time. (They used to run 8 s, 4 streams,
/// 400 Mbit/s.)
#[test]
fn stock_iperf3_clients_obey_the_receivers_limits() {
    if !have_iperf3() {
        return;
    }
    let (p, addr) = recv(&[
        "--max-duration",
        "3s",
        "--max-streams",
        "2",
        "--max-rate",
        "20Mbps",
    ]);
    let (q, addr_t) = recv(&["--max-duration", "3s"]);
    let cases: [(&str, &[&str], &str); 6] = [
        (&addr, &["-t", "8"], "test duration too long"),
        (
            &addr,
            &["-t", "2", "-P", "4", "-R"],
            "parallel streams too large",
        ),
        (
            &addr,
            &["-t", "2", "-b", "100M"],
            "bandwidth is larger than server limit",
        ),
        (
            &addr,
            &["-u", "-t", "2", "-b", "100M", "-R"],
            "bandwidth is larger than server limit",
        ),
        (
            &addr,
            &["-n", "20G"],
            "bandwidth is larger than server limit",
        ),
        (&addr_t, &["-n", "500G"], "test duration too long"),
    ];
    let mut seen = Vec::new();
    for (to, args, why) in cases {
        let (st, text, took) = iperf3_client(to, args);
        seen.push(format!(
            "iperf3 {args:?}: {st} after {took:.1?}: {}",
            text.trim().lines().last().unwrap_or("")
        ));
        assert!(
            !st.success() && text.contains(why),
            "{args:?}: {st}: {text}"
        );
        assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
    }
    eprintln!("{}", seen.join("\n"));
    for r in [p, q] {
        netcore::sys::process::kill(r.pid() as i32, libc::SIGTERM).unwrap();
        let (_, _, err) = r.finish(LIMIT);
        assert!(err.contains("(--max-"), "{err}");
    }
}

// ---- 12: a sender without the key learns nothing of what runs ----------------------------

/// `recv --max-tests 1 --auth-key-file K` with a test running: a sender that cannot prove the key is told
/// only that (it used to be told "receiver is busy (1 tests running)", or that its test id
/// was running, before any proof); one that proves it is told the receiver is busy.
#[test]
fn a_sender_without_the_key_learns_nothing_of_the_running_tests() {
    let dir = common::scratch_dir("abuse-auth");
    let (right, wrong) = (dir.join("k1"), dir.join("k2"));
    std::fs::write(&right, "the right key\n").unwrap();
    std::fs::write(&wrong, "the wrong key\n").unwrap();
    let key = |p: &std::path::Path| ClientId {
        bind: None,
        key: Some(netcore::flow::access::Key::read(p).unwrap()),
    };
    let (p, addr) = recv(&[
        "--max-tests",
        "1",
        "--auth-key-file",
        right.to_str().unwrap(),
    ]);
    let open = |id: u64, who: &ClientId| {
        let mut c = Conn::connect_from(addr.parse().unwrap(), None).unwrap();
        c.open_test(hello(id, 200, Plan::Count(100)), who).unwrap();
        c
    };
    let mut held = open(81, &key(&right));
    held.send(&Msg::Setup {
        tcp: None,
        reverse: None,
        echo: None,
        interval_ns: None,
    })
    .unwrap();
    assert!(matches!(held.expect("Ready", LIMIT), Ok(Msg::Ready { .. })));
    let mut told = Vec::new();
    for (id, who) in [(82, key(&wrong)), (81, key(&wrong)), (83, key(&right))] {
        let mut c = open(id, &who);
        told.push(expect_error(&mut c));
    }
    eprintln!("with a keyed test running: {told:?}");
    assert!(
        told[0].contains("wrong key") && told[1].contains("wrong key"),
        "{told:?}"
    );
    assert!(
        !told[0].contains("busy") && !told[1].contains("running"),
        "{told:?}"
    );
    assert!(
        told[2].contains("receiver is busy (1 tests running)"),
        "{told:?}"
    );
    drop(held);
    netcore::sys::process::kill(p.pid() as i32, libc::SIGTERM).unwrap();
    let _ = p.finish(LIMIT);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- 10: a stalled iperf3 client does not stall anyone else's admission ------------------

/// Two iperf3 clients that stall (one after its cookie, one in the middle of its parameters)
/// do not keep a netcore blast waiting: it is admitted and ends while they stall (each used to
/// hold recv's control thread 5 s, during which nothing was admitted). Their tests end by
/// their own deadlines, on threads of their own.
#[test]
fn stalled_iperf3_clients_do_not_stall_anyone_elses_admission() {
    let (p, addr) = recv(&[]);
    let to: SocketAddr = addr.parse().unwrap();
    let cookie = |c: u8| {
        let mut k = vec![c; 36];
        k.push(0);
        k
    };
    let mut only_cookie = TcpStream::connect(to).unwrap();
    only_cookie.write_all(&cookie(b'a')).unwrap();
    let mut half_params = TcpStream::connect(to).unwrap();
    half_params.write_all(&cookie(b'b')).unwrap();
    half_params.write_all(&100u32.to_be_bytes()).unwrap();
    half_params.write_all(b"{\"tcp\":tr").unwrap();
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (st, _, err) = run(&["blast", "--to", &addr, "--count", "200"], LIMIT);
    let took = t.elapsed();
    eprintln!("a blast while two iperf3 clients stall: {st} after {took:?}");
    assert!(st.success(), "{err}");
    assert!(took < Duration::from_secs(4), "the blast waited {took:?}");
    drop((only_cookie, half_params));
    netcore::sys::process::kill(p.pid() as i32, libc::SIGTERM).unwrap();
    let (_, _, err) = p.finish(LIMIT);
    assert!(!err.contains("panicked"), "{err}");
}

// ---- 12b: UDP from outside --allow is in no test's figures -------------------------------

/// Datagrams from an address outside `--allow` reach the receiving socket during an admitted
/// test: they are dropped before they are decoded, counted as invalid `not_allowed` (they
/// used to count as `magic` or, forged, in the test's own figures), with either backend.
#[test]
fn udp_from_outside_allow_is_in_no_test_figure() {
    for backend in ["mio", "uring"] {
        let (p, addr) = recv(&["--allow", "127.0.0.1/32", "--backend", backend]);
        let to: SocketAddr = addr.parse().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood = {
            let stop = stop.clone();
            thread::spawn(move || {
                let s = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
                let t0 = Instant::now();
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && t0.elapsed() < Duration::from_secs(20)
                {
                    sent += u64::from(s.send_to(b"not a netcore datagram", to).is_ok());
                    thread::sleep(Duration::from_micros(500));
                }
                sent
            })
        };
        let (st, out, err) = run(
            &[
                "blast", "--to", &addr, "--count", "4000", "--rate", "20Mbps", "--json",
            ],
            LIMIT,
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let flooded = flood.join().unwrap();
        assert!(st.success(), "{backend}: {err}");
        let r = json(&out);
        let rx = &r["receiver"];
        let not_allowed = rx["invalid"]["not_allowed"].as_u64().unwrap_or(0);
        assert!(not_allowed > 0 && flooded > 0, "{backend}: {rx}");
        assert!(rx["invalid"].get("magic").is_none(), "{backend}: {rx}");
        assert_eq!(rx["accounting"]["unique"], 4000, "{backend}: {rx}");
        assert_eq!(rx["accounting"]["lost"], 0, "{backend}: {rx}");
        drop(p);
    }
}

// ---- 12c: a keyed TCP test's data connections are bound to its control connection --------

/// What a data connection hears within `wait`: `Err` with the receiver's words (or "closed")
/// if it was refused, `Ok` if it is still held open.
fn refused_within(s: &mut TcpStream, wait: Duration) -> Result<(), String> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 512];
    match s.read(&mut b) {
        Ok(0) => Err("closed".into()),
        Ok(n) => Err(String::from_utf8_lossy(&b[..n]).into_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// `recv --auth-key-file`: a data connection that names a running keyed TCP test's id and
/// stream without the token derived from the key and that test's challenge (what anyone who
/// learned the id could send) is refused; one with the token is taken. Data connections used
/// to be tied to the test id only. A keyed `blast --proto tcp -P 2 --bidir` still runs.
#[test]
fn a_keyed_tcp_tests_data_connections_must_prove_the_key() {
    use netcore::flow::access::{Key, TOKEN_LEN};
    use netcore::flow::tcp::spec::encode_preamble;
    let dir = common::scratch_dir("datakey");
    let key = dir.join("key");
    std::fs::write(&key, "data connections too\n").unwrap();
    let key = key.to_str().unwrap();
    let (p, addr) = recv(&["--auth-key-file", key]);
    let client = ClientId {
        bind: None,
        key: Some(Key::read(key.as_ref()).unwrap()),
    };
    let mut c = Conn::connect_from(addr.parse().unwrap(), None).unwrap();
    let h = hello(77, 65536, Plan::TimeNs(3_000_000_000));
    let secret = c
        .open_test(h, &client)
        .unwrap()
        .expect("a keyed test's secret");
    c.send(&tcp_setup(1, Mode::Forward)).unwrap();
    c.expect("Ready", Duration::from_secs(10)).unwrap();
    let connect = |token: [u8; TOKEN_LEN]| {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(&encode_preamble(77, 0, token)).unwrap();
        s
    };
    let mut forged = connect([0; TOKEN_LEN]);
    let said = refused_within(&mut forged, Duration::from_secs(5));
    assert!(
        said.is_err(),
        "a data connection without the token was taken"
    );
    let mut wrong = connect(secret.token(1));
    assert!(refused_within(&mut wrong, Duration::from_secs(5)).is_err());
    let mut genuine = connect(secret.token(0));
    let held = refused_within(&mut genuine, Duration::from_millis(800));
    assert_eq!(held, Ok(()), "the test's own data connection was refused");
    drop((genuine, c));
    let (st, _, err) = run(
        &[
            "blast",
            "--to",
            &addr,
            "--proto",
            "tcp",
            "-P",
            "2",
            "--bidir",
            "--time",
            "1s",
            "--auth-key-file",
            key,
        ],
        LIMIT,
    );
    assert!(st.success(), "a keyed TCP blast: {err}");
    netcore::sys::process::kill(p.pid() as i32, libc::SIGTERM).unwrap();
    let (_, _, err) = p.finish(LIMIT);
    assert!(!err.contains("panicked"), "{err}");
}
