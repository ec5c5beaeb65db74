//! Fitting many point sets (one per attention head) with one method.

use std::sync::atomic::{AtomicUsize, Ordering};

use attn_types::Matrix;
use rayon::prelude::*;

use crate::pca::PcaValidParams;
use crate::tsne::TsneValidParams;
use crate::umap::UmapValidParams;
use crate::{AttentionEdges, Embedding, Interrupt, KnnGraph, ProjectError};

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

    /// How many kNN neighbours (self excluded) a fit of `n` points uses: `min(n - 1, floor(3 *
    /// perplexity))` for t-SNE, `n_neighbors - 1` for UMAP, `None` for PCA. Build one graph with
    /// the largest count over the projectors of a head and pass it to each [`Self::fit_knn`]: both
    /// methods read only the first neighbours they need, so the result equals their own fit
    /// whenever the graph is exact (up to [`crate::knn::EXACT_KNN_MAX_N`] points with
    /// [`crate::knn()`]).
    pub fn neighbors_for(&self, n: usize) -> Option<usize> {
        match self {
            Projector::Tsne(p) => Some(p.neighbors_for(n)),
            Projector::Pca(_) => None,
            Projector::Umap(p) => Some(p.n_neighbors() - 1),
        }
    }

    /// Fits one point set on a precomputed kNN graph of it (see [`Self::neighbors_for`]); PCA
    /// ignores the graph.
    pub fn fit_knn(&self, data: &Matrix, graph: &KnnGraph) -> Result<Embedding, ProjectError> {
        match self {
            Projector::Tsne(p) => p.fit_knn(data, graph),
            Projector::Pca(p) => p.fit(data),
            Projector::Umap(p) => p.fit_knn(data, graph),
        }
    }

    /// Attention-aware [`Self::fit_knn`] of a head's joint query/key set: t-SNE and UMAP mix the
    /// attention edges in with their `attention_weight` (see
    /// [`TsneValidParams::fit_knn_with_attention`], [`UmapValidParams::fit_knn_with_attention`]);
    /// PCA, a linear map of the input, ignores graph and edges. Fails if `edges` is not for
    /// `data.rows() / 2` tokens.
    pub fn fit_knn_with_attention(
        &self,
        data: &Matrix,
        graph: &KnnGraph,
        edges: &AttentionEdges,
    ) -> Result<Embedding, ProjectError> {
        match self {
            Projector::Tsne(p) => p.fit_knn_with_attention(data, graph, edges),
            Projector::Pca(p) => {
                edges.check_points(data.rows())?;
                p.fit(data)
            }
            Projector::Umap(p) => p.fit_knn_with_attention(data, graph, edges),
        }
    }

    /// Attention-aware [`Self::fit`]: builds the kNN graph the method needs, then
    /// [`Self::fit_knn_with_attention`]; PCA ignores the edges.
    pub fn fit_with_attention(
        &self,
        data: &Matrix,
        edges: &AttentionEdges,
    ) -> Result<Embedding, ProjectError> {
        match self {
            Projector::Tsne(p) => p.fit_with_attention(data, edges),
            Projector::Pca(p) => {
                edges.check_points(data.rows())?;
                p.fit(data)
            }
            Projector::Umap(p) => p.fit_with_attention(data, edges),
        }
    }

    /// The same projector, stopping its fits when `interrupt` is set ([`ProjectError::Interrupted`];
    /// PCA, one pass, finishes).
    pub fn with_interrupt(&self, interrupt: Interrupt) -> Projector {
        match self {
            Projector::Tsne(p) => Projector::Tsne(p.with_interrupt(interrupt)),
            Projector::Pca(p) => Projector::Pca(p.clone()),
            Projector::Umap(p) => Projector::Umap(p.with_interrupt(interrupt)),
        }
    }

    /// What stops this projector's fits (the default for PCA, which has none).
    pub fn interrupt(&self) -> Interrupt {
        match self {
            Projector::Tsne(p) => p.interrupt().clone(),
            Projector::Pca(_) => Interrupt::default(),
            Projector::Umap(p) => p.interrupt().clone(),
        }
    }

    /// The method this projector fits.
    pub fn method(&self) -> attn_types::ProjectionMethod {
        match self {
            Projector::Tsne(_) => attn_types::ProjectionMethod::Tsne,
            Projector::Pca(_) => attn_types::ProjectionMethod::Pca,
            Projector::Umap(_) => attn_types::ProjectionMethod::Umap,
        }
    }

    /// Output dimensions.
    pub fn dims(&self) -> u8 {
        match self {
            Projector::Tsne(p) => p.dims(),
            Projector::Pca(p) => p.dims(),
            Projector::Umap(p) => p.dims(),
        }
    }

    /// Whether the fit reads attention edges: an attention share or a per-query attention term
    /// above 0 (t-SNE and UMAP; PCA never does).
    pub fn uses_attention(&self) -> bool {
        match self {
            Projector::Tsne(p) => p.attention_weight() > 0.0 || p.attention_kl() > 0.0,
            Projector::Pca(_) => false,
            Projector::Umap(p) => p.attention_weight() > 0.0 || p.attention_kl() > 0.0,
        }
    }

    /// The attention share `w` of t-SNE and UMAP (`None` for PCA, which has none).
    pub fn attention_weight(&self) -> Option<f32> {
        match self {
            Projector::Tsne(p) => Some(p.attention_weight()),
            Projector::Pca(_) => None,
            Projector::Umap(p) => Some(p.attention_weight()),
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

#[cfg(test)]
mod tests {
    use attn_types::Metric;

    use super::*;
    use crate::attention::synthetic::head;
    use crate::{Pca, Tsne, Umap, knn};

    #[test]
    fn one_shared_graph_serves_every_method() {
        let h = head(300, false, 2);
        let joint = h.joint();
        let n = joint.rows();
        let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, false).unwrap();
        let tsne = Projector::Tsne(
            Tsne::params()
                .perplexity(10.0)
                .iterations(300)
                .attention_weight(0.2)
                .check()
                .unwrap(),
        );
        let umap = Projector::Umap(
            Umap::params()
                .n_epochs(Some(50))
                .attention_weight(0.1)
                .check()
                .unwrap(),
        );
        let pca = Projector::Pca(Pca::params().check().unwrap());
        assert_eq!(tsne.neighbors_for(n), Some(30));
        assert_eq!(tsne.neighbors_for(7), Some(6));
        assert_eq!(umap.neighbors_for(n), Some(14));
        assert_eq!(pca.neighbors_for(n), None);
        assert_eq!(tsne.attention_weight(), Some(0.2));
        assert_eq!(pca.attention_weight(), None);
        let k = [&tsne, &umap, &pca]
            .iter()
            .filter_map(|p| p.neighbors_for(n))
            .max()
            .unwrap();
        let graph = knn(&joint, k, Metric::Cosine, 0).unwrap();
        // An exact graph with extra neighbours gives each method its own fit.
        for p in [&tsne, &umap, &pca] {
            assert_eq!(p.fit_knn(&joint, &graph).unwrap(), p.fit(&joint).unwrap());
            assert_eq!(
                p.fit_knn_with_attention(&joint, &graph, &edges).unwrap(),
                p.fit_with_attention(&joint, &edges).unwrap()
            );
        }
        // PCA ignores the edges (but not a mismatch); the others use them.
        assert_eq!(
            pca.fit_with_attention(&joint, &edges).unwrap(),
            pca.fit(&joint).unwrap()
        );
        let wrong = AttentionEdges::default();
        assert!(pca.fit_with_attention(&joint, &wrong).is_err());
        for p in [&tsne, &umap] {
            let with = p.fit_knn_with_attention(&joint, &graph, &edges).unwrap();
            assert_ne!(with.coords, p.fit_knn(&joint, &graph).unwrap().coords);
            assert!(with.spec.params["attention_weight"] > 0.0);
        }
    }
}
