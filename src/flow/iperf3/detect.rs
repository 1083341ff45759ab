//! Which protocol a new control connection speaks, from its first byte (peeked, so the
//! connection is handed on untouched): netcore's control opens with `{` (a JSON Hello),
//! iperf3's with its cookie, whose characters are `a..z` and `2..7`.

use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::interop::iperf3::Cookie;

/// What a new connection's first byte says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// Nothing yet: ask again later.
    Wait,
    /// A netcore client (or anything that is not iperf3: netcore's session refuses it).
    Netcore,
    Iperf3,
}

/// How long a connection may stay silent before it is handed to netcore's session anyway
/// (whose own Hello deadline then applies). iperf3 and netcore clients both write at once.
pub(crate) const SILENT_GRACE: Duration = Duration::from_secs(1);

/// Peeks at `s` (non-blocking) and classifies it; `since` is when it was accepted.
pub fn opener(s: &TcpStream, since: Instant, now: Instant) -> Opener {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 1];
    let r = s.peek(&mut b);
    let _ = s.set_nonblocking(false);
    match r {
        Ok(1) if Cookie::can_start(b[0]) => Opener::Iperf3,
        // Another byte, EOF or an error: netcore's session reports it as it always has.
        Ok(_) => Opener::Netcore,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if now.duration_since(since) >= SILENT_GRACE {
                Opener::Netcore
            } else {
                Opener::Wait
            }
        }
        Err(_) => Opener::Netcore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn first_byte_decides() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = Instant::now();
        let mut a = TcpStream::connect(addr).unwrap();
        let (sa, _) = l.accept().unwrap();
        assert_eq!(opener(&sa, t, t), Opener::Wait);
        assert_eq!(opener(&sa, t, t + SILENT_GRACE), Opener::Netcore);
        a.write_all(b"abc").unwrap();
        let mut b = TcpStream::connect(addr).unwrap();
        let (sb, _) = l.accept().unwrap();
        b.write_all(b"{\"type\"").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(opener(&sa, t, t), Opener::Iperf3);
        assert_eq!(opener(&sb, t, t), Opener::Netcore);
        // Peeking leaves the bytes in place.
        let mut buf = [0u8; 3];
        std::io::Read::read_exact(&mut &sa, &mut buf).unwrap();
        assert_eq!(&buf, b"abc");
    }
}
