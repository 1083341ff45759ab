//! `netcore blast --find-rate`: runs the trials [`flow::search::Search`] asks for, each a
//! whole netcore test (a fresh embedded receiver per trial, or the `--to` receiver), and
//! prints every trial and the rate found.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::outcome::{exit_of, print_report};
use super::peer::Peer;
use super::plan::{BlastPlan, SearchPlan};
use crate::flow::search::{FindRateReport, Next, Search, SCHEMA};
use crate::flow::udp::sender;
use crate::stats::plot::{self, PlotOptions, Series};
use crate::stats::{Format, Report};
use crate::sys::signal;
use crate::units::{fmt_bits_per_sec, Rate};

/// Bisection stops when the passing and failing rates are within 2 % of each other.
const PRECISION: f64 = 0.02;

pub fn run(plan: &BlastPlan, s: &SearchPlan) -> Result<ExitCode> {
    let (len, format) = (plan.len, plan.out.format);
    let mut search = Search::new(s.loss, PRECISION, s.max_trials as usize);
    let mut target_name = String::new();
    let mut interrupted = false;
    while let Next::Try(rate) = search.next() {
        if signal::stop_requested() {
            interrupted = true;
            break;
        }
        let peer = Peer::open(plan)?;
        target_name = peer.data.to_string();
        let opts = plan.blast_options((peer.data, peer.control), rate.map(Rate::BitsPerSec));
        let r = sender::run(&opts, &mut |_| {});
        peer.finish();
        let r = r?;
        if r.receiver.interrupted {
            interrupted = true;
            break;
        }
        let acc = &r.receiver.accounting;
        search.record(
            rate,
            r.sender.rate_bps,
            r.receiver.goodput_bps,
            acc.sent,
            acc.lost,
        );
        let t = search.trials().last().expect("just recorded");
        eprintln!(
            "find-rate: trial {} at {}: sent {}, lost {} of {} ({}): {}",
            search.trials().len(),
            rate.map_or_else(|| "full speed".into(), fmt_bits_per_sec),
            fmt_bits_per_sec(t.sent_bps),
            crate::units::fmt_count(t.lost),
            crate::units::fmt_count(t.sent),
            crate::units::fmt_pct(t.loss * 100.0),
            if t.passed { "pass" } else { "fail" }
        );
        // Let the kernel's queues drain between trials.
        std::thread::sleep(Duration::from_millis(200));
    }
    let (rate_bps, confirmed) = search.result();
    let report = FindRateReport {
        schema: SCHEMA,
        meta: crate::stats::meta::Meta::gather(),
        target: target_name,
        len,
        loss_bound: s.loss,
        trial_s: s.trial.as_secs_f64(),
        trials: search.trials().to_vec(),
        rate_bps,
        pps: rate_bps.map(|r| r / (len as f64 * 8.0)),
        confirmed,
        interrupted,
    };
    if let Some(p) = &plan.out.plot {
        plot_trials(p, &report)?;
    }
    print_report(&report.render(format))?;
    if format != Format::Table {
        eprintln!("{}", report.summary());
    }
    Ok(exit_of(interrupted))
}

/// Loss (%) against the rate tried, one point per trial; the rate in the unit the largest
/// one reads best in.
fn plot_trials(path: &std::path::Path, r: &FindRateReport) -> Result<()> {
    let rate = |t: &crate::flow::search::Trial| t.rate_bps.unwrap_or(t.sent_bps);
    let (div, unit) =
        crate::units::BITS_PER_SEC.axis(r.trials.iter().map(rate).fold(0.0, f64::max));
    let (pass, fail): (Vec<_>, Vec<_>) = r.trials.iter().partition(|t| t.passed);
    let pts = |v: Vec<&crate::flow::search::Trial>| -> Vec<(f64, f64)> {
        let mut p: Vec<(f64, f64)> = v.iter().map(|t| (rate(t) / div, t.loss * 100.0)).collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        p
    };
    plot::line_chart(
        path,
        &format!("netcore blast --find-rate: {}-byte datagrams", r.len),
        &format!("rate tried ({unit})"),
        "loss (%)",
        &[
            Series::new("pass", pts(pass)),
            Series::new("fail", pts(fail)),
        ],
        &PlotOptions::default(),
    )
}
