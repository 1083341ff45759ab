//! `blast --find-rate`: through a relay whose link is limited to 200 Mbit/s, the search finds
//! a rate within 10 % of the limit, confirmed, and every trial is reported.

use crate::common;

use std::time::Duration;

use common::proc::Proc;
use common::{addr_in, run, run_ok};
use serde_json::Value;

#[test]
fn finds_a_rate_limited_links_rate() {
    let mut recv = Proc::netcore(&["recv", "--listen", "127.0.0.1:0", "--json"]);
    let recv_addr = addr_in(&recv.wait_line("listening on"));
    // A link slow enough that a busy 2-core machine still moves it (at 200 Mbit/s the relay
    // and the sender, short of CPU under a parallel test run, made it look like 160).
    let (relay, relay_addr) = Proc::relay(&recv_addr, &["--rate", "50Mbps", "--json"]);
    let out = run_ok(
        &[
            "blast",
            "--to",
            &relay_addr,
            "--control",
            &recv_addr,
            "--find-rate",
            "--trial",
            "1s",
            "--max-trials",
            "10",
            "--json",
        ],
        Duration::from_secs(120),
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["schema"], "netcore.findrate.v1");
    let rate = r["rate_bps"].as_f64().expect("a rate was found");
    assert!(
        // 49.1 Mbit/s of payload fit the link (1472 of every 1500 bytes); ten 1 s trials
        // bisect to within about 10 % below it.
        (42e6..=52e6).contains(&rate),
        "found {rate} bit/s through a 50 Mbit/s link: {r}"
    );
    assert_eq!(r["confirmed"], true, "{r}");
    let trials = r["trials"].as_array().unwrap();
    assert!(trials.len() >= 3 && trials.len() <= 10, "{r}");
    // The unpaced first trial overran the link.
    assert_eq!(trials[0]["passed"], false);
    drop(relay);
    drop(recv);
}

#[test]
fn find_rate_flags_are_checked() {
    for (args, what) in [
        (&["blast", "--find-rate", "--rate", "1Gbps"][..], "--rate"),
        (&["blast", "--loss", "1%"][..], "--find-rate"),
        (
            &["blast", "--find-rate", "--max-trials", "1"][..],
            "--max-trials",
        ),
        (&["blast", "--find-rate", "--loss", "200%"][..], "--loss"),
    ] {
        let (st, _, err) = run(args, Duration::from_secs(10));
        assert_eq!(st.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
    }
}
