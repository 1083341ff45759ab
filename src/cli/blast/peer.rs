//! The receiver a planned test runs against: the `--to` one, or blast's own on loopback,
//! started for the test and finished after it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use anyhow::{bail, Result};

use super::plan::{BlastPlan, Target};
use crate::flow::recv::receiver::{Receiver, RecvOptions};

/// The receiver of one test: where data and control go, and the embedded receiver serving it
/// (None: a `--to` receiver).
pub struct Peer {
    pub data: SocketAddr,
    pub control: SocketAddr,
    embedded: Option<Embedded>,
}

impl Peer {
    /// The plan's receiver: the `--to` one, or an embedded one started now (a UDP `--bidir`
    /// test's serves both halves).
    pub fn open(plan: &BlastPlan) -> Result<Peer> {
        match plan.target {
            Target::Remote { data, control } => Ok(Peer {
                data,
                control,
                embedded: None,
            }),
            Target::Iperf3(server) => {
                bail!("{server} is an iperf3 server: its tests are driven by the iperf3 client")
            }
            Target::Embedded => {
                let tests = if plan.udp_bidir() { 2 } else { 1 };
                let (e, addr) = Embedded::start(plan.rx_on(plan.cpus.embedded), tests)?;
                Ok(Peer {
                    data: addr,
                    control: addr,
                    embedded: Some(e),
                })
            }
        }
    }

    /// After the test: the embedded receiver, if any, is stopped and joined.
    pub fn finish(self) {
        if let Some(e) = self.embedded {
            e.finish();
        }
    }
}

/// Blast's own receiver on loopback (without --to): the thread serving the test (both halves
/// of a UDP `--bidir` one) and its stop flag.
struct Embedded {
    handle: thread::JoinHandle<Result<()>>,
    stop: Arc<AtomicBool>,
}

impl Embedded {
    /// Binds a receiver on 127.0.0.1:0 with `rx` and serves `tests` tests at once in a thread
    /// (one: it ends after it; two, a UDP `--bidir` test: it serves until
    /// [`Embedded::finish`]); returns it and its address.
    fn start(rx: RecvOptions, tests: usize) -> Result<(Embedded, SocketAddr)> {
        let r = Receiver::bind(RecvOptions {
            listen: "127.0.0.1:0".parse()?,
            max_tests: tests,
            ..rx
        })?;
        let addr = r.local_addr();
        let stop = r.stopper();
        let handle = thread::Builder::new()
            .name("netcore-embedded-recv".into())
            .spawn(move || r.serve(tests == 1, &mut |_| {}))?;
        Ok((Embedded { handle, stop }, addr))
    }

    /// After a test the embedded receiver ends by itself (the control channel closed); if the
    /// sender failed before connecting, this stops it waiting.
    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}
