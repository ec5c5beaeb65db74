//! The fuzzy graph of UMAP: smooth kNN memberships, their fuzzy union, attention edges mixed in,
//! and the sampling rates the SGD reads.

use rayon::prelude::*;

use crate::AttentionEdges;
use crate::knn::KnnGraph;

/// Symmetric sparse matrix in CSR form (both directions of every edge stored).
#[derive(Debug, Clone)]
pub(super) struct Csr {
    pub(super) n: usize,
    pub(super) indptr: Vec<usize>,
    pub(super) indices: Vec<u32>,
    pub(super) values: Vec<f32>,
}

/// The SGD's view of the fuzzy graph: CSR rows with per-edge sampling rate `w / w_max` (umap-learn's
/// `1 / epochs_per_sample`), edges too weak to be sampled once in `n_epochs` dropped. `w_max` is the
/// heaviest edge of the kNN graph, so attention edges may have rates above 1 (due several times per
/// epoch).
pub(super) struct SgdGraph {
    pub(super) indptr: Vec<usize>,
    pub(super) indices: Vec<u32>,
    pub(super) rate: Vec<f64>,
}

impl SgdGraph {
    pub(super) fn new(g: &Csr, n_epochs: usize, wmax: f32) -> Self {
        let cut = wmax / n_epochs as f32;
        let mut indptr = Vec::with_capacity(g.n + 1);
        let mut indices = Vec::with_capacity(g.indices.len());
        let mut rate = Vec::with_capacity(g.indices.len());
        indptr.push(0);
        for i in 0..g.n {
            for e in g.indptr[i]..g.indptr[i + 1] {
                let w = g.values[e];
                if w >= cut && w > 0.0 {
                    indices.push(g.indices[e]);
                    rate.push(w as f64 / wmax as f64);
                }
            }
            indptr.push(indices.len());
        }
        SgdGraph {
            indptr,
            indices,
            rate,
        }
    }
}

/// The largest edge weight of `g` (0 for an empty graph).
pub(super) fn max_weight(g: &Csr) -> f32 {
    g.values.iter().copied().fold(0.0f32, f32::max)
}

/// Per-point `(rho, sigma)` by umap-learn's smooth-kNN binary search, so that the membership strengths
/// of the `k` neighbours sum to `log2(n_neighbors)`.
fn smooth_knn(dists: &[f32], n_neighbors: usize, mean_all: f64) -> (f64, f64) {
    const TOL: f64 = 1e-5;
    const MIN_K_DIST_SCALE: f64 = 1e-3;
    let target = (n_neighbors as f64).log2();
    let rho = dists.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0) as f64;
    let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
    for _ in 0..64 {
        let psum: f64 = dists
            .iter()
            .map(|&d| {
                let d = d as f64 - rho;
                if d > 0.0 { (-d / mid).exp() } else { 1.0 }
            })
            .sum();
        if (psum - target).abs() < TOL {
            break;
        }
        if psum > target {
            hi = mid;
            mid = (lo + hi) / 2.0;
        } else {
            lo = mid;
            mid = if hi.is_infinite() {
                mid * 2.0
            } else {
                (lo + hi) / 2.0
            };
        }
    }
    // A floor on sigma keeps memberships from collapsing to 0 for points whose neighbours are all at
    // nearly the same distance (umap-learn's MIN_K_DIST_SCALE rule).
    let mean_i = dists.iter().map(|&d| d as f64).sum::<f64>() / dists.len().max(1) as f64;
    let floor = MIN_K_DIST_SCALE * if rho > 0.0 { mean_i } else { mean_all };
    (rho, mid.max(floor))
}

/// The fuzzy union `P + P^T - P o P^T` of the directed membership strengths of the first `k`
/// neighbours of every point.
pub(super) fn fuzzy_simplicial_set(graph: &KnnGraph, k: usize, n_neighbors: usize) -> Csr {
    let n = graph.n;
    let mean_all = {
        let s: f64 = (0..n)
            .flat_map(|i| graph.neighbor_distances(i)[..k].iter())
            .map(|&d| d as f64)
            .sum();
        s / (n * k).max(1) as f64
    };
    // (row, col, forward weight, backward weight); each directed edge contributes to both orientations.
    let directed: Vec<Vec<(u32, u32, f32)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let d = &graph.neighbor_distances(i)[..k];
            let idx = &graph.neighbors(i)[..k];
            let (rho, sigma) = smooth_knn(d, n_neighbors, mean_all);
            idx.iter()
                .zip(d)
                .filter(|(j, _)| **j as usize != i)
                .map(|(&j, &dist)| {
                    let x = dist as f64 - rho;
                    let w = if x <= 0.0 { 1.0 } else { (-x / sigma).exp() };
                    (i as u32, j, w as f32)
                })
                .collect()
        })
        .collect();
    let mut entries: Vec<(u32, u32, f32, f32)> = Vec::with_capacity(2 * n * k);
    for (i, j, w) in directed.into_iter().flatten() {
        entries.push((i, j, w, 0.0));
        entries.push((j, i, 0.0, w));
    }
    entries.par_sort_unstable_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    let mut indptr = vec![0usize; n + 1];
    let mut indices = Vec::with_capacity(entries.len() / 2 + n);
    let mut values = Vec::with_capacity(entries.len() / 2 + n);
    let mut s = 0;
    while s < entries.len() {
        let (r, c) = (entries[s].0, entries[s].1);
        let (mut fw, mut bw) = (0.0f32, 0.0f32);
        while s < entries.len() && entries[s].0 == r && entries[s].1 == c {
            fw = fw.max(entries[s].2);
            bw = bw.max(entries[s].3);
            s += 1;
        }
        let w = fw + bw - fw * bw;
        if w > 0.0 {
            indices.push(c);
            values.push(w);
            indptr[r as usize + 1] += 1;
        }
    }
    for i in 0..n {
        indptr[i + 1] += indptr[i];
    }
    Csr {
        n,
        indptr,
        indices,
        values,
    }
}

/// `(1 - w) W + w (S_W / S_att) W_att` (see [`UmapValidParams::fit_knn_with_attention`]): both
/// graphs have sorted rows; each output row is their merge, summed in f64 and rounded once.
pub(super) fn mix_attention(g: &Csr, edges: &AttentionEdges, w: f64) -> Csr {
    let n = g.n;
    let s_knn: f64 = g.values.iter().map(|&v| v as f64).sum();
    let s_att: f64 = 2.0 * edges.joint_edges().map(|(_, _, a)| a as f64).sum::<f64>();
    let (a_off, a_cols, a_vals) = edges.symmetric_csr(w * s_knn / s_att);
    let keep = 1.0 - w;
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0);
    let mut indices = Vec::with_capacity(g.indices.len() + a_cols.len());
    let mut values = Vec::with_capacity(g.indices.len() + a_cols.len());
    for i in 0..n {
        let (gc, gv) = (
            &g.indices[g.indptr[i]..g.indptr[i + 1]],
            &g.values[g.indptr[i]..g.indptr[i + 1]],
        );
        let (ac, av) = (
            &a_cols[a_off[i]..a_off[i + 1]],
            &a_vals[a_off[i]..a_off[i + 1]],
        );
        let (mut s, mut t) = (0, 0);
        while s < gc.len() || t < ac.len() {
            let next_g = gc.get(s).copied().unwrap_or(u32::MAX);
            let next_a = ac.get(t).copied().unwrap_or(u32::MAX);
            let j = next_g.min(next_a);
            let mut x = 0f64;
            if next_g == j {
                x += keep * gv[s] as f64;
                s += 1;
            }
            if next_a == j {
                x += av[t];
                t += 1;
            }
            indices.push(j);
            values.push(x as f32);
        }
        indptr.push(indices.len());
    }
    Csr {
        n,
        indptr,
        indices,
        values,
    }
}
