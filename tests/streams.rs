//! UDP parallel streams (`-P`) end to end: the real binary over loopback, against blast's
//! embedded receiver and a separate `recv`; every stream's accounting is exact and so is the
//! sum. No timing assertions (the machine is shared).

use crate::common;

use std::time::Duration;

use common::{addr_in, run, Server};
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// `unique + lost == sent` per stream and in the sum, the sum is the streams added up, and
/// the sender's per-stream split of `count` is exact.
fn check_streams(r: &Value, streams: usize, count: u64) {
    assert_eq!(r["schema"], "netcore.udp.v4");
    let sum = &r["receiver"]["accounting"];
    let rows = r["receiver"]["streams"].as_array().expect("streams");
    assert_eq!(rows.len(), streams, "{r}");
    let mut total = [0u64; 3];
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(n(row, "stream"), i as u64);
        let a = &row["accounting"];
        let (sent, unique, lost) = (n(a, "sent"), n(a, "unique"), n(a, "lost"));
        assert_eq!(unique + lost, sent, "stream {i}: {a}");
        assert_eq!(n(a, "in_order") + n(a, "reordered"), unique);
        // count / streams each, the first count % streams one more
        let share = count / streams as u64 + u64::from((i as u64) < count % streams as u64);
        assert_eq!(sent, share, "stream {i}");
        assert!(unique > 0, "stream {i} arrived: {a}");
        for (t, v) in total.iter_mut().zip([sent, unique, lost]) {
            *t += v;
        }
    }
    assert_eq!(
        [n(sum, "sent"), n(sum, "unique"), n(sum, "lost")],
        total,
        "{sum}"
    );
    assert_eq!(n(sum, "unique") + n(sum, "lost"), n(sum, "sent"));
    assert_eq!(n(sum, "sent"), count);
    assert_eq!(n(&r["sender"], "sent"), count);
}

#[test]
fn four_streams_embedded_receiver() {
    let (st, out, err) = run(
        &["blast", "-P", "4", "--count", "40001", "--json"],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let r = json(&out);
    check_streams(&r, 4, 40_001);
    assert_eq!(r["sender"]["cpu_usage"]["threads"], 4);
}

#[test]
fn four_streams_separate_recv_both_sides_agree() {
    let (srv, line) = Server::start(
        &["recv", "--listen", "127.0.0.1:0", "--once", "--json"],
        "listening on",
        true,
    );
    let addr = addr_in(&line);
    let (st, out, err) = run(
        &[
            "blast",
            "--to",
            &addr,
            "--streams",
            "4",
            "--count",
            "20000",
            "--rate",
            "200kpps",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let s = json(&out);
    check_streams(&s, 4, 20_000);
    let rout = srv.wait(Duration::from_secs(20));
    assert!(rout.status.success());
    let r = json(&String::from_utf8_lossy(&rout.stdout));
    assert_eq!(r["role"], "receiver");
    assert_eq!(r["test_id"], s["test_id"]);
    check_streams(&r, 4, 20_000);
    assert_eq!(r["receiver"]["streams"], s["receiver"]["streams"]);
}

#[test]
fn stream_rows_in_table_and_csv() {
    let (st, out, err) = run(
        &["blast", "-P", "2", "--count", "3001", "--gso", "off"],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("0 ") || l.starts_with("1 ") || l.starts_with("SUM "))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[2].contains("3,001"), "{out}");

    let (st, out, err) = run(
        &["blast", "-P", "3", "--count", "3001", "--csv"],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "three streams and SUM: {out}");
    let col = |row: &[&str], name: &str| -> String {
        row[header.iter().position(|h| *h == name).unwrap()].to_string()
    };
    let num = |row: &[&str], name: &str| -> u64 { col(row, name).parse().unwrap() };
    for (i, row) in rows.iter().enumerate().take(3) {
        assert_eq!(col(row, "stream"), i.to_string());
        assert_eq!(num(row, "unique") + num(row, "lost"), num(row, "sent"));
    }
    assert_eq!(col(&rows[3], "stream"), "SUM");
    assert_eq!(num(&rows[3], "sent"), 3001);
    assert_eq!(
        (0..3).map(|i| num(&rows[i], "unique")).sum::<u64>(),
        num(&rows[3], "unique")
    );
}

#[test]
fn one_stream_keeps_one_row_and_the_sum() {
    let (st, out, err) = run(
        &["blast", "--count", "500", "--csv"],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].split(',').nth(2) == Some("0") && lines[2].split(',').nth(2) == Some("SUM"));
}

/// `-R`: the receiver sends (every stream from the port it names in Ready, to where the
/// client's opener came from) and `blast` receives and reports, exactly per stream.
#[test]
fn reverse_embedded_receiver() {
    let (st, out, err) = run(
        &["blast", "-R", "-P", "3", "--count", "30001", "--json"],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let r = json(&out);
    assert_eq!(r["role"], "receiver", "blast received");
    check_streams(&r, 3, 30_001);

    let (st, out, err) = run(
        &["blast", "-R", "--count", "2000", "--gso", "off"],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    assert!(out.contains("2,000 unique"), "{out}");
}

#[test]
fn reverse_separate_recv_both_sides_agree() {
    let (srv, line) = Server::start(
        &["recv", "--listen", "127.0.0.1:0", "--once", "--json"],
        "listening on",
        true,
    );
    let addr = addr_in(&line);
    let (st, out, err) = run(
        &[
            "blast", "--to", &addr, "-R", "-P", "2", "--count", "20000", "--rate", "200kpps",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let c = json(&out);
    assert_eq!(c["role"], "receiver");
    check_streams(&c, 2, 20_000);
    let rout = srv.wait(Duration::from_secs(20));
    assert!(rout.status.success());
    let s = json(&String::from_utf8_lossy(&rout.stdout));
    assert_eq!(s["role"], "sender", "recv sent");
    assert_eq!(s["test_id"], c["test_id"]);
    check_streams(&s, 2, 20_000);
    assert_eq!(s["receiver"]["streams"], c["receiver"]["streams"]);
}

/// `--bidir` (UDP): a forward and a reverse test at once, each exact per stream and in the
/// sum; the forward half is the sender's copy, the reverse half this side's receiver report.
fn check_bidir(r: &Value, streams: usize, count: u64) {
    assert_eq!(r["schema"], "netcore.udp-bidir.v1", "{r}");
    let (f, b) = (&r["forward"], &r["reverse"]);
    assert_eq!(f["role"], "sender", "this side sent the forward half");
    assert_eq!(b["role"], "receiver", "this side received the reverse half");
    assert_ne!(f["test_id"], b["test_id"], "two tests");
    check_streams(f, streams, count);
    check_streams(b, streams, count);
    assert_eq!(f["receiver"]["interrupted"], false);
    assert_eq!(b["receiver"]["interrupted"], false);
}

#[test]
fn bidir_embedded_receiver() {
    for (p, count) in [("1", 20_000u64), ("2", 30_001)] {
        let (st, out, err) = run(
            &[
                "blast",
                "--bidir",
                "-P",
                p,
                "--count",
                &count.to_string(),
                "--json",
            ],
            Duration::from_secs(60),
        );
        assert!(st.success(), "-P {p}: {err}");
        check_bidir(&json(&out), p.parse().unwrap(), count);
    }
}

#[test]
fn bidir_pins_this_sides_receiving_thread_with_cpus() {
    // The sending thread takes --cpus' first entry, this side's receiving thread (the
    // reverse half) the next one; each report names the CPU of its threads.
    let (st, out, err) = run(
        &[
            "blast", "--bidir", "--cpus", "0,1", "--count", "20000", "--json",
        ],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let d = json(&out);
    let cpu_of = |half: &str, role: &str| {
        d[half]["receiver"]["kernel"]["threads"]
            .as_array()
            .unwrap_or_else(|| panic!("{half}: no threads in {out}"))
            .iter()
            .find(|t| t["role"] == role)
            .map(|t| t["cpu"].clone())
    };
    assert_eq!(
        cpu_of("forward", "sender"),
        Some(serde_json::json!(0)),
        "{out}"
    );
    assert_eq!(
        cpu_of("reverse", "receiver"),
        Some(serde_json::json!(1)),
        "{out}"
    );
}

#[test]
fn bidir_table_and_csv_have_both_directions() {
    let (st, out, err) = run(
        &["blast", "--bidir", "-P", "2", "--count", "3001"],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let fwd = out.find("forward (this host sends):").expect(&out);
    let rev = out.find("reverse (the receiver sends):").expect(&out);
    assert!(fwd < rev, "{out}");
    for part in [&out[fwd..rev], &out[rev..]] {
        let sums: Vec<&str> = part.lines().filter(|l| l.starts_with("SUM ")).collect();
        assert_eq!(sums.len(), 1, "{part}");
        assert!(sums[0].contains("3,001"), "{part}");
        assert_eq!(part.lines().filter(|l| l.starts_with("1 ")).count(), 1);
    }

    let (st, out, err) = run(
        &["blast", "--bidir", "-P", "2", "--count", "3001", "--csv"],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "direction");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 6, "two streams and SUM each way: {out}");
    let col = |row: &[&str], name: &str| -> String {
        row[header.iter().position(|h| *h == name).unwrap()].to_string()
    };
    for (dir, part) in [("forward", &rows[..3]), ("reverse", &rows[3..])] {
        for row in part {
            assert_eq!(row[0], dir, "{out}");
            let n = |k| col(row, k).parse::<u64>().unwrap();
            assert_eq!(n("unique") + n("lost"), n("sent"), "{out}");
        }
        assert_eq!(col(&part[2], "stream"), "SUM");
        assert_eq!(col(&part[2], "sent"), "3001");
    }
}

/// A separate `recv` serves both halves at once (two tests); its two reports are the other
/// side of each, and agree with blast's per stream.
#[test]
fn bidir_separate_recv_both_sides_agree() {
    let (srv, line) = Server::start(
        &["recv", "--listen", "127.0.0.1:0", "--json"],
        "listening on",
        true,
    );
    let addr = addr_in(&line);
    let (st, out, err) = run(
        &[
            "blast", "--to", &addr, "--bidir", "-P", "2", "--count", "20000", "--rate", "200kpps",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let c = json(&out);
    check_bidir(&c, 2, 20_000);
    // recv finishes what it has and exits on SIGTERM.
    let pid = srv.child.as_ref().unwrap().id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let rout = srv.wait(Duration::from_secs(20));
    assert_eq!(rout.status.code(), Some(128 + libc::SIGTERM), "{rout:?}");
    let text = String::from_utf8_lossy(&rout.stdout).to_string();
    let reports: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|v| v.expect("JSON"))
        .collect();
    assert_eq!(reports.len(), 2, "{text}");
    for (half, role) in [("forward", "receiver"), ("reverse", "sender")] {
        let mine = &c[half];
        let theirs = reports
            .iter()
            .find(|r| r["test_id"] == mine["test_id"])
            .unwrap_or_else(|| panic!("recv's report of the {half} half: {text}"));
        assert_eq!(theirs["role"], role, "{half}");
        check_streams(theirs, 2, 20_000);
        assert_eq!(theirs["receiver"]["streams"], mine["receiver"]["streams"]);
    }
}

/// `--bidir` with `-R` (clap), and what a bidirectional UDP test cannot do, are one-line
/// usage errors.
#[test]
fn bidir_refusals_are_one_line_usage_errors() {
    for (args, names) in [
        (&["blast", "--bidir", "-R", "--count", "10"][..], "--bidir"),
        (&["blast", "--bidir", "--find-rate"][..], "--find-rate"),
        (
            &["blast", "--bidir", "--count", "10", "--plot", "/tmp/x.svg"][..],
            "--plot",
        ),
    ] {
        let (st, out, err) = run(args, Duration::from_secs(20));
        assert_eq!(st.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(names), "{args:?}: {err}");
        if names != "--bidir" {
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
