use super::*;
use proptest::prelude::*;

fn cfg(max_line: usize) -> SessionConfig {
    SessionConfig {
        proto: Proto::Task,
        max_line,
        offload_rounds: 1000,
    }
}

/// Feeds `chunks` one by one, completing deferred work inline, then signals EOF (unless the
/// session closed first). Returns everything written and whether it closed.
fn run(cfg: SessionConfig, chunks: &[&[u8]], eof: bool) -> (Vec<u8>, bool) {
    let srv = Counters::local();
    let mut s = Session::new(cfg);
    let mut out = Vec::new();
    for c in chunks {
        let st = s.input(c, &mut out, &srv);
        if s.complete_inline(st, &mut out, &srv, |_| {}) == Step::Close {
            return (out, true);
        }
    }
    if eof {
        let st = s.eof(&mut out, &srv);
        let st = s.complete_inline(st, &mut out, &srv, |_| {});
        return (out, st == Step::Close);
    }
    (out, s.is_closed())
}

fn text(chunks: &[&[u8]]) -> String {
    String::from_utf8(run(cfg(64), chunks, false).0).unwrap()
}

#[test]
fn verbs() {
    assert_eq!(text(&[b"ECHO hello  world\n"]), "hello  world\n");
    assert_eq!(text(&[b"echo x\r\n"]), "x\n");
    assert_eq!(text(&[b"ECHO\n"]), "\n");
    assert_eq!(text(&[b"UPPER stra\xc3\x9fe\n"]), "STRASSE\n");
    assert_eq!(text(&["REVERSE abc\u{e9}\n".as_bytes()]), "\u{e9}cba\n");
    assert_eq!(text(&[b"SUM 1 2 -3 40\n"]), "40\n");
    assert_eq!(text(&[b"SUM\n"]), "0\n");
    assert_eq!(
        text(&[b"SUM 9223372036854775807 1\n"]),
        "ERR SUM: overflow\n"
    );
    assert_eq!(text(&[b"SUM 1 x\n"]), "ERR SUM: not an i64: 'x'\n");
    assert_eq!(text(&[b"HASH 1 foobar\n"]), "85944171f73967e8\n");
    assert_eq!(
        text(&[b"HASH 5000 foobar\n"]),
        format!("{:016x}\n", crate::proto::hash(5000, b"foobar"))
    );
    assert!(text(&[b"HASH 0 x\n"]).starts_with("ERR HASH"));
    assert!(text(&[b"HASH 10000001 x\n"]).starts_with("ERR HASH"));
    assert_eq!(text(&[b"SLEEP 5\n"]), "OK slept 5ms\n");
    assert_eq!(text(&[b"SLEEP 0\n"]), "OK slept 0ms\n");
    assert!(text(&[b"SLEEP 60001\n"]).starts_with("ERR SLEEP"));
    assert!(text(&[b"SLEEP -1\n"]).starts_with("ERR SLEEP"));
    assert_eq!(text(&[b"NOPE x\n"]), "ERR unknown verb 'NOPE'\n");
    assert_eq!(text(&[b"\n"]), "ERR empty request\n");
    assert_eq!(text(&[b"ECHO \xff\xfe\n"]), "ERR invalid UTF-8\n");
}

#[test]
fn stats_counts_this_connection() {
    let t = text(&[b"ECHO a\nBAD\nSTATS\n"]);
    let last = t.lines().last().unwrap();
    assert!(
        last.starts_with("requests=3 errors=1 bytes_in=17 bytes_out="),
        "{last}"
    );
    assert!(last.contains("server_requests=3 server_errors=1"), "{last}");
}

#[test]
fn bye_closes_and_ignores_the_rest() {
    let (out, closed) = run(cfg(64), &[b"ECHO a\nBYE\nECHO b\n"], false);
    assert_eq!(out, b"a\nGoodbye!\n");
    assert!(closed);
}

#[test]
fn pipelined_sleep_holds_back_later_answers() {
    let srv = Counters::local();
    let mut s = Session::new(cfg(64));
    let mut out = Vec::new();
    let st = s.input(b"ECHO 1\nSLEEP 100\nECHO 2\n", &mut out, &srv);
    assert_eq!(st, Step::Sleep(Duration::from_millis(100)));
    assert_eq!(out, b"1\n");
    // More input while pending is buffered, not answered.
    assert_eq!(s.input(b"ECHO 3\n", &mut out, &srv), Step::Pending);
    assert_eq!(out, b"1\n");
    s.finish_sleep(&mut out, &srv);
    assert_eq!(s.resume(&mut out, &srv), Step::NeedInput);
    assert_eq!(out, b"1\nOK slept 100ms\n2\n3\n");
}

#[test]
fn cpu_job_offloaded_above_threshold() {
    let srv = Counters::local();
    let mut s = Session::new(cfg(64));
    let mut out = Vec::new();
    let Step::Cpu(job) = s.input(b"HASH 2000 abc\nECHO z\n", &mut out, &srv) else {
        panic!("expected a CPU step");
    };
    assert_eq!(job.rounds(), 2000);
    assert!(out.is_empty());
    s.finish_cpu(job.run(), &mut out, &srv);
    assert_eq!(s.resume(&mut out, &srv), Step::NeedInput);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{:016x}\nz\n", crate::proto::hash(2000, b"abc"))
    );
}

#[test]
fn partial_lines_and_line_limit() {
    assert_eq!(text(&[b"EC", b"HO ab", b"c\r", b"\n"]), "abc\n");
    let long = vec![b'x'; 70];
    let (out, closed) = run(cfg(64), &[b"ECHO ok\n", &long], false);
    assert_eq!(out, b"ok\nERR line too long\n");
    assert!(closed);
    // Exactly at the limit is fine, with either terminator.
    let mut line = b"ECHO ".to_vec();
    line.extend(std::iter::repeat_n(b'y', 59));
    let mut a = line.clone();
    a.extend_from_slice(b"\r\n");
    let (out, closed) = run(cfg(64), &[&a], false);
    assert_eq!(out.len(), 60);
    assert!(!closed);
    line.push(b'y');
    line.push(b'\n');
    let (out, closed) = run(cfg(64), &[&line], false);
    assert_eq!(out, b"ERR line too long\n");
    assert!(closed);
}

#[test]
fn half_close_answers_then_closes() {
    let (out, closed) = run(cfg(64), &[b"ECHO a\nSLEEP 1\nECHO b"], true);
    assert_eq!(out, b"a\nOK slept 1ms\nb\n");
    assert!(closed);
    let (out, closed) = run(cfg(64), &[], true);
    assert!(out.is_empty() && closed);
}

#[test]
fn echo_proto() {
    let c = SessionConfig {
        proto: Proto::Echo,
        ..cfg(64)
    };
    let (out, closed) = run(c, &[b"ab\xff", b"\ncd"], true);
    assert_eq!(out, b"ab\xff\ncd");
    assert!(closed);
}

#[test]
fn steady_state_does_not_grow_the_buffer() {
    let srv = Counters::local();
    let mut s = Session::new(cfg(64));
    let mut out = Vec::with_capacity(64);
    for _ in 0..1000 {
        out.clear();
        s.input(b"ECHO hello\nSUM 1 2", &mut out, &srv);
        s.input(b"\n", &mut out, &srv);
        assert_eq!(out, b"hello\n3\n");
    }
    assert!(s.buf.capacity() <= 64);
}

/// `stream` cut at the points `cuts` pick.
fn split<'a>(stream: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
    points.sort();
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut prev = 0;
    for p in points {
        chunks.push(&stream[prev..p]);
        prev = p;
    }
    chunks.push(&stream[prev..]);
    chunks
}

/// Every verb but STATS (whose `bytes_in` depends on how much was read so far, by design).
fn request() -> impl Strategy<Value = Vec<u8>> {
    let word = "[a-zA-Z0-9 ]{0,12}";
    prop_oneof![
        word.prop_map(|w| format!("ECHO {w}").into_bytes()),
        word.prop_map(|w| format!("UPPER {w}").into_bytes()),
        word.prop_map(|w| format!("REVERSE {w}").into_bytes()),
        proptest::collection::vec(any::<i64>(), 0..4).prop_map(|v| {
            let v: Vec<String> = v.iter().map(|n| n.to_string()).collect();
            format!("SUM {}", v.join(" ")).into_bytes()
        }),
        (1u64..3000, word).prop_map(|(r, w)| format!("HASH {r} {w}").into_bytes()),
        (0u64..20).prop_map(|ms| format!("SLEEP {ms}").into_bytes()),
        Just(b"BYE".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..20)
            .prop_map(|v| v.into_iter().filter(|b| *b != b'\n').collect()),
        Just(vec![b'z'; 80]),
    ]
}

proptest! {
    #[test]
    fn any_split_gives_the_same_responses(
        reqs in proptest::collection::vec((request(), any::<bool>()), 0..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        eof in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for (r, crlf) in &reqs {
            stream.extend_from_slice(r);
            stream.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
        }
        let whole = run(cfg(64), &[&stream], eof);
        prop_assert_eq!(&run(cfg(64), &split(&stream, &cuts), eof), &whole);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(&run(cfg(64), &bytes, eof), &whole);
    }
}

#[test]
fn out_limit_holds_lines_back_until_resumed() {
    let srv = Counters::local();
    let mut s = Session::new(cfg(64)).with_out_limit(10);
    let mut out = Vec::new();
    assert_eq!(
        s.input(b"ECHO 0123456789\nECHO a\nECHO b\n", &mut out, &srv),
        Step::Flush
    );
    assert_eq!(out, b"0123456789\n");
    assert!(
        !s.partial_line(),
        "complete lines are held, not a partial one"
    );
    out.clear();
    assert_eq!(s.resume(&mut out, &srv), Step::NeedInput);
    assert_eq!(out, b"a\nb\n");
}

#[test]
fn a_sleep_after_half_close_sends_its_first_byte_early() {
    let srv = Counters::local();
    let mut s = Session::new(cfg(64));
    let mut out = Vec::new();
    let st = s.input(b"ECHO a\nSLEEP 5\nSLEEP 6\n", &mut out, &srv);
    assert!(matches!(st, Step::Sleep(_)));
    assert!(!s.probing());
    assert_eq!(s.eof(&mut out, &srv), Step::Pending);
    assert!(s.probing() && s.saw_eof());
    assert_eq!(out, b"a\nO");
    s.finish_sleep(&mut out, &srv);
    // The next SLEEP starts after the EOF: its first byte goes at once too.
    assert!(matches!(s.resume(&mut out, &srv), Step::Sleep(_)));
    assert!(s.probing());
    s.finish_sleep(&mut out, &srv);
    assert_eq!(s.resume(&mut out, &srv), Step::Close);
    assert_eq!(out, b"a\nOK slept 5ms\nOK slept 6ms\n");
    assert_eq!(s.stats().bytes_out, out.len() as u64);
}

#[test]
fn line_timeout_answers_err_and_closes() {
    let srv = Counters::local();
    let mut s = Session::new(cfg(64));
    let mut out = Vec::new();
    assert_eq!(s.input(b"ECHO x\nECH", &mut out, &srv), Step::NeedInput);
    assert!(s.partial_line());
    assert_eq!(s.line_timeout(&mut out, &srv), Step::Close);
    assert_eq!(out, b"x\nERR line timeout\n");
    assert!(s.is_closed() && s.buffered() == 0);
}

fn http() -> SessionConfig {
    SessionConfig {
        proto: Proto::Http,
        ..cfg(64)
    }
}

fn http_text(chunks: &[&[u8]], eof: bool) -> (String, bool) {
    let (out, closed) = run(http(), chunks, eof);
    (String::from_utf8(out).unwrap(), closed)
}

/// The status codes and bodies of the responses in `text`, in order.
fn responses(mut text: &[u8]) -> Vec<(u16, Vec<u8>)> {
    use crate::proto::http::{parse_response, ParsedResponse};
    let mut v = Vec::new();
    while !text.is_empty() {
        let ParsedResponse::Response(r) = parse_response(text, false) else {
            panic!("{}", String::from_utf8_lossy(text))
        };
        let end = r.head + r.body as usize;
        v.push((r.status, text[r.head..end].to_vec()));
        text = &text[end..];
    }
    v
}

/// `out` with every `Date` header's value replaced by `*` (the clock's part of an answer).
fn undated(out: &[u8]) -> Vec<u8> {
    const KEY: &[u8] = b"\r\nDate: ";
    let mut v = Vec::with_capacity(out.len());
    let mut at = 0;
    while let Some(i) = out[at..].windows(KEY.len()).position(|w| w == KEY) {
        let value = at + i + KEY.len();
        v.extend_from_slice(&out[at..value]);
        v.push(b'*');
        at = (value + crate::proto::http::DATE_LEN).min(out.len());
    }
    v.extend_from_slice(&out[at..]);
    v
}

/// The `Date` values of the answers in `out`, in order.
fn date_values(out: &[u8]) -> Vec<Vec<u8>> {
    const KEY: &[u8] = b"\r\nDate: ";
    let n = crate::proto::http::DATE_LEN;
    (0..out.len().saturating_sub(KEY.len() + n))
        .filter(|&i| out[i..].starts_with(KEY))
        .map(|i| out[i + KEY.len()..i + KEY.len() + n].to_vec())
        .collect()
}

#[test]
fn http_answers_are_dated_by_the_clock_once_per_batch() {
    use crate::proto::http::HttpDate;
    // Before on the coarse clock the session reads (it never goes back), after on the fine one
    // (which the coarse one never passes).
    let srv = Counters::local();
    let mut s = Session::new(http());
    let mut out = Vec::new();
    let before = crate::sys::realtime_coarse_secs();
    let step = s.input(
        b"GET / HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /bytes/3 HTTP/1.1\r\n\r\nGET /sleep/1 HTTP/1.1\r\n\r\n",
        &mut out,
        &srv,
    );
    assert_eq!(step, Step::Sleep(Duration::from_millis(1)));
    let batch = date_values(&out);
    s.finish_sleep(&mut out, &srv);
    assert_eq!(s.resume(&mut out, &srv), Step::NeedInput);
    assert_eq!(s.input(b"GET / HT", &mut out, &srv), Step::NeedInput);
    assert_eq!(s.line_timeout(&mut out, &srv), Step::Close);
    let after = crate::sys::realtime_ns() / 1_000_000_000;
    let all = date_values(&out);
    // 200, 404, 200 in one batch (one date); the sleep's 200 and the 408 dated when written.
    assert_eq!(batch.len(), 3);
    assert!(batch.iter().all(|d| *d == batch[0]));
    let codes: Vec<u16> = responses(&out).iter().map(|r| r.0).collect();
    assert_eq!(codes, [200, 404, 200, 200, 408]);
    assert_eq!(all.len(), codes.len());
    for d in &all {
        assert!(
            (before..=after).any(|t| HttpDate::from_unix(t).as_bytes() == &d[..]),
            "{} not within [{before}, {after}]",
            String::from_utf8_lossy(d)
        );
    }
}

#[test]
fn http_routes_in_order_over_one_connection() {
    let (out, closed) = run(
        http(),
        &[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/5 HTTP/1.1\r\n\r\nGET /sleep/3 HTTP/1.1\r\n\r\n",
            b"GET /hash/2000 HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\n\r\nGET /stats HTTP/1.1\r\n\r\n",
        ],
        false,
    );
    assert!(!closed);
    let r = responses(&out);
    let codes: Vec<u16> = r.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, [200, 200, 200, 200, 404, 405, 200]);
    assert_eq!(r[0].1, crate::proto::http::ROOT_BODY);
    assert_eq!(r[1].1, b"01234");
    assert_eq!(r[2].1, b"slept 3ms\n");
    let seed = crate::proto::fnv1a64(b"/hash/2000");
    let hash = crate::proto::CpuJob::new(seed, 2000).run();
    assert_eq!(r[3].1, format!("{hash:016x}\n").as_bytes());
    let stats = String::from_utf8(r[6].1.clone()).unwrap();
    assert!(stats.starts_with("requests=7 errors=2 "), "{stats}");
}

#[test]
fn http_close_rules() {
    let (t, closed) = http_text(
        &[b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"],
        false,
    );
    assert!(closed);
    assert_eq!(t.matches("HTTP/1.1 200").count(), 1);
    assert!(t.contains("Connection: close\r\n"));
    let (t, closed) = http_text(&[b"GET /bytes/3 HTTP/1.0\r\n\r\n"], false);
    assert!(closed && t.starts_with("HTTP/1.0 200 OK\r\n") && t.ends_with("\r\n\r\n012"));
    // Errors that break the framing answer and close; the rest is not read.
    for (req, code) in [
        (&b"garbage\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..], 400),
        (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n", 413),
    ] {
        let (out, closed) = run(http(), &[req], false);
        assert!(closed);
        assert_eq!(
            responses(&out).iter().map(|r| r.0).collect::<Vec<_>>(),
            [code]
        );
    }
    let big = vec![b'a'; 20_000];
    let (out, closed) = run(http(), &[b"GET /", &big], false);
    assert!(closed);
    assert_eq!(responses(&out)[0].0, 431);
    // A body is skipped, then the next request is answered.
    let (t, closed) = http_text(
        &[
            b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab",
            b"cGET /bytes/1 HTTP/1.1\r\n\r\n",
        ],
        false,
    );
    assert!(!closed);
    assert!(t.ends_with("\r\n\r\n0"), "{t}");
    // A half-close after an incomplete request: the complete ones are answered, then close.
    let (t, closed) = http_text(&[b"GET / HTTP/1.1\r\n\r\nGET / HT"], true);
    assert!(closed);
    assert_eq!(t.matches("HTTP/1.1 200").count(), 1);
}

#[test]
fn http_head_timeout_is_408() {
    let srv = Counters::local();
    let mut s = Session::new(http());
    let mut out = Vec::new();
    assert_eq!(
        s.input(b"GET / HTTP/1.1\r\nHo", &mut out, &srv),
        Step::NeedInput
    );
    assert!(s.partial_line());
    // Resuming without new input does not parse again and keeps it partial.
    assert_eq!(s.resume(&mut out, &srv), Step::NeedInput);
    assert!(s.partial_line());
    assert_eq!(s.line_timeout(&mut out, &srv), Step::Close);
    assert_eq!(responses(&out)[0].0, 408);
}

#[test]
fn http_large_bodies_respect_the_output_bound() {
    let srv = Counters::local();
    let mut s = Session::new(http()).with_out_limit(1000);
    let mut out = Vec::new();
    let mut all = Vec::new();
    let mut step = s.input(
        b"GET /bytes/10000 HTTP/1.1\r\n\r\nGET /bytes/10 HTTP/1.1\r\nConnection: close\r\n\r\n",
        &mut out,
        &srv,
    );
    let mut flushes = 0;
    while step == Step::Flush {
        assert!(out.len() <= 1000, "{}", out.len());
        assert!(!s.partial_line());
        flushes += 1;
        all.append(&mut out);
        step = s.resume(&mut out, &srv);
    }
    all.append(&mut out);
    assert_eq!(step, Step::Close);
    assert!(flushes >= 10);
    let r = responses(&all);
    assert_eq!((r.len(), r[0].1.len(), r[1].1.len()), (2, 10_000, 10));
    let mut expect = Vec::new();
    crate::proto::http::write_pattern(&mut expect, 0, 10_000);
    assert_eq!(r[0].1, expect);
    assert_eq!(s.stats().bytes_out, all.len() as u64);
}

#[test]
fn http_sleep_after_half_close_sends_its_first_byte_early() {
    let srv = Counters::local();
    let mut s = Session::new(http());
    let mut out = Vec::new();
    let st = s.input(b"GET /sleep/5 HTTP/1.1\r\n\r\n", &mut out, &srv);
    assert_eq!(st, Step::Sleep(Duration::from_millis(5)));
    assert_eq!(s.eof(&mut out, &srv), Step::Pending);
    assert_eq!(out, b"H");
    s.finish_sleep(&mut out, &srv);
    assert_eq!(s.resume(&mut out, &srv), Step::Close);
    assert_eq!(responses(&out)[0], (200, b"slept 5ms\n".to_vec()));
    assert_eq!(s.stats().bytes_out, out.len() as u64);
}

proptest! {
    #[test]
    fn http_any_split_gives_the_same_responses(
        reqs in proptest::collection::vec(prop_oneof![
            Just("GET / HTTP/1.1\r\n\r\n".to_string()),
            (0u64..3000).prop_map(|n| format!("GET /bytes/{n} HTTP/1.1\r\nHost: h\r\n\r\n")),
            (0u64..5).prop_map(|n| format!("GET /sleep/{n} HTTP/1.1\r\n\r\n")),
            (1u64..3000).prop_map(|n| format!("GET /hash/{n} HTTP/1.1\r\n\r\n")),
            Just("HEAD /x HTTP/1.1\r\n\r\n".to_string()),
            Just("GET / HTTP/1.0\r\n\r\n".to_string()),
            Just("junk\r\n\r\n".to_string()),
        ], 0..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        eof in any::<bool>(),
    ) {
        let stream: Vec<u8> = reqs.concat().into_bytes();
        let (whole, closed) = run(http(), &[&stream], eof);
        let (pieces, closed_too) = run(http(), &split(&stream, &cuts), eof);
        // The two runs may straddle a second: their `Date`s may differ, nothing else.
        prop_assert_eq!(undated(&pieces), undated(&whole));
        prop_assert_eq!(closed_too, closed);
    }
}
