use super::*;
use proptest::prelude::*;

/// Every response in `input` fed in the pieces `cuts` makes, then the close: the responses,
/// and how the stream ended (`Err` for a malformed one, else what the close made).
fn read_all(input: &[u8], cuts: &[usize]) -> (Vec<Done>, Result<Eof, Malformed>) {
    let mut r = Reader::new();
    let mut got = Vec::new();
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    for b in bounds {
        let mut piece = &input[at.min(b)..b];
        at = at.max(b);
        loop {
            match r.next(&mut piece) {
                Ok(Some(d)) => got.push(d),
                Ok(None) => break,
                Err(m) => return (got, Err(m)),
            }
        }
        assert!(piece.is_empty(), "a piece not used up");
    }
    let end = r.eof();
    if let Eof::Response(d) = end {
        got.push(d);
    }
    (got, Ok(end))
}

fn whole(input: &[u8]) -> (Vec<Done>, Result<Eof, Malformed>) {
    read_all(input, &[])
}

fn done(status: u16, body: u64, keep_alive: bool) -> Done {
    Done {
        status,
        body,
        keep_alive,
        netcore: false,
    }
}

#[test]
fn content_length_keep_alive_and_close() {
    let (got, end) = whole(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\n\
          Content-Length: 0\r\nServer: netcore\r\n\r\nHTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\n\
          Content-Length: 2\r\n\r\nok",
    );
    assert_eq!(
        got,
        [
            done(200, 5, true),
            Done {
                netcore: true,
                ..done(404, 0, true)
            },
            done(200, 2, false)
        ]
    );
    assert_eq!(end, Ok(Eof::Clean));
    // HTTP/1.0: closes unless it says keep-alive.
    let (got, _) = whole(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(got, [done(200, 1, false)]);
    let (got, _) =
        whole(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(got, [done(200, 1, true)]);
    // The same length twice is one length; two that differ are not.
    let (got, _) = whole(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc");
    assert_eq!(got, [done(200, 3, true)]);
    for bad in ["3, 4", "x", "", "-1", "99999999999999999999"] {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(
            whole(head.as_bytes()).1,
            Err(Malformed::BadContentLength),
            "{bad}"
        );
    }
}

#[test]
fn chunked_bodies_are_decoded_and_trailers_skipped() {
    let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n1A;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\n\
                  HTTP/1.1 204 No Content\r\n\r\n";
    let (got, end) = whole(input);
    assert_eq!(got, [done(200, 31, true), done(204, 0, true)]);
    assert_eq!(end, Ok(Eof::Clean));
    // Content-Length beside chunked: the encoding frames it, the connection is not reused.
    let (got, _) = whole(
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    );
    assert_eq!(got, [done(200, 1, false)]);
    for (bad, why) in [
        ("zz\r\n", Malformed::BadChunkSize),
        ("\r\n", Malformed::BadChunkSize),
        ("5x\r\n", Malformed::BadChunkSize),
        ("3\r\nabcX", Malformed::BadChunkEnd),
        ("11111111111111111\r\n", Malformed::BodyTooLarge),
    ] {
        let r = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{bad}");
        assert_eq!(whole(r.as_bytes()).1, Err(why), "{bad:?}");
    }
    let long_ext = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\n",
        "e".repeat(5000)
    );
    assert_eq!(whole(long_ext.as_bytes()).1, Err(Malformed::BadChunkSize));
    let big_trailers = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: {}\r\n\r\n",
        "t".repeat(70_000)
    );
    assert_eq!(
        whole(big_trailers.as_bytes()).1,
        Err(Malformed::TrailersTooLarge)
    );
    // Cut in the middle: the close is a truncation.
    let (got, end) = whole(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    assert!(got.is_empty());
    assert_eq!(end, Ok(Eof::Truncated));
}

#[test]
fn bodies_until_close_and_interim_heads() {
    // No length: the body is what comes until the close; HTTP/1.0 as old servers send it.
    let (got, end) = whole(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nsome body\nmore");
    assert_eq!(got, [done(200, 14, false)]);
    assert_eq!(end, Ok(Eof::Response(done(200, 14, false))));
    // An encoding other than chunked last: until the close too.
    let (got, _) = whole(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz");
    assert_eq!(got, [done(200, 3, false)]);
    // 1xx heads are skipped; 101 is refused.
    let (got, _) = whole(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(got, [done(200, 1, true)]);
    assert_eq!(
        whole(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").1,
        Err(Malformed::Upgrade)
    );
    // 304 has no body whatever its Content-Length says; a bare-LF head is read.
    let (got, _) = whole(b"HTTP/1.1 304 Not Modified\nContent-Length: 10\n\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(got, [done(304, 0, true), done(200, 0, true)]);
}

#[test]
fn garbage_and_oversized_heads_fail_and_stay_failed() {
    for bad in [
        &b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..],
        b"\x00\x01\x02\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"\n\n",
    ] {
        assert_eq!(whole(bad).1, Err(Malformed::Garbage), "{bad:?}");
    }
    let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(whole(huge.as_bytes()).1, Err(Malformed::HeadTooLarge));
    // A head that never ends fails at the bound, not later.
    let mut r = Reader::new();
    let endless = vec![b'a'; MAX_HEAD + 10];
    let mut d = &endless[..];
    assert_eq!(r.next(&mut d), Err(Malformed::HeadTooLarge));
    let mut more: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";
    assert_eq!(
        r.next(&mut more),
        Err(Malformed::HeadTooLarge),
        "stays failed"
    );
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert_eq!(whole(many.as_bytes()).1, Err(Malformed::TooManyHeaders));
}

/// One response as a server may frame it: its bytes and the `Done` it must give (the last
/// of a stream may be delimited by the close).
fn response() -> impl Strategy<Value = (u16, Vec<u8>, u8, Vec<usize>, bool, bool)> {
    (
        prop_oneof![Just(200u16), Just(404), Just(500), Just(301), Just(204)],
        proptest::collection::vec(any::<u8>(), 0..300),
        0u8..3,
        proptest::collection::vec(1usize..40, 0..6),
        any::<bool>(),
        any::<bool>(),
    )
}

/// The wire bytes of one generated response and its `Done`. `framing`: 0 Content-Length,
/// 1 chunked (chunk sizes from `chunks`, with an extension and a trailer when `extra`),
/// 2 until the close (only where `last`).
fn encode(
    (status, body, framing, chunks, extra, interim): (u16, Vec<u8>, u8, Vec<usize>, bool, bool),
    last: bool,
) -> (Vec<u8>, Done) {
    let mut w = Vec::new();
    if interim {
        w.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    w.extend_from_slice(format!("HTTP/1.1 {status} X\r\nServer: s\r\n").as_bytes());
    let body = if status == 204 { Vec::new() } else { body };
    let framing = if status == 204 || (framing == 2 && !last) {
        0
    } else {
        framing
    };
    match framing {
        0 => {
            w.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            w.extend_from_slice(&body);
        }
        1 => {
            w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &body[..];
            let mut sizes = chunks.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap_or(&7)).min(rest.len());
                let ext = if extra { ";a=b" } else { "" };
                w.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
                w.extend_from_slice(&rest[..n]);
                w.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            w.extend_from_slice(if extra {
                b"0\r\nT: 1\r\n\r\n"
            } else {
                b"0\r\n\r\n"
            });
        }
        _ => {
            w.extend_from_slice(b"\r\n");
            w.extend_from_slice(&body);
        }
    }
    let d = done(status, body.len() as u64, framing != 2);
    (w, d)
}

proptest! {
    /// Responses of every framing, split anywhere: the same responses as the model says,
    /// however the bytes arrive.
    #[test]
    fn split_points_do_not_matter(
        rs in proptest::collection::vec(response(), 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let n = rs.len();
        let mut input = Vec::new();
        let mut want = Vec::new();
        for (i, r) in rs.into_iter().enumerate() {
            let (w, d) = encode(r, i + 1 == n);
            input.extend_from_slice(&w);
            want.push(d);
        }
        let (got, end) = read_all(&input, &cuts);
        prop_assert_eq!(&got, &want);
        prop_assert!(matches!(end, Ok(Eof::Clean | Eof::Response(_))));
        prop_assert_eq!(read_all(&input, &cuts), whole(&input));
    }

    /// Random bytes (and random bytes after a valid head) never panic, and split anywhere
    /// they give what they give whole.
    #[test]
    fn random_bytes_never_panic_and_splits_agree(
        prefix in prop_oneof![
            Just(Vec::new()),
            Just(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
            Just(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n".to_vec()),
        ],
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut input = prefix;
        input.extend_from_slice(&bytes);
        prop_assert_eq!(read_all(&input, &cuts), whole(&input));
    }
}
