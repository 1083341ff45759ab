//! Sweep specifications: the list of client counts a `load` or `compare` run steps through.
//!
//! Accepted forms (whitespace ignored):
//! * a list: `1,10,100,1000`
//! * a list with an ellipsis that continues the step of the two numbers before it:
//!   `10,20,..,100` (also `...`) = 10, 20, 30, ..., 100
//! * a range with an optional step: `10..=100:10` (inclusive), `10..100:10` (exclusive end),
//!   `1..=4` (step 1)
//!
//! Every count must be at least 1 and at most [`MAX_CLIENTS`]; the sweep must be strictly
//! increasing and have at most [`MAX_POINTS`] points.

use anyhow::{bail, Context, Result};

/// Largest client count of one sweep point.
pub(crate) const MAX_CLIENTS: u32 = 100_000;
/// Largest number of points in a sweep.
pub(crate) const MAX_POINTS: usize = 1000;

/// Parses a sweep (see the module docs).
pub(crate) fn parse_clients(text: &str) -> Result<Vec<u32>> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if t.is_empty() {
        bail!("empty client list");
    }
    let v = if let Some((a, rest)) = t.split_once("..=") {
        range(&t, a, rest, true)?
    } else if let Some((a, rest)) = t.split_once("..").filter(|(a, _)| !a.contains(',')) {
        range(&t, a, rest, false)?
    } else {
        list(&t)?
    };
    for w in v.windows(2) {
        if w[1] <= w[0] {
            bail!(
                "client list '{text}' must be strictly increasing ({} then {})",
                w[0],
                w[1]
            );
        }
    }
    if v.len() > MAX_POINTS {
        bail!(
            "client list '{text}' has {} points (at most {MAX_POINTS})",
            v.len()
        );
    }
    Ok(v)
}

fn count(whole: &str, s: &str) -> Result<u32> {
    let n: u64 = s
        .parse()
        .with_context(|| format!("invalid client list '{whole}': '{s}' is not a number"))?;
    if n == 0 {
        bail!("invalid client list '{whole}': client counts must be at least 1");
    }
    if n > MAX_CLIENTS as u64 {
        bail!("invalid client list '{whole}': {n} clients is more than {MAX_CLIENTS}");
    }
    Ok(n as u32)
}

fn range(whole: &str, a: &str, rest: &str, inclusive: bool) -> Result<Vec<u32>> {
    let (b, step) = match rest.split_once(':') {
        Some((b, s)) => (b, Some(s)),
        None => (rest, None),
    };
    let a = count(whole, a)?;
    let b: u64 = b
        .parse()
        .with_context(|| format!("invalid client list '{whole}': '{b}' is not a number"))?;
    let step: u64 = match step {
        Some(s) => s.parse().ok().filter(|&s| s > 0).with_context(|| {
            format!("invalid client list '{whole}': step '{s}' must be a positive number")
        })?,
        None => 1,
    };
    let end = if inclusive { b } else { b.saturating_sub(1) };
    if b < a as u64 || (!inclusive && b == a as u64) {
        bail!("invalid client list '{whole}': the range goes backwards or is empty");
    }
    if end > MAX_CLIENTS as u64 {
        bail!("invalid client list '{whole}': {end} clients is more than {MAX_CLIENTS}");
    }
    let n = (end - a as u64) / step + 1;
    if n as usize > MAX_POINTS {
        bail!("invalid client list '{whole}': {n} points (at most {MAX_POINTS})");
    }
    Ok((0..n).map(|i| (a as u64 + i * step) as u32).collect())
}

fn list(whole: &str) -> Result<Vec<u32>> {
    let parts: Vec<&str> = whole.split(',').collect();
    let mut out: Vec<u32> = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let p = parts[i];
        if p == ".." || p == "..." {
            if out.len() < 2 {
                bail!("invalid client list '{whole}': '{p}' needs two numbers before it to set the step");
            }
            let Some(last) = parts.get(i + 1) else {
                bail!("invalid client list '{whole}': '{p}' needs a number after it");
            };
            let end = count(whole, last)?;
            let (x, y) = (out[out.len() - 2], out[out.len() - 1]);
            if y <= x {
                bail!("invalid client list '{whole}': must be strictly increasing ({x} then {y})");
            }
            let step = y - x;
            if end <= y || (end - y) % step != 0 {
                bail!("invalid client list '{whole}': {end} is not reached from {y} in steps of {step}");
            }
            let mut v = y + step;
            while v <= end {
                out.push(v);
                if out.len() > MAX_POINTS {
                    bail!("invalid client list '{whole}': more than {MAX_POINTS} points");
                }
                v += step;
            }
            i += 2;
            continue;
        }
        if p.is_empty() {
            bail!("invalid client list '{whole}': empty item");
        }
        out.push(count(whole, p)?);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_clients("5").unwrap(), vec![5]);
        assert_eq!(
            parse_clients("1,10,100,1000").unwrap(),
            vec![1, 10, 100, 1000]
        );
        assert_eq!(
            parse_clients("10,20,..,100").unwrap(),
            (1..=10).map(|i| i * 10).collect::<Vec<_>>()
        );
        assert_eq!(parse_clients("1, 2, ..., 4").unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(
            parse_clients("10..=100:10").unwrap(),
            parse_clients("10,20,..,100").unwrap()
        );
        assert_eq!(parse_clients("10..100:30").unwrap(), vec![10, 40, 70]);
        assert_eq!(parse_clients("1..=3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_clients("1,2,..,4,10").unwrap(), vec![1, 2, 3, 4, 10]);
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "0",
            "10..5",
            "10..=5",
            "5..5",
            "1,0",
            "a",
            "1,,2",
            "3,2",
            "2,2",
            "..,5",
            "1,2,..",
            "1,3,..,6",
            "1..=10:0",
            "1..=10:x",
            "200000",
            "1..=100000000",
        ] {
            assert!(parse_clients(bad).is_err(), "{bad:?} accepted");
        }
        let e = parse_clients("10..5").unwrap_err().to_string();
        assert!(e.contains("backwards"), "{e}");
        let e = parse_clients("0").unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
    }
}
