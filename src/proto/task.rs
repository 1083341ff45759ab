//! The task protocol: one request per line, parsed here into a [`Request`] (pure: no I/O, no
//! session state); [`super::session::Session`] frames the lines, runs the requests and keeps
//! the answers in order. The verbs and their answers are listed in the [module docs](super).

use std::fmt;

/// Largest accepted `HASH` round count.
pub const MAX_HASH_ROUNDS: u64 = 10_000_000;
/// Largest accepted `SLEEP` in milliseconds.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// Default line limit.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Default `HASH` round count above which the work is offloaded (where the driver can).
pub const DEFAULT_OFFLOAD_ROUNDS: u64 = 10_000;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The `HASH` verb: `h1 = fnv1a64(text)`, then `h(i+1) = fnv1a64(h(i) as 8 little-endian
/// bytes)` until `h(rounds)`. The cost is one pass over `text` plus 8 FNV steps per round
/// (10 million rounds are roughly a tenth of a second of one core).
pub fn hash(rounds: u64, text: &[u8]) -> u64 {
    CpuJob::new(fnv1a64(text), rounds).run()
}

/// One parsed request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Echo(&'a str),
    Upper(&'a str),
    Reverse(&'a str),
    /// The sum, already computed (`SUM` fails on overflow at parse time).
    Sum(i64),
    Hash(CpuJob),
    /// Milliseconds.
    Sleep(u64),
    Stats,
    Bye,
}

/// Why a line is not a request; its `Display` is the text after `ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest<'a> {
    Utf8,
    Empty,
    NotI64(&'a str),
    SumOverflow,
    HashRounds,
    SleepMs,
    UnknownVerb(&'a str),
}

impl fmt::Display for BadRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRequest::Utf8 => write!(f, "invalid UTF-8"),
            BadRequest::Empty => write!(f, "empty request"),
            BadRequest::NotI64(tok) => write!(f, "SUM: not an i64: '{}'", clip(tok)),
            BadRequest::SumOverflow => write!(f, "SUM: overflow"),
            BadRequest::HashRounds => write!(
                f,
                "HASH: rounds must be 1..={MAX_HASH_ROUNDS} (usage: HASH rounds text)"
            ),
            BadRequest::SleepMs => write!(f, "SLEEP: milliseconds must be 0..={MAX_SLEEP_MS}"),
            BadRequest::UnknownVerb(verb) => write!(f, "unknown verb '{}'", clip(verb)),
        }
    }
}

/// Parses one request line (without its terminator). Verbs are case-insensitive; the argument
/// is everything after the first space.
pub fn parse(line: &[u8]) -> Result<Request<'_>, BadRequest<'_>> {
    let line = std::str::from_utf8(line).map_err(|_| BadRequest::Utf8)?;
    if line.is_empty() {
        return Err(BadRequest::Empty);
    }
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    let is = |v: &str| verb.eq_ignore_ascii_case(v);
    Ok(if is("ECHO") {
        Request::Echo(arg)
    } else if is("UPPER") {
        Request::Upper(arg)
    } else if is("REVERSE") {
        Request::Reverse(arg)
    } else if is("SUM") {
        let mut sum: i64 = 0;
        for tok in arg.split_ascii_whitespace() {
            let n = tok.parse::<i64>().map_err(|_| BadRequest::NotI64(tok))?;
            sum = sum.checked_add(n).ok_or(BadRequest::SumOverflow)?;
        }
        Request::Sum(sum)
    } else if is("HASH") {
        let (r, text) = arg.split_once(' ').unwrap_or((arg, ""));
        match r.parse::<u64>() {
            Ok(rounds) if (1..=MAX_HASH_ROUNDS).contains(&rounds) => {
                Request::Hash(CpuJob::new(fnv1a64(text.as_bytes()), rounds))
            }
            _ => return Err(BadRequest::HashRounds),
        }
    } else if is("SLEEP") {
        match arg.trim().parse::<u64>() {
            Ok(ms) if ms <= MAX_SLEEP_MS => Request::Sleep(ms),
            _ => return Err(BadRequest::SleepMs),
        }
    } else if is("STATS") {
        Request::Stats
    } else if is("BYE") {
        Request::Bye
    } else {
        return Err(BadRequest::UnknownVerb(verb));
    })
}

/// `UPPER`'s answer line: `text` upper-cased (Unicode).
pub(crate) fn write_upper(text: &str, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 4];
    for c in text.chars().flat_map(char::to_uppercase) {
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
    out.push(b'\n');
}

/// `REVERSE`'s answer line: the characters (Unicode scalar values) of `text` reversed.
pub(crate) fn write_reverse(text: &str, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 4];
    for c in text.chars().rev() {
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
    out.push(b'\n');
}

/// A `HASH` computation: `rounds - 1` iterations of FNV-1a over the previous hash, from `seed`
/// (the FNV-1a of the text). Small and `Copy`: no allocation to hand it to another thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuJob {
    seed: u64,
    rounds: u64,
}

impl CpuJob {
    pub fn new(seed: u64, rounds: u64) -> Self {
        CpuJob { seed, rounds }
    }

    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Does the work.
    pub fn run(&self) -> u64 {
        let mut h = self.seed;
        for _ in 1..self.rounds {
            h = fnv1a64(&h.to_le_bytes());
        }
        h
    }
}

/// At most 32 characters of `s`, for error messages.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        assert_eq!(hash(1, b"foobar"), 0x85944171f73967e8);
        assert_eq!(
            hash(2, b"foobar"),
            fnv1a64(&0x85944171f73967e8u64.to_le_bytes())
        );
    }

    #[test]
    fn parses_every_verb_and_names_bad_lines() {
        assert_eq!(parse(b"echo hi there"), Ok(Request::Echo("hi there")));
        assert_eq!(parse(b"SUM 1 -2 3"), Ok(Request::Sum(2)));
        assert_eq!(parse(b"SLEEP 0"), Ok(Request::Sleep(0)));
        assert_eq!(parse(b"bye"), Ok(Request::Bye));
        assert_eq!(parse(b""), Err(BadRequest::Empty));
        assert_eq!(parse(b"\xff"), Err(BadRequest::Utf8));
        assert_eq!(parse(b"SUM 1 x"), Err(BadRequest::NotI64("x")));
        assert_eq!(parse(b"HASH 0 a"), Err(BadRequest::HashRounds));
        assert_eq!(parse(b"SLEEP 60001"), Err(BadRequest::SleepMs));
        assert_eq!(
            BadRequest::UnknownVerb("NOPE").to_string(),
            "unknown verb 'NOPE'"
        );
        let Ok(Request::Hash(job)) = parse(b"HASH 3 abc") else {
            panic!("HASH did not parse")
        };
        assert_eq!(job.run(), hash(3, b"abc"));
    }
}
