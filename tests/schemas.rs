//! The JSON Schemas shipped in docs/schemas/ are the ones generated from the serde types, and
//! the real binary's `--json` output of every command validates against them.
//! `NETCORE_WRITE_SCHEMAS=1 cargo test --test schemas` rewrites the shipped files.

use crate::common;

use std::time::Duration;

use common::{run_ok, Serve};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn shipped_path(name: &str) -> String {
    format!(
        "{}/docs/schemas/{name}.schema.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn shipped(name: &str) -> Value {
    let text = std::fs::read_to_string(shipped_path(name))
        .unwrap_or_else(|e| panic!("docs/schemas/{name}.schema.json: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn shipped_schemas_equal_the_generated_ones() {
    let write = std::env::var_os("NETCORE_WRITE_SCHEMAS").is_some();
    for (name, _) in netcore::cli::schemas::all() {
        let generated = netcore::cli::schemas::text(name).unwrap();
        if write {
            std::fs::create_dir_all(format!("{}/docs/schemas", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
            std::fs::write(shipped_path(name), &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(shipped_path(name)).unwrap_or_default();
        assert_eq!(
            on_disk, generated,
            "docs/schemas/{name}.schema.json is stale: rerun with NETCORE_WRITE_SCHEMAS=1"
        );
        // `netcore schema NAME` prints the same text.
        assert_eq!(run_ok(&["schema", name], LIMIT), generated, "{name}");
    }
}

/// Asserts that `out` (one JSON document) names schema `name` and validates against it.
pub fn validates(name: &str, out: &str) {
    let doc: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{name}: {e}: {out}"));
    assert_eq!(doc["schema"], name, "{out}");
    let schema = shipped(name);
    let v = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{out}");
    has_meta(name, &doc);
    // A bidirectional report's halves are reports too.
    for half in ["forward", "reverse"] {
        if doc.get(half).is_some() {
            has_meta(name, &doc[half]);
        }
    }
}

/// Asserts that a report says where it came from (`meta`): this build's version, a revision,
/// this host's kernel and CPUs, the sysctls, when.
pub fn has_meta(name: &str, doc: &Value) {
    let m = &doc["meta"];
    assert_eq!(m["version"], env!("CARGO_PKG_VERSION"), "{name}: {doc}");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(m["kernel"], kernel.trim(), "{name}: {m}");
    assert!(
        m["git_revision"].as_str().is_some_and(|r| !r.is_empty()),
        "{name}: {m}"
    );
    assert!(m["cpus"].as_u64().is_some_and(|n| n >= 1), "{name}: {m}");
    assert!(m["sysctls"]["net.core.rmem_max"].is_string(), "{name}: {m}");
    assert!(
        m["reported"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{name}: {m}"
    );
}

#[test]
fn findrate_output_validates() {
    let out = run_ok(
        &[
            "blast",
            "--find-rate",
            "--trial",
            "200ms",
            "--max-trials",
            "2",
            "--json",
        ],
        Duration::from_secs(60),
    );
    validates("netcore.findrate.v1", &out);
}

#[test]
fn the_table_names_version_and_kernel_first() {
    let out = run_ok(&["blast", "--count", "200"], LIMIT);
    let first = out.lines().next().unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        first.starts_with(&format!("netcore {} (", env!("CARGO_PKG_VERSION")))
            && first.contains(kernel.trim()),
        "{out}"
    );
}

#[test]
fn udp_output_validates() {
    let out = run_ok(&["blast", "--count", "2000", "--json"], LIMIT);
    validates("netcore.udp.v4", &out);
}

/// #26.8: one datagram arrives in one receive batch: the receiver's time is no time, and its
/// time and rates are unknown: null in JSON (the old binary wrote 0), and the document validates.
#[test]
fn unknown_receiver_figures_are_null() {
    let out = run_ok(&["blast", "--count", "1", "--json"], LIMIT);
    validates("netcore.udp.v4", &out);
    let doc: Value = serde_json::from_str(&out).unwrap();
    for k in ["duration_s", "goodput_bps", "pps"] {
        assert!(doc["receiver"][k].is_null(), "{k}: {out}");
    }
    assert_eq!(doc["receiver"]["accounting"]["unique"], 1, "{out}");
    // #27 follow-up: the stream's goodput too (it was 0), and the CSV leaves them empty.
    assert!(
        doc["receiver"]["streams"][0]["goodput_bps"].is_null(),
        "{out}"
    );
    let csv = run_ok(&["blast", "--count", "1", "--csv"], LIMIT);
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = |k: &str| head.iter().position(|h| *h == k).unwrap();
    for row in lines {
        let cells: Vec<&str> = row.split(',').collect();
        for k in ["goodput_bps", "recv_pps"] {
            assert_eq!(cells[at(k)], "", "{k}: {csv}");
        }
    }
}

#[test]
fn udp_bidir_output_validates() {
    let out = run_ok(&["blast", "--bidir", "--count", "2000", "--json"], LIMIT);
    validates("netcore.udp-bidir.v1", &out);
}

#[test]
fn traffic_output_validates() {
    let out = run_ok(
        &[
            "traffic",
            "--duration",
            "1s",
            "--interval",
            "500ms",
            "--json",
        ],
        LIMIT,
    );
    validates("netcore.traffic.v1", &out);
}

/// `load` of 1 then 2 clients, 3 tasks each, against `addr`, printing in `format`.
fn load_1_2_clients(addr: &str, format: &str) -> String {
    run_ok(
        &[
            "load",
            "--connect",
            addr,
            "--clients",
            "1,2",
            "--tasks",
            "3",
            format,
        ],
        LIMIT,
    )
}

#[test]
fn load_and_compare_output_validate() {
    let server = Serve::start(&["--model", "epoll"], Duration::from_secs(20));
    let addr = server.addr.to_string();
    let out = load_1_2_clients(&addr, "--json");
    validates("netcore.load.v1", &out);
    let out = run_ok(
        &[
            "load",
            "--connect",
            &addr,
            "--clients",
            "2",
            "--duration",
            "300ms",
            "--rate",
            "100",
            "--json",
        ],
        LIMIT,
    );
    validates("netcore.load.v1", &out);
    let out = run_ok(
        &[
            "compare",
            "--models",
            "epoll,thread",
            "--clients",
            "1,2",
            "--runs",
            "1",
            "--tasks",
            "2",
            "--json",
        ],
        LIMIT,
    );
    validates("netcore.compare.v1", &out);
}

#[test]
fn relay_output_validates() {
    let (_, out, err) = common::run(
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--duration",
            "300ms",
            "--json",
        ],
        LIMIT,
    );
    assert!(!out.is_empty(), "relay printed nothing: {err}");
    validates("netcore.relay.v3", &out);
}

#[test]
fn tcp_output_validates() {
    let out = run_ok(
        &["blast", "--proto", "tcp", "--time", "300ms", "--json"],
        Duration::from_secs(60),
    );
    validates("netcore.tcp.v1", &out);
}

/// Asserts that every line of a `--json-stream` output validates against netcore.events.v1,
/// that it starts with a start event and ends with an end event whose data is a `report`
/// report (validated against its own schema); returns the lines.
fn stream_validates(out: &str, command: &str, report: Option<&str>) -> Vec<Value> {
    let schema = shipped("netcore.events.v1");
    let v = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in {out}")))
        .collect();
    assert!(lines.len() >= 2, "{out}");
    for l in &lines {
        let errors: Vec<String> = v
            .iter_errors(l)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{l}");
        assert_eq!(l["schema"], "netcore.events.v1", "{l}");
        assert_eq!(l["command"], command, "{l}");
    }
    assert_eq!(lines[0]["event"], "start", "{out}");
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "end", "{out}");
    if let Some(name) = report {
        validates(name, &last["data"].to_string());
    }
    lines
}

fn events_of(lines: &[Value], kind: &str) -> usize {
    lines.iter().filter(|l| l["event"] == kind).count()
}

#[test]
fn blast_and_recv_json_streams_validate() {
    let out = run_ok(
        &[
            "blast",
            "--count",
            "3000",
            "--rate",
            "10kpps",
            "--interval",
            "100ms",
            "--json-stream",
        ],
        LIMIT,
    );
    let l = stream_validates(&out, "blast", Some("netcore.udp.v4"));
    assert!(events_of(&l, "interval") >= 1, "{out}");
    let out = run_ok(
        &[
            "blast",
            "--proto",
            "tcp",
            "--time",
            "300ms",
            "--interval",
            "100ms",
            "--json-stream",
        ],
        LIMIT,
    );
    stream_validates(&out, "blast", Some("netcore.tcp.v1"));

    // recv: one line per event, each written as it happens.
    let mut recv = common::proc::Proc::netcore(&[
        "recv",
        "--listen",
        "127.0.0.1:0",
        "--once",
        "--interval",
        "100ms",
        "--json-stream",
    ]);
    let addr = common::addr_in(&recv.wait_line("listening on"));
    run_ok(
        &[
            "blast", "--to", &addr, "--count", "3000", "--rate", "10kpps", "--json",
        ],
        LIMIT,
    );
    let (st, out, err) = recv.finish(LIMIT);
    assert!(st.success(), "{err}");
    let l = stream_validates(&out, "recv", Some("netcore.udp.v4"));
    assert!(events_of(&l, "interval") >= 1, "{out}");
    assert_eq!(l[0]["kind"], "udp");
    assert_eq!(l[0]["test_id"], l.last().unwrap()["test_id"]);
}

#[test]
fn load_and_serve_json_streams_validate() {
    use std::io::BufRead;
    let mut child = common::spawn(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "100ms",
            "--json-stream",
        ],
        std::process::Stdio::null(),
    );
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let start: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(start["event"], "start", "{first}");
    let addr = start["data"]["listen"].as_str().unwrap().to_string();
    let out = load_1_2_clients(&addr, "--json-stream");
    let l = stream_validates(&out, "load", Some("netcore.load.v1"));
    assert_eq!(events_of(&l, "interval"), 2, "one per run: {out}");
    std::thread::sleep(Duration::from_millis(300));
    netcore::sys::process::kill(child.id() as i32, libc::SIGINT).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = child.wait();
    let out = std::iter::once(first)
        .chain(rest)
        .collect::<Vec<_>>()
        .join("\n");
    let l = stream_validates(&out, "serve", None);
    assert!(events_of(&l, "interval") >= 1, "{out}");
    // 1 + 2 clients × 3 tasks.
    assert_eq!(l.last().unwrap()["data"]["requests"], 9, "{out}");
}

#[test]
fn json_stream_beside_json_is_a_usage_error() {
    let (st, _, err) = common::run(&["blast", "--json", "--json-stream"], LIMIT);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("--json-stream"), "{err}");
}
