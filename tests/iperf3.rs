//! netcore against the real iperf3 (Debian's package; `.ci/run` installs it): a stock
//! `iperf3 -c` against `netcore recv`, checking that iperf3 exits 0 and that its figures and
//! netcore's agree byte for byte; and bad peers that must not stop the receiver. Skipped with
//! a message where `iperf3` is missing.

use crate::common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::proc::Proc;
use common::{addr_in, have_iperf3, spawn};
use serde_json::Value;

/// `netcore recv --json` on a free port: its address, its reports (one JSON document each;
/// with `--json-stream`, its events) and its stderr lines; killed on drop.
struct Recv {
    child: Child,
    addr: String,
    reports: mpsc::Receiver<Value>,
    errs: mpsc::Receiver<String>,
}

impl Recv {
    fn start() -> Recv {
        Recv::start_with(&["--json"])
    }

    /// `netcore recv --listen 127.0.0.1:0 OUTPUT` (`--json`, `--json-stream`).
    fn start_with(output: &[&str]) -> Recv {
        let args = [&["recv", "--listen", "127.0.0.1:0"][..], output].concat();
        let mut child = spawn(&args, Stdio::piped());
        let (etx, errs) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in BufReader::new(err).lines() {
                let Ok(l) = l else { break };
                if etx.send(l).is_err() {
                    break;
                }
            }
        });
        let (rtx, reports) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for v in serde_json::Deserializer::from_reader(out).into_iter::<Value>() {
                let Ok(v) = v else { break };
                if rtx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut r = Recv {
            child,
            addr: String::new(),
            reports,
            errs,
        };
        let first = r
            .errs
            .recv_timeout(Duration::from_secs(20))
            .expect("recv did not start");
        r.addr = addr_in(&first);
        r
    }

    fn port(&self) -> String {
        self.addr.rsplit(':').next().unwrap().to_string()
    }

    fn report(&self) -> Value {
        self.reports
            .recv_timeout(Duration::from_secs(30))
            .expect("netcore printed no report")
    }

    /// The next `--json-stream` event named `event` (the documents before it dropped).
    fn event(&self, event: &str) -> Value {
        let t = Instant::now();
        while let Some(left) = Duration::from_secs(30).checked_sub(t.elapsed()) {
            match self.reports.recv_timeout(left) {
                Ok(v) if v["event"] == event => return v,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("netcore printed no {event} event");
    }

    fn signal(&self, sig: i32) {
        netcore::sys::process::kill(self.child.id() as i32, sig).expect("kill");
    }

    /// Waits for recv to exit (bounded: a hang fails the test); its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "recv still running 30 s after the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The next stderr line that contains `what`.
    fn err_line(&self, what: &str) -> String {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(l) = self.errs.recv_timeout(Duration::from_secs(1)) {
                if l.contains(what) {
                    return l;
                }
            }
        }
        panic!("no stderr line with {what:?}");
    }
}

impl Drop for Recv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `iperf3 -c 127.0.0.1 -p PORT -J ARGS` (bounded) and returns its JSON.
fn iperf3(port: &str, args: &[&str]) -> Value {
    iperf3_bin("iperf3", port, args)
}

/// The current iperf3 (3.21+, built by `../shared/peers/build-iperf3.sh`), if installed here.
const NEW_IPERF3: &str = "/opt/iperf3-new/bin/iperf3";

/// [`iperf3`] with the binary `bin`.
fn iperf3_bin(bin: &str, port: &str, args: &[&str]) -> Value {
    let out = iperf3_cmd(bin, port, args).output().expect("iperf3 runs");
    iperf3_json(&out, args)
}

/// `iperf3 -c 127.0.0.1 -p PORT -J ARGS` with the binary `bin`, bounded (60 s).
fn iperf3_cmd(bin: &str, port: &str, args: &[&str]) -> Command {
    let mut c = Command::new("timeout");
    c.args(["60", bin, "-c", "127.0.0.1", "-p", port, "-J"])
        .args(args);
    c
}

/// The JSON of an iperf3 run `out` (with `args`) that succeeded.
fn iperf3_json(out: &std::process::Output, args: &[&str]) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 {args:?} failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("iperf3 JSON ({e}): {text}"))
}

fn u(v: &Value) -> u64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) as u64
}

/// iperf3's per-stream (sender, receiver) bytes by its stream order, and netcore's rows.
fn check_tcp(ip: &Value, nc: &Value, streams: usize, dirs: &[&str]) {
    assert_eq!(nc["schema"], "netcore.tcp.v1");
    let rows = nc["streams"].as_array().unwrap();
    assert_eq!(rows.len(), streams * dirs.len(), "{nc}");
    let ends = ip["end"]["streams"].as_array().unwrap();
    assert_eq!(ends.len(), rows.len(), "{ip}");
    for (e, row) in ends.iter().zip(rows) {
        let (sent, received) = (u(&e["sender"]["bytes"]), u(&e["receiver"]["bytes"]));
        // iperf3's sender is netcore's writer, its receiver netcore's reader, whichever way.
        assert_eq!(sent, u(&row["written"]), "sender bytes: {e} vs {row}");
        assert_eq!(received, u(&row["read"]), "receiver bytes: {e} vs {row}");
        assert!(sent > 0);
        if row["dir"] == "up" {
            // netcore reads what was in flight at TEST_END: exact.
            assert_eq!(sent, received, "{row}");
            assert_eq!(row["exact"], true);
        }
    }
    for (s, dir) in nc["sum"].as_array().unwrap().iter().zip(dirs) {
        assert_eq!(s["dir"], *dir);
    }
}

#[test]
fn iperf3_client_tcp_against_recv() {
    if !have_iperf3() {
        return;
    }
    let r = Recv::start();
    let p = r.port();
    for (args, streams, dirs) in [
        (&["-t", "1"][..], 1, &["up"][..]),
        (&["-t", "1", "-P", "2"][..], 2, &["up"][..]),
        (&["-t", "1", "-R"][..], 1, &["down"][..]),
        (&["-t", "1", "--bidir"][..], 1, &["up", "down"][..]),
        (&["-n", "3M", "-l", "1000"][..], 1, &["up"][..]),
    ] {
        let ip = iperf3(&p, args);
        let nc = r.report();
        check_tcp(&ip, &nc, streams, dirs);
        if args.contains(&"-n") {
            // iperf3 sends whole blocks: 3 MiB rounded up to 1000-byte writes.
            assert_eq!(u(&nc["sum"][0]["read"]), 3146 * 1000, "{nc}");
        }
    }
}

/// A stock `iperf3 -c` through `netcore relay` (its TCP proxy) to `netcore recv`: iperf3 and
/// netcore agree byte for byte as they do directly, and the relay counts the control and data
/// connections and the bytes it carried.
#[test]
fn iperf3_client_through_the_relay_to_recv() {
    if !have_iperf3() {
        return;
    }
    let r = Recv::start();
    let (relay, relay_addr) = Proc::relay(&r.addr, &["--json"]);
    let port = relay_addr.rsplit(':').next().unwrap().to_string();
    let mut up = 0;
    for (args, streams, dirs) in [
        (&["-t", "1", "-P", "2"][..], 2, &["up"][..]),
        (&["-t", "1", "-R"][..], 1, &["down"][..]),
    ] {
        let ip = iperf3(&port, args);
        let nc = r.report();
        check_tcp(&ip, &nc, streams, dirs);
        if dirs == ["up"] {
            up += u(&nc["sum"][0]["read"]);
        }
    }
    netcore::sys::process::kill(relay.pid() as i32, libc::SIGINT).unwrap();
    let (st, out, err) = relay.finish(Duration::from_secs(30));
    assert_eq!(st.code(), Some(130), "relay: {err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let tcp = &report["tcp"];
    // A control connection and a data connection per stream, per test.
    assert_eq!(u(&tcp["connections"]), 3 + 2, "{tcp}");
    assert_eq!(u(&tcp["refused"]) + u(&tcp["connect_failed"]), 0, "{tcp}");
    // The forward test's data plus both tests' control messages went to the receiver.
    assert!(u(&tcp["bytes_to_server"]) > up, "{tcp}");
    assert_eq!(u(&report["datagrams_in"]), 0, "{report}");
}

/// iperf3's UDP figures against netcore's report: per stream, the client's sent datagrams are
/// netcore's `sent`, the receiver line (netcore's answer) is exact: bytes, packets = sent,
/// lost = sent - distinct received.
fn check_udp(ip: &Value, nc: &Value, streams: usize) {
    assert_eq!(nc["schema"], "netcore.iperf3.udp.v2", "{nc}");
    crate::schemas::has_meta("netcore.iperf3.udp.v2", nc);
    let rows = nc["streams"].as_array().unwrap();
    assert_eq!(rows.len(), streams, "{nc}");
    let ends = ip["end"]["streams"].as_array().unwrap();
    assert_eq!(ends.len(), streams, "{ip}");
    check_udp_received(&ends[..], rows);
    // The client's sender total and netcore's received bytes, exact when nothing was lost.
    let sent = u(&ip["end"]["sum"]["bytes"]);
    let lost = u(&nc["sum"]["lost"]) + u(&nc["sum"]["duplicate"]);
    if lost == 0 {
        assert_eq!(sent, u(&nc["sum"]["bytes"]), "{nc}");
    }
}

/// iperf3's per-stream UDP summaries of the streams netcore received, against netcore's rows.
fn check_udp_received(ends: &[Value], rows: &[Value]) {
    assert_eq!(ends.len(), rows.len());
    for (e, row) in ends.iter().zip(rows) {
        let udp = &e["udp"];
        assert_eq!(u(&udp["packets"]), u(&row["sent"]), "{udp} vs {row}");
        assert_eq!(u(&udp["lost_packets"]), u(&row["lost"]), "{udp} vs {row}");
        assert_eq!(
            u(&row["sent"]),
            u(&row["in_order"]) + u(&row["reordered"]) + u(&row["lost"]),
            "{row}"
        );
        assert!(u(&row["sent"]) > 0);
    }
}

/// iperf3's per-stream UDP summaries of the streams netcore sent (-R, --bidir): the client's
/// sender line is what netcore answered (its datagrams and bytes), its lost count is its own
/// and equals what it told netcore in the results exchange.
fn check_udp_sent(ends: &[Value], rows: &[Value], len: u64) {
    assert_eq!(ends.len(), rows.len());
    for (e, row) in ends.iter().zip(rows) {
        let udp = &e["udp"];
        let sent = u(&row["sent"]);
        assert!(sent > 0, "{row}");
        assert_eq!(u(&row["bytes"]), sent * len, "{row}");
        assert_eq!(u(&udp["packets"]), sent, "{udp} vs {row}");
        assert_eq!(u(&udp["bytes"]), u(&row["bytes"]), "{udp} vs {row}");
        assert_eq!(
            u(&udp["lost_packets"]),
            u(&row["peer_lost"]),
            "{udp} vs {row}"
        );
        // The client counts the highest sequence it saw before TEST_END: at most what was sent.
        let seen = u(&row["peer_packets"]);
        assert!(seen > 0 && seen <= sent, "{row}");
        assert!(u(&row["peer_lost"]) <= seen, "{row}");
    }
}

/// `iperf3 -c -u` with `-R` / `--bidir` against `netcore recv`, with `iperf3` = `bin`.
fn udp_every_direction(bin: &str, cases: &[(&[&str], usize, &str)]) {
    let r = Recv::start();
    let p = r.port();
    for &(args, streams, mode) in cases {
        let ip = iperf3_bin(bin, &p, args);
        let nc = r.report();
        assert_eq!(nc["schema"], "netcore.iperf3.udp.v2", "{nc}");
        assert_eq!(nc["role"], "server", "{nc}");
        assert_eq!(nc["mode"], mode, "{nc}");
        let len = u(&nc["len"]);
        let ends = ip["end"]["streams"].as_array().unwrap();
        let (rows, sent) = (
            nc["streams"].as_array().unwrap(),
            nc["sent"].as_array().unwrap(),
        );
        let up = if mode == "bidir" { streams } else { 0 };
        assert_eq!((rows.len(), sent.len()), (up, streams), "{nc}");
        assert_eq!(ends.len(), up + streams, "{ip}");
        // iperf3 lists the client's sending streams first, as they were created.
        check_udp_received(&ends[..up], rows);
        check_udp_sent(&ends[up..], sent, len);
        let total: u64 = sent.iter().map(|r| u(&r["sent"])).sum();
        assert_eq!(u(&nc["sent_sum"]["sent"]), total, "{nc}");
    }
}

#[test]
fn iperf3_client_udp_reverse_and_bidir_against_recv() {
    if !have_iperf3() {
        return;
    }
    udp_every_direction(
        "iperf3",
        &[
            (&["-u", "-t", "1", "-b", "100M", "-R"], 1, "reverse"),
            (
                &[
                    "-u",
                    "-t",
                    "1",
                    "-b",
                    "100M",
                    "-R",
                    "-P",
                    "2",
                    "--udp-counters-64bit",
                    "-l",
                    "1200",
                ],
                2,
                "reverse",
            ),
            (&["-u", "-t", "1", "-b", "100M", "--bidir"], 1, "bidir"),
            (
                &["-u", "-t", "1", "-b", "50M", "--bidir", "-P", "2"],
                2,
                "bidir",
            ),
            // Bounded by datagrams: netcore sends exactly -k, and the client ends on them.
            (
                &["-u", "-k", "1000", "-b", "20M", "-R", "-l", "1000"],
                1,
                "reverse",
            ),
        ],
    );
}

/// The same with the current iperf3 (3.21+) where it is installed, `--gsro` included (its GRO
/// receive of netcore's datagrams; its GSO sends reach netcore split).
#[test]
fn new_iperf3_client_udp_every_direction_against_recv() {
    if !std::path::Path::new(NEW_IPERF3).exists() {
        eprintln!("skipped: {NEW_IPERF3} is not installed (../shared/peers/build-iperf3.sh)");
        return;
    }
    udp_every_direction(
        NEW_IPERF3,
        &[
            (
                &["-u", "-t", "1", "-b", "100M", "-R", "-P", "2"],
                2,
                "reverse",
            ),
            (
                &["-u", "-t", "1", "-b", "100M", "--bidir", "--gsro"],
                1,
                "bidir",
            ),
            (
                &["-u", "-t", "1", "-b", "100M", "-R", "--gsro"],
                1,
                "reverse",
            ),
        ],
    );
}

#[test]
fn iperf3_client_udp_against_recv() {
    if !have_iperf3() {
        return;
    }
    let r = Recv::start();
    let p = r.port();
    for (args, streams) in [
        (&["-u", "-t", "1", "-b", "100M"][..], 1),
        (&["-u", "-t", "1", "-b", "1G", "-l", "1400"][..], 1),
        (
            &[
                "-u",
                "-t",
                "1",
                "-b",
                "200M",
                "-P",
                "2",
                "--udp-counters-64bit",
            ][..],
            2,
        ),
    ] {
        let ip = iperf3(&p, args);
        check_udp(&ip, &r.report(), streams);
    }
    // netcore's own UDP test still reaches the receiver's socket afterwards.
    let out = common::run_ok(
        &["blast", "--to", &r.addr, "--count", "1000", "--json"],
        Duration::from_secs(60),
    );
    assert!(out.contains("\"lost\": 0"), "{out}");
    let nc = r.report();
    assert_eq!(nc["schema"], "netcore.udp.v4", "{nc}");
}

/// A stock `iperf3 -c -u` through `netcore relay` with loss, reordering and duplication to
/// `netcore recv`: the stream handshake goes out and its answer comes back through the relay
/// (one socket per stream), iperf3 exits 0, and netcore's report equals the relay's ground
/// truth for each stream number for number; iperf3's own summary is printed beside them.
#[test]
fn iperf3_client_udp_through_the_impairing_relay_to_recv() {
    if !have_iperf3() {
        return;
    }
    let r = Recv::start();
    let (relay, relay_addr) = Proc::relay(
        &r.addr,
        &[
            "--loss",
            "2%",
            "--reorder",
            "3%",
            "--reorder-depth",
            "1..32",
            "--duplicate",
            "1%",
            "--seed",
            "12",
            "--json",
        ],
    );
    let port = relay_addr.rsplit(':').next().unwrap().to_string();
    // (streams, iperf3's JSON, netcore's report) per run.
    let mut runs = Vec::new();
    for (args, streams, wide) in [
        (&["-u", "-b", "100M", "-t", "1", "-l", "1400"][..], 1, false),
        (
            &[
                "-u",
                "-b",
                "50M",
                "-t",
                "1",
                "-l",
                "1200",
                "-P",
                "2",
                "--udp-counters-64bit",
            ][..],
            2,
            true,
        ),
    ] {
        let ip = iperf3(&port, args);
        let nc = r.report();
        check_udp(&ip, &nc, streams);
        runs.push((streams, wide, ip, nc));
    }
    netcore::sys::process::kill(relay.pid() as i32, libc::SIGINT).unwrap();
    let (st, out, err) = relay.finish(Duration::from_secs(30));
    assert_eq!(st.code(), Some(130), "relay: {err}");
    let truth = common::json(&out);
    let tests = truth["tests"].as_array().unwrap();
    let total: usize = runs.iter().map(|(n, _, _, _)| n).sum();
    assert_eq!(tests.len(), total, "a truth per iperf3 stream: {truth}");
    assert_eq!(u(&truth["other_in"]), 0, "{truth}");
    // Each stream's hello went out, and its answer came back.
    assert_eq!(u(&truth["iperf3_hellos"]), total as u64, "{truth}");
    let back = &truth["returned"];
    assert_eq!(u(&back["datagrams"]), total as u64, "{back}");
    assert_eq!(u(&back["sources"]), total as u64, "{back}");
    for (streams, wide, ip, nc) in &runs {
        let end = &ip["end"]["sum"];
        println!(
            "iperf3 -c, its own summary: lost/total {}/{} ({}%), jitter {} ms, {} bytes",
            end["lost_packets"],
            end["packets"],
            end["lost_percent"],
            end["jitter_ms"],
            end["bytes"],
        );
        let connected = ip["start"]["connected"].as_array().unwrap();
        let ends = ip["end"]["streams"].as_array().unwrap();
        let rows = nc["streams"].as_array().unwrap();
        assert_eq!((connected.len(), rows.len()), (*streams, *streams));
        for (e, row) in ends.iter().zip(rows) {
            // The stream's client socket is the relay's source address for it.
            let socket = &e["udp"]["socket"];
            let c = connected
                .iter()
                .find(|c| c["socket"] == *socket)
                .unwrap_or_else(|| panic!("stream {socket} in {connected:?}"));
            let from = format!("127.0.0.1:{}", u(&c["local_port"]));
            let t = tests
                .iter()
                .find(|t| t["test_id"] == from.as_str())
                .unwrap_or_else(|| panic!("no truth for {from}: {truth}"));
            assert_eq!(t["kind"], if *wide { "iperf3-64" } else { "iperf3" }, "{t}");
            let sent = u(&row["sent"]);
            // netcore's field and the truth's, printed side by side; all but `lost` must be
            // equal (see below).
            let pairs = [
                ("received", "forwarded"),
                ("lost", "lost"),
                ("duplicate", "duplicates"),
                ("reordered", "reordered"),
                ("max_extent", "max_extent"),
                ("too_late", "too_late"),
            ];
            println!("  stream {from}, {sent} sent:  netcore recv  relay truth");
            for (rk, tk) in pairs {
                println!("    {rk:<12} {:>12} {:>12}", u(&row[rk]), u(&t[tk]));
            }
            // Lost: what the relay never sent on (its own `lost` when every datagram reached it).
            if u(&t["unique_in"]) == sent {
                assert_eq!(u(&row["lost"]), u(&t["lost"]), "{row}\n{t}");
            } else {
                eprintln!(
                    "note: {} datagrams lost on the way into the relay",
                    sent - u(&t["unique_in"])
                );
            }
            assert_eq!(u(&row["lost"]), sent - u(&t["unique_out"]), "{row}\n{t}");
            for (rk, tk) in pairs.into_iter().filter(|&(rk, _)| rk != "lost") {
                assert_eq!(
                    u(&row[rk]),
                    u(&t[tk]),
                    "netcore {rk} != relay {tk}\n{row}\n{t}"
                );
            }
            assert_eq!(
                u(&row["in_order"]) + u(&row["reordered"]),
                u(&t["unique_out"]),
                "{row}\n{t}"
            );
            assert_eq!(u(&row["malformed"]), 0, "{row}");
            // The impairments showed up.
            assert!(
                u(&t["lost"]) > 0 && u(&t["duplicates"]) > 0 && u(&t["reordered"]) > 0,
                "{t}"
            );
        }
    }
}

/// Opens a control connection and sends `bytes`, then waits (bounded) for the receiver to
/// close it or answer.
fn bad_client(addr: &str, bytes: &[u8], linger: bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    if linger {
        let mut b = [0u8; 64];
        let _ = s.read(&mut b);
    }
}

const COOKIE: &[u8; 37] = b"abcdefghijklmnopqrstuvwxyz2345672345\0";

fn frame(doc: &[u8]) -> Vec<u8> {
    let mut v = (doc.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(doc);
    v
}

#[test]
fn bad_iperf3_peers_leave_recv_serving() {
    if !have_iperf3() {
        return;
    }
    let r = Recv::start();
    let addr = r.addr.clone();
    // A wrong cookie (a character outside iperf3's alphabet).
    let mut bad = *COOKIE;
    bad[3] = b'!';
    bad_client(&addr, &bad, true);
    r.err_line("cookie");
    // Garbage JSON after a good cookie.
    bad_client(&addr, &[&COOKIE[..], &frame(b"{not json")].concat(), true);
    r.err_line("malformed");
    // A 1 MB parameter document: refused by its length, not read.
    let mut big = COOKIE.to_vec();
    big.extend_from_slice(&(1u32 << 20).to_be_bytes());
    big.extend(std::iter::repeat_n(b' ', 64 * 1024));
    bad_client(&addr, &big, true);
    r.err_line("over the limit");
    // Vanishing: after the cookie, and after the parameters (while streams are awaited).
    bad_client(&addr, COOKIE, false);
    r.err_line("vanished while");
    let params = br#"{"tcp":true,"time":1,"parallel":1}"#;
    bad_client(&addr, &[&COOKIE[..], &frame(params)].concat(), false);
    r.err_line("vanished while");
    // Vanishing while the test runs (TCP), and while UDP streams are awaited.
    {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let params = br#"{"tcp":true,"time":5,"parallel":1}"#;
        c.write_all(&[&COOKIE[..], &frame(params)].concat())
            .unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b, [9, 10], "PARAM_EXCHANGE, CREATE_STREAMS");
        let mut d = TcpStream::connect(&addr).unwrap();
        d.write_all(COOKIE).unwrap();
        c.read_exact(&mut b).unwrap();
        assert_eq!(b, [1, 2], "TEST_START, TEST_RUNNING");
        d.write_all(&[0u8; 1000]).unwrap();
    }
    r.err_line("vanished while running the test");
    {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let params = br#"{"udp":true,"time":1,"parallel":1,"len":1000}"#;
        c.write_all(&[&COOKIE[..], &frame(params)].concat())
            .unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
    }
    r.err_line("vanished while opening its UDP streams");
    // And the receiver still serves a real client.
    let ip = iperf3(&r.port(), &["-t", "1"]);
    check_tcp(&ip, &r.report(), 1, &["up"]);
}

/// A stock `iperf3 -s -1` on a free port (it serves one test and exits); killed on drop.
struct Iperf3Server(Child, u16);

impl Iperf3Server {
    fn start() -> Iperf3Server {
        for _ in 0..10 {
            // A port free now (iperf3 cannot pick one and print it); probing it with a
            // connection would use up `-1`'s one test, so: start, wait, check it still runs.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut c = Command::new("iperf3")
                .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("iperf3 -s");
            std::thread::sleep(Duration::from_millis(400));
            if let Ok(None) = c.try_wait() {
                return Iperf3Server(c, port);
            }
        }
        panic!("could not start iperf3 -s");
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn blast_drives_iperf3_server() {
    if !have_iperf3() {
        return;
    }
    for (args, streams, dirs) in [
        (&["--time", "1s"][..], 1, &["up"][..]),
        (&["--time", "1s", "-P", "2"][..], 2, &["up"][..]),
        (&["--time", "1s", "-R"][..], 1, &["down"][..]),
        (&["--size", "4MiB", "--len", "1000"][..], 1, &["up"][..]),
    ] {
        let srv = Iperf3Server::start();
        let to = format!("iperf3://127.0.0.1:{}", srv.1);
        let (st, out, err) = common::run(
            &[
                &["blast", "--to", &to, "--proto", "tcp", "--json"][..],
                args,
            ]
            .concat(),
            Duration::from_secs(60),
        );
        assert!(st.success(), "{args:?}: {out}\n{err}");
        let nc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(nc["role"], "client");
        let rows = nc["streams"].as_array().unwrap();
        assert_eq!(rows.len(), streams * dirs.len(), "{nc}");
        for row in rows {
            // The server's figure (read, or written with -R) is what iperf3 returned.
            assert!(u(&row["written"]) > 0 && u(&row["read"]) > 0, "{row}");
            assert!(u(&row["read"]) <= u(&row["written"]), "{row}");
        }
        assert!(err.contains("iperf3 server's own figures"), "{err}");
        // #26.8: iperf3 says only its share of a core; what it does not say is null, not 0.
        let server = &nc["cpu"]["server"];
        for k in ["threads", "user_s", "system_s", "wall_s", "bits_per_cpu_s"] {
            assert!(server[k].is_null(), "{k}: {server}");
        }
        crate::schemas::validates("netcore.tcp.v1", &out);
        if args.contains(&"--size") {
            // 4 MiB rounded up to whole 1000-byte writes.
            assert_eq!(u(&nc["sum"][0]["written"]), 4195 * 1000, "{nc}");
        }
    }
}

/// `blast --to iperf3:// --proto tcp --plot` draws the test's interval rows (#27 follow-up:
/// `--plot` was silently ignored, no file written).
#[test]
fn blast_tcp_to_iperf3_draws_its_plot() {
    if !have_iperf3() {
        return;
    }
    let svg = std::env::temp_dir().join(format!("netcore-iperf3-{}.svg", std::process::id()));
    let _ = std::fs::remove_file(&svg);
    let srv = Iperf3Server::start();
    let to = format!("iperf3://127.0.0.1:{}", srv.1);
    let (st, out, err) = common::run(
        &[
            "blast",
            "--to",
            &to,
            "--proto",
            "tcp",
            "--time",
            "1s",
            "--interval",
            "0.25s",
            "--rate",
            "200Mbps",
            "--json",
            "--plot",
            svg.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{out}\n{err}");
    let nc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(!nc["intervals"].as_array().unwrap().is_empty(), "{nc}");
    let text = std::fs::read_to_string(&svg).unwrap_or_else(|e| panic!("{svg:?}: {e}: {err}"));
    let _ = std::fs::remove_file(&svg);
    assert!(
        text.contains("sum") && text.contains("</svg>"),
        "{text:.2000}"
    );
}

#[test]
fn blast_to_iperf3_refuses_what_it_cannot_drive_in_one_line() {
    for (args, flag) in [
        (&["--proto", "tcp", "--fq-rate", "1G"][..], "--fq-rate"),
        (&["--bidir", "--verify"][..], "--verify"),
        (&["--control", "127.0.0.1:2"][..], "--control"),
        // A UDP test against iperf3 has no interval rows to draw (it was silently ignored).
        (&["--plot", "/tmp/netcore-iperf3-udp.svg"][..], "--plot"),
    ] {
        let (st, _, err) = common::run(
            &[&["blast", "--to", "iperf3://127.0.0.1:1"][..], args].concat(),
            Duration::from_secs(30),
        );
        assert_eq!(st.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(flag), "{err}");
    }
}

/// The server's figures for stream `id` from the "iperf3 server's own figures" lines:
/// "  stream id   4:        1234567 bytes, ..., packets 845, errors 0, jitter ...".
fn server_figure(err: &str, id: u64, what: &str) -> u64 {
    let line = err
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("stream id {id:>3}:")))
        .unwrap_or_else(|| panic!("no server line for stream {id}: {err}"));
    let after = line.split(':').nth(1).unwrap();
    let words: Vec<&str> = after.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_end_matches(',') == what)
        .unwrap_or_else(|| panic!("{what} in {line}"));
    // "N bytes": the number comes first; "packets N": after.
    let v = if what == "bytes" {
        words[at - 1]
    } else {
        words[at + 1]
    };
    v.trim_end_matches(',')
        .parse()
        .unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
}

/// `blast --to iperf3://` UDP forward with -P 2, -R and --bidir: exits 0, and netcore's
/// figures agree with the server's results document: what netcore sent is the server's
/// packet count ceiling, what the server sent is what netcore's tracker accounts for.
#[test]
fn blast_udp_to_iperf3_server() {
    if !have_iperf3() {
        return;
    }
    for (args, up, down, mode) in [
        (&["-P", "2"][..], 2, 0, "forward"),
        (&["-R"][..], 0, 1, "reverse"),
        (&["--bidir"][..], 1, 1, "bidir"),
    ] {
        let srv = Iperf3Server::start();
        let to = format!("iperf3://127.0.0.1:{}", srv.1);
        let (st, out, err) = common::run(
            &[
                &[
                    "blast", "--to", &to, "--time", "1s", "--rate", "100Mbps", "--len", "1400",
                    "--json",
                ][..],
                args,
            ]
            .concat(),
            Duration::from_secs(60),
        );
        assert!(st.success(), "{args:?}: {out}\n{err}");
        let nc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(nc["schema"], "netcore.iperf3.udp.v2", "{nc}");
        assert_eq!(
            (nc["role"].as_str(), nc["mode"].as_str()),
            (Some("client"), Some(mode))
        );
        assert!(err.contains("iperf3 server's own figures"), "{err}");
        let sent = nc["sent"].as_array().unwrap();
        let rows = nc["streams"].as_array().unwrap();
        assert_eq!((sent.len(), rows.len()), (up, down), "{nc}");
        for r in sent {
            // The server's receiver: highest sequence seen, at most what netcore sent.
            let id = u(&r["id"]);
            let (k, seen) = (u(&r["sent"]), u(&r["peer_packets"]));
            assert!(k > 0 && seen > 0 && seen <= k, "{r}");
            assert_eq!(u(&r["bytes"]), k * 1400, "{r}");
            assert_eq!(server_figure(&err, id, "packets"), seen, "{r}\n{err}");
            assert_eq!(server_figure(&err, id, "bytes"), u(&r["peer_bytes"]), "{r}");
        }
        for r in rows {
            // The server's sender: its datagrams are netcore's `sent`, every one accounted.
            let id = u(&r["id"]);
            let k = u(&r["sent"]);
            assert!(k > 0, "{r}");
            assert_eq!(server_figure(&err, id, "packets"), k, "{r}\n{err}");
            assert_eq!(server_figure(&err, id, "bytes"), k * 1400, "{r}\n{err}");
            assert_eq!(
                k,
                u(&r["in_order"]) + u(&r["reordered"]) + u(&r["lost"]),
                "{r}"
            );
            assert_eq!(u(&r["bytes"]), u(&r["received"]) * 1400, "{r}");
            assert_eq!(
                u(&r["received"]),
                u(&r["in_order"]) + u(&r["reordered"]) + u(&r["duplicate"]) + u(&r["too_late"]),
                "{r}"
            );
        }
    }
}

/// Once `r`'s iperf3 test runs (its start event, and half a second more), sends `sig` to recv
/// and waits for its "stopping" line (a first signal drains).
fn signal_running(r: &Recv, sig: i32) {
    r.event("start");
    std::thread::sleep(Duration::from_millis(500));
    r.signal(sig);
    r.err_line("stopping");
}

/// `iperf3 -c RECV -J ARGS` (binary `bin`) running on `r`, its output piped.
fn iperf3_on(r: &Recv, bin: &str, args: &[&str]) -> Child {
    iperf3_cmd(bin, &r.port(), args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iperf3 runs")
}

/// #27 follow-up: a first signal on `recv` lets a running iperf3 test finish (TCP; UDP either
/// way): iperf3 gets its normal end of test (exit 0, no error), netcore's report agrees with it
/// and is not interrupted, and recv exits 143 once the test has ended. recv used to end it at
/// the signal (SERVER_TERMINATE, or its streams closed under the client).
#[test]
fn a_first_signal_on_recv_lets_a_running_iperf3_test_finish() {
    if !have_iperf3() {
        return;
    }
    let udp = ["-u", "-b", "10M", "-t", "2"];
    for args in [&["-t", "2"][..], &udp, &[&udp[..], &["-R"]].concat()] {
        let mut r = Recv::start_with(&["--json-stream"]);
        let child = iperf3_on(&r, "iperf3", args);
        signal_running(&r, libc::SIGTERM);
        let ip = iperf3_json(&common::wait_output(child, Duration::from_secs(60)), args);
        assert!(ip.get("error").is_none(), "{args:?}: {ip}");
        let nc = &r.event("end")["data"];
        assert_eq!(nc["interrupted"], false, "{args:?}: {nc}");
        if args[0] == "-t" {
            check_tcp(&ip, nc, 1, &["up"]);
        } else if args.contains(&"-R") {
            let ends = ip["end"]["streams"].as_array().unwrap();
            check_udp_sent(ends, nc["sent"].as_array().unwrap(), u(&nc["len"]));
        } else {
            check_udp(&ip, nc, 1);
        }
        assert_eq!(r.exit_code(), Some(128 + libc::SIGTERM), "{args:?}");
    }
}

/// #27 follow-up: a second signal on a draining `recv` cuts a running iperf3 test (TCP, UDP):
/// iperf3 is told that the server ended it ("the server has terminated"; iperf3 3.12 exits 0
/// then, later versions 1), and recv exits 130.
#[test]
fn a_second_signal_on_recv_cuts_a_running_iperf3_test() {
    if !have_iperf3() {
        return;
    }
    let new = std::path::Path::new(NEW_IPERF3).exists();
    let bins = ["iperf3", NEW_IPERF3]
        .into_iter()
        .take(if new { 2 } else { 1 });
    for bin in bins {
        for args in [&["-t", "30"][..], &["-u", "-b", "10M", "-t", "30"]] {
            let mut r = Recv::start_with(&["--json-stream"]);
            let child = iperf3_on(&r, bin, args);
            signal_running(&r, libc::SIGINT);
            r.signal(libc::SIGINT);
            let out = common::wait_output(child, Duration::from_secs(60));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("the server has terminated"),
                "{bin} {args:?}: {text}"
            );
            assert_eq!(r.exit_code(), Some(130), "{bin} {args:?}");
        }
    }
}

/// #27 follow-up: an iperf3 client that connected before a first signal on `recv` but sends
/// its parameters after it is refused as one arriving then is: ACCESS_DENIED (iperf3 prints
/// "the server is busy running a test"), logged `iperf3 client PEER refused: the receiver is
/// stopping`; recv then exits 143 with no test run. It used to be admitted (CREATE_STREAMS)
/// and run its whole test, extending the drain. A raw client, so the order is exact: its
/// cookie is read (PARAM_EXCHANGE back) before the signal, its parameters sent after the
/// stopping line.
#[test]
fn an_iperf3_client_whose_parameters_come_after_a_first_signal_is_refused() {
    if !have_iperf3() {
        return;
    }
    let mut r = Recv::start();
    let mut c = TcpStream::connect(&r.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(COOKIE).unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
    assert_eq!(b, [9], "PARAM_EXCHANGE");
    r.signal(libc::SIGTERM);
    r.err_line("stopping");
    let params = br#"{"tcp":true,"time":1,"parallel":1}"#;
    c.write_all(&frame(params)).unwrap();
    c.read_exact(&mut b).unwrap();
    assert_eq!(b[0] as i8, -1, "ACCESS_DENIED, not CREATE_STREAMS (10)");
    let line = r.err_line("refused");
    assert!(
        line.contains("iperf3 client 127.0.0.1:")
            && line.ends_with("refused: the receiver is stopping"),
        "{line}"
    );
    assert_eq!(r.exit_code(), Some(128 + libc::SIGTERM));
}
