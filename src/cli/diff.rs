//! `netcore diff`: reads the reports, hands them to `crate::diff`, prints its text.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::diff::{common_kind, diff, render, Input};

/// `netcore diff A.json B.json`, or `netcore diff --a A1.json A2.json --b B1.json B2.json`
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Each figure (rates, times, loss, errors) of side A against side B: the medians, the change, its bootstrap 95 % interval over each side's runs and a verdict: faster/slower, fewer/more, or within noise (one run a side: no interval). Both sides must be reports of one kind (any versions of it).\n\n  netcore blast --json > before.json; sysctl -w ...; netcore blast --json > after.json\n  netcore diff before.json after.json\n  netcore diff --a before.*.json --b after.*.json"
)]
pub struct DiffArgs {
    /// Two reports: A then B
    #[arg(value_name = "REPORT", conflicts_with_all = ["a", "b"])]
    pub reports: Vec<PathBuf>,
    /// Side A: one or more reports (runs of one setup)
    #[arg(long, value_name = "REPORT", num_args = 1.., requires = "b")]
    pub a: Vec<PathBuf>,
    /// Side B: one or more reports (runs of the other setup)
    #[arg(long, value_name = "REPORT", num_args = 1.., requires = "a")]
    pub b: Vec<PathBuf>,
}

pub fn run(args: &DiffArgs) -> Result<ExitCode> {
    let (a, b) = if args.a.is_empty() {
        match args.reports.as_slice() {
            [a, b] => (vec![a.clone()], vec![b.clone()]),
            other => crate::usage_bail!(
                "diff takes two reports (A B) or --a REPORT... --b REPORT..., got {} report(s)",
                other.len()
            ),
        }
    } else {
        (args.a.clone(), args.b.clone())
    };
    let (a, b) = (read_all(&a)?, read_all(&b)?);
    let kind = common_kind(&a, &b).map_err(super::common::usage)?;
    let rows = diff(&a, &b).map_err(super::common::usage)?;
    super::common::out(&render(&kind, &a, &b, &rows))?;
    Ok(ExitCode::SUCCESS)
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Input>> {
    paths.iter().map(read).collect()
}

fn read(path: &PathBuf) -> Result<Input> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| super::common::usage(format!("{name}: {e}")))?;
    let doc = serde_json::from_str(&text).map_err(|e| {
        super::common::usage(format!("{name}: not a --json report (not JSON: {e})"))
    })?;
    Ok(Input { name, doc })
}
