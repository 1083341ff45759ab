//! Two sides of reports (one or several runs each) of the same kind, figure by figure: the
//! change of the median from side A to side B — relative, median(B) / median(A) - 1, where A's
//! runs are all non-zero, else the difference — with a bootstrap 95 % interval (resampling each
//! side's runs, [`ROUNDS`] rounds, a fixed seed, so the same reports always print the same
//! interval; the method of `tools/stats.py`), and a verdict: "faster"/"slower" (rates, times),
//! "fewer"/"more" (loss, errors) where the interval leaves out no change, "within noise" where
//! it holds it. With one run on a side there is no interval: the change is printed, and the
//! verdict says so.

use std::collections::BTreeMap;

use rand::Rng;
use serde_json::Value;

use super::figures::{figures, kind_of, Better, Kind};

/// Bootstrap rounds per figure.
pub(crate) const ROUNDS: usize = 2000;

/// One report as read: where it came from (a file name) and its JSON.
pub struct Input {
    pub name: String,
    pub doc: Value,
}

/// What became of a figure from A to B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// B is better beyond the noise ("faster", "fewer").
    Better,
    /// B is worse beyond the noise ("slower", "more").
    Worse,
    WithinNoise,
    /// A side has one run: no interval to judge by.
    NoInterval,
}

/// One figure's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub kind: Kind,
    pub better: Better,
    /// Median of each side and its number of runs.
    pub a: f64,
    pub b: f64,
    pub runs: (usize, usize),
    /// Whether `change`, `lo` and `hi` are relative (median(B) / median(A) - 1) or a
    /// difference (median(B) - median(A): where A has a zero run).
    pub relative: bool,
    /// B's change from A and its 95 % interval (equal to the change with one run a side).
    pub change: f64,
    pub lo: f64,
    pub hi: f64,
    pub verdict: Verdict,
}

impl Row {
    /// The verdict in words.
    pub fn word(&self) -> &'static str {
        match (self.verdict, self.kind) {
            (Verdict::WithinNoise, _) => "within noise",
            (Verdict::NoInterval, _) if self.change == 0.0 => "same",
            (Verdict::NoInterval, _) => "one run a side: no interval",
            (Verdict::Better, Kind::Speed) => "faster",
            (Verdict::Worse, Kind::Speed) => "slower",
            (Verdict::Better, Kind::Count) => "fewer",
            (Verdict::Worse, Kind::Count) => "more",
        }
    }
}

/// The kind both sides' reports share, or the one-line reason they cannot be compared.
pub fn common_kind(a: &[Input], b: &[Input]) -> Result<String, String> {
    if a.is_empty() || b.is_empty() {
        return Err("each side needs at least one report".into());
    }
    let mut kind: Option<(String, &str)> = None;
    for r in a.iter().chain(b) {
        let k = kind_of(&r.doc).ok_or_else(|| {
            format!(
                "{}: not a netcore --json report (no \"schema\" field)",
                r.name
            )
        })?;
        match &kind {
            None => kind = Some((k, &r.name)),
            Some((k0, n0)) if *k0 != k => {
                return Err(format!(
                    "reports of different kinds: {n0} is {k0}, {} is {k}",
                    r.name
                ))
            }
            Some(_) => {}
        }
    }
    Ok(kind.map(|(k, _)| k).unwrap_or_default())
}

/// Every figure both sides have, in the order side A's first report gives them.
pub fn diff(a: &[Input], b: &[Input]) -> Result<Vec<Row>, String> {
    common_kind(a, b)?;
    let (fa, order) = collect(a);
    let (fb, _) = collect(b);
    let mut rows = Vec::new();
    for name in order {
        let (Some((va, better, kind)), Some((vb, _, _))) = (fa.get(&name), fb.get(&name)) else {
            continue;
        };
        rows.push(row(name, va, vb, *better, *kind));
    }
    Ok(rows)
}

type Values = BTreeMap<String, (Vec<f64>, Better, Kind)>;

/// Each figure's values over a side's runs, and the order of first appearance.
fn collect(side: &[Input]) -> (Values, Vec<String>) {
    let mut out: Values = BTreeMap::new();
    let mut order = Vec::new();
    for r in side {
        for f in figures(&r.doc) {
            let e = out.entry(f.name.clone()).or_insert_with(|| {
                order.push(f.name.clone());
                (Vec::new(), f.better, f.kind)
            });
            e.0.push(f.value);
        }
    }
    (out, order)
}

fn row(name: String, a: &[f64], b: &[f64], better: Better, kind: Kind) -> Row {
    let (ma, mb) = (median(a), median(b));
    let relative = a.iter().all(|x| *x > 0.0);
    let change = if relative { mb / ma - 1.0 } else { mb - ma };
    let (lo, hi) = if a.len() > 1 && b.len() > 1 {
        interval(a, b, relative)
    } else {
        (change, change)
    };
    let verdict = if a.len() < 2 || b.len() < 2 {
        Verdict::NoInterval
    } else if lo > 0.0 || hi < 0.0 {
        if (lo > 0.0) == (better == Better::Higher) {
            Verdict::Better
        } else {
            Verdict::Worse
        }
    } else {
        Verdict::WithinNoise
    };
    Row {
        name,
        kind,
        better,
        a: ma,
        b: mb,
        runs: (a.len(), b.len()),
        relative,
        change,
        lo,
        hi,
        verdict,
    }
}

/// The bootstrap 95 % interval (percentile method) of median(B) / median(A) - 1 (`relative`;
/// A's values all positive) or of median(B) - median(A).
pub fn interval(a: &[f64], b: &[f64], relative: bool) -> (f64, f64) {
    let mut rng = crate::seeded::rng(1);
    let mut sa = vec![0.0; a.len()];
    let mut sb = vec![0.0; b.len()];
    let mut d: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            sa.iter_mut()
                .for_each(|x| *x = a[rng.random_range(0..a.len())]);
            sb.iter_mut()
                .for_each(|x| *x = b[rng.random_range(0..b.len())]);
            let (ma, mb) = (median(&sa), median(&sb));
            if relative {
                mb / ma - 1.0
            } else {
                mb - ma
            }
        })
        .collect();
    d.sort_by(f64::total_cmp);
    let at = |q: f64| d[(q * (d.len() - 1) as f64) as usize];
    (at(0.025), at(0.975))
}

/// The median (`stats::hist::median`); 0 for none.
pub fn median(v: &[f64]) -> f64 {
    crate::stats::hist::median(v).unwrap_or(0.0)
}

/// The meta fields whose difference between the sides is worth a line (where each side ran).
const META_FIELDS: [&str; 9] = [
    "version",
    "git_revision",
    "host",
    "kernel",
    "cpu_model",
    "cpus",
    "cpus_allowed",
    "pinned_threads",
    "sysctls",
];

/// What `netcore diff` prints: where each side came from, how their setups differ, and a row
/// per figure (medians, change, interval, verdict).
pub fn render(kind: &str, a: &[Input], b: &[Input], rows: &[Row]) -> String {
    let mut out = format!("netcore diff: {kind}, A -> B\n");
    for (label, side) in [("A", a), ("B", b)] {
        let names: Vec<&str> = side.iter().map(|r| r.name.as_str()).collect();
        out += &format!("{label}: {} ({})\n", names.join(" "), origin(&side[0].doc));
    }
    for d in meta_differences(&a[0].doc, &b[0].doc) {
        out += &format!("differs: {d}\n");
    }
    let mut t =
        crate::stats::table::Table::new(["figure", "A", "B", "change", "95 % interval", "verdict"]);
    for r in rows {
        let (change, interval) = if r.relative {
            (
                format!("{:+.1} %", 100.0 * r.change),
                format!("{:+.1} % .. {:+.1} %", 100.0 * r.lo, 100.0 * r.hi),
            )
        } else {
            (num(r.change), format!("{} .. {}", num(r.lo), num(r.hi)))
        };
        let interval = if r.verdict == Verdict::NoInterval {
            "-".to_string()
        } else {
            interval
        };
        t.row([
            r.name.clone(),
            runs(r.a, r.runs.0),
            runs(r.b, r.runs.1),
            change,
            interval,
            r.word().to_string(),
        ]);
    }
    out + &t.render()
}

fn runs(median: f64, n: usize) -> String {
    if n == 1 {
        num(median)
    } else {
        format!("{} ({n} runs)", num(median))
    }
}

/// A figure in about three significant digits with an SI prefix (`12.3 G`).
pub fn num(v: f64) -> String {
    let a = v.abs();
    let (x, p) = if a >= 1e9 {
        (v / 1e9, " G")
    } else if a >= 1e6 {
        (v / 1e6, " M")
    } else if a >= 1e4 {
        (v / 1e3, " k")
    } else {
        (v, "")
    };
    let digits = if x.abs() >= 100.0 || x.fract() == 0.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$}{p}")
}

/// `netcore 0.1.0 (abc), Linux 6.1 on host` from a report's meta; "no meta" for older reports.
fn origin(doc: &Value) -> String {
    let m = &doc["meta"];
    match (m["version"].as_str(), m["kernel"].as_str()) {
        (Some(v), Some(k)) => format!(
            "netcore {v} ({}), Linux {k} on {}",
            m["git_revision"].as_str().unwrap_or("?"),
            m["host"].as_str().unwrap_or("?")
        ),
        _ => "no meta: an older netcore".into(),
    }
}

/// `kernel: 6.1 -> 6.18` for each of [`META_FIELDS`] (sysctls one by one) the sides differ in.
pub(crate) fn meta_differences(a: &Value, b: &Value) -> Vec<String> {
    let (ma, mb) = (&a["meta"], &b["meta"]);
    if ma.is_null() || mb.is_null() {
        return Vec::new();
    }
    let show = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let mut out = Vec::new();
    for f in META_FIELDS {
        if f == "sysctls" {
            let keys: std::collections::BTreeSet<&String> = [&ma[f], &mb[f]]
                .iter()
                .filter_map(|v| v.as_object())
                .flat_map(|o| o.keys())
                .collect();
            for k in keys {
                if ma[f][k] != mb[f][k] {
                    out.push(format!("{k}: {} -> {}", show(&ma[f][k]), show(&mb[f][k])));
                }
            }
        } else if ma[f] != mb[f] {
            out.push(format!("{f}: {} -> {}", show(&ma[f]), show(&mb[f])));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn udp(name: &str, goodput: f64, lost: u64) -> Input {
        Input {
            name: name.into(),
            doc: json!({
                "schema": "netcore.udp.v4",
                "meta": {"host": name},
                "receiver": {"goodput_bps": goodput, "accounting": {"lost": lost, "sent": 100}}
            }),
        }
    }

    #[test]
    fn an_unknown_figure_is_left_out_of_its_run() {
        // A receiver's goodput is null where it was not measured (#26.8): the median is over
        // the runs that have it, and a figure no run of one side has gets no row.
        let mut a: Vec<Input> = [10.0, 12.0].iter().map(|g| udp("a", *g, 0)).collect();
        a[1].doc["receiver"]["goodput_bps"] = Value::Null;
        let b = vec![udp("b", 11.0, 0)];
        let rows = diff(&a, &b).unwrap();
        let goodput = rows
            .iter()
            .find(|r| r.name == "receiver.goodput_bps")
            .unwrap();
        assert_eq!((goodput.a, goodput.runs), (10.0, (1, 1)));
        let mut none = vec![udp("b", 11.0, 0)];
        none[0].doc["receiver"]["goodput_bps"] = Value::Null;
        let rows = diff(&a, &none).unwrap();
        assert!(rows.iter().all(|r| r.name != "receiver.goodput_bps"));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn a_clear_gain_is_faster_and_fewer_losses_are_fewer() {
        let a: Vec<Input> = [10.0, 10.2, 9.9, 10.1, 10.0]
            .iter()
            .map(|g| udp("a", *g, 5))
            .collect();
        let b: Vec<Input> = [12.0, 12.1, 11.9, 12.2, 12.0]
            .iter()
            .map(|g| udp("b", *g, 0))
            .collect();
        let rows = diff(&a, &b).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["receiver.accounting.lost", "receiver.goodput_bps"]);
        let (lost, goodput) = (&rows[0], &rows[1]);
        assert_eq!((goodput.a, goodput.b, goodput.runs), (10.0, 12.0, (5, 5)));
        assert!(
            goodput.relative && (goodput.change - 0.2).abs() < 1e-9,
            "{goodput:?}"
        );
        assert!(goodput.lo > 0.15 && goodput.hi < 0.25, "{goodput:?}");
        assert_eq!(goodput.word(), "faster");
        assert_eq!(
            (lost.relative, lost.change, lost.word()),
            (true, -1.0, "fewer")
        );
        // The other way round: slower, more.
        let rows = diff(&b, &a).unwrap();
        assert_eq!((rows[0].word(), rows[1].word()), ("more", "slower"));
    }

    #[test]
    fn overlapping_runs_are_within_noise_and_the_interval_is_fixed() {
        let a: Vec<Input> = [10.0, 12.0, 9.0, 11.0]
            .iter()
            .map(|g| udp("a", *g, 0))
            .collect();
        let b: Vec<Input> = [11.0, 9.5, 12.5, 10.0]
            .iter()
            .map(|g| udp("b", *g, 0))
            .collect();
        let rows = diff(&a, &b).unwrap();
        assert_eq!(rows[1].word(), "within noise");
        assert!(rows[1].lo < 0.0 && rows[1].hi > 0.0, "{:?}", rows[1]);
        assert_eq!(
            diff(&a, &b).unwrap(),
            rows,
            "the same reports, the same interval"
        );
        assert_eq!(rows[0].word(), "within noise", "no loss either side");
    }

    #[test]
    fn one_run_a_side_has_no_interval() {
        let rows = diff(&[udp("a", 10.0, 0)], &[udp("b", 11.0, 0)]).unwrap();
        assert_eq!(rows[1].verdict, Verdict::NoInterval);
        let r = &rows[1];
        assert!((r.change - 0.1).abs() < 1e-9 && r.lo == r.change && r.hi == r.change);
        // Where A has a zero the change is the difference.
        assert!(!rows[0].relative);
        assert_eq!(rows[1].word(), "one run a side: no interval");
        assert_eq!(rows[0].word(), "same");
    }

    #[test]
    fn the_text_names_both_sides_and_what_differs() {
        let meta = json!({"version": "0.1.0", "git_revision": "r1", "kernel": "6.1",
            "host": "h", "sysctls": {"net.core.rmem_max": "212992"}});
        let mut a = vec![udp("a.json", 10.0e9, 0)];
        a[0].doc["meta"] = meta.clone();
        let mut b = vec![udp("b.json", 12.0e9, 0)];
        b[0].doc["meta"] = meta;
        b[0].doc["meta"]["sysctls"]["net.core.rmem_max"] = json!("134217728");
        let rows = diff(&a, &b).unwrap();
        let text = render("netcore.udp", &a, &b, &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "netcore diff: netcore.udp, A -> B");
        assert_eq!(lines[1], "A: a.json (netcore 0.1.0 (r1), Linux 6.1 on h)");
        assert_eq!(lines[3], "differs: net.core.rmem_max: 212992 -> 134217728");
        let goodput = lines.iter().find(|l| l.contains("goodput_bps")).unwrap();
        assert!(
            goodput.contains("10 G") && goodput.contains("12 G"),
            "{text}"
        );
        assert!(
            goodput.contains("+20.0 %") && goodput.contains("no interval"),
            "{text}"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(num(12_345_678_901.0), "12.3 G");
        assert_eq!(num(2_500_000.0), "2.50 M");
        assert_eq!(num(45_000.0), "45 k");
        assert_eq!(num(1.23456), "1.23");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-5.0), "-5");
    }

    #[test]
    fn refusals() {
        let tcp = Input {
            name: "t.json".into(),
            doc: json!({"schema": "netcore.tcp.v1", "sum": [{"goodput_bps": 1.0}]}),
        };
        let err = diff(&[udp("u.json", 1.0, 0)], &[tcp]).unwrap_err();
        assert_eq!(
            err,
            "reports of different kinds: u.json is netcore.udp, t.json is netcore.tcp"
        );
        let not = Input {
            name: "x.json".into(),
            doc: json!({"a": 1}),
        };
        let err = diff(&[not], &[udp("u", 1.0, 0)]).unwrap_err();
        assert_eq!(
            err,
            "x.json: not a netcore --json report (no \"schema\" field)"
        );
        assert!(diff(&[], &[udp("u", 1.0, 0)]).is_err());
        // Versions of one kind compare (a field added in v4 is simply not on both sides).
        let mut old = udp("old", 1.0, 0);
        old.doc["schema"] = json!("netcore.udp.v3");
        assert!(diff(&[old], &[udp("u", 1.0, 0)]).is_ok());
    }
}
