//! The per-query attention term of attention-aware layouts: each query's own keys compete for it
//! in the layout as they do in attention's softmax.
//!
//! Mixing attention into t-SNE's affinities or UMAP's fuzzy graph ([`crate::attention`]) pulls a
//! query toward the keys it attends to, but nothing orders those keys among themselves: a query
//! whose top key lies third-nearest costs the layout almost nothing. This term does. For query `i`
//! with attended keys `J_i` ([`AttentionEdges::attended`]) and attention `A_i` (its edges), the
//! layout defines its own distribution over the same keys,
//!
//! ```text
//! R_i(j) = w(d_ij) / sum_{j' in J_i} w(d_ij')        d_ij = |y(q_i) - y(k_j)|
//! ```
//!
//! with a kernel `w` ([`LayoutKernel`]), and the term is `KL(A_i || R_i)` summed over the queries
//! with edges: t-SNE adds `lambda` times its mean (in the units of its own KL divergence), UMAP
//! moves every point by `lambda` times its gradient each epoch (in the units of one sampled edge's
//! step). Its gradient on the query is `sum_j (r_ij - a_ij) dlog w(d_ij)/dy(q_i)`
//! (and the opposite on each key): keys attended more than the layout shows are pulled in, keys
//! attended less are pushed out, within the query's own sequence only. The cost is `O(sum of
//! |J_i|)` per evaluation, the sum of the squared sequence lengths (halved for causal heads), up to
//! [`MAX_COMPETING_KEYS`].
//!
//! The evaluation is parallel over sequences, whose queries and keys are disjoint sets of rows, and
//! sums in a fixed order within each: the result does not depend on the number of threads.

// Coordinate loops `for a in 0..D` index several fixed-size arrays in lockstep.
#![allow(clippy::needless_range_loop)]

use attn_types::Matrix;
use rayon::prelude::*;

use crate::{AttentionEdges, ProjectError};

/// The kernel `w(d)` that turns a query's layout distances to its keys into the layout's softmax
/// `R_i` (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayoutKernel {
    /// `1 / (1 + d²)`: t-SNE's own similarity.
    StudentT,
    /// `1 / (1 + a d^(2b))`: UMAP's own curve for its `a`, `b`.
    Umap {
        /// UMAP's `a`.
        a: f32,
        /// UMAP's `b`.
        b: f32,
    },
    /// `exp(-d²)`: `R_i` is then `softmax(2 y_i . y_j - |y_j|²)`, attention computed from a
    /// `dims`-dimensional query and key plus a key bias, so the best layout under this kernel is the
    /// best attention a layout of that many dimensions can express (see [`crate::ceiling`]).
    Gaussian,
}

impl LayoutKernel {
    /// `(w(d), 2 dln w/d(d²))` at `u = d²`, with `w` relative to its value at `u_min` (the
    /// smallest `u` of the query, which only the Gaussian needs: its `exp(-u)` underflows far
    /// away).
    #[inline]
    fn weight_and_slope(self, u: f32, u_min: f32) -> (f32, f32) {
        match self {
            LayoutKernel::StudentT => {
                let w = 1.0 / (1.0 + u);
                (w, -2.0 * w)
            }
            LayoutKernel::Umap { a, b } => {
                if u <= 0.0 {
                    return (1.0, 0.0);
                }
                let pb = crate::umap::fast_pow(u, b);
                let w = 1.0 / (1.0 + a * pb);
                (w, -2.0 * a * b * pb * w / u)
            }
            LayoutKernel::Gaussian => ((u_min - u).exp(), -2.0),
        }
    }

    /// A code for the projection spec: 0 Student-t, 1 UMAP's curve, 2 Gaussian.
    pub fn code(self) -> f64 {
        match self {
            LayoutKernel::StudentT => 0.0,
            LayoutKernel::Umap { .. } => 1.0,
            LayoutKernel::Gaussian => 2.0,
        }
    }
}

/// Which kernel a method's attention term uses: its own similarity (t-SNE's Student-t, UMAP's
/// curve), or the Gaussian of [`LayoutKernel::Gaussian`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionKernel {
    /// The method's own low-dimensional similarity.
    #[default]
    Method,
    /// `exp(-d²)`.
    Gaussian,
}

/// In a sequence longer than this (a long document) only a query's edges compete: the keys with
/// attention at least [`crate::ATTENTION_MIN_WEIGHT`], so that the cost stays linear in the tokens
/// instead of quadratic in the sequence length. attnviz's pipeline keeps only the top 64 weights per
/// query of sequences past 1,024 tokens (`AttentionKeep::Auto`): the keys it dropped are no
/// evidence of zero attention and must not be pushed away. (A capture policy that drops weights of
/// shorter sequences, `--attention top:K`, has its dropped keys compete as unattended.)
pub const MAX_COMPETING_KEYS: usize = 1024;

/// The per-query term of one fit, as t-SNE and UMAP use it.
pub(crate) struct KlTerm<'a> {
    pub(crate) edges: &'a AttentionEdges,
    pub(crate) kernel: LayoutKernel,
    pub(crate) lambda: f32,
}

impl<'a> KlTerm<'a> {
    /// The term of a fit with weight `lambda` and the kernel `method` stands for, when there is
    /// anything to fit (`lambda > 0` and edges).
    pub(crate) fn new(
        edges: Option<&'a AttentionEdges>,
        lambda: f32,
        kernel: AttentionKernel,
        method: LayoutKernel,
    ) -> Option<Self> {
        let edges = edges.filter(|e| lambda > 0.0 && !e.is_empty())?;
        Some(KlTerm {
            edges,
            kernel: match kernel {
                AttentionKernel::Method => method,
                AttentionKernel::Gaussian => LayoutKernel::Gaussian,
            },
            lambda,
        })
    }

    /// `(lambda, kernel code)` for the projection spec; zeros when the fit had no term.
    pub(crate) fn spec_params(term: Option<&Self>) -> (f64, f64) {
        term.map_or((0.0, 0.0), |t| (t.lambda as f64, t.kernel.code()))
    }
}

/// Writes into `grad` (all `2n` rows; rows without a term get 0) the gradient of
/// `sum_i KL(A_i || R_i)` over the queries with edges of a joint layout `y` (queries first), and
/// returns that sum when `want_value` (else 0: its logarithms are most of the cost).
pub(crate) fn gradient<const D: usize>(
    edges: &AttentionEdges,
    y: &[[f32; D]],
    kernel: LayoutKernel,
    want_value: bool,
    grad: &mut [[f32; D]],
) -> f64 {
    let n = edges.tokens();
    debug_assert_eq!(y.len(), 2 * n);
    debug_assert_eq!(grad.len(), 2 * n);
    grad.iter_mut().for_each(|g| *g = [0.0; D]);
    let (query_grad, key_grad) = grad.split_at_mut(n);
    // One disjoint pair of slices (its queries' rows, its keys' rows) per sequence.
    let mut parts = Vec::with_capacity(edges.sequences.len());
    let (mut qrest, mut krest) = (query_grad, key_grad);
    let mut at = 0;
    for span in edges.sequences() {
        let (_, q) = std::mem::take(&mut qrest).split_at_mut(span.start - at);
        let (qs, qr) = q.split_at_mut(span.len());
        let (_, k) = std::mem::take(&mut krest).split_at_mut(span.start - at);
        let (ks, kr) = k.split_at_mut(span.len());
        at = span.end;
        parts.push((span, qs, ks));
        (qrest, krest) = (qr, kr);
    }
    parts
        .into_par_iter()
        .map(|(span, qg, kg)| sequence_gradient(edges, y, kernel, want_value, span, qg, kg))
        .collect::<Vec<f64>>()
        .into_iter()
        .sum()
}

/// One sequence's share of [`gradient`]: `qg` and `kg` are the rows of its queries and keys.
fn sequence_gradient<const D: usize>(
    edges: &AttentionEdges,
    y: &[[f32; D]],
    kernel: LayoutKernel,
    want_value: bool,
    span: std::ops::Range<usize>,
    qg: &mut [[f32; D]],
    kg: &mut [[f32; D]],
) -> f64 {
    let n = edges.tokens();
    let mut kl = 0f64;
    // The competing keys of the query, then per key: d², the kernel's weight and slope 2 dln w / d(d²).
    let mut competing = Vec::new();
    let mut dist = Vec::new();
    let mut weight = Vec::new();
    let mut slope = Vec::new();
    for i in span.clone() {
        let (keys, attention) = edges.query(i);
        if keys.is_empty() {
            continue;
        }
        competing.clear();
        if span.len() <= MAX_COMPETING_KEYS {
            competing.extend(edges.attended(i));
        } else {
            competing.extend(keys.iter().map(|&j| j as usize));
        }
        let yi = y[i];
        dist.clear();
        dist.extend(competing.iter().map(|&j| dist2(&yi, &y[n + j])));
        let u_min = dist.iter().copied().fold(f32::INFINITY, f32::min);
        weight.clear();
        slope.clear();
        let mut total = 0f32;
        for &u in &dist {
            let (w, s) = kernel.weight_and_slope(u, u_min);
            total += w;
            weight.push(w);
            slope.push(s);
        }
        let inv_total = 1.0 / total;
        let mut next = 0;
        let mut gi = [0f32; D];
        for (o, &j) in competing.iter().enumerate() {
            let a = if next < keys.len() && keys[next] as usize == j {
                next += 1;
                attention[next - 1]
            } else {
                0.0
            };
            let r = weight[o] * inv_total;
            if want_value && a > 0.0 {
                kl += a as f64 * ((a as f64).ln() - (r as f64).ln());
            }
            let c = (r - a) * slope[o];
            if c == 0.0 {
                continue;
            }
            let yj = y[n + j];
            let kj = &mut kg[j - span.start];
            for d in 0..D {
                let f = c * (yi[d] - yj[d]);
                gi[d] += f;
                kj[d] -= f;
            }
        }
        let qi = &mut qg[i - span.start];
        for d in 0..D {
            qi[d] += gi[d];
        }
    }
    kl
}

/// The squared distance of two points.
#[inline]
pub(crate) fn dist2<const D: usize>(a: &[f32; D], b: &[f32; D]) -> f32 {
    let mut s = 0f32;
    for d in 0..D {
        s += (a[d] - b[d]) * (a[d] - b[d]);
    }
    s
}

/// The mean over the queries with edges of `KL(A_i || R_i)` for a joint layout `coords` (`2n`
/// rows, queries first, 1 to 3 columns) under `kernel`: 0 when every query's keys are as close as
/// attention says, for the kernel; `None` when no query has edges.
///
/// ```
/// use attn_project::{AttentionEdges, LayoutKernel, attention_kl};
/// use attn_types::{Matrix, SequenceAttention, TokenTable};
///
/// // One sequence of 2 tokens; both queries attend 0.8 to key 0 and 0.2 to key 1.
/// let tokens = TokenTable::placeholder(&[2]);
/// let weights = Matrix::from_rows(&[[0.8f32, 0.2], [0.8, 0.2]]).unwrap();
/// let attention = [SequenceAttention { seq_id: 0, weights }];
/// let edges = AttentionEdges::from_attention(&tokens, &attention, false).unwrap();
/// // 1-D layout: queries at 0, key 0 at 1, key 1 at 2 -> R = (1/2, 1/5) / (7/10) under Student-t.
/// let layout = Matrix::from_vec(4, 1, vec![0., 0., 1., 2.]).unwrap();
/// let kl = attention_kl(&edges, &layout, LayoutKernel::StudentT).unwrap().unwrap();
/// let (r0, r1): (f64, f64) = (0.5 / 0.7, 0.2 / 0.7);
/// let want = 0.8 * (0.8 / r0).ln() + 0.2 * (0.2 / r1).ln();
/// assert!((kl - want).abs() < 1e-6);
/// ```
pub fn attention_kl(
    edges: &AttentionEdges,
    coords: &Matrix,
    kernel: LayoutKernel,
) -> Result<Option<f64>, ProjectError> {
    edges.check_points(coords.rows())?;
    let counted = edges.queries_with_edges();
    if counted == 0 {
        return Ok(None);
    }
    let total = match coords.cols() {
        1 => gradient::<1>(
            edges,
            &rows(coords),
            kernel,
            true,
            &mut vec![[0.0]; coords.rows()],
        ),
        2 => gradient::<2>(
            edges,
            &rows(coords),
            kernel,
            true,
            &mut vec![[0.0; 2]; coords.rows()],
        ),
        3 => gradient::<3>(
            edges,
            &rows(coords),
            kernel,
            true,
            &mut vec![[0.0; 3]; coords.rows()],
        ),
        c => {
            return Err(ProjectError::InvalidInput(format!(
                "attention KL: layouts have 1 to 3 columns, got {c}"
            )));
        }
    };
    Ok(Some(total / counted as f64))
}

/// The rows of an `n x D` matrix as fixed-size arrays.
pub(crate) fn rows<const D: usize>(m: &Matrix) -> Vec<[f32; D]> {
    m.as_slice()
        .chunks_exact(D)
        .map(|r| std::array::from_fn(|d| r[d]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::synthetic::head;
    use crate::test_support::{att, token_table};

    /// The objective in f64 straight from its definition, for the finite differences.
    fn objective(edges: &AttentionEdges, y: &[[f64; 2]], kernel: LayoutKernel) -> f64 {
        let n = edges.tokens();
        let w = |u: f64| match kernel {
            LayoutKernel::StudentT => 1.0 / (1.0 + u),
            LayoutKernel::Umap { a, b } => 1.0 / (1.0 + a as f64 * u.powf(b as f64)),
            LayoutKernel::Gaussian => (-u).exp(),
        };
        let mut total = 0.0;
        for i in 0..n {
            let (keys, weights) = edges.query(i);
            if keys.is_empty() {
                continue;
            }
            let ws: Vec<f64> = edges
                .attended(i)
                .map(|j| {
                    let (dx, dy) = (y[i][0] - y[n + j][0], y[i][1] - y[n + j][1]);
                    w(dx * dx + dy * dy)
                })
                .collect();
            let s: f64 = ws.iter().sum();
            let start = edges.attended(i).start;
            for (&j, &a) in keys.iter().zip(weights) {
                let r = ws[j as usize - start] / s;
                total += a as f64 * (a as f64 / r).ln();
            }
        }
        total
    }

    #[test]
    fn gradient_matches_finite_differences_on_a_hand_case() {
        // Two sequences (3 and 4 tokens), causal and not, with a zero weight (a key that only
        // competes) and a window of 2 on the causal one.
        let tokens = token_table(0, &[3, 4]);
        let a = [
            att(
                0,
                &[
                    vec![0.7, 0.3, 0.0],
                    vec![0.1, 0.6, 0.3],
                    vec![0.2, 0.2, 0.6],
                ],
            ),
            att(
                1,
                &[
                    vec![1.0, 0.0, 0.0, 0.0],
                    vec![0.4, 0.6, 0.0, 0.0],
                    vec![0.2, 0.5, 0.3, 0.0],
                    vec![0.1, 0.2, 0.3, 0.4],
                ],
            ),
        ];
        let y0: Vec<[f32; 2]> = (0..14)
            .map(|r| {
                let t = r as f32;
                [(t * 1.7).sin() * 1.3, (t * 0.9).cos() * 0.8 + 0.1 * t]
            })
            .collect();
        let window = attn_types::AttendedKeys {
            causal: true,
            window: Some(2),
        };
        for keys in [attn_types::AttendedKeys::from(false), window] {
            let edges = AttentionEdges::from_attention(&tokens, &a, keys).unwrap();
            for kernel in [
                LayoutKernel::StudentT,
                LayoutKernel::Umap { a: 1.58, b: 0.9 },
                LayoutKernel::Gaussian,
            ] {
                let mut g = vec![[0f32; 2]; 14];
                let value = gradient(&edges, &y0, kernel, true, &mut g);
                let y64: Vec<[f64; 2]> = y0.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
                let exact = objective(&edges, &y64, kernel);
                assert!(
                    (value - exact).abs() < 1e-5,
                    "{kernel:?}: {value} vs {exact}"
                );
                let h = 1e-5;
                for r in 0..14 {
                    for d in 0..2 {
                        let (mut up, mut down) = (y64.clone(), y64.clone());
                        up[r][d] += h;
                        down[r][d] -= h;
                        let fd = (objective(&edges, &up, kernel)
                            - objective(&edges, &down, kernel))
                            / (2.0 * h);
                        let err = (g[r][d] as f64 - fd).abs();
                        // f32 arithmetic against an f64 central difference: measured worst 2.6e-7.
                        assert!(
                            err < 1.5e-6,
                            "{kernel:?} {keys:?} row {r} dim {d}: {} vs {fd}",
                            g[r][d]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn keys_outside_the_mask_and_other_sequences_get_no_term() {
        let tokens = token_table(0, &[3, 2]);
        let a = [
            att(
                0,
                &[
                    vec![1.0, 0.0, 0.0],
                    vec![0.5, 0.5, 0.0],
                    vec![0.2, 0.3, 0.5],
                ],
            ),
            att(1, &[vec![1.0, 0.0], vec![0.5, 0.5]]),
        ];
        let edges = AttentionEdges::from_attention(&tokens, &a, true).unwrap();
        assert_eq!(edges.attended(0), 0..1);
        assert_eq!(edges.attended(2), 0..3);
        assert_eq!(edges.attended(4), 3..5);
        let y: Vec<[f32; 2]> = (0..10)
            .map(|r| [r as f32 * 0.3, (r * r) as f32 * 0.1])
            .collect();
        let mut g = vec![[0f32; 2]; 10];
        gradient(&edges, &y, LayoutKernel::StudentT, false, &mut g);
        // Query 0 attends only to key 0 with weight 1 = R: no force on either from it; key 0 still
        // gets forces from queries 1 and 2, which compete over it.
        assert_eq!(g[0], [0.0, 0.0]);
        assert_ne!(g[5], [0.0, 0.0]);
        // Moving the other sequence's points does not change the first sequence's gradient.
        let mut moved = y.clone();
        for r in [3, 4, 8, 9] {
            moved[r] = [100.0 + r as f32, -50.0];
        }
        let mut g2 = vec![[0f32; 2]; 10];
        gradient(&edges, &moved, LayoutKernel::StudentT, false, &mut g2);
        for r in [0, 1, 2, 5, 6, 7] {
            assert_eq!(g[r], g2[r], "row {r}");
        }
        // Without attention there is no term.
        let none = AttentionEdges::from_attention(&tokens, &[], true).unwrap();
        let coords = Matrix::from_vec(10, 2, y.iter().flatten().copied().collect()).unwrap();
        assert_eq!(
            attention_kl(&none, &coords, LayoutKernel::StudentT).unwrap(),
            None
        );
    }

    #[test]
    fn long_sequences_let_only_the_edges_compete() {
        // One sequence one token longer than the cap; query 0 attends to keys 0 and 1 only.
        let len = MAX_COMPETING_KEYS + 1;
        let tokens = token_table(0, &[len]);
        let mut rows = vec![vec![1.0 / len as f32; len]; len];
        rows[0] = vec![0.0; len];
        rows[0][0] = 0.6;
        rows[0][1] = 0.4;
        let edges = AttentionEdges::from_attention(&tokens, &[att(0, &rows)], false).unwrap();
        assert_eq!(edges.attended(0).len(), len);
        let y: Vec<[f32; 2]> = (0..2 * len)
            .map(|r| [(r as f32 * 0.37).sin(), (r as f32 * 0.11).cos()])
            .collect();
        let mut g = vec![[0f32; 2]; 2 * len];
        let value = gradient(&edges, &y, LayoutKernel::StudentT, true, &mut g);
        assert!(value.is_finite());
        // Key 2 has no attention from query 0 and, beyond the cap, does not compete for it, so
        // moving query 0 leaves it alone (the other queries' uniform rows, 1/1025 each, fall
        // below the edge threshold: they carry no term), while key 1 feels the move.
        let mut without = y.clone();
        without[0] = [50.0, 50.0];
        let mut g2 = vec![[0f32; 2]; 2 * len];
        gradient(&edges, &without, LayoutKernel::StudentT, false, &mut g2);
        assert_eq!(g[len + 2], g2[len + 2]);
        assert_ne!(g[len + 1], g2[len + 1]);
    }

    #[test]
    fn same_bits_on_one_and_three_threads() {
        let h = head(1500, false, 3);
        let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, false).unwrap();
        let n2 = 2 * h.tokens.len();
        let y: Vec<[f32; 3]> = (0..n2)
            .map(|r| {
                let t = r as f32;
                [
                    (t * 0.37).sin() * 5.0,
                    (t * 0.11).cos() * 4.0,
                    (t * 0.07).sin(),
                ]
            })
            .collect();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut g = vec![[0f32; 3]; n2];
                    let kl = gradient(&edges, &y, LayoutKernel::Gaussian, true, &mut g);
                    (
                        kl.to_bits(),
                        g.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    )
                })
        };
        assert_eq!(run(1), run(3));
    }
}
