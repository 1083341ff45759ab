//! SIGINT and SIGTERM mid-run, for every command but blast/recv (tests/udp.rs has those): the
//! real binary exits within a generous bound (the goal is "not hung" on a loaded machine),
//! prints its report marked interrupted where it has one, and leaves no child process behind.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Serve;
use serde_json::Value;

/// How long a command may take to exit after the signal.
const EXIT_BOUND: Duration = Duration::from_secs(5);
const SIGNALS: [&str; 2] = ["INT", "TERM"];

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let _state = f.next();
        if f.next().and_then(|x| x.parse::<u32>().ok()) == Some(pid) {
            v.push(p);
        }
    }
    v
}

/// Whether process `pid` still runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next()),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}

fn kill(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

/// A running command with its stdout and stderr collected in the background.
struct Running {
    child: Child,
    out: mpsc::Receiver<String>,
    err: std::thread::JoinHandle<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = common::spawn(args, Stdio::piped());
        let so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(so).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        Running { child, out, err }
    }

    /// Waits for a stdout line containing `marker` (returns the lines so far).
    fn wait_for(&self, marker: &str, limit: Duration) -> Vec<String> {
        let t = Instant::now();
        let mut lines = Vec::new();
        while t.elapsed() < limit {
            if let Ok(l) = self.out.recv_timeout(Duration::from_millis(50)) {
                let hit = l.contains(marker);
                lines.push(l);
                if hit {
                    return lines;
                }
            }
        }
        panic!("no line with {marker:?} within {limit:?}: {lines:?}");
    }

    /// Sends `sig`, asserts the exit within [`EXIT_BOUND`] and that every child the command
    /// had just before is gone too; returns (stdout, stderr).
    fn interrupt(mut self, sig: &str, what: &str) -> (String, String) {
        let pid = self.child.id();
        let kids = children_of(pid);
        kill(pid, sig);
        let t = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > EXIT_BOUND {
                let _ = self.child.kill();
                let _ = self.child.wait();
                for k in &kids {
                    kill_quietly(*k);
                }
                panic!("{what}: still running {EXIT_BOUND:?} after SIG{sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        while let Ok(l) = self.out.recv_timeout(Duration::from_secs(2)) {
            out.push_str(&l);
            out.push('\n');
        }
        let err = self.err.join().unwrap_or_default();
        // The children must be gone soon after the parent (a reaped child vanishes; an
        // orphan would be adopted and live on).
        let t = Instant::now();
        let mut left: Vec<u32> = kids.clone();
        while !left.is_empty() && t.elapsed() < EXIT_BOUND {
            left.retain(|k| alive(*k));
            std::thread::sleep(Duration::from_millis(20));
        }
        for k in &left {
            kill_quietly(*k);
        }
        assert!(
            left.is_empty(),
            "{what}: SIG{sig} left children {left:?} behind\nstderr: {err}"
        );
        assert!(
            status.code().is_some(),
            "{what}: killed by SIG{sig} instead of exiting ({status})\nstderr: {err}"
        );
        (out, err)
    }
}

fn kill_quietly(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn json(out: &str, what: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}"))
}

#[test]
fn load_prints_an_interrupted_report() {
    let server = Serve::start(&["--model", "epoll"], Duration::from_secs(20));
    let addr = server.addr.to_string();
    for sig in SIGNALS {
        let r = Running::start(&[
            "load",
            "--connect",
            &addr,
            "--clients",
            "2,4",
            "--duration",
            "60s",
            "--task",
            "SLEEP 50",
            "--json",
        ]);
        std::thread::sleep(Duration::from_millis(1500));
        let (out, err) = r.interrupt(sig, "load");
        let j = json(&out, "load");
        assert_eq!(j["interrupted"], true, "{out}\n{err}");
        let pts = j["points"].as_array().unwrap();
        assert_eq!(pts.len(), 1, "only the first point ran: {out}");
        assert_eq!(pts[0]["runs"][0]["interrupted"], true, "{out}");
    }
}

#[test]
fn compare_prints_an_interrupted_report_and_stops_its_server() {
    for sig in SIGNALS {
        let r = Running::start(&[
            "compare",
            "--models",
            "epoll,thread",
            "--clients",
            "2,4",
            "--runs",
            "1",
            "--tasks",
            "30",
            "--task",
            "SLEEP 500",
            "--json",
        ]);
        // Until its first server runs.
        let t = Instant::now();
        while children_of(r.child.id()).is_empty() && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !children_of(r.child.id()).is_empty(),
            "compare started no server"
        );
        std::thread::sleep(Duration::from_millis(1500));
        let (out, err) = r.interrupt(sig, "compare");
        let j = json(&out, "compare");
        assert_eq!(j["interrupted"], true, "{out}\n{err}");
        assert_eq!(j["models"].as_array().unwrap().len(), 1, "{out}");
    }
}

#[test]
fn traffic_prints_an_interrupted_report() {
    for sig in SIGNALS {
        let r = Running::start(&["traffic", "--duration", "60s", "--json"]);
        std::thread::sleep(Duration::from_millis(1500));
        let (out, err) = r.interrupt(sig, "traffic");
        let j = json(&out, "traffic");
        assert_eq!(j["interrupted"], true, "{out}\n{err}");
        let el = j["elapsed_s"].as_f64().unwrap();
        assert!(el < 60.0, "{out}");
        // The intervals still add up to the totals.
        for key in ["tcp", "udp"] {
            let sum: u64 = j["intervals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["flows"][key]["bytes"].as_u64().unwrap())
                .sum();
            assert_eq!(
                sum,
                j["totals"][key]["recv_bytes"].as_u64().unwrap(),
                "{key}"
            );
        }
    }
}

#[test]
fn traffic_at_an_unreachable_rate_still_stops() {
    // 10 Gbit/s per flow is far beyond what the loopback takes from one thread: the sender
    // falls behind, and the run must still end at --duration and on a signal.
    let (st, out, err) = common::run(
        &["traffic", "--rate", "10Gbps", "--duration", "1s", "--json"],
        Duration::from_secs(30),
    );
    assert!(st.success(), "{err}");
    let j = json(&out, "traffic");
    assert_eq!(j["interrupted"], false);
    // TCP loses nothing: what was not received yet is in flight.
    assert_eq!(j["totals"]["tcp"]["lost_msgs"], 0, "{out}");
    let r = Running::start(&["traffic", "--rate", "10Gbps", "--duration", "60s", "--json"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (out, _) = r.interrupt("INT", "traffic --rate 10Gbps");
    assert_eq!(json(&out, "traffic")["interrupted"], true);
}

#[test]
fn serve_stops_with_every_model() {
    for model in ["iterative", "fork", "thread", "pool", "epoll", "uring"] {
        for sig in SIGNALS {
            let r = Running::start(&["serve", "--model", model, "--listen", "127.0.0.1:0"]);
            let first = r.wait_for("listening on", Duration::from_secs(20));
            let addr = common::addr_in(first.last().unwrap());
            // A client in the middle of a long request (a forked child for `fork`).
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"SLEEP 30000\n").unwrap();
            std::thread::sleep(Duration::from_millis(500));
            let what = format!("serve --model {model}");
            let (out, err) = r.interrupt(sig, &what);
            assert!(out.contains("totals:"), "{what}: no totals\n{out}\n{err}");
        }
    }
}

#[test]
fn relay_prints_an_interrupted_report() {
    for sig in SIGNALS {
        let r = Running::start(&["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"]);
        std::thread::sleep(Duration::from_millis(1000));
        let (out, err) = r.interrupt(sig, "relay");
        assert!(out.contains("interrupted"), "relay: {out}\n{err}");
    }
}
