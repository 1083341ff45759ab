//! #26.1 and #26.3: Ctrl-C on a TCP test gives the report of what ran, marked interrupted,
//! and exit 130, every time (forward, -P 2, -R, --bidir; the embedded receiver and a separate
//! `recv`; SIGINT ignored at the start, as in a background job of a script); a test whose
//! client stopped or vanished ends on the receiver, which is free for the next one. #27
//! follow-up: a first signal on `recv` lets a running TCP test run to its end, a second cuts
//! it, and so for the UDP tests `recv` sends (`-R`, `--bidir`'s reverse half); a SIGINT before
//! the handlers are in is not lost when SIGINT was ignored at the start.

use crate::common;
use common::proc::Proc;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a command may take to exit after the signal (wide: the machine is shared).
const EXIT_BOUND: Duration = Duration::from_secs(8);

/// The binary's path (as `common::bin` picks it).
fn bin_path() -> String {
    std::env::var("NETCORE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_netcore").into())
}

/// A running netcore whose stdout lines arrive on a channel.
struct Lines {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Lines {
    /// `netcore ARGS`; with `ignore_int`, through `sh` with SIGINT ignored first (what a
    /// non-interactive shell does to a background job).
    fn start(args: &[&str], ignore_int: bool) -> Lines {
        let mut cmd = if ignore_int {
            let mut c = Command::new("sh");
            c.args(["-c", "trap '' INT; exec \"$0\" \"$@\"", &bin_path()]);
            c.args(args);
            c
        } else {
            let mut c = common::bin();
            c.args(args);
            c
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netcore");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Lines { child, rx }
    }

    /// The next stdout line holding `marker` within `limit` (the lines before it dropped).
    fn wait_for(&self, marker: &str, limit: Duration) -> String {
        let t = Instant::now();
        let mut seen = Vec::new();
        while let Some(left) = limit.checked_sub(t.elapsed()) {
            match self.rx.recv_timeout(left) {
                Ok(l) if l.contains(marker) => return l,
                Ok(l) => seen.push(l),
                Err(_) => break,
            }
        }
        panic!("no stdout line with {marker:?} within {limit:?}: {seen:?}");
    }

    fn signal(&self, sig: i32) {
        netcore::sys::process::kill(self.child.id() as i32, sig).expect("kill");
    }

    /// Whether it has not exited yet.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) for the exit; returns the exit code and the stdout lines left.
    fn finish(mut self, what: &str) -> (Option<i32>, Vec<String>, String) {
        let t = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > EXIT_BOUND {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{what}: still running {EXIT_BOUND:?} after the signal");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let lines = self.rx.iter().collect();
        (status.code(), lines, err)
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `end` event of a --json-stream output, parsed.
fn end_event(lines: &[String], what: &str) -> Value {
    end_events(lines)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{what}: no end event in {lines:?}"))
}

/// Every `end` event of a --json-stream output (a UDP `--bidir` ends with one per half).
fn end_events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "end")
        .collect()
}

/// The report of a TCP test cut short: marked interrupted, and complete.
fn check_cut_report(r: &Value, streams: usize, what: &str) {
    assert_eq!(r["interrupted"], true, "{what}: {r}");
    check_rows(r, streams, what);
}

/// A TCP report is complete: a row per stream, each with both ends' counts (a reader never
/// has more than its writer took), and per direction a SUM row of its streams. A stream may
/// have written nothing yet when a signal cuts the test (a loaded machine runs its thread
/// late): that is still a complete row.
fn check_rows(r: &Value, streams: usize, what: &str) {
    let rows = r["streams"].as_array().unwrap();
    assert_eq!(rows.len(), streams, "{what}: {r}");
    for s in rows {
        let (w, rd) = (s["written"].as_u64(), s["read"].as_u64());
        assert!(rd.is_some() && rd <= w, "{what}: {s}");
        assert_eq!(s["exact"], w == rd, "{what}: {s}");
    }
    let sums = r["sum"].as_array().unwrap();
    let mut dirs: Vec<&Value> = rows.iter().map(|s| &s["dir"]).collect();
    dirs.sort_by_key(|d| d.to_string());
    dirs.dedup();
    assert_eq!(
        sums.len(),
        dirs.len(),
        "a SUM row per direction: {what}: {r}"
    );
    for sum in sums {
        let of = |k: &str| -> u64 {
            let own = rows.iter().filter(|s| s["dir"] == sum["dir"]);
            own.map(|s| s[k].as_u64().unwrap()).sum()
        };
        assert_eq!(sum["written"].as_u64(), Some(of("written")), "{what}: {r}");
        assert_eq!(sum["read"].as_u64(), Some(of("read")), "{what}: {r}");
    }
}

/// The kinds of TCP test, with their streams.
const KINDS: [(&[&str], usize); 4] = [(&[], 1), (&["-P", "2"], 2), (&["-R"], 1), (&["--bidir"], 2)];

/// Blasts with `args`, Ctrl-C once the test runs; the report and exit 130, every time.
fn interrupt_once(args: &[&str], streams: usize, ignore_int: bool, what: &str) {
    let base = ["blast", "--proto", "tcp", "--time", "20s", "--json-stream"];
    let b = Lines::start(&[&base[..], args].concat(), ignore_int);
    b.wait_for("\"event\":\"start\"", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    b.signal(libc::SIGINT);
    let (code, lines, err) = b.finish(what);
    assert_eq!(code, Some(130), "{what}: {err}\n{lines:?}");
    check_cut_report(&end_event(&lines, what)["data"], streams, what);
}

#[test]
fn ctrl_c_on_a_tcp_test_gives_the_report_and_130_every_time() {
    let recv = Lines::start(&["recv", "--listen", "127.0.0.1:0", "--json-stream"], false);
    let addr = recv_addr(&recv);
    for i in 0..20 {
        let (args, streams) = KINDS[i % KINDS.len()];
        let separate = i % 2 == 1;
        let ignore_int = i % 5 == 4;
        let mut a: Vec<&str> = args.to_vec();
        if separate {
            a.extend(["--to", &addr]);
        }
        let what = format!("try {i}: {a:?}, SIGINT ignored at start: {ignore_int}");
        interrupt_once(&a, streams, ignore_int, &what);
    }
    // recv drains on the first signal: 130 too.
    recv.signal(libc::SIGINT);
    let (code, lines, err) = recv.finish("recv");
    assert_eq!(code, Some(130), "{err}");
    let ends = lines
        .iter()
        .filter(|l| l.contains("\"event\":\"end\""))
        .count();
    assert_eq!(ends, 10, "a report per test: {lines:?}");
}

/// The address a `recv --listen 127.0.0.1:0` listens on (its banner is on stderr, which
/// [`Lines`] reads at the end): its listening socket, from /proc.
fn recv_addr(recv: &Lines) -> String {
    let pid = recv.child.id();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if let Some(port) = listening_port(pid) {
            return format!("127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("recv never listened");
}

/// The TCP port process `pid` listens on (from /proc: its socket inodes against
/// /proc/net/tcp's LISTEN rows).
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(String::from)
        })
        .collect();
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // local_address, state 0A = LISTEN, inode.
        (f.get(3) == Some(&"0A") && inodes.iter().any(|i| Some(&i.as_str()) == f.get(9)))
            .then(|| u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok())
            .flatten()
    })
}

/// #26.3: `-R` cut by Ctrl-C (the client stops reading) and by SIGKILL (the client is gone):
/// the receiver's test ends at once, its report marked interrupted, and the one slot of
/// `--max-tests 1` is free for the next test.
#[test]
fn an_interrupted_reverse_test_frees_the_receiver() {
    let recv = Lines::start(
        &[
            "recv",
            "--listen",
            "127.0.0.1:0",
            "--max-tests",
            "1",
            "--json-stream",
        ],
        false,
    );
    let addr = recv_addr(&recv);
    for sig in [libc::SIGINT, libc::SIGKILL] {
        let what = format!("-R cut by signal {sig}");
        let b = Lines::start(
            &[
                "blast",
                "--proto",
                "tcp",
                "-R",
                "--time",
                "30s",
                "--to",
                &addr,
                "--json-stream",
            ],
            false,
        );
        b.wait_for("\"event\":\"start\"", Duration::from_secs(20));
        // Data flows once the server's first interval is in.
        b.wait_for("\"event\":\"interval\"", Duration::from_secs(20));
        b.signal(sig);
        let (code, lines, err) = b.finish(&what);
        if sig == libc::SIGINT {
            assert_eq!(code, Some(130), "{what}: {err}");
            check_cut_report(&end_event(&lines, &what)["data"], 1, &what);
        }
        // The receiver's report of that test comes out long before its 30 s, interrupted.
        let end = recv.wait_for("\"event\":\"end\"", Duration::from_secs(5));
        let r: Value = serde_json::from_str(&end).unwrap();
        assert_eq!(r["data"]["interrupted"], true, "{what}: {r}");
        // And the next test runs.
        let (st, out, err) = common::run(
            &[
                "blast", "--proto", "tcp", "--count", "100", "--to", &addr, "--json",
            ],
            Duration::from_secs(30),
        );
        assert!(st.success(), "{what}: the next test: {err}\n{out}");
        recv.wait_for("\"event\":\"end\"", Duration::from_secs(5));
    }
}

/// A `recv --json` (a first signal drains, a second interrupts) with `blast --proto PROTO
/// PLAN ARGS` running on it, draining: `sig` sent once the test's data flows (its first
/// interval, a fifth of a second in, and 0.3 s more) and recv's "stopping" line seen. recv, its
/// address and the blast.
fn draining(proto: &str, plan: &[&str], args: &[&str], sig: i32) -> (Proc, String, Lines) {
    let mut recv = Proc::netcore(&["recv", "--listen", "127.0.0.1:0", "--json"]);
    let addr = common::addr_in(&recv.wait_line("listening on"));
    let to = ["--to", addr.as_str()];
    let base = ["blast", "--proto", proto, "-i", "200ms", "--json-stream"];
    let b = Lines::start(&[&base[..], &to, plan, args].concat(), false);
    b.wait_for("\"event\":\"start\"", Duration::from_secs(20));
    b.wait_for("\"event\":\"interval\"", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    kill(&recv, sig);
    recv.wait_line("stopping");
    (recv, addr, b)
}

/// Sends `sig` to `p`.
fn kill(p: &Proc, sig: i32) {
    netcore::sys::process::kill(p.pid() as i32, sig).expect("kill");
}

/// The reports of schema `schema` (a prefix: "netcore.tcp") `recv --json` printed (one
/// document a line).
fn recv_reports(out: &str, schema: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["schema"].as_str().is_some_and(|s| s.starts_with(schema)))
        .collect()
}

/// #27 follow-up: a first signal on `recv` drains: a running TCP test (forward, -P 2, -R,
/// --bidir) runs to its planned end, its report complete and not interrupted on both sides, a
/// new test is refused meanwhile, and recv exits once it has ended (128 + the signal).
#[test]
fn a_first_signal_on_recv_lets_a_running_tcp_test_run_to_its_end() {
    for (args, streams) in KINDS {
        let what = format!("drain {args:?}");
        let (recv, addr, b) = draining("tcp", &["--time", "2s"], args, libc::SIGTERM);
        let new = ["blast", "--proto", "tcp", "--count", "10", "--to", &addr];
        let (st, _, err) = common::run(&new, Duration::from_secs(30));
        assert_eq!(st.code(), Some(1), "{what}: a new test: {err}");
        assert!(err.contains("the receiver is stopping"), "{what}: {err}");
        let (code, lines, err) = b.finish(&what);
        assert_eq!(code, Some(0), "{what}: {err}\n{lines:?}");
        let r = &end_event(&lines, &what)["data"];
        assert_eq!(r["interrupted"], false, "{what}: {r}");
        check_rows(r, streams, &what);
        let rows = r["streams"]
            .as_array()
            .unwrap()
            .iter()
            .chain(r["sum"].as_array().unwrap());
        for row in rows {
            assert_eq!(row["exact"], true, "{what}: {row}");
        }
        let (st, out, err) = recv.finish(EXIT_BOUND);
        assert_eq!(st.code(), Some(128 + libc::SIGTERM), "{what}: {err}");
        let reports = recv_reports(&out, "netcore.tcp");
        assert_eq!(reports.len(), 1, "{what}: {out}");
        assert_eq!(reports[0]["interrupted"], false, "{what}: {out}");
    }
}

/// #27 follow-up: a second signal on a draining `recv` cuts the running TCP test: blast gets
/// the receiver's report marked interrupted (exit 1: the receiver ended it), recv prints its
/// own, marked interrupted, and exits 130.
#[test]
fn a_second_signal_on_recv_cuts_a_running_tcp_test() {
    for (args, streams) in KINDS {
        let what = format!("two signals {args:?}");
        let (recv, _, b) = draining("tcp", &["--time", "30s"], args, libc::SIGINT);
        kill(&recv, libc::SIGINT);
        let (code, lines, err) = b.finish(&what);
        assert_eq!(code, Some(1), "{what}: {err}\n{lines:?}");
        check_cut_report(&end_event(&lines, &what)["data"], streams, &what);
        let (st, out, err) = recv.finish(EXIT_BOUND);
        assert_eq!(st.code(), Some(130), "{what}: {err}");
        let reports = recv_reports(&out, "netcore.tcp");
        assert_eq!(reports.len(), 1, "{what}: {out}");
        check_cut_report(&reports[0], streams, &what);
    }
}

/// The UDP tests `recv` sends on: `-R`, and `--bidir` (its reverse half sent by recv, its
/// forward half received), with the reports each side prints; paced, so that a loaded machine
/// keeps up (4000 datagrams a way take about 2.4 s).
const UDP_SENT_BY_RECV: [(&str, usize); 2] = [("-R", 1), ("--bidir", 2)];
const UDP_PACE: [&str; 2] = ["--rate", "20Mbps"];

/// A UDP test of `kind` (with `halves`) that `recv` sends on, `blast --proto udp PLAN`,
/// through `sigs` on recv (the first once the test runs, see [`draining`]; the others 0.3 s
/// later, the test still running through the first): the exit codes are `codes` (blast's,
/// recv's); every UDP report printed, one a half on each side (blast's end events' first).
fn udp_sent_by_recv(
    (kind, halves): (&str, usize),
    plan: &[&str],
    sigs: &[i32],
    codes: (i32, i32),
) -> Vec<Value> {
    let what = format!("udp {kind} {plan:?}, signals {sigs:?}");
    let (recv, _, mut b) = draining("udp", plan, &[&UDP_PACE[..], &[kind]].concat(), sigs[0]);
    for &sig in &sigs[1..] {
        std::thread::sleep(Duration::from_millis(300));
        assert!(b.running(), "{what}: blast ended at the first signal");
        kill(&recv, sig);
    }
    let (code, lines, err) = b.finish(&what);
    assert_eq!(code, Some(codes.0), "{what}: {err}\n{lines:?}");
    let (st, out, err) = recv.finish(EXIT_BOUND);
    assert_eq!(st.code(), Some(codes.1), "{what}: {err}");
    let ends = end_events(&lines);
    let reports = recv_reports(&out, "netcore.udp");
    assert_eq!(
        (ends.len(), reports.len()),
        (halves, halves),
        "{what}: {out}"
    );
    ends.into_iter()
        .map(|e| e["data"].clone())
        .chain(reports)
        .collect()
}

/// #27 follow-up: a first signal on `recv` lets a running UDP test it sends (`-R`,
/// `--bidir`) run to its planned end, as a test it receives did: blast exits 0, every report
/// complete and not interrupted, the whole count sent each way, recv exits 143 once it has
/// ended (its sender used to stop at the signal itself: blast exited 1, its report
/// interrupted).
#[test]
fn a_first_signal_on_recv_lets_a_running_udp_test_it_sends_run_to_its_end() {
    for kind in UDP_SENT_BY_RECV {
        let plan = ["--count", "4000"];
        let sigterm = 128 + libc::SIGTERM;
        for r in udp_sent_by_recv(kind, &plan, &[libc::SIGTERM], (0, sigterm)) {
            crate::service::exact_udp(&r);
            assert_eq!(r["receiver"]["accounting"]["sent"], 4000, "{kind:?}: {r}");
        }
    }
}

/// #27 follow-up: a second signal on a draining `recv` cuts a running UDP test it sends:
/// blast's reports and recv's are marked interrupted and complete (`unique + lost == sent`),
/// blast exits 1 (the receiver ended the test), recv 130.
#[test]
fn a_second_signal_on_recv_cuts_a_running_udp_test_it_sends() {
    for kind in UDP_SENT_BY_RECV {
        let plan = ["--time", "30s"];
        let sigs = [libc::SIGINT, libc::SIGINT];
        for r in udp_sent_by_recv(kind, &plan, &sigs, (1, 130)) {
            let a = &r["receiver"]["accounting"];
            assert_eq!(r["receiver"]["interrupted"], true, "{kind:?}: {r}");
            let sent = a["sent"].as_u64().unwrap();
            let accounted = a["unique"].as_u64().unwrap() + a["lost"].as_u64().unwrap();
            assert_eq!(accounted, sent, "{kind:?}: {r}");
        }
    }
}

/// #27 follow-up: a SIGINT that comes before the handlers are in is not lost when SIGINT was
/// ignored at the start (`nohup`, `trap '' INT`): it waits until they are. `recv` reads its
/// key from a FIFO first, so it waits there, before its handlers, while the signal comes; once
/// the key is in, it stops at once: 130 (it used to drop the signal and serve on).
#[test]
fn a_sigint_before_the_handlers_is_not_lost_when_ignored_at_the_start() {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fifo = common::scratch_dir("early-sigint").join("key");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {fifo:?}");
    let key = fifo.to_str().unwrap();
    let args = ["recv", "--listen", "127.0.0.1:0", "--auth-key-file", key];
    let recv = Lines::start(&args, true);
    // A non-blocking write end opens once a reader has the FIFO open: recv, in its start.
    let t = Instant::now();
    let mut w = loop {
        let open = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        match open {
            Ok(w) => break w,
            Err(_) if t.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("recv never opened its key file: {e}"),
        }
    };
    // Sent (pending, or dropped) before kill returns: before the key, so before the handlers.
    recv.signal(libc::SIGINT);
    w.write_all(b"a key\n").expect("write the key");
    drop(w);
    let (code, _, err) = recv.finish("recv with SIGINT ignored at the start");
    let _ = std::fs::remove_file(&fifo);
    assert_eq!(code, Some(130), "{err}");
}
