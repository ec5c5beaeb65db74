#![doc = include_str!("../README.md")]

pub mod attention;
pub mod batch;
pub mod ceiling;
pub mod error;
pub mod fidelity;
mod interrupt;
pub mod knn;
pub mod metrics;
pub mod pca;
#[cfg(test)]
mod test_support;
pub mod tsne;
pub mod umap;
mod util;

pub use attention::kl::{AttentionKernel, LayoutKernel, attention_kl};
pub use attention::{ATTENTION_MIN_WEIGHT, AttentionEdges, attention_edges};
pub use batch::{Projector, project_batch};
pub use ceiling::{AttentionCeiling, Ceiling, CeilingParams, CeilingValidParams};
pub use error::ProjectError;
// The keys a query may attend to are the shared vocabulary's (normalization weighs the same pairs).
pub use attn_types::AttendedKeys;
pub use fidelity::{FIDELITY_GLOBAL_SAMPLE, FIDELITY_MIN_KEYS, Fidelity, FidelitySpace, fidelity};
pub use interrupt::Interrupt;
pub use knn::{KnnGraph, approximate_knn, exact_knn, knn, knn_recall};
pub use metrics::{
    continuity, distance_spearman, knn_recall_at_k, quality, quality_sampled, trustworthiness,
};
pub use pca::{Pca, PcaParams, PcaValidParams};
pub use tsne::{Repulsion, Tsne, TsneInit, TsneParams, TsneValidParams};
pub use umap::{Umap, UmapInit, UmapParams, UmapValidParams};

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

/// Version of this crate, recorded in dataset provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
