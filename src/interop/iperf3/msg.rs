//! iperf3's control-channel vocabulary: the one-byte states, the 37-byte cookie, the
//! length-prefixed JSON frames, and the two JSON documents (the client's parameters, each
//! side's results).
//!
//! Learned from iperf3's protocol (`iperf_api.c`, `iperf_client_api.c`, `iperf_server_api.c`);
//! no code is taken from it. Numbers in iperf3's JSON are C doubles printed by cJSON, so an
//! integral value can arrive as `1e+10`: every number is read as `f64` and then checked.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Bytes of a cookie on the wire: 36 characters from `a..z2..7` and a NUL.
pub(crate) const COOKIE_LEN: usize = 37;
/// iperf3 servers refuse parameter documents larger than this; so do we.
pub(crate) const MAX_PARAMS_JSON: usize = 8 * 1024;
/// Our bound on a results document (iperf3 sets none; one with a server's text output is a
/// few hundred KiB at most).
pub(crate) const MAX_RESULTS_JSON: usize = 1 << 20;
/// The most streams a test may ask for (iperf3's own limit).
pub(crate) const MAX_STREAMS: u32 = 128;

/// A control-channel state, one signed byte on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    TestStart,
    TestRunning,
    TestEnd,
    ParamExchange,
    CreateStreams,
    ServerTerminate,
    ClientTerminate,
    ExchangeResults,
    DisplayResults,
    IperfStart,
    IperfDone,
    AccessDenied,
    ServerError,
}

impl State {
    pub fn byte(self) -> u8 {
        let v: i8 = match self {
            State::TestStart => 1,
            State::TestRunning => 2,
            State::TestEnd => 4,
            State::ParamExchange => 9,
            State::CreateStreams => 10,
            State::ServerTerminate => 11,
            State::ClientTerminate => 12,
            State::ExchangeResults => 13,
            State::DisplayResults => 14,
            State::IperfStart => 15,
            State::IperfDone => 16,
            State::AccessDenied => -1,
            State::ServerError => -2,
        };
        v as u8
    }

    /// The state a byte names; `None` for bytes iperf3 defines as unused (3, 5-8) or not at all.
    pub(crate) fn from_byte(b: u8) -> Option<State> {
        Some(match b as i8 {
            1 => State::TestStart,
            2 => State::TestRunning,
            4 => State::TestEnd,
            9 => State::ParamExchange,
            10 => State::CreateStreams,
            11 => State::ServerTerminate,
            12 => State::ClientTerminate,
            13 => State::ExchangeResults,
            14 => State::DisplayResults,
            15 => State::IperfStart,
            16 => State::IperfDone,
            -1 => State::AccessDenied,
            -2 => State::ServerError,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            State::TestStart => "TEST_START",
            State::TestRunning => "TEST_RUNNING",
            State::TestEnd => "TEST_END",
            State::ParamExchange => "PARAM_EXCHANGE",
            State::CreateStreams => "CREATE_STREAMS",
            State::ServerTerminate => "SERVER_TERMINATE",
            State::ClientTerminate => "CLIENT_TERMINATE",
            State::ExchangeResults => "EXCHANGE_RESULTS",
            State::DisplayResults => "DISPLAY_RESULTS",
            State::IperfStart => "IPERF_START",
            State::IperfDone => "IPERF_DONE",
            State::AccessDenied => "ACCESS_DENIED",
            State::ServerError => "SERVER_ERROR",
        }
    }
}

/// What went wrong on an iperf3 control channel; each renders as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("iperf3 peer sent state byte {0}, which iperf3 does not define")]
    UnknownState(u8),
    #[error("iperf3 peer sent {got} while {expected} was expected")]
    WrongState {
        got: &'static str,
        expected: &'static str,
    },
    #[error("iperf3 cookie is not 36 characters from a-z2-7 and a NUL")]
    BadCookie,
    #[error("iperf3 JSON of {0} bytes is empty or over the limit of {1} bytes")]
    JsonSize(usize, usize),
    #[error("iperf3 JSON is malformed: {0}")]
    BadJson(String),
    #[error("iperf3 parameters refused: {0}")]
    BadParams(String),
    #[error("iperf3 peer sent bytes after the test ended")]
    Trailing,
}

impl ProtoError {
    /// `got` arrived where `expected` should have.
    pub fn wrong(got: State, expected: &'static str) -> ProtoError {
        ProtoError::WrongState {
            got: got.name(),
            expected,
        }
    }
}

/// Control bytes received and not yet taken, never more than `limit`: a flood is refused, not
/// stored.
#[derive(Debug)]
pub(crate) struct Inbox {
    buf: Vec<u8>,
    limit: usize,
}

impl Inbox {
    pub fn new(limit: usize) -> Inbox {
        Inbox {
            buf: Vec::new(),
            limit,
        }
    }

    pub fn push(&mut self, data: &[u8]) -> Result<(), ProtoError> {
        let n = self.buf.len() + data.len();
        if n > self.limit {
            self.buf.clear();
            return Err(ProtoError::JsonSize(n, self.limit));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` bytes.
    pub fn take(&mut self, n: usize) {
        self.buf.drain(..n);
    }

    /// Takes the first byte.
    pub fn pop(&mut self) -> Option<u8> {
        let b = *self.buf.first()?;
        self.buf.remove(0);
        Some(b)
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// A test's cookie: identifies the test and authenticates its data connections.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cookie(pub [u8; COOKIE_LEN]);

const COOKIE_CHARS: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

impl Cookie {
    /// A cookie from 36 random bytes (each mapped onto iperf3's 32-letter alphabet).
    pub(crate) fn from_random(r: [u8; COOKIE_LEN - 1]) -> Cookie {
        let mut c = [0u8; COOKIE_LEN];
        for (o, b) in c.iter_mut().zip(r) {
            *o = COOKIE_CHARS[(b % 32) as usize];
        }
        Cookie(c)
    }

    /// Checks 37 received bytes.
    pub fn parse(b: &[u8]) -> Result<Cookie, ProtoError> {
        let b: [u8; COOKIE_LEN] = b.try_into().map_err(|_| ProtoError::BadCookie)?;
        let ok =
            b[COOKIE_LEN - 1] == 0 && b[..COOKIE_LEN - 1].iter().all(|c| COOKIE_CHARS.contains(c));
        if ok {
            Ok(Cookie(b))
        } else {
            Err(ProtoError::BadCookie)
        }
    }

    /// Whether a connection's first byte can start a cookie (a letter `a..z` or a digit
    /// `2..7`): how a receiver tells an iperf3 client from a netcore one, whose control opens
    /// with `{`.
    pub(crate) fn can_start(b: u8) -> bool {
        COOKIE_CHARS.contains(&b)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters and digits (checked or generated), NUL excluded.
        std::str::from_utf8(&self.0[..COOKIE_LEN - 1]).unwrap_or("")
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie({})", self.as_str())
    }
}

/// A JSON object read from a frame, and the bytes the frame took.
pub(crate) type Frame = (Map<String, Value>, usize);

/// Appends one JSON frame (a 4-byte big-endian length, then the text) to `out`.
pub(crate) fn write_json(out: &mut Vec<u8>, v: &Value) {
    let text = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(&text);
}

/// Reads one JSON frame from the front of `buf`: `Ok(None)` while it is incomplete, else the
/// object and the bytes it took. The length is checked before anything is buffered for it.
pub(crate) fn read_json(buf: &[u8], max: usize) -> Result<Option<Frame>, ProtoError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if n == 0 || n > max {
        return Err(ProtoError::JsonSize(n, max));
    }
    let Some(text) = buf.get(4..4 + n) else {
        return Ok(None);
    };
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(m)) => Ok(Some((m, 4 + n))),
        Ok(_) => Err(ProtoError::BadJson("not an object".into())),
        Err(e) => Err(ProtoError::BadJson(e.to_string())),
    }
}

/// The client's test parameters (the subset netcore acts on; the rest is kept in `extra`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    pub udp: bool,
    /// Seconds (`-t`); 0 when the test is bounded by bytes or blocks.
    pub time: u64,
    /// Bytes to send (`-n`); 0 when unset.
    pub bytes: u64,
    /// Blocks (writes, or datagrams) to send (`-k`); 0 when unset.
    pub blocks: u64,
    /// Seconds of warm-up not counted (`-O`).
    pub omit: u64,
    /// Streams (`-P`).
    pub parallel: u32,
    /// The server sends (`-R`).
    pub reverse: bool,
    /// Both directions (`--bidir`).
    pub bidirectional: bool,
    /// Write / datagram size (`-l`); 0: the side's default.
    pub len: u32,
    /// Target bits per second per stream (`-b`); 0: unpaced.
    pub bandwidth: u64,
    /// Socket buffer (`-w`); 0: default.
    pub window: u64,
    /// TCP MSS (`-M`); 0: default.
    pub mss: u32,
    pub nodelay: bool,
    pub congestion: Option<String>,
    /// 64-bit UDP sequence numbers (`--udp-counters-64bit`).
    pub udp_counters_64bit: bool,
    /// The client wants the server's output in the results (`--get-server-output`).
    pub get_server_output: bool,
    /// UDP GSO/GRO as the current iperf3 offers them (`--gsro`).
    pub gso: bool,
    pub gro: bool,
    pub client_version: Option<String>,
    /// Every other member, as sent.
    pub extra: Map<String, Value>,
}

fn num(m: &Map<String, Value>, key: &str) -> Result<Option<f64>, ProtoError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| ProtoError::BadParams(format!("\"{key}\" is not a finite number"))),
        Some(_) => Err(ProtoError::BadParams(format!("\"{key}\" is not a number"))),
    }
}

fn count(m: &Map<String, Value>, key: &str, max: u64) -> Result<u64, ProtoError> {
    match num(m, key)? {
        None => Ok(0),
        Some(v) if v >= 0.0 && v.fract() == 0.0 && v <= max as f64 => Ok(v as u64),
        Some(v) => Err(ProtoError::BadParams(format!(
            "\"{key}\" = {v} is not a whole number in 0..={max}"
        ))),
    }
}

fn flag(m: &Map<String, Value>, key: &str) -> Result<bool, ProtoError> {
    match m.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(false),
        Some(Value::Bool(true)) => Ok(true),
        // cJSON writes some switches as numbers (1/0).
        Some(Value::Number(n)) => Ok(n.as_f64().is_some_and(|v| v != 0.0)),
        Some(_) => Err(ProtoError::BadParams(format!("\"{key}\" is not a flag"))),
    }
}

fn text(m: &Map<String, Value>, key: &str) -> Result<Option<String>, ProtoError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 256 => Ok(Some(s.clone())),
        Some(_) => Err(ProtoError::BadParams(format!(
            "\"{key}\" is not a short string"
        ))),
    }
}

const KNOWN_PARAMS: &[&str] = &[
    "tcp",
    "udp",
    "sctp",
    "time",
    "num",
    "blockcount",
    "omit",
    "parallel",
    "reverse",
    "bidirectional",
    "len",
    "bandwidth",
    "window",
    "MSS",
    "nodelay",
    "congestion",
    "udp_counters_64bit",
    "get_server_output",
    "gso",
    "gro",
    "client_version",
];

impl Params {
    /// Reads and checks a parameter document. Refuses what netcore cannot run (SCTP, MPTCP, no
    /// protocol) with a one-line reason.
    pub(crate) fn from_json(m: &Map<String, Value>) -> Result<Params, ProtoError> {
        let (tcp, udp) = (flag(m, "tcp")?, flag(m, "udp")?);
        if flag(m, "sctp")? {
            return Err(ProtoError::BadParams("SCTP is not supported".into()));
        }
        if flag(m, "mptcp")? {
            return Err(ProtoError::BadParams("MPTCP is not supported".into()));
        }
        if tcp == udp {
            return Err(ProtoError::BadParams(
                "exactly one of \"tcp\" and \"udp\" must be set".into(),
            ));
        }
        let parallel = count(m, "parallel", MAX_STREAMS as u64)? as u32;
        let p = Params {
            udp,
            time: count(m, "time", 86_400)?,
            bytes: count(m, "num", u64::MAX >> 11)?,
            blocks: count(m, "blockcount", u64::MAX >> 11)?,
            omit: count(m, "omit", 600)?,
            parallel: parallel.max(1),
            reverse: flag(m, "reverse")?,
            bidirectional: flag(m, "bidirectional")?,
            len: count(m, "len", 1 << 30)? as u32,
            bandwidth: count(m, "bandwidth", u64::MAX >> 11)?,
            window: count(m, "window", 1 << 31)?,
            mss: count(m, "MSS", 65_535)? as u32,
            nodelay: flag(m, "nodelay")?,
            congestion: text(m, "congestion")?,
            udp_counters_64bit: flag(m, "udp_counters_64bit")?,
            get_server_output: flag(m, "get_server_output")?,
            gso: flag(m, "gso")?,
            gro: flag(m, "gro")?,
            client_version: text(m, "client_version")?,
            extra: m
                .iter()
                .filter(|(k, _)| !KNOWN_PARAMS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        if p.reverse && p.bidirectional {
            return Err(ProtoError::BadParams(
                "\"reverse\" and \"bidirectional\" together".into(),
            ));
        }
        Ok(p)
    }

    /// The document a client sends for these parameters.
    pub(crate) fn to_json(&self) -> Value {
        let mut m = self.extra.clone();
        m.insert(
            if self.udp { "udp" } else { "tcp" }.into(),
            Value::Bool(true),
        );
        let mut put = |k: &str, v: u64| {
            m.insert(k.into(), Value::from(v));
        };
        put("omit", self.omit);
        put("time", self.time);
        put("num", self.bytes);
        put("blockcount", self.blocks);
        put("parallel", self.parallel.max(1) as u64);
        if self.len > 0 {
            put("len", self.len as u64);
        }
        if self.bandwidth > 0 {
            put("bandwidth", self.bandwidth);
        }
        if self.window > 0 {
            put("window", self.window);
        }
        if self.mss > 0 {
            put("MSS", self.mss as u64);
        }
        if self.udp_counters_64bit {
            put("udp_counters_64bit", 1);
        }
        if self.get_server_output {
            put("get_server_output", 1);
        }
        for (k, on) in [
            ("reverse", self.reverse),
            ("bidirectional", self.bidirectional),
            ("nodelay", self.nodelay),
        ] {
            if on {
                m.insert(k.into(), Value::Bool(true));
            }
        }
        if let Some(c) = &self.congestion {
            m.insert("congestion".into(), Value::from(c.as_str()));
        }
        if let Some(v) = &self.client_version {
            m.insert("client_version".into(), Value::from(v.as_str()));
        }
        Value::Object(m)
    }
}

/// One stream's line in a results document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamResult {
    /// iperf3's stream id: 1, 3, 4, 5, ... in creation order.
    pub id: i64,
    pub bytes: u64,
    /// TCP retransmits the sender saw; -1 where unknown.
    pub retransmits: i64,
    /// Seconds (RFC 1889 estimate), UDP.
    pub jitter: f64,
    /// Lost datagrams as the receiver counts them.
    pub errors: i64,
    #[serde(default)]
    pub omitted_errors: i64,
    /// Datagrams (the highest sequence number seen, as iperf3 counts on the receiving side).
    pub packets: i64,
    #[serde(default)]
    pub omitted_packets: i64,
    #[serde(default)]
    pub start_time: f64,
    #[serde(default)]
    pub end_time: f64,
}

/// A side's results document, exchanged after TEST_END.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    pub cpu_util_total: f64,
    pub cpu_util_user: f64,
    pub cpu_util_system: f64,
    /// 1 when the sending side reports TCP retransmits, 0 when not, -1 unknown.
    pub sender_has_retransmits: i64,
    pub congestion_used: Option<String>,
    pub streams: Vec<StreamResult>,
    /// `--get-server-output`: the server's own report as text.
    pub server_output_text: Option<String>,
}

impl Results {
    pub(crate) fn from_json(m: &Map<String, Value>) -> Result<Results, ProtoError> {
        let bad = |what: &str| ProtoError::BadJson(format!("results: {what}"));
        let need = |k: &str| num(m, k).ok().flatten().ok_or_else(|| bad(k));
        let streams = match m.get("streams") {
            Some(Value::Array(a)) if a.len() <= 2 * MAX_STREAMS as usize => a
                .iter()
                .map(|s| {
                    let s = s
                        .as_object()
                        .ok_or_else(|| bad("a stream is not an object"))?;
                    stream_from(s).ok_or_else(|| bad("a stream lacks a field"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(bad("\"streams\" is not a list of at most 256")),
        };
        Ok(Results {
            cpu_util_total: need("cpu_util_total")?,
            cpu_util_user: need("cpu_util_user")?,
            cpu_util_system: need("cpu_util_system")?,
            sender_has_retransmits: signed(need("sender_has_retransmits")?),
            congestion_used: text(m, "congestion_used").ok().flatten(),
            streams,
            server_output_text: match m.get("server_output_text") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            },
        })
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("cpu_util_total".into(), Value::from(self.cpu_util_total));
        m.insert("cpu_util_user".into(), Value::from(self.cpu_util_user));
        m.insert("cpu_util_system".into(), Value::from(self.cpu_util_system));
        m.insert(
            "sender_has_retransmits".into(),
            Value::from(self.sender_has_retransmits),
        );
        if let Some(c) = &self.congestion_used {
            m.insert("congestion_used".into(), Value::from(c.as_str()));
        }
        m.insert(
            "streams".into(),
            serde_json::to_value(&self.streams).unwrap_or(Value::Array(Vec::new())),
        );
        if let Some(t) = &self.server_output_text {
            m.insert("server_output_text".into(), Value::from(t.as_str()));
        }
        Value::Object(m)
    }
}

/// A signed count as iperf3 sends it: servers like 3.12 print -1 through an unsigned 64-bit
/// type (18446744073709551615), which reads back as -1 here.
pub(crate) fn signed(v: f64) -> i64 {
    if v >= i64::MAX as f64 {
        (v as u64) as i64
    } else {
        v as i64
    }
}

fn stream_from(s: &Map<String, Value>) -> Option<StreamResult> {
    let f = |k: &str| num(s, k).ok().flatten();
    Some(StreamResult {
        id: f("id")? as i64,
        bytes: f("bytes").filter(|v| *v >= 0.0)? as u64,
        retransmits: signed(f("retransmits")?),
        jitter: f("jitter")?,
        errors: signed(f("errors")?),
        omitted_errors: signed(f("omitted_errors").unwrap_or(0.0)),
        packets: signed(f("packets")?),
        omitted_packets: signed(f("omitted_packets").unwrap_or(0.0)),
        start_time: f("start_time").unwrap_or(0.0),
        end_time: f("end_time").unwrap_or(0.0),
    })
}

/// iperf3's stream id for the `i`th stream a test creates (0-based): 1, 3, 4, 5, ...
pub(crate) fn stream_id(i: usize) -> i64 {
    if i == 0 {
        1
    } else {
        i as i64 + 2
    }
}
