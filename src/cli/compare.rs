//! `netcore compare`: flags, validation, and the glue to [`crate::load::compare`].

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::common::{out, OutputArgs, PlotArg, ProgressArg};
use super::load::{exit_status, parse_sweep, ProtoArg, Sweep, WorkloadArgs};
use crate::load::compare::{self, CompareConfig};
use crate::stats::Report;
use crate::units::parse_nonzero_duration;

/// Server models `compare` can start (the `serve --model` values).
pub const MODELS: [&str; 6] = ["iterative", "fork", "thread", "pool", "epoll", "uring"];

/// Ready-made workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// The Python tutorial's workload: every client does 3 tasks of `SLEEP 1000` (about 3 s)
    Tutorial,
}

/// `netcore compare`: start every server model in turn and run the same sweep against each.
#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Exit status: 0 = no errors, 1 = could not run, 2 = bad usage, 3 = the report counts errors."
)]
pub struct CompareArgs {
    /// Server models, in order (iterative, fork, thread, pool, epoll, uring)
    #[arg(long, value_name = "LIST", default_value = "iterative,fork,thread,pool,epoll", value_parser = parse_models)]
    pub models: Models,
    /// Client counts to sweep: 1,10,100 or 10,20,..,100 or 10..=100:10
    #[arg(long, value_name = "LIST", default_value = "10,20,..,100", value_parser = parse_sweep)]
    pub clients: Sweep,
    /// Runs per sweep point (medians are reported)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    /// Ready-made workload; tutorial: 3 tasks of "SLEEP 1000" per client (explicit
    /// --tasks/--task override its parts)
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Time budget per model: points estimated to overrun it are skipped, and no run may last
    /// longer
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_nonzero_duration)]
    pub max_time: Duration,
    #[command(flatten)]
    pub work: WorkloadArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub progress: ProgressArg,
    #[command(flatten)]
    pub plot: PlotArg,
}

/// A parsed `--models` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Models(pub Vec<String>);

fn parse_models(s: &str) -> Result<Models, String> {
    let mut v: Vec<String> = Vec::new();
    for m in s.split(',').map(str::trim) {
        let m = if m == "process" { "fork" } else { m };
        if !MODELS.contains(&m) {
            return Err(format!(
                "unknown model '{m}' (known: {})",
                MODELS.join(", ")
            ));
        }
        if v.iter().any(|x| x == m) {
            return Err(format!("model '{m}' listed twice"));
        }
        v.push(m.to_string());
    }
    Ok(Models(v))
}

/// Runs `netcore compare`.
pub fn run(a: &CompareArgs) -> Result<ExitCode> {
    a.plot.check()?;
    let tutorial = a.preset == Some(Preset::Tutorial);
    if tutorial && a.work.proto() == ProtoArg::Echo {
        crate::usage_bail!("--preset tutorial uses the task protocol (drop --proto echo)");
    }
    let (mut run, mut setup) = a.work.build(tutorial)?;
    // A reply may legitimately wait as long as the budget allows (an iterative server keeps
    // later clients in its listen queue), but never longer.
    run.timeout = run.timeout.max(a.max_time);
    setup.timeout_s = run.timeout.as_secs_f64();
    setup.runs = a.runs;
    setup.target = "127.0.0.1 (each model started by compare)".into();
    let exe = std::env::current_exe().context("cannot find the netcore executable")?;
    let mut serve_args = vec!["--proto".to_string(), setup.proto.clone()];
    let max_clients = *a.clients.0.last().unwrap_or(&1);
    serve_args.extend(["--max-conns".to_string(), max_clients.max(1).to_string()]);
    // The servers serve only our clients: a --think longer than serve's default idle timeout
    // (30 s) must not get them closed between tasks.
    serve_args.extend(["--idle-timeout".to_string(), "0".to_string()]);
    let cfg = CompareConfig {
        models: a.models.0.clone(),
        clients: a.clients.0.clone(),
        runs: a.runs,
        run,
        max_time: a.max_time,
        serve_args,
        exe,
        preset: a.preset.map(|_| "tutorial".to_string()),
        setup,
    };
    // Ctrl-C / SIGTERM end the current run and stop its server; the report shows what ran.
    let runs = super::load::total_runs(&a.clients, a.runs) * a.models.0.len() as u64;
    let progress = super::common::Progress::new(a.output.format(), a.progress.progress, runs);
    let report = compare::run(&cfg, &mut |line| progress.run_done(line))?;
    progress.finish();
    out(&report.render(a.output.format()))?;
    if let Some(p) = a.plot.file() {
        report.plot(p)?;
    }
    Ok(exit_status(report.total_errors()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models() {
        assert_eq!(
            parse_models("thread,epoll").unwrap().0,
            vec!["thread", "epoll"]
        );
        assert_eq!(parse_models("process").unwrap().0, vec!["fork"]);
        assert!(parse_models("thread,thread").is_err());
        assert!(parse_models("nginx").is_err());
        assert!(parse_models("").is_err());
    }
}
