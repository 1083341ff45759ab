//! Flags shared by several commands.

use std::io::Write;

use anyhow::Result;
use clap::Args;

use crate::sys::affinity;

/// Writes `s` to stdout and flushes it.
pub fn out(s: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// A parsed `--cpus` list (a newtype, so clap takes it as one value, not many).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// `--pin` / `--cpus LIST`.
#[derive(Args, Debug, Clone, Default)]
pub struct PinArgs {
    /// Pin the busy threads to CPUs chosen by netcore (reported in the output)
    #[arg(long)]
    pub pin: bool,
    /// Pin the busy threads to these CPUs, in order (e.g. 0,1 or 0-3)
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
}

impl PinArgs {
    /// The CPU list given with --cpus, if any.
    pub fn list(&self) -> Option<&[usize]> {
        self.cpus.as_ref().map(|c| c.0.as_slice())
    }
}

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    affinity::parse_cpu_list(s)
        .map(CpuList)
        .map_err(|e| e.to_string())
}
