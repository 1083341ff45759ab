//! `netcore serve --proto http` end to end, in every model: curl (keep-alive reuse, bodies,
//! status codes), raw sockets (pipelining, malformed requests, slowloris) and, where it is
//! installed, a short bounded wrk run. Real binary, loopback, port 0; every server is killed
//! by its guard.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{read_to_end, Serve};
use netcore::proto::http::{parse_response, ParsedResponse, ROOT_BODY};

const MODELS: [&str; 6] = ["iterative", "fork", "thread", "pool", "epoll", "uring"];
const T: Duration = Duration::from_secs(20);

fn serve(model: &str, extra: &[&str]) -> Serve {
    let args = [&["--model", model, "--proto", "http"][..], extra].concat();
    Serve::start(&args, T)
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `curl ARGS` with a time limit: (stdout, stderr).
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "15"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn connect(srv: &Serve) -> TcpStream {
    let s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s
}

/// Reads `n` whole responses: (status, body) each.
fn read_responses(s: &mut TcpStream, n: usize) -> Vec<(u16, Vec<u8>)> {
    let mut v = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    while v.len() < n {
        if let ParsedResponse::Response(r) = parse_response(&buf, false) {
            let end = r.head + r.body as usize;
            if buf.len() >= end {
                v.push((r.status, buf[r.head..end].to_vec()));
                buf.drain(..end);
                continue;
            }
        }
        let k = s.read(&mut chunk).expect("read a response");
        assert!(k > 0, "closed after {} responses", v.len());
        buf.extend_from_slice(&chunk[..k]);
    }
    assert!(buf.is_empty(), "more than {n} responses");
    v
}

/// The statuses of every response in `bytes` (which must hold whole responses only).
fn statuses(mut bytes: &[u8]) -> Vec<u16> {
    let mut v = Vec::new();
    while !bytes.is_empty() {
        let ParsedResponse::Response(r) = parse_response(bytes, false) else {
            panic!("not a response: {:?}", String::from_utf8_lossy(bytes))
        };
        v.push(r.status);
        bytes = &bytes[(r.head + r.body as usize).min(bytes.len())..];
    }
    v
}

/// A fresh connection still gets `GET /` answered.
fn still_serves(srv: &Serve, model: &str) {
    let mut s = connect(srv);
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0], (200, ROOT_BODY.to_vec()), "{model}");
}

#[test]
fn curl_gets_every_route_over_one_connection_in_every_model() {
    if !have("curl") {
        eprintln!("skipped: curl is not installed");
        return;
    }
    for model in MODELS {
        let srv = serve(model, &[]);
        let base = format!("http://{}", srv.addr);
        let urls: Vec<String> = ["/", "/bytes/10", "/hash/20000", "/sleep/20", "/stats"]
            .iter()
            .map(|p| format!("{base}{p}"))
            .collect();
        let mut args = vec!["--verbose"];
        args.extend(urls.iter().map(String::as_str));
        let (body, log) = curl(&args);
        let hash = netcore::proto::CpuJob::new(netcore::proto::fnv1a64(b"/hash/20000"), 20_000);
        let expect = format!(
            "{}0123456789{:016x}\nslept 20ms\n",
            String::from_utf8_lossy(ROOT_BODY),
            hash.run()
        );
        assert!(body.starts_with(&expect), "{model}: {body:?}\n{log}");
        assert!(
            body.contains("requests=5 errors=0 "),
            "{model}: /stats: {body:?}"
        );
        assert_eq!(
            log.matches("< HTTP/1.1 200 OK").count(),
            5,
            "{model}: {log}"
        );
        assert_eq!(
            log.matches("Re-using existing connection").count(),
            4,
            "{model}: {log}"
        );
        assert_eq!(
            srv_connections(&base),
            2,
            "{model}: one connection for five URLs"
        );

        // Status codes, HEAD, HTTP/1.0 and a large body.
        let code = |extra: &[&str], path: &str| {
            let url = format!("{base}{path}");
            let mut a = vec![
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code} %{size_download}",
            ];
            a.extend_from_slice(extra);
            a.push(&url);
            curl(&a).0
        };
        assert_eq!(code(&[], "/nope"), "404 10", "{model}");
        assert_eq!(code(&["--data", "x"], "/"), "405 19", "{model}");
        assert_eq!(code(&["--head"], "/bytes/100"), "200 0", "{model}");
        assert_eq!(code(&["--http1.0"], "/bytes/3"), "200 3", "{model}");
        assert_eq!(code(&[], "/bytes/3000000"), "200 3000000", "{model}");
    }
}

/// `server_connections` from `/stats` on a new connection.
fn srv_connections(base: &str) -> u64 {
    let (body, _) = curl(&[&format!("{base}/stats")]);
    let v = body
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("server_connections="))
        .unwrap_or_else(|| panic!("{body}"));
    v.parse().unwrap()
}

#[test]
fn pipelined_requests_are_answered_in_order_in_every_model() {
    for model in MODELS {
        let srv = serve(model, &[]);
        let mut s = connect(&srv);
        // A slow one first: the answers behind it wait for it.
        s.write_all(
            b"GET /sleep/50 HTTP/1.1\r\n\r\nGET /bytes/5 HTTP/1.1\r\n\r\nGET /hash/50000 HTTP/1.1\r\n\r\n\
              GET /nope HTTP/1.1\r\n\r\nGET /bytes/100000 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        )
        .unwrap();
        let r = read_responses(&mut s, 6);
        let codes: Vec<u16> = r.iter().map(|x| x.0).collect();
        assert_eq!(codes, [200, 200, 200, 404, 200, 200], "{model}");
        assert_eq!(r[0].1, b"slept 50ms\n", "{model}");
        assert_eq!(r[1].1, b"01234", "{model}");
        assert_eq!(r[2].1.len(), 17, "{model}");
        assert_eq!(r[4].1.len(), 100_000, "{model}");
        assert_eq!(r[5].1, ROOT_BODY, "{model}");
        // The last request closes; everything before it is answered.
        s.write_all(b"GET /bytes/2 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(statuses(&read_to_end(&mut s)), [200, 200], "{model}");
    }
}

/// Sends `req` on a new connection (ignoring a reset while sending: the server may answer and
/// close before it has all of it) and returns everything the server said until it closed.
fn answer_to(srv: &Serve, req: &[u8]) -> Vec<u8> {
    let mut s = connect(srv);
    let mut w = s.try_clone().unwrap();
    let req = req.to_vec();
    let writer = thread::spawn(move || {
        let _ = w.write_all(&req);
    });
    let got = read_to_end(&mut s);
    writer.join().unwrap();
    got
}

#[test]
fn malformed_requests_get_their_status_and_a_close_in_every_model() {
    let big_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    let endless_line = format!("GET /{}", "a".repeat(20_000));
    let cases: [(&str, &[u8], u16); 6] = [
        ("garbage", b"\x00\x01garbage\r\n\r\n", 400),
        ("1 MB header", big_header.as_bytes(), 431),
        ("request line with no end", endless_line.as_bytes(), 431),
        (
            "bad Content-Length",
            b"GET / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n",
            400,
        ),
        (
            "two Content-Lengths",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
        (
            "body too large",
            b"POST / HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n",
            413,
        ),
    ];
    for model in MODELS {
        let srv = serve(model, &[]);
        for (what, req, status) in cases {
            let got = answer_to(&srv, req);
            assert_eq!(statuses(&got), [status], "{model}: {what}");
            still_serves(&srv, model);
        }
    }
}

/// The value of the one `Date` header of every answer in `bytes` (whole answers only).
fn date_headers(mut bytes: &[u8]) -> Vec<String> {
    let mut v = Vec::new();
    while !bytes.is_empty() {
        let ParsedResponse::Response(r) = parse_response(bytes, false) else {
            panic!("not a response: {:?}", String::from_utf8_lossy(bytes))
        };
        let head = String::from_utf8_lossy(&bytes[..r.head]);
        let dates: Vec<&str> = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case("date"))
            .map(|(_, v)| v.trim())
            .collect();
        assert_eq!(dates.len(), 1, "one Date header: {head:?}");
        v.push(dates[0].to_string());
        bytes = &bytes[(r.head + r.body as usize).min(bytes.len())..];
    }
    v
}

/// `date -u` (GNU coreutils, in the C locale) with `args`: its output, trimmed.
fn gnu_date(args: &[&str]) -> String {
    let out = Command::new("date")
        .env("LC_ALL", "C")
        .arg("-u")
        .args(args)
        .output()
        .expect("run date");
    assert!(out.status.success(), "date {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The second an IMF-fixdate names, as GNU `date` reads it; the value must be exactly what
/// `date` writes for that second (so the weekday, padding and `GMT` are right too).
fn imf_fixdate_secs(value: &str) -> u64 {
    let secs: u64 = gnu_date(&["-d", value, "+%s"])
        .parse()
        .unwrap_or_else(|e| panic!("{value:?}: {e}"));
    let back = gnu_date(&["-d", &format!("@{secs}"), "+%a, %d %b %Y %H:%M:%S GMT"]);
    assert_eq!(value, back, "not an IMF-fixdate");
    secs
}

/// Every answer (routes, a 404, a deferred `/sleep`, a `400` to garbage) carries one `Date`,
/// an IMF-fixdate of a second between the request and its answer (second resolution). The
/// server reads the coarse wall clock (a few ms late at most): `before` is read on it too (it
/// never goes back), `after` on the fine one (which it never passes).
#[test]
fn every_answer_is_dated_in_every_model() {
    for model in MODELS {
        let srv = serve(model, &[]);
        let before = netcore::sys::realtime_coarse_secs();
        let got = answer_to(
            &srv,
            b"GET / HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /sleep/20 HTTP/1.1\r\n\r\n\
              GET /bytes/10 HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        let bad = answer_to(&srv, b"\x00garbage\r\n\r\n");
        let after = netcore::sys::realtime_ns() / 1_000_000_000;
        assert_eq!(statuses(&got), [200, 404, 200, 200], "{model}");
        assert_eq!(statuses(&bad), [400], "{model}");
        for value in date_headers(&got).iter().chain(&date_headers(&bad)) {
            let secs = imf_fixdate_secs(value);
            assert!(
                (before..=after).contains(&secs),
                "{model}: Date {value:?} ({secs}) not within [{before}, {after}]"
            );
        }
    }
}

/// A head trickled a byte at a time, slower than the idle timeout lets it take, gets `408`
/// and a close; meanwhile (and after) other clients are served.
#[test]
fn slowloris_gets_408_and_others_are_served_in_every_model() {
    for model in MODELS {
        let srv = serve(model, &["--idle-timeout", "1s"]);
        let mut s = connect(&srv);
        let t0 = Instant::now();
        let mut said = Vec::new();
        for b in b"GET / HTTP/1.1\r\nHost: slow".iter().cycle() {
            if s.write_all(&[*b]).is_err() || t0.elapsed() > Duration::from_secs(10) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Ok(n) => {
                    said.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(_) => break,
            }
            s.set_nonblocking(false).unwrap();
        }
        s.set_nonblocking(false).unwrap();
        said.extend(read_to_end(&mut s));
        assert_eq!(statuses(&said), [408], "{model}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{model}: {:?}",
            t0.elapsed()
        );
        still_serves(&srv, model);
    }
}

#[test]
fn wrk_sees_no_errors_on_epoll_uring_and_thread() {
    if !have("wrk") {
        eprintln!("skipped: wrk is not installed (apt-get install wrk)");
        return;
    }
    for model in ["epoll", "uring", "thread"] {
        let srv = serve(model, &[]);
        let url = format!("http://{}/", srv.addr);
        let child = Command::new("wrk")
            .args(["-t1", "-c10", "-d1s", "--timeout", "2s", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wrk");
        let out = common::wait_output(child, Duration::from_secs(30));
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(out.contains("requests in"), "{model}: {out}");
        assert!(!out.contains("Non-2xx"), "{model}: {out}");
        assert!(!out.contains("Socket errors"), "{model}: {out}");
        let n: u64 = out
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(n > 100, "{model}: {out}");
    }
}

fn load_json(args: &[&str]) -> (i32, serde_json::Value) {
    let (st, out, err) = common::run(args, Duration::from_secs(60));
    let j = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
    (st.code().unwrap_or(-1), j)
}

#[test]
fn load_drives_http_closed_and_open_loop_and_checks_every_response() {
    let srv = serve("epoll", &[]);
    let addr = srv.addr.to_string();
    let base = ["load", "--connect", &addr, "--proto", "http", "--json"];
    // Closed loop, a fixed number of tasks with a body larger than one read.
    let (rc, j) = load_json(
        &[
            &base[..],
            &["--clients", "3", "--tasks", "20", "--path", "/bytes/200000"],
        ]
        .concat(),
    );
    assert_eq!(rc, 0, "{j}");
    let m = &j["points"][0]["median"];
    assert_eq!(m["tasks"], 60.0, "{j}");
    assert_eq!(m["status"]["200"], 60, "{j}");
    // Open loop for a bounded time: latency from the intended send time.
    let (rc, j) = load_json(
        &[
            &base[..],
            &[
                "--clients",
                "4",
                "--duration",
                "1s",
                "--rate",
                "2000",
                "--path",
                "/sleep/1",
            ],
        ]
        .concat(),
    );
    assert_eq!(rc, 0, "{j}");
    let m = &j["points"][0]["median"];
    let tasks = m["tasks"].as_f64().unwrap();
    assert!((1000.0..=2200.0).contains(&tasks), "{j}");
    assert!(m["p50_us"].as_f64().unwrap() >= 1000.0, "sleeps 1 ms: {j}");
    assert_eq!(j["setup"]["rate"], 2000.0);
    // A path the server does not have is answered 404, which netcore's server does (so it is
    // right): a non-2xx response counted by status, not an error (#26; it was refused).
    let (rc, j) = load_json(
        &[
            &base[..],
            &["--path", "/nope", "--tasks", "3", "--clients", "1"],
        ]
        .concat(),
    );
    assert_eq!(rc, 0, "{j}");
    let m = &j["points"][0]["median"];
    assert_eq!(
        (m["tasks"].as_f64(), m["status"]["404"].as_u64()),
        (Some(3.0), Some(3)),
        "{j}"
    );
    assert_eq!(m["errors"]["bad_reply"], 0, "{j}");
    // compare starts each model speaking HTTP.
    let (st, out, err) = common::run(
        &[
            "compare",
            "--proto",
            "http",
            "--models",
            "thread,uring",
            "--clients",
            "2",
            "--tasks",
            "50",
            "--runs",
            "1",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{out}\n{err}");
    assert!(out.contains("\"proto\": \"http\""), "{out}");
}

/// #26: `load` takes a URL, -c, -d and -t as wrk does, and one run reports one total: the
/// requests counted, the latency samples and the status tally are the same requests (the old
/// binary counted responses to warm-up requests in the tally and the requests unanswered at
/// the end in the latency), and req/s is that count over the window.
#[test]
fn load_takes_a_url_like_wrk_and_reports_one_total() {
    let srv = serve("epoll", &[]);
    let url = format!("http://{}/bytes/100", srv.addr);
    for threads in ["1", "2"] {
        let args = ["load", &url, "-c", "4", "-d", "1s", "-t", threads, "--json"];
        let (rc, j) = load_json(&args);
        assert_eq!(rc, 0, "{j}");
        assert_eq!(j["setup"]["proto"], "http", "{j}");
        assert_eq!(j["setup"]["workload"], "GET /bytes/100", "{j}");
        assert_eq!(j["setup"]["threads"].to_string(), threads, "{j}");
        assert_eq!(j["setup"]["duration_s"], 1.0, "{j}");
        let r = &j["points"][0]["runs"][0];
        assert_eq!(r["clients"], 4, "{j}");
        let tasks = r["tasks"].as_u64().unwrap();
        let status: u64 = r["status"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert!(tasks > 0, "{j}");
        assert_eq!(r["latency_us"]["count"].as_u64(), Some(tasks), "{j}");
        assert_eq!(status, tasks, "{j}");
        assert_eq!(r["status"]["200"].as_u64(), Some(tasks), "{j}");
        if threads == "1" {
            let per_s = tasks as f64 / r["wall_s"].as_f64().unwrap();
            assert!(
                (r["tasks_per_s"].as_f64().unwrap() - per_s).abs() < 1e-6 * per_s,
                "{j}"
            );
        }
    }
    let (st, out, err) = common::run(&["load", &url, "-c", "2", "-d", "300ms"], T);
    assert!(st.success(), "{err}");
    assert!(out.contains("req/s") && out.contains("requests"), "{out}");
}

/// wrk without -d runs 10 s: so does `load URL` with neither -d nor --tasks (it ran 10 tasks
/// a client and was done in milliseconds). Interrupted after a second, its report is of a 10 s
/// duration run without warm-up, marked interrupted; `--connect` without --tasks still runs 10
/// tasks a client (#27 follow-up).
#[test]
fn load_of_a_url_runs_ten_seconds_as_wrk_does() {
    let srv = serve("epoll", &[]);
    let url = format!("http://{}/", srv.addr);
    let p = common::proc::Proc::netcore(&["load", &url, "-c", "2", "--json"]);
    thread::sleep(Duration::from_secs(1));
    netcore::sys::process::kill(p.pid() as i32, libc::SIGINT).unwrap();
    let (st, out, err) = p.finish(T);
    let j: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
    assert!(st.code().is_some(), "{st}: {err}");
    let setup = &j["setup"];
    assert_eq!(setup["mode"], "duration", "{j}");
    assert_eq!(setup["duration_s"], 10.0, "{j}");
    assert_eq!(setup["warmup_s"], 0.0, "{j}");
    assert_eq!(setup["tasks_per_client"], serde_json::Value::Null, "{j}");
    assert_eq!(j["interrupted"], true, "{j}");
    assert_eq!(j["points"][0]["runs"][0]["interrupted"], true, "{j}");
    let addr = srv.addr.to_string();
    let args = [
        "load",
        "--connect",
        &addr,
        "--proto",
        "http",
        "-c",
        "2",
        "--json",
    ];
    let (rc, j) = load_json(&args);
    assert_eq!(rc, 0, "{j}");
    assert_eq!(j["setup"]["mode"], "tasks", "{j}");
    assert_eq!(j["points"][0]["median"]["tasks"], 20.0, "{j}");
}

/// A one-connection HTTP server on loopback answering every request head with `answer`: its
/// address, and each request head it read.
fn fake_http(answer: &'static [u8]) -> (String, std::sync::mpsc::Receiver<String>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = scripted_http(move |_, head| {
        let _ = tx.send(String::from_utf8_lossy(head).into_owned());
        (answer.to_vec(), false)
    });
    (addr, rx)
}

/// A URL's authority is the Host header, as wrk sends it (it was always `localhost`).
#[test]
fn load_sends_the_urls_host() {
    let (addr, heads) =
        fake_http(b"HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\nHello from netcore\n");
    let url = format!("http://{addr}/");
    let (rc, j) = load_json(&["load", &url, "-c", "1", "--tasks", "2", "--json"]);
    assert_eq!(rc, 0, "{j}");
    assert_eq!(j["points"][0]["median"]["status"]["200"], 2, "{j}");
    let head = heads.recv_timeout(T).unwrap();
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head}");
}

/// A server that says it is netcore but answers wrong (a 503 with a 3-byte body for `GET /`):
/// every response is a bad reply, counted by status, and the exit status says so. The same
/// answers from another server are its answers: counted by status, not errors (#26).
#[test]
fn load_counts_wrong_http_answers() {
    let (other, _) = fake_http(b"HTTP/1.1 503 Busy\r\nContent-Length: 3\r\n\r\nabc");
    let (rc, j) = load_json(&[
        "load",
        &format!("http://{other}/"),
        "-c",
        "1",
        "--tasks",
        "5",
        "--json",
    ]);
    assert_eq!(rc, 0, "{j}");
    let m = &j["points"][0]["median"];
    assert_eq!(
        (m["tasks"].as_f64(), m["status"]["503"].as_u64()),
        (Some(5.0), Some(5)),
        "{j}"
    );
    let (addr, _) =
        fake_http(b"HTTP/1.1 503 Busy\r\nServer: netcore\r\nContent-Length: 3\r\n\r\nabc");
    let (rc, j) = load_json(&[
        "load",
        "--connect",
        &addr,
        "--proto",
        "http",
        "--clients",
        "1",
        "--tasks",
        "5",
        "--json",
    ]);
    assert_eq!(rc, 3, "{j}");
    let m = &j["points"][0]["median"];
    assert_eq!(m["errors"]["bad_reply"], 5, "{j}");
    assert_eq!(m["status"]["503"], 5, "{j}");
}

/// A loopback HTTP server for load's tests, a thread per connection: each request head read
/// is answered with `answer(n, head)` (n counts the requests over every connection, from 0),
/// written a few bytes at a time so that responses arrive split anywhere; `(bytes, true)`
/// closes the connection after writing.
fn scripted_http(answer: impl Fn(u64, &[u8]) -> (Vec<u8>, bool) + Send + Sync + 'static) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let answer = std::sync::Arc::new(answer);
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let (count, answer) = (count.clone(), answer.clone());
            thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(T));
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = seen.drain(..i + 4).collect();
                        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let (bytes, close) = answer(n, &head);
                        for piece in bytes.chunks(1 + n as usize % 13) {
                            if s.write_all(piece).is_err() {
                                return;
                            }
                        }
                        if close {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// `load http://ADDR/ -c CLIENTS --tasks TASKS --json`: (exit status, the point's median).
fn load_tasks(addr: &str, path: &str, clients: &str, tasks: &str) -> (i32, serde_json::Value) {
    let url = format!("http://{addr}{path}");
    let (rc, j) = load_json(&["load", &url, "-c", clients, "--tasks", tasks, "--json"]);
    (rc, j["points"][0]["median"].clone())
}

/// #26: chunked bodies (sizes in hex, extensions, trailers), split anywhere on the way, are
/// read: every response a task, nothing an error, one connection per client.
#[test]
fn load_reads_chunked_responses() {
    let addr = scripted_http(|n, _| {
        let body = "x".repeat(n as usize % 40);
        let mut w = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in body.as_bytes().chunks(7) {
            w.extend_from_slice(format!("{:x};ext=1\r\n", part.len()).as_bytes());
            w.extend_from_slice(part);
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        (w, false)
    });
    let (rc, m) = load_tasks(&addr, "/chunks", "2", "15");
    assert_eq!(rc, 0, "{m}");
    assert_eq!(m["tasks"], 30.0, "{m}");
    assert_eq!(m["status"]["200"], 30, "{m}");
    assert_eq!(m["reconnects"], 0, "{m}");
}

/// #26: an HTTP/1.0 server that answers without a length and closes: each body ends with the
/// close, the next request goes over a new connection, counted as a reconnect, not an error.
#[test]
fn load_reconnects_to_an_http10_server_that_closes() {
    let addr = scripted_http(|_, _| {
        (
            b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nhello, world\n".to_vec(),
            true,
        )
    });
    let (rc, m) = load_tasks(&addr, "/", "2", "5");
    assert_eq!(rc, 0, "{m}");
    assert_eq!(m["tasks"], 10.0, "{m}");
    assert_eq!(m["status"]["200"], 10, "{m}");
    assert_eq!(
        m["reconnects"], 8,
        "each client's last answer needs no new connection: {m}"
    );
    // For a duration too: every counted answer right, none an error, each on its connection.
    let url = format!("http://{addr}/");
    let (rc, j) = load_json(&["load", &url, "-c", "2", "-d", "500ms", "--json"]);
    assert_eq!(rc, 0, "{j}");
    let m = &j["points"][0]["median"];
    assert!(m["tasks"].as_f64().unwrap() > 0.0, "{m}");
    assert_eq!(m["status"]["200"].as_f64(), m["tasks"].as_f64(), "{m}");
    // Every answer but each client's first came over a new connection.
    let (tasks, reconnects) = (
        m["tasks"].as_f64().unwrap(),
        m["reconnects"].as_f64().unwrap(),
    );
    assert!(reconnects + 2.0 >= tasks, "{m}");
}

/// `--think` paces a client's requests over new connections as over one: against a server
/// that closes after every answer, 5 requests 100 ms apart take at least 400 ms (the pause
/// was skipped after each reconnect, so they took a few ms) (#27 follow-up).
#[test]
fn load_thinks_between_requests_over_new_connections_too() {
    let addr = scripted_http(|_, _| {
        let answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
        (answer.to_vec(), true)
    });
    let url = format!("http://{addr}/");
    let args = [
        "load", &url, "-c", "1", "--tasks", "5", "--think", "100ms", "--json",
    ];
    let (rc, j) = load_json(&args);
    assert_eq!(rc, 0, "{j}");
    let r = &j["points"][0]["runs"][0];
    assert_eq!(
        (r["tasks"].as_u64(), r["reconnects"].as_u64()),
        (Some(5), Some(4)),
        "{j}"
    );
    let wall = r["wall_s"].as_f64().unwrap();
    assert!(wall >= 0.4, "4 pauses of 100 ms: {wall} s\n{j}");
}

/// #26: responses that cannot be read (garbage, a head over 64 KiB, a chunk size that is not
/// hex) are errors counted as `malformed`, each answering its request; the client reconnects
/// and goes on, and the run ends (no hang, no panic) with the exit status of errors.
#[test]
fn load_counts_malformed_responses_and_reconnects() {
    let addr = scripted_http(|n, _| {
        let w = match n % 3 {
            0 => b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
            1 => format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            _ => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        };
        (w, false)
    });
    let url = format!("http://{addr}/");
    let (rc, j) = load_json(&["load", &url, "-c", "1", "--tasks", "6", "--json"]);
    assert_eq!(rc, 3, "{j}");
    let m = &j["points"][0]["median"];
    assert_eq!(m["errors"]["malformed"], 6, "{m}");
    assert_eq!(m["tasks"], 0.0, "{m}");
    assert_eq!(m["reconnects"], 5, "{m}");
    let first = j["points"][0]["runs"][0]["first_error"]
        .as_str()
        .unwrap_or("");
    assert!(first.contains("malformed response"), "{j}");
}

/// A server that accepts and closes every connection without a word: the client gives up
/// after a few connections in a row (`closed`), it does not reconnect for ever.
#[test]
fn load_gives_up_on_a_server_that_only_closes() {
    let addr = scripted_http(|_, _| (Vec::new(), true));
    let (rc, m) = load_tasks(&addr, "/", "1", "5");
    assert_eq!(rc, 3, "{m}");
    assert!(m["errors"]["closed"].as_u64().unwrap() >= 1, "{m}");
    assert_eq!(m["tasks"], 0.0, "{m}");
}

/// The nginx binary, if installed.
fn nginx() -> Option<String> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .map(String::from)
}

/// A free loopback port (bound and closed: nginx cannot listen on port 0 and say which).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx with a stock configuration's essentials (static files from a root, one process,
/// its files in a scratch directory) on a free loopback port; killed on drop.
fn start_nginx(bin: &str) -> (common::proc::Proc, String) {
    let dir = common::scratch_dir("nginx-load");
    let root = dir.join("html");
    std::fs::create_dir_all(root.join("few")).unwrap();
    std::fs::write(root.join("index.html"), "<p>a small static file</p>\n").unwrap();
    std::fs::write(root.join("few/index.html"), "few per connection\n").unwrap();
    let d = dir.display();
    let port = free_port();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
           fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
           server {{\n    listen 127.0.0.1:{port};\n    root {root};\n    index index.html;\n\
             location /few/ {{ keepalive_requests 3; }}\n  }}\n}}\n",
        root = root.display()
    );
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args([
        "-p",
        &d.to_string(),
        "-c",
        &format!("{d}/nginx.conf"),
        "-e",
        &format!("{d}/error.log"),
    ]);
    let p = common::proc::Proc::spawn(cmd);
    let addr = format!("127.0.0.1:{port}");
    let t0 = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            t0.elapsed() < T,
            "nginx did not listen on {addr}: {:?}",
            std::fs::read_to_string(dir.join("error.log"))
        );
        thread::sleep(Duration::from_millis(20));
    }
    (p, addr)
}

/// #26: `netcore load` against a stock nginx serving a static file, as wrk is used: every
/// response 2xx, as many as the tasks; a missing file's 404s counted as non-2xx, not errors;
/// nginx's `Connection: close` after `keepalive_requests` followed by a reconnect.
#[test]
fn load_measures_stock_nginx() {
    let Some(bin) = nginx() else {
        eprintln!("skipped: nginx is not installed (apt-get install nginx)");
        return;
    };
    let (_nginx, addr) = start_nginx(&bin);
    let (rc, m) = load_tasks(&addr, "/index.html", "3", "40");
    assert_eq!(rc, 0, "{m}");
    assert_eq!(m["tasks"], 120.0, "{m}");
    assert_eq!(m["status"]["200"], 120, "{m}");
    assert_eq!(m["reconnects"], 0, "{m}");
    let (rc, m) = load_tasks(&addr, "/missing.html", "2", "10");
    assert_eq!(rc, 0, "{m}");
    assert_eq!(m["tasks"], 20.0, "{m}");
    assert_eq!(m["status"]["404"], 20, "{m}");
    let errors: u64 = m["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(errors, 0, "{m}");
    let (rc, m) = load_tasks(&addr, "/few/", "1", "7");
    assert_eq!(rc, 0, "{m}");
    assert_eq!(m["status"]["200"], 7, "{m}");
    assert_eq!(
        m["reconnects"], 2,
        "a new connection after every third answer: {m}"
    );
    let url = format!("http://{addr}/missing.html");
    let (st, out, err) = common::run(&["load", &url, "-c", "1", "--tasks", "3"], T);
    assert!(st.success(), "{err}");
    assert!(out.contains("404=3; non-2xx/3xx: 3"), "{out}");
}
