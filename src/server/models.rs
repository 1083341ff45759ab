//! The blocking models: `iterative`, `fork`, `thread`, `pool`.
//!
//! Each accepts on a blocking listener with a short receive timeout (so the accept loop wakes
//! up regularly: the `fork` parent reaps its children there) and serves connections with
//! [`blocking::serve_conn`]. A dedicated thread waits for SIGINT/SIGTERM, prints the totals and
//! exits the process (a blocked `read` in a connection cannot be interrupted otherwise).

use std::collections::HashSet;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::proto::Totals;
use crate::sys::{affinity, process, signal};

use super::{announce, blocking, is_resource_error, ServeConfig, Shared, ACCEPT_BACKOFF};

/// Thread stack size for the `thread` and `pool` models.
pub(crate) const STACK: usize = 128 * 1024;
const ACCEPT_TICK: Duration = Duration::from_millis(200);

/// The blocking models, the ones this file runs (`serve --model` is matched once, in
/// [`super::run_with`], which hands these here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Blocking {
    Iterative,
    Fork,
    Thread,
    Pool,
}

pub(super) fn run_blocking(cfg: &ServeConfig, sh: Shared, model: Blocking) -> Result<Totals> {
    let listener = super::bind(cfg.listen, false)?;
    socket2::SockRef::from(&listener)
        .set_read_timeout(Some(ACCEPT_TICK))
        .context("cannot set the accept timeout")?;
    let addr = listener.local_addr()?;
    let children: Arc<Mutex<HashSet<libc::pid_t>>> = Arc::default();
    let kids = children.clone();
    let counters = sh.counters;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = signal::wait_for_termination() {
                for pid in kids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    let _ = process::kill(*pid, libc::SIGTERM);
                }
                super::print_totals(&counters.snapshot());
                // 128 + the signal, as every command a signal ended.
                std::process::exit(if sig > 0 { 128 + sig } else { 0 });
            }
        })
        .context("cannot start the signal thread")?;
    let extra = match model {
        Blocking::Pool => format!("workers={}", cfg.workers),
        Blocking::Thread | Blocking::Fork => format!("max_conns={}", cfg.max_conns),
        Blocking::Iterative => String::new(),
    };
    if matches!(model, Blocking::Iterative | Blocking::Fork) {
        if let Some(&cpu) = cfg.cpus.first() {
            affinity::pin_current(cpu);
        }
    }
    announce(cfg, addr, &extra)?;
    match model {
        Blocking::Iterative => accept_loop(&listener, || {}, |s| blocking::serve_conn(s, &sh)),
        Blocking::Fork => fork_model(&listener, &sh, &children),
        Blocking::Thread => thread_model(&listener, &sh, &cfg.cpus),
        Blocking::Pool => pool_model(&listener, &sh, cfg.workers, &cfg.cpus)?,
    }
    Ok(counters.snapshot())
}

/// Accepts forever; `tick` runs at least every [`ACCEPT_TICK`]. Resource errors back off.
fn accept_loop(listener: &TcpListener, mut tick: impl FnMut(), mut f: impl FnMut(TcpStream)) -> ! {
    loop {
        tick();
        match listener.accept() {
            Ok((s, _)) => f(s),
            Err(e) if is_resource_error(&e) => std::thread::sleep(ACCEPT_BACKOFF),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn fork_model(listener: &TcpListener, sh: &Shared, children: &Mutex<HashSet<libc::pid_t>>) -> ! {
    let reap = |block: bool| {
        while let Some(pid) = process::reap(block) {
            children
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pid);
            if block {
                break;
            }
        }
    };
    accept_loop(
        listener,
        || reap(false),
        |s| {
            // Bound the number of live children: wait for one to exit.
            while children.lock().unwrap_or_else(|p| p.into_inner()).len() >= sh.max_conns {
                reap(true);
            }
            match process::fork() {
                Ok(process::Forked::Child) => {
                    // Only this thread exists here. The child serves just its connection:
                    // there is no epoll instance to inherit (this model has none), it closes
                    // its copy of the listening socket (so a child outliving a killed parent
                    // does not hold the port) and it gets default signal dispositions so
                    // Ctrl-C ends it. It leaves through `exit`: the listener is not dropped.
                    process::close_in_child(listener);
                    signal::reset_default();
                    blocking::serve_conn(s, sh);
                    process::exit(0);
                }
                Ok(process::Forked::Parent(pid)) => {
                    children
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(pid);
                    drop(s);
                }
                Err(_) => {
                    drop(s);
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
        },
    )
}

fn thread_model(listener: &TcpListener, sh: &Shared, cpus: &[usize]) -> ! {
    let live = Arc::new((Mutex::new(0usize), Condvar::new()));
    let mut next = 0usize;
    accept_loop(
        listener,
        || {},
        |s| {
            {
                let (m, cv) = &*live;
                let mut n = m.lock().unwrap_or_else(|p| p.into_inner());
                while *n >= sh.max_conns {
                    n = cv.wait(n).unwrap_or_else(|p| p.into_inner());
                }
                *n += 1;
            }
            let cpu = (!cpus.is_empty()).then(|| cpus[next % cpus.len()]);
            next += 1;
            let sh = *sh;
            let live2 = live.clone();
            let spawned = std::thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || {
                    if let Some(c) = cpu {
                        affinity::pin_current(c);
                    }
                    blocking::serve_conn(s, &sh);
                    let (m, cv) = &*live2;
                    *m.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
                    cv.notify_one();
                });
            if spawned.is_err() {
                *live.0.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        },
    )
}

fn pool_model(listener: &TcpListener, sh: &Shared, workers: usize, cpus: &[usize]) -> Result<()> {
    let (tx, rx) = mpsc::sync_channel::<TcpStream>(workers.max(1) * 4);
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..workers {
        let rx = rx.clone();
        let sh = *sh;
        let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
        std::thread::Builder::new()
            .name(format!("pool-{i}"))
            .stack_size(STACK)
            .spawn(move || {
                if let Some(c) = cpu {
                    affinity::pin_current(c);
                }
                loop {
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match next {
                        Ok(s) => blocking::serve_conn(s, &sh),
                        Err(_) => return,
                    }
                }
            })
            .context("cannot start the worker threads")?;
    }
    // The bounded queue makes the accept loop wait when every worker is busy and the queue is
    // full: further clients wait in the listen queue.
    accept_loop(
        listener,
        || {},
        |s| {
            let _ = tx.send(s);
        },
    )
}
