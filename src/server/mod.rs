//! `netcore serve`: the concurrency models, each a thin driver around [`task::Session`].
//!
//! | model | how connections are served |
//! |---|---|
//! | `iterative` | one at a time on the main thread; the others wait in the listen queue |
//! | `fork` | a child process per connection (the parent accepts and reaps) |
//! | `thread` | a thread per connection (small stacks), at most `--max-conns` at once |
//! | `pool` | `--workers` threads take accepted connections from a bounded queue |
//! | `epoll` | `--reactors` event loops ([`crate::reactor`]), one `SO_REUSEPORT` listener each; `SLEEP` is a timer, big `HASH` jobs go to a `--workers` CPU pool |
//! | `uring` | one io_uring ring ([`crate::uring`]): multishot accept and receive, batched submission; `SLEEP` is a ring timeout, big `HASH` jobs go to the same CPU pool (woken through an eventfd read on the ring) |
//!
//! The blocking models share [`blocking::serve_conn`] (`SLEEP` sleeps the thread, CPU work runs
//! inline); the reactor model is in [`epoll`], the completion model in `uring`. All of them count into one set of
//! [`Counters`](crate::proto::Counters), kept in memory shared across `fork`, and print the
//! totals when SIGINT/SIGTERM arrives. With `serve --metrics` they also time each request
//! the same way ([`timing`]) into the histogram kept beside those counters.

pub mod blocking;
pub mod epoll;
pub mod limits;
mod models;
pub mod timing;
#[cfg(feature = "uring")]
pub mod uring;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::proto::{Counters, SessionConfig, Totals};
use crate::stats::events::{EventKind, EventLine};

/// A concurrency model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    Iterative,
    Fork,
    Thread,
    Pool,
    Epoll,
    Uring,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Iterative => "iterative",
            Model::Fork => "fork",
            Model::Thread => "thread",
            Model::Pool => "pool",
            Model::Epoll => "epoll",
            Model::Uring => "uring",
        }
    }
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub model: Model,
    pub listen: SocketAddr,
    pub session: SessionConfig,
    /// `pool`: connection workers; `epoll`: CPU workers for offloaded `HASH`.
    pub workers: usize,
    pub max_conns: usize,
    /// `None`: connections may stay idle forever.
    pub idle_timeout: Option<Duration>,
    pub reactors: usize,
    /// CPUs to pin the busy threads to, in order (empty: no pinning).
    pub cpus: Vec<usize>,
    /// `--json-stream`: the startup and totals lines are `netcore.events.v1` JSON lines.
    pub json_stream: bool,
}

/// Set by [`run_with`] for `--json-stream`: [`print_totals`] (called by every model at the
/// end) then prints the `end` event instead of the text line.
static JSON_STREAM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What every driver needs to serve a connection.
#[derive(Debug, Clone, Copy)]
pub struct Shared {
    pub session: SessionConfig,
    pub counters: Counters,
    pub idle_timeout: Option<Duration>,
    pub max_conns: usize,
}

/// How long a connection is given to finish sending after we closed our side (so our last
/// response is not destroyed by a reset), and how much of its input is discarded meanwhile.
pub(crate) const LINGER: Duration = Duration::from_millis(500);
pub(crate) const LINGER_BYTES: usize = 16 << 20;

/// Binds a listening socket (`SO_REUSEADDR`, optionally `SO_REUSEPORT`, backlog 4096).
pub fn bind(addr: SocketAddr, reuseport: bool) -> Result<TcpListener> {
    let go = || -> std::io::Result<TcpListener> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        s.set_reuse_address(true)?;
        if reuseport {
            crate::sys::sockopt::set_reuseport(&s)?;
        }
        s.bind(&addr.into())?;
        s.listen(4096)?;
        Ok(s.into())
    };
    go().with_context(|| format!("cannot listen on {addr}"))
}

/// Runs the server until SIGINT/SIGTERM; prints `listening on ...` first and the totals last.
pub fn run(cfg: &ServeConfig) -> Result<Totals> {
    run_with(
        cfg,
        Counters::shared().context("cannot map shared counters")?,
    )
}

/// [`run`] counting into `counters` (made with [`Counters::shared`] for `fork`), which the
/// caller may read meanwhile (`serve --metrics`).
pub(crate) fn run_with(cfg: &ServeConfig, counters: Counters) -> Result<Totals> {
    let _ = crate::sys::raise_nofile(1 << 20);
    // Install the handlers before announcing the address, so an early Ctrl-C is not lost.
    crate::sys::signal::termination_fd().context("cannot install signal handlers")?;
    JSON_STREAM.store(cfg.json_stream, std::sync::atomic::Ordering::Relaxed);
    let shared = Shared {
        session: cfg.session,
        counters,
        idle_timeout: cfg.idle_timeout,
        max_conns: cfg.max_conns,
    };
    match cfg.model {
        Model::Epoll => epoll::run(cfg, shared),
        #[cfg(feature = "uring")]
        Model::Uring => uring::run(cfg, shared),
        #[cfg(not(feature = "uring"))]
        Model::Uring => anyhow::bail!(
            "io_uring unavailable: netcore was built without the `uring` feature; use --model epoll"
        ),
        Model::Iterative => models::run_blocking(cfg, shared, models::Blocking::Iterative),
        Model::Fork => models::run_blocking(cfg, shared, models::Blocking::Fork),
        Model::Thread => models::run_blocking(cfg, shared, models::Blocking::Thread),
        Model::Pool => models::run_blocking(cfg, shared, models::Blocking::Pool),
    }
}

/// Prints the startup line (tests and the load generator wait for it) and flushes it.
fn announce(cfg: &ServeConfig, addr: SocketAddr, extra: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if cfg.json_stream {
        let line = EventLine::new("serve", EventKind::Start)
            .kind(format!("{}/{}", cfg.model.name(), cfg.session.proto.name()))
            .data(&serde_json::json!({
                "listen": addr.to_string(),
                "model": cfg.model.name(),
                "proto": cfg.session.proto.name(),
                "settings": extra,
                "cpus": cfg.cpus,
            }));
        out.write_all(line.to_line().as_bytes())?;
        out.flush()?;
        return Ok(());
    }
    write!(
        out,
        "listening on {addr} model={} proto={}",
        cfg.model.name(),
        cfg.session.proto.name()
    )?;
    if !extra.is_empty() {
        write!(out, " {extra}")?;
    }
    if !cfg.cpus.is_empty() {
        let l: Vec<String> = cfg.cpus.iter().map(|c| c.to_string()).collect();
        write!(out, " pinned={}", l.join(","))?;
    }
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Prints the final totals line.
pub(crate) fn print_totals(t: &Totals) {
    let mut out = std::io::stdout().lock();
    if JSON_STREAM.load(std::sync::atomic::Ordering::Relaxed) {
        let line = EventLine::new("serve", EventKind::End).data(t);
        let _ = out.write_all(line.to_line().as_bytes());
    } else {
        let _ = writeln!(out, "totals: {t}");
    }
    let _ = out.flush();
}

/// True for accept errors that mean "out of resources": back off instead of spinning.
pub(crate) fn is_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Pause after a resource error on accept.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
