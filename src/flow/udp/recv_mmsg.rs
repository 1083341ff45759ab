//! The `mio` backend's receive loop: the UDP thread draining the socket with `recvmmsg`
//! batches into the [`Core`] both backends share (the io_uring one is `super::uring`).

use std::net::UdpSocket;
use std::time::Duration;

use super::recv_core::{Core, RxWait, POLL_NAP};
use crate::sys::mmsg::{gro_segment_in, rxq_ovfl_in, RecvBatch};
use crate::sys::{affinity, realtime_ns};

/// The `mio` backend's UDP thread: `recvmmsg` batches. Between tests it blocks (10 ms socket
/// timeout, so commands are seen); during a test it waits as `RxWait` says.
pub(crate) fn udp_thread(sock: UdpSocket, mut core: Core) {
    if let Some(cpu) = core.ctx.cpu {
        affinity::pin_current(cpu);
    }
    let _ = sock.set_read_timeout(Some(Duration::from_millis(10)));
    let mut batch = if core.ctx.wants_sources() {
        RecvBatch::with_sources(core.ctx.batch, 1 << 16)
    } else {
        RecvBatch::new(core.ctx.batch, 1 << 16)
    };
    while core.commands() {
        let block = !core.in_test() || core.ctx.wait == RxWait::Block;
        // An error here is a timeout, EINTR, an empty socket (non-blocking read), or an ICMP
        // error queued on the socket.
        let n = batch.recv(&sock, block).unwrap_or_default();
        if n == 0 && !block && core.ctx.wait == RxWait::Poll {
            std::thread::sleep(POLL_NAP);
        }
        if n > 0 && core.in_test() {
            let now_ns = realtime_ns();
            let mut drops = None;
            for i in 0..n {
                let (m, truncated) = batch.message(i);
                let control = batch.control(i);
                core.on_buffer(
                    m,
                    truncated,
                    gro_segment_in(control),
                    batch.source(i),
                    now_ns,
                );
                drops = rxq_ovfl_in(control).or(drops);
            }
            if let Some(d) = drops {
                core.on_drops(d);
            }
        }
        core.end_batch(n > 0);
    }
}
