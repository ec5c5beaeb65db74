//! Small numeric helpers shared by the modules: input validation, SIMD-friendly dot products,
//! deterministic hashing.

use attn_types::{Matrix, Metric};

use crate::ProjectError;

/// Largest accepted input magnitude: squared distances of such values still fit in f32.
pub(crate) const MAX_ABS_VALUE: f32 = 1e15;

/// Checks that `data` can be projected: at least 2 rows, at least 1 column, all values finite and
/// at most [`MAX_ABS_VALUE`] in magnitude.
pub(crate) fn check_data(data: &Matrix) -> Result<(), ProjectError> {
    let (n, d) = data.shape();
    if n < 2 {
        return Err(ProjectError::InvalidInput(format!(
            "need at least 2 points, got {n}"
        )));
    }
    if d == 0 {
        return Err(ProjectError::InvalidInput(
            "points have 0 dimensions".into(),
        ));
    }
    for (i, row) in data.iter_rows().enumerate() {
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(ProjectError::InvalidInput(format!(
                "row {i} has a non-finite value ({}) in column {j}",
                row[j]
            )));
        }
        // Squared distances are computed in f32; beyond this magnitude they would overflow.
        if let Some(j) = row.iter().position(|v| v.abs() > MAX_ABS_VALUE) {
            return Err(ProjectError::InvalidInput(format!(
                "row {i} has a value of magnitude above {MAX_ABS_VALUE:e} ({}) in column {j}",
                row[j]
            )));
        }
    }
    Ok(())
}

/// Sum of `term(a[i], b[i])` with 8 independent accumulators so that LLVM vectorizes it without
/// fast-math (the summation order is fixed, so results do not depend on threads).
#[inline(always)]
fn sum_lanes(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += term(x[l], y[l]);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += term(*x, *y);
    }
    s
}

/// Dot product (see [`sum_lanes`]).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    sum_lanes(a, b, |x, y| x * y)
}

/// Squared Euclidean distance (see [`sum_lanes`]).
#[inline]
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    sum_lanes(a, b, |x, y| (x - y) * (x - y))
}

/// Row-major copy of `data` prepared for `metric`: rows L2-normalized for cosine (zero rows stay
/// zero, so they are at cosine distance exactly 1 from every point), unchanged for Euclidean.
pub(crate) fn prepare_rows(data: &Matrix, metric: Metric) -> Vec<f32> {
    let mut out = data.as_slice().to_vec();
    if metric == Metric::Cosine {
        let d = data.cols().max(1);
        for row in out.chunks_exact_mut(d) {
            let norm = dot(row, row).sqrt();
            if norm > 0.0 {
                let inv = 1.0 / norm;
                row.iter_mut().for_each(|v| *v *= inv);
            }
        }
    }
    out
}

/// Distance between two prepared rows in metric units (`1 - cos`, clamped at 0, or Euclidean).
#[inline]
pub(crate) fn metric_dist(a: &[f32], b: &[f32], metric: Metric) -> f32 {
    match metric {
        Metric::Cosine => (1.0 - dot(a, b)).max(0.0),
        Metric::Euclidean => sq_dist(a, b).sqrt(),
    }
}

/// SplitMix64 finalizer: a cheap, well-mixed hash used for seeded per-item randomness that does not
/// depend on the order items are processed in.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Hash of a seed and up to three integers.
#[inline]
pub(crate) fn hash4(seed: u64, a: u64, b: u64, c: u64) -> u64 {
    mix64(mix64(mix64(mix64(seed) ^ a) ^ b) ^ c)
}
