//! UMAP: uniform manifold approximation and projection (work in progress).
