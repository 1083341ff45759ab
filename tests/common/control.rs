//! A sender driven by hand on the control protocol, for tests that send what `blast` would
//! not (crafted or lying datagrams, floods) or hold tests open at once. Every wait bounded.

use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use netcore::flow::control::{ClientId, Conn, Msg, Plan, PROTOCOL_VERSION};
use netcore::flow::payload::ReceiverStats;
use netcore::flow::udp::wire;

/// A Hello for one stream of `len`-byte datagrams, unverified, without a key.
pub fn hello(test_id: u64, len: u32, plan: Plan) -> Msg {
    Msg::Hello {
        version: PROTOCOL_VERSION,
        test_id,
        len,
        plan,
        streams: 1,
        verify: false,
        host: "test".into(),
        auth: false,
    }
}

/// A UDP test opened on the receiver at `addr` up to its Ready, from source address `from`
/// (any when None): its control connection.
pub fn held_test(addr: &str, test_id: u64, len: u32, plan: Plan, from: Option<IpAddr>) -> Conn {
    let mut c = Conn::connect_from(addr.parse().unwrap(), from).unwrap();
    c.open_test(hello(test_id, len, plan), &ClientId::default())
        .unwrap();
    c.send(&Msg::Setup {
        tcp: None,
        reverse: None,
        echo: None,
        interval_ns: None,
    })
    .unwrap();
    match c.expect("Ready", Duration::from_secs(10)).unwrap() {
        Msg::Ready { .. } => c,
        m => panic!("expected Ready, got {m:?}"),
    }
}

/// A UDP socket connected to `addr`, bound to `from` (any local address when None).
pub fn data_socket(addr: &str, from: Option<IpAddr>) -> UdpSocket {
    let ip = from.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let u = UdpSocket::bind((ip, 0)).unwrap();
    u.connect(addr).unwrap();
    u
}

/// Sends datagrams `seqs` of test `test_id` (`len` bytes each) on `u`, a short pause every
/// 32 (it only keeps the receive queue short on a loaded machine; loopback keeps order).
pub fn send_datagrams(u: &UdpSocket, test_id: u64, len: usize, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        u.send(&wire::build(len, test_id, seq, 1, false)).unwrap();
        if seq % 32 == 31 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

/// Sends Done (`sent` datagrams of `len` bytes in `elapsed_ns`) and waits (bounded) for the
/// receiver's Report, skipping Intervals.
pub fn done_and_report(c: &mut Conn, sent: u64, len: u64, elapsed_ns: u64) -> Box<ReceiverStats> {
    c.send(&Msg::Done {
        sent,
        bytes: sent * len,
        elapsed_ns,
        errors: Default::default(),
        cpu: None,
        interrupted: false,
        pacing: None,
        streams: Vec::new(),
        sndbuf_errors: None,
    })
    .unwrap();
    loop {
        match c.expect("Report", Duration::from_secs(15)).unwrap() {
            Msg::Report { receiver } => return receiver,
            Msg::Interval { .. } => {}
            m => panic!("expected Report, got {m:?}"),
        }
    }
}

/// Waits (bounded) for an Error on `c`, skipping Intervals; its message.
pub fn expect_error(c: &mut Conn) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match c.recv_until(Instant::now() + Duration::from_millis(50)) {
            Ok(Some(Msg::Error { message })) => return message,
            Ok(Some(Msg::Interval { .. })) | Ok(None) => {}
            Ok(Some(m)) => panic!("expected Error, got {m:?}"),
            Err(e) => panic!("control connection failed before an Error: {e:#}"),
        }
    }
    panic!("no Error within 20 s");
}
