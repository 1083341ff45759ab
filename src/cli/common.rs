//! Flags shared by several commands.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use crate::flow::udp::receiver::RxWait;
use crate::stats::Format;
use crate::sys::affinity;
use crate::units;

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

/// `--json` / `--csv`: how a command prints its report (a table and live lines by default).
#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Print the report as JSON (versioned: its "schema" field names the schema, e.g.
    /// netcore.udp.v1)
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the report as CSV
    #[arg(long)]
    pub csv: bool,
}

impl OutputArgs {
    pub fn format(&self) -> Format {
        Format::from_flags(self.json, self.csv)
    }
}

/// How a UDP receiver reads: `recv`'s flags, and `blast`'s for its embedded receiver.
#[derive(Args, Debug, Clone)]
pub struct RxArgs {
    /// Receive buffer to ask for (SO_RCVBUFFORCE when permitted, else SO_RCVBUF)
    #[arg(long, value_parser = units::parse_nonzero_size, default_value = "128MiB", allow_hyphen_values = true)]
    pub rcvbuf: u64,
    /// Busy-poll the socket during a test (burns the receiver's core)
    #[arg(long, conflicts_with = "block")]
    pub spin: bool,
    /// Sleep in recvmmsg during a test instead of polling with 50 µs naps (the default polls:
    /// on loopback every wake-up of a sleeping receiver runs on the sender's core)
    #[arg(long)]
    pub block: bool,
    /// Do not ask for UDP_GRO
    #[arg(long)]
    pub no_gro: bool,
}

impl RxArgs {
    /// How the receiving thread waits during a test.
    pub fn wait(&self) -> RxWait {
        match (self.spin, self.block) {
            (true, _) => RxWait::Spin,
            (_, true) => RxWait::Block,
            _ => RxWait::Poll,
        }
    }
}

/// `--plot FILE`.
#[derive(Args, Debug, Clone, Default)]
pub struct PlotArg {
    /// Also write a plot of the run to FILE (SVG; PNG when FILE ends in .png)
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

impl PlotArg {
    /// Refuses an unusable FILE before any work is done.
    pub fn check(&self) -> Result<()> {
        match &self.plot {
            Some(p) => crate::stats::plot::check_output(p),
            None => Ok(()),
        }
    }

    pub fn file(&self) -> Option<&Path> {
        self.plot.as_deref()
    }
}
