//! A bidirectional UDP test (`blast --bidir`): a forward test (this side sends) and a reverse
//! test (the receiver sends, [`super::reverse`]) run at the same time, each on its own control
//! connection to the same receiver, with its own test id, trackers and report. The receiver
//! (`recv`, or the embedded one) serves several tests at once, so it needs nothing new; both
//! data paths are opened by this side (the forward sockets send, the reverse receiver sends its
//! opener), so the test works through NAT as `-R` does.
//!
//! Both halves have the same plan, streams, length and rate (per direction, as iperf3 does).
//! A signal reaches both (each watches [`crate::sys::signal`]): each ends and reports
//! interrupted. The two reports are printed as one [`UdpBidirReport`].

use std::thread;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use super::receiver::{self, Event, RecvOptions};
use crate::flow::udp::report::{IntervalRow, UdpReport};
use crate::flow::udp::sender::{self, BlastOptions};
use crate::stats::Report;

/// The `schema` of a bidirectional UDP test's JSON report.
pub(crate) const SCHEMA: &str = "netcore.udp-bidir.v1";

/// Both halves of a `--bidir` UDP test, each the `netcore.udp.v4` report its side printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UdpBidirReport {
    pub schema: String,
    /// Where the report came from: netcore's version and revision, the host, kernel, CPUs,
    /// pinned threads, sysctls, when (`stats::meta`; absent in reports of older versions).
    #[serde(default)]
    pub meta: crate::stats::meta::Meta,
    /// This host sends, the receiver counts: the sender's copy of that test's report
    /// (`role` "sender").
    pub forward: UdpReport,
    /// The receiver sends, this host counts: this host's report of that test (`role`
    /// "receiver").
    pub reverse: UdpReport,
}

impl UdpBidirReport {
    /// Whether either half was cut short.
    pub fn interrupted(&self) -> bool {
        self.forward.receiver.interrupted || self.reverse.receiver.interrupted
    }
}

/// The names of the two halves, in the order they are printed.
pub(crate) const DIRECTIONS: [&str; 2] = ["forward", "reverse"];

impl Report for UdpBidirReport {
    fn meta(&self) -> &crate::stats::meta::Meta {
        &self.meta
    }

    fn to_table(&self) -> String {
        format!(
            "forward (this host sends):\n{}\nreverse (the receiver sends):\n{}",
            self.forward.to_table(),
            self.reverse.to_table()
        )
    }

    /// The two halves' CSV under one header, with a `direction` column first.
    fn to_csv(&self) -> String {
        let mut out = String::new();
        for (i, (dir, r)) in DIRECTIONS
            .iter()
            .zip([&self.forward, &self.reverse])
            .enumerate()
        {
            for (n, line) in r.to_csv().lines().enumerate() {
                match (n, i) {
                    (0, 0) => out.push_str(&format!("direction,{line}\n")),
                    (0, _) => {}
                    _ => out.push_str(&format!("{dir},{line}\n")),
                }
            }
        }
        out
    }
}

/// Runs the two halves at once against the receiver `opts` names: the forward test on this
/// thread ([`sender::run`], test id `opts.test_id`), the reverse one on another
/// ([`receiver::run_reverse`], test id `reverse_id`, receiving with `rx`); an id that is None
/// is chosen when the half opens. Each half's interval rows go to its callback. Both halves
/// always run to their end; if either failed, the error names the direction.
pub fn run(
    opts: &BlastOptions,
    reverse_id: Option<u64>,
    rx: RecvOptions,
    on_forward: &mut (dyn FnMut(&IntervalRow) + Send),
    on_reverse: &mut (dyn FnMut(Event) + Send),
) -> Result<UdpBidirReport> {
    // Checked once, before either half contacts the receiver.
    let opts = &sender::resolve(opts)?;
    let rev_opts = &BlastOptions {
        test_id: reverse_id,
        ..opts.clone()
    };
    let (forward, reverse) = thread::scope(|s| {
        let rev = thread::Builder::new()
            .name("netcore-bidir-rev".into())
            .spawn_scoped(s, move || receiver::run_reverse(rev_opts, rx, on_reverse));
        let fwd = sender::run(opts, on_forward);
        let rev = match rev {
            Ok(h) => h
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the reverse half's thread panicked"))),
            Err(e) => Err(anyhow!("cannot start the reverse half: {e}")),
        };
        (fwd, rev)
    });
    let forward = forward.map_err(|e| anyhow!("--bidir, forward half: {e:#}"))?;
    let reverse = reverse.map_err(|e| anyhow!("--bidir, reverse half: {e:#}"))?;
    Ok(UdpBidirReport {
        schema: SCHEMA.into(),
        meta: crate::stats::meta::Meta::gather(),
        forward,
        reverse,
    })
}
