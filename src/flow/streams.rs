//! What every protocol's parallel streams share (pure): which way the test and each stream
//! carry data, how a count and a rate are split over N streams, which CPU each stream's thread
//! is pinned to, and the label of the SUM rows. TCP (`flow::tcp`) and UDP (`flow::udp`) both
//! take these from here; nothing here imports a protocol folder.

use serde::{Deserialize, Serialize};

/// The most data streams of one test (per direction).
pub const MAX_STREAMS: u16 = 128;
/// The label of a report's row that adds up the streams of one direction.
pub const SUM: &str = "SUM";

/// Which way the data goes, seen from the side that started the test (the client).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The client sends.
    #[default]
    Forward,
    /// The server sends, the client receives (`-R`).
    Reverse,
    /// Both at once (`--bidir`): N streams each way.
    Bidir,
}

impl Mode {
    /// The mode of `-R` / `--bidir` flags (`--bidir` wins).
    pub fn of(reverse: bool, bidir: bool) -> Mode {
        if bidir {
            Mode::Bidir
        } else if reverse {
            Mode::Reverse
        } else {
            Mode::Forward
        }
    }

    /// Which way each of a test's `n`-per-direction streams carries data, in stream order:
    /// with `--bidir` the client's sending streams come first.
    pub fn directions(self, n: usize) -> Vec<Dir> {
        match self {
            Mode::Forward => vec![Dir::Up; n],
            Mode::Reverse => vec![Dir::Down; n],
            Mode::Bidir => [vec![Dir::Up; n], vec![Dir::Down; n]].concat(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
            Mode::Reverse => "reverse",
            Mode::Bidir => "bidir",
        }
    }
}

/// Which way one data stream carries data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Up => "up",
            Dir::Down => "down",
        }
    }
}

/// Stream `index`'s share of `total` among `n` streams: split as evenly as it goes (the first
/// `total % n` get one more), so the shares add up to `total` exactly.
pub fn split_count(total: u64, index: usize, n: usize) -> u64 {
    let n = n.max(1) as u64;
    let i = index as u64 % n;
    total / n + u64::from(i < total % n)
}

/// The CPU of stream `i` among `cpus` (round robin), if pinning.
pub fn cpu_for(cpus: &[usize], i: usize) -> Option<usize> {
    (!cpus.is_empty()).then(|| cpus[i % cpus.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn modes_and_their_directions() {
        assert_eq!(Mode::of(true, false), Mode::Reverse);
        assert_eq!(Mode::of(true, true), Mode::Bidir);
        assert_eq!(Mode::of(false, false), Mode::Forward);
        assert_eq!(Mode::Reverse.directions(1), vec![Dir::Down]);
        assert_eq!(
            Mode::Bidir.directions(2),
            vec![Dir::Up, Dir::Up, Dir::Down, Dir::Down]
        );
    }

    #[test]
    fn cpus_round_robin() {
        assert_eq!(cpu_for(&[], 3), None);
        assert_eq!(cpu_for(&[2, 5], 0), Some(2));
        assert_eq!(cpu_for(&[2, 5], 3), Some(5));
    }

    proptest! {
        #[test]
        fn split_count_adds_up(c in 0u64..1_000_000, n in 1usize..200) {
            let shares: Vec<u64> = (0..n).map(|i| split_count(c, i, n)).collect();
            prop_assert_eq!(shares.iter().sum::<u64>(), c);
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            prop_assert!(hi - lo <= 1);
        }
    }
}
