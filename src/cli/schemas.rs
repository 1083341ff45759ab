//! JSON Schemas of the reports (`--json`), generated from their serde types with `schemars`,
//! so the documented schema cannot drift from what the code prints. The generated files are
//! shipped in `docs/schemas/` (a test checks they equal what this module generates, and that
//! real output validates against them); `netcore schema NAME` prints one.

use schemars::{schema_for, JsonSchema};
use serde_json::Value;

fn schema<T: JsonSchema>(name: &str) -> Value {
    described::<T>(
        name,
        format!(
            "The `--json` report of netcore whose \"schema\" field is \"{name}\" (generated from the serde types)."
        ),
    )
}

fn described<T: JsonSchema>(name: &str, description: String) -> Value {
    let mut v = serde_json::to_value(schema_for!(T)).expect("a schema is JSON");
    if let Value::Object(m) = &mut v {
        m.insert("$id".into(), Value::String(format!("{name}.schema.json")));
        m.insert("description".into(), Value::String(description));
    }
    v
}

/// Every report schema: (schema name, JSON Schema), in a fixed order.
pub fn all() -> Vec<(&'static str, Value)> {
    use crate::{flow, load, relay, rpm, stats, traffic};
    vec![
        (
            flow::udp::report::SCHEMA,
            schema::<flow::udp::report::UdpReport>(flow::udp::report::SCHEMA),
        ),
        (
            flow::recv::bidir::SCHEMA,
            schema::<flow::recv::bidir::UdpBidirReport>(flow::recv::bidir::SCHEMA),
        ),
        (
            flow::tcp_engine::report::SCHEMA,
            schema::<flow::tcp_engine::report::TcpReport>(flow::tcp_engine::report::SCHEMA),
        ),
        (
            flow::search::SCHEMA,
            schema::<flow::search::FindRateReport>(flow::search::SCHEMA),
        ),
        (
            load::report::SCHEMA,
            schema::<load::report::LoadReport>(load::report::SCHEMA),
        ),
        (
            load::compare::SCHEMA,
            schema::<load::compare::CompareReport>(load::compare::SCHEMA),
        ),
        (
            traffic::report::SCHEMA,
            schema::<traffic::report::TrafficReport>(traffic::report::SCHEMA),
        ),
        (
            relay::report::SCHEMA,
            schema::<relay::report::RelayReport>(relay::report::SCHEMA),
        ),
        (
            rpm::report::SCHEMA,
            schema::<rpm::report::RpmReport>(rpm::report::SCHEMA),
        ),
        (
            stats::events::SCHEMA,
            described::<stats::events::EventLine>(
                stats::events::SCHEMA,
                format!(
                    "One line of `--json-stream` (blast, recv, load, serve): a JSON object per event whose \"schema\" field is \"{}\"; an end event's data is the command's `--json` report (generated from the serde types).",
                    stats::events::SCHEMA
                ),
            ),
        ),
    ]
}

/// The names of every schema, in the order of [`all`].
pub fn names() -> Vec<&'static str> {
    all().into_iter().map(|(n, _)| n).collect()
}

/// The schema named `name` as pretty JSON with a final newline (the shipped file's text).
pub fn text(name: &str) -> Option<String> {
    all()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| serde_json::to_string_pretty(&v).expect("JSON") + "\n")
}
