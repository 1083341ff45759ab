//! The server's iperf3 control connection: blocking TCP with every read bounded, around the
//! sans-IO [`ServerCtl`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::flow::tcp::stream::transient;
use crate::interop::iperf3::server::{Event, ServerCtl};

/// One read waits at most this long, so deadlines and stop requests are seen.
const SLICE: Duration = Duration::from_millis(20);

/// iperf3's error numbers the server sends with SERVER_ERROR (its `i_errno`).
pub mod ierr {
    /// "not implemented yet" (what netcore refuses to run).
    pub const UNIMP: i32 = 13;
    /// "received an unknown message" (the client broke the protocol).
    pub const MESSAGE: i32 = 110;
}

pub struct Ctl {
    sock: TcpStream,
    pub sc: ServerCtl,
    /// Bytes to send at the next flush.
    pub out: Vec<u8>,
    /// The state the client is in, as the last event left it (for "vanished in ..." lines).
    pub stage: &'static str,
}

impl Ctl {
    pub fn new(sock: TcpStream) -> Result<Ctl> {
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(SLICE))?;
        sock.set_write_timeout(Some(Duration::from_secs(2)))?;
        let _ = sock.set_nodelay(true);
        Ok(Ctl {
            sock,
            sc: ServerCtl::new(),
            out: Vec::new(),
            stage: "sending its cookie",
        })
    }

    /// Writes what the state machine queued.
    pub fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.sock.write_all(&self.out);
        self.out.clear();
        r.with_context(|| format!("iperf3 client vanished while {}", self.stage))
    }

    /// The next event, waiting at most until `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Result<Event> {
        loop {
            if let Some(e) = self.poll(SLICE)? {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                bail!("iperf3 client went silent while {}", self.stage);
            }
            if crate::sys::signal::stop_requested() {
                bail!("interrupted while the iperf3 client was {}", self.stage);
            }
        }
    }

    /// An event if one is buffered or arrives within about `wait`.
    pub fn poll(&mut self, wait: Duration) -> Result<Option<Event>> {
        if let Some(e) = self.sc.poll()? {
            return Ok(Some(e));
        }
        let _ = self
            .sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let mut buf = [0u8; 4096];
        match self.sock.read(&mut buf) {
            Ok(0) => bail!(
                "iperf3 client vanished while {} (closed the control connection)",
                self.stage
            ),
            Ok(n) => {
                self.sc.input(&buf[..n])?;
                Ok(self.sc.poll()?)
            }
            Err(e) if transient(&e) => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("iperf3 client vanished while {}", self.stage))
            }
        }
    }

    /// Tells the client the server failed (best effort): it prints iperf3's message for
    /// `i_errno`.
    pub fn fail(&mut self, i_errno: i32) {
        self.sc.error(i_errno, 0, &mut self.out);
        let _ = self.flush();
    }
}
