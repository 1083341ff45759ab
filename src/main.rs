//! The `netcore` binary: parse the command line, run the command, print the error chain once,
//! map the outcome to an exit code.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    netcore::stats::meta::mark_start();
    match netcore::cli::main() {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (`netcore ... | head`) is not an error worth a message.
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            let mut msg = format!("netcore: error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            let _ = writeln!(std::io::stderr(), "{msg}");
            if e.downcast_ref::<netcore::cli::common::UsageError>()
                .is_some()
            {
                ExitCode::from(netcore::cli::EXIT_USAGE)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
