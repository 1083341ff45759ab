//! `--metrics`: the OpenMetrics endpoint of a running command, scraped over HTTP, agrees with
//! the command's own report.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::proc::Proc;
use common::{addr_in, run_ok};
use serde_json::Value;

/// SIGINT, then the stdout of a clean exit.
fn interrupt(p: Proc) -> String {
    netcore::sys::process::kill(p.pid() as i32, libc::SIGINT).unwrap();
    let (st, out, err) = p.finish(Duration::from_secs(20));
    assert!(st.success(), "exit {st}: {err}");
    out
}

/// GET `path` from `addr` (closing): the head and the body.
fn get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_string(), body.to_string()))
}

/// GET /metrics: the head and the samples (`name{labels}` -> value).
fn scrape(addr: &str) -> (String, BTreeMap<String, f64>) {
    let (head, body) = get(addr, "/metrics").unwrap();
    assert!(body.ends_with("# EOF\n"), "{body}");
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    (head, samples)
}

fn metrics_addr(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

/// The blast's control channel goes through the relay's TCP proxy (no `--control`), so the
/// TCP counters move too.
#[test]
fn relay_metrics_match_its_report() {
    let mut recv = Proc::netcore(&["recv", "--listen", "127.0.0.1:0", "--once", "--json"]);
    let recv_addr = addr_in(&recv.wait_line("listening on"));
    let mut relay = Proc::netcore(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--to",
        &recv_addr,
        "--loss",
        "5%",
        "--duplicate",
        "2%",
        "--seed",
        "7",
        "--metrics",
        "127.0.0.1:0",
        "--json",
    ]);
    let maddr = metrics_addr(&relay.wait_line("metrics on"));
    let relay_addr = addr_in(&relay.wait_line("listening on"));
    run_ok(
        &[
            "blast",
            "--to",
            &relay_addr,
            "--count",
            "20000",
            "--rate",
            "40kpps",
            "--len",
            "200",
            "--json",
        ],
        Duration::from_secs(60),
    );
    // The relay brings its counters up to date every 100 ms.
    std::thread::sleep(Duration::from_millis(600));
    let (head, m) = scrape(&maddr);
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    let report: Value = serde_json::from_str(&interrupt(relay)).unwrap();
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in {m:?}"))
    };
    assert_eq!(
        get("netcore_relay_datagrams_total{direction=\"in\"}"),
        report["datagrams_in"].as_f64().unwrap()
    );
    assert_eq!(
        get("netcore_relay_datagrams_total{direction=\"out\"}"),
        report["forwarded"].as_f64().unwrap()
    );
    assert_eq!(
        get("netcore_relay_impaired_datagrams_total{action=\"dropped\"}"),
        report["impairments"]["dropped"].as_f64().unwrap()
    );
    assert!(get("netcore_relay_impaired_datagrams_total{action=\"dropped\"}") > 0.0);
    let tcp = &report["tcp"];
    assert_eq!(tcp["connections"], 1, "{tcp}");
    assert_eq!(
        get("netcore_relay_tcp_connections_total{outcome=\"proxied\"}"),
        1.0
    );
    // A count that never moved is not exposed.
    let refused = m.get("netcore_relay_tcp_connections_total{outcome=\"refused\"}");
    assert!(refused.is_none_or(|v| *v == 0.0), "{refused:?}");
    for (label, key) in [
        ("to_server", "bytes_to_server"),
        ("to_client", "bytes_to_client"),
    ] {
        let v = get(&format!(
            "netcore_relay_tcp_bytes_total{{direction=\"{label}\"}}"
        ));
        assert_eq!(v, tcp[key].as_f64().unwrap(), "{label}");
        assert!(v > 0.0, "{label}");
    }
    drop(recv);
}

#[test]
fn a_bad_metrics_address_is_a_one_line_error() {
    let (st, _, err) = common::run(
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--metrics",
            "nope",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("--metrics") && err.lines().count() == 1,
        "{err}"
    );
}

/// A real Prometheus (Debian's package) scrapes a running relay; what it stored equals the
/// relay's own report, and `promtool check metrics` passes on the exposition.
#[test]
fn prometheus_scrapes_the_relay() {
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no prometheus on this machine (apt-get install prometheus)");
        return;
    }
    let dir = common::scratch_dir("prometheus");
    let mut relay = Proc::netcore(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--to",
        "127.0.0.1:9",
        "--metrics",
        "127.0.0.1:0",
        "--json",
    ]);
    let maddr = metrics_addr(&relay.wait_line("metrics on"));
    let relay_addr = addr_in(&relay.wait_line("listening on"));

    // promtool reads the exposition as Prometheus would.
    let (_, body) = get(&maddr, "/metrics").unwrap();
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool comes with prometheus");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web_addr = web.local_addr().unwrap().to_string();
    drop(web);
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: relay\n    static_configs: [{{ targets: [\"{maddr}\"] }}]\n"
        ),
    )
    .unwrap();
    let prom = Proc::spawn({
        let mut c = std::process::Command::new("prometheus");
        c.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web_addr}"));
        c
    });
    // Prometheus logs on stderr; it is ready when its HTTP API answers.
    let ready = |a: &str| get(a, "/-/ready").is_ok_and(|(h, _)| h.contains(" 200 "));
    let t = std::time::Instant::now();
    while !ready(&web_addr) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "prometheus did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Traffic through the relay to a port nobody serves (the relay forwards regardless).
    for _ in 0..5 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..200u32 {
            s.send_to(&i.to_le_bytes(), &relay_addr).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (_, m) = scrape(&maddr);
    let ours = m["netcore_relay_datagrams_total{direction=\"in\"}"];
    assert!(ours > 0.0, "{m:?}");

    // What Prometheus stored catches up with the endpoint within a few scrapes.
    let query = "/api/v1/query?query=netcore_relay_datagrams_total%7Bdirection%3D%22in%22%7D";
    let t = std::time::Instant::now();
    let stored = loop {
        let (_, body) = get(&web_addr, query).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let got = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok());
        if got == Some(ours) || t.elapsed() > Duration::from_secs(20) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let report: Value = serde_json::from_str(&interrupt(relay)).unwrap();
    assert_eq!(
        stored,
        Some(ours),
        "Prometheus stored what the endpoint served"
    );
    assert_eq!(ours, report["datagrams_in"].as_f64().unwrap());
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}
