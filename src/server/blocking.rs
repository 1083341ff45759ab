//! The blocking connection driver shared by the `iterative`, `fork`, `thread` and `pool`
//! models: read, feed the session, write, with `SLEEP` sleeping the thread.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use crate::proto::{Session, Step};

use super::{Shared, LINGER, LINGER_BYTES};

/// Serves one connection to the end. Counts it opened/closed in `sh.counters`. Never panics on
/// peer misbehaviour: resets, timeouts and write errors just end the connection.
pub fn serve_conn(mut s: TcpStream, sh: &Shared) {
    sh.counters.conn_opened();
    let _ = serve(&mut s, sh);
    sh.counters.conn_closed();
}

fn serve(s: &mut TcpStream, sh: &Shared) -> io::Result<()> {
    s.set_nodelay(true)?;
    // The idle timeout bounds both a silent client and one that stops reading.
    s.set_read_timeout(sh.idle_timeout)?;
    s.set_write_timeout(sh.idle_timeout)?;
    let c = &sh.counters;
    let mut session = Session::new(sh.session);
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(1024);
    loop {
        let mut step = match s.read(&mut buf) {
            Ok(0) => session.eof(&mut out, c),
            Ok(n) => session.input(&buf[..n], &mut out, c),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e), // idle timeout, reset
        };
        loop {
            match step {
                Step::Sleep(d) => {
                    // Answer what precedes the SLEEP before sleeping.
                    s.write_all(&out)?;
                    out.clear();
                    std::thread::sleep(d);
                    session.finish_sleep(&mut out, c);
                }
                Step::Cpu(job) => session.finish_cpu(job.run(), &mut out, c),
                _ => break,
            }
            step = session.resume(&mut out, c);
        }
        s.write_all(&out)?;
        out.clear();
        if out.capacity() > 64 * 1024 {
            out = Vec::with_capacity(1024);
        }
        if step == Step::Close {
            linger_close(s);
            return Ok(());
        }
    }
}

/// Closes our side, then discards what the peer still sends (bounded in time and bytes), so
/// that closing with unread input does not reset the connection and destroy our last response.
pub fn linger_close(s: &mut TcpStream) {
    if s.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
