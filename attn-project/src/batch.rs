//! Fitting many point sets (one per attention head) with one method.

use std::sync::atomic::{AtomicUsize, Ordering};

use attn_types::Matrix;
use rayon::prelude::*;

use crate::pca::PcaValidParams;
use crate::tsne::TsneValidParams;
use crate::umap::UmapValidParams;
use crate::{Embedding, ProjectError};

/// A validated projection method, ready to fit.
#[derive(Debug, Clone)]
pub enum Projector {
    /// t-SNE.
    Tsne(TsneValidParams),
    /// Principal component analysis.
    Pca(PcaValidParams),
    /// UMAP.
    Umap(UmapValidParams),
}

impl Projector {
    /// Fits one point set.
    pub fn fit(&self, data: &Matrix) -> Result<Embedding, ProjectError> {
        match self {
            Projector::Tsne(p) => p.fit(data),
            Projector::Pca(p) => p.fit(data),
            Projector::Umap(p) => p.fit(data),
        }
    }
}

/// Fits every input in parallel (rayon, across inputs; each fit is itself parallel) and returns the
/// results in input order. `progress` is called with the number of finished fits after each one.
/// Every result is bit-identical to fitting that input alone.
pub fn project_batch(
    projector: &Projector,
    inputs: &[Matrix],
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<Result<Embedding, ProjectError>> {
    let done = AtomicUsize::new(0);
    inputs
        .par_iter()
        .with_max_len(1)
        .map(|m| {
            let r = projector.fit(m);
            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            r
        })
        .collect()
}
