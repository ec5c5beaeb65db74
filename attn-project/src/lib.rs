//! Native PCA, t-SNE and UMAP in 2D and 3D, seeded and deterministic, with kNN graphs and projection
//! quality metrics.

pub mod error;
pub mod knn;
pub mod umap;

pub use error::ProjectError;
pub use knn::KnnGraph;

use attn_types::{Matrix, ProjectionSpec};

/// The result of fitting any projection method.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// `n x dims` output coordinates, one row per input row.
    pub coords: Matrix,
    /// Final value of the method's objective when it has one (KL divergence for t-SNE).
    pub objective: Option<f32>,
    /// Everything needed to reproduce the fit (method, dims, metric, seed, parameters).
    pub spec: ProjectionSpec,
}
