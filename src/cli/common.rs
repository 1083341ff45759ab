//! Flags shared by several commands.

use anyhow::Result;
use clap::Args;

use crate::sys::affinity;

/// `--pin` / `--cpus LIST`.
#[derive(Args, Debug, Clone, Default)]
pub struct PinArgs {
    /// Pin the busy threads to CPUs chosen by netcore (reported in the output)
    #[arg(long)]
    pub pin: bool,
    /// Pin the busy threads to these CPUs, in order (e.g. 0,1 or 0-3)
    // (`::std::vec::Vec` makes clap take the list as one value, from `parse_cpus`.)
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<::std::vec::Vec<usize>>,
}

fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    affinity::parse_cpu_list(s).map_err(|e| e.to_string())
}
