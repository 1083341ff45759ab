//! What a runner does with a test's outcome: print the report, and the exit status.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::plan::Output;
use crate::cli::common::out;
use crate::stats::events::EventKind;
use crate::stats::Report;
use crate::sys::signal;

/// A test's report where the output goes: the `--json-stream` end line (of `kind`, naming
/// the test and the peer), or the report in the chosen format.
pub(crate) fn put_report(
    o: &Output,
    kind: &str,
    (test_id, peer): (&str, SocketAddr),
    report: &impl Report,
) -> Result<()> {
    if o.stream.on() {
        o.stream.emit(EventKind::End, |l| {
            l.kind(kind).test_id(test_id).peer(peer).data(report)
        })
    } else {
        print_report(&report.render(o.format))
    }
}

/// Prints a report on stdout; when stdout is gone (closed, a full disk) it goes to stderr, so
/// it is not lost silently, and the run fails saying so.
pub(crate) fn print_report(text: &str) -> Result<()> {
    if let Err(e) = out(text) {
        eprint!("{text}");
        bail!("cannot write the report to stdout ({e}); it went to stderr");
    }
    Ok(())
}

/// The exit code of a test that ran: 0, or 128 + the signal (130 for Ctrl-C, 143 for
/// SIGTERM) when a signal cut it short (its report, marked interrupted, was printed), or 1 when
/// the receiver ended it early.
pub(crate) fn exit_of(interrupted: bool) -> ExitCode {
    match (interrupted, signal::last_signal()) {
        (false, _) => ExitCode::SUCCESS,
        (true, 0) => ExitCode::from(1),
        (true, sig) => ExitCode::from(128u8.saturating_add(sig as u8)),
    }
}
