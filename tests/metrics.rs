//! `--metrics`: the OpenMetrics endpoint of a running command, scraped over HTTP, agrees with
//! the command's own report.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::proc::Proc;
use common::{addr_in, control, first_scrape, get_as, metrics_addr, run_ok};
use netcore::flow::control::Plan;
use serde_json::Value;

/// SIGINT, then the stdout of an interrupted run's exit (130).
fn interrupt(p: Proc) -> String {
    netcore::sys::process::kill(p.pid() as i32, libc::SIGINT).unwrap();
    let (st, out, err) = p.finish(Duration::from_secs(20));
    assert_eq!(st.code(), Some(130), "exit {st}: {err}");
    out
}

/// GET `path` from `addr` (closing): the head and the body.
fn get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    get_as(addr, path, "*/*")
}

/// GET /metrics as Prometheus asks for it (OpenMetrics): the head and the samples
/// (`name{labels}` -> value).
fn scrape(addr: &str) -> (String, BTreeMap<String, f64>) {
    let (head, body) = get_as(
        addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0",
    )
    .unwrap();
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

/// `netcore ARGS --metrics 127.0.0.1:0` (a command that says "listening on" on stderr): it,
/// its metrics address, its address.
fn with_metrics(args: &[&str]) -> (Proc, String, String) {
    let mut p = Proc::netcore(&[args, &["--metrics", "127.0.0.1:0"][..]].concat());
    let maddr = metrics_addr(&p.wait_line("metrics on"));
    let addr = addr_in(&p.wait_line("listening on"));
    (p, maddr, addr)
}

/// A relay to `to` with `extra` flags and `--metrics`: it, its metrics address, its address.
fn relay_with_metrics(to: &str, extra: &[&str]) -> (Proc, String, String) {
    let base = ["relay", "--listen", "127.0.0.1:0", "--to", to, "--json"];
    with_metrics(&[&base[..], extra].concat())
}

/// #26.9, as recv does (tests/first_steps.rs): `serve --metrics` and `relay --metrics` answer a
/// scrape before any request or datagram with every family's HELP and TYPE, its series at
/// zero, and which build answers.
#[test]
fn serve_and_relay_metrics_have_their_series_before_any_traffic() {
    let serve = [
        "serve",
        "--model",
        "epoll",
        "--proto",
        "http",
        "--listen",
        "127.0.0.1:0",
    ];
    let relay = ["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"];
    let cases: [(&[&str], &[&str]); 2] = [
        (
            &serve,
            &[
                "netcore_serve_requests_total{model=\"epoll\",proto=\"http\"} 0",
                "netcore_serve_errors_total{model=\"epoll\",proto=\"http\",kind=\"not_found\"} 0",
                "netcore_serve_connections_total{model=\"epoll\",proto=\"http\"} 0",
                "netcore_serve_bytes_total{model=\"epoll\",proto=\"http\",direction=\"out\"} 0",
                "netcore_serve_connections_open{model=\"epoll\",proto=\"http\"} 0",
                "netcore_serve_request_latency_seconds_count{model=\"epoll\",proto=\"http\"} 0",
            ],
        ),
        (
            &relay,
            &[
                "netcore_relay_datagrams_total{direction=\"in\"} 0",
                "netcore_relay_datagrams_total{direction=\"out\"} 0",
                "netcore_relay_bytes_total{direction=\"out\"} 0",
                "netcore_relay_impaired_datagrams_total{action=\"dropped\"} 0",
                "netcore_relay_send_errors_total 0",
                "netcore_relay_tcp_connections_total{outcome=\"proxied\"} 0",
                "netcore_relay_tcp_bytes_total{direction=\"to_server\"} 0",
            ],
        ),
    ];
    for (args, series) in cases {
        let (p, body) = first_scrape(args);
        assert!(body.ends_with("# EOF\n"), "{body}");
        for line in series {
            let family = line.split(['{', ' ']).next().unwrap();
            let family = family.strip_suffix("_total").unwrap_or(family);
            let family = family.strip_suffix("_count").unwrap_or(family);
            assert!(common::declares(&body, family), "{family}: {body}");
            assert!(body.lines().any(|l| l == *line), "{line}: {body}");
        }
        assert!(common::says_its_build(&body), "{body}");
        drop(p);
    }
}

/// The series of an exposition as written: `name{labels}` of every sample, in order.
fn series_written(body: &str) -> Vec<String> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(l.rsplit_once(' ')?.0.to_string()))
        .collect()
}

/// A relay's series come out in label order, the same at every scrape and in every process,
/// as Prometheus' own exporters write them (they came in the order of a `HashMap`, which
/// differed from one relay to the next) (#27 follow-up).
#[test]
fn relay_metrics_come_out_in_label_order_at_every_scrape() {
    let accept = "application/openmetrics-text;version=1.0.0";
    let mut scrapes = Vec::new();
    for _ in 0..2 {
        let (relay, maddr, _) = relay_with_metrics("127.0.0.1:9", &[]);
        for _ in 0..2 {
            let (_, body) = get_as(&maddr, "/metrics", accept).unwrap();
            scrapes.push(series_written(&body));
        }
        drop(relay);
    }
    let first = &scrapes[0];
    for s in &scrapes[1..] {
        assert_eq!(s, first);
    }
    let actions = "netcore_relay_impaired_datagrams_total{";
    assert_eq!(
        first.iter().filter(|s| s.starts_with(actions)).count(),
        4,
        "{first:?}"
    );
    for pair in first.windows(2) {
        let [a, b] = [&pair[0], &pair[1]].map(|s| s.split_once('{').unwrap_or((s, "")));
        assert!(a.0 != b.0 || a.1 < b.1, "{a:?} before {b:?} in {first:?}");
    }
}

/// The blast's control channel goes through the relay's TCP proxy (no `--control`), so the
/// TCP counters move too.
#[test]
fn relay_metrics_match_its_report() {
    let mut recv = Proc::netcore(&["recv", "--listen", "127.0.0.1:0", "--once", "--json"]);
    let recv_addr = addr_in(&recv.wait_line("listening on"));
    let (relay, maddr, relay_addr) = relay_with_metrics(
        &recv_addr,
        &["--loss", "5%", "--duplicate", "2%", "--seed", "7"],
    );
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

fn have_prometheus() -> bool {
    let ok = std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        eprintln!("skipped: no prometheus on this machine (apt-get install prometheus)");
    }
    ok
}

/// `promtool check metrics` passes on the exposition served at `maddr` (promtool reads the
/// classic text format, which the endpoint serves to clients that do not ask for OpenMetrics).
fn promtool_passes(maddr: &str) {
    if !have_prometheus() {
        return; // have_prometheus said it skips (promtool comes with prometheus)
    }
    let (head, body) = get(maddr, "/metrics").unwrap();
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
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
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// A free loopback TCP address (bound, then released).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A Prometheus server scraping `targets` every second; its web address once it is ready.
fn start_prometheus(dir: &std::path::Path, targets: &[&str]) -> (Proc, String) {
    let web_addr = free_addr();
    let config = dir.join("prometheus.yml");
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: netcore\n    static_configs: [{{ targets: [{}] }}]\n",
            list.join(", ")
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
    (prom, web_addr)
}

/// The value Prometheus holds for the instant query `promql`, once it equals `want` (a few
/// scrapes at most), or what it held after 20 s.
fn stored(web_addr: &str, promql: &str, want: f64) -> Option<f64> {
    let path = format!("/api/v1/query?query={}", urlencode(promql));
    let t = std::time::Instant::now();
    loop {
        let (_, body) = get(web_addr, &path).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let got = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok());
        if got == Some(want) || t.elapsed() > Duration::from_secs(20) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A real Prometheus (Debian's package) scrapes a running relay; what it stored equals the
/// relay's own report, and `promtool check metrics` passes on the exposition.
#[test]
fn prometheus_scrapes_the_relay() {
    if !have_prometheus() {
        return;
    }
    let dir = common::scratch_dir("prometheus");
    let (relay, maddr, relay_addr) = relay_with_metrics("127.0.0.1:9", &[]);
    promtool_passes(&maddr);
    let (prom, web_addr) = start_prometheus(&dir, &[&maddr]);

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
    let got = stored(
        &web_addr,
        "netcore_relay_datagrams_total{direction=\"in\"}",
        ours,
    );
    let report: Value = serde_json::from_str(&interrupt(relay)).unwrap();
    assert_eq!(
        got,
        Some(ours),
        "Prometheus stored what the endpoint served"
    );
    assert_eq!(ours, report["datagrams_in"].as_f64().unwrap());
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sum over every series of `family` in a scrape.
/// `recv --listen 127.0.0.1:0 --metrics 127.0.0.1:0 EXTRA`: the process, the metrics address
/// and the receiver's.
fn recv_with_metrics(extra: &[&str]) -> (Proc, String, String) {
    with_metrics(&[&["recv", "--listen", "127.0.0.1:0"][..], extra].concat())
}

fn total(m: &BTreeMap<String, f64>, family: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.split('{').next() == Some(family))
        .map(|(_, v)| v)
        .sum()
}

/// `recv --metrics`: after UDP tests (one through a lossy relay) and a TCP test, the
/// endpoint's counters equal the sums of recv's own reports, exactly; a real Prometheus
/// stores the same; `promtool check metrics` passes.
#[test]
fn recv_metrics_equal_its_reports_and_prometheus_stores_them() {
    let (recv, maddr, recv_addr) = recv_with_metrics(&["--json-stream"]);
    let prom = have_prometheus().then(|| {
        let dir = common::scratch_dir("prometheus-recv");
        let (p, web) = start_prometheus(&dir, &[&maddr]);
        (p, web, dir)
    });
    let blast = |extra: &[&str]| {
        let mut args = vec![
            "--count", "6000", "--rate", "30kpps", "--len", "300", "--json",
        ];
        args.extend_from_slice(extra);
        run_ok(&[&["blast"][..], &args].concat(), Duration::from_secs(60));
    };
    blast(&["--to", &recv_addr]);
    blast(&["--to", &recv_addr, "-P", "2"]);
    let mut relay = Proc::netcore(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--to",
        &recv_addr,
        "--loss",
        "4%",
        "--seed",
        "11",
        "--json",
    ]);
    let relay_addr = addr_in(&relay.wait_line("listening on"));
    blast(&["--to", &relay_addr, "--control", &recv_addr]);
    drop(relay);
    run_ok(
        &[
            "blast", "--to", &recv_addr, "--proto", "tcp", "--size", "3MB", "--json",
        ],
        Duration::from_secs(60),
    );
    // A sender has its report a moment before recv has ended the test: all four ended.
    let m = scrape_until(&maddr, |m| total(m, "netcore_recv_tests_total") == 4.0);
    let families = [
        "netcore_recv_tests_total",
        "netcore_recv_datagrams_total",
        "netcore_recv_sent_datagrams_total",
        "netcore_recv_lost_datagrams_total",
        "netcore_recv_reordered_datagrams_total",
        "netcore_recv_duplicate_datagrams_total",
        "netcore_recv_bytes_total",
        "netcore_recv_one_way_latency_seconds_count",
    ];
    if let Some((p, web, dir)) = prom {
        // While recv runs (a target that goes away makes its series stale).
        for family in families {
            let want = total(&m, family);
            assert_eq!(
                stored(&web, &format!("sum({family})"), want),
                Some(want),
                "Prometheus stored {family}"
            );
        }
        // The queries of docs/GUIDE.md ("Running netcore on a fleet") run.
        for q in [
            "sum by (instance, peer) (increase(netcore_recv_lost_datagrams_total[1h])) / sum by (instance, peer) (increase(netcore_recv_sent_datagrams_total[1h]))",
            "histogram_quantile(0.99, sum by (le) (rate(netcore_recv_one_way_latency_seconds_bucket[5m])))",
            "sum by (instance) (rate(netcore_recv_bytes_total[1m])) * 8",
            "increase(netcore_recv_tests_total{outcome=\"interrupted\"}[1h]) + increase(netcore_recv_errors_total[1h])",
        ] {
            let (_, body) = get(&web, &format!("/api/v1/query?query={}", urlencode(q))).unwrap();
            assert!(body.contains("\"status\":\"success\""), "{q}: {body}");
        }
        drop(p);
        let _ = std::fs::remove_dir_all(&dir);
    }
    promtool_passes(&maddr);
    let (st, out, err) = {
        netcore::sys::process::kill(recv.pid() as i32, libc::SIGINT).unwrap();
        recv.finish(Duration::from_secs(20))
    };
    assert_eq!(st.code(), Some(130), "{err}");
    let ends: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["event"] == "end")
        .collect();
    assert_eq!(ends.len(), 4, "{out}");
    let udp: Vec<&Value> = ends
        .iter()
        .filter(|e| e["kind"] == "udp")
        .map(|e| &e["data"])
        .collect();
    let sum = |f: &dyn Fn(&Value) -> f64| udp.iter().map(|r| f(r)).sum::<f64>();
    let acc = |k: &'static str| move |r: &Value| r["receiver"]["accounting"][k].as_f64().unwrap();
    let tcp_read: f64 = ends
        .iter()
        .filter(|e| e["kind"] == "tcp")
        .flat_map(|e| e["data"]["streams"].as_array().unwrap().clone())
        .map(|s| s["read"].as_f64().unwrap())
        .sum();
    let expect = [
        ("netcore_recv_tests_total", 4.0),
        ("netcore_recv_datagrams_total", sum(&acc("unique"))),
        ("netcore_recv_sent_datagrams_total", sum(&acc("sent"))),
        ("netcore_recv_lost_datagrams_total", sum(&acc("lost"))),
        (
            "netcore_recv_reordered_datagrams_total",
            sum(&acc("reordered")),
        ),
        (
            "netcore_recv_duplicate_datagrams_total",
            sum(&acc("duplicate")),
        ),
        (
            "netcore_recv_bytes_total",
            sum(&|r: &Value| r["receiver"]["bytes"].as_f64().unwrap()) + tcp_read,
        ),
        (
            "netcore_recv_one_way_latency_seconds_count",
            sum(&|r: &Value| r["receiver"]["latency_us"]["count"].as_f64().unwrap()),
        ),
    ];
    assert!(sum(&acc("lost")) > 0.0, "the relay dropped some: {out}");
    assert_eq!(sum(&acc("unique")), 18000.0 - sum(&acc("lost")));
    for (family, want) in expect {
        assert_eq!(total(&m, family), want, "{family}: {m:?}");
    }
    assert_eq!(expect.map(|e| e.0), families);
}

fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `serve --metrics` in the fork model (counters shared across processes): the endpoint's
/// counters equal the totals the server prints at exit, errors are counted by kind, a real
/// Prometheus stores the same, and `promtool check metrics` passes.
#[test]
fn serve_metrics_equal_its_totals_and_prometheus_stores_them() {
    let listen = free_addr();
    let mut serve = Proc::netcore(&[
        "serve",
        "--model",
        "fork",
        "--proto",
        "http",
        "--listen",
        &listen,
        "--metrics",
        "127.0.0.1:0",
    ]);
    let maddr = metrics_addr(&serve.wait_line("metrics on"));
    let prom = have_prometheus().then(|| {
        let dir = common::scratch_dir("prometheus-serve");
        let (p, web) = start_prometheus(&dir, &[&maddr]);
        (p, web, dir)
    });
    // Wait for the server to listen.
    let t = std::time::Instant::now();
    while TcpStream::connect(&listen).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    run_ok(
        &[
            "load",
            "--connect",
            &listen,
            "--proto",
            "http",
            "--clients",
            "3",
            "--tasks",
            "20",
            "--json",
        ],
        Duration::from_secs(60),
    );
    let (head, _) = get(&listen, "/no/such/route").unwrap();
    assert!(head.contains(" 404 "), "{head}");
    // The fork model counts a connection's requests when its child has answered them, and
    // times them when its answers are written: every connection closed, each request timed.
    let l = "{model=\"fork\",proto=\"http\"}";
    let m = scrape_until(&maddr, |m| {
        let g = |k: &str| m.get(&format!("{k}{l}")).copied();
        g("netcore_serve_connections_open") == Some(0.0)
            && g("netcore_serve_request_latency_seconds_count") == g("netcore_serve_requests_total")
    });
    let requests = m[&format!("netcore_serve_requests_total{l}")];
    assert!(requests >= 61.0, "{m:?}");
    assert_eq!(
        m[&format!("netcore_serve_request_latency_seconds_count{l}")],
        requests,
        "{m:?}"
    );
    assert_eq!(
        m["netcore_serve_errors_total{model=\"fork\",proto=\"http\",kind=\"not_found\"}"], 1.0,
        "{m:?}"
    );
    promtool_passes(&maddr);
    if let Some((p, web, dir)) = prom {
        for q in [
            "sum(netcore_serve_requests_total)",
            "sum(netcore_serve_request_latency_seconds_count)",
            "sum(netcore_serve_request_latency_seconds_bucket{le=\"+Inf\"})",
        ] {
            assert_eq!(stored(&web, q, requests), Some(requests), "{q}");
        }
        // docs/GUIDE.md's query of serve's request latency runs.
        let q = "histogram_quantile(0.99, sum by (instance, le) (rate(netcore_serve_request_latency_seconds_bucket[5m])))";
        let (_, body) = get(&web, &format!("/api/v1/query?query={}", urlencode(q))).unwrap();
        assert!(body.contains("\"status\":\"success\""), "{q}: {body}");
        drop(p);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let out = interrupt(serve);
    let totals = out
        .lines()
        .find_map(|l| l.strip_prefix("totals: "))
        .unwrap_or_else(|| panic!("no totals in {out}"));
    let field = |k: &str| -> f64 {
        totals
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {totals}"))
    };
    assert_eq!(field("requests"), requests, "{totals}");
    assert_eq!(field("errors"), total(&m, "netcore_serve_errors_total"));
    assert_eq!(
        field("connections"),
        m[&format!("netcore_serve_connections_total{l}")]
    );
    assert_eq!(
        field("bytes_in"),
        m["netcore_serve_bytes_total{model=\"fork\",proto=\"http\",direction=\"in\"}"]
    );
}

/// A scrape once `done` holds for it (polled, at most 20 s; the last one otherwise): the
/// answers a server has just written are counted a moment after the client reads them.
fn scrape_until(
    maddr: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let t = std::time::Instant::now();
    loop {
        let (_, m) = scrape(maddr);
        if done(&m) || t.elapsed() > Duration::from_secs(20) {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `serve --metrics` times every request in every model: after a connection's requests
/// (one a `SLEEP 30` and one held behind it), the latency histogram counts each request
/// served once, and the two that waited for the sleep are in buckets above 25 ms (a lower
/// bound the server's sleep guarantees, not a timing claim).
#[test]
fn serve_times_every_request_in_every_model() {
    for model in ["iterative", "fork", "thread", "pool", "epoll", "uring"] {
        let listen = free_addr();
        let mut serve = Proc::netcore(&[
            "serve",
            "--model",
            model,
            "--listen",
            &listen,
            "--metrics",
            "127.0.0.1:0",
        ]);
        let maddr = metrics_addr(&serve.wait_line("metrics on"));
        let t = std::time::Instant::now();
        let mut s = loop {
            match TcpStream::connect(&listen) {
                Ok(s) => break s,
                Err(e) => assert!(t.elapsed() < Duration::from_secs(20), "{model}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"ECHO a\nSLEEP 30\nECHO b\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.iter().filter(|&&b| b == b'\n').count() < 3 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "{model}: closed after {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"a\nOK slept 30ms\nb\n", "{model}");
        s.write_all(b"BYE\n").unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "Goodbye!\n", "{model}");
        let l = format!("{{model=\"{model}\",proto=\"task\"}}");
        let count = format!("netcore_serve_request_latency_seconds_count{l}");
        let m = scrape_until(&maddr, |m| m.get(&count) == Some(&4.0));
        assert_eq!(
            m[&format!("netcore_serve_requests_total{l}")],
            4.0,
            "{model}: {m:?}"
        );
        assert_eq!(m.get(&count), Some(&4.0), "{model}: {m:?}");
        let le = |b: &str| {
            m[&format!(
                "netcore_serve_request_latency_seconds_bucket{{le=\"{b}\",model=\"{model}\",proto=\"task\"}}"
            )]
        };
        assert_eq!(le("+Inf"), 4.0, "{model}: {m:?}");
        assert!(
            4.0 - le("0.025") >= 2.0,
            "{model}: SLEEP 30 and the ECHO behind it: {m:?}"
        );
        let sum = m[&format!("netcore_serve_request_latency_seconds_sum{l}")];
        assert!(sum >= 0.06, "{model}: {sum}");
        drop(serve);
    }
}

/// Two UDP tests at once from two hosts: while both run, each one's live datagram counter
/// goes to its own peer's series (not all to the test that started last), and once they end
/// each series equals its test's report.
#[test]
fn live_counters_of_tests_at_once_go_to_their_own_peers() {
    let (recv, maddr, addr) = recv_with_metrics(&["--interval", "100ms", "--json"]);
    let hosts: [std::net::IpAddr; 2] = ["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
    let (ids, counts) = ([0xa1u64, 0xb2], [300u64, 500]);
    // Both past Ready before either sends: the second started last.
    let mut conns: Vec<_> = (0..2)
        .map(|i| control::held_test(&addr, ids[i], 100, Plan::Count(counts[i]), Some(hosts[i])))
        .collect();
    for i in 0..2 {
        let u = control::data_socket(&addr, Some(hosts[i]));
        control::send_datagrams(&u, ids[i], 100, 0..counts[i]);
    }
    let series =
        |h: &std::net::IpAddr| format!("netcore_recv_datagrams_total{{kind=\"udp\",peer=\"{h}\"}}");
    let live = scrape_until(&maddr, |m| {
        hosts
            .iter()
            .all(|h| m.get(&series(h)).is_some_and(|&v| v > 0.0))
    });
    for (i, h) in hosts.iter().enumerate() {
        let v = live.get(&series(h)).copied().unwrap_or(0.0);
        assert!(
            v > 0.0 && v <= counts[i] as f64,
            "{h} while running: {live:?}"
        );
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let r = control::done_and_report(c, counts[i], 100, 1_000_000_000);
        let m = scrape_until(&maddr, |m| {
            m.get(&series(&hosts[i])) == Some(&(r.accounting.unique as f64))
        });
        assert_eq!(m[&series(&hosts[i])], r.accounting.unique as f64, "{m:?}");
    }
    drop(recv);
}

/// Every test is labelled with its sender's address: TCP tests and reverse (`-R`) ones too,
/// not `peer="unknown"`.
#[test]
fn recv_labels_tcp_and_reverse_tests_with_their_peer() {
    let (recv, maddr, addr) = recv_with_metrics(&["--json"]);
    for extra in [
        &["--proto", "tcp", "--size", "1MB"][..],
        &["--proto", "tcp", "--size", "1MB", "-R"],
        &["--count", "500", "-R"],
        &["--count", "500"],
    ] {
        let base = ["blast", "--to", &addr, "--bind", "127.0.0.2", "--json"];
        run_ok(&[&base[..], extra].concat(), Duration::from_secs(60));
    }
    let m = scrape_until(&maddr, |m| total(m, "netcore_recv_tests_total") == 4.0);
    assert!(!m.keys().any(|k| k.contains("unknown")), "{m:?}");
    for kind in ["tcp", "udp"] {
        assert_eq!(
            m[&format!("netcore_recv_tests_total{{kind=\"{kind}\",outcome=\"ok\"}}")],
            2.0,
            "{m:?}"
        );
        let bytes = format!("netcore_recv_bytes_total{{kind=\"{kind}\",peer=\"127.0.0.2\"}}");
        assert!(m.get(&bytes).is_some_and(|&b| b > 0.0), "{bytes}: {m:?}");
    }
    drop(recv);
}
