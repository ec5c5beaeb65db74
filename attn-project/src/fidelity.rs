//! Attention fidelity of a space: does nearness between a query and a key mean attention?
//!
//! Definitions, for one head with `n` tokens. A query `i` whose attention row has a positive weight
//! and at least [`FIDELITY_MIN_KEYS`] keys it may attend to (the keys of its own sequence; for causal
//! models only those at or before its own position, and in a sliding-window layer only the last
//! `window` of those: [`AttendedKeys`]) counts. Over those keys `j`, with `d_ij` the
//! distance between query `i` and key `j` in the [`FidelitySpace`] and `a_ij` the attention weight:
//! `rho_i` is the Spearman correlation of `-d_i.` with `a_i.` (average ranks for ties; undefined, and
//! left out of the fidelity mean, when either side is constant); `hit3_i` is 1 when the key with the
//! largest `a_ij` (the lowest position on ties) is among the 3 keys with the smallest `d_ij` (ties
//! broken by lower position); `chance_i = 3 / keys`. The head's fidelity, hit@3 and chance@3 are the
//! means of `rho_i`, `hit3_i` and `chance_i`. Global fidelity samples (seeded, without replacement)
//! `min(200, n)` queries and `min(200, n)` keys of the whole head, across sequences, and averages per
//! sampled query the Spearman correlation of `-d` with the raw logits `q_i . k_j`.
//!
//! Everything is computed in a fixed order, so results are bit-identical at any rayon thread count.

use std::borrow::Cow;

use attn_types::{AttendedKeys, Matrix, Metric, SequenceAttention, SequenceSpan, TokenTable};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::ProjectError;
use crate::metrics::spearman;
use crate::util::{dot, metric_dist, prepare_rows, sq_dist};

/// A query needs at least this many keys it may attend to in order to count.
pub const FIDELITY_MIN_KEYS: usize = 4;
/// Global fidelity samples at most this many queries and this many keys.
pub const FIDELITY_GLOBAL_SAMPLE: usize = 200;

/// The space in which query-key distances are measured.
#[derive(Debug, Clone, Copy)]
pub enum FidelitySpace<'a> {
    /// A `2n x dims` layout (rows `0..n` the queries, `n..2n` the keys, see
    /// [`attn_types::JointIndex`]) with Euclidean distance (ranked through its square, which orders
    /// the same way).
    Layout(&'a Matrix),
    /// Query and key vectors, `n x d` each, with cosine distance `1 - cos` (a zero vector is at
    /// distance 1 from everything).
    Cosine {
        /// `n x d` query vectors.
        queries: &'a Matrix,
        /// `n x d` key vectors.
        keys: &'a Matrix,
    },
}

pub use attn_types::Fidelity;

/// Query and key rows of a space, prepared for distance computation.
struct Prepared<'a> {
    queries: Cow<'a, [f32]>,
    keys: Cow<'a, [f32]>,
    dim: usize,
    cosine: bool,
}

impl Prepared<'_> {
    /// Distance between query `i` and key `j` (squared Euclidean for a layout, `1 - cos` else).
    #[inline]
    fn dist(&self, i: usize, j: usize) -> f32 {
        let d = self.dim;
        let (q, k) = (
            &self.queries[i * d..(i + 1) * d],
            &self.keys[j * d..(j + 1) * d],
        );
        if self.cosine {
            metric_dist(q, k, Metric::Cosine)
        } else {
            sq_dist(q, k)
        }
    }
}

fn mismatch(what: &str, expected: usize, found: usize) -> ProjectError {
    ProjectError::InvalidInput(format!("{what}: expected {expected}, found {found}"))
}

fn prepare(space: FidelitySpace<'_>, n: usize) -> Result<Prepared<'_>, ProjectError> {
    match space {
        FidelitySpace::Layout(coords) => {
            if coords.rows() != 2 * n {
                return Err(mismatch("layout rows (2 x tokens)", 2 * n, coords.rows()));
            }
            let (queries, keys) = coords.as_slice().split_at(n * coords.cols());
            Ok(Prepared {
                queries: Cow::Borrowed(queries),
                keys: Cow::Borrowed(keys),
                dim: coords.cols(),
                cosine: false,
            })
        }
        FidelitySpace::Cosine { queries, keys } => {
            check_pair("space", queries, keys, n)?;
            Ok(Prepared {
                queries: Cow::Owned(prepare_rows(queries, Metric::Cosine)),
                keys: Cow::Owned(prepare_rows(keys, Metric::Cosine)),
                dim: queries.cols(),
                cosine: true,
            })
        }
    }
}

fn check_pair(what: &str, queries: &Matrix, keys: &Matrix, n: usize) -> Result<(), ProjectError> {
    if queries.rows() != n {
        return Err(mismatch(
            &format!("{what} query rows (tokens)"),
            n,
            queries.rows(),
        ));
    }
    if keys.rows() != n {
        return Err(mismatch(
            &format!("{what} key rows (tokens)"),
            n,
            keys.rows(),
        ));
    }
    if keys.cols() != queries.cols() {
        return Err(mismatch(
            &format!("{what} key dim vs query dim"),
            queries.cols(),
            keys.cols(),
        ));
    }
    Ok(())
}

/// Per-sequence sums, added up in sequence order.
#[derive(Default)]
struct Sums {
    rho: f64,
    rho_n: u32,
    hits: u32,
    chance: f64,
    n: u32,
}

fn sequence_sums(
    space: &Prepared<'_>,
    span: &SequenceSpan,
    att: &Matrix,
    keys: AttendedKeys,
) -> Sums {
    let mut s = Sums::default();
    let mut neg_d = Vec::with_capacity(span.len);
    for p in 0..span.len {
        let range = keys.range(p, span.len);
        let m = range.len();
        let a = &att.row(p)[range.clone()];
        if m < FIDELITY_MIN_KEYS || !a.iter().any(|&w| w > 0.0) {
            continue;
        }
        let i = span.start + p;
        neg_d.clear();
        neg_d.extend(range.map(|j| -space.dist(i, span.start + j)));
        if let Some(r) = spearman(&neg_d, a) {
            s.rho += r;
            s.rho_n += 1;
        }
        let mut best = 0;
        for j in 1..m {
            if a[j] > a[best] {
                best = j;
            }
        }
        // Keys nearer than the most-attended one: closer, or as close at a lower position.
        let nearer = (0..m)
            .filter(|&j| neg_d[j] > neg_d[best] || (neg_d[j] == neg_d[best] && j < best))
            .count();
        s.hits += u32::from(nearer < 3);
        s.chance += 3.0 / m as f64;
        s.n += 1;
    }
    s
}

fn global(
    space: &Prepared<'_>,
    raw_queries: &Matrix,
    raw_keys: &Matrix,
    n: usize,
    seed: u64,
) -> Option<f32> {
    if n < 2 {
        return None;
    }
    let m = FIDELITY_GLOBAL_SAMPLE.min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut qs = sample(&mut rng, n, m).into_vec();
    let mut ks = sample(&mut rng, n, m).into_vec();
    qs.sort_unstable();
    ks.sort_unstable();
    let rhos: Vec<Option<f64>> = qs
        .par_iter()
        .map(|&i| {
            let neg_d: Vec<f32> = ks.iter().map(|&j| -space.dist(i, j)).collect();
            let logits: Vec<f32> = ks
                .iter()
                .map(|&j| dot(raw_queries.row(i), raw_keys.row(j)))
                .collect();
            spearman(&neg_d, &logits)
        })
        .collect();
    let (sum, count) = rhos
        .iter()
        .flatten()
        .fold((0f64, 0usize), |(s, c), r| (s + r, c + 1));
    (count > 0).then(|| (sum / count as f64) as f32)
}

/// Attention fidelity of one head in `space` (see the [module docs](self) for the definitions).
///
/// `raw_queries` and `raw_keys` (`n x d` each, unnormalized) give the logits of global fidelity;
/// `attention` holds one `len x len` matrix per sequence of `tokens`, in the table's sequence order,
/// or nothing at all (then `fidelity`, `hit_at_3` and `chance_at_3` are `None`). `keys` says which
/// keys a query may attend to ([`AttendedKeys`]; a `bool` means causal or not, without a window):
/// the masked keys, whose weight is zero by construction, are not ranked. `seed` fixes the global sample. A query whose
/// attention row has no positive weight over its keys is not counted. Fails only on inconsistent
/// shapes: a layout without `2n` rows, vectors without `n` rows or with different widths, or
/// attention matrices that do not match the token table's sequences.
///
/// ```
/// use attn_project::{FidelitySpace, fidelity};
/// use attn_types::{Matrix, SequenceAttention, TokenMeta, TokenTable};
///
/// // One sequence of 4 tokens; every query attends 0.4, 0.3, 0.2, 0.1 to keys 0..4.
/// let tokens = TokenTable {
///     tokens: (0..4)
///         .map(|p| TokenMeta {
///             seq_id: 0, position: p, seq_len: 4, text: format!("t{p}"),
///             is_special: false, patch: None, is_cls: false, offsets: None,
///         })
///         .collect(),
/// };
/// let row = [0.4, 0.3, 0.2, 0.1];
/// let weights = Matrix::from_rows(&[row; 4]).unwrap();
/// let attention = [SequenceAttention { seq_id: 0, weights }];
/// // 1-D layout: queries at 0, keys at 1, 2, 3, 4 (the most attended key is the nearest).
/// let layout = Matrix::from_vec(8, 1, vec![0., 0., 0., 0., 1., 2., 3., 4.]).unwrap();
/// // Raw vectors whose logits 4, 3, 2, 1 fall as the distance grows.
/// let q = Matrix::from_vec(4, 1, vec![1.0; 4]).unwrap();
/// let k = Matrix::from_vec(4, 1, vec![4., 3., 2., 1.]).unwrap();
/// let f = fidelity(FidelitySpace::Layout(&layout), &q, &k, &tokens, &attention, false, 7).unwrap();
/// assert_eq!(f.queries, 4);
/// assert!((f.fidelity.unwrap() - 1.0).abs() < 1e-6);
/// assert_eq!(f.hit_at_3, Some(1.0));
/// assert_eq!(f.chance_at_3, Some(0.75));
/// assert!((f.global_fidelity.unwrap() - 1.0).abs() < 1e-6);
/// ```
pub fn fidelity(
    space: FidelitySpace<'_>,
    raw_queries: &Matrix,
    raw_keys: &Matrix,
    tokens: &TokenTable,
    attention: &[SequenceAttention],
    keys: impl Into<AttendedKeys>,
    seed: u64,
) -> Result<Fidelity, ProjectError> {
    let keys = keys.into();
    let n = tokens.len();
    let space = prepare(space, n)?;
    check_pair("raw", raw_queries, raw_keys, n)?;
    let spans = tokens.sequences();
    if !attention.is_empty() {
        if attention.len() != spans.len() {
            return Err(mismatch(
                "attention matrices (sequences)",
                spans.len(),
                attention.len(),
            ));
        }
        for (span, att) in spans.iter().zip(attention) {
            if att.seq_id != span.seq_id {
                return Err(mismatch(
                    "attention sequence id",
                    span.seq_id as usize,
                    att.seq_id as usize,
                ));
            }
            if att.weights.shape() != (span.len, span.len) {
                return Err(ProjectError::InvalidInput(format!(
                    "attention of sequence {}: expected {len} x {len}, found {} x {}",
                    span.seq_id,
                    att.weights.rows(),
                    att.weights.cols(),
                    len = span.len,
                )));
            }
        }
    }
    let parts: Vec<Sums> = spans
        .par_iter()
        .zip(attention)
        .map(|(span, att)| sequence_sums(&space, span, &att.weights, keys))
        .collect();
    let mut s = Sums::default();
    for p in parts {
        s.rho += p.rho;
        s.rho_n += p.rho_n;
        s.hits += p.hits;
        s.chance += p.chance;
        s.n += p.n;
    }
    let mean = |sum: f64, count: u32| (count > 0).then(|| (sum / f64::from(count)) as f32);
    Ok(Fidelity {
        fidelity: mean(s.rho, s.rho_n),
        hit_at_3: mean(f64::from(s.hits), s.n),
        chance_at_3: mean(s.chance, s.n),
        global_fidelity: global(&space, raw_queries, raw_keys, n, seed),
        queries: s.n,
        rho_queries: s.rho_n,
    })
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    fn table(lens: &[usize]) -> TokenTable {
        crate::test_support::token_table(0, lens)
    }

    use crate::test_support::att;

    /// A `2n x 1` layout from query and key coordinates.
    fn layout_1d(q: &[f32], k: &[f32]) -> Matrix {
        Matrix::from_vec(q.len() + k.len(), 1, [q, k].concat()).unwrap()
    }

    /// Raw vectors with constant logits (global fidelity undefined).
    fn flat_raw(n: usize) -> (Matrix, Matrix) {
        let m = Matrix::from_vec(n, 1, vec![1.0; n]).unwrap();
        (m.clone(), m)
    }

    fn run(
        space: FidelitySpace<'_>,
        tokens: &TokenTable,
        attention: &[SequenceAttention],
        causal: bool,
    ) -> Fidelity {
        let (q, k) = flat_raw(tokens.len());
        fidelity(space, &q, &k, tokens, attention, causal, 1).unwrap()
    }

    fn close(a: Option<f32>, b: f64) -> bool {
        a.is_some_and(|a| (f64::from(a) - b).abs() < 1e-6)
    }

    /// Random positive attention and 2-D layout for sequences of `lens`.
    fn random_case(lens: &[usize], seed: u64) -> (TokenTable, Vec<SequenceAttention>, Matrix) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tokens = table(lens);
        let attention = lens
            .iter()
            .enumerate()
            .map(|(s, &len)| {
                let rows: Vec<Vec<f32>> = (0..len)
                    .map(|_| (0..len).map(|_| rng.random::<f32>() + 1e-3).collect())
                    .collect();
                att(s as u32, &rows)
            })
            .collect();
        let n = tokens.len();
        let coords = (0..4 * n).map(|_| rng.random::<f32>()).collect();
        (
            tokens,
            attention,
            Matrix::from_vec(2 * n, 2, coords).unwrap(),
        )
    }

    #[test]
    fn hand_computed_two_sequences() {
        let tokens = table(&[4, 5]);
        // Every query sits at 0; sequence A's keys at distance 1..4, B's at 5, 1, 2, 3, 4.
        let layout = layout_1d(&[0.0; 9], &[1., 2., 3., 4., 5., 1., 2., 3., 4.]);
        let a = att(
            0,
            &[
                vec![0.1, 0.2, 0.3, 0.4], // rho -1, miss
                vec![0.4, 0.3, 0.2, 0.1], // rho 1, hit
                vec![0.25; 4],            // rho undefined, hit (key 0 on ties)
                vec![0.1, 0.4, 0.3, 0.2], // rho -0.2, hit
            ],
        );
        let b_row = vec![0.0, 0.6, 0.2, 0.1, 0.1]; // rho 9.5 / sqrt(95), hit
        let b = att(
            1,
            &[
                vec![0.5, 0.2, 0.1, 0.1, 0.1], // rho -2 / sqrt(80), miss
                b_row.clone(),
                b_row.clone(),
                b_row.clone(),
                b_row,
            ],
        );
        let f = run(FidelitySpace::Layout(&layout), &tokens, &[a, b], false);
        assert_eq!((f.queries, f.rho_queries), (9, 8));
        let rho = (-1.0 + 1.0 - 0.2 - 2.0 / 80f64.sqrt() + 4.0 * 9.5 / 95f64.sqrt()) / 8.0;
        assert!(close(f.fidelity, rho), "{f:?} vs {rho}");
        assert!(close(f.hit_at_3, 7.0 / 9.0), "{f:?}");
        assert!(
            close(f.chance_at_3, (4.0 * 0.75 + 5.0 * 0.6) / 9.0),
            "{f:?}"
        );
        assert_eq!(f.global_fidelity, None);
    }

    #[test]
    fn query_on_its_argmax_key_always_hits() {
        let lens = [7, 12, 20, 4];
        let (tokens, attention, mut layout) = random_case(&lens, 3);
        let n = tokens.len();
        for (span, a) in tokens.sequences().iter().zip(&attention) {
            for p in 0..span.len {
                let row = a.weights.row(p);
                let best = (0..span.len).fold(0, |b, j| if row[j] > row[b] { j } else { b });
                let key = layout.row(n + span.start + best).to_vec();
                layout.row_mut(span.start + p).copy_from_slice(&key);
            }
        }
        let f = run(FidelitySpace::Layout(&layout), &tokens, &attention, false);
        assert_eq!(f.queries as usize, n);
        assert_eq!(f.hit_at_3, Some(1.0));
        // Moving the queries away from their keys loses hits.
        let (_, _, random) = random_case(&lens, 3);
        let g = run(FidelitySpace::Layout(&random), &tokens, &attention, false);
        assert!(g.hit_at_3.unwrap() < 1.0, "{g:?}");
    }

    #[test]
    fn reversed_layout_gives_minus_one() {
        let len = 8;
        let tokens = table(&[len]);
        // Attention grows with the key position, and so does the distance (keys at 1..=8 from 0).
        let rows: Vec<Vec<f32>> = (0..len)
            .map(|i| (0..len).map(|j| ((j + 1) * (i + 1)) as f32).collect())
            .collect();
        let a = [att(0, &rows)];
        let keys: Vec<f32> = (1..=len).map(|j| j as f32).collect();
        let far = layout_1d(&[0.0; 8], &keys);
        let f = run(FidelitySpace::Layout(&far), &tokens, &a, false);
        assert!(close(f.fidelity, -1.0), "{f:?}");
        assert_eq!(f.hit_at_3, Some(0.0));
        assert!(close(f.chance_at_3, 3.0 / 8.0));
        // Mirrored keys: the most attended is nearest.
        let near = layout_1d(&[9.0; 8], &keys);
        let g = run(FidelitySpace::Layout(&near), &tokens, &a, false);
        assert!(close(g.fidelity, 1.0), "{g:?}");
        assert_eq!(g.hit_at_3, Some(1.0));
    }

    #[test]
    fn causal_ignores_future_keys_and_short_queries() {
        let len = 6;
        let tokens = table(&[len]);
        // Allowed keys: attention falls with distance. Future keys: junk weights that would spoil it.
        let rows: Vec<Vec<f32>> = (0..len)
            .map(|p| {
                (0..len)
                    .map(|j| if j <= p { (p + 1 - j) as f32 } else { 10.0 })
                    .collect()
            })
            .collect();
        let a = [att(0, &rows)];
        let keys: Vec<f32> = (1..=len).map(|j| j as f32).collect();
        let layout = layout_1d(&[0.0; 6], &keys);
        let f = run(FidelitySpace::Layout(&layout), &tokens, &a, true);
        // Positions 0..3 see fewer than 4 keys and are skipped.
        assert_eq!((f.queries, f.rho_queries), (3, 3));
        assert!(close(f.fidelity, 1.0), "{f:?}");
        assert_eq!(f.hit_at_3, Some(1.0));
        assert!(close(f.chance_at_3, (0.75 + 0.6 + 0.5) / 3.0), "{f:?}");
        let g = run(FidelitySpace::Layout(&layout), &tokens, &a, false);
        assert_eq!(g.queries, 6);
        assert!(
            g.fidelity.unwrap() < 0.5 && g.hit_at_3.unwrap() < 1.0,
            "{g:?}"
        );
    }

    #[test]
    fn a_sliding_window_leaves_out_the_keys_it_masks() {
        let (len, window) = (8, 4);
        let tokens = table(&[len]);
        // Within the window, attention falls with distance back; keys farther back get none.
        let rows: Vec<Vec<f32>> = (0..len)
            .map(|p| {
                (0..len)
                    .map(|j| {
                        if j <= p && p - j < window {
                            (window - (p - j)) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect();
        let a = [att(0, &rows)];
        // Recent keys nearest the queries.
        let keys: Vec<f32> = (0..len).map(|j| (len - j) as f32).collect();
        let layout = layout_1d(&[0.0; 8], &keys);
        let windowed = AttendedKeys {
            causal: true,
            window: Some(window),
        };
        let q = Matrix::zeros(len, 1);
        let k = Matrix::zeros(len, 1);
        let f = fidelity(
            FidelitySpace::Layout(&layout),
            &q,
            &k,
            &tokens,
            &a,
            windowed,
            1,
        )
        .unwrap();
        // Queries 3..8 see exactly 4 keys each, ranked as attended.
        assert_eq!(f.queries, 5);
        assert!(close(f.fidelity, 1.0), "{f:?}");
        assert!(close(f.chance_at_3, 0.75), "{f:?}");
        // Ranking the masked keys too (zeros, tied) is another, lower score.
        let g = fidelity(FidelitySpace::Layout(&layout), &q, &k, &tokens, &a, true, 1).unwrap();
        assert!(
            g.fidelity.unwrap() < 0.99 && g.chance_at_3.unwrap() < 0.75,
            "{g:?}"
        );
    }

    #[test]
    fn ties_use_average_ranks_and_lowest_positions() {
        let tokens = table(&[4, 4, 4]);
        let layout = layout_1d(
            &[0.0; 12],
            &[1., 2., 3., 4., 1., 1., 1., 1., 1., 1., 2., 3.],
        );
        let a = att(0, &vec![vec![0.4, 0.2, 0.2, 0.2]; 4]); // rho 3 / sqrt(15), hits
        let b = att(
            1,
            &[
                // Constant distances: rho undefined; only keys at lower positions are nearer.
                vec![0.1, 0.2, 0.3, 0.4], // argmax key 3: 3 keys nearer, miss
                vec![0.4, 0.3, 0.2, 0.1], // argmax key 0, hit
                vec![0.2, 0.4, 0.4, 0.1], // argmax key 1 (first of the tie), hit
                vec![0.1, 0.1, 0.4, 0.4], // argmax key 2 (not 3), hit
            ],
        );
        let c = att(2, &vec![vec![0.1, 0.2, 0.3, 0.4]; 4]); // rho -4.5 / sqrt(22.5), miss
        let f = run(FidelitySpace::Layout(&layout), &tokens, &[a, b, c], false);
        assert_eq!((f.queries, f.rho_queries), (12, 8));
        let rho = (3.0 / 15f64.sqrt() - 4.5 / 22.5f64.sqrt()) / 2.0;
        assert!(close(f.fidelity, rho), "{f:?} vs {rho}");
        assert!(close(f.hit_at_3, 7.0 / 12.0), "{f:?}");
    }

    #[test]
    fn cosine_space_by_hand_and_as_a_circle_layout() {
        // Keys: a zero vector (distance 1), orthogonal (1), same direction (0), opposite (2).
        let tokens = table(&[4]);
        let q = Matrix::from_rows(&[[1.0f32, 0.0]; 4]).unwrap();
        let k = Matrix::from_rows(&[[0.0f32, 0.0], [0.0, 1.0], [2.0, 0.0], [-1.0, 0.0]]).unwrap();
        let a = [att(0, &vec![vec![0.1, 0.2, 0.3, 0.4]; 4])];
        let space = FidelitySpace::Cosine {
            queries: &q,
            keys: &k,
        };
        let f = run(space, &tokens, &a, false);
        assert!(close(f.fidelity, -1.5 / 22.5f64.sqrt()), "{f:?}");
        assert_eq!(f.hit_at_3, Some(0.0));

        // Vectors at random angles and norms vs the same directions as points on the unit circle:
        // squared chord length is 2 (1 - cos), so every ranking agrees.
        let lens = [5, 9, 6];
        let (tokens, attention, _) = random_case(&lens, 11);
        let n = tokens.len();
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut unit = Vec::new();
        let mut scaled = Vec::new();
        for _ in 0..2 * n {
            let t = rng.random::<f32>() * std::f32::consts::TAU;
            let r = 0.5 + 3.0 * rng.random::<f32>();
            unit.push([t.cos(), t.sin()]);
            scaled.push([r * t.cos(), r * t.sin()]);
        }
        let layout = Matrix::from_rows(&unit).unwrap();
        let joint = Matrix::from_rows(&scaled).unwrap();
        let (qv, kv) = (joint.slice_rows(0, n), joint.slice_rows(n, 2 * n));
        let raw_q = Matrix::from_vec(n, 3, (0..3 * n).map(|_| rng.random()).collect()).unwrap();
        let raw_k = Matrix::from_vec(n, 3, (0..3 * n).map(|_| rng.random()).collect()).unwrap();
        let by_layout = fidelity(
            FidelitySpace::Layout(&layout),
            &raw_q,
            &raw_k,
            &tokens,
            &attention,
            false,
            5,
        )
        .unwrap();
        let cosine = FidelitySpace::Cosine {
            queries: &qv,
            keys: &kv,
        };
        let by_vectors = fidelity(cosine, &raw_q, &raw_k, &tokens, &attention, false, 5).unwrap();
        assert_eq!(by_layout.queries, n as u32);
        assert_eq!(by_layout.hit_at_3, by_vectors.hit_at_3);
        assert_eq!(by_layout.rho_queries, by_vectors.rho_queries);
        let fl = f64::from(by_layout.fidelity.unwrap());
        assert!(
            close(by_vectors.fidelity, fl),
            "{by_layout:?} vs {by_vectors:?}"
        );
        let gl = f64::from(by_layout.global_fidelity.unwrap());
        assert!(
            close(by_vectors.global_fidelity, gl),
            "{by_layout:?} vs {by_vectors:?}"
        );
    }

    #[test]
    fn global_fidelity_is_seeded_and_one_when_monotone() {
        let n = 300;
        let tokens = table(&[100, 100, 100]);
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let c: Vec<f32> = (0..n).map(|_| 0.5 + rng.random::<f32>()).collect();
        let v: Vec<f32> = (0..n).map(|_| 2.0 * rng.random::<f32>() - 1.0).collect();
        let (raw_q, raw_k) = (
            Matrix::from_vec(n, 1, c).unwrap(),
            Matrix::from_vec(n, 1, v.clone()).unwrap(),
        );
        // Key j at 2 - v_j, queries at 0: distance falls exactly as the logit c_i v_j rises.
        let keys: Vec<f32> = v.iter().map(|x| 2.0 - x).collect();
        let mono = layout_1d(&vec![0.0; n], &keys);
        let f = fidelity(
            FidelitySpace::Layout(&mono),
            &raw_q,
            &raw_k,
            &tokens,
            &[],
            false,
            9,
        )
        .unwrap();
        assert!(close(f.global_fidelity, 1.0), "{f:?}");
        assert_eq!((f.fidelity, f.hit_at_3, f.queries), (None, None, 0));

        let (_, _, layout) = random_case(&[100, 100, 100], 4);
        let g = |seed| {
            fidelity(
                FidelitySpace::Layout(&layout),
                &raw_q,
                &raw_k,
                &tokens,
                &[],
                false,
                seed,
            )
            .unwrap()
            .global_fidelity
            .unwrap()
        };
        assert_eq!(g(1).to_bits(), g(1).to_bits());
        assert_ne!(g(1), g(2));
        assert!(g(1).abs() < 0.5);
    }

    #[test]
    fn no_attention_gives_none_without_panic() {
        let tokens = table(&[5]);
        let layout = Matrix::zeros(10, 2);
        let f = run(FidelitySpace::Layout(&layout), &tokens, &[], false);
        assert_eq!(f, Fidelity::default());
        // All-zero rows, and sequences too short to count, give n/a as well.
        let zero = [att(0, &vec![vec![0.0; 5]; 5])];
        assert_eq!(
            run(FidelitySpace::Layout(&layout), &tokens, &zero, false),
            Fidelity::default()
        );
        let short = table(&[3, 2]);
        let a = [
            att(0, &vec![vec![0.5; 3]; 3]),
            att(1, &vec![vec![0.5; 2]; 2]),
        ];
        let layout = Matrix::zeros(10, 2);
        assert_eq!(
            run(FidelitySpace::Layout(&layout), &short, &a, false),
            Fidelity::default()
        );
        // No tokens, and a single token (no global sample).
        let empty = TokenTable::default();
        let none = Matrix::zeros(0, 2);
        assert_eq!(
            run(FidelitySpace::Layout(&none), &empty, &[], true),
            Fidelity::default()
        );
        let one = table(&[1]);
        let a = [att(0, &[vec![1.0]])];
        let layout = Matrix::zeros(2, 2);
        let q = Matrix::from_vec(1, 2, vec![1.0, 2.0]).unwrap();
        let f = fidelity(FidelitySpace::Layout(&layout), &q, &q, &one, &a, false, 0).unwrap();
        assert_eq!(f, Fidelity::default());
    }

    #[test]
    fn shape_mismatches_are_errors() {
        let tokens = table(&[4, 5]);
        let (raw_q, raw_k) = flat_raw(9);
        let good = vec![
            att(0, &vec![vec![0.25; 4]; 4]),
            att(1, &vec![vec![0.2; 5]; 5]),
        ];
        let layout = Matrix::zeros(18, 2);
        let call = |space, q: &Matrix, k: &Matrix, a: &[SequenceAttention]| {
            fidelity(space, q, k, &tokens, a, false, 0)
        };
        let ok = FidelitySpace::Layout(&layout);
        assert!(call(ok, &raw_q, &raw_k, &good).is_ok());
        let short = Matrix::zeros(17, 2);
        assert!(call(FidelitySpace::Layout(&short), &raw_q, &raw_k, &good).is_err());
        assert!(call(ok, &raw_q, &raw_k, &good[..1]).is_err());
        let renamed = vec![good[0].clone(), att(7, &vec![vec![0.2; 5]; 5])];
        assert!(call(ok, &raw_q, &raw_k, &renamed).is_err());
        // Right ids, but the matrices of the two sequences swapped (wrong sizes).
        let swapped = [
            SequenceAttention {
                seq_id: 0,
                ..good[1].clone()
            },
            SequenceAttention {
                seq_id: 1,
                ..good[0].clone()
            },
        ];
        assert!(call(ok, &raw_q, &raw_k, &swapped).is_err());
        let (q8, _) = flat_raw(8);
        assert!(call(ok, &q8, &raw_k, &good).is_err());
        let wide = Matrix::zeros(9, 3);
        assert!(call(ok, &raw_q, &wide, &good).is_err());
        let cos = FidelitySpace::Cosine {
            queries: &wide,
            keys: &raw_k,
        };
        assert!(call(cos, &raw_q, &raw_k, &good).is_err());
    }

    #[test]
    fn same_result_at_any_thread_count() {
        let lens: Vec<usize> = (0..60).map(|s| 3 + (s * 7) % 23).collect();
        let (tokens, attention, layout) = random_case(&lens, 8);
        let n = tokens.len();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut mat = |d: usize| {
            Matrix::from_vec(
                n,
                d,
                (0..n * d).map(|_| rng.random::<f32>() - 0.5).collect(),
            )
            .unwrap()
        };
        let (q, k) = (mat(16), mat(16));
        let results: Vec<Fidelity> = [1, 3]
            .iter()
            .map(|&threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let space = FidelitySpace::Cosine {
                        queries: &q,
                        keys: &k,
                    };
                    let a = fidelity(space, &q, &k, &tokens, &attention, true, 4).unwrap();
                    let b = fidelity(
                        FidelitySpace::Layout(&layout),
                        &q,
                        &k,
                        &tokens,
                        &attention,
                        false,
                        4,
                    )
                    .unwrap();
                    assert!(a.fidelity.is_some() && b.global_fidelity.is_some());
                    (a, b)
                })
            })
            .flat_map(|(a, b)| [a, b])
            .collect();
        assert_eq!(results[0], results[2]);
        assert_eq!(results[1], results[3]);
    }
}
