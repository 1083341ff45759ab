//! Command-line definitions (clap derive) and the glue that calls each command.
//! One file per command; each parses and validates its flags, then calls the library.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub mod common;
pub mod compare;
pub mod find_rate;
pub mod load;
pub mod relay;
pub mod serve;
pub mod tcp;
pub mod traffic;
pub mod udp;

/// A usage error found after parsing (flags that do not go together): one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Parser, Debug)]
#[command(
    name = "netcore",
    version,
    about = "Linux network performance workbench",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Blast(udp::BlastArgs),
    Recv(udp::RecvArgs),
    Traffic(traffic::TrafficArgs),
    /// Run a TCP server (task or echo protocol) with one of the concurrency models
    Serve(serve::ServeArgs),
    /// Forward UDP datagrams with seeded loss, reordering, duplication, delay and a rate limit,
    /// and report the ground truth a receiver must match
    Relay(relay::RelayArgs),
    /// Drive a TCP server with a sweep of client counts (task or echo protocol)
    Load(load::LoadArgs),
    /// Start each server model in turn, run the same sweep against each, tabulate and plot
    Compare(compare::CompareArgs),
}

/// Parses the process arguments and runs the command.
/// Usage errors are printed as one line (`netcore: error: ...`) with exit code 2; `--help` and
/// `--version` print as usual.
pub fn main() -> Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            e.print()?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            // One line: clap's first line (the error itself), without usage and hints.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("netcore: error: {first}");
            return Ok(ExitCode::from(2));
        }
    };
    run(cli)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Blast(a) => {
            tcp::check(&a)?;
            match a.proto {
                common::Proto::Tcp => tcp::blast(a),
                common::Proto::Udp => udp::blast(a),
            }
        }
        Command::Recv(a) => udp::recv(a),
        Command::Traffic(a) => traffic::run(a),
        Command::Serve(a) => serve::run(&a),
        Command::Relay(a) => relay::run(a),
        Command::Load(a) => load::run(&a),
        Command::Compare(a) => compare::run(&a),
    }
}
