//! Where loss went (`receiver.kernel` in the UDP report): the real binaries over loopback. A
//! receiver with a small buffer and an unpaced sender loses datagrams at its socket, and the
//! report must say so with the kernel's own count. (Datagrams the relay drops are "not seen by
//! this host": `tests/relay.rs`.)

use crate::common;

use std::sync::Mutex;
use std::time::Duration;

use common::proc::Proc;
use common::{addr_in, json, num as u, run};
use serde_json::Value;

/// One test at a time: each is three processes (or an unpaced blast) on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

const LIMIT: Duration = Duration::from_secs(60);

/// One unpaced test into a receiver with a 64 KiB buffer; the receiver's report, or None when
/// the backend cannot run here.
fn small_buffer_test(backend: &str) -> Option<Value> {
    let mut recv = Proc::netcore(&[
        "recv",
        "--listen",
        "127.0.0.1:0",
        "--once",
        "--json",
        "--rcvbuf",
        "64K",
        // One datagram per kernel buffer, so the kernel's drop count is in datagrams.
        "--no-gro",
        "--backend",
        backend,
    ]);
    let line = recv.wait_line("listening on");
    let addr = addr_in(&line);
    let (st, out, err) = run(
        &[
            "blast", "--to", &addr, "--count", "100000", "--len", "1472", "--gso", "off", "--json",
        ],
        LIMIT,
    );
    let (rst, rout, rerr) = recv.finish(LIMIT);
    if !st.success() && err.contains("io_uring") {
        eprintln!("note: backend {backend} unavailable here: {err}");
        return None;
    }
    assert!(st.success(), "blast failed: {err}\n{out}");
    assert!(rst.success(), "recv failed: {rerr}");
    let sender = json(&out);
    assert_eq!(sender["schema"], "netcore.udp.v4");
    let rx = json(&rout);
    // Both sides print the same figures of where loss went.
    assert_eq!(
        sender["receiver"]["kernel"]["loss"], rx["receiver"]["kernel"]["loss"],
        "{sender}\n{rx}"
    );
    Some(rx)
}

#[test]
fn a_small_receive_buffer_is_named_with_the_kernels_count() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for backend in ["mio", "uring"] {
        // Loss is all but certain (100 000 unpaced datagrams into room for about 50), but a
        // quiet moment could let the receiver keep up: a few tries at most.
        let mut tried = 0;
        let rx = loop {
            tried += 1;
            let Some(rx) = small_buffer_test(backend) else {
                break None;
            };
            if u(&rx["receiver"]["accounting"], "lost") > 0 || tried == 5 {
                break Some(rx);
            }
        };
        let Some(rx) = rx else { continue };
        let r = &rx["receiver"];
        let lost = u(&r["accounting"], "lost");
        assert!(lost > 0, "no loss in {tried} tries: {rx}");
        let k = &r["kernel"];
        let drops = &k["socket_drops"];
        let split = &k["loss"];
        // The attributed count is the kernel's own drop count for the socket (read at the
        // end, so drops after the last datagram that arrived count too); the count the
        // datagrams' SO_RXQ_OVFL messages carried is that count up to the last of them.
        assert!(u(drops, "rxq_ovfl") > 0, "{backend}: {k}");
        assert!(u(drops, "rxq_ovfl") <= u(drops, "total"), "{backend}: {k}");
        assert_eq!(
            u(split, "socket_buffer"),
            u(drops, "total"),
            "{backend}: {k}"
        );
        assert_eq!(u(split, "lost"), lost);
        // On loopback nothing is lost on a path: whatever the socket did not drop, the
        // backlog did.
        assert_eq!(
            u(split, "socket_buffer") + u(split, "backlog"),
            lost,
            "{backend}: {k}"
        );
        assert_eq!(u(split, "not_seen"), 0, "{backend}: {k}");
        assert!(
            u(&k["host"]["udp"], "rcvbuf_errors") >= u(drops, "total"),
            "the host counts the socket's drops too: {k}"
        );
        assert!(!k["verdict"].as_str().unwrap().is_empty(), "{k}");
    }
}
