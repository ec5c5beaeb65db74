//! The distance-weighted correlation and its 1-D search over `ln c`.

use attn_types::Matrix;

use crate::pairs::PairSet;
use crate::stats::weighted_pearson;

/// Per-pair scalars from which the query-key distance at any scale `c` follows in O(1):
/// `d^2(c) = c^2 a + b / c^2 - 2 g`, with `a = |q~|^2`, `b = |k~|^2`, `g = q~ . k~`, where `q~`, `k~`
/// are the vectors centred on their own centroids (translation on) or the raw vectors (off).
pub(crate) struct Objective {
    a: Vec<f64>,
    b: Vec<f64>,
    g: Vec<f64>,
    /// Per-query centred logits `s_ij - mean_j s_ij`: what softmax actually sees.
    logit: Vec<f64>,
    near_percentile: f64,
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
        Some(s) => m.row(i).iter().zip(s).map(|(&v, m)| f64::from(v) - m).collect(),
        None => m.row(i).iter().map(|&v| f64::from(v)).collect(),
    }
}

impl Objective {
    /// Precomputes the per-pair scalars. `centred` chooses centred (translation on) or raw vectors.
    pub fn new(q: &Matrix, k: &Matrix, pairs: &PairSet, centred: bool, near_percentile: f64) -> Self {
        let (mq, mk) = (centroid(q), centroid(k));
        let (sq, sk) = if centred {
            (Some(mq.as_slice()), Some(mk.as_slice()))
        } else {
            (None, None)
        };
        let n = pairs.len();
        let (mut a, mut b, mut g, mut logit) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        // Key rows are revisited by many queries: centre them once.
        let kc: Vec<Vec<f64>> = (0..k.rows()).map(|j| row_f64(k, j, sk)).collect();
        let kraw: Vec<Vec<f64>> = (0..k.rows()).map(|j| row_f64(k, j, None)).collect();
        let kb: Vec<f64> = kc.iter().map(|r| dot(r, r)).collect();
        for &(qi, s, e) in &pairs.groups {
            let qc = row_f64(q, qi as usize, sq);
            let qraw = row_f64(q, qi as usize, None);
            let qa = dot(&qc, &qc);
            let first = logit.len();
            for &kj in &pairs.keys[s as usize..e as usize] {
                let kj = kj as usize;
                a.push(qa);
                b.push(kb[kj]);
                g.push(dot(&qc, &kc[kj]));
                logit.push(dot(&qraw, &kraw[kj]));
            }
            let mean = logit[first..].iter().sum::<f64>() / (logit.len() - first) as f64;
            logit[first..].iter_mut().for_each(|v| *v -= mean);
        }
        Self {
            a,
            b,
            g,
            logit,
            near_percentile,
        }
    }

    /// Query-key Euclidean distances at scale `c = exp(ln_c)`.
    pub fn distances(&self, ln_c: f64) -> Vec<f64> {
        let c2 = (2.0 * ln_c).exp();
        self.a
            .iter()
            .zip(&self.b)
            .zip(&self.g)
            .map(|((&a, &b), &g)| (c2 * a + b / c2 - 2.0 * g).max(0.0).sqrt())
            .collect()
    }

    /// The distance-weighted correlation at `c = exp(ln_c)` (see the crate docs); 0 where undefined.
    pub fn eval(&self, ln_c: f64) -> f64 {
        let d = self.distances(ln_c);
        if d.is_empty() {
            return 0.0;
        }
        let mut scratch = d.clone();
        let rank = ((self.near_percentile / 100.0) * (d.len() - 1) as f64).round() as usize;
        let rank = rank.min(d.len() - 1);
        let (_, t, _) = scratch.select_nth_unstable_by(rank, f64::total_cmp);
        let t = *t;
        // Reuse the scratch buffer for the weights.
        for (w, &di) in scratch.iter_mut().zip(&d) {
            *w = if di < t { (t - di) * (t - di) } else { 0.0 };
        }
        let r = weighted_pearson(&d, &self.logit, &scratch);
        if r.is_finite() { r } else { 0.0 }
    }

    /// Minimizes [`Self::eval`] over `ln c` in `[lo, hi]`: a coarse scan brackets the best grid
    /// point, golden-section search refines inside the bracket. Returns `(ln c, value)`. When the
    /// optimum is no better than `c = 1` (and 1 is in range), returns `c = 1`: nothing to gain.
    pub fn minimize(&self, lo: f64, hi: f64) -> (f64, f64) {
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
        let (kbest, &(xg, vg)) = grid
            .iter()
            .enumerate()
            .fold((0, &grid[0]), |acc, (i, p)| if p.1 < acc.1.1 { (i, p) } else { acc });
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
        let (mut x, mut f) = if fm <= vg { (xm, fm) } else { (xg, vg) };
        if lo <= 0.0 && 0.0 <= hi {
            let f0 = self.eval(0.0);
            if f0 <= f + 1e-9 {
                (x, f) = (0.0, f0);
            }
        }
        (x, f)
    }
}
