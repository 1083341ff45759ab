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

/// GET /metrics: the head and the samples (`name{labels}` -> value).
fn scrape(addr: &str) -> (String, BTreeMap<String, f64>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    (head.to_string(), samples)
}

fn metrics_addr(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

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
            "--control",
            &recv_addr,
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
