//! Initial layouts of UMAP: spectral, PCA, random, rescaled as umap-learn does.

use attn_types::Matrix;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::graph::Csr;
use super::sgd::SplitMix64;

/// Rescales every column of the `n x dims` layout to `[0, scale]` (constant columns to 0).
pub(super) fn rescale(emb: &mut [f32], dims: usize, scale: f32) {
    for d in 0..dims {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for v in emb.iter().skip(d).step_by(dims) {
            lo = lo.min(*v);
            hi = hi.max(*v);
        }
        let span = hi - lo;
        let f = if span > 0.0 && span.is_finite() {
            scale / span
        } else {
            0.0
        };
        for v in emb.iter_mut().skip(d).step_by(dims) {
            *v = (*v - lo) * f;
        }
    }
}

/// Top-`dims` principal-component scores of `data`, or `None` if the eigen-decomposition is not finite.
pub(super) fn pca_layout(data: &Matrix, dims: usize) -> Option<Vec<f32>> {
    let (n, d) = data.shape();
    let mut mean = vec![0.0f64; d];
    for r in data.iter_rows() {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    // Fixed row chunks summed in order: the covariance does not depend on the thread count.
    const ROWS: usize = 512;
    let partials: Vec<Vec<f64>> = data
        .as_slice()
        .par_chunks(ROWS * d)
        .map(|block| {
            let mut cov = vec![0.0f64; d * d];
            let mut x = vec![0.0f64; d];
            for r in block.chunks_exact(d) {
                for (xi, (v, m)) in x.iter_mut().zip(r.iter().zip(&mean)) {
                    *xi = *v as f64 - m;
                }
                for a in 0..d {
                    let xa = x[a];
                    for b in a..d {
                        cov[a * d + b] += xa * x[b];
                    }
                }
            }
            cov
        })
        .collect();
    let mut cov = nalgebra::DMatrix::<f64>::zeros(d, d);
    for p in &partials {
        for a in 0..d {
            for b in a..d {
                cov[(a, b)] += p[a * d + b];
            }
        }
    }
    for a in 0..d {
        for b in 0..a {
            cov[(a, b)] = cov[(b, a)];
        }
    }
    let eig = nalgebra::SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&x, &y| eig.eigenvalues[y].total_cmp(&eig.eigenvalues[x]));
    let comps: Vec<Vec<f64>> = order
        .iter()
        .take(dims)
        .map(|&c| eig.eigenvectors.column(c).iter().copied().collect())
        .collect();
    let mut out = vec![0.0f32; n * dims];
    for (i, r) in data.iter_rows().enumerate() {
        for (c, comp) in comps.iter().enumerate() {
            let s: f64 = r
                .iter()
                .zip(&mean)
                .zip(comp)
                .map(|((v, m), w)| (*v as f64 - m) * w)
                .sum();
            out[i * dims + c] = s as f32;
        }
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

/// Spectral layout: eigenvectors 2..=dims+1 of `D^-1/2 W D^-1/2` (the smallest non-trivial ones of the
/// normalized Laplacian) by subspace iteration on `(I + D^-1/2 W D^-1/2) / 2`, whose spectrum lies in
/// `[0, 1]` so that the wanted eigenvectors dominate. The trivial eigenvector `D^1/2 1` is known and
/// projected out. Returns `None` when the graph has isolated points or the result is not finite.
pub(super) fn spectral_layout(g: &Csr, dims: usize, rng: &mut ChaCha8Rng) -> Option<Vec<f32>> {
    let n = g.n;
    const EXTRA: usize = 4; // oversampling: convergence rate depends on the gap to eigenvalue p+1
    let p = (dims + EXTRA).min(n.saturating_sub(1));
    if p < dims {
        return None;
    }
    let deg: Vec<f64> = (0..n)
        .map(|i| {
            g.values[g.indptr[i]..g.indptr[i + 1]]
                .iter()
                .map(|&w| w as f64)
                .sum()
        })
        .collect();
    if deg.iter().any(|&x| x <= 0.0) {
        return None;
    }
    let dinv: Vec<f64> = deg.iter().map(|x| 1.0 / x.sqrt()).collect();
    let mut v0: Vec<f64> = deg.iter().map(|x| x.sqrt()).collect();
    normalize(&mut v0);
    // Column-major n x p block.
    let mut x: Vec<f64> = (0..n * p).map(|_| rng.random_range(-1.0f64..1.0)).collect();
    let apply = |x: &[f64], y: &mut [f64]| {
        for c in 0..p {
            let xc = &x[c * n..(c + 1) * n];
            y[c * n..(c + 1) * n]
                .par_iter_mut()
                .enumerate()
                .for_each(|(i, yi)| {
                    let s: f64 = (g.indptr[i]..g.indptr[i + 1])
                        .map(|e| {
                            g.values[e] as f64
                                * dinv[g.indices[e] as usize]
                                * xc[g.indices[e] as usize]
                        })
                        .sum();
                    *yi = 0.5 * (xc[i] + dinv[i] * s);
                });
        }
    };
    orthonormalize(&mut x, n, p, &v0);
    let mut y = vec![0.0f64; n * p];
    let mut prev_ritz = vec![0.0f64; p];
    const MAX_ITERS: usize = 300;
    for it in 0..MAX_ITERS {
        apply(&x, &mut y);
        if it % 10 == 9 {
            // Rayleigh quotients x_c^T A x_c: stop once they no longer move.
            let ritz: Vec<f64> = (0..p)
                .map(|c| dot(&x[c * n..(c + 1) * n], &y[c * n..(c + 1) * n]))
                .collect();
            let moved = ritz
                .iter()
                .zip(&prev_ritz)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            prev_ritz = ritz;
            if moved < 1e-7 {
                std::mem::swap(&mut x, &mut y);
                orthonormalize(&mut x, n, p, &v0);
                break;
            }
        }
        std::mem::swap(&mut x, &mut y);
        orthonormalize(&mut x, n, p, &v0);
    }
    // Rayleigh-Ritz: rotate the subspace onto the eigenvectors of the projected p x p matrix.
    apply(&x, &mut y);
    let mut h = nalgebra::DMatrix::<f64>::zeros(p, p);
    for a in 0..p {
        for b in 0..p {
            h[(a, b)] = dot(&x[a * n..(a + 1) * n], &y[b * n..(b + 1) * n]);
        }
    }
    let h = (&h + h.transpose()) * 0.5;
    let eig = nalgebra::SymmetricEigen::new(h);
    let mut order: Vec<usize> = (0..p).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let mut out = vec![0.0f32; n * dims];
    for (c, &col) in order.iter().take(dims).enumerate() {
        let u = eig.eigenvectors.column(col);
        for i in 0..n {
            let s: f64 = (0..p).map(|q| x[q * n + i] * u[q]).sum();
            out[i * dims + c] = s as f32;
        }
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalize(v: &mut [f64]) -> f64 {
    let nrm = dot(v, v).sqrt();
    if nrm > 0.0 {
        v.iter_mut().for_each(|x| *x /= nrm);
    }
    nrm
}

/// Modified Gram-Schmidt on the columns of the column-major `n x p` block, orthogonal to `v0` too.
/// A column that vanishes is replaced by a deterministic pseudo-random one.
fn orthonormalize(x: &mut [f64], n: usize, p: usize, v0: &[f64]) {
    for c in 0..p {
        let (done, rest) = x.split_at_mut(c * n);
        let col = &mut rest[..n];
        for _pass in 0..2 {
            let s = dot(col, v0);
            col.iter_mut().zip(v0).for_each(|(a, b)| *a -= s * b);
            for q in 0..c {
                let prev = &done[q * n..(q + 1) * n];
                let s = dot(col, prev);
                col.iter_mut().zip(prev).for_each(|(a, b)| *a -= s * b);
            }
        }
        if normalize(col) < 1e-12 {
            let mut r = SplitMix64::for_vertex(0xC01, c as u64, 0);
            col.iter_mut()
                .for_each(|v| *v = (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5);
            let s = dot(col, v0);
            col.iter_mut().zip(v0).for_each(|(a, b)| *a -= s * b);
            normalize(col);
        }
    }
}
