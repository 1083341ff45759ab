//! `netcore serve --proto sockperf` end to end: the real `sockperf ping-pong --tcp` (bounded,
//! `-t 1`) against the epoll, thread and uring models (skipped with a message where sockperf is
//! not installed), and raw sockets in every model: messages split anywhere and pipelined are
//! answered in order with the client flag cleared, warm-ups are not answered, a length that
//! breaks the framing closes the connection and the server goes on serving.

use crate::common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{read_to_end, Serve};
use netcore::proto::sockperf::{Header, FLAG_CLIENT, FLAG_PONG, FLAG_WARMUP, HEADER_LEN};

const MODELS: [&str; 6] = ["iterative", "fork", "thread", "pool", "epoll", "uring"];
const T: Duration = Duration::from_secs(20);

fn serve(model: &str) -> Serve {
    Serve::start(&["--model", model, "--proto", "sockperf"], T)
}

fn msg(seq: u64, flags: u16, payload: &[u8]) -> Vec<u8> {
    let len = (HEADER_LEN + payload.len()) as u32;
    let mut v = Header { seq, flags, len }.bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn connect(srv: &Serve) -> TcpStream {
    let s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

#[test]
fn sockperf_ping_pong_reports_a_latency_and_no_errors() {
    let have = Command::new("sockperf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !have {
        eprintln!("skipped: sockperf is not installed (apt-get install sockperf)");
        return;
    }
    for model in ["epoll", "thread", "uring"] {
        let srv = serve(model);
        let port = srv.addr.port().to_string();
        let child = Command::new("sockperf")
            .args([
                "ping-pong",
                "-i",
                "127.0.0.1",
                "-p",
                &port,
                "--tcp",
                "-t",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sockperf");
        let out = common::wait_output(child, Duration::from_secs(30));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{model}: {text}");
        assert!(
            !text.contains("No messages were received"),
            "{model}: {text}"
        );
        let usec: f64 = text
            .lines()
            .find_map(|l| l.split("Latency is ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{model}: no latency in {text}"));
        assert!(usec > 0.0, "{model}: {text}");
        assert!(
            text.contains(
                "# dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0"
            ),
            "{model}: {text}"
        );
    }
}

#[test]
fn messages_split_anywhere_are_answered_in_order_in_every_model() {
    let stream: Vec<u8> = [
        msg(1, FLAG_CLIENT | FLAG_PONG | FLAG_WARMUP, b"warm"),
        msg(2, FLAG_CLIENT | FLAG_PONG, b"first"),
        msg(3, FLAG_CLIENT, b"no pong asked"),
        msg(4, FLAG_CLIENT | FLAG_PONG, &[7u8; 3000]),
        msg(5, FLAG_CLIENT | FLAG_PONG, b""),
    ]
    .concat();
    let want: Vec<u8> = [
        msg(2, FLAG_PONG, b"first"),
        msg(4, FLAG_PONG, &[7u8; 3000]),
        msg(5, FLAG_PONG, b""),
    ]
    .concat();
    for model in MODELS {
        let srv = serve(model);
        let mut s = connect(&srv);
        // Byte by byte for the first two messages, then the rest at once.
        for b in &stream[..40] {
            s.write_all(&[*b]).unwrap();
        }
        s.write_all(&stream[40..]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut s), want, "{model}");
    }
}

#[test]
fn a_broken_length_closes_and_the_server_goes_on_in_every_model() {
    for model in MODELS {
        let srv = serve(model);
        let mut s = connect(&srv);
        let mut bad = msg(9, FLAG_CLIENT | FLAG_PONG, b"");
        bad[13] = 3; // a length shorter than the header
        s.write_all(&[msg(8, FLAG_CLIENT | FLAG_PONG, b"ok"), bad].concat())
            .unwrap();
        // The message before is answered, then the connection closes without the peer's FIN.
        assert_eq!(read_to_end(&mut s), msg(8, FLAG_PONG, b"ok"), "{model}");
        let mut s = connect(&srv);
        s.write_all(&msg(10, FLAG_CLIENT | FLAG_PONG, b"again"))
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut s), msg(10, FLAG_PONG, b"again"), "{model}");
    }
}
