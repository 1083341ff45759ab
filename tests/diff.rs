//! `netcore diff` on reports the real binary made in the test: side by side, with intervals
//! over several runs, and refusing reports of different kinds.

use std::time::Duration;

use crate::common::{run, run_ok, scratch_dir};

const LIMIT: Duration = Duration::from_secs(60);

/// Writes `netcore ARGS --json` to DIR/NAME and returns its path.
fn report(dir: &std::path::Path, name: &str, args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.push("--json");
    let out = run_ok(&a, LIMIT);
    let p = dir.join(name);
    std::fs::write(&p, out).unwrap();
    p.display().to_string()
}

#[test]
fn two_udp_reports_side_by_side() {
    let dir = scratch_dir("diff-udp");
    let a = report(&dir, "a.json", &["blast", "--count", "5000"]);
    let b = report(
        &dir,
        "b.json",
        &["blast", "--count", "5000", "--len", "200"],
    );
    let out = run_ok(&["diff", &a, &b], LIMIT);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "netcore diff: netcore.udp, A -> B", "{out}");
    assert!(
        lines[1].starts_with(&format!("A: {a} (netcore {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(lines[2].starts_with(&format!("B: {b} (")), "{out}");
    // With one run a side there is no interval: the same loss reads "same", another one says
    // there is no interval; goodput has a row.
    let lost = |p: &str| {
        crate::common::json(&std::fs::read_to_string(p).unwrap())["receiver"]["accounting"]["lost"]
            .clone()
    };
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name}: {out}"))
            .to_string()
    };
    let want = if lost(&a) == lost(&b) {
        "same"
    } else {
        "one run a side: no interval"
    };
    assert!(row("receiver.accounting.lost").ends_with(want), "{out}");
    assert!(row("receiver.goodput_bps").contains("no interval"), "{out}");
}

#[test]
fn sets_of_runs_get_intervals() {
    let dir = scratch_dir("diff-runs");
    let a: Vec<String> = (0..3)
        .map(|i| report(&dir, &format!("a{i}.json"), &["blast", "--count", "3000"]))
        .collect();
    let b: Vec<String> = (0..3)
        .map(|i| report(&dir, &format!("b{i}.json"), &["blast", "--count", "3000"]))
        .collect();
    let mut args = vec!["diff", "--a"];
    args.extend(a.iter().map(String::as_str));
    args.push("--b");
    args.extend(b.iter().map(String::as_str));
    let out = run_ok(&args, LIMIT);
    let lost = out
        .lines()
        .find(|l| l.starts_with("receiver.accounting.lost"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(lost.contains("(3 runs)"), "{out}");
    let lost_any = a.iter().chain(&b).any(|p| {
        crate::common::json(&std::fs::read_to_string(p).unwrap())["receiver"]["accounting"]["lost"]
            != 0
    });
    if !lost_any {
        // No loss in any run: the interval is 0 .. 0, within noise.
        assert!(lost.ends_with("0 .. 0  within noise"), "{out}");
    }
    let goodput = out
        .lines()
        .find(|l| l.starts_with("receiver.goodput_bps"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(goodput.contains(" % .. "), "an interval: {out}");
    let word = goodput.split("  ").last().unwrap().trim();
    assert!(
        ["faster", "slower", "within noise"].contains(&word),
        "{out}"
    );
}

#[test]
fn reports_of_different_kinds_are_refused() {
    let dir = scratch_dir("diff-kinds");
    let u = report(&dir, "u.json", &["blast", "--count", "1000"]);
    let t = report(
        &dir,
        "t.json",
        &["blast", "--proto", "tcp", "--time", "200ms"],
    );
    let (st, out, err) = run(&["diff", &u, &t], LIMIT);
    assert_eq!(st.code(), Some(2), "{out}{err}");
    assert_eq!(
        err.trim(),
        format!(
            "netcore: error: reports of different kinds: {u} is netcore.udp, {t} is netcore.tcp"
        )
    );
    assert!(out.is_empty());
    // Not a report, not there, the wrong number of files: one line, exit 2.
    let junk = dir.join("junk.json");
    std::fs::write(&junk, "not json").unwrap();
    let junk = junk.display().to_string();
    for args in [
        vec!["diff", u.as_str(), junk.as_str()],
        vec!["diff", u.as_str(), "/nonexistent/x.json"],
        vec!["diff", u.as_str()],
        vec!["diff", "--a", u.as_str()],
    ] {
        let (st, _, err) = run(&args, LIMIT);
        assert_eq!(st.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("netcore: error: "), "{args:?}: {err}");
    }
}
