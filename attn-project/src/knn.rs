//! k-nearest-neighbour graphs shared by t-SNE and UMAP.

use attn_types::{Matrix, Metric};

use crate::ProjectError;

/// The `k` nearest neighbours of every point, self excluded, sorted by ascending distance.
///
/// Neighbour `j` of point `i` is `indices[i * k + j]` at distance `distances[i * k + j]` (in the
/// graph's [`Metric`]: `1 - cos` for cosine, plain Euclidean distance for Euclidean).
#[derive(Debug, Clone, PartialEq)]
pub struct KnnGraph {
    /// Number of points.
    pub n: usize,
    /// Neighbours per point.
    pub k: usize,
    /// Metric the distances are in.
    pub metric: Metric,
    /// `n * k` neighbour indices.
    pub indices: Vec<u32>,
    /// `n * k` distances, ascending per point.
    pub distances: Vec<f32>,
}

impl KnnGraph {
    /// Neighbour indices of point `i`.
    pub fn neighbors(&self, i: usize) -> &[u32] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }

    /// Neighbour distances of point `i`.
    pub fn neighbor_distances(&self, i: usize) -> &[f32] {
        &self.distances[i * self.k..(i + 1) * self.k]
    }
}

/// Exact kNN by brute force (reference implementation; O(n^2 d)).
pub fn exact_knn(data: &Matrix, k: usize, metric: Metric) -> Result<KnnGraph, ProjectError> {
    let n = data.rows();
    if k == 0 || k >= n {
        return Err(ProjectError::InvalidParam {
            name: "k",
            reason: format!("must be in 1..{n} for {n} points, got {k}"),
        });
    }
    let norms = data.row_norms();
    let dist = |i: usize, j: usize| -> f32 {
        let (a, b) = (data.row(i), data.row(j));
        match metric {
            Metric::Euclidean => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt(),
            Metric::Cosine => {
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let denom = norms[i] * norms[j];
                if denom > 0.0 { (1.0 - dot / denom).max(0.0) } else { 1.0 }
            }
        }
    };
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    let mut row: Vec<(f32, u32)> = Vec::with_capacity(n);
    for i in 0..n {
        row.clear();
        row.extend((0..n).filter(|&j| j != i).map(|j| (dist(i, j), j as u32)));
        row.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        row[..k].sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(d, j) in &row[..k] {
            indices.push(j);
            distances.push(d);
        }
    }
    Ok(KnnGraph { n, k, metric, indices, distances })
}
