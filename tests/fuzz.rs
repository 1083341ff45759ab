//! Fuzzing with proptest (cargo-fuzz needs a nightly toolchain): arbitrary bytes and structured
//! mutations of valid inputs fed to the three decoders that take bytes from the network — the
//! datagram header ([`wire::Header::decode`] + [`wire::check_payload`]), the control messages
//! ([`control::decode`]) and the task-line parser ([`Session`]). Besides "never panics", each
//! target checks the decoder's own invariants. The servers' buffering around the session
//! (output limit, backpressure, each model's way of holding output) is driven the same way.
//!
//! `tools/fuzz.sh` runs these with many more cases (`PROPTEST_CASES`), bounded in time. Inputs
//! that once broke something are kept at the end as plain regression tests.

use std::collections::BTreeMap;

use netcore::flow::control::{self, Msg, Plan, MAX_MESSAGE};
use netcore::flow::udp::wire::{self, Header, Invalid, HEADER_LEN};
use netcore::proto::{Counters, Proto, Session, SessionConfig, Step};
use netcore::reactor::OutBuf;
use netcore::server::limits::Limits;
use proptest::prelude::*;

// ---- datagram header ---------------------------------------------------------------------

/// Decodes and checks one datagram; asserts the decoder's invariants.
fn datagram(d: &[u8]) -> Result<Header, Invalid> {
    let h = Header::decode(d)?;
    assert!(d.len() >= HEADER_LEN);
    assert_eq!(&d[..4], &wire::MAGIC);
    assert_eq!(d[4], wire::VERSION);
    assert_eq!(h.payload_len as usize, d.len() - HEADER_LEN);
    // Decoding then encoding gives the same header bytes.
    let mut again = [0u8; HEADER_LEN];
    h.encode(&mut again);
    assert_eq!(&again[..], &d[..HEADER_LEN]);
    wire::check_payload(&h, d)?;
    Ok(h)
}

/// A mutation of a valid datagram.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    Truncate {
        to: usize,
    },
    Extend {
        by: Vec<u8>,
    },
    /// Overwrites a header field (by offset) with a little-endian value.
    Field {
        at: usize,
        value: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(|by| Mutation::Extend { by }),
        (
            prop_oneof![
                Just(5usize),
                Just(6),
                Just(8),
                Just(16),
                Just(24),
                Just(32),
                Just(36)
            ],
            prop_oneof![
                Just(0u64),
                Just(u64::MAX),
                Just(u32::MAX as u64),
                any::<u64>()
            ]
        )
            .prop_map(|(at, value)| Mutation::Field { at, value }),
    ]
}

fn apply(d: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::FlipBit { at, bit } if !d.is_empty() => {
            let i = at % d.len();
            d[i] ^= 1 << bit;
        }
        Mutation::SetByte { at, value } if !d.is_empty() => {
            let i = at % d.len();
            d[i] = *value;
        }
        Mutation::Truncate { to } => {
            let n = to % (d.len() + 1);
            d.truncate(n);
        }
        Mutation::Extend { by } => d.extend_from_slice(by),
        Mutation::Field { at, value } if d.len() >= HEADER_LEN => {
            let width = match at {
                5 => 1,
                6 => 2,
                32 | 36 => 4,
                _ => 8,
            };
            d[*at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        }
        _ => {}
    }
}

proptest! {
    #[test]
    fn header_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = datagram(&bytes);
    }

    /// Arbitrary bytes behind a valid magic and version (so decoding goes past the first
    /// checks), with the length field right half of the time.
    #[test]
    fn header_past_the_magic(
        mut rest in proptest::collection::vec(any::<u8>(), 0..1024),
        fix_len: bool,
    ) {
        let mut d = wire::MAGIC.to_vec();
        d.push(wire::VERSION);
        d.append(&mut rest);
        if fix_len && d.len() >= HEADER_LEN {
            let n = (d.len() - HEADER_LEN) as u32;
            d[32..36].copy_from_slice(&n.to_le_bytes());
        }
        let _ = datagram(&d);
    }

    #[test]
    fn header_mutations(
        len in HEADER_LEN..1600usize,
        test_id: u64,
        seq: u64,
        verify: bool,
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let orig = wire::build(len, test_id, seq, 0, verify);
        prop_assert_eq!(datagram(&orig).map(|h| h.seq), Ok(seq));
        let mut d = orig.clone();
        for m in &muts {
            apply(&mut d, m);
        }
        let r = datagram(&d);
        // With VERIFY, any change to the first 64 payload bytes that leaves the header and the
        // length alone is caught (the sequence pattern is compared byte for byte there).
        if verify && d.len() == orig.len() && d[..HEADER_LEN] == orig[..HEADER_LEN] {
            let n = (len - HEADER_LEN).min(64);
            if d[HEADER_LEN..HEADER_LEN + n] != orig[HEADER_LEN..HEADER_LEN + n] {
                prop_assert_eq!(r, Err(Invalid::Checksum));
            }
        }
        if d == orig {
            prop_assert!(r.is_ok());
        }
    }
}

// ---- control messages --------------------------------------------------------------------

fn msg() -> impl Strategy<Value = Msg> {
    let text = "\\PC{0,40}";
    prop_oneof![
        (
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            prop_oneof![
                any::<u64>().prop_map(Plan::Count),
                any::<u64>().prop_map(Plan::TimeNs)
            ],
            any::<u16>(),
            any::<bool>(),
            text
        )
            .prop_map(
                |(version, test_id, len, plan, streams, verify, host)| Msg::Hello {
                    version,
                    test_id,
                    len,
                    plan,
                    streams,
                    verify,
                    host,
                    auth: false,
                }
            ),
        (any::<u64>(), any::<bool>()).prop_map(|(rcvbuf, gro)| Msg::Ready {
            rcvbuf,
            gro,
            port: None
        }),
        (0.0f64..1e9, any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(t, datagrams, bytes, lost_so_far)| Msg::Interval {
                t,
                datagrams,
                bytes,
                lost_so_far,
            }
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::btree_map(text, any::<u64>(), 0..4),
            any::<bool>(),
            proptest::option::of(text),
        )
            .prop_map(
                |(sent, bytes, elapsed_ns, errors, interrupted, pacing)| Msg::Done {
                    sent,
                    bytes,
                    elapsed_ns,
                    errors,
                    interrupted,
                    pacing,
                    cpu: None,
                    streams: Vec::new(),
                    sndbuf_errors: None,
                }
            ),
        text.prop_map(|message| Msg::Error { message }),
    ]
}

/// A mutation of an encoded message line.
#[derive(Debug, Clone)]
enum LineMutation {
    Truncate(usize),
    FlipBit(usize, u8),
    Insert(usize, String),
    Delete(usize, usize),
}

fn line_mutation() -> impl Strategy<Value = LineMutation> {
    let snippet = prop_oneof![
        Just("\"".to_string()),
        Just(",".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("\\u0000".to_string()),
        Just("\\ud800".to_string()),
        Just("1e999".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("\"type\":\"hello\"".to_string()),
        Just("\"extra\":1".to_string()),
        Just("null".to_string()),
        "\\PC{0,8}",
    ];
    prop_oneof![
        any::<usize>().prop_map(LineMutation::Truncate),
        (any::<usize>(), 0u8..8).prop_map(|(a, b)| LineMutation::FlipBit(a, b)),
        (any::<usize>(), snippet).prop_map(|(a, s)| LineMutation::Insert(a, s)),
        (any::<usize>(), 1usize..8).prop_map(|(a, n)| LineMutation::Delete(a, n)),
    ]
}

fn apply_line(line: &mut Vec<u8>, m: &LineMutation) {
    let at = |a: usize, len: usize| a % (len + 1);
    match m {
        LineMutation::Truncate(a) => line.truncate(at(*a, line.len())),
        LineMutation::FlipBit(a, b) if !line.is_empty() => {
            let i = a % line.len();
            line[i] ^= 1 << b;
        }
        LineMutation::Insert(a, s) => {
            let i = at(*a, line.len());
            line.splice(i..i, s.bytes());
        }
        LineMutation::Delete(a, n) => {
            let i = at(*a, line.len());
            let j = (i + n).min(line.len());
            line.drain(i..j);
        }
        _ => {}
    }
}

/// Decodes a line; whatever decodes re-encodes to a line that decodes to the same message.
fn control_line(line: &[u8]) {
    if let Ok(m) = control::decode(line) {
        let again = control::encode(&m);
        assert_eq!(again.last(), Some(&b'\n'));
        assert_eq!(control::decode(&again[..again.len() - 1]).unwrap(), m);
    }
}

proptest! {
    #[test]
    fn control_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        control_line(&bytes);
    }

    #[test]
    fn control_round_trip(m in msg()) {
        let line = control::encode(&m);
        prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        prop_assert_eq!(control::decode(&line[..line.len() - 1]).unwrap(), m);
    }

    #[test]
    fn control_mutations(m in msg(), muts in proptest::collection::vec(line_mutation(), 1..5)) {
        let mut line = control::encode(&m);
        line.pop();
        for x in &muts {
            apply_line(&mut line, x);
        }
        control_line(&line);
    }

    /// Deep nesting is an error, not a stack overflow.
    #[test]
    fn control_deep_nesting(depth in 1usize..20_000, open in prop_oneof![Just(b'['), Just(b'{')]) {
        let mut line = br#"{"type":"error","message":"#.to_vec();
        line.extend(std::iter::repeat_n(open, depth));
        prop_assert!(control::decode(&line).is_err());
    }
}

// ---- task-line parser --------------------------------------------------------------------

/// Feeds `chunks` (then EOF) to a session, completing deferred operations at once (the sleep is
/// not slept; a CPU job answers 0). Returns the output, checking the session's invariants on
/// the way.
fn session(cfg: SessionConfig, chunks: &[Vec<u8>]) -> Vec<u8> {
    let srv = Counters::local();
    let mut s = Session::new(cfg);
    let mut out = Vec::new();
    let drive = |s: &mut Session, mut step: Step, out: &mut Vec<u8>| -> Step {
        loop {
            match step {
                Step::Sleep(_) => s.finish_sleep(out, &srv),
                Step::Cpu(_) => s.finish_cpu(0, out, &srv),
                other => return other,
            }
            step = s.resume(out, &srv);
        }
    };
    let mut closed = false;
    for c in chunks {
        let step = s.input(c, &mut out, &srv);
        let step = drive(&mut s, step, &mut out);
        assert_ne!(step, Step::Pending, "nothing is left outstanding");
        assert!(out.is_empty() || out.ends_with(b"\n"), "only whole lines");
        if step == Step::Close {
            closed = true;
            break;
        }
        assert!(
            s.buffered() <= cfg.max_line + 1,
            "holds {} bytes with a {}-byte line limit",
            s.buffered(),
            cfg.max_line
        );
    }
    if !closed {
        let step = s.eof(&mut out, &srv);
        assert_eq!(drive(&mut s, step, &mut out), Step::Close);
    }
    assert!(out.is_empty() || out.ends_with(b"\n"));
    let input_lines = chunks.iter().flatten().filter(|&&b| b == b'\n').count();
    let answers = out.iter().filter(|&&b| b == b'\n').count();
    // One answer per line, plus one for a final unterminated line or an over-long line.
    assert!(
        answers <= input_lines + 1,
        "{answers} answers to {input_lines} lines"
    );
    out
}

/// The answers with `STATS` lines blanked: those report byte counters as of the moment the line
/// was read, which legitimately depends on how the input was split into reads.
fn without_stats(out: Vec<u8>) -> Vec<Vec<u8>> {
    out.split(|&b| b == b'\n')
        .map(|l| {
            if l.starts_with(b"requests=") {
                b"STATS".to_vec()
            } else {
                l.to_vec()
            }
        })
        .collect()
}

/// Splits `bytes` at the given cut points.
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in at.into_iter().chain([bytes.len()]) {
        out.push(bytes[prev..c].to_vec());
        prev = c;
    }
    out
}

/// Lines built from the protocol's verbs with hostile arguments.
fn task_line() -> impl Strategy<Value = Vec<u8>> {
    let verb = prop_oneof![
        Just("ECHO"),
        Just("echo"),
        Just("UPPER"),
        Just("REVERSE"),
        Just("SUM"),
        Just("HASH"),
        Just("SLEEP"),
        Just("STATS"),
        Just("BYE"),
        Just("NOPE"),
        Just(""),
    ];
    let arg = prop_oneof![
        Just(String::new()),
        Just("9223372036854775807 1".to_string()),
        Just("-9223372036854775808 -1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("10000001 x".to_string()),
        Just("0 x".to_string()),
        Just("60001".to_string()),
        Just("-5".to_string()),
        Just("1e3".to_string()),
        Just("ǅǈ\u{0301}ß".to_string()),
        "\\PC{0,30}",
        "[0-9 -]{0,30}",
    ];
    let end = prop_oneof![Just("\n"), Just("\r\n"), Just("\r"), Just("")];
    (verb, any::<bool>(), arg, end).prop_map(|(v, sp, a, e)| {
        let mut l = v.as_bytes().to_vec();
        if sp {
            l.push(b' ');
        }
        l.extend_from_slice(a.as_bytes());
        l.extend_from_slice(e.as_bytes());
        l
    })
}

fn cfg() -> impl Strategy<Value = SessionConfig> {
    (1usize..300, 0u64..20).prop_map(|(max_line, offload_rounds)| SessionConfig {
        proto: Proto::Task,
        max_line,
        offload_rounds,
    })
}

proptest! {
    #[test]
    fn task_arbitrary_bytes(
        cfg in cfg(),
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = without_stats(session(cfg, std::slice::from_ref(&bytes)));
        // How the bytes are split into reads does not change the answers.
        prop_assert_eq!(without_stats(session(cfg, &split(&bytes, &cuts))), whole);
    }

    #[test]
    fn task_structured(
        cfg in cfg(),
        lines in proptest::collection::vec(task_line(), 0..30),
        noise in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut bytes: Vec<u8> = lines.concat();
        for (at, b) in noise {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = b;
            }
        }
        let whole = without_stats(session(cfg, std::slice::from_ref(&bytes)));
        prop_assert_eq!(without_stats(session(cfg, &split(&bytes, &cuts))), whole);
    }

    #[test]
    fn echo_proto_is_identity(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..10),
    ) {
        let srv = Counters::local();
        let mut s = Session::new(SessionConfig { proto: Proto::Echo, ..SessionConfig::default() });
        let mut out = Vec::new();
        for c in &chunks {
            prop_assert_eq!(s.input(c, &mut out, &srv), Step::NeedInput);
        }
        prop_assert_eq!(out, chunks.concat());
    }
}

// ---- the drivers' buffering --------------------------------------------------------------

/// How a model holds output, as the drivers in `src/server/` do it around the same
/// [`Limits`]: `blocking` writes the whole output vector at every [`Step::Flush`] (a blocking
/// `write_all`); `reactor` keeps what the socket did not take in an [`OutBuf`] and answers on
/// once no more than the limit is unsent; `ring` moves the output vector into one send in
/// flight at a time (completed in parts) and collects the next in a second vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Buffering {
    Blocking,
    Reactor,
    Ring,
}

/// A peer whose reading is scripted: each turn it takes the next amount of `takes` (0: it
/// does not read this turn); once the script is used up it reads everything.
struct Peer {
    takes: Vec<usize>,
    turn: usize,
    got: Vec<u8>,
}

impl Peer {
    fn allowance(&mut self) -> usize {
        let t = self.takes.get(self.turn).copied().unwrap_or(usize::MAX);
        self.turn += 1;
        t
    }
}

/// `OutBuf::flush` target taking at most `room` bytes (`WouldBlock` once it is used up).
struct Sock<'a> {
    peer: &'a mut Peer,
    room: usize,
}

impl std::io::Write for Sock<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = b.len().min(self.room);
        self.room -= n;
        self.peer.got.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Drives a session as model `kind` does: input arrives in `chunks` (read only when the
/// limits allow), deferred steps complete at once, the peer reads as scripted. Checks at every
/// turn that the output held and the input held stay within the limits (plus one answer and
/// one read), and returns what the peer received.
fn drive_model(
    kind: Buffering,
    cfg: SessionConfig,
    lim: Limits,
    chunks: &[Vec<u8>],
    takes: Vec<usize>,
) -> Vec<u8> {
    let srv = Counters::local();
    let mut s = lim.session(cfg);
    let mut peer = Peer {
        takes,
        turn: 0,
        got: Vec::new(),
    };
    let mut out = OutBuf::new(); // reactor: the OutBuf; others: its vector
    let mut sending: Vec<u8> = Vec::new(); // ring: the send in flight
    let mut sent = 0usize; // ring: confirmed part of `sending`
    let mut next = 0usize;
    // One answer: a STATS line, or a line of up to `max_line` UPPER-cased (3x at most).
    let answer = 3 * cfg.max_line + 256;
    let chunk = chunks.iter().map(Vec::len).max().unwrap_or(0);
    for _turn in 0..100_000 {
        let unsent = match kind {
            Buffering::Blocking | Buffering::Reactor => out.pending(),
            Buffering::Ring => out.pending() + sending.len() - sent,
        };
        assert!(
            unsent <= 2 * (lim.out + answer),
            "{kind:?}: {unsent} bytes of output held with a limit of {}",
            lim.out
        );
        assert!(
            s.buffered() <= lim.input + chunk + cfg.max_line + 2,
            "{kind:?}: {} bytes of input held",
            s.buffered()
        );
        // The peer reads.
        let room = peer.allowance();
        match kind {
            Buffering::Blocking | Buffering::Reactor => {
                let mut w = Sock {
                    peer: &mut peer,
                    room,
                };
                let _ = out.flush(&mut w, 1024);
            }
            Buffering::Ring => {
                let n = room.min(sending.len() - sent);
                peer.got.extend_from_slice(&sending[sent..sent + n]);
                sent += n;
                if sent == sending.len() && !out.is_empty() {
                    sending = std::mem::take(out.vec());
                    sent = 0;
                }
            }
        }
        // Answer on where the output has room, then read where the limits allow; deferred
        // steps complete at once (as a timer or a job would, later).
        for phase in 0..2 {
            let unsent = out.pending() + sending.len() - sent;
            let mut step = match phase {
                0 if lim.may_answer(&s, unsent) => s.resume(out.vec(), &srv),
                1 if lim.may_read(&s, unsent) => match chunks.get(next) {
                    Some(c) => {
                        next += 1;
                        s.input(c, out.vec(), &srv)
                    }
                    None => s.eof(out.vec(), &srv),
                },
                _ => continue,
            };
            loop {
                match step {
                    Step::Sleep(_) => s.finish_sleep(out.vec(), &srv),
                    Step::Cpu(_) => s.finish_cpu(0, out.vec(), &srv),
                    Step::Flush if kind == Buffering::Blocking => {
                        assert!(
                            out.pending() <= lim.out + answer,
                            "blocking: over the limit"
                        );
                        // `write_all`: the thread blocks until the peer took it all.
                        let mut w = Sock {
                            peer: &mut peer,
                            room: usize::MAX,
                        };
                        let _ = out.flush(&mut w, 1024);
                    }
                    _ => break,
                }
                step = s.resume(out.vec(), &srv);
            }
        }
        if kind == Buffering::Ring && sent == sending.len() && !out.is_empty() {
            sending = std::mem::take(out.vec());
            sent = 0;
        }
        let idle = out.is_empty() && sent == sending.len();
        if s.is_closed() && idle {
            return peer.got;
        }
    }
    panic!(
        "{kind:?}: the session did not finish: holds {} (partial line: {}), pending {}, closed {}, \
         eof {}, {} unsent, {} in flight, chunk {next} of {}",
        s.buffered(),
        s.partial_line(),
        s.is_pending(),
        s.is_closed(),
        s.saw_eof(),
        out.pending(),
        sending.len() - sent,
        chunks.len()
    );
}

fn buffering() -> impl Strategy<Value = Buffering> {
    prop_oneof![
        Just(Buffering::Blocking),
        Just(Buffering::Reactor),
        Just(Buffering::Ring)
    ]
}

proptest! {
    /// Every model's buffering gives the peer the same answers, in order, as one session fed
    /// everything at once, whatever the splits of the input, the limits and how the peer
    /// reads (including not at all for a while); and holds no more than the limits allow.
    #[test]
    fn drivers_answer_in_order_within_their_limits(
        kind in buffering(),
        cfg in cfg(),
        out_limit in 1usize..400,
        in_limit in 0usize..400,
        lines in proptest::collection::vec(task_line(), 0..40),
        stats in proptest::collection::vec(any::<bool>(), 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        takes in proptest::collection::vec(prop_oneof![Just(0usize), 1usize..64, 64usize..4096], 0..200),
    ) {
        // STATS lines (the amplifying request) sprinkled in.
        let mut bytes = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if stats.get(i).copied().unwrap_or(false) {
                bytes.extend_from_slice(b"STATS\n");
            }
            bytes.extend_from_slice(l);
        }
        let lim = Limits { out: out_limit, input: in_limit };
        let whole = without_stats(session(cfg, std::slice::from_ref(&bytes)));
        let got = drive_model(kind, cfg, lim, &split(&bytes, &cuts), takes);
        prop_assert_eq!(without_stats(got), whole);
    }
}

// ---- regressions ---------------------------------------------------------------------------

#[test]
fn regression_inputs_stay_harmless() {
    // Control: an over-limit line, a bare NUL, a lone surrogate escape, a huge number.
    assert!(control::decode(&vec![b'{'; MAX_MESSAGE + 1]).is_err());
    assert!(control::decode(b"\0").is_err());
    assert!(control::decode(br#"{"type":"error","message":"\ud800"}"#).is_err());
    assert!(
        control::decode(br#"{"type":"ready","rcvbuf":18446744073709551616,"gro":true}"#).is_err()
    );
    let done = Msg::Done {
        sent: u64::MAX,
        bytes: 0,
        elapsed_ns: 0,
        errors: BTreeMap::from([("E\u{0}".to_string(), 1)]),
        cpu: None,
        interrupted: false,
        pacing: None,
        streams: Vec::new(),
        sndbuf_errors: Some(3),
    };
    let line = control::encode(&done);
    assert_eq!(control::decode(&line[..line.len() - 1]).unwrap(), done);
    // Found by control_round_trip: serde_json's default float parser was off by one ulp for
    // some values, so an Interval's `t` changed on the wire (fixed with `float_roundtrip`).
    let iv = Msg::Interval {
        t: 949006696.4930029,
        datagrams: 0,
        bytes: 0,
        lost_so_far: 0,
    };
    let line = control::encode(&iv);
    assert_eq!(control::decode(&line[..line.len() - 1]).unwrap(), iv);
    // Header: exactly the header, with a payload length that would underflow if misread.
    let mut d = wire::build(HEADER_LEN, 1, 2, 3, true);
    assert!(datagram(&d).is_ok());
    d[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(datagram(&d), Err(Invalid::Length));
    // Task: a line limit of one byte, CR without LF, and a CRLF split across reads.
    let cfg = SessionConfig {
        proto: Proto::Task,
        max_line: 1,
        offload_rounds: 0,
    };
    let out = session(cfg, &[b"\r".to_vec(), b"\n".to_vec(), b"ab\r\n".to_vec()]);
    assert!(out.ends_with(b"\n"));
}

// ---- recv's control state machine and the sender's reading of receiver messages ----------

use netcore::flow::recv::session::{Action, Limits as RecvLimits, RecvSession, SessionCtx};
use netcore::flow::udp::recv_core::Out;
use netcore::flow::udp::sender::{Reaction, ReceiverView};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum SessionInput {
    Control(Msg),
    Lost,
    Bad,
    Started,
    Interval(u64),
    Finished,
    Tick { ms: u64, stop: bool },
}

fn session_input() -> impl Strategy<Value = SessionInput> {
    prop_oneof![
        msg().prop_map(SessionInput::Control),
        Just(SessionInput::Lost),
        Just(SessionInput::Bad),
        Just(SessionInput::Started),
        any::<u64>().prop_map(SessionInput::Interval),
        Just(SessionInput::Finished),
        (0u64..120_000, any::<bool>()).prop_map(|(ms, stop)| SessionInput::Tick { ms, stop }),
    ]
}

fn stats() -> netcore::flow::payload::ReceiverStats {
    serde_json::from_str(include_str!("fuzz_receiver_stats.json")).expect("stats fixture")
}

proptest! {
    /// Any sequence of control messages, UDP-thread news and time never panics, ends at most
    /// once, and every state has a deadline: after enough quiet time the session has ended.
    #[test]
    fn recv_session_any_inputs(inputs in proptest::collection::vec(session_input(), 0..40)) {
        let t0 = Instant::now();
        let ctx = SessionCtx {
            host: "h".into(),
            peer_loopback: true,
            target: "127.0.0.1:1".into(),
            interval: Duration::from_secs(1),
            rcvbuf: 1,
            gro: false,
            limits: RecvLimits::default(),
            auth: None,
        };
        let mut s = RecvSession::new(ctx, t0);
        let mut now = t0;
        let mut ends = 0;
        let mut finish_asked = false;
        let check = |s: &mut RecvSession, finish_asked: &mut bool| -> usize {
            let mut e = 0;
            for a in s.take_actions() {
                match a {
                    Action::End(_) => e += 1,
                    Action::Cmd(netcore::flow::udp::recv_core::Cmd::Finish { .. }) => *finish_asked = true,
                    _ => {}
                }
            }
            e
        };
        for i in inputs {
            match i {
                SessionInput::Control(m) => s.on_msg(m, now),
                SessionInput::Lost => s.on_control_lost("closed".into(), now),
                SessionInput::Bad => s.on_bad_input("malformed".into(), now),
                SessionInput::Started => s.on_udp(Out::Started, now),
                SessionInput::Interval(n) => s.on_udp(Out::Interval { t: 1.0, datagrams: n, bytes: n, lost_so_far: 0 }, now),
                SessionInput::Finished => s.on_udp(Out::Finished(Box::new(stats())), now),
                SessionInput::Tick { ms, stop } => {
                    now += Duration::from_millis(ms);
                    s.on_tick(now, stop, stop);
                }
            }
            ends += check(&mut s, &mut finish_asked);
        }
        // Time passes with nothing else: every state has a deadline. (A Finish asked of the
        // UDP thread is answered by it; without an answer the session gives up too.)
        for _ in 0..10 {
            now += Duration::from_secs(24 * 3600 + 120);
            s.on_tick(now, false, false);
            ends += check(&mut s, &mut finish_asked);
        }
        prop_assert!(s.ended(), "session still open: {:?}", s);
        prop_assert_eq!(ends, 1);
    }

    /// The sender's reading of receiver messages: never panics, rows never go back in time,
    /// at most one row per 10 ms, and the rows end on the totals.
    #[test]
    fn sender_reads_any_receiver_messages(
        msgs in proptest::collection::vec((msg(), 0u64..2_000), 0..60),
        sent_end in 0u64..1_000_000,
    ) {
        let mut v = ReceiverView::new(1472);
        let mut t = 0.0f64;
        let mut rows = 0usize;
        for (i, (m, dt_us)) in msgs.into_iter().enumerate() {
            t += dt_us as f64 / 1e6;
            match v.on_msg(m, t, i as u64, false) {
                Reaction::Row(r) => {
                    prop_assert!(r.t >= r.start);
                    rows += 1;
                }
                Reaction::Ignored | Reaction::Report(_) | Reaction::Fail(_) => {}
            }
        }
        prop_assert!(rows as f64 <= t / 0.01 + 1.0);
        let out = v.finish(t + 0.5, sent_end, 3, 0);
        for w in out.windows(2) {
            prop_assert!(w[0].t <= w[1].start + 1e-9 && w[1].start <= w[1].t);
        }
        if let Some(last) = out.last() {
            prop_assert_eq!(last.sent, sent_end);
        }
        // Each row's own datagrams add up to the last row's total (no row counted twice),
        // where the totals only grow (as a sender's count does).
        if out.windows(2).all(|w| w[0].sent <= w[1].sent) {
            let sent: u64 = out.iter().map(|r| r.interval_sent).sum();
            prop_assert_eq!(sent, out.last().map_or(0, |r| r.sent));
        }
    }
}

/// #26.7: the last, partial interval is a row of its own from the last printed row's end (it
/// was merged into that row, which was then printed again: `[1.00-2.00s]` then `[1.00-2.002s]`);
/// its rate is over its own span, and each row says its own interval's datagrams.
#[test]
fn the_last_interval_starts_where_the_printed_rows_end() {
    let mut v = ReceiverView::new(1000);
    let iv = |d: u64| Msg::Interval {
        t: 0.0,
        datagrams: d,
        bytes: 0,
        lost_so_far: 0,
    };
    let mut printed = Vec::new();
    for (d, t) in [(100, 1.0), (200, 2.0)] {
        match v.on_msg(iv(d), t, d, false) {
            Reaction::Row(r) => printed.push(r),
            other => panic!("{other:?}"),
        }
    }
    let rows = v.finish(2.002, 210, 210, 0);
    assert_eq!(&rows[..2], &printed[..], "the printed rows stay as printed");
    assert_eq!(rows.len(), 3);
    let last = rows[2];
    assert_eq!(
        (
            last.start,
            last.t,
            last.interval_sent,
            last.interval_received
        ),
        (2.0, 2.002, 10, 10)
    );
    assert_eq!((last.sent, last.received), (210, 210));
    assert!((last.sent_bps - 10.0 * 8000.0 / 0.002).abs() < 1.0);
    assert_eq!(rows[1].interval_received, 100);
    let sum: u64 = rows.iter().map(|r| r.interval_sent).sum();
    assert_eq!(sum, 210, "the rows add up to the total");
}

// ---- relay and traffic state ------------------------------------------------------------------

use netcore::relay::impair::{Offer, Pipeline, Settings as RelaySettings, MAX_INSIDE};
use netcore::traffic::{encode_message, FrameParser};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any impairment settings and any arrival pattern: the pipeline never holds more than its
    /// bound, every datagram offered is accounted for exactly once (emitted, dropped, or
    /// overflowed), and closing drains it.
    #[test]
    fn relay_pipeline_state_is_bounded_and_accounted(
        loss in 0.0f64..0.5,
        reorder in 0.0f64..0.5,
        duplicate in 0.0f64..0.3,
        delay_us in 0u64..5_000,
        jitter_us in 0u64..5_000,
        rate_mbps in prop_oneof![Just(None), (1u32..1000).prop_map(Some)],
        seed: u64,
        gaps in proptest::collection::vec(0u64..200_000, 1..3000),
    ) {
        let mut p: Pipeline<u64> = Pipeline::new(RelaySettings {
            loss,
            reorder,
            duplicate,
            delay: Duration::from_micros(delay_us),
            jitter: Duration::from_micros(jitter_us.min(delay_us)),
            rate: rate_mbps.map(|m| netcore::units::Rate::BitsPerSec(m as f64 * 1e6)),
            seed,
            ..RelaySettings::default()
        });
        let (mut now, mut emitted, mut dropped) = (0u64, 0u64, 0u64);
        for (i, g) in gaps.iter().enumerate() {
            now += g;
            if let Offer::Dropped(_) = p.offer(now, i as u64, 1200) {
                dropped += 1;
            }
            prop_assert!(p.len() <= MAX_INSIDE);
            while let Some(e) = p.poll(now) {
                emitted += 1;
                prop_assert!(e.copies >= 1);
            }
            dropped += p.take_overflowed().count() as u64;
        }
        p.close();
        let mut guard = 0;
        while !p.is_empty() {
            now = p.next_deadline().unwrap_or(now).max(now) + 1;
            while let Some(_e) = p.poll(now) {
                emitted += 1;
            }
            dropped += p.take_overflowed().count() as u64;
            guard += 1;
            prop_assert!(guard < 1_000_000, "the pipeline drains");
        }
        let c = p.counters();
        prop_assert_eq!(c.offered, gaps.len() as u64);
        prop_assert_eq!(emitted + dropped, c.offered, "{:?}", c);
    }

    /// A traffic client's frame parser, fed any split of a valid stream, finds every message;
    /// fed garbage, it marks itself broken rather than miscount or panic.
    #[test]
    fn traffic_frames_any_split(
        sizes in proptest::collection::vec(12usize..4000, 1..50),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        garbage in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut stream = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            encode_message(&mut stream, i as u64, n);
        }
        let mut f = FrameParser::default();
        let (mut msgs, mut bytes) = (0, 0);
        for piece in split(&stream, &cuts) {
            let (m, b) = f.feed(&piece);
            msgs += m;
            bytes += b;
        }
        prop_assert!(!f.broken);
        prop_assert_eq!(msgs, sizes.len() as u64);
        prop_assert_eq!(bytes, sizes.iter().sum::<usize>() as u64);
        let mut g = FrameParser::default();
        let _ = g.feed(&garbage);
    }
}
