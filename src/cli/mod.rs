//! Command-line definitions (clap derive) and the glue that calls each command.
//! One file per command; each parses and validates its flags, then calls the library.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};

pub mod blast;
pub mod common;
pub mod compare;
pub mod diff;
pub mod load;
pub mod recv;
pub mod relay;
pub mod rpm;
pub mod schemas;
pub mod serve;
pub mod traffic;

pub use common::UsageError;

#[derive(Parser, Debug)]
#[command(
    name = "netcore",
    version,
    about = "Linux network performance workbench",
    propagate_version = true,
    arg_required_else_help = true,
    after_help = "Exit status: 0 = done, 1 = a test or run failed, 2 = bad usage or value, 3 = a load report counts errors, 128 + N = a signal N ended the run (130 for Ctrl-C; its report, marked interrupted, was printed)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Blast(blast::BlastArgs),
    Recv(recv::RecvArgs),
    Traffic(traffic::TrafficArgs),
    /// Run a TCP server (task, echo, HTTP/1.1 or sockperf protocol) with one of the
    /// concurrency models
    Serve(serve::ServeArgs),
    /// Forward UDP datagrams with seeded loss, reordering, duplication, delay and a rate limit,
    /// and report the ground truth a receiver must match
    Relay(relay::RelayArgs),
    Rpm(rpm::RpmArgs),
    /// Drive a TCP server with a sweep of client counts (task, echo, HTTP/1.1 or sockperf
    /// protocol)
    Load(load::LoadArgs),
    /// Start each server model in turn, run the same sweep against each, tabulate and plot
    Compare(compare::CompareArgs),
    /// Compare two reports (or two sets of runs) of the same kind, figure by figure, with
    /// intervals
    Diff(diff::DiffArgs),
    /// Print a shell completion script (generated from these definitions)
    Completions(CompletionsArgs),
    /// Print a man page in roff (generated from these definitions)
    Man(ManArgs),
    /// Print the JSON Schema of a --json report (as shipped in docs/schemas/)
    Schema(SchemaArgs),
}

/// `netcore schema NAME`
#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// The report's schema name
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(schemas::names()))]
    pub name: String,
}

/// `netcore completions SHELL`
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Install: netcore completions bash > ~/.local/share/bash-completion/completions/netcore\n         netcore completions zsh > ~/.zfunc/_netcore   (with fpath+=~/.zfunc)\n         netcore completions fish > ~/.config/fish/completions/netcore.fish"
)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `netcore man [COMMAND]`
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Install: netcore man > ~/.local/share/man/man1/netcore.1; netcore man load > ~/.local/share/man/man1/netcore-load.1"
)]
pub struct ManArgs {
    /// A command's page (netcore-COMMAND(1)) instead of netcore(1)
    pub command: Option<String>,
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "netcore", out);
}

/// Writes the man page of netcore, or of `netcore COMMAND`, to `out`.
pub fn man(command: Option<&str>, out: &mut dyn std::io::Write) -> Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => {
            let sub = cmd
                .find_subcommand(name)
                .ok_or_else(|| common::usage(format!("no command '{name}'")))?
                .clone();
            // clap names are &'static str (without its `string` feature): one page per process.
            let page_name: &'static str = Box::leak(format!("netcore-{name}").into_boxed_str());
            sub.name(page_name)
        }
    };
    clap_mangen::Man::new(page).render(out)?;
    Ok(())
}

/// Exit status of a usage error (clap's, or a [`common::UsageError`] found after parsing).
pub const EXIT_USAGE: u8 = 2;

/// iperf3's flags that netcore spells differently (its short flags -t -n -k -l -b -i -w -J -c
/// netcore takes as they are): the flag to use instead.
const IPERF3_SPELLINGS: &[(&str, &str)] = &[
    (
        "-p",
        "give the port with the address: --to HOST:PORT (recv: --listen PORT)",
    ),
    (
        "-u",
        "UDP is blast's default (--proto udp); TCP is --proto tcp",
    ),
    ("-s", "the server is a command of its own: netcore recv"),
    ("-Z", "iperf3's -Z is --sendfile"),
    ("-C", "iperf3's -C is --congestion ALGO"),
    ("-M", "iperf3's -M is --mss BYTES"),
    ("-N", "iperf3's -N is --no-delay"),
    ("-A", "iperf3's -A is --cpus LIST (or --pin)"),
    ("-B", "iperf3's -B is --bind ADDR"),
    (
        "-O",
        "netcore has no omit: every interval is reported, the first ones too",
    ),
];

/// A tip for a flag clap did not know, when iperf3 spells it that way.
fn iperf3_tip(e: &clap::Error) -> Option<&'static str> {
    use clap::error::{ContextKind, ContextValue};
    if e.kind() != clap::error::ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.get(..2)?;
    IPERF3_SPELLINGS
        .iter()
        .find(|(f, _)| *f == flag)
        .map(|(_, tip)| *tip)
}

/// Parses the process arguments and runs the command.
/// Usage errors are printed as clap renders them (the error on a first line starting
/// `netcore: error: `, then clap's suggestions, possible values and usage) with exit code 2;
/// `--help` and `--version` print as usual; `netcore` alone prints the help (exit code 2).
pub fn main() -> Result<ExitCode> {
    // A termination signal waits (blocked) until the command's handlers are in: one that came
    // before them was lost when SIGINT was ignored at the start (`nohup`, `trap '' INT`).
    crate::sys::signal::hold().context("cannot block the termination signals")?;
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            e.print()?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            let msg = e.render().to_string();
            let msg = match msg.strip_prefix("error: ") {
                Some(rest) => format!("netcore: error: {rest}"),
                None => msg,
            };
            eprint!("{msg}");
            if let Some(tip) = iperf3_tip(&e) {
                eprintln!("tip: {tip}");
            }
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    install_signals(&cli.command)?;
    crate::sys::signal::release().context("cannot unblock the termination signals")?;
    let code = run(cli)?;
    Ok(interrupted_status().unwrap_or(code))
}

/// Installs the termination handlers of every command that runs something (SIGINT, SIGTERM;
/// `recv` SIGHUP too: a graceful stop), so that each ends with its report, marked
/// interrupted; the commands that only print keep the default actions.
fn install_signals(c: &Command) -> Result<()> {
    use crate::sys::signal;
    match c {
        Command::Diff(_) | Command::Completions(_) | Command::Man(_) | Command::Schema(_) => {}
        Command::Recv(_) => {
            signal::install()?;
            signal::install_hangup()?;
        }
        _ => signal::install()?,
    }
    Ok(())
}

/// The one exit status of a run a signal cut short, whatever the command: 128 + the signal
/// (130 for Ctrl-C, 143 for SIGTERM), once its report (marked interrupted) is out. None when
/// no signal arrived.
pub fn interrupted_status() -> Option<ExitCode> {
    match crate::sys::signal::last_signal() {
        0 => None,
        sig => Some(ExitCode::from((128 + sig).clamp(0, 255) as u8)),
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Blast(a) => blast::run(a),
        Command::Recv(a) => recv::run(a),
        Command::Traffic(a) => traffic::run(a),
        Command::Serve(a) => serve::run(&a),
        Command::Relay(a) => relay::run(a),
        Command::Rpm(a) => rpm::run(a),
        Command::Load(a) => load::run(&a),
        Command::Compare(a) => compare::run(&a),
        Command::Diff(a) => diff::run(&a),
        Command::Completions(a) => {
            let mut o = std::io::stdout().lock();
            completions(a.shell, &mut o);
            std::io::Write::flush(&mut o)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema(a) => {
            let text = schemas::text(&a.name)
                .ok_or_else(|| common::usage(format!("no schema '{}'", a.name)))?;
            common::out(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(a) => {
            let mut o = std::io::stdout().lock();
            man(a.command.as_deref(), &mut o)?;
            std::io::Write::flush(&mut o)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
