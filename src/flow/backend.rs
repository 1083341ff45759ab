//! Which I/O backend moves the datagrams: the readiness path (`mio`: blocking/nonblocking
//! `sendmmsg`/`recvmmsg` batches) or io_uring (`uring`: linked `SEND` batches, multishot
//! `RECVMSG` into a provided-buffer ring). Both feed the same wire format, tracker and report.

use anyhow::{bail, Result};

/// The backend asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Backend {
    /// uring where io_uring works, else mio (the report says which ran).
    #[default]
    Auto,
    /// sendmmsg/recvmmsg batches (the readiness path).
    Mio,
    /// io_uring (fails at start, naming the cause, where the kernel refuses it).
    Uring,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Mio => "mio",
            Backend::Uring => "uring",
        }
    }
}

/// Why io_uring cannot carry this side of a test (None: it can).
#[cfg(feature = "uring")]
fn uring_unavailable(recv: bool) -> Option<String> {
    use crate::uring::Ring;
    // A small ring with one provided buffer: the same setup and probe the real one goes through.
    match Ring::new(8, recv.then_some((1, 4096))) {
        Err(e) => Some(e.to_string()),
        Ok(r) if recv && !r.caps().multishot_recv => Some(
            "io_uring unavailable: the kernel lacks multishot RECVMSG with provided buffers \
             (Linux 6.0 or later needed)"
                .to_string(),
        ),
        Ok(_) => None,
    }
}

#[cfg(not(feature = "uring"))]
fn uring_unavailable(_recv: bool) -> Option<String> {
    Some("io_uring unavailable: netcore was built without the `uring` feature".to_string())
}

/// Why io_uring cannot send zero-copy here (None: it can).
#[cfg(feature = "uring")]
fn zerocopy_unavailable() -> Option<String> {
    match crate::uring::Ring::new(8, None) {
        Err(e) => Some(e.to_string()),
        Ok(r) if !r.caps().send_zc => {
            Some("the kernel lacks io_uring SEND_ZC (Linux 6.0 or later needed)".to_string())
        }
        Ok(_) => None,
    }
}

#[cfg(not(feature = "uring"))]
fn zerocopy_unavailable() -> Option<String> {
    uring_unavailable(false)
}

/// The sending side with `--zerocopy`: uring (`SEND_ZC`) whatever `auto` would pick, or
/// an error naming why it cannot be.
pub(crate) fn resolve_zerocopy(b: Backend) -> Result<Backend> {
    if b == Backend::Mio {
        bail!("--zerocopy needs the uring backend (io_uring SEND_ZC); drop --backend mio");
    }
    match zerocopy_unavailable() {
        Some(why) => bail!("--zerocopy: {why}; drop --zerocopy"),
        None => Ok(Backend::Uring),
    }
}

/// The receiving side: `auto` is uring where io_uring works (multishot `RECVMSG` received
/// 1.01x and 1.03x of `recvmmsg`'s goodput in `CONFIGS=uring tools/compare-udp-burst.sh`), else mio.
pub(crate) fn resolve_recv(b: Backend) -> Result<Backend> {
    resolve(b, true)
}

/// The sending side: `auto` is uring where io_uring works (linked `SEND` batches: 0.89x to
/// 1.03x of `sendmmsg` over four runs of the script, parity within its spread), else mio.
pub(crate) fn resolve_send(b: Backend) -> Result<Backend> {
    resolve(b, false)
}

fn resolve(b: Backend, recv: bool) -> Result<Backend> {
    match b {
        Backend::Mio => Ok(Backend::Mio),
        Backend::Uring => match uring_unavailable(recv) {
            Some(why) => bail!("{why}; use --backend mio"),
            None => Ok(Backend::Uring),
        },
        Backend::Auto => Ok(match uring_unavailable(recv) {
            Some(_) => Backend::Mio,
            None => Backend::Uring,
        }),
    }
}
