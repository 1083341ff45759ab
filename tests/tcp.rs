//! `netcore blast --proto tcp` end to end: the real binary over loopback (and two network
//! namespaces). Every test checks the exact agreement: bytes written == bytes read, per
//! stream and in the SUM rows.

use crate::common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::Netns;
use common::{addr_in, run, wait_output, Server};
use netcore::flow::control::{Conn, Msg, Plan};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Checks a TCP report: schema, `streams` rows (`per_dir` each way for the directions in
/// `dirs`), written == read per stream and in each SUM, TCP_INFO on the writer's figures, and
/// both sides' CPU.
fn check(r: &Value, per_dir: usize, dirs: &[&str]) {
    assert_eq!(r["schema"], "netcore.tcp.v1");
    let rows = r["streams"].as_array().unwrap();
    assert_eq!(rows.len(), per_dir * dirs.len(), "{r}");
    for row in rows {
        assert_eq!(u(row, "written"), u(row, "read"), "stream {row}");
        assert_eq!(row["exact"], true);
        assert!(u(row, "written") > 0);
        let t = &row["tcp"];
        assert!(u(t, "cwnd") > 0 && u(t, "mss") > 0, "{t}");
        assert!(u(t, "bytes_acked") >= u(row, "written"), "{t}");
        assert!(!t["congestion"].as_str().unwrap().is_empty());
    }
    let sums = r["sum"].as_array().unwrap();
    assert_eq!(sums.len(), dirs.len());
    for (s, dir) in sums.iter().zip(dirs) {
        assert_eq!(s["dir"], *dir);
        let of: Vec<&Value> = rows.iter().filter(|x| x["dir"] == *dir).collect();
        assert_eq!(of.len(), per_dir);
        assert_eq!(
            u(s, "written"),
            of.iter().map(|x| u(x, "written")).sum::<u64>()
        );
        assert_eq!(u(s, "read"), u(s, "written"));
        assert_eq!(s["exact"], true);
    }
    for side in ["client", "server"] {
        let c = &r["cpu"][side];
        // Streams that share a CPU share a thread: one at least, one per stream at most.
        let threads = u(c, "threads");
        assert!(threads >= 1 && threads <= rows.len() as u64, "{side}: {c}");
        assert!(c["user_s"].as_f64().unwrap() + c["system_s"].as_f64().unwrap() > 0.0);
        assert!(c["bits_per_cpu_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(r["interrupted"], false);
}

fn blast(args: &[&str]) -> Value {
    let all = [&["blast", "--proto", "tcp", "--json"][..], args].concat();
    let (st, out, err) = run(&all, LIMIT);
    assert!(st.success(), "{all:?}: {err}");
    json(&out)
}

#[test]
fn embedded_single_stream_count_of_writes() {
    let r = blast(&["--count", "300", "--len", "64KiB"]);
    check(&r, 1, &["up"]);
    assert_eq!(r["role"], "client");
    assert_eq!(u(&r["streams"][0], "written"), 300 * 65536);
}

#[test]
fn embedded_four_streams_split_the_size() {
    let r = blast(&["--size", "200MB", "-P", "4"]);
    check(&r, 4, &["up"]);
    // 200 MB in 128 KiB writes, rounded up to whole writes, spread over the streams.
    let writes = 200_000_000u64.div_ceil(131072);
    assert_eq!(u(&r["sum"][0], "written"), writes * 131072);
}

#[test]
fn embedded_reverse_and_bidir() {
    let r = blast(&["--time", "1s", "-R", "--interval", "300ms"]);
    check(&r, 1, &["down"]);
    assert!(!r["intervals"].as_array().unwrap().is_empty());
    let r = blast(&["--time", "1s", "--bidir", "-P", "2"]);
    check(&r, 2, &["up", "down"]);
    assert_eq!(r["settings"]["mode"], "bidir");
}

#[test]
fn socket_settings_apply() {
    let r = blast(&[
        "--size",
        "20MB",
        "--mss",
        "1400",
        "--window",
        "1MiB",
        "--no-delay",
        "--congestion",
        "reno",
        "--fq-rate",
        "10Gbps",
        "--rate",
        "2Gbps",
    ]);
    check(&r, 1, &["up"]);
    let t = &r["streams"][0]["tcp"];
    assert_eq!(t["congestion"], "reno");
    assert!(u(t, "mss") <= 1400, "{t}");
}

/// `recv --once --json` in its own process and `blast --to` against it; returns both reports.
fn separate(args: &[&str]) -> (Value, Value) {
    separate_with(&[], args)
}

/// [`separate`] with `recv` flags.
fn separate_with(recv: &[&str], args: &[&str]) -> (Value, Value) {
    let all = [
        &["recv", "--listen", "127.0.0.1:0", "--once", "--json"][..],
        recv,
    ]
    .concat();
    let (srv, line) = Server::start(&all, "listening on", true);
    let addr = addr_in(&line);
    let c = blast(&[&["--to", &addr][..], args].concat());
    let out = srv.wait(LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(s["role"], "server");
    assert_eq!(s["test_id"], c["test_id"]);
    assert_eq!(s["streams"], c["streams"], "both sides print the same rows");
    (c, s)
}

#[test]
fn separate_recv_single_and_four_streams() {
    let (c, s) = separate(&["--size", "50MB"]);
    check(&c, 1, &["up"]);
    check(&s, 1, &["up"]);
    let (c, _) = separate(&["--size", "100MB", "-P", "4"]);
    check(&c, 4, &["up"]);
}

/// Streams pinned to one CPU (`--cpus 0` on both ends) run on one thread per end, every byte
/// still counted per stream; `--thread-per-stream` (on blast: both ends; on recv: its end)
/// gives each its own.
#[test]
fn streams_on_one_cpu_share_a_thread() {
    let threads = |r: &Value, side: &str| u(&r["cpu"][side], "threads");
    let args = ["--size", "100MB", "-P", "4", "--cpus", "0"];
    let (c, s) = separate_with(&["--cpus", "0"], &args);
    check(&c, 4, &["up"]);
    check(&s, 4, &["up"]);
    assert_eq!(
        (threads(&c, "client"), threads(&c, "server")),
        (1, 1),
        "{c}"
    );
    assert_eq!(threads(&s, "client"), 1, "{s}");

    let (c, _) = separate_with(
        &["--cpus", "0"],
        &[&args[..], &["--thread-per-stream"]].concat(),
    );
    check(&c, 4, &["up"]);
    assert_eq!(
        (threads(&c, "client"), threads(&c, "server")),
        (4, 4),
        "{c}"
    );
    assert_eq!(c["settings"]["thread_per_stream"], true);

    let (c, _) = separate_with(&["--cpus", "0", "--thread-per-stream"], &args);
    check(&c, 4, &["up"]);
    assert_eq!(
        (threads(&c, "client"), threads(&c, "server")),
        (1, 4),
        "{c}"
    );

    // Bidir: the writers and the readers of one end are two threads.
    let (c, _) = separate_with(
        &["--cpus", "0"],
        &["--size", "40MB", "-P", "2", "--bidir", "--cpus", "0"],
    );
    check(&c, 2, &["up", "down"]);
    assert_eq!(
        (threads(&c, "client"), threads(&c, "server")),
        (2, 2),
        "{c}"
    );
}

/// `-R`: the client shows the sender's figures live: the server sends its interval samples
/// over control, and the client's rows are the server's own rows (equal, number for number).
#[test]
fn reverse_intervals_come_from_the_sending_server() {
    // The server samples at its own --interval (recv's default, 1 s).
    let (c, s) = separate(&["--time", "2500ms", "-R", "-P", "2"]);
    check(&c, 2, &["down"]);
    let rows = c["intervals"].as_array().unwrap();
    let theirs = s["intervals"].as_array().unwrap();
    let sent: Vec<&Value> = rows.iter().filter(|r| r["by"] == "server").collect();
    assert!(
        !sent.is_empty(),
        "server rows in the client's report: {rows:?}"
    );
    // #26.7: no row of the client's after them (its last partial row overlapped the server's
    // last one), and no row starts before the one before it ended.
    assert_eq!(
        sent.len(),
        rows.len(),
        "every row is the server's: {rows:?}"
    );
    for w in rows.windows(2) {
        let (a, b) = (w[0]["t"].as_f64().unwrap(), w[1]["start"].as_f64().unwrap());
        assert!(b >= a - 1e-9, "overlapping rows: {w:?}");
    }
    for (i, r) in sent.iter().enumerate() {
        assert_eq!(**r, theirs[i], "row {i}");
        assert_eq!(r["streams"].as_array().unwrap().len(), 2, "{r}");
        for st in r["streams"].as_array().unwrap() {
            assert_eq!(st["dir"], "down", "{r}");
        }
    }
    // A forward test's rows are the client's own.
    let (c, _) = separate(&["--time", "500ms", "--interval", "200ms"]);
    let rows = c["intervals"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["by"] == "client"), "{rows:?}");
}

#[test]
fn separate_recv_reverse_and_bidir() {
    let (c, _) = separate(&["--time", "1s", "-R", "-P", "2"]);
    check(&c, 2, &["down"]);
    let (c, s) = separate(&["--time", "1s", "--bidir"]);
    check(&c, 1, &["up", "down"]);
    check(&s, 1, &["up", "down"]);
}

#[test]
fn table_and_csv_have_stream_and_sum_rows() {
    let (st, out, err) = run(
        &["blast", "--proto", "tcp", "--size", "20MB", "-P", "2"],
        LIMIT,
    );
    assert!(st.success(), "{err}");
    assert!(out.contains("netcore TCP test"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("SUM")), "{out}");
    assert!(out.contains("cpu client: user"), "{out}");
    assert!(out.contains("cpu server: user"), "{out}");
    let (st, out, err) = run(
        &[
            "blast", "--proto", "tcp", "--size", "20MB", "-P", "2", "--csv",
        ],
        LIMIT,
    );
    assert!(st.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "header, 2 streams, SUM: {out}");
    assert!(lines[0].starts_with("test_id,mode,stream,dir,written,read,exact"));
    assert!(lines[3].contains(",SUM,up,"));
}

fn bad(args: &[&str], needle: &str) {
    let (st, out, err) = run(args, Duration::from_secs(20));
    assert_eq!(st.code(), Some(2), "{args:?}: usage error, exit 2: {err}");
    assert!(out.is_empty(), "{out}");
    // The first line names the problem; clap's usage and hints may follow it.
    let first = err.lines().next().unwrap_or("");
    assert!(first.starts_with("netcore: error: "), "{args:?}: {err}");
    assert!(
        first.contains(needle),
        "{args:?}: '{needle}' not in {first}"
    );
}

#[test]
fn bad_values_give_usage_errors_naming_the_problem() {
    bad(&["blast", "--proto", "tcp", "--streams", "0"], "--streams");
    bad(
        &["blast", "--proto", "tcp", "--streams", "10000"],
        "--streams",
    );
    bad(&["blast", "--proto", "tcp", "--mss", "10"], "--mss");
    bad(
        &["blast", "--proto", "tcp", "--congestion", "no-such-cc"],
        "unknown congestion control 'no-such-cc'",
    );
    bad(&["blast", "--proto", "tcp", "-R", "--bidir"], "--bidir");
    bad(&["blast", "--mss", "1000"], "--mss applies to --proto tcp");
    bad(
        &["blast", "--thread-per-stream"],
        "--thread-per-stream applies to --proto tcp",
    );
    bad(
        &["blast", "--sendfile"],
        "--sendfile applies to --proto tcp",
    );
    bad(
        &["blast", "--proto", "tcp", "--sendfile", "--zerocopy"],
        "--sendfile",
    );
    bad(&["blast", "--proto", "tcp", "--verify"], "--verify");
    bad(&["blast", "--proto", "tcp", "--rate", "10kpps"], "bit rate");
}

#[test]
fn an_old_version_peer_is_refused_in_one_line() {
    let (srv, line) = Server::start(
        &["recv", "--listen", "127.0.0.1:0", "--json"],
        "listening on",
        true,
    );
    let addr: std::net::SocketAddr = addr_in(&line).parse().unwrap();
    // A version-1 sender (no Setup) is told which versions differ.
    let mut c = Conn::new(TcpStream::connect(addr).unwrap()).unwrap();
    c.send(&Msg::Hello {
        version: 1,
        test_id: 1,
        len: 1000,
        plan: Plan::Count(1),
        streams: 1,
        verify: false,
        host: "old".into(),
        auth: false,
    })
    .unwrap();
    let e = c.expect("Ready", Duration::from_secs(10)).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("protocol version 1 not supported (this receiver speaks 2)"),
        "{e}"
    );
    drop(srv);
    // A version-1 receiver refusing our Hello: blast prints its message on one line.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let old = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut c = Conn::new(s).unwrap();
        let _ = c.expect("Hello", Duration::from_secs(10));
        c.send(&Msg::Error {
            message: "protocol version 2 not supported (this receiver speaks 1)".into(),
        })
        .unwrap();
    });
    let to = format!("127.0.0.1:{port}");
    let (st, _, err) = run(
        &["blast", "--proto", "tcp", "--to", &to, "--count", "1"],
        Duration::from_secs(20),
    );
    old.join().unwrap();
    assert!(!st.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("this receiver speaks 1"), "{err}");
}

#[test]
fn udp_reports_carry_cpu_figures() {
    let (st, out, err) = run(&["blast", "--size", "5MB", "--json"], LIMIT);
    assert!(st.success(), "{err}");
    let r = json(&out);
    for side in ["sender", "receiver"] {
        let c = &r[side]["cpu_usage"];
        assert_eq!(u(c, "threads"), 1, "{side}: {r}");
        assert!(c["wall_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn two_hosts_over_veth() {
    let ns = match Netns::create("tcp") {
        Ok(ns) => ns,
        Err(why) => {
            println!("skipping two_hosts_over_veth: {why}");
            return;
        }
    };
    let spawn = |mut c: Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn")
    };
    let recv = spawn(ns.exec(
        &ns.a,
        &["recv", "--listen", "10.0.0.1:5300", "--once", "--json"],
    ));
    // Give the receiver a moment to bind; blast retries nothing, so wait for the port.
    let t = std::time::Instant::now();
    let client = loop {
        let o = wait_output(
            spawn(ns.exec(
                &ns.b,
                &[
                    "blast",
                    "--proto",
                    "tcp",
                    "--to",
                    "10.0.0.1:5300",
                    "--size",
                    "50MB",
                    "-P",
                    "2",
                    "--json",
                ],
            )),
            LIMIT,
        );
        if o.status.success() || t.elapsed() > Duration::from_secs(10) {
            break o;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let c = json(&String::from_utf8_lossy(&client.stdout));
    check(&c, 2, &["up"]);
    assert_eq!(c["target"], "10.0.0.1:5300");
    let s = wait_output(recv, LIMIT);
    assert!(s.status.success());
    check(&json(&String::from_utf8_lossy(&s.stdout)), 2, &["up"]);
}

/// `--zerocopy`: the writers send with MSG_ZEROCOPY, every send's completion is counted, and
/// bytes written == bytes read still; both ways (the server writes the `--bidir` down stream:
/// it takes the setting from the Setup).
#[test]
fn zerocopy_counts_every_completion() {
    let zc_of = |r: &Value, dir: &str| {
        let s = r["sum"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["dir"] == dir)
            .unwrap()
            .clone();
        let z = s["zerocopy"].clone();
        assert!(u(&z, "sends") > 0, "{s}");
        assert_eq!(u(&z, "completed"), u(&z, "sends"), "{z}");
        assert!(u(&z, "copied") <= u(&z, "sends"));
    };
    let r = blast(&["--zerocopy", "-P", "2", "--size", "20MB"]);
    check(&r, 2, &["up"]);
    zc_of(&r, "up");
    let r = blast(&["--zerocopy", "--bidir", "--size", "10MB"]);
    check(&r, 1, &["up", "down"]);
    zc_of(&r, "up");
    zc_of(&r, "down");
    let (st, out, err) = run(
        &[
            "blast",
            "--proto",
            "tcp",
            "--zerocopy",
            "--count",
            "50",
            "--len",
            "64KiB",
        ],
        LIMIT,
    );
    assert!(st.success(), "{err}");
    assert!(out.contains("MSG_ZEROCOPY sends"), "{out}");
}

/// `--sendfile`: the writers send the pattern with sendfile(2) from an in-memory file; bytes
/// written == bytes read, both ways (the server takes the setting from the Setup), with a
/// separate `recv` and the embedded one.
#[test]
fn sendfile_moves_every_byte() {
    let r = blast(&["--sendfile", "-P", "2", "--size", "20MB"]);
    check(&r, 2, &["up"]);
    assert_eq!(r["settings"]["sendfile"], true);
    let r = blast(&["--sendfile", "--bidir", "--count", "100", "--len", "100000"]);
    check(&r, 1, &["up", "down"]);
    let (c, _) = separate(&["--sendfile", "-R", "--time", "1s"]);
    check(&c, 1, &["down"]);
}

/// `blast --to --interval` travels to a separate `recv` (#27 follow-up): with `-R` the rows
/// are the receiver's samples of the streams it writes, taken at blast's 200 ms, not at
/// recv's 2 s (there were none in a 1 s test); the server's report has them too.
#[test]
fn blast_interval_travels_to_a_separate_recv() {
    let (c, s) = separate_with(
        &["--interval", "2s"],
        &[
            "-R",
            "--time",
            "1s",
            "--interval",
            "0.2s",
            "--rate",
            "200Mbps",
        ],
    );
    check(&c, 1, &["down"]);
    let rows = |r: &Value| r["intervals"].as_array().map_or(0, Vec::len);
    // 5 on an idle machine; bounds, not counts.
    assert!(rows(&c) >= 3, "client: {}", c["intervals"]);
    assert!(rows(&s) >= 3, "server: {}", s["intervals"]);
}
