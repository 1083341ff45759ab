//! The load generator (`netcore load`) and the model comparison (`netcore compare`).
//!
//! * [`sweep`] parses the list of client counts.
//! * [`workload`] builds what the clients send and the replies they expect (derived from the
//!   project's own task session, so the protocol lives in one place).
//! * [`schedule`] is the open-loop send schedule of `--rate`.
//! * [`engine`] drives one run's clients on the [`Reactor`](crate::reactor::Reactor).
//! * [`report`] turns runs into medians per sweep point and renders them.
//! * [`compare`] starts each server model, sweeps it under a time budget and tabulates/plots.
//!
//! A sweep runs every point `runs` times in a row ([`run_point`]) and reports the median of
//! each figure; errors are summed over the runs.

pub mod compare;
pub mod engine;
pub mod report;
pub mod schedule;
pub mod sweep;
pub mod workload;

use std::path::Path;

use anyhow::Result;

pub use engine::{ErrKind, ErrorCounts, Mode, RunConfig};
pub use report::{LoadReport, PointResult, RunResult, Summary};

use crate::stats::plot::{line_chart, PlotOptions, Series};

/// Runs one sweep point `runs` times; `on_run` is told about each finished run.
pub(crate) fn run_point(
    cfg: &RunConfig,
    clients: u32,
    runs: u32,
    mut on_run: impl FnMut(&RunResult),
) -> Result<PointResult> {
    let mut results = Vec::with_capacity(runs as usize);
    for run in 1..=runs {
        let o = engine::run(cfg, clients)?;
        let r = RunResult::from_outcome(run, &o);
        on_run(&r);
        let aborted = r.aborted || r.interrupted;
        results.push(r);
        if aborted {
            break;
        }
    }
    Ok(PointResult {
        clients,
        median: Summary::of(&results),
        runs: results,
    })
}

/// Plots a load sweep: x = clients; y = median wall time (tasks mode) or median tasks/s
/// (duration mode).
pub(crate) fn plot_sweep(path: &Path, r: &LoadReport) -> Result<()> {
    let tasks_mode = r.setup.tasks_mode();
    let pts: Vec<(f64, f64)> = r
        .points
        .iter()
        .map(|p| {
            let y = if tasks_mode {
                p.median.wall_s
            } else {
                p.median.tasks_per_s
            };
            (p.clients as f64, y)
        })
        .collect();
    let (title, y) = if tasks_mode {
        (
            format!("netcore load {}: median wall time", r.setup.target),
            "median wall time (s)",
        )
    } else {
        (
            format!("netcore load {}: median throughput", r.setup.target),
            report::Unit::of(&r.setup.proto).rate,
        )
    };
    let series = [Series::new(r.setup.workload.clone(), pts)];
    let span = r.points.last().map(|p| p.clients).unwrap_or(1) as f64
        / r.points.first().map(|p| p.clients).unwrap_or(1) as f64;
    let opts = PlotOptions {
        log_x: span >= 100.0,
        integer_x: true,
        ..PlotOptions::default()
    };
    line_chart(path, &title, "clients", y, &series, &opts)
}
