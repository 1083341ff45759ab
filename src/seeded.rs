//! The one seeded generator of every seeded run (relay impairments, traffic's message sizes,
//! load's request mixes): a named algorithm, PCG-64 (MCG variant, from `rand_pcg`), so "the same
//! seed gives the same run" holds across versions of `rand` (whose `SmallRng` may change).

use rand::SeedableRng;

/// The generator: PCG-64 MCG (128-bit state, 64-bit output).
pub(crate) type SeededRng = rand_pcg::Pcg64Mcg;

/// The generator for `seed`.
pub fn rng(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    /// The first draws of seed 1 are fixed: a change of algorithm (or of its seeding) would
    /// change every seeded run, and must be a deliberate, announced change.
    #[test]
    fn seed_one_is_stable() {
        let mut r = super::rng(1);
        let first: Vec<u32> = (0..4).map(|_| r.random_range(0..1000)).collect();
        let mut again = super::rng(1);
        let second: Vec<u32> = (0..4).map(|_| again.random_range(0..1000)).collect();
        assert_eq!(first, second);
        assert_eq!(first, PINNED);
    }

    const PINNED: [u32; 4] = [870, 199, 690, 260];
}
