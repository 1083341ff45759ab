//! `netcore blast`: its flags ([`args`]), the plan built once from them ([`plan`]), and one
//! runner per kind of run, each taking the plan: `udp` (one UDP test, `-R`, `--bidir`), `tcp`
//! (`--proto tcp`), `find_rate` (`--find-rate`'s trials) and `iperf3` (`--to iperf3://`).
//! The runners share the receiver a test runs against (`peer`) and what is done with its
//! outcome (`outcome`), never each other's code.

use std::process::ExitCode;

use anyhow::Result;

pub mod args;
mod find_rate;
mod iperf3;
mod outcome;
mod peer;
pub mod plan;
mod tcp;
mod udp;

pub use args::BlastArgs;
use plan::{BlastPlan, Kind, Target};

/// Plans the run from the flags, then runs it.
pub fn run(a: BlastArgs) -> Result<ExitCode> {
    let plan = BlastPlan::from_args(a)?;
    match (&plan.target, &plan.kind) {
        (Target::Iperf3(server), Kind::Tcp(spec)) => iperf3::tcp(&plan, *server, spec),
        (Target::Iperf3(server), _) => iperf3::udp(&plan, *server),
        (_, Kind::Tcp(spec)) => tcp::run(&plan, spec),
        (_, Kind::FindRate(search)) => find_rate::run(&plan, search),
        (_, Kind::Udp) => udp::run(&plan),
    }
}
