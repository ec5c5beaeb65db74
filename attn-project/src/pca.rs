//! Exact principal component analysis to 2 or 3 dimensions.
//!
//! The `d x d` covariance is accumulated in f64 (parallel over fixed row chunks, summed in chunk
//! order) and diagonalized with nalgebra's symmetric eigen-solver. Cost O(n d² + d³); d is a head
//! dimension (32-128), so this takes milliseconds.

use std::collections::BTreeMap;

use attn_types::{Matrix, Metric, ProjectionMethod, ProjectionSpec};
use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::util::{check_data, prepare_rows};
use crate::{Embedding, ProjectError};

/// Entry point of the PCA builder: `Pca::params().dims(2).check()?.fit(&data)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pca;

impl Pca {
    /// Default parameters: 2 dimensions, Euclidean (plain PCA).
    pub fn params() -> PcaParams {
        PcaParams {
            dims: 2,
            metric: Metric::Euclidean,
        }
    }
}

/// Unchecked PCA parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PcaParams {
    dims: u8,
    metric: Metric,
}

/// Validated PCA parameters; see [`PcaValidParams::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct PcaValidParams {
    dims: u8,
    metric: Metric,
}

impl PcaParams {
    /// Output dimensions, 2 or 3 (default 2).
    pub fn dims(mut self, dims: u8) -> Self {
        self.dims = dims;
        self
    }

    /// `Euclidean` (default) is plain PCA; `Cosine` L2-normalizes every row first (zero rows stay
    /// zero), i.e. PCA of the directions, matching what the cosine metric sees.
    pub fn metric(mut self, metric: Metric) -> Self {
        self.metric = metric;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<PcaValidParams, ProjectError> {
        if !(2..=3).contains(&self.dims) {
            return Err(ProjectError::InvalidParam {
                name: "dims",
                reason: format!("must be 2 or 3, got {}", self.dims),
            });
        }
        Ok(PcaValidParams {
            dims: self.dims,
            metric: self.metric,
        })
    }
}

/// Rows per parallel chunk of the covariance accumulation (fixed, so sums do not depend on threads).
const COV_CHUNK: usize = 512;

/// Principal axes of `rows` (`n x d`, row-major): `(mean, axes (dims x d, row-major), top
/// eigenvalues, total variance)`. Axis signs: the largest-magnitude component is positive.
pub(crate) fn principal_axes(
    rows: &[f32],
    n: usize,
    d: usize,
    dims: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, f64) {
    let mean: Vec<f64> = {
        let partial: Vec<Vec<f64>> = rows
            .par_chunks(COV_CHUNK * d)
            .map(|c| {
                let mut s = vec![0f64; d];
                for r in c.chunks_exact(d) {
                    s.iter_mut().zip(r).for_each(|(a, &v)| *a += v as f64);
                }
                s
            })
            .collect();
        let mut s = vec![0f64; d];
        for p in partial {
            s.iter_mut().zip(p).for_each(|(a, v)| *a += v);
        }
        s.into_iter().map(|v| v / n as f64).collect()
    };
    let partial: Vec<Vec<f64>> = rows
        .par_chunks(COV_CHUNK * d)
        .map(|c| {
            let mut cov = vec![0f64; d * d];
            let mut x = vec![0f64; d];
            for r in c.chunks_exact(d) {
                x.iter_mut()
                    .zip(r)
                    .zip(&mean)
                    .for_each(|((o, &v), m)| *o = v as f64 - m);
                for a in 0..d {
                    let xa = x[a];
                    // Upper triangle only; mirrored below.
                    for (o, &xb) in cov[a * d + a..(a + 1) * d].iter_mut().zip(&x[a..]) {
                        *o += xa * xb;
                    }
                }
            }
            cov
        })
        .collect();
    let mut cov = vec![0f64; d * d];
    for p in partial {
        cov.iter_mut().zip(p).for_each(|(a, v)| *a += v);
    }
    let denom = (n.max(2) - 1) as f64;
    let m = DMatrix::from_fn(d, d, |a, b| {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        cov[lo * d + hi] / denom
    });
    let eig = m.symmetric_eigen();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| {
        eig.eigenvalues[b]
            .total_cmp(&eig.eigenvalues[a])
            .then(a.cmp(&b))
    });
    let total: f64 = eig.eigenvalues.iter().map(|v| v.max(0.0)).sum();
    let mut axes = vec![0f64; dims * d];
    let mut values = Vec::with_capacity(dims);
    for (c, &e) in order.iter().take(dims).enumerate() {
        let v = eig.eigenvectors.column(e);
        let mut best = 0;
        for t in 1..d {
            if v[t].abs() > v[best].abs() {
                best = t;
            }
        }
        let sign = if v[best] < 0.0 { -1.0 } else { 1.0 };
        for t in 0..d {
            axes[c * d + t] = sign * v[t];
        }
        values.push(eig.eigenvalues[e].max(0.0));
    }
    (mean, axes, values, total)
}

/// Projects `rows` onto `axes` after centring: `n x dims` coordinates.
pub(crate) fn project_rows(
    rows: &[f32],
    d: usize,
    mean: &[f64],
    axes: &[f64],
    dims: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; rows.len() / d * dims];
    out.par_chunks_mut(COV_CHUNK * dims)
        .zip(rows.par_chunks(COV_CHUNK * d))
        .for_each(|(o, r)| {
            for (orow, row) in o.chunks_exact_mut(dims).zip(r.chunks_exact(d)) {
                for (c, ov) in orow.iter_mut().enumerate() {
                    let ax = &axes[c * d..(c + 1) * d];
                    *ov = row
                        .iter()
                        .zip(mean)
                        .zip(ax)
                        .map(|((&v, m), a)| (v as f64 - m) * a)
                        .sum::<f64>() as f32;
                }
            }
        });
    out
}

impl PcaValidParams {
    /// Output dimensions.
    pub fn dims(&self) -> u8 {
        self.dims
    }

    /// Fits PCA. The embedding's `spec.params` holds `explained_variance_ratio_0`,
    /// `explained_variance_ratio_1` (and `_2` in 3D): each component's share of the total variance
    /// (all 0 when every point is identical, in which case all coordinates are 0). `objective` is
    /// `None`. Fails on fewer than 2 points, non-finite values, or `dims` above the input dimension.
    pub fn fit(&self, data: &Matrix) -> Result<Embedding, ProjectError> {
        Ok(self.fit_with_variance(data)?.0)
    }

    /// Like [`Self::fit`], also returning the explained-variance ratios.
    pub fn fit_with_variance(&self, data: &Matrix) -> Result<(Embedding, Vec<f32>), ProjectError> {
        check_data(data)?;
        let (n, d) = data.shape();
        let dims = self.dims as usize;
        if dims > d {
            return Err(ProjectError::InvalidParam {
                name: "dims",
                reason: format!("{dims} output dimensions exceed the {d} input dimensions"),
            });
        }
        let rows = prepare_rows(data, self.metric);
        let (mean, axes, values, total) = principal_axes(&rows, n, d, dims);
        let coords = project_rows(&rows, d, &mean, &axes, dims);
        let ratios: Vec<f32> = values
            .iter()
            .map(|&v| if total > 0.0 { (v / total) as f32 } else { 0.0 })
            .collect();
        let mut params = BTreeMap::new();
        for (i, r) in ratios.iter().enumerate() {
            params.insert(format!("explained_variance_ratio_{i}"), *r as f64);
        }
        let coords = Matrix::from_vec(n, dims, coords)
            .map_err(|e| ProjectError::InvalidInput(format!("internal shape error: {e}")))?;
        let spec = ProjectionSpec {
            method: ProjectionMethod::Pca,
            dims: self.dims,
            metric: self.metric,
            seed: 0,
            params,
        };
        Ok((
            Embedding {
                coords,
                objective: None,
                spec,
            },
            ratios,
        ))
    }
}
