//! The figures of a `--json` report that `netcore diff` compares, read from the JSON itself so
//! every report kind (and every version of one) is covered: each number whose name says which
//! way is better — rates (`*_bps`, `pps`, `*_per_s`, `bits_per_cpu_s`: higher), times
//! (anything under a `*_us`/`*_ms`/`*_s` name that is a latency or a duration of the work:
//! lower), loss and errors (lower). Everything else (counts of what was asked for, settings,
//! where it came from) is not a figure. Per-run and per-interval detail (`intervals`, `trials`,
//! `runs`, per-stream rows) is left out: a report's totals are what two reports share.

use serde_json::Value;

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// What a figure measures: the words its verdict uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A rate or a time: "faster" / "slower".
    Speed,
    /// Loss, errors: "fewer" / "more".
    Count,
}

/// One figure of one report: its path in the JSON (array elements named by their key where
/// they have one: `points[clients=2].median.tasks_per_s`), its value, which way is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub better: Better,
    pub kind: Kind,
}

/// Subtrees that are not compared: provenance, settings, and per-run / per-interval detail.
const SKIP: [&str; 10] = [
    "meta",
    "schema",
    "settings",
    "setup",
    "intervals",
    "trials",
    "runs",
    "streams",
    "kernel",
    "histogram",
];

/// Keys that name an array element (so two reports' elements pair by meaning, not position).
const ELEMENT_KEYS: [&str; 6] = ["clients", "model", "direction", "conns", "name", "flow"];

/// The kind of a report: its `schema` without the version (`netcore.udp.v4` -> `netcore.udp`).
pub(crate) fn kind_of(doc: &Value) -> Option<String> {
    let s = doc.get("schema")?.as_str()?;
    let kind = match s.rsplit_once(".v") {
        Some((k, v)) if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) => k,
        _ => s,
    };
    Some(kind.to_string())
}

/// Every figure of `doc`, in the order of its keys (alphabetical, as serde_json keeps them).
pub fn figures(doc: &Value) -> Vec<Figure> {
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    out
}

fn walk(v: &Value, path: &str, out: &mut Vec<Figure>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if SKIP.contains(&k.as_str()) {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(x, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                walk(x, &format!("{path}[{}]", element_name(x, i)), out);
            }
        }
        Value::Number(n) => {
            if let (Some(value), Some((better, kind))) = (n.as_f64(), direction(path)) {
                out.push(Figure {
                    name: path.to_string(),
                    value,
                    better,
                    kind,
                });
            }
        }
        _ => {}
    }
}

/// `clients=2` for an element with a naming key, else its index.
fn element_name(x: &Value, i: usize) -> String {
    ELEMENT_KEYS
        .iter()
        .find_map(|k| match x.get(*k)? {
            Value::String(s) => Some(format!("{k}={s}")),
            Value::Number(n) => Some(format!("{k}={n}")),
            _ => None,
        })
        .unwrap_or_else(|| i.to_string())
}

/// Which way the figure at `path` is better, from its name; `None`: not a figure.
pub fn direction(path: &str) -> Option<(Better, Kind)> {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    let leaf = leaf.split('[').next().unwrap_or(leaf);
    let under = |suffix: &str| path.split('.').any(|seg| seg.ends_with(suffix));
    if leaf.ends_with("_bps")
        || leaf == "pps"
        || leaf.ends_with("_per_s")
        || leaf == "bits_per_cpu_s"
    {
        return Some((Better::Higher, Kind::Speed));
    }
    if leaf == "lost" || leaf == "lost_pct" || path.split('.').any(|s| s == "errors") {
        return Some((Better::Lower, Kind::Count));
    }
    if leaf == "count" || leaf == "threads" {
        return None;
    }
    if under("_us") || under("_ms") {
        return Some((Better::Lower, Kind::Speed));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds() {
        assert_eq!(
            kind_of(&json!({"schema": "netcore.udp.v4"})).unwrap(),
            "netcore.udp"
        );
        assert_eq!(
            kind_of(&json!({"schema": "netcore.iperf3.udp.v2"})).unwrap(),
            "netcore.iperf3.udp"
        );
        assert_eq!(kind_of(&json!({"schema": "odd"})).unwrap(), "odd");
        assert_eq!(kind_of(&json!({"no": 1})), None);
        assert_eq!(kind_of(&json!([1])), None);
    }

    #[test]
    fn directions_from_names() {
        use Better::*;
        use Kind::*;
        assert_eq!(direction("receiver.goodput_bps"), Some((Higher, Speed)));
        assert_eq!(direction("sender.pps"), Some((Higher, Speed)));
        assert_eq!(
            direction("points[clients=1].median.tasks_per_s"),
            Some((Higher, Speed))
        );
        assert_eq!(
            direction("cpu.client.bits_per_cpu_s"),
            Some((Higher, Speed))
        );
        assert_eq!(direction("receiver.latency_us.p99"), Some((Lower, Speed)));
        assert_eq!(direction("receiver.jitter_us"), Some((Lower, Speed)));
        assert_eq!(direction("receiver.lost_pct"), Some((Lower, Count)));
        assert_eq!(
            direction("points[clients=1].median.errors.reset"),
            Some((Lower, Count))
        );
        assert_eq!(direction("receiver.latency_us.count"), None);
        assert_eq!(direction("sender.sent"), None);
        assert_eq!(direction("len"), None);
    }

    /// A TCP SUM row's goodput over no time is null (#27 follow-up): not a figure, so `diff`
    /// leaves it out of its run instead of comparing a 0.
    #[test]
    fn a_null_goodput_is_no_figure() {
        let doc = json!({"schema": "netcore.tcp.v1", "sum": [
            {"dir": "up", "goodput_bps": null},
            {"dir": "down", "goodput_bps": 5.0}
        ]});
        let names: Vec<String> = figures(&doc).into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["sum[1].goodput_bps"]);
    }

    #[test]
    fn figures_of_a_report_skip_provenance_and_detail() {
        let doc = json!({
            "schema": "netcore.load.v1",
            "meta": {"cpus": 2, "x_bps": 5},
            "setup": {"think_us": 3},
            "points": [
                {"clients": 1, "median": {"tasks_per_s": 100.0, "p99_us": 50.0},
                 "runs": [{"tasks_per_s": 99.0}]},
                {"clients": 2, "median": {"tasks_per_s": 180.0, "p99_us": 70.0}}
            ],
            "intervals": [{"received_bps": 1.0}]
        });
        let f = figures(&doc);
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "points[clients=1].median.p99_us",
                "points[clients=1].median.tasks_per_s",
                "points[clients=2].median.p99_us",
                "points[clients=2].median.tasks_per_s"
            ]
        );
        assert_eq!(f[0].value, 50.0);
        assert_eq!(f[0].better, Better::Lower);
    }
}
