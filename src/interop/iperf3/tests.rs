//! Both control machines talking to each other, and both fed garbage.

use proptest::prelude::*;
use serde_json::json;

use super::client_ctl::{self as client, ClientCtl};
use super::msg::{read_json, stream_id, write_json, Cookie, Params, ProtoError, Results};
use super::msg::{StreamResult, COOKIE_LEN, MAX_PARAMS_JSON};
use super::server_ctl::{self as server, ServerCtl};

fn cookie() -> Cookie {
    Cookie::from_random([7u8; COOKIE_LEN - 1])
}

fn params() -> Params {
    Params {
        udp: true,
        time: 2,
        parallel: 2,
        len: 1400,
        bandwidth: 1_000_000_000,
        udp_counters_64bit: true,
        client_version: Some("3.12".into()),
        ..Params::default()
    }
}

fn results(bytes: u64) -> Results {
    Results {
        cpu_util_total: 12.5,
        cpu_util_user: 2.5,
        cpu_util_system: 10.0,
        sender_has_retransmits: 0,
        congestion_used: None,
        streams: (0..2)
            .map(|i| StreamResult {
                id: stream_id(i),
                bytes,
                retransmits: -1,
                jitter: 0.0001,
                errors: 3,
                packets: 1000,
                end_time: 2.0,
                ..StreamResult::default()
            })
            .collect(),
        server_output_text: None,
    }
}

/// Feeds `bytes` to `push` in the pieces `cuts` makes (offsets taken modulo the length).
fn in_pieces(bytes: &[u8], cuts: &[usize], mut push: impl FnMut(&[u8])) {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    for w in at.windows(2) {
        push(&bytes[w[0]..w[1]]);
    }
}

/// Runs a whole test between the two machines, every message cut as `cuts` says.
fn whole_exchange(cuts: &[usize]) -> (Vec<server::Event>, Vec<client::Event>) {
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let mut c = ClientCtl::hello(&cookie(), &mut to_server);
    let mut s = ServerCtl::new();
    let (mut sev, mut cev) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        in_pieces(&std::mem::take(&mut to_server), cuts, |p| {
            s.input(p).unwrap();
            while let Some(e) = s.poll().unwrap() {
                match &e {
                    server::Event::Cookie(_) => s.accept(&mut to_client),
                    server::Event::Params(_) => {
                        s.create_streams(&mut to_client);
                        s.start(&mut to_client);
                    }
                    server::Event::TestEnd => s.exchange(&mut to_client),
                    server::Event::ClientResults(_) => s.results(&results(900), &mut to_client),
                    server::Event::Done | server::Event::Terminated => {}
                }
                sev.push(e);
            }
        });
        in_pieces(&std::mem::take(&mut to_client), cuts, |p| {
            c.input(p).unwrap();
            while let Some(e) = c.poll().unwrap() {
                match &e {
                    client::Event::ParamExchange => c.params(&params(), &mut to_server),
                    client::Event::TestRunning => c.end(&mut to_server),
                    client::Event::ExchangeResults => c.results(&results(1000), &mut to_server),
                    client::Event::DisplayResults => c.done(&mut to_server),
                    _ => {}
                }
                cev.push(e);
            }
        });
    }
    assert!(s.is_closed() && c.is_closed(), "{sev:?} {cev:?}");
    (sev, cev)
}

#[test]
fn a_whole_test_in_one_piece() {
    let (s, c) = whole_exchange(&[]);
    assert_eq!(
        s,
        vec![
            server::Event::Cookie(cookie()),
            server::Event::Params(params()),
            server::Event::TestEnd,
            server::Event::ClientResults(results(1000)),
            server::Event::Done,
        ]
    );
    assert_eq!(
        c,
        vec![
            client::Event::ParamExchange,
            client::Event::CreateStreams,
            client::Event::TestStart,
            client::Event::TestRunning,
            client::Event::ExchangeResults,
            client::Event::ServerResults(results(900)),
            client::Event::DisplayResults,
        ]
    );
}

#[test]
fn what_iperf3_sends_parses() {
    // A parameter document as iperf3 3.12 writes it for `-u -b 1G -P 2 -t 1 -l 1400`.
    let doc = json!({"udp":true,"omit":0,"time":1,"num":0,"blockcount":0,"parallel":2,
        "len":1400,"bandwidth":1e+09,"pacing_timer":1000,"client_version":"3.12"});
    let p = Params::from_json(doc.as_object().unwrap()).unwrap();
    assert!(p.udp && p.parallel == 2 && p.len == 1400 && p.bandwidth == 1_000_000_000);
    assert_eq!(p.extra.get("pacing_timer"), Some(&json!(1000)));
    for (bad, why) in [
        (json!({"tcp":true,"udp":true}), "exactly one"),
        (json!({"sctp":true}), "SCTP"),
        (json!({"tcp":true,"parallel":1000}), "parallel"),
        (json!({"tcp":true,"time":-1}), "time"),
        (json!({"tcp":true,"len":"big"}), "len"),
        (
            json!({"tcp":true,"reverse":true,"bidirectional":true}),
            "together",
        ),
    ] {
        let e = Params::from_json(bad.as_object().unwrap()).unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
    }
}

#[test]
fn the_server_refuses_what_is_out_of_turn() {
    let mut s = ServerCtl::new();
    s.input(b"not a cookie at all, 37 bytes long..\0").unwrap();
    assert_eq!(s.poll(), Err(ProtoError::BadCookie));
    assert!(s.is_closed());

    let mut s = ServerCtl::new();
    let mut out = Vec::new();
    s.input(&cookie().0).unwrap();
    assert!(matches!(s.poll(), Ok(Some(server::Event::Cookie(_)))));
    s.accept(&mut out);
    // A frame longer than iperf3's parameter limit is refused from its length alone.
    s.input(&((MAX_PARAMS_JSON as u32 + 1).to_be_bytes()))
        .unwrap();
    assert!(matches!(s.poll(), Err(ProtoError::JsonSize(..))));

    let mut s = ServerCtl::new();
    s.input(&cookie().0).unwrap();
    s.poll().unwrap();
    s.accept(&mut out);
    let mut frame = Vec::new();
    write_json(&mut frame, &json!({"tcp": true}));
    s.input(&frame).unwrap();
    assert!(matches!(s.poll(), Ok(Some(server::Event::Params(_)))));
    s.create_streams(&mut out);
    s.input(&[2]).unwrap(); // TEST_RUNNING is the server's to send
    assert!(matches!(s.poll(), Err(ProtoError::WrongState { .. })));
}

#[test]
fn the_client_reads_a_server_error_and_a_refusal() {
    let mut out = Vec::new();
    let mut c = ClientCtl::hello(&cookie(), &mut out);
    assert_eq!(&out, &cookie().0);
    c.input(&[0xfe, 0, 0, 0]).unwrap();
    assert_eq!(c.poll(), Ok(None), "waits for both error numbers");
    c.input(&[7, 0, 0, 0, 0]).unwrap();
    assert_eq!(
        c.poll(),
        Ok(Some(client::Event::ServerError {
            i_errno: 7,
            errno: 0
        }))
    );
    let mut c = ClientCtl::hello(&cookie(), &mut out);
    c.input(&[0xff]).unwrap();
    assert_eq!(c.poll(), Ok(Some(client::Event::AccessDenied)));
    let mut c = ClientCtl::hello(&cookie(), &mut out);
    c.input(&[2]).unwrap();
    assert!(matches!(c.poll(), Err(ProtoError::WrongState { .. })));
}

#[test]
fn stream_ids_skip_two() {
    let ids: Vec<i64> = (0..4).map(stream_id).collect();
    assert_eq!(ids, vec![1, 3, 4, 5]);
}

proptest! {
    #[test]
    fn any_split_of_a_whole_test_gives_the_same_events(cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        prop_assert_eq!(whole_exchange(&cuts), whole_exchange(&[]));
    }

    #[test]
    fn garbage_never_panics_or_grows_without_bound(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..8),
        start_after_cookie: bool,
    ) {
        let mut s = ServerCtl::new();
        let mut out = Vec::new();
        if start_after_cookie {
            s.input(&cookie().0).unwrap();
            s.poll().unwrap();
            s.accept(&mut out);
        }
        let mut c = ClientCtl::hello(&cookie(), &mut out);
        for ch in &chunks {
            if s.input(ch).is_ok() {
                while let Ok(Some(_)) = s.poll() {}
            }
            if c.input(ch).is_ok() {
                while let Ok(Some(_)) = c.poll() {}
            }
        }
    }

    #[test]
    fn results_round_trip(bytes in 0u64..1 << 50, errors in 0i64..1 << 40) {
        let mut r = results(bytes);
        r.streams[1].errors = errors;
        let mut frame = Vec::new();
        write_json(&mut frame, &r.to_json());
        let (m, n) = read_json(&frame, 1 << 20).unwrap().unwrap();
        prop_assert_eq!(n, frame.len());
        prop_assert_eq!(Results::from_json(&m).unwrap(), r);
    }
}

#[test]
fn a_cookie_is_told_from_netcore_control_by_its_first_byte() {
    assert!(Cookie::can_start(b'a') && Cookie::can_start(b'7'));
    assert!(!Cookie::can_start(b'{') && !Cookie::can_start(b'1') && !Cookie::can_start(b'A'));
    assert!(Cookie::can_start(cookie().0[0]));
}

#[test]
fn minus_one_printed_unsigned_reads_as_minus_one() {
    // What iperf3 3.12's server sends for "no retransmits known".
    let doc = json!({"cpu_util_total":0.03,"cpu_util_user":0,"cpu_util_system":0.03,
        "sender_has_retransmits":18446744073709551615u64,"congestion_used":"bbr",
        "streams":[{"id":1,"bytes":5000,"retransmits":18446744073709551615u64,"jitter":0,
        "errors":0,"packets":0,"start_time":0,"end_time":0.2}]});
    let r = Results::from_json(doc.as_object().unwrap()).unwrap();
    assert_eq!(r.sender_has_retransmits, -1);
    assert_eq!(r.streams[0].retransmits, -1);
    assert_eq!(r.streams[0].bytes, 5000);
}
