//! A planned UDP test: forward, `-R` (this side receives) or `--bidir` (both at once).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Result;

use super::outcome::{exit_of, print_report, put_report};
use super::peer::Peer;
use super::plan::BlastPlan;
use crate::cli::common::recv_interval_line;
use crate::flow::recv::bidir;
use crate::flow::recv::receiver::{self, Event};
use crate::flow::streams::Mode;
use crate::flow::udp::report::{IntervalRow, UdpReport};
use crate::flow::udp::sender::{self, BlastOptions};
use crate::stats::events::EventKind;
use crate::stats::plot::{self, PlotOptions, Series};
use crate::stats::unknown::known;
use crate::stats::Report;
use crate::units;

pub fn run(plan: &BlastPlan) -> Result<ExitCode> {
    let peer = Peer::open(plan)?;
    let mut opts = plan.blast_options((peer.data, peer.control), plan.rate);
    // The test's id is chosen here, so that the start event names it.
    let test_id: u64 = rand::random();
    opts.test_id = Some(test_id);
    if plan.mode == Mode::Bidir {
        return run_bidir(plan, &opts, peer);
    }
    let (stream, live) = (plan.out.stream, plan.out.live());
    let reverse = plan.mode == Mode::Reverse;
    start_event(plan, peer.data, test_id, reverse)?;
    let report = if reverse {
        // This side receives: its UDP thread has the embedded receiver's flags.
        receiver::run_reverse(&opts, plan.rx_on(plan.cpus.recv), &mut |ev| {
            if let Event::Interval { row, .. } = ev {
                live.line(&recv_interval_line(&row));
                interval_event(plan, test_id, &row);
            }
        })
    } else {
        sender::run(&opts, &mut |row| {
            live.line(&(UdpReport::interval_line(row) + "\n"));
            interval_event(plan, test_id, row);
        })
    };
    let target = peer.data;
    peer.finish();
    let report = stream.or_error(report)?;
    if let Some(p) = &plan.out.plot {
        plot_intervals(p, &report)?;
    }
    put_report(&plan.out, "udp", (&report.test_id, target), &report)?;
    Ok(exit_of(report.receiver.interrupted))
}

/// `blast --bidir` (UDP): the forward test (`opts.test_id`) and the reverse one at once, their
/// interval lines marked `fwd`/`rev` as they come, then one report with both; with
/// `--json-stream`, each half's start, intervals and end under its own test id.
fn run_bidir(plan: &BlastPlan, opts: &BlastOptions, peer: Peer) -> Result<ExitCode> {
    let (stream, live) = (plan.out.stream, plan.out.live());
    let forward_id = opts.test_id.unwrap_or_else(rand::random);
    let reverse_id: u64 = rand::random();
    start_event(plan, peer.data, forward_id, false)?;
    start_event(plan, peer.data, reverse_id, true)?;
    let report = bidir::run(
        opts,
        Some(reverse_id),
        plan.rx_on(plan.cpus.recv),
        &mut |row| {
            live.line(&format!("fwd {}\n", UdpReport::interval_line(row)));
            interval_event(plan, forward_id, row);
        },
        &mut |ev| {
            if let Event::Interval { row, .. } = ev {
                live.line(&format!("rev {}", recv_interval_line(&row)));
                interval_event(plan, reverse_id, &row);
            }
        },
    );
    let target = peer.data;
    peer.finish();
    let report = stream.or_error(report)?;
    if stream.on() {
        for half in [&report.forward, &report.reverse] {
            put_report(&plan.out, "udp", (&half.test_id, target), half)?;
        }
    } else {
        print_report(&report.render(plan.out.format))?;
    }
    Ok(exit_of(report.interrupted()))
}

/// The `--json-stream` start of test `test_id` (this side receives when `reverse`).
fn start_event(plan: &BlastPlan, peer: SocketAddr, test_id: u64, reverse: bool) -> Result<()> {
    plan.out.stream.emit(EventKind::Start, |l| {
        l.kind("udp")
            .test_id(format!("{test_id:016x}"))
            .peer(peer)
            .data(&serde_json::json!({
                "len": plan.len,
                "plan": plan.amount,
                "rate": plan.rate.map(|r| r.to_string()),
                "streams": plan.streams,
                "reverse": reverse,
                "bidir": plan.mode == Mode::Bidir,
            }))
    })
}

/// The `--json-stream` line of one interval of test `test_id`.
fn interval_event(plan: &BlastPlan, test_id: u64, row: &IntervalRow) {
    let _ = plan.out.stream.emit(EventKind::Interval, |l| {
        l.kind("udp").test_id(format!("{test_id:016x}")).data(row)
    });
}

/// Sent and received rate per interval, in the unit the largest value reads best in (a
/// 200 Mbit/s test is drawn in Mbit/s); a run shorter than one interval plots its average (a
/// cross on the axis where the receiver's time is unknown: one receive batch).
fn plot_intervals(path: &std::path::Path, r: &UdpReport) -> Result<()> {
    let (sent, recv): (Vec<_>, Vec<_>) = if r.intervals.is_empty() {
        (
            vec![(r.sender.elapsed_s, Some(r.sender.rate_bps))],
            vec![(r.receiver.duration_s, known(r.receiver.goodput_bps))],
        )
    } else {
        r.intervals
            .iter()
            .map(|i| ((i.t, Some(i.sent_bps)), (i.t, Some(i.received_bps))))
            .unzip()
    };
    let max = sent
        .iter()
        .chain(&recv)
        .filter_map(|p| p.1)
        .fold(0.0, f64::max);
    let (div, unit) = units::BITS_PER_SEC.axis(max);
    let scale = |v: Vec<(f64, Option<f64>)>| {
        v.into_iter()
            .map(move |(t, y)| (t, y.map(|y| y / div)))
            .collect::<Vec<_>>()
    };
    plot::line_chart(
        path,
        &format!("netcore blast: {}-byte datagrams to {}", r.len, r.target),
        "time (s)",
        unit,
        &[
            Series::with_unknown("sent", scale(sent)),
            Series::with_unknown("received", scale(recv)),
        ],
        &PlotOptions::default(),
    )
}
