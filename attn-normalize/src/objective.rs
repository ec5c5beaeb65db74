//! The per-query distance-weighted correlation and its 1-D search over `ln c`.

use attn_types::Matrix;

use crate::pairs::PairSet;
use crate::stats::weighted_pearson;

/// Where the near-pair distance threshold `t` of the weights `(t - d)^2` is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NearScope {
    /// `t` is the percentile of the distances of each query to its own keys.
    #[default]
    Query,
    /// `t` is the percentile of all query-key distances of the head; queries with no key under it
    /// carry no weight.
    Head,
}

/// Per-query and per-pair scalars from which the query-key distance at any scale `c` follows in
/// O(1): `d^2(c) = c^2 a + b / c^2 - 2 g`, with `a = |q~|^2` (per query), `b = |k~|^2`,
/// `g = q~ . k~`, where `q~`, `k~` are the vectors centred on their own centroids (translation on)
/// or the raw vectors (off).
pub(crate) struct Objective {
    /// Per query: `(a, first pair, end pair)`.
    groups: Vec<(f64, usize, usize)>,
    b: Vec<f64>,
    g: Vec<f64>,
    /// Logits `q_i . k_j` of the vectors given (any per-query constant is irrelevant).
    logit: Vec<f64>,
    near_percentile: f64,
    scope: NearScope,
}

/// Column means in f64.
pub(crate) fn centroid(m: &Matrix) -> Vec<f64> {
    let mut sum = vec![0.0f64; m.cols()];
    for r in m.iter_rows() {
        for (s, &v) in sum.iter_mut().zip(r) {
            *s += f64::from(v);
        }
    }
    let n = m.rows().max(1) as f64;
    sum.iter().map(|s| s / n).collect()
}

fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

fn row_f64(m: &Matrix, i: usize, shift: Option<&[f64]>) -> Vec<f64> {
    match shift {
        Some(s) => m
            .row(i)
            .iter()
            .zip(s)
            .map(|(&v, m)| f64::from(v) - m)
            .collect(),
        None => m.row(i).iter().map(|&v| f64::from(v)).collect(),
    }
}

/// Nearest-rank `p`-th percentile of `d` (`p` in `(0, 100]`), using `scratch` as a buffer.
fn percentile(d: &[f64], p: f64, scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend_from_slice(d);
    let rank = (((p / 100.0) * (d.len() - 1) as f64).round() as usize).min(d.len() - 1);
    *scratch.select_nth_unstable_by(rank, f64::total_cmp).1
}

impl Objective {
    /// Precomputes the scalars. `centred` chooses centred (translation on) or raw vectors.
    pub fn new(
        q: &Matrix,
        k: &Matrix,
        pairs: &PairSet,
        centred: bool,
        near_percentile: f64,
        scope: NearScope,
    ) -> Self {
        let (mq, mk) = (centroid(q), centroid(k));
        let (sq, sk) = if centred {
            (Some(mq.as_slice()), Some(mk.as_slice()))
        } else {
            (None, None)
        };
        let n = pairs.len();
        let mut groups = Vec::with_capacity(pairs.groups.len());
        let (mut b, mut g, mut logit) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        // Key rows are revisited by many queries: convert them once.
        let kc: Vec<Vec<f64>> = (0..k.rows()).map(|j| row_f64(k, j, sk)).collect();
        let kraw: Vec<Vec<f64>> = if centred {
            (0..k.rows()).map(|j| row_f64(k, j, None)).collect()
        } else {
            Vec::new()
        };
        let kb: Vec<f64> = kc.iter().map(|r| dot(r, r)).collect();
        for &(qi, s, e) in &pairs.groups {
            let qc = row_f64(q, qi as usize, sq);
            let qraw = if centred {
                row_f64(q, qi as usize, None)
            } else {
                Vec::new()
            };
            groups.push((dot(&qc, &qc), b.len(), b.len() + (e - s) as usize));
            for &kj in &pairs.keys[s as usize..e as usize] {
                let kj = kj as usize;
                b.push(kb[kj]);
                let gij = dot(&qc, &kc[kj]);
                g.push(gij);
                logit.push(if centred { dot(&qraw, &kraw[kj]) } else { gij });
            }
        }
        Self {
            groups,
            b,
            g,
            logit,
            near_percentile,
            scope,
        }
    }

    /// Query-key Euclidean distances at scale `c = exp(ln_c)`, in pair order.
    pub fn distances(&self, ln_c: f64) -> Vec<f64> {
        let c2 = (2.0 * ln_c).exp();
        let mut d = Vec::with_capacity(self.b.len());
        for &(a, s, e) in &self.groups {
            let ca = c2 * a;
            d.extend(
                self.b[s..e]
                    .iter()
                    .zip(&self.g[s..e])
                    .map(|(&b, &g)| (ca + b / c2 - 2.0 * g).max(0.0).sqrt()),
            );
        }
        d
    }

    /// The distance-weighted correlation at `c = exp(ln_c)` (see the crate docs); 0 where undefined.
    pub fn eval(&self, ln_c: f64) -> f64 {
        let d = self.distances(ln_c);
        if d.is_empty() {
            return 0.0;
        }
        let mut scratch = Vec::new();
        let head_t = match self.scope {
            NearScope::Head => Some(percentile(&d, self.near_percentile, &mut scratch)),
            NearScope::Query => None,
        };
        let mut w = Vec::new();
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for &(_, s, e) in &self.groups {
            if e - s < 3 {
                continue;
            }
            let dq = &d[s..e];
            let t = head_t.unwrap_or_else(|| percentile(dq, self.near_percentile, &mut scratch));
            w.clear();
            w.extend(
                dq.iter()
                    .map(|&di| if di < t { (t - di) * (t - di) } else { 0.0 }),
            );
            let r = weighted_pearson(dq, &self.logit[s..e], &w);
            if !r.is_finite() {
                continue;
            }
            // Per-query scope: plain mean over queries. Head scope: each query weighs its total
            // weight, so a query entering or leaving the near set does so continuously.
            let wq = match self.scope {
                NearScope::Query => 1.0,
                NearScope::Head => w.iter().sum::<f64>(),
            };
            num += wq * r;
            den += wq;
        }
        if den > 0.0 { num / den } else { 0.0 }
    }

    /// Minimizes [`Self::eval`] over `ln c` in `[lo, hi]`: a coarse scan brackets the best grid
    /// point, golden-section search refines inside the bracket, giving `(x*, f*)`. Then the most
    /// balanced scale that is as good up to `flat`, i.e. the `ln c` closest to 0 between 0 (clamped
    /// to the range) and `x*` with `eval <= f* + flat`, is returned as `(ln c, value)`: a flat tail
    /// (the objective tends to a constant as `c -> 0` or `c -> inf`) does not drive `c` to the
    /// search bound, and a head that cannot be improved by more than `flat` keeps `c = 1`.
    pub fn minimize(&self, lo: f64, hi: f64, flat: f64) -> (f64, f64) {
        let (xs, fs) = self.minimize_strict(lo, hi);
        let x0 = 0f64.clamp(lo, hi);
        let f0 = self.eval(x0);
        if f0 <= fs + flat {
            return (x0, f0);
        }
        // Walk from x0 towards x*: the first of 48 grid points within `flat` of f*, then bisect
        // between it and its predecessor (which is not within `flat`).
        const STEPS: usize = 48;
        let at = |k: usize| x0 + (xs - x0) * k as f64 / STEPS as f64;
        let Some(k) = (1..=STEPS).find(|&k| self.eval(at(k)) <= fs + flat) else {
            return (xs, fs);
        };
        let (mut out, mut inn) = (at(k - 1), at(k));
        while (inn - out).abs() > 1e-4 {
            let mid = 0.5 * (out + inn);
            if self.eval(mid) <= fs + flat {
                inn = mid;
            } else {
                out = mid;
            }
        }
        (inn, self.eval(inn))
    }

    /// The plain minimizer of [`Self::minimize`] (no flatness rule).
    fn minimize_strict(&self, lo: f64, hi: f64) -> (f64, f64) {
        const GRID: usize = 13;
        const TOL: f64 = 1e-4;
        let step = (hi - lo) / (GRID - 1) as f64;
        let grid: Vec<(f64, f64)> = (0..GRID)
            .map(|i| {
                let x = lo + step * i as f64;
                (x, self.eval(x))
            })
            .collect();
        // First minimum on ties: deterministic.
        let (kbest, &(xg, vg)) =
            grid.iter().enumerate().fold(
                (0, &grid[0]),
                |acc, (i, p)| if p.1 < acc.1.1 { (i, p) } else { acc },
            );
        let mut a = grid[kbest.saturating_sub(1)].0;
        let mut b = grid[(kbest + 1).min(GRID - 1)].0;
        let inv_phi = (5f64.sqrt() - 1.0) / 2.0;
        let mut x1 = b - inv_phi * (b - a);
        let mut x2 = a + inv_phi * (b - a);
        let (mut f1, mut f2) = (self.eval(x1), self.eval(x2));
        while b - a > TOL {
            if f1 <= f2 {
                b = x2;
                x2 = x1;
                f2 = f1;
                x1 = b - inv_phi * (b - a);
                f1 = self.eval(x1);
            } else {
                a = x1;
                x1 = x2;
                f1 = f2;
                x2 = a + inv_phi * (b - a);
                f2 = self.eval(x2);
            }
        }
        let xm = 0.5 * (a + b);
        let fm = self.eval(xm);
        if fm <= vg { (xm, fm) } else { (xg, vg) }
    }
}
