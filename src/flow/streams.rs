//! What every protocol's parallel streams share (pure): which way the test and each stream
//! carry data, how a count and a rate are split over N streams, which CPU each stream's thread
//! is pinned to, which streams share a thread, and the label of the SUM rows. TCP (`flow::tcp`) and UDP (`flow::udp`) both
//! take these from here; nothing here imports a protocol folder.

use serde::{Deserialize, Serialize};

use crate::units::Rate;

/// The most data streams of one test (per direction).
pub(crate) const MAX_STREAMS: u16 = 128;
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
pub(crate) fn split_count(total: u64, index: usize, n: usize) -> u64 {
    let n = n.max(1) as u64;
    let i = index as u64 % n;
    total / n + u64::from(i < total % n)
}

/// Each of `n` streams' share of a pace over all of them (`--rate` is the total): an equal
/// share, in the rate's own unit, so the shares add up to `total`.
pub(crate) fn split_rate(total: Rate, n: usize) -> Rate {
    let n = n.max(1) as f64;
    match total {
        Rate::BitsPerSec(b) => Rate::BitsPerSec(b / n),
        Rate::PacketsPerSec(p) => Rate::PacketsPerSec(p / n),
    }
}

/// [`split_rate`] of a bit rate given as whole bits per second (TCP's `rate_bps`, iperf3's
/// per-stream `bandwidth`): at least 1, so a share is never read as "unpaced".
pub(crate) fn split_bps(total_bps: u64, n: usize) -> u64 {
    (split_rate(Rate::BitsPerSec(total_bps as f64), n).bits_per_sec(0) as u64).max(1)
}

/// The CPU of stream `i` among `cpus` (round robin), if pinning.
pub fn cpu_for(cpus: &[usize], i: usize) -> Option<usize> {
    (!cpus.is_empty()).then(|| cpus[i % cpus.len()])
}

/// Which streams share a thread, as groups of stream indices (in order of their first
/// stream). `kinds[i]` is stream `i`'s kind (true: it writes) and CPU (if pinned). Streams of
/// one kind pinned to the same CPU share a thread; unpinned streams of one kind are dealt
/// round-robin over min(streams, `cpus`) threads, `cpus` being how many CPUs the process may
/// run on. Writers and readers never share. With `per_stream`, every stream has its own.
pub(crate) fn thread_groups(
    kinds: &[(bool, Option<usize>)],
    cpus: usize,
    per_stream: bool,
) -> Vec<Vec<usize>> {
    if per_stream {
        return (0..kinds.len()).map(|i| vec![i]).collect();
    }
    let unpinned = |w: bool| kinds.iter().filter(|k| k.0 == w && k.1.is_none()).count();
    let threads = |w: bool| unpinned(w).min(cpus.max(1)).max(1);
    // A group's key: its kind, and its CPU (pinned) or its slot among the unpinned threads.
    let mut groups: Vec<((bool, bool, usize), Vec<usize>)> = Vec::new();
    let mut dealt = [0usize; 2];
    for (i, &(w, cpu)) in kinds.iter().enumerate() {
        let key = match cpu {
            Some(c) => (w, true, c),
            None => {
                let j = &mut dealt[usize::from(w)];
                *j += 1;
                (w, false, (*j - 1) % threads(w))
            }
        };
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.1.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups.into_iter().map(|g| g.1).collect()
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

    #[test]
    fn streams_sharing_a_cpu_share_a_thread() {
        let w = |c| (true, c);
        let r = |c| (false, c);
        // Unpinned, two CPUs: -P 2 keeps two threads, -P 4 deals four streams over two.
        assert_eq!(
            thread_groups(&[w(None); 2], 2, false),
            vec![vec![0], vec![1]]
        );
        assert_eq!(
            thread_groups(&[w(None); 4], 2, false),
            vec![vec![0, 2], vec![1, 3]]
        );
        // One CPU allowed (taskset -c 0): one thread per kind; bidir keeps writers apart.
        assert_eq!(
            thread_groups(&[w(None), w(None), r(None), r(None)], 1, false),
            vec![vec![0, 1], vec![2, 3]]
        );
        // Pinned: the same CPU, the same thread.
        assert_eq!(
            thread_groups(&[w(Some(0)), w(Some(1)), w(Some(0))], 8, false),
            vec![vec![0, 2], vec![1]]
        );
        assert_eq!(
            thread_groups(&[w(Some(0)), r(Some(0))], 8, false),
            vec![vec![0], vec![1]]
        );
        // The old way on request.
        assert_eq!(
            thread_groups(&[w(Some(0)); 3], 1, true),
            vec![vec![0], vec![1], vec![2]]
        );
        assert!(thread_groups(&[], 4, false).is_empty());
    }

    proptest! {
        #[test]
        fn every_stream_in_exactly_one_group(kinds in proptest::collection::vec((any::<bool>(), proptest::option::of(0usize..4)), 0..40), cpus in 0usize..6, per in any::<bool>()) {
            let g = thread_groups(&kinds, cpus, per);
            let mut all: Vec<usize> = g.iter().flatten().copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..kinds.len()).collect::<Vec<_>>());
            for grp in &g {
                prop_assert!(!grp.is_empty());
                prop_assert!(grp.iter().all(|&i| kinds[i].0 == kinds[grp[0]].0));
                prop_assert!(grp.iter().all(|&i| kinds[i].1 == kinds[grp[0]].1 || kinds[i].1.is_none()));
            }
        }

        #[test]
        fn split_rate_adds_up(bps in 1.0f64..1e13, pps in 1.0f64..1e8, n in 1usize..200) {
            for total in [Rate::BitsPerSec(bps), Rate::PacketsPerSec(pps)] {
                let share = split_rate(total, n);
                let sum = (0..n).fold(0.0, |a, _| a + share.packets_per_sec(100));
                let want = total.packets_per_sec(100);
                prop_assert!((sum - want).abs() <= want * 1e-9, "{total:?} over {n}: {share:?}");
                prop_assert_eq!(std::mem::discriminant(&share), std::mem::discriminant(&total));
            }
            prop_assert_eq!(split_rate(Rate::BitsPerSec(bps), 1), Rate::BitsPerSec(bps));
            let whole = bps as u64;
            prop_assert_eq!(split_bps(whole, n), (whole / n as u64).max(1));
        }

        #[test]
        fn split_count_adds_up(c in 0u64..1_000_000, n in 1usize..200) {
            let shares: Vec<u64> = (0..n).map(|i| split_count(c, i, n)).collect();
            prop_assert_eq!(shares.iter().sum::<u64>(), c);
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            prop_assert!(hi - lo <= 1);
        }
    }
}
