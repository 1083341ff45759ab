//! Command-line definitions (clap derive) and the glue that calls each command.
//! One file per command; each parses and validates its flags, then calls the library.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub mod common;

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
pub enum Command {}

/// Parses the process arguments and runs the command.
pub fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    run(cli)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {}
}
