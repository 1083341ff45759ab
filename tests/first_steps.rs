//! #26.4-6: what a new user types first. `recv --listen PORT` is that port on every address;
//! a port past 65535 or a port alone for `--to` is a usage error; recv logs every refusal
//! with the peer, and tells a stock `iperf3 -c` it cannot authenticate; `blast --to` an
//! `iperf3 -s` says to use `iperf3://` instead of waiting out its deadline.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::proc::Proc;
use common::{addr_in, have_iperf3};

const LIMIT: Duration = Duration::from_secs(30);

/// A port free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn a_bare_listen_port_is_that_port_on_every_address() {
    let port = free_port().to_string();
    let mut p = Proc::netcore(&["recv", "--listen", &port, "--once", "--json"]);
    let line = p.wait_line("listening on");
    assert!(
        line.contains(&format!("[::]:{port}")) || line.contains(&format!("0.0.0.0:{port}")),
        "{line}"
    );
    // Reached over IPv4 loopback.
    let to = format!("127.0.0.1:{port}");
    common::run_ok(&["blast", "--to", &to, "--count", "10", "--json"], LIMIT);
    let (st, out, err) = p.finish(LIMIT);
    assert!(st.success(), "{err}");
    assert_eq!(common::json(&out)["sender"]["sent"], 10, "{out}");
}

#[test]
fn a_port_out_of_range_or_alone_is_a_usage_error() {
    for (to, says) in [
        ("127.0.0.1:99999", "port 99999"),
        ("localhost:70000", "port 70000"),
        ("5201", "a port alone"),
    ] {
        for proto in ["udp", "tcp"] {
            let (st, _, err) = common::run(
                &["blast", "--proto", proto, "--to", to, "--count", "1"],
                LIMIT,
            );
            assert_eq!(st.code(), Some(2), "--to {to}: {err}");
            assert!(err.contains(says), "--to {to}: {err}");
        }
    }
    let (st, _, err) = common::run(&["recv", "--listen", "127.0.0.1:99999"], LIMIT);
    assert_eq!(st.code(), Some(2), "{err}");
}

#[test]
fn an_iperf3_client_without_the_key_is_told_why_and_recv_logs_it() {
    if !have_iperf3() {
        return;
    }
    let dir = common::scratch_dir("iperf3-auth");
    let key = dir.join("key");
    std::fs::write(&key, "a shared key\n").unwrap();
    let mut p = Proc::netcore(&[
        "recv",
        "--listen",
        "127.0.0.1:0",
        "--auth-key-file",
        key.to_str().unwrap(),
        "--json",
    ]);
    let addr = addr_in(&p.wait_line("listening on"));
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("iperf3")
        .args(["-c", host, "-p", port, "-t", "1"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("authorization failed"), "{said}");
    let line = p.wait_line("refused");
    assert!(
        line.contains("iperf3 client 127.0.0.1:") && line.contains("--auth-key-file"),
        "{line}"
    );
    // A netcore client without the key: refused, and logged with its address too.
    let (st, _, err) = common::run(&["blast", "--to", &addr, "--count", "10"], LIMIT);
    assert!(!st.success(), "{err}");
    let line = p.wait_line("shared key");
    assert!(line.contains("127.0.0.1:"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn blast_to_an_iperf3_server_says_to_use_iperf3_urls() {
    if !have_iperf3() {
        return;
    }
    let port = free_port().to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let to = format!("127.0.0.1:{port}");
    // Until it listens (a probe that sends nothing: iperf3 -s drops it and serves on).
    for _ in 0..100 {
        if std::net::TcpStream::connect(&to).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    for proto in ["tcp", "udp"] {
        let (st, _, err) = common::run(
            &["blast", "--proto", proto, "--to", &to, "--count", "10"],
            LIMIT,
        );
        assert!(!st.success(), "{err}");
        assert!(
            err.contains(&format!("use --to iperf3://{to}")),
            "--proto {proto}: {err}"
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// The events of a --json-stream output, parsed (every line must be one).
fn events(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
fn every_test_has_a_start_event_with_its_id_and_recv_json_is_one_document_a_line() {
    let mut p = Proc::netcore(&["recv", "--listen", "127.0.0.1:0", "--json-stream"]);
    let addr = addr_in(&p.wait_line("listening on"));
    for proto in ["tcp", "udp"] {
        let out = common::run_ok(
            &[
                "blast",
                "--proto",
                proto,
                "--to",
                &addr,
                "--count",
                "20",
                "--json-stream",
            ],
            LIMIT,
        );
        let ev = events(&out);
        let start = ev.iter().find(|e| e["event"] == "start").expect("start");
        let end = ev.iter().find(|e| e["event"] == "end").expect("end");
        assert_eq!(start["kind"], proto, "{out}");
        assert!(
            start["test_id"].is_string(),
            "blast's start names the test: {out}"
        );
        assert_eq!(start["test_id"], end["test_id"], "{out}");
    }
    netcore::sys::process::kill(p.pid() as i32, libc::SIGINT).unwrap();
    let (_, out, err) = p.finish(LIMIT);
    let ev = events(&out);
    for proto in ["tcp", "udp"] {
        let start = ev
            .iter()
            .find(|e| e["event"] == "start" && e["kind"] == proto)
            .unwrap_or_else(|| panic!("recv: no {proto} start event: {out}\n{err}"));
        assert!(
            start["test_id"].is_string() && start["peer"].is_string(),
            "{start}"
        );
        let id = &start["test_id"];
        assert!(
            ev.iter()
                .any(|e| e["event"] == "end" && &e["test_id"] == id),
            "the start's id ends: {out}"
        );
    }

    // recv --json: one compact document per line (NDJSON), one per test.
    let mut p = Proc::netcore(&["recv", "--listen", "127.0.0.1:0", "--json"]);
    let addr = addr_in(&p.wait_line("listening on"));
    for proto in ["tcp", "udp"] {
        common::run_ok(
            &[
                "blast", "--proto", proto, "--to", &addr, "--count", "20", "--json",
            ],
            LIMIT,
        );
    }
    netcore::sys::process::kill(p.pid() as i32, libc::SIGINT).unwrap();
    let (_, out, _) = p.finish(LIMIT);
    let docs = events(&out);
    assert_eq!(docs.len(), 2, "{out}");
    assert!(docs.iter().all(|d| d["schema"].is_string()), "{out}");
}

/// #26.12: a pace the flows could not keep is said, as `load --rate` says it.
#[test]
fn traffic_says_when_the_pace_was_missed() {
    let (st, out, err) = common::run(
        &["traffic", "--duration", "1s", "--rate", "50Gbps", "--json"],
        LIMIT,
    );
    assert!(st.success(), "{err}");
    let r = common::json(&out);
    assert_eq!(r["interrupted"], false, "{out}");
    for flow in ["TCP", "UDP"] {
        assert!(
            err.contains(&format!("the {flow} flow received"))
                && err.contains("the pace was missed"),
            "{err}"
        );
    }
}

/// #26.9: a scrape before the first test has every family's HELP and TYPE, the series without
/// a peer at zero for each kind, and which build answers.
#[test]
fn recv_metrics_have_their_series_before_the_first_test() {
    let (p, body) = common::first_scrape(&["recv", "--listen", "127.0.0.1:0", "--json"]);
    for family in [
        "recv_tests",
        "recv_errors",
        "recv_bytes",
        "recv_one_way_latency_seconds",
    ] {
        let family = format!("netcore_{family}");
        assert!(common::declares(&body, &family), "{family}: {body}");
    }
    let samples: Vec<&str> = body.lines().filter(|l| !l.starts_with('#')).collect();
    for kind in ["udp", "tcp", "iperf3"] {
        assert!(
            samples
                .iter()
                .any(|l| l.starts_with("netcore_recv_tests_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.ends_with(" 0")),
            "{kind}: {body}"
        );
    }
    assert!(common::says_its_build(&body), "{body}");
    drop(p);
}

/// #26.11: UDP's send-path flags are refused with --proto tcp (as --window is for UDP); the
/// old binary ran a TCP test with `--gso off`.
#[test]
fn udp_only_flags_are_refused_for_tcp() {
    for flag in [
        &["--gso", "off"][..],
        &["--batch", "8"],
        &["--sndbuf", "1M"],
        &["--verify"],
    ] {
        let args = [&["blast", "--proto", "tcp", "--count", "1"][..], flag].concat();
        let (st, _, err) = common::run(&args, LIMIT);
        assert_eq!(st.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("{} applies to --proto udp", flag[0])),
            "{err}"
        );
    }
}

/// #26 habits: iperf3's short flags where they mean the same thing (-t -l -b -i -J; -c, -n,
/// -k and -w likewise), and a tip naming netcore's flag where iperf3 spells one differently.
#[test]
fn iperf3_short_flags_carry_over() {
    let (st, out, err) = common::run(
        &[
            "blast", "-t", "1s", "-l", "1000", "-b", "10Mbps", "-i", "500ms", "-J",
        ],
        LIMIT,
    );
    assert!(st.success(), "{err}");
    let r = common::json(&out);
    assert_eq!(r["len"], 1000, "{out}");
    let pacing = r["sender"]["pacing"].as_str().unwrap_or_default();
    assert!(pacing.contains("10.00 Mbit/s"), "{pacing}");
    assert!(
        r["intervals"].as_array().is_some_and(|i| i.len() >= 2),
        "{out}"
    );
    for (flag, tip) in [
        ("-Z", "--sendfile"),
        ("-p", "--to HOST:PORT"),
        ("-u", "--proto"),
    ] {
        let (st, _, err) = common::run(&["blast", flag], LIMIT);
        assert_eq!(st.code(), Some(2), "{flag}: {err}");
        let line = err.lines().find(|l| l.starts_with("tip: ")).unwrap_or("");
        assert!(line.contains(tip), "{flag}: {err}");
    }
}

/// #26: `-b 0` / `--rate 0` is unpaced, as iperf3's `-b 0` (it was a usage error, "must be
/// greater than zero"), for UDP and TCP.
#[test]
fn a_rate_of_zero_sends_unpaced() {
    let out = common::run_ok(&["blast", "--count", "2000", "-b", "0", "--json"], LIMIT);
    let r = common::json(&out);
    assert!(r["sender"]["pacing"].is_null(), "unpaced: {out}");
    assert_eq!(r["receiver"]["accounting"]["sent"], 2000, "{out}");
    let out = common::run_ok(
        &[
            "blast", "--proto", "tcp", "--size", "1MiB", "--rate", "0", "--json",
        ],
        LIMIT,
    );
    let r = common::json(&out);
    assert!(r["settings"]["rate_bps"].is_null(), "unpaced: {out}");
    // Elsewhere a rate of nothing is still refused: recv --max-rate 0 caps nothing.
    let (st, _, err) = common::run(&["recv", "--max-rate", "0"], LIMIT);
    assert_eq!(st.code(), Some(2), "{err}");
}

/// #26.11: UDP's send-path flags are refused with --proto tcp (as --window is for UDP).
#[test]
fn udp_flags_are_usage_errors_with_proto_tcp() {
    for (flag, value) in [
        ("--gso", Some("off")),
        ("--verify", None),
        ("--batch", Some("8")),
    ] {
        let mut args = vec!["blast", "--proto", "tcp", "--count", "10", flag];
        args.extend(value);
        let (st, out, err) = common::run(&args, LIMIT);
        assert_eq!(st.code(), Some(2), "{args:?}: {out}{err}");
        assert!(
            err.contains(&format!("{flag} applies to --proto udp")),
            "{args:?}: {err}"
        );
    }
}

/// #26.10: UDP `--bidir --json-stream` (it was refused: "does not cover UDP --bidir yet")
/// gives each half the events of any test: a start naming its test id (one forward, one
/// reverse), its intervals under that id, and an end with its report.
#[test]
fn udp_bidir_streams_each_half_as_a_test() {
    let out = common::run_ok(
        &[
            "blast",
            "--bidir",
            "--time",
            "1s",
            "-i",
            "250ms",
            "--rate",
            "20Mbps",
            "--json-stream",
        ],
        LIMIT,
    );
    let ev = events(&out);
    let starts: Vec<_> = ev.iter().filter(|e| e["event"] == "start").collect();
    assert_eq!(starts.len(), 2, "{out}");
    let reverse: Vec<_> = starts.iter().map(|s| &s["data"]["reverse"]).collect();
    assert_eq!(reverse, [false, true], "{out}");
    assert_ne!(starts[0]["test_id"], starts[1]["test_id"], "{out}");
    for s in &starts {
        let id = &s["test_id"];
        assert!(id.is_string() && s["kind"] == "udp", "{s}");
        assert!(
            ev.iter()
                .any(|e| e["event"] == "interval" && &e["test_id"] == id),
            "intervals of {id}: {out}"
        );
        let end = ev
            .iter()
            .find(|e| e["event"] == "end" && &e["test_id"] == id)
            .unwrap_or_else(|| panic!("no end for {id}: {out}"));
        assert_eq!(end["data"]["schema"], "netcore.udp.v4", "{end}");
        assert_eq!(&end["data"]["test_id"], id, "{end}");
    }
    assert!(
        ev.iter().all(|e| e["event"] != "error"),
        "no error events: {out}"
    );
}
