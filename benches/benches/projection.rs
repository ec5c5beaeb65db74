//! Divan micro-benchmarks of the projection pipeline at small n (whole run well under a minute):
//! kNN (exact and NN-descent), PCA, t-SNE and UMAP on a seeded 64-dim Gaussian mixture.
//!
//! `cargo bench -p attnviz-benches --bench projection`

use std::sync::OnceLock;

use attn_project::{Pca, Tsne, Umap, approximate_knn, exact_knn};
use attn_types::{Matrix, Metric};
use attnviz_benches::{DIM, gaussian_mixture};

fn main() {
    divan::main();
}

/// One shared 2,000-point data set (generated once, outside the timings).
fn data() -> &'static Matrix {
    static DATA: OnceLock<Matrix> = OnceLock::new();
    DATA.get_or_init(|| gaussian_mixture(2_000, DIM, 10, 0).0)
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn knn_exact_2k() -> usize {
    exact_knn(data(), 15, Metric::Cosine).map_or(0, |g| g.indices.len())
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn knn_nndescent_2k() -> usize {
    approximate_knn(data(), 15, Metric::Cosine, 0).map_or(0, |g| g.indices.len())
}

#[divan::bench(args = [2, 3], sample_count = 5, sample_size = 1)]
fn pca_2k(dims: u8) -> usize {
    Pca::params()
        .dims(dims)
        .metric(Metric::Cosine)
        .check()
        .and_then(|p| p.fit(data()))
        .map_or(0, |e| e.coords.rows())
}

#[divan::bench(args = [2, 3], sample_count = 3, sample_size = 1)]
fn tsne_2k(dims: u8) -> usize {
    Tsne::params()
        .dims(dims)
        .check()
        .and_then(|p| p.fit(data()))
        .map_or(0, |e| e.coords.rows())
}

#[divan::bench(args = [2, 3], sample_count = 3, sample_size = 1)]
fn umap_2k(dims: u8) -> usize {
    Umap::params()
        .dims(dims)
        .check()
        .and_then(|p| p.fit(data()))
        .map_or(0, |e| e.coords.rows())
}
