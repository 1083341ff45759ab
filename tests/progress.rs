//! `--progress`: with `--json` stdout stays one pure JSON document while the live lines go to
//! stderr when asked (`--progress lines`: plain lines, as in a log), and nothing goes to a
//! stderr that is not a terminal by default (`auto`) or with `off`. Real binary, loopback,
//! bounded runs.

use crate::common;

use std::time::Duration;

use common::{run, Serve};

const T: Duration = Duration::from_secs(60);

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("stdout is not pure JSON ({e}): {out:.300}"))
}

/// `blast` for 1 s at 20 Mbit/s with 200 ms intervals, then `extra`: status, stdout, stderr.
fn blast(extra: &[&str]) -> (std::process::ExitStatus, String, String) {
    let base = [
        "blast",
        "--time",
        "1s",
        "--rate",
        "20Mbps",
        "--interval",
        "200ms",
    ];
    run(&[&base[..], extra].concat(), T)
}

#[test]
fn blast_json_keeps_stdout_pure_and_progress_lines_go_to_stderr() {
    let (st, out, err) = blast(&["--json", "--progress", "lines"]);
    assert!(st.success(), "{err}");
    json(&out);
    let lines = err
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("dgrams"))
        .count();
    assert!(lines >= 2, "no interval lines on stderr: {err}");
    // Not a terminal, auto: nothing; off: nothing.
    for mode in [&["--json"][..], &["--json", "--progress", "off"][..]] {
        let (st, out, err) = blast(mode);
        assert!(st.success(), "{err}");
        json(&out);
        assert!(!err.contains("dgrams"), "{mode:?}: {err}");
    }
    // The table on stdout keeps its live lines; `lines` repeats them on stderr.
    let (st, out, err) = blast(&["--progress", "lines"]);
    assert!(st.success(), "{err}");
    assert!(
        out.contains("dgrams") && err.contains("dgrams"),
        "{out}\n{err}"
    );
}

#[test]
fn load_json_with_progress_lines_prints_each_run_on_stderr() {
    let srv = Serve::start(&["--model", "epoll"], T);
    let addr = srv.addr.to_string();
    let args = [
        "load",
        "--connect",
        &addr,
        "--clients",
        "1,2",
        "--tasks",
        "3",
        "--task",
        "ECHO hi",
        "--json",
    ];
    let (st, out, err) = run(&[&args[..], &["--progress", "lines"]].concat(), T);
    assert!(st.success(), "{err}");
    json(&out);
    assert!(err.lines().count() >= 2, "no run lines on stderr: {err}");
    let (st, out, err) = run(&args, T);
    assert!(st.success(), "{err}");
    json(&out);
    assert!(err.trim().is_empty(), "auto on a pipe printed: {err}");
}
