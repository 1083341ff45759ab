//! Helpers for the integration tests: run the real binary with a time limit, and kill any
//! server a test started, also when the test fails.
#![allow(dead_code)]

pub mod control;
pub mod netns;
pub mod proc;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test: `NETCORE_TEST_BIN` when set (to run the tests against another
/// build, e.g. to check that a regression test fails before its fix), else this crate's.
pub fn bin() -> Command {
    match std::env::var_os("NETCORE_TEST_BIN") {
        Some(p) => Command::new(p),
        None => Command::new(env!("CARGO_BIN_EXE_netcore")),
    }
}

/// Starts `netcore ARGS` with no stdin, stdout piped and stderr as given.
pub fn spawn(args: &[&str], stderr: Stdio) -> Child {
    bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn netcore")
}

/// Runs `netcore ARGS` to completion, killing it after `limit`.
pub fn run(args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
    let child = spawn(args, Stdio::piped());
    let out = wait_output(child, limit);
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `netcore ARGS` to completion within `limit`, asserts it succeeded, returns its stdout.
pub fn run_ok(args: &[&str], limit: Duration) -> String {
    let (st, out, err) = run(args, limit);
    assert!(st.success(), "netcore {args:?} failed ({st}): {err}");
    out
}

/// Parses a JSON report, naming what it got when that is not JSON.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The number `key` of a JSON object, naming the object when there is none.
pub fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number '{key}' in {v}"))
}

/// A fresh directory for one test's files (`netcore-NAME-PID` under the temp dir).
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("netcore-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Waits for a child, killing it (and failing the test) after `limit`.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "netcore did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A background netcore process, killed on drop.
pub struct Server {
    pub child: Option<Child>,
}

impl Server {
    /// Starts `netcore ARGS` and reads its stdout or stderr until a line containing `marker`
    /// shows up; returns the server and that line.
    pub fn start(args: &[&str], marker: &str, on_stderr: bool) -> (Server, String) {
        let mut child = spawn(args, Stdio::piped());
        let line = {
            let pipe: Box<dyn std::io::Read + Send> = if on_stderr {
                Box::new(child.stderr.take().unwrap())
            } else {
                Box::new(child.stdout.take().unwrap())
            };
            let (tx, rx) = std::sync::mpsc::channel();
            let marker = marker.to_string();
            std::thread::spawn(move || {
                let mut r = BufReader::new(pipe);
                let mut sent = false;
                let mut l = String::new();
                while r.read_line(&mut l).map(|n| n > 0).unwrap_or(false) {
                    if !sent && l.contains(&marker) {
                        let _ = tx.send(l.clone());
                        sent = true;
                    }
                    l.clear();
                }
            });
            rx.recv_timeout(Duration::from_secs(20))
                .expect("server did not announce itself")
        };
        (Server { child: Some(child) }, line)
    }

    /// Waits for the server to exit by itself (with a limit) and returns its output.
    pub fn wait(mut self, limit: Duration) -> Output {
        wait_output(self.child.take().unwrap(), limit)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `netcore serve --listen 127.0.0.1:0 ARGS` child, killed on drop: the address from its
/// first line (`listening on ADDR`) and the rest of its stdout, line by line.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    pub lines: mpsc::Receiver<String>,
}

impl Serve {
    /// Starts the server and waits up to `limit` for its first line.
    pub fn start(args: &[&str], limit: Duration) -> Serve {
        let mut child = spawn(
            &[&["serve", "--listen", "127.0.0.1:0"][..], args].concat(),
            Stdio::null(),
        );
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        // The guard exists before anything here can fail.
        let mut s = Serve {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            lines: rx,
        };
        let first = s
            .lines
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("no startup line from serve {args:?}"));
        assert!(first.starts_with("listening on "), "{first}");
        s.addr = addr_in(&first).parse().unwrap();
        assert_ne!(s.addr.port(), 0);
        s
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until the peer closes (a reset counts as the end too).
pub fn read_to_end(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut v = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => v.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&v)),
        }
    }
    v
}

/// The `IP:PORT` after "listening on " in a line.
pub fn addr_in(line: &str) -> String {
    let rest = line
        .split("listening on ")
        .nth(1)
        .expect("listening on ...");
    rest.split_whitespace().next().unwrap().to_string()
}

/// Whether `iperf3` runs here (Debian's package; `.ci/run` installs it); says "skipped"
/// when it does not.
pub fn have_iperf3() -> bool {
    let ok = Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: iperf3 is not installed (apt-get install iperf3)");
    }
    ok
}

/// The `IP:PORT` of a "metrics on http://IP:PORT/metrics" line.
pub fn metrics_addr(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

/// GET `path` from `addr` accepting `accept` (closing): the head and the body.
pub fn get_as(addr: &str, path: &str, accept: &str) -> std::io::Result<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_string(), body.to_string()))
}

/// `netcore ARGS --metrics 127.0.0.1:0`, scraped (OpenMetrics) as soon as it says where its
/// metrics are: the process and the body.
pub fn first_scrape(args: &[&str]) -> (proc::Proc, String) {
    let mut p = proc::Proc::netcore(&[args, &["--metrics", "127.0.0.1:0"][..]].concat());
    let maddr = metrics_addr(&p.wait_line("metrics on"));
    let accept = "application/openmetrics-text;version=1.0.0";
    let (_, body) = get_as(&maddr, "/metrics", accept).unwrap();
    (p, body)
}

/// An exposition has the HELP and TYPE lines of `family` (its name without `_total`).
pub fn declares(body: &str, family: &str) -> bool {
    ["# HELP", "# TYPE"]
        .iter()
        .all(|m| body.contains(&format!("{m} {family} ")))
}

/// An exposition has `netcore_build_info{version="THIS BUILD's",...} 1`.
pub fn says_its_build(body: &str) -> bool {
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    body.lines()
        .any(|l| l.starts_with("netcore_build_info{") && l.contains(&version) && l.ends_with(" 1"))
}

/// The SVG at `svg` renders in headless Chromium to a non-blank `png`
/// (tools/svg-screenshot.sh); skips with a message where Chromium is missing.
pub fn renders_in_chromium(svg: &std::path::Path, png: &std::path::Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/svg-screenshot.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(svg)
        .arg(png)
        .output()
        .unwrap();
    match out.status.code() {
        Some(77) => eprintln!("skipped: no Chromium on this machine (apt-get install chromium)"),
        Some(0) => {}
        _ => panic!(
            "the SVG did not render: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
