//! `netcore serve` end to end: the real binary on loopback, port 0, bounded durations.
//! Every server started here is killed by a guard, also when an assertion fails.

use crate::common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{read_to_end, Serve};

const MODELS: [&str; 6] = ["iterative", "fork", "thread", "pool", "epoll", "uring"];
const T: Duration = Duration::from_secs(20);

/// The serve-specific checks on the shared guard.
impl Serve {
    /// SIGTERM; expects exit 143 (128 + SIGTERM, an interrupted run) and a totals line, which
    /// it returns.
    fn stop(mut self) -> String {
        netcore::sys::process::kill(self.child.id() as i32, libc::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + T;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "server did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            status.code(),
            Some(128 + libc::SIGTERM),
            "exit status {status:?}"
        );
        let mut totals = String::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            if l.starts_with("totals:") {
                totals = l;
                break;
            }
        }
        assert!(totals.contains("connections="), "no totals line");
        totals
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.set_write_timeout(Some(T)).unwrap();
        s
    }
}

fn read_line(s: &mut TcpStream) -> String {
    let mut v = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                v.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            Err(e) => panic!("read_line: {e}"),
        }
    }
    String::from_utf8(v).unwrap()
}

fn ask(s: &mut TcpStream, req: &str) -> String {
    s.write_all(req.as_bytes()).unwrap();
    read_line(s)
}

const SCRIPT: &[u8] = b"ECHO hello world\r\nUPPER abc\nREVERSE xyz\nSUM 1 2 3\n\
SUM 9223372036854775807 1\nHASH 20000 abc\nSLEEP 50\nECHO after sleep\nNOPE x\n\xff\xfe\n\n\
SLEEP 99999\nBYE\nECHO ignored\n";

fn expected() -> Vec<u8> {
    let h = netcore::proto::hash(20000, b"abc");
    format!(
        "hello world\nABC\nzyx\n6\nERR SUM: overflow\n{h:016x}\nOK slept 50ms\nafter sleep\n\
ERR unknown verb 'NOPE'\nERR invalid UTF-8\nERR empty request\n\
ERR SLEEP: milliseconds must be 0..=60000\nGoodbye!\n"
    )
    .into_bytes()
}

#[test]
fn every_model_serves_the_same_conversation() {
    for model in MODELS {
        let srv = Serve::start(&["--model", model], T);
        // All at once (pipelined).
        let mut c = srv.connect();
        c.write_all(SCRIPT).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&read_to_end(&mut c)),
            String::from_utf8_lossy(&expected()),
            "model {model}, pipelined"
        );
        // In pieces, cut mid-line.
        let mut c = srv.connect();
        for piece in SCRIPT.chunks(7) {
            c.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(read_to_end(&mut c), expected(), "model {model}, in pieces");
        // STATS, then the echo protocol is checked separately below.
        let mut c = srv.connect();
        let st = ask(&mut c, "ECHO x\nSTATS\n");
        assert_eq!(st, "x\n");
        let st = read_line(&mut c);
        assert!(
            st.starts_with("requests=2 errors=0 bytes_in=13 "),
            "{model}: {st}"
        );
        assert!(st.contains("server_connections=3"), "{model}: {st}");
        drop(c);
        let totals = srv.stop();
        assert!(totals.contains("connections=3"), "{model}: {totals}");
        assert!(totals.contains("requests=28"), "{model}: {totals}");
    }
}

#[test]
fn every_model_echoes_raw_bytes() {
    for model in MODELS {
        let srv = Serve::start(&["--model", model, "--proto", "echo"], T);
        let mut c = srv.connect();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let d2 = data.clone();
        let mut w = c.try_clone().unwrap();
        let t = std::thread::spawn(move || {
            w.write_all(&d2).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let got = read_to_end(&mut c);
        t.join().unwrap();
        assert_eq!(got.len(), data.len(), "{model}");
        assert!(got == data, "{model}: echo differs");
        srv.stop();
    }
}

#[test]
fn epoll_with_two_reactors() {
    let srv = Serve::start(
        &["--model", "epoll", "--reactors", "2", "--workers", "2"],
        T,
    );
    let mut handles = vec![];
    for _ in 0..8 {
        let mut c = srv.connect();
        handles.push(std::thread::spawn(move || {
            c.write_all(SCRIPT).unwrap();
            read_to_end(&mut c)
        }));
    }
    for h in handles {
        assert_eq!(h.join().unwrap(), expected());
    }
    srv.stop();
}

#[test]
fn iterative_makes_the_second_client_wait() {
    let srv = Serve::start(&["--model", "iterative"], T);
    let mut a = srv.connect();
    assert_eq!(ask(&mut a, "ECHO a\n"), "a\n");
    let mut b = srv.connect(); // completes in the listen queue
    b.write_all(b"ECHO b\n").unwrap();
    b.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut x = [0u8; 8];
    let r = b.read(&mut x);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "second client was served while the first was connected: {r:?}"
    );
    assert_eq!(ask(&mut a, "ECHO a2\n"), "a2\n");
    assert_eq!(ask(&mut a, "BYE\n"), "Goodbye!\n");
    drop(a);
    b.set_read_timeout(Some(T)).unwrap();
    assert_eq!(read_line(&mut b), "b\n");
    drop(b);
    srv.stop();
}

#[test]
fn epoll_holds_2000_idle_connections_and_serves_active_ones() {
    holds_2000_idle_connections("epoll");
}

#[test]
fn uring_holds_2000_idle_connections_and_serves_active_ones() {
    holds_2000_idle_connections("uring");
}

fn holds_2000_idle_connections(model: &str) {
    let lim = netcore::sys::raise_nofile(8192).unwrap();
    assert!(lim >= 4200, "RLIMIT_NOFILE hard limit too low: {lim}");
    let srv = Serve::start(&["--model", model], T);
    let idle: Vec<TcpStream> = (0..2000).map(|_| srv.connect()).collect();
    let addr = srv.addr;
    let workers: Vec<_> = (0..20)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(T)).unwrap();
                for i in 0..50 {
                    assert_eq!(
                        ask(&mut c, &format!("ECHO {w}-{i}\n")),
                        format!("{w}-{i}\n")
                    );
                }
                assert_eq!(ask(&mut c, "SLEEP 20\n"), "OK slept 20ms\n");
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut idle = idle;
    let mut c = srv.connect();
    // The workers' closes reach the server asynchronously: wait until only the 2000 idle
    // connections and this one remain.
    let deadline = Instant::now() + T;
    loop {
        let st = ask(&mut c, "STATS\n");
        if st.contains("server_active=2001 ") {
            break;
        }
        assert!(Instant::now() < deadline, "{st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (i, s) in idle.iter_mut().enumerate() {
        s.write_all(format!("SUM {i} 1\n").as_bytes()).unwrap();
    }
    for (i, s) in idle.iter_mut().enumerate() {
        assert_eq!(read_line(s), format!("{}\n", i + 1));
    }
    drop(idle);
    srv.stop();
}

fn faults(model: &str) {
    let srv = Serve::start(&["--model", model, "--idle-timeout", "2s"], T);
    // A bystander connected throughout must keep being served.
    let mut by = srv.connect();
    assert_eq!(ask(&mut by, "ECHO before\n"), "before\n");

    // Garbage (binary with newlines): ERR lines, the connection stays.
    let mut g = srv.connect();
    g.write_all(b"\x00\x01\x02garbage\nGET / HTTP/1.1\n")
        .unwrap();
    assert!(read_line(&mut g).starts_with("ERR "));
    assert!(read_line(&mut g).starts_with("ERR unknown verb 'GET'"));
    assert_eq!(ask(&mut g, "ECHO still here\n"), "still here\n");

    // Invalid UTF-8.
    g.write_all(b"UPPER \xc3\x28\n").unwrap();
    assert_eq!(read_line(&mut g), "ERR invalid UTF-8\n");
    assert_eq!(ask(&mut g, "SUM 2 2\n"), "4\n");

    // A 10 MB line: ERR line too long, then the server closes.
    let mut big = srv.connect();
    let mut w = big.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..160 {
            if w.write_all(&chunk).is_err() {
                break; // the server closed: expected
            }
        }
    });
    let got = read_to_end(&mut big);
    assert!(
        got.starts_with(b"ERR line too long\n"),
        "{model}: got {:?}",
        String::from_utf8_lossy(&got[..got.len().min(100)])
    );
    writer.join().unwrap();

    // Half-close: what was asked is answered, then the server closes.
    let mut h = srv.connect();
    h.write_all(b"ECHO a\nSLEEP 100\nECHO b").unwrap();
    h.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut h), b"a\nOK slept 100ms\nb\n");

    // Reset in the middle of a response (RST via SO_LINGER 0).
    for _ in 0..5 {
        let r = srv.connect();
        let mut rw = &r;
        rw.write_all(b"HASH 200000 x\nSLEEP 100\nECHO x\n").unwrap();
        socket2::SockRef::from(&r)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(r);
    }

    // A client that sends a lot and never reads: must not block anyone else.
    let mut hog = srv.connect();
    let hog_w = std::thread::spawn(move || {
        let line =
            b"ECHO xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n".repeat(1000);
        for _ in 0..40 {
            if hog.write_all(&line).is_err() {
                break;
            }
        }
        hog
    });

    // Connect and never send: others unaffected, and the idle timeout closes it.
    let mut silent = srv.connect();
    assert_eq!(ask(&mut by, "ECHO during\n"), "during\n");
    assert_eq!(ask(&mut by, "REVERSE after\n"), "retfa\n");
    let t0 = Instant::now();
    assert_eq!(read_to_end(&mut silent), b"");
    assert!(t0.elapsed() < T);
    let mut fresh = srv.connect();
    assert_eq!(ask(&mut fresh, "ECHO fresh\n"), "fresh\n");
    drop(hog_w); // the hog's thread may still be blocked; the guard kills the server
    drop(by);
    drop(fresh);
    drop(g);
    srv.stop();
}

#[test]
fn faults_epoll() {
    faults("epoll");
}

#[test]
fn faults_thread() {
    faults("thread");
}

#[test]
fn faults_fork() {
    faults("fork");
}

#[test]
fn faults_uring() {
    faults("uring");
}

/// The uring model alone through the same conversation and echo checks as every model (the
/// all-model tests above include it too; this one runs by itself with `cargo test uring`).
#[test]
fn uring_conformance() {
    let srv = Serve::start(&["--model", "uring"], T);
    let mut c = srv.connect();
    c.write_all(SCRIPT).unwrap();
    assert_eq!(read_to_end(&mut c), expected());
    let mut c = srv.connect();
    for piece in SCRIPT.chunks(7) {
        c.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_to_end(&mut c), expected());
    drop(c);
    let totals = srv.stop();
    assert!(totals.contains("connections=2"), "{totals}");
    let srv = Serve::start(&["--model", "uring", "--proto", "echo"], T);
    let mut c = srv.connect();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13) as u8).collect();
    let d2 = data.clone();
    let mut w = c.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    assert!(read_to_end(&mut c) == data, "uring: echo differs");
    t.join().unwrap();
    srv.stop();
}

#[test]
fn uring_unavailable_gives_one_line_naming_the_cause() {
    let out = Command::new(env!("CARGO_BIN_EXE_netcore"))
        .args(["serve", "--model", "uring", "--listen", "127.0.0.1:0"])
        .env("NETCORE_URING", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "announced before failing");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("io_uring unavailable: disabled by NETCORE_URING=off")
            && err.contains("--model epoll"),
        "{err}"
    );
}

/// SIGTERM with connections open and operations in flight (multishot receives, a SLEEP
/// timeout, a CPU job in the pool, a client that does not read): cancel, drain, exit 0.
#[test]
fn uring_shuts_down_with_operations_in_flight() {
    let srv = Serve::start(&["--model", "uring", "--workers", "1"], T);
    let idle: Vec<TcpStream> = (0..50).map(|_| srv.connect()).collect();
    let mut sleeper = srv.connect();
    sleeper
        .write_all(
            b"SLEEP 30000
",
        )
        .unwrap();
    let mut hasher = srv.connect();
    hasher
        .write_all(
            b"HASH 10000000 x
HASH 10000000 y
",
        )
        .unwrap();
    let mut hog = srv.connect();
    let line = b"ECHO xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n".repeat(4000);
    hog.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for _ in 0..20 {
        if hog.write_all(&line).is_err() {
            break; // the server stopped reading: its output is backed up
        }
    }
    let mut c = srv.connect();
    let st = ask(&mut c, "STATS\n");
    assert!(st.contains("server_active=54"), "{st}");
    let t0 = Instant::now();
    let totals = srv.stop();
    assert!(t0.elapsed() < Duration::from_secs(5), "slow shutdown");
    assert!(totals.contains("connections=54"), "{totals}");
    // The sockets were closed by the server.
    assert_eq!(read_to_end(&mut sleeper), b"");
    drop(idle);
}

fn netcore_err(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_netcore"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8(out.stderr).unwrap();
    // The error on the first line (clap's usage errors go on with its usage and hints).
    assert!(err.starts_with("netcore: error: "), "{args:?}: {err}");
    err
}

#[test]
fn bad_flags_give_one_line_and_fail() {
    assert!(netcore_err(&["serve", "--model", "nope"]).contains("--model"));
    assert!(netcore_err(&["serve", "--proto", "smtp"]).contains("--proto"));
    assert!(netcore_err(&["serve", "--idle-timeout", "soon"]).contains("--idle-timeout"));
    assert!(netcore_err(&["serve", "--listen", "localhost"]).contains("--listen"));
    assert!(netcore_err(&["serve", "--workers", "0"]).contains("--workers"));
    assert!(netcore_err(&["serve", "--model", "thread", "--reactors", "2"]).contains("--reactors"));
    assert!(netcore_err(&["serve", "--cpus", "9999"]).contains("--cpus"));
    // Port in use: the message names the address.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = held.local_addr().unwrap().to_string();
    for model in ["epoll", "thread"] {
        let e = netcore_err(&["serve", "--model", model, "--listen", &a]);
        assert!(e.contains(&a) && e.contains("in use"), "{e}");
    }
}

/// A fork-model child closes its copy of the listening socket: with the parent killed outright
/// (SIGKILL, no clean-up) while a child serves a client, the port can be bound again at once,
/// and the child still answers its client.
#[test]
fn fork_children_do_not_hold_the_listening_port() {
    let mut s = Serve::start(&["--model", "fork"], T);
    let addr = s.addr;
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    assert_eq!(ask(&mut c, "ECHO before\n"), "before\n", "a child serves");
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let again = std::net::TcpListener::bind(addr);
    assert!(
        again.is_ok(),
        "{addr} still held after the parent died: {again:?}"
    );
    assert_eq!(ask(&mut c, "ECHO after\n"), "after\n", "the child lives on");
    assert_eq!(ask(&mut c, "BYE\n"), "Goodbye!\n");
}
