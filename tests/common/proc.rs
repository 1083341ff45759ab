//! A netcore child process whose stderr is read line by line (to wait for markers) and whose
//! stdout is collected; killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A process with its stderr read line by line (to wait for markers) and its stdout collected;
/// killed on drop.
pub struct Proc {
    child: Option<Child>,
    err_lines: Receiver<String>,
    err_seen: Vec<String>,
    stdout: Option<JoinHandle<String>>,
}

impl Proc {
    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = child.stderr.take().unwrap();
        let (tx, err_lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            child: Some(child),
            err_lines,
            err_seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    pub fn netcore(args: &[&str]) -> Proc {
        let mut c = super::bin();
        c.args(args);
        Proc::spawn(c)
    }

    /// `netcore relay --listen 127.0.0.1:0 --to TO EXTRA...`, once it listens, and its address.
    pub fn relay(to: &str, extra: &[&str]) -> (Proc, String) {
        let base = ["relay", "--listen", "127.0.0.1:0", "--to", to];
        let mut p = Proc::netcore(&[&base[..], extra].concat());
        let addr = super::addr_in(&p.wait_line("listening on"));
        (p, addr)
    }

    /// Waits for a stderr line containing `marker`.
    pub fn wait_line(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.err_lines.recv_timeout(left) {
                Ok(l) => {
                    self.err_seen.push(l.clone());
                    if l.contains(marker) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no '{marker}' on stderr; saw {:?}", self.err_seen);
    }

    /// Waits for exit (killing it and failing after `limit`); returns status, stdout, stderr.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, String, String) {
        let mut child = self.child.take().unwrap();
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if t.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "process did not finish within {limit:?}: {:?}",
                    self.err_seen
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let out = self.stdout.take().unwrap().join().unwrap_or_default();
        let mut err = self.err_seen.join("\n");
        while let Ok(l) = self.err_lines.recv_timeout(Duration::from_millis(200)) {
            err.push('\n');
            err.push_str(&l);
        }
        (status, out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
