//! Input-space affinities: per-point Gaussian bandwidths calibrated to a perplexity on the kNN
//! graph, then the symmetric joint distribution `P = (P_{j|i} + P_{i|j}) / 2n` in CSR form.

use rayon::prelude::*;

use crate::KnnGraph;

/// Symmetric sparse joint probabilities, summing to 1. Row `i` lists its non-zero columns in
/// ascending order.
#[derive(Debug, Clone)]
pub(crate) struct SparseP {
    pub offsets: Vec<usize>,
    pub cols: Vec<u32>,
    pub vals: Vec<f32>,
}

impl SparseP {
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.offsets[i], self.offsets[i + 1]);
        (&self.cols[s..e], &self.vals[s..e])
    }
}

/// Points per parallel task.
const CHUNK: usize = 256;
const MAX_STEPS: usize = 200;
const TOL: f64 = 1e-5;

/// Conditional probabilities `P_{j|i}` over the first `k` neighbours of each point, with `beta_i`
/// chosen by bisection so that the entropy equals `ln(perplexity)`. The kernel is
/// `exp(-beta d²)` on the graph's distances (cosine distance or Euclidean), shifted by the nearest
/// distance for numerical range. Points whose neighbours are all equidistant (duplicates, zero rows)
/// get uniform weights.
pub(crate) fn conditional(graph: &KnnGraph, k: usize, perplexity: f64) -> Vec<f32> {
    let n = graph.n;
    let target = perplexity.ln();
    let mut p = vec![0f32; n * k];
    p.par_chunks_mut(CHUNK * k)
        .enumerate()
        .for_each(|(c, out)| {
            let mut d2 = vec![0f64; k];
            let mut w = vec![0f64; k];
            for (o, row) in out.chunks_exact_mut(k).enumerate() {
                let i = c * CHUNK + o;
                let dist = &graph.neighbor_distances(i)[..k];
                for (t, &v) in d2.iter_mut().zip(dist) {
                    *t = (v as f64) * (v as f64);
                }
                let dmin = d2.iter().copied().fold(f64::INFINITY, f64::min);
                d2.iter_mut().for_each(|v| *v -= dmin);
                let (mut beta, mut lo, mut hi) = (1.0f64, 0.0f64, f64::INFINITY);
                let mut sum = 0.0;
                for _ in 0..MAX_STEPS {
                    sum = 0.0;
                    let mut wsum = 0.0;
                    for (wt, &dv) in w.iter_mut().zip(&d2) {
                        *wt = (-beta * dv).exp();
                        sum += *wt;
                        wsum += *wt * dv;
                    }
                    let h = sum.ln() + beta * wsum / sum;
                    if (h - target).abs() < TOL {
                        break;
                    }
                    if h > target {
                        lo = beta;
                        beta = if hi.is_finite() {
                            0.5 * (beta + hi)
                        } else {
                            beta * 2.0
                        };
                    } else {
                        hi = beta;
                        beta = 0.5 * (beta + lo);
                    }
                }
                for (r, wt) in row.iter_mut().zip(&w) {
                    *r = (wt / sum) as f32;
                }
            }
        });
    p
}

/// Symmetrizes conditional probabilities into a joint distribution: entries of row `i` are
/// `(P_{j|i} + P_{i|j}) / 2n`. The fill order is fixed and duplicates are merged in that order, so
/// the result does not depend on threads.
pub(crate) fn symmetrize(graph: &KnnGraph, k: usize, cond: &[f32]) -> SparseP {
    let n = graph.n;
    let mut counts = vec![0usize; n + 1];
    for i in 0..n {
        counts[i + 1] += k;
        for &j in &graph.neighbors(i)[..k] {
            counts[j as usize + 1] += 1;
        }
    }
    for i in 0..n {
        counts[i + 1] += counts[i];
    }
    let total = counts[n];
    let mut fill = counts.clone();
    let mut cols = vec![0u32; total];
    let mut vals = vec![0f32; total];
    for i in 0..n {
        for (s, &j) in graph.neighbors(i)[..k].iter().enumerate() {
            let v = cond[i * k + s];
            cols[fill[i]] = j;
            vals[fill[i]] = v;
            fill[i] += 1;
            let j = j as usize;
            cols[fill[j]] = i as u32;
            vals[fill[j]] = v;
            fill[j] += 1;
        }
    }
    // Sort and merge each row independently.
    let scale = 1.0 / (2.0 * n as f64);
    let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..n)
        .into_par_iter()
        .with_min_len(CHUNK)
        .map(|i| {
            let (s, e) = (counts[i], counts[i + 1]);
            let mut pairs: Vec<(u32, f32)> = cols[s..e]
                .iter()
                .copied()
                .zip(vals[s..e].iter().copied())
                .collect();
            pairs.sort_by_key(|p| p.0);
            let mut c = Vec::with_capacity(pairs.len());
            let mut v: Vec<f32> = Vec::with_capacity(pairs.len());
            for (j, p) in pairs {
                if c.last() == Some(&j) {
                    if let Some(last) = v.last_mut() {
                        *last += p;
                    }
                } else {
                    c.push(j);
                    v.push(p);
                }
            }
            v.iter_mut().for_each(|x| *x = (*x as f64 * scale) as f32);
            (c, v)
        })
        .collect();
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0);
    let mut out_cols = Vec::with_capacity(total);
    let mut out_vals = Vec::with_capacity(total);
    for (c, v) in rows {
        out_cols.extend_from_slice(&c);
        out_vals.extend_from_slice(&v);
        offsets.push(out_cols.len());
    }
    SparseP {
        offsets,
        cols: out_cols,
        vals: out_vals,
    }
}

/// `(1 - w) P + w P_att`, with `P_att` the symmetric attention graph of `edges` normalized to sum
/// 1 (each edge's weight on both of its entries, divided by twice the sum of all weights). Both
/// inputs have sorted rows; each output row is their merge, summed in f64 and rounded once, so the
/// result does not depend on threads.
pub(crate) fn mix_attention(p: &SparseP, edges: &crate::AttentionEdges, w: f64) -> SparseP {
    let n = p.offsets.len() - 1;
    let total: f64 = edges.joint_edges().map(|(_, _, a)| a as f64).sum();
    let (a_off, a_cols, a_vals) = edges.symmetric_csr(w / (2.0 * total));
    let keep = 1.0 - w;
    let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..n)
        .into_par_iter()
        .with_min_len(CHUNK)
        .map(|i| {
            let (pc, pv) = p.row(i);
            let (ac, av) = (
                &a_cols[a_off[i]..a_off[i + 1]],
                &a_vals[a_off[i]..a_off[i + 1]],
            );
            let mut c = Vec::with_capacity(pc.len() + ac.len());
            let mut v = Vec::with_capacity(pc.len() + ac.len());
            let (mut s, mut t) = (0, 0);
            while s < pc.len() || t < ac.len() {
                let next_p = pc.get(s).copied().unwrap_or(u32::MAX);
                let next_a = ac.get(t).copied().unwrap_or(u32::MAX);
                let mut x = 0f64;
                let j = next_p.min(next_a);
                if next_p == j {
                    x += keep * pv[s] as f64;
                    s += 1;
                }
                if next_a == j {
                    x += av[t];
                    t += 1;
                }
                c.push(j);
                v.push(x as f32);
            }
            (c, v)
        })
        .collect();
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0);
    let total_len = rows.iter().map(|r| r.0.len()).sum();
    let mut cols = Vec::with_capacity(total_len);
    let mut vals = Vec::with_capacity(total_len);
    for (c, v) in rows {
        cols.extend_from_slice(&c);
        vals.extend_from_slice(&v);
        offsets.push(cols.len());
    }
    SparseP {
        offsets,
        cols,
        vals,
    }
}
