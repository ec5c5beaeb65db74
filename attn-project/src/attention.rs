//! Attention edges of one head, for attention-aware layouts.
//!
//! AttentionViz reads attention off the picture: a query should lie near the keys it attends to.
//! t-SNE and UMAP only see the kNN graph of the joint query/key set, in which a query's neighbours
//! are mostly tokens of *other* sequences, so a plain layout keeps that promise poorly. The
//! attention-aware fits ([`crate::TsneValidParams::fit_knn_with_attention`],
//! [`crate::UmapValidParams::fit_knn_with_attention`]) add the head's attention as extra
//! attractive edges between query row `i` and key row `n + j` of the joint set (rows `0..n` the
//! queries, `n..2n` the keys, see [`attn_types::JointIndex`]).
//!
//! [`AttentionEdges`] holds them sparsely: for every query, the keys of its own sequence it may
//! attend to (for causal models only positions at or before its own) whose weight, after the row
//! is normalized to sum 1, is at least [`ATTENTION_MIN_WEIGHT`]; the kept weights are normalized
//! again to sum 1 per query, so that every query carries the same attention mass.
//!
//! Beside the edges, [`AttentionEdges`] knows every query's *attended keys* (the keys of its own
//! sequence that the mask lets it attend to, [`AttendedKeys`]), over which the per-query term of
//! [`kl`] makes the layout's own softmax compete as attention's does.

use attn_types::{AttendedKeys, SequenceAttention, TokenTable};

use crate::ProjectError;

pub mod kl;
#[cfg(test)]
pub(crate) mod synthetic;

/// Per-query normalized attention weights below this are dropped by
/// [`AttentionEdges::from_attention`] (and the rest renormalized). On the synthetic heads of
/// `examples/attention_layouts.rs` (5,015 tokens, sequences of 4-40) it keeps 77% of the edges
/// (79% causal); against keeping every edge, the mean over 3 layout seeds of t-SNE and UMAP
/// hit@3, fidelity and trustworthiness@10 moved by at most 0.010, 0.006 and 0.003, within one or
/// two seed-to-seed standard deviations (0.003-0.009, 0.003-0.008, 0.000-0.002); see the crate
/// README. The saving grows with sequence length (softmax tails over 128 keys).
pub const ATTENTION_MIN_WEIGHT: f32 = 1e-3;

/// The attention edges of one head: query token `i` -> key token `j` of the same sequence with
/// weight `a_ij` (normalized per query to sum 1), stored sparsely per query in token order.
///
/// In the joint point set of a head, the edge links row `i` (the query) and row `n + j` (the key),
/// with `n` = [`Self::tokens`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttentionEdges {
    n: usize,
    offsets: Vec<usize>,
    keys: Vec<u32>,
    weights: Vec<f32>,
    /// Per query, the token range `[start, end)` of the keys it may attend to (empty for the
    /// queries of a head without attention).
    attended: Vec<(u32, u32)>,
    /// The sequences' token ranges `[start, end)`, in order, covering `0..n` (none without
    /// attention): queries and keys of different sequences never share a term of [`kl`].
    sequences: Vec<(u32, u32)>,
}

/// Builds the [`AttentionEdges`] of a head with the default threshold [`ATTENTION_MIN_WEIGHT`];
/// the same as [`AttentionEdges::from_attention`].
pub fn attention_edges(
    tokens: &TokenTable,
    attention: &[SequenceAttention],
    keys: impl Into<AttendedKeys>,
) -> Result<AttentionEdges, ProjectError> {
    AttentionEdges::from_attention(tokens, attention, keys)
}

impl AttentionEdges {
    /// Builds the edges of a head from its attention matrices: `attention` holds one `len x len`
    /// matrix per sequence of `tokens`, in the table's sequence order, with matching sequence ids
    /// (as stored by the pipeline); `keys` says which keys a query may attend to
    /// ([`AttendedKeys`]; a `bool` means causal or not, without a window): with causal attention
    /// query position `p` only keeps keys `0..=p`, with a window `w` only the last `w` of those.
    /// Each query's row is normalized to sum 1, weights below [`ATTENTION_MIN_WEIGHT`] are
    /// dropped and the kept ones renormalized. Queries whose row has no positive weight get no
    /// edges. An empty `attention` (not captured) gives no edges at all.
    ///
    /// Fails with [`ProjectError::InvalidInput`] when the matrices do not match the table's
    /// sequences (count, ids, shapes) or hold a negative or non-finite weight.
    ///
    /// ```
    /// use attn_project::AttentionEdges;
    /// use attn_types::{Matrix, SequenceAttention, TokenMeta, TokenTable};
    ///
    /// let tokens = TokenTable {
    ///     tokens: (0..2)
    ///         .map(|p| TokenMeta {
    ///             seq_id: 0, position: p, seq_len: 2, text: format!("t{p}"),
    ///             is_special: false, patch: None, is_cls: false, offsets: None,
    ///         })
    ///         .collect(),
    /// };
    /// let weights = Matrix::from_rows(&[[0.75f32, 0.25], [0.5, 0.5]]).unwrap();
    /// let attention = [SequenceAttention { seq_id: 0, weights }];
    /// let edges = AttentionEdges::from_attention(&tokens, &attention, true).unwrap();
    /// // Causal: query 0 only sees key 0; query 1 sees keys 0 and 1.
    /// assert_eq!(edges.query(0), (&[0u32][..], &[1.0f32][..]));
    /// assert_eq!(edges.query(1), (&[0u32, 1][..], &[0.5f32, 0.5][..]));
    /// // As joint rows: query i is row i, key j is row 2 + j.
    /// assert_eq!(edges.joint_edges().collect::<Vec<_>>(), [(0, 2, 1.0), (1, 2, 0.5), (1, 3, 0.5)]);
    /// ```
    pub fn from_attention(
        tokens: &TokenTable,
        attention: &[SequenceAttention],
        keys: impl Into<AttendedKeys>,
    ) -> Result<Self, ProjectError> {
        Self::from_attention_with_min_weight(tokens, attention, keys, ATTENTION_MIN_WEIGHT)
    }

    /// [`Self::from_attention`] with another threshold `min_weight` in `[0, 1]` on the
    /// per-query normalized weights (0 keeps every positive weight).
    pub fn from_attention_with_min_weight(
        tokens: &TokenTable,
        attention: &[SequenceAttention],
        keys: impl Into<AttendedKeys>,
        min_weight: f32,
    ) -> Result<Self, ProjectError> {
        let attended_keys: AttendedKeys = keys.into();
        if !(0.0..=1.0).contains(&min_weight) {
            return Err(ProjectError::InvalidParam {
                name: "min_weight",
                reason: format!("must be in [0, 1], got {min_weight}"),
            });
        }
        let n = tokens.len();
        let mut edges = AttentionEdges {
            n,
            offsets: Vec::with_capacity(n + 1),
            keys: Vec::new(),
            weights: Vec::new(),
            attended: Vec::with_capacity(n),
            sequences: Vec::new(),
        };
        edges.offsets.push(0);
        if attention.is_empty() {
            edges.offsets.resize(n + 1, 0);
            edges.attended.resize(n, (0, 0));
            return Ok(edges);
        }
        let spans = tokens.sequences();
        if attention.len() != spans.len() {
            return Err(ProjectError::InvalidInput(format!(
                "attention: {} matrices for {} sequences",
                attention.len(),
                spans.len()
            )));
        }
        let mut row = Vec::new();
        for (span, att) in spans.iter().zip(attention) {
            if att.seq_id != span.seq_id {
                return Err(ProjectError::InvalidInput(format!(
                    "attention: matrix for sequence {} where the token table has sequence {}",
                    att.seq_id, span.seq_id
                )));
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
            edges
                .sequences
                .push((span.start as u32, (span.start + span.len) as u32));
            for p in 0..span.len {
                let range = attended_keys.range(p, span.len);
                let first = range.start;
                edges.attended.push((
                    (span.start + range.start) as u32,
                    (span.start + range.end) as u32,
                ));
                let a = &att.weights.row(p)[range];
                if let Some(j) = a.iter().position(|w| !(w.is_finite() && *w >= 0.0)) {
                    return Err(ProjectError::InvalidInput(format!(
                        "attention of sequence {}: weight {} at query {p}, key {} is negative \
                         or not finite",
                        span.seq_id,
                        a[j],
                        first + j
                    )));
                }
                let total: f64 = a.iter().map(|&w| w as f64).sum();
                row.clear();
                if total > 0.0 {
                    row.extend(
                        a.iter()
                            .enumerate()
                            .map(|(j, &w)| (j, w as f64 / total))
                            .filter(|&(_, w)| w > 0.0 && w >= min_weight as f64),
                    );
                }
                let kept: f64 = row.iter().map(|&(_, w)| w).sum();
                for &(j, w) in &row {
                    edges.keys.push((span.start + first + j) as u32);
                    edges.weights.push((w / kept) as f32);
                }
                edges.offsets.push(edges.keys.len());
            }
        }
        Ok(edges)
    }

    /// The same edges with every query's weights raised to the power `gamma` (> 0) and
    /// renormalized to sum 1: attention at temperature `1 / gamma` (`a^gamma` is proportional to
    /// `softmax(gamma * logits)`). `gamma > 1` concentrates each query's pull on its most-attended
    /// keys; see the crate README for its effect on hit@3 and fidelity.
    pub fn sharpened(&self, gamma: f32) -> Result<Self, ProjectError> {
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(ProjectError::InvalidParam {
                name: "gamma",
                reason: format!("must be finite and > 0, got {gamma}"),
            });
        }
        let mut out = self.clone();
        for i in 0..self.n {
            let (s, e) = (self.offsets[i], self.offsets[i + 1]);
            let powered: Vec<f64> = self.weights[s..e]
                .iter()
                .map(|&w| (w as f64).powf(gamma as f64))
                .collect();
            let total: f64 = powered.iter().sum();
            if total > 0.0 {
                for (o, p) in out.weights[s..e].iter_mut().zip(&powered) {
                    *o = (p / total) as f32;
                }
            }
        }
        Ok(out)
    }

    /// Number of tokens `n` of the head (the joint point set has `2n` rows).
    pub fn tokens(&self) -> usize {
        self.n
    }

    /// Number of edges.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there is no edge (no attention captured, or every row zero).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key tokens (ascending) and weights of query token `i`'s edges. Panics if `i >= n`.
    pub fn query(&self, i: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.offsets[i], self.offsets[i + 1]);
        (&self.keys[s..e], &self.weights[s..e])
    }

    /// Every edge as `(query row, key row, weight)` in the joint point set: `(i, n + j, a_ij)`,
    /// by query, then key.
    pub fn joint_edges(&self) -> impl Iterator<Item = (usize, usize, f32)> + '_ {
        (0..self.n).flat_map(move |i| {
            let (keys, weights) = self.query(i);
            keys.iter()
                .zip(weights)
                .map(move |(&j, &w)| (i, self.n + j as usize, w))
        })
    }

    /// The token range of the keys query token `i` may attend to (its own sequence, masked as
    /// [`AttendedKeys`] says; empty when the head has no attention). Panics if `i >= n`.
    pub fn attended(&self, i: usize) -> std::ops::Range<usize> {
        let (s, e) = self.attended[i];
        s as usize..e as usize
    }

    /// The sequences' token ranges, in order (none when the head has no attention).
    pub fn sequences(&self) -> impl ExactSizeIterator<Item = std::ops::Range<usize>> + '_ {
        self.sequences.iter().map(|&(s, e)| s as usize..e as usize)
    }

    /// Number of queries with at least one edge.
    pub fn queries_with_edges(&self) -> usize {
        self.offsets.windows(2).filter(|w| w[1] > w[0]).count()
    }

    /// Checks that the edges fit a joint point set of `points` rows (`2n`).
    pub(crate) fn check_points(&self, points: usize) -> Result<(), ProjectError> {
        if points != 2 * self.n {
            return Err(ProjectError::InvalidInput(format!(
                "attention edges are for {} tokens ({} joint rows), data has {points} rows",
                self.n,
                2 * self.n
            )));
        }
        Ok(())
    }

    /// The symmetric attention graph on the `2n` joint rows as CSR (row-sorted columns): edge
    /// `(i, n + j)` and its mirror `(n + j, i)` both with weight `a_ij * scale`.
    pub(crate) fn symmetric_csr(&self, scale: f64) -> (Vec<usize>, Vec<u32>, Vec<f64>) {
        let n = self.n;
        let mut counts = vec![0usize; 2 * n + 1];
        for i in 0..n {
            counts[i + 1] += self.offsets[i + 1] - self.offsets[i];
        }
        for &j in &self.keys {
            counts[n + j as usize + 1] += 1;
        }
        for r in 0..2 * n {
            counts[r + 1] += counts[r];
        }
        let total = counts[2 * n];
        let mut fill = counts.clone();
        let mut cols = vec![0u32; total];
        let mut vals = vec![0f64; total];
        // Queries first, in key order; keys receive their queries in ascending query order, so
        // every row comes out sorted.
        for (i, j, w) in self.joint_edges() {
            let v = w as f64 * scale;
            cols[fill[i]] = j as u32;
            vals[fill[i]] = v;
            fill[i] += 1;
            cols[fill[j]] = i as u32;
            vals[fill[j]] = v;
            fill[j] += 1;
        }
        (counts, cols, vals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn table(lens: &[usize]) -> TokenTable {
        crate::test_support::token_table(10, lens)
    }

    use crate::test_support::att;

    #[test]
    fn hand_case_non_causal_and_causal() {
        // Sequences of 2 and 3 tokens: token rows 0-1 and 2-4.
        let tokens = table(&[2, 3]);
        let a = [
            att(10, &[vec![0.5, 0.5], vec![0.0, 2.0]]),
            att(
                11,
                &[
                    vec![0.2, 0.3, 0.5],
                    vec![0.6, 0.4, 0.0],
                    vec![0.0, 0.0, 0.0],
                ],
            ),
        ];
        let e = AttentionEdges::from_attention(&tokens, &a, false).unwrap();
        assert_eq!(e.tokens(), 5);
        assert_eq!(e.query(0), (&[0u32, 1][..], &[0.5f32, 0.5][..]));
        // Unnormalized row: scaled to sum 1; the zero weight is no edge.
        assert_eq!(e.query(1), (&[1u32][..], &[1.0f32][..]));
        assert_eq!(e.query(2), (&[2u32, 3, 4][..], &[0.2f32, 0.3, 0.5][..]));
        assert_eq!(e.query(3), (&[2u32, 3][..], &[0.6f32, 0.4][..]));
        // An all-zero row has no edges.
        assert_eq!(e.query(4), (&[][..], &[][..]));
        assert_eq!(e.len(), 8);
        assert_eq!(e.queries_with_edges(), 4);
        let joint: Vec<_> = e.joint_edges().collect();
        assert_eq!(joint[0], (0, 5, 0.5));
        assert_eq!(joint[3], (2, 7, 0.2));
        assert_eq!(joint[7], (3, 8, 0.4));

        let c = AttentionEdges::from_attention(&tokens, &a, true).unwrap();
        // Query 0 keeps key 0 only (renormalized to 1); query 1 (position 1) keeps keys 0-1.
        assert_eq!(c.query(0), (&[0u32][..], &[1.0f32][..]));
        assert_eq!(c.query(1), (&[1u32][..], &[1.0f32][..]));
        assert_eq!(c.query(2), (&[2u32][..], &[1.0f32][..]));
        assert_eq!(c.query(3), (&[2u32, 3][..], &[0.6f32, 0.4][..]));
        assert_eq!(c.query(4), (&[][..], &[][..]));

        // The symmetric CSR mirrors every edge and keeps rows sorted.
        let (off, cols, vals) = e.symmetric_csr(2.0);
        assert_eq!(off.len(), 11);
        assert_eq!(*off.last().unwrap(), 16);
        // Key row 5 + 2 = 7 (token 2's key) is attended by queries 2 and 3.
        assert_eq!(&cols[off[7]..off[8]], &[2, 3]);
        assert_eq!(&vals[off[7]..off[8]], &[0.4f32 as f64, 1.2f32 as f64]);
        for r in 0..10 {
            assert!(cols[off[r]..off[r + 1]].windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn threshold_drops_and_renormalizes() {
        let tokens = table(&[3]);
        let a = [att(10, &vec![vec![0.0005, 0.4995, 0.5]; 3])];
        let e = AttentionEdges::from_attention(&tokens, &a, false).unwrap();
        let (keys, w) = e.query(0);
        assert_eq!(keys, &[1, 2]);
        assert!((w[0] - 0.4995 / 0.9995).abs() < 1e-6 && (w[1] - 0.5 / 0.9995).abs() < 1e-6);
        let all = AttentionEdges::from_attention_with_min_weight(&tokens, &a, false, 0.0).unwrap();
        assert_eq!(all.len(), 9);
        assert!(AttentionEdges::from_attention_with_min_weight(&tokens, &a, false, 1.5).is_err());
    }

    #[test]
    fn mismatches_and_bad_weights_are_errors() {
        let tokens = table(&[2, 3]);
        let good = vec![
            att(10, &vec![vec![0.5; 2]; 2]),
            att(11, &vec![vec![0.3; 3]; 3]),
        ];
        assert!(AttentionEdges::from_attention(&tokens, &good, false).is_ok());
        let err = |a: &[SequenceAttention]| {
            matches!(
                AttentionEdges::from_attention(&tokens, a, false),
                Err(ProjectError::InvalidInput(_))
            )
        };
        assert!(err(&good[..1]));
        assert!(err(&[good[0].clone(), att(12, &vec![vec![0.3; 3]; 3])]));
        assert!(err(&[good[1].clone(), good[0].clone()]));
        assert!(err(&[good[0].clone(), att(11, &vec![vec![0.3; 2]; 3])]));
        assert!(err(&[
            good[0].clone(),
            att(11, &vec![vec![0.3, -0.1, 0.2]; 3])
        ]));
        assert!(err(&[
            good[0].clone(),
            att(11, &vec![vec![0.3, f32::NAN, 0.2]; 3])
        ]));
        // A bad weight above the diagonal is masked out in causal mode, so it is not looked at.
        let upper = [
            good[0].clone(),
            att(11, &[vec![1.0, f32::NAN, 0.0], vec![0.5; 3], vec![0.3; 3]]),
        ];
        assert!(AttentionEdges::from_attention(&tokens, &upper, true).is_ok());
        // No attention at all: no edges, but the right size.
        let none = AttentionEdges::from_attention(&tokens, &[], false).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.tokens(), 5);
        assert_eq!(none.query(4), (&[][..], &[][..]));
        assert!(none.check_points(10).is_ok() && none.check_points(9).is_err());
    }
}
