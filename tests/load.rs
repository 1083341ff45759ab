//! `netcore load` and `netcore compare` end to end: the real binary against real `netcore serve`
//! processes (and a few hand-made fault servers) on loopback. Every child is killed by a guard;
//! every wait is bounded. No assertion depends on timing.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{scratch_dir, Serve};

const T: Duration = Duration::from_secs(60);

/// Runs `netcore ARGS` with a time limit; kills it and fails the test if it overruns.
fn netcore(args: &[&str]) -> Output {
    let mut child = common::spawn(args, Stdio::piped());
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let ho = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let he = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > T {
            let _ = child.kill();
            let _ = child.wait();
            panic!("netcore {args:?} did not finish within {T:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: ho.join().unwrap(),
        stderr: he.join().unwrap(),
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            text(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// `netcore load --connect ADDR ARGS`.
fn load(addr: &str, args: &[&str]) -> Output {
    netcore(&[&["load", "--connect", addr][..], args].concat())
}

/// The first run of the first sweep point of a `load --json` report.
fn first_run(o: &Output) -> serde_json::Value {
    json(o)["points"][0]["runs"][0].clone()
}

fn errors_total(e: &serde_json::Value) -> u64 {
    e.as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

#[test]
fn sweep_against_serve_as_table_json_and_csv() {
    let s = Serve::start(&["--model", "epoll"], T);
    let addr = s.addr.to_string();
    let base = [
        "--clients",
        "2,3",
        "--tasks",
        "4",
        "--task",
        "ECHO hi",
        "--runs",
        "2",
    ];

    let o = load(&addr, &base);
    assert!(o.status.success(), "{o:?}");
    let t = text(&o);
    assert!(
        t.contains("clients") && t.contains("tasks/s") && t.contains("p99"),
        "{t}"
    );
    assert!(t.lines().any(|l| l.starts_with("2 ")), "{t}");
    assert!(t.lines().any(|l| l.starts_with("3 ")), "{t}");

    let o = load(&addr, &[&base[..], &["--json"]].concat());
    assert!(o.status.success(), "{o:?}");
    let j = json(&o);
    assert_eq!(j["schema"], "netcore.load.v1");
    assert_eq!(j["setup"]["proto"], "task");
    let points = j["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for p in points {
        let clients = p["clients"].as_u64().unwrap();
        let runs = p["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        for r in runs {
            assert_eq!(r["tasks"].as_u64().unwrap(), clients * 4, "{r}");
            assert_eq!(r["connected"].as_u64().unwrap(), clients);
            assert_eq!(errors_total(&r["errors"]), 0, "{r}");
            assert_eq!(r["fairness"]["min"], 4);
            assert_eq!(r["fairness"]["max"], 4);
            assert_eq!(r["latency_us"]["count"].as_u64().unwrap(), clients * 4);
            assert!(r["latency_us"]["p50"].as_f64().unwrap() > 0.0);
            assert!(r["latency_us"]["p50"].as_f64() <= r["latency_us"]["max"].as_f64());
            assert_eq!(r["connect_us"]["count"].as_u64().unwrap(), clients);
        }
        assert_eq!(p["median"]["runs"], 2);
        assert_eq!(p["median"]["tasks"].as_f64().unwrap(), (clients * 4) as f64);
    }

    let o = load(&addr, &[&base[..], &["--csv"]].concat());
    assert!(o.status.success(), "{o:?}");
    let t = text(&o);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("clients,run,wall_s,tasks,"), "{t}");
    // 2 points x (2 runs + median)
    assert_eq!(lines.len(), 1 + 2 * 3, "{t}");
    assert!(lines.iter().any(|l| l.starts_with("3,median,")));
}

#[test]
fn mix_think_and_open_loop_rate() {
    let s = Serve::start(&["--model", "thread"], T);
    let addr = s.addr.to_string();
    let dir = scratch_dir("load-test");
    let mix = dir.join("mix.txt");
    std::fs::write(
        &mix,
        "# a mix\nECHO a\n2* SUM 1 2 3\nUPPER xyz\nSTATS\nSLEEP 1\n",
    )
    .unwrap();
    let m = mix.to_str().unwrap();
    let o = load(
        &addr,
        &[
            "--clients",
            "3",
            "--tasks",
            "6",
            "--mix",
            m,
            "--think",
            "5ms",
            "--json",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let r = &first_run(&o);
    assert_eq!(r["tasks"], 18);
    assert_eq!(errors_total(&r["errors"]), 0, "{r}");

    // Open loop; busy-polling (--spin) changes how the threads wait, not what they send or count.
    for spin in [false, true] {
        let mut args = vec!["--clients", "2", "--tasks", "10", "--rate", "400", "--json"];
        if spin {
            args.push("--spin");
        }
        let o = load(&addr, &args);
        assert!(o.status.success(), "{o:?}");
        let j = json(&o);
        assert_eq!(j["setup"]["rate"], 400.0);
        assert_eq!(j["setup"]["spin"], spin);
        let r = &j["points"][0]["runs"][0];
        assert_eq!(r["tasks"], 20);
        assert_eq!(errors_total(&r["errors"]), 0, "{r}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn echo_protocol_tasks_and_duration() {
    let s = Serve::start(&["--model", "epoll", "--proto", "echo"], T);
    let addr = s.addr.to_string();
    let o = load(
        &addr,
        &[
            "--proto",
            "echo",
            "--size",
            "64",
            "--clients",
            "1,8",
            "--tasks",
            "200",
            "--json",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let j = json(&o);
    assert_eq!(j["setup"]["proto"], "echo");
    for p in j["points"].as_array().unwrap() {
        let r = &p["runs"][0];
        assert_eq!(
            r["tasks"].as_u64().unwrap(),
            p["clients"].as_u64().unwrap() * 200
        );
        assert_eq!(errors_total(&r["errors"]), 0, "{r}");
    }
    // Pinned: one reactor thread per listed CPU, clients split between them, results merged.
    let cpus = if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        "0,1"
    } else {
        "0"
    };
    let o = load(
        &addr,
        &[
            "--proto",
            "echo",
            "--clients",
            "5",
            "--tasks",
            "50",
            "--cpus",
            cpus,
            "--json",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let j = json(&o);
    assert_eq!(
        j["setup"]["threads"].as_u64().unwrap() as usize,
        cpus.split(',').count()
    );
    let r = &j["points"][0]["runs"][0];
    assert_eq!(r["tasks"], 250, "{r}");
    assert_eq!(r["fairness"]["min"], 50);
    // Duration mode with a warm-up; odd payload sizes (shorter than the 8-byte header, and
    // several reads' worth).
    for size in ["5", "100000"] {
        let o = load(
            &addr,
            &[
                "--proto",
                "echo",
                "--size",
                size,
                "--clients",
                "4",
                "--duration",
                "300ms",
                "--warmup",
                "100ms",
                "--json",
            ],
        );
        assert!(o.status.success(), "{o:?}");
        let r = &first_run(&o);
        assert!(r["tasks"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(errors_total(&r["errors"]), 0, "{r}");
    }
}

#[test]
fn closed_port_reports_refused_and_fails() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let o = load(&addr, &["--clients", "3", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let r = &first_run(&o);
    assert_eq!(r["errors"]["refused"], 3, "{r}");
    assert_eq!(r["failed_clients"], 3);
    assert_eq!(r["tasks"], 0);
    // The table says so too.
    let o = load(&addr, &["--clients", "2"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).contains("refused=2"), "{}", text(&o));
}

#[test]
fn silent_server_gives_timeouts_not_a_hang() {
    // Accepts (through the kernel's backlog) but never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let o = load(
        &addr,
        &[
            "--clients",
            "2",
            "--tasks",
            "3",
            "--timeout",
            "500ms",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let r = &first_run(&o);
    assert_eq!(r["errors"]["timeout"], 2, "{r}");
    assert_eq!(r["connected"], 2);
    assert_eq!(r["tasks"], 0);
    drop(l);
}

#[test]
fn wrong_and_err_replies_are_counted() {
    // A server answering every line with "ERR nope", then a wrong line.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        use std::io::Write;
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        for i in 0..2 {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let reply: &[u8] = if i == 0 { b"ERR nope\n" } else { b"hello?\n" };
            w.write_all(reply).unwrap();
        }
    });
    let o = load(&addr, &["--clients", "1", "--tasks", "2", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let r = &first_run(&o);
    assert_eq!(r["errors"]["err_reply"], 1, "{r}");
    assert_eq!(r["errors"]["bad_reply"], 1, "{r}");
    assert_eq!(r["tasks"], 0);
    h.join().unwrap();
}

#[test]
fn compare_two_models_table_json_and_svg() {
    let dir = scratch_dir("compare-test");
    let svg = dir.join("compare.svg");
    let base = [
        "compare",
        "--models",
        "thread,epoll",
        "--clients",
        "2,4",
        "--runs",
        "1",
        "--task",
        "ECHO hi",
        "--tasks",
        "3",
    ];
    let o = netcore(&[&base[..], &["--plot", svg.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{o:?}");
    let t = text(&o);
    let header = t
        .lines()
        .find(|l| l.starts_with("clients"))
        .expect("table header");
    assert!(header.contains("thread") && header.contains("epoll"), "{t}");
    assert!(t.lines().any(|l| l.starts_with("2 ")) && t.lines().any(|l| l.starts_with("4 ")));

    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(
        s.starts_with("<svg") && s.trim_end().ends_with("</svg>"),
        "{s}"
    );
    assert!(s.contains("thread") && s.contains("epoll") && s.contains("clients"));
    // Every element is closed: as many opening tags as closing ones (self-closing counted).
    let opens = s.matches('<').count();
    let closes = s.matches("</").count() + s.matches("/>").count();
    assert_eq!(opens, 2 * s.matches("</").count() + s.matches("/>").count());
    assert!(closes > 10);

    let o = netcore(&[&base[..], &["--json"]].concat());
    assert!(o.status.success(), "{o:?}");
    let j = json(&o);
    assert_eq!(j["schema"], "netcore.compare.v1");
    let models = j["models"].as_array().unwrap();
    let names: Vec<&str> = models
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["thread", "epoll"]);
    for m in models {
        for p in m["points"].as_array().unwrap() {
            assert_eq!(p["status"], "ok", "{p}");
            let r = &p["result"]["runs"][0];
            assert_eq!(
                r["tasks"].as_u64().unwrap(),
                p["clients"].as_u64().unwrap() * 3
            );
            assert_eq!(errors_total(&r["errors"]), 0, "{r}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compare_skips_points_over_budget() {
    // 2 clients x 1 task of 300 ms on the iterative server: ~0.6 s per run; the next point
    // (200 clients, estimated ~60 s) does not fit a 5 s budget and is skipped, not run.
    let o = netcore(&[
        "compare",
        "--models",
        "iterative",
        "--clients",
        "2,200",
        "--runs",
        "1",
        "--task",
        "SLEEP 300",
        "--tasks",
        "1",
        "--max-time",
        "5s",
        "--json",
    ]);
    assert!(o.status.success(), "{o:?}");
    let j = json(&o);
    let pts = j["models"][0]["points"].as_array().unwrap();
    assert_eq!(pts[0]["status"], "ok");
    assert_eq!(pts[1]["status"], "skipped");
    assert!(pts[1]["reason"].as_str().unwrap().contains("budget"));
}

#[test]
fn bad_flags_are_usage_errors() {
    // Each after `load --connect 127.0.0.1:1`.
    let load_flags: &[&[&str]] = &[
        &["--clients", "0"],
        &["--clients", "10..5"],
        &["--runs", "0"],
        &["--plot", "/nonexistent/x.svg"],
        &["--task", "FROB"],
        &["--task", "BYE"],
        &["--proto", "echo", "--task", "ECHO x"],
        &["--size", "64"],
        &["--rate", "0"],
        &["--think", "1s", "--rate", "10"],
        &["--warmup", "1s"],
        &["--mix", "/nonexistent/mix"],
    ];
    let others: &[&[&str]] = &[
        &["load", "--connect", "nowhere"],
        // A URL as wrk takes it, but only plain http://, and it is HTTP.
        &["load", "https://127.0.0.1:1/"],
        &["load", "127.0.0.1:1"],
        &["load", "http://127.0.0.1:1/", "--proto", "echo"],
        &["load", "http://127.0.0.1:1/", "--connect", "127.0.0.1:1"],
        &["load", "http://127.0.0.1:1/", "-t", "2", "--cpus", "0"],
        &["load", "http://127.0.0.1:1/", "--mix", "/nonexistent/mix"],
        &["load"],
        &["compare", "--models", "nginx"],
        &["compare", "--clients", "0"],
        &["compare", "--plot", "/nonexistent/x.svg"],
    ];
    let cases: Vec<Vec<&str>> = load_flags
        .iter()
        .map(|f| [&["load", "--connect", "127.0.0.1:1"][..], f].concat())
        .chain(others.iter().map(|a| a.to_vec()))
        .collect();
    for args in &cases {
        let o = netcore(args);
        let err = String::from_utf8_lossy(&o.stderr);
        // Exit status 2, the error on the first line; clap's own errors go on with its usage.
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("netcore: error: "), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?} printed a report");
    }
}

/// `load --json ARGS` against a fresh `serve --model MODEL`.
fn load_against(model: &str, args: &[&str]) -> Output {
    let server = Serve::start(&["--model", model], Duration::from_secs(20));
    let addr = server.addr.to_string();
    netcore(&[&["load", "--connect", &addr, "--json"][..], args].concat())
}

#[test]
fn open_loop_behind_its_rate_says_so() {
    // 10 clients pipelining SLEEP 100 at 20,000/s in total: each connection's replies come
    // back in order, 10 per second, so the in-flight cap stops most sends.
    let o = load_against(
        "epoll",
        &[
            "--clients",
            "10",
            "--rate",
            "20000",
            "--duration",
            "1s",
            "--task",
            "SLEEP 100",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let j = json(&o);
    let ol = &j["points"][0]["median"]["open_loop"];
    let (sched, sent, missed) = (
        ol["scheduled"].as_u64().unwrap(),
        ol["sent"].as_u64().unwrap(),
        ol["missed"].as_u64().unwrap(),
    );
    assert_eq!(sched, sent + missed, "{ol}");
    assert!(missed > sched / 10, "{ol}");
    assert!(err.contains("fell behind the open-loop rate"), "{err}");
}

#[test]
fn a_starved_client_is_an_error_and_its_wait_is_counted() {
    // The iterative server serves one connection until it closes: in duration mode the other
    // clients wait the whole window.
    let o = load_against(
        "iterative",
        &["--clients", "3", "--duration", "1s", "--task", "ECHO hi"],
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let j = json(&o);
    let m = &j["points"][0]["median"];
    assert_eq!(m["errors"]["starved"], 2, "{m}");
    assert_eq!(m["fairness"]["min"], 0, "{m}");
    assert!(m["unanswered"].as_u64().unwrap() >= 2, "{m}");
}
