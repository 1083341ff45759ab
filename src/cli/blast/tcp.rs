//! A planned TCP test (`--proto tcp`): the glue to `flow::tcp`'s client.

use std::process::ExitCode;

use anyhow::Result;

use super::outcome::{exit_of, put_report};
use super::peer::Peer;
use super::plan::BlastPlan;
use crate::flow::payload::TcpSpec;
use crate::flow::tcp::client::{self, TcpOptions};
use crate::flow::tcp_engine::report::TcpReport;
use crate::stats::events::EventKind;
use crate::stats::plot::{self, PlotOptions, Series};

pub fn run(plan: &BlastPlan, spec: &TcpSpec) -> Result<ExitCode> {
    let stream = plan.out.stream;
    let peer = Peer::open(plan)?;
    let control = peer.control;
    let live = plan.out.live();
    let test_id: u64 = rand::random();
    stream.emit(EventKind::Start, |l| {
        l.kind("tcp")
            .test_id(format!("{test_id:016x}"))
            .peer(control)
            .data(&serde_json::json!({
                "plan": plan.amount,
                "settings": spec,
            }))
    })?;
    let report = client::run(
        &TcpOptions {
            control,
            spec: spec.clone(),
            plan: plan.amount,
            cpus: plan.cpus.send.clone(),
            interval: plan.interval,
            receiver_interval: plan.receiver_interval,
            wait: plan.rx.wait,
            client: plan.client.clone(),
            test_id,
        },
        &mut |row| {
            live.line(&TcpReport::interval_lines(row));
            let _ = stream.emit(EventKind::Interval, |l| l.kind("tcp").data(row));
        },
    );
    peer.finish();
    let report = stream.or_error(report)?;
    if let Some(p) = &plan.out.plot {
        plot_sum(p, &report)?;
    }
    put_report(&plan.out, "tcp", (&report.test_id, control), &report)?;
    Ok(exit_of(report.interrupted))
}

/// This side's sum per interval, in the unit the largest value reads best in; a run shorter
/// than one interval plots its average (a cross on the axis where its time is unknown).
pub(super) fn plot_sum(path: &std::path::Path, r: &TcpReport) -> Result<()> {
    let pts: Vec<(f64, Option<f64>)> = if r.intervals.is_empty() {
        r.sum.iter().map(|s| (s.recv_s, s.goodput_bps)).collect()
    } else {
        r.intervals.iter().map(|i| (i.t, Some(i.sum_bps))).collect()
    };
    let max = pts.iter().filter_map(|p| p.1).fold(0.0, f64::max);
    let (div, unit) = crate::units::BITS_PER_SEC.axis(max);
    plot::line_chart(
        path,
        &format!(
            "netcore TCP blast to {} ({})",
            r.target,
            r.settings.mode.name()
        ),
        "time (s)",
        unit,
        &[Series::with_unknown(
            "sum",
            pts.into_iter().map(|(t, y)| (t, y.map(|y| y / div))),
        )],
        &PlotOptions::default(),
    )
}
