//! Human units on the command line: sizes (`200MB`, `1.5GiB`), rates (`1Gbps`, `50kpps`) and
//! durations (`10s`, `250ms`), percentages (`0.5%`). Pure parsing and formatting, no I/O.
//!
//! Conventions (the ones iperf3 users expect, stated once):
//! - sizes: `KB MB GB TB` are decimal (10^3), `KiB MiB GiB TiB` and the bare letters `K M G T` are
//!   binary (2^10), as iperf's `-n 200M`; a bare number is bytes;
//! - rates: bits per second with `bps` / `bit/s` (`k M G T` decimal), bytes per second with a
//!   capital `B` (`MB/s`, `MBps`, `MB`, `MiB/s`; times 8), or packets per second with `pps`
//!   (`kpps`, `Mpps`); a bare number (`1000`, `1e9`) is bits per second;
//! - durations: `ns us ms s m h`; a bare number is seconds.

use std::fmt;
use std::time::Duration;

/// A parse error for a unit value: says what was wrong with which text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UnitError(String);

fn err(kind: &str, text: &str, why: &str) -> UnitError {
    UnitError(format!("invalid {kind} '{text}': {why}"))
}

/// Splits "1.5GiB" into (1.5, "GiB"). The number must be finite and not negative.
fn split_number<'a>(kind: &str, text: &'a str) -> Result<(f64, &'a str), UnitError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(err(kind, text, "empty"));
    }
    let b = t.as_bytes();
    let mut end = b
        .iter()
        .position(|&c| !(c.is_ascii_digit() || c == b'.' || c == b'-' || c == b'+' || c == b'_'))
        .unwrap_or(t.len());
    // An exponent (`1e9`, `2.5E-3`): `e`, an optional sign, then digits.
    if end > 0 && matches!(b.get(end), Some(b'e' | b'E')) {
        let mut i = end + 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let digits = b[i.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits > 0 {
            end = i + digits;
        }
    }
    let (num, unit) = t.split_at(end);
    let num = num.replace('_', "");
    if num.is_empty() {
        return Err(err(kind, text, "no number"));
    }
    let v: f64 = num.parse().map_err(|_| err(kind, text, "not a number"))?;
    if !v.is_finite() {
        return Err(err(kind, text, "not a finite number"));
    }
    if v < 0.0 {
        return Err(err(kind, text, "must not be negative"));
    }
    Ok((v, unit.trim()))
}

/// Parses a byte count: `1472`, `64K`, `200MB`, `200MiB`, `1.5GiB`.
pub(crate) fn parse_size(text: &str) -> Result<u64, UnitError> {
    let (v, unit) = split_number("size", text)?;
    let mult: f64 = match unit {
        "" | "B" | "b" => 1.0,
        "KB" | "kB" | "kb" => 1e3,
        "MB" | "mb" => 1e6,
        "GB" | "gb" => 1e9,
        "TB" | "tb" => 1e12,
        "K" | "k" | "KiB" | "Ki" => 1024.0,
        "M" | "MiB" | "Mi" => 1024.0 * 1024.0,
        "G" | "GiB" | "Gi" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TiB" | "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(err(
                "size",
                text,
                &format!("unknown unit '{unit}' (use B, KB, MB, GB, KiB, MiB, GiB)"),
            ))
        }
    };
    let bytes = v * mult;
    if bytes > u64::MAX as f64 / 2.0 {
        return Err(err("size", text, "too large"));
    }
    Ok(bytes.round() as u64)
}

/// A send rate: bits per second or packets per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    BitsPerSec(f64),
    PacketsPerSec(f64),
}

impl Rate {
    /// Datagrams per second for datagrams of `len` payload bytes.
    pub(crate) fn packets_per_sec(self, len: usize) -> f64 {
        match self {
            Rate::BitsPerSec(b) => b / (len as f64 * 8.0),
            Rate::PacketsPerSec(p) => p,
        }
    }

    /// A pace of nothing: `--rate 0` (unpaced).
    pub(crate) fn is_zero(self) -> bool {
        matches!(self, Rate::BitsPerSec(v) | Rate::PacketsPerSec(v) if v == 0.0)
    }

    /// Bits per second for datagrams of `len` payload bytes.
    pub(crate) fn bits_per_sec(self, len: usize) -> f64 {
        match self {
            Rate::BitsPerSec(b) => b,
            Rate::PacketsPerSec(p) => p * len as f64 * 8.0,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Rate::BitsPerSec(b) => write!(f, "{}", fmt_bits_per_sec(b)),
            Rate::PacketsPerSec(p) => write!(f, "{}", fmt_pps(p)),
        }
    }
}

/// Parses `1Gbps`, `500Mbit/s`, `50kpps`, `2Mpps`, `1e9` (bits per second), `125MB/s`,
/// `125MBps`, `125MB` (bytes per second: times 8). The case of `B` matters: `b` is bits, `B`
/// bytes. Zero is rejected (a cap or a pace of nothing): see [`parse_pace`] for a pace where
/// 0 means unpaced.
pub(crate) fn parse_rate(text: &str) -> Result<Rate, UnitError> {
    let r = parse_pace(text)?;
    if r.is_zero() {
        return Err(err("rate", text, "must be greater than zero"));
    }
    Ok(r)
}

/// Parses a pace as [`parse_rate`] does, but 0 (in any unit) is accepted: it means unpaced,
/// as iperf3's `-b 0` does.
pub(crate) fn parse_pace(text: &str) -> Result<Rate, UnitError> {
    let (v, unit) = split_number("rate", text)?;
    #[derive(PartialEq)]
    enum Kind {
        Bits,
        Bytes,
        Packets,
    }
    const SUFFIXES: &[(&str, Kind)] = &[
        ("pps", Kind::Packets),
        ("PPS", Kind::Packets),
        ("bit/s", Kind::Bits),
        ("bits/s", Kind::Bits),
        ("bps", Kind::Bits),
        ("b/s", Kind::Bits),
        ("byte/s", Kind::Bytes),
        ("bytes/s", Kind::Bytes),
        ("Bps", Kind::Bytes),
        ("B/s", Kind::Bytes),
        ("B", Kind::Bytes),
    ];
    let (prefix, kind) = SUFFIXES
        .iter()
        .find_map(|(suf, k)| unit.strip_suffix(suf).map(|p| (p, k)))
        .unwrap_or((unit, &Kind::Bits));
    let mult = match prefix {
        "" => 1.0,
        "k" | "K" => 1e3,
        "m" | "M" => 1e6,
        "g" | "G" => 1e9,
        "t" | "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(err(
                "rate",
                text,
                &format!(
                    "unknown unit '{unit}' (use bps, kbps, Mbps, Gbps for bits; B/s, MB/s, GB/s \
                     for bytes; pps, kpps, Mpps for datagrams)"
                ),
            ))
        }
    };
    let x = v * mult;
    if !x.is_finite() || x > 1e15 {
        return Err(err("rate", text, "too large"));
    }
    Ok(match kind {
        Kind::Packets => Rate::PacketsPerSec(x),
        Kind::Bits => Rate::BitsPerSec(x),
        Kind::Bytes => Rate::BitsPerSec(x * 8.0),
    })
}

/// Parses `10s`, `250ms`, `1.5s`, `2m`, `100us`; a bare number is seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (v, unit) = split_number("duration", text)?;
    let secs = match unit {
        "" | "s" | "sec" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "ns" => v / 1e9,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(err(
                "duration",
                text,
                &format!("unknown unit '{unit}' (use ns, us, ms, s, m, h)"),
            ))
        }
    };
    if secs > 1e9 {
        return Err(err("duration", text, "too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Like [`parse_duration`] but rejects zero.
pub(crate) fn parse_nonzero_duration(text: &str) -> Result<Duration, UnitError> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(err("duration", text, "must be greater than zero"));
    }
    Ok(d)
}

/// Like [`parse_size`] but rejects zero.
pub(crate) fn parse_nonzero_size(text: &str) -> Result<u64, UnitError> {
    let s = parse_size(text)?;
    if s == 0 {
        return Err(err("size", text, "must be greater than zero"));
    }
    Ok(s)
}

/// Parses a percentage: `1%`, `0.5%`, or a bare number meaning percent (`2` is 2%), as netem
/// does. Returns a fraction in `0..=1`.
pub(crate) fn parse_percent(text: &str) -> Result<f64, UnitError> {
    let t = text.trim();
    let num = t.strip_suffix('%').unwrap_or(t).trim();
    let v: f64 = num
        .parse()
        .map_err(|_| err("percentage", text, "not a number (use e.g. 1% or 0.5%)"))?;
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(err("percentage", text, "out of range: use 0%..100%"));
    }
    Ok(v / 100.0)
}

// ---- Formatting: every human-readable number netcore prints goes through these. ----
//
// Conventions: a unit is chosen by magnitude, after rounding (999.996 kbit/s is `1.00 Mbit/s`,
// never `1000.00 kbit/s`); counts have thousands separators (`14,445`); durations are `µs`,
// `ms` or `s`; a value the unit's first step does not reach has no decimals (`512 B`,
// `800 bit/s`). JSON and CSV keep raw numbers.

/// A unit ladder: names from the smallest, each `step` times the one before.
#[derive(Debug, Clone, Copy)]
pub struct Ladder {
    pub units: &'static [&'static str],
    pub step: f64,
}

/// `bit/s`, `kbit/s`, `Mbit/s`, `Gbit/s`, `Tbit/s` (decimal).
pub(crate) const BITS_PER_SEC: Ladder = Ladder {
    units: &["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"],
    step: 1000.0,
};
/// `pps`, `kpps`, `Mpps`, `Gpps` (decimal).
pub(crate) const PACKETS_PER_SEC: Ladder = Ladder {
    units: &["pps", "kpps", "Mpps", "Gpps"],
    step: 1000.0,
};
/// `B`, `KiB`, `MiB`, `GiB`, `TiB` (binary).
pub const BYTES: Ladder = Ladder {
    units: &["B", "KiB", "MiB", "GiB", "TiB"],
    step: 1024.0,
};
/// `B`, `KB`, `MB`, `GB`, `TB` (decimal).
pub(crate) const BYTES_DECIMAL: Ladder = Ladder {
    units: &["B", "KB", "MB", "GB", "TB"],
    step: 1000.0,
};

impl Ladder {
    /// The rung for `v` shown with `decimals` decimals: (index, divisor). The rung is chosen
    /// after rounding, so a value that would print as `step` moves up a rung.
    pub(crate) fn rung(&self, v: f64, decimals: usize) -> (usize, f64) {
        let mut i = 0;
        let mut div = 1.0;
        let a = v.abs();
        if !a.is_finite() {
            return (0, 1.0);
        }
        while i + 1 < self.units.len() {
            let shown = a / div;
            // Round as the formatter will: rung 0 has no decimals.
            let places = if i == 0 { 0 } else { decimals };
            let scale = 10f64.powi(places as i32);
            if (shown * scale).round() / scale < self.step {
                break;
            }
            div *= self.step;
            i += 1;
        }
        (i, div)
    }

    /// The divisor and unit name to draw values up to `max` with (a plot's axis): the rung
    /// of the largest value, so a 200 Mbit/s chart is labelled in Mbit/s.
    pub fn axis(&self, max: f64) -> (f64, &'static str) {
        let (i, div) = self.rung(max, 2);
        (div, self.units[i])
    }

    /// `v` with `decimals` decimals in the rung chosen for it (none on the first rung).
    pub(crate) fn fmt(&self, v: f64, decimals: usize) -> String {
        let (i, div) = self.rung(v, decimals);
        if i == 0 {
            format!("{:.0} {}", v, self.units[0])
        } else {
            format!("{:.*} {}", decimals, v / div, self.units[i])
        }
    }
}

/// `3.21 Gbit/s`
pub(crate) fn fmt_bits_per_sec(bps: f64) -> String {
    BITS_PER_SEC.fmt(bps, 2)
}

/// `1.23 Mpps`
pub(crate) fn fmt_pps(pps: f64) -> String {
    PACKETS_PER_SEC.fmt(pps, 2)
}

/// `200.00 MiB` (binary) for byte counts.
pub(crate) fn fmt_bytes(b: u64) -> String {
    BYTES.fmt(b as f64, 2)
}

/// `1.2 KB` (decimal, one decimal place) for small per-interval byte counts.
pub(crate) fn fmt_bytes_short(b: u64) -> String {
    BYTES_DECIMAL.fmt(b as f64, 1)
}

/// A duration in microseconds with a unit chosen for readability: `62.5 µs`, `9.66 ms`,
/// `2.004 s` (one decimal for µs, two for ms, three for seconds; chosen after rounding, so
/// 999.96 µs is `1.00 ms`).
pub(crate) fn fmt_micros(us: f64) -> String {
    if !us.is_finite() {
        return format!("{us} µs");
    }
    let a = us.abs();
    if (a * 10.0).round() / 10.0 < 1000.0 {
        format!("{us:.1} µs")
    } else if (a / 10.0).round() / 100.0 < 1000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.3} s", us / 1e6)
    }
}

/// A duration in seconds, as [`fmt_micros`] shows it: `2.004 s`, `250.00 ms`.
pub(crate) fn fmt_secs(s: f64) -> String {
    fmt_micros(s * 1e6)
}

/// A count with thousands separators: `14,445`, `1,000,000`.
pub(crate) fn fmt_count(n: u64) -> String {
    group(&n.to_string())
}

/// Puts a comma every three digits into a run of digits.
fn group(d: &str) -> String {
    let mut s = String::with_capacity(d.len() + d.len() / 3);
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(c);
    }
    s
}

/// A measured quantity that is not a count (tasks per second, a mean): thousands separators
/// and about three significant digits: `12,346`, `123`, `45.7`, `3.14`, `0.500`.
pub(crate) fn fmt_number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    let decimals = if a == 0.0 || (a * 10.0).round() >= 1000.0 {
        0
    } else if (a * 100.0).round() >= 1000.0 {
        1
    } else if (a * 1000.0).round() >= 1000.0 {
        2
    } else {
        3
    };
    let text = format!("{a:.decimals$}");
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), ""), |(i, f)| (i, f));
    let sign = if x < 0.0 && text.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{}", group(int))
    } else {
        format!("{sign}{}.{frac}", group(int))
    }
}

/// A rate of things per second: `12,346 tasks/s`, `45.7 tasks/s` ([`fmt_number`] + unit).
pub(crate) fn fmt_per_sec(x: f64, what: &str) -> String {
    format!("{} {what}/s", fmt_number(x))
}

/// A percentage with three significant digits (and at most six decimals): `45.7%`,
/// `0.500%`, `0.00120%`, `0%`.
pub(crate) fn fmt_pct(p: f64) -> String {
    if p == 0.0 || !p.is_finite() {
        return format!("{p}%");
    }
    let mag = p.abs().log10().floor() as i32;
    let decimals = (2 - mag).clamp(0, 6) as usize;
    format!("{p:.decimals$}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1472").unwrap(), 1472);
        assert_eq!(parse_size("200MB").unwrap(), 200_000_000);
        assert_eq!(parse_size("200MiB").unwrap(), 209_715_200);
        assert_eq!(parse_size("200M").unwrap(), 209_715_200);
        assert_eq!(parse_size("1.5GiB").unwrap(), 1_610_612_736);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size(" 20MB ").unwrap(), 20_000_000);
        assert!(parse_size("12XB")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(parse_size("-1")
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(parse_size("").is_err());
        assert!(parse_size("MB").is_err());
        assert!(parse_nonzero_size("0").is_err());
        assert!(parse_size("1e400").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1Gbps").unwrap(), Rate::BitsPerSec(1e9));
        assert_eq!(parse_rate("500Mbit/s").unwrap(), Rate::BitsPerSec(5e8));
        assert_eq!(parse_rate("50kpps").unwrap(), Rate::PacketsPerSec(5e4));
        assert_eq!(parse_rate("2Mpps").unwrap(), Rate::PacketsPerSec(2e6));
        assert_eq!(parse_rate("1000").unwrap(), Rate::BitsPerSec(1000.0));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("5furlongs").is_err());
        let r = parse_rate("1Gbps").unwrap();
        assert!((r.packets_per_sec(1250) - 100_000.0).abs() < 1e-6);
    }

    #[test]
    fn byte_rates_are_bytes_and_exponents_parse() {
        // Issue #16.6: `1GB/s` was taken as 1 Gbit/s, `1MB` refused, `1e9` refused.
        assert_eq!(parse_rate("1GB/s").unwrap(), Rate::BitsPerSec(8e9));
        assert_eq!(parse_rate("1GBps").unwrap(), Rate::BitsPerSec(8e9));
        assert_eq!(parse_rate("1MB").unwrap(), Rate::BitsPerSec(8e6));
        assert_eq!(parse_rate("125kB/s").unwrap(), Rate::BitsPerSec(1e6));
        assert_eq!(
            parse_rate("1MiB/s").unwrap(),
            Rate::BitsPerSec(8.0 * 1048576.0)
        );
        assert_eq!(parse_rate("100B/s").unwrap(), Rate::BitsPerSec(800.0));
        assert_eq!(parse_rate("1Gb/s").unwrap(), Rate::BitsPerSec(1e9));
        assert_eq!(parse_rate("1gbps").unwrap(), Rate::BitsPerSec(1e9));
        assert_eq!(parse_rate("1e9").unwrap(), Rate::BitsPerSec(1e9));
        assert_eq!(parse_rate("2.5e6bps").unwrap(), Rate::BitsPerSec(2.5e6));
        assert_eq!(parse_rate("1E3pps").unwrap(), Rate::PacketsPerSec(1e3));
        assert_eq!(parse_size("1e6").unwrap(), 1_000_000);
        assert!(parse_rate("1e").is_err());
        assert!(parse_rate("1e999").is_err());
        assert!(parse_rate("1XB/s").is_err());
        let e = parse_rate("1 furlong/s").unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn percentages_are_fractions() {
        assert_eq!(parse_percent("1%"), Ok(0.01));
        assert_eq!(parse_percent("0.5"), Ok(0.005));
        assert_eq!(parse_percent("100%"), Ok(1.0));
        assert_eq!(parse_percent(" 0 "), Ok(0.0));
        for bad in ["150%", "-1%", "x", "1%%", "", "nan", "inf%"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pace_of_zero_is_unpaced_and_a_rate_of_zero_is_refused() {
        for zero in ["0", "0bps", "0Mbps", "0pps", "0B/s", "0.0"] {
            assert!(parse_pace(zero).unwrap().is_zero(), "{zero}");
            assert!(parse_rate(zero).is_err(), "{zero}");
        }
        assert!(parse_pace("0xyz").is_err());
        assert_eq!(parse_pace("1Mbps"), parse_rate("1Mbps"));
        assert!(!parse_pace("1pps").unwrap().is_zero());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
        assert!(parse_nonzero_duration("0s").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_bits_per_sec(3.21e9), "3.21 Gbit/s");
        assert_eq!(fmt_pps(1_230_000.0), "1.23 Mpps");
        assert_eq!(fmt_bytes(209_715_200), "200.00 MiB");
        assert_eq!(fmt_bytes_short(1200), "1.2 KB");
        assert_eq!(fmt_micros(62.5), "62.5 µs");
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(14_445), "14,445");
        assert_eq!(fmt_count(1_000_000), "1,000,000");
    }

    #[test]
    fn units_are_chosen_after_rounding() {
        assert_eq!(fmt_bits_per_sec(999_950.0), "999.95 kbit/s");
        assert_eq!(fmt_bits_per_sec(999_995.0), "1.00 Mbit/s");
        assert_eq!(fmt_bits_per_sec(999.4), "999 bit/s");
        assert_eq!(fmt_bits_per_sec(999.6), "1.00 kbit/s");
        assert_eq!(fmt_bits_per_sec(0.0), "0 bit/s");
        assert_eq!(fmt_bits_per_sec(2e8), "200.00 Mbit/s");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(1024 * 1024 - 1), "1.00 MiB");
        assert_eq!(fmt_bytes_short(999_960), "1.0 MB");
        assert_eq!(fmt_micros(999.94), "999.9 µs");
        assert_eq!(fmt_micros(999.96), "1.00 ms");
        assert_eq!(fmt_micros(999_996.0), "1.000 s");
        assert_eq!(fmt_micros(9_660.0), "9.66 ms");
        assert_eq!(fmt_secs(2.0041), "2.004 s");
        assert_eq!(fmt_secs(0.25), "250.00 ms");
        assert_eq!(BITS_PER_SEC.axis(2e8), (1e6, "Mbit/s"));
        assert_eq!(BITS_PER_SEC.axis(3e9), (1e9, "Gbit/s"));
        assert_eq!(BITS_PER_SEC.axis(500.0), (1.0, "bit/s"));
        assert_eq!(BYTES_DECIMAL.axis(12_345.0), (1e3, "KB"));
    }

    #[test]
    fn numbers_and_percentages() {
        assert_eq!(fmt_number(12_345.6), "12,346");
        assert_eq!(fmt_number(999.96), "1,000");
        assert_eq!(fmt_number(123.4), "123");
        assert_eq!(fmt_number(45.67), "45.7");
        assert_eq!(fmt_number(2.71234), "2.71");
        assert_eq!(fmt_number(0.5), "0.500");
        assert_eq!(fmt_number(0.0), "0");
        assert_eq!(fmt_number(-1234.0), "-1,234");
        assert_eq!(fmt_number(-0.0001), "0.000");
        assert_eq!(fmt_per_sec(1234.6, "tasks"), "1,235 tasks/s");
        assert_eq!(fmt_pct(45.678), "45.7%");
        assert_eq!(fmt_pct(0.5), "0.500%");
        assert_eq!(fmt_pct(0.0012), "0.00120%");
        assert_eq!(fmt_pct(0.0), "0%");
        assert_eq!(fmt_pct(100.0), "100%");
        assert_eq!(fmt_pct(1e-9), "0.000000%");
    }

    /// The value a formatted rate/size stands for, read back with its unit.
    fn read_back(text: &str, l: &Ladder) -> f64 {
        let (num, unit) = text.split_once(' ').unwrap();
        let i = l.units.iter().position(|u| *u == unit).unwrap();
        num.parse::<f64>().unwrap() * l.step.powi(i as i32)
    }

    proptest::proptest! {
        /// Every ladder: the figure shown is below one step of its unit (or the top unit), at
        /// least 1 above the first unit, reads back within half its last digit, and a larger
        /// value never shows smaller.
        #[test]
        fn ladders_round_trip_and_are_monotonic(
            a in 0f64..1e15, b in 0f64..1e15,
            l in proptest::sample::select(vec![BITS_PER_SEC, PACKETS_PER_SEC, BYTES, BYTES_DECIMAL]),
            decimals in 1usize..4,
        ) {
            for v in [a, b] {
                let text = l.fmt(v, decimals);
                let (num, unit) = text.split_once(' ').unwrap();
                let num: f64 = num.parse().unwrap();
                let i = l.units.iter().position(|u| *u == unit).unwrap();
                proptest::prop_assert!(num < l.step || i + 1 == l.units.len(), "{text}");
                // (0.9995 may show as 0.999 with three decimals: within the last digit.)
                proptest::prop_assert!(i == 0 || num >= 1.0 - 10f64.powi(-(decimals as i32)), "{text}");
                let half = if i == 0 { 0.5 } else { 0.5 * 10f64.powi(-(decimals as i32)) };
                let err = (read_back(&text, &l) - v).abs();
                proptest::prop_assert!(err <= half * l.step.powi(i as i32) * (1.0 + 1e-9), "{v} -> {text}");
            }
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            proptest::prop_assert!(read_back(&l.fmt(lo, decimals), &l) <= read_back(&l.fmt(hi, decimals), &l));
        }

        /// Durations: the unit matches the rounded magnitude and reads back within its digit;
        /// monotonic.
        #[test]
        fn durations_round_trip_and_are_monotonic(a in 0f64..1e10, b in 0f64..1e10) {
            let back = |t: &str| -> f64 {
                let (n, u) = t.split_once(' ').unwrap();
                let n: f64 = n.parse().unwrap();
                match u { "µs" => n, "ms" => n * 1e3, "s" => n * 1e6, _ => f64::NAN }
            };
            for v in [a, b] {
                let t = fmt_micros(v);
                let (n, u) = t.split_once(' ').unwrap();
                let n: f64 = n.parse().unwrap();
                let half = match u { "µs" => 0.05, "ms" => 5.0, _ => 500.0 };
                proptest::prop_assert!(u == "s" || n < 1000.0, "{t}");
                proptest::prop_assert!((back(&t) - v).abs() <= half * (1.0 + 1e-9), "{v} -> {t}");
            }
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            proptest::prop_assert!(back(&fmt_micros(lo)) <= back(&fmt_micros(hi)));
        }

        /// Counts and numbers: removing the separators gives the digits back.
        #[test]
        fn separators_round_trip(n in proptest::num::u64::ANY, x in 0f64..1e12) {
            proptest::prop_assert_eq!(fmt_count(n).replace(',', "").parse::<u64>().unwrap(), n);
            let shown: f64 = fmt_number(x).replace(',', "").parse().unwrap();
            proptest::prop_assert!((shown - x).abs() <= 0.5 * (1.0 + 1e-9) || (shown - x).abs() / x <= 0.005);
        }

        #[test]
        fn percentages_read_back(v in 0f64..=100.0) {
            let f = parse_percent(&format!("{v}%")).unwrap();
            proptest::prop_assert!((f * 100.0 - v).abs() <= 1e-9 * v.max(1.0));
            proptest::prop_assert_eq!(parse_percent(&v.to_string()).unwrap(), f);
        }

        #[test]
        fn size_roundtrip(n in 0u64..1_000_000_000_000) {
            proptest::prop_assert_eq!(parse_size(&n.to_string()).unwrap(), n);
        }

        /// Bytes per second are always eight times the same figure in bits per second.
        #[test]
        fn bytes_are_eight_bits(v in 1u32..1_000_000, p in proptest::sample::select(vec!["", "k", "M", "G"])) {
            let bits = parse_rate(&format!("{v}{p}bps")).unwrap();
            for suffix in ["B/s", "Bps", "B"] {
                let bytes = parse_rate(&format!("{v}{p}{suffix}")).unwrap();
                match (bits, bytes) {
                    (Rate::BitsPerSec(a), Rate::BitsPerSec(b)) => proptest::prop_assert_eq!(a * 8.0, b),
                    other => proptest::prop_assert!(false, "{:?}", other),
                }
            }
        }

        /// Any number written with an exponent parses to the same value as without.
        #[test]
        fn exponent_matches_plain(m in 1u32..1000, e in 0i32..9) {
            let plain = parse_rate(&format!("{}", m as f64 * 10f64.powi(e))).unwrap();
            proptest::prop_assert_eq!(parse_rate(&format!("{m}e{e}")).unwrap(), plain);
        }

        #[test]
        fn never_panics(s in ".{0,16}") {
            let _ = parse_size(&s);
            let _ = parse_rate(&s);
            let _ = parse_duration(&s);
        }
    }
}
