//! [`Session`] speaking sockperf's framing ([`Proto::Sockperf`](super::Proto::Sockperf)):
//! messages are framed by [`crate::proto::sockperf`] and answered in order; an incomplete
//! message is a partial line (the drivers' line deadline closes it), a length that breaks the
//! framing closes the connection, the output bound holds ([`Step::Flush`]).

use super::{Counters, Session, Step};
use crate::proto::counters::{ErrorKind, REQUESTS};
use crate::proto::sockperf::{self, Parsed};

impl Session {
    /// [`Session::resume`] for sockperf: answers the whole messages buffered.
    pub(super) fn resume_sockperf(&mut self, out: &mut Vec<u8>, srv: &Counters) -> Step {
        loop {
            if self.closed {
                return Step::Close;
            }
            match sockperf::parse(&self.buf[self.start..]) {
                Parsed::Partial => {
                    // After a half-close, what was whole is answered, a torn message is not.
                    self.scanned = self.buf.len();
                    return self.wait_for_input();
                }
                Parsed::Invalid(_) => {
                    // The framing is lost; sockperf's own server closes too, without a word.
                    self.count_error(srv, ErrorKind::BadRequest);
                    self.close_with(out, srv, |_, _| {});
                    return Step::Close;
                }
                Parsed::Message { len, .. } => {
                    if out.len() >= self.out_limit {
                        return Step::Flush;
                    }
                    let (start, len0) = (self.start, out.len());
                    self.start += len;
                    self.scanned = self.start;
                    self.stats.requests += 1;
                    srv.add(REQUESTS, 1);
                    sockperf::answer(&self.buf[start..start + len], out);
                    self.count_out(out.len() - len0, srv);
                }
            }
        }
    }
}
