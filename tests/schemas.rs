//! The JSON Schemas shipped in docs/schemas/ are the ones generated from the serde types, and
//! the real binary's `--json` output of every command validates against them.
//! `NETCORE_WRITE_SCHEMAS=1 cargo test --test schemas` rewrites the shipped files.

mod common;

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
fn validates(name: &str, out: &str) {
    let doc: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{name}: {e}: {out}"));
    assert_eq!(doc["schema"], name, "{out}");
    let schema = shipped(name);
    let v = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{out}");
}

#[test]
fn udp_output_validates() {
    let out = run_ok(&["blast", "--count", "2000", "--json"], LIMIT);
    validates("netcore.udp.v4", &out);
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

#[test]
fn load_and_compare_output_validate() {
    let server = Serve::start(&["--model", "epoll"], Duration::from_secs(20));
    let addr = server.addr.to_string();
    let out = run_ok(
        &[
            "load",
            "--connect",
            &addr,
            "--clients",
            "1,2",
            "--tasks",
            "3",
            "--json",
        ],
        LIMIT,
    );
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
    validates("netcore.relay.v1", &out);
}

#[test]
fn tcp_output_validates() {
    let out = run_ok(
        &["blast", "--proto", "tcp", "--time", "300ms", "--json"],
        Duration::from_secs(60),
    );
    validates("netcore.tcp.v1", &out);
}
