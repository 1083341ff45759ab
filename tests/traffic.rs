//! `netcore traffic` end to end.

use crate::common;

use std::time::Duration;

use common::{run, run_ok, scratch_dir};
use netcore::traffic::{sizes, Flow};
use serde_json::Value;

#[test]
fn seeded_run_adds_up() {
    let out = run_ok(
        &["traffic", "--duration", "3s", "--seed", "7", "--json"],
        Duration::from_secs(30),
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["schema"], "netcore.traffic.v1");
    let intervals = r["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 3, "{r}");
    for (flow, key) in [(Flow::Tcp, "tcp"), (Flow::Udp, "udp")] {
        let tot = &r["totals"][key];
        let sum = |f: &str| -> u64 {
            intervals
                .iter()
                .map(|s| s["flows"][key][f].as_u64().unwrap())
                .sum()
        };
        // The intervals add up to the totals.
        assert_eq!(sum("bytes"), tot["recv_bytes"].as_u64().unwrap(), "{key}");
        assert_eq!(sum("msgs"), tot["recv_msgs"].as_u64().unwrap(), "{key}");
        // Three messages per flow (at 0 s, 1 s, 2 s), sized by the seeded generator.
        let expect: u64 = sizes(7, flow, 50, 500, 3).iter().sum::<usize>() as u64;
        assert_eq!(tot["sent_msgs"], 3, "{key}");
        assert_eq!(tot["sent_bytes"].as_u64().unwrap(), expect, "{key}");
        let (sent, recv) = (
            tot["sent_msgs"].as_u64().unwrap(),
            tot["recv_msgs"].as_u64().unwrap(),
        );
        match flow {
            Flow::Tcp => assert_eq!(tot["recv_bytes"].as_u64().unwrap(), expect),
            Flow::Udp => {
                assert!(recv <= sent);
                assert_eq!(tot["lost_msgs"].as_u64().unwrap(), sent - recv);
            }
        }
    }
}

#[test]
fn lines_csv_and_plot() {
    let dir = scratch_dir("traffic");
    let svg = dir.join("t.svg");
    let out = run_ok(
        &[
            "traffic",
            "--duration",
            "2s",
            "--interval",
            "500ms",
            "--rate",
            "10Mbps",
            "--plot",
            svg.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(out.contains("t=0.50s: TCP="), "{out}");
    assert!(out.contains("received rate"), "{out}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") || text.starts_with("<?xml"),
        "{text:.80}"
    );
    for s in ["TCP", "UDP", "time (s)", "</svg>"] {
        assert!(text.contains(s), "{s} missing from the SVG");
    }
    // PNG when the name ends in .png: the same chart, rendered.
    let png = dir.join("t.png");
    run_ok(
        &[
            "traffic",
            "--duration",
            "1s",
            "--json",
            "--plot",
            png.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 5_000, "a real picture, not an empty one");
    let out = run_ok(
        &["traffic", "--duration", "1s", "--flows", "tcp", "--csv"],
        Duration::from_secs(30),
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("interval,t,flow,bytes,msgs"));
    assert!(lines.all(|l| l.contains(",TCP,")));
    let _ = std::fs::remove_dir_all(dir);
}

fn bad(args: &[&str], needle: &str) {
    let (st, out, err) = run(args, Duration::from_secs(10));
    assert_eq!(st.code(), Some(2), "{args:?}: a usage error: {err}");
    assert!(out.is_empty(), "no traffic output for {args:?}: {out}");
    // The error on the first line (clap's usage errors go on with its usage and hints).
    assert!(err.starts_with("netcore: error: "), "{err}");
    assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
}

#[test]
fn bad_input_fails_before_traffic() {
    bad(&["traffic", "--size", "500..50"], "larger than");
    bad(&["traffic", "--size", "0..0"], "at least 12 bytes");
    bad(&["traffic", "--size", "50..70000"], "limited to 65507");
    bad(&["traffic", "--duration", "0"], "greater than zero");
    bad(
        &["traffic", "--plot", "/nonexistent/dir/x.svg"],
        "cannot write plot file",
    );
    bad(&["traffic", "--flows", "tcp,sctp"], "unknown flow");
    bad(&["traffic", "--interval", "1ns"], "too short");
    bad(
        &["traffic", "--plot", "/tmp/x.gif"],
        "must end in .svg or .png",
    );
    bad(&["traffic", "--rate", "5kpps"], "bit rate");
}

/// The plot renders in a real browser: headless Chromium takes a screenshot of the SVG and the
/// screenshot is not blank. Skips (with a message) where Chromium is not installed.
#[test]
fn svg_renders_in_chromium() {
    let dir = scratch_dir("chromium");
    let svg = dir.join("plot.svg");
    run_ok(
        &[
            "traffic",
            "--duration",
            "2s",
            "--interval",
            "250ms",
            "--rate",
            "5Mbps",
            "--json",
            "--plot",
            svg.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    common::renders_in_chromium(&svg, &dir.join("plot.png"));
    let _ = std::fs::remove_dir_all(&dir);
}
