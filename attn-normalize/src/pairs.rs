//! The query-key pairs that statistics are computed on.

use attn_types::{AttendedKeys, TokenTable};

/// Query-key pairs grouped by query: query `groups[g].0` is paired with keys
/// `keys[groups[g].1 .. groups[g].2]`. Every group has at least two keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct PairSet {
    pub groups: Vec<(u32, u32, u32)>,
    pub keys: Vec<u32>,
}

impl PairSet {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// SplitMix64 finalizer: a cheap, well-mixed hash, so pair selection depends only on
/// `(seed, query)` and never on iteration order or thread count.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The pairs of one head: within each sequence, every query with every key it may attend to
/// ([`AttendedKeys::range`]: causal mask, sliding window), dropping queries that see fewer than two
/// keys.
/// When there are more than `max_pairs`, *queries* are subsampled: each query is kept (with all its
/// keys) iff a seeded hash of its index is below `max_pairs / total`, so about `max_pairs` pairs
/// remain, per-query statistics stay exact for the kept queries, and the choice depends only on
/// `(seed, query)`, never on iteration order or thread count.
pub(crate) fn build_pairs(
    tokens: &TokenTable,
    keys: AttendedKeys,
    max_pairs: usize,
    seed: u64,
) -> PairSet {
    let spans = tokens.sequences();
    let visible = |pos: usize, len: usize| keys.range(pos, len);
    let total: u128 = spans
        .iter()
        .flat_map(|s| (0..s.len).map(move |p| visible(p, s.len).len()))
        .filter(|&n| n >= 2)
        .map(|n| n as u128)
        .sum();
    // Threshold on a 64-bit hash; `None` keeps everything.
    let threshold = (total > max_pairs as u128)
        .then(|| ((max_pairs as f64 / total as f64) * u64::MAX as f64) as u64);
    let seed_hash = mix(seed);
    let mut out = PairSet::default();
    for span in &spans {
        for p in 0..span.len {
            let keys = visible(p, span.len);
            let q = span.start + p;
            if keys.len() < 2 || threshold.is_some_and(|t| mix(seed_hash ^ q as u64) >= t) {
                continue;
            }
            let start = out.keys.len();
            out.keys.extend(keys.map(|k| (span.start + k) as u32));
            out.groups
                .push((q as u32, start as u32, out.keys.len() as u32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(pairs: &PairSet) -> Vec<(u32, Vec<u32>)> {
        pairs
            .groups
            .iter()
            .map(|&(q, a, b)| (q, pairs.keys[a as usize..b as usize].to_vec()))
            .collect()
    }

    /// A window keeps the keys less than `window` positions back, as transformers' mask; a query
    /// left with one key drops out.
    #[test]
    fn a_window_keeps_only_the_keys_the_model_lets_attend() {
        let t = TokenTable::placeholder(&[2, 4]);
        let windowed = build_pairs(
            &t,
            AttendedKeys {
                causal: true,
                window: Some(2),
            },
            1000,
            0,
        );
        assert_eq!(
            groups(&windowed),
            vec![
                (1, vec![0, 1]),
                (3, vec![2, 3]),
                (4, vec![3, 4]),
                (5, vec![4, 5])
            ]
        );
        let causal = build_pairs(&t, true.into(), 1000, 0);
        assert_eq!(causal.len(), 2 + (2 + 3 + 4));
        assert_eq!(groups(&causal)[3], (5, vec![2, 3, 4, 5]));
    }
}
