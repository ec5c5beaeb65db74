//! UMAP: uniform manifold approximation and projection (McInnes, Healy & Melville 2018), in 2D or 3D.
//!
//! The pipeline follows umap-learn 0.5:
//! 1. a kNN graph of the input (cosine or Euclidean);
//! 2. a fuzzy simplicial set: per point `rho` (distance to the nearest neighbour) and `sigma` (binary
//!    search so that `sum_j exp(-(d_j - rho) / sigma) = log2(n_neighbors)`), symmetrized with the fuzzy
//!    union `a + b - ab`;
//! 3. the low-dimensional curve `1 / (1 + a x^(2b))` fitted to `min_dist`/`spread` by least squares;
//! 4. an initial layout (spectral, PCA or random), then SGD with negative sampling, edges sampled in
//!    proportion to their weight, learning rate decayed linearly, gradients clipped at 4 (and each
//!    vertex's summed step per epoch at 8, see `MAX_EPOCH_STEP`).
//!
//! The SGD is **deterministic**: every epoch each vertex moves itself only, by the sum of its clipped
//! attractive and repulsive terms, all evaluated at the positions of the start of the epoch, with
//! negative samples drawn from a random stream seeded by `(seed, epoch, vertex)`. Vertices are therefore independent within an epoch and the
//! output is bit-identical for a seed whatever the number of threads. Because the fuzzy graph is
//! symmetric, each attraction `i <-> j` is applied once by `i` and once by `j`, each with twice the
//! step, which equals umap-learn's "move both endpoints of each directed edge" in expectation.
//!
//! `n_neighbors` counts the point itself, as in umap-learn: `n_neighbors = 15` uses the 14 nearest
//! other points.

use std::collections::BTreeMap;

use attn_types::{Matrix, Metric, ProjectionMethod, ProjectionSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::attention::kl::{AttentionKernel, KlTerm, LayoutKernel};
use crate::knn::KnnGraph;
use crate::{AttentionEdges, Embedding, Interrupt, ProjectError};

mod graph;
mod init;
mod sgd;

pub(crate) use sgd::fast_pow;

use graph::{Csr, SgdGraph, fuzzy_simplicial_set, max_weight, mix_attention};
use init::{pca_layout, rescale, spectral_layout};

/// Entry point of the UMAP builder: `Umap::params()...check()?.fit(&data)`.
#[derive(Debug, Clone, Copy)]
pub struct Umap;

impl Umap {
    /// Default parameters (umap-learn's defaults, cosine metric, PCA init, 2D, seed 0, attention
    /// weight [`DEFAULT_ATTENTION_WEIGHT`] for the attention-aware fits).
    pub fn params() -> UmapParams {
        UmapParams::default()
    }
}

/// Default [`UmapParams::attention_weight`]: the knee measured on synthetic heads (crate README,
/// "Attention-aware layouts"): hit@3 0.40 -> 0.66 (causal 0.67 -> 0.81) at a trustworthiness@10
/// cost of at most 0.006, where 0.2 cost up to 0.012.
pub const DEFAULT_ATTENTION_WEIGHT: f32 = 0.1;

/// Default [`UmapParams::attention_kl`]: 0, the term is off unless asked for (attn-pipeline sets
/// its own default from the MiniLM measurements).
pub const DEFAULT_ATTENTION_KL: f32 = 0.0;

/// How the layout is initialized before SGD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UmapInit {
    /// Eigenvectors of the normalized graph Laplacian (umap-learn's default). Falls back to PCA if the
    /// eigen-solver does not produce a finite layout. Not the default: on real query/key sets
    /// (all-MiniLM-L6-v2 heads, 11k points) it left outliers 10x farther out than the bulk of the
    /// layout, where PCA init gave a compact layout and equal or better trustworthiness.
    Spectral,
    /// The top principal components of the input (the default).
    #[default]
    Pca,
    /// Uniform random in `[-10, 10]` (the AttentionViz research code's choice).
    Random,
}

impl UmapInit {
    /// Numeric code recorded in [`ProjectionSpec::params`] (`init`): 0 spectral, 1 PCA, 2 random.
    pub fn code(self) -> f64 {
        match self {
            UmapInit::Spectral => 0.0,
            UmapInit::Pca => 1.0,
            UmapInit::Random => 2.0,
        }
    }
}

/// Unchecked UMAP hyperparameters; call [`UmapParams::check`] to validate.
#[derive(Debug, Clone, PartialEq)]
pub struct UmapParams {
    n_neighbors: usize,
    min_dist: f32,
    spread: f32,
    dims: usize,
    metric: Metric,
    seed: u64,
    n_epochs: Option<usize>,
    learning_rate: f32,
    negative_sample_rate: f32,
    repulsion_strength: f32,
    init: UmapInit,
    attention_weight: f32,
    attention_kl: f32,
    attention_kernel: AttentionKernel,
    interrupt: Interrupt,
}

impl Default for UmapParams {
    fn default() -> Self {
        Self {
            n_neighbors: 15,
            min_dist: 0.1,
            spread: 1.0,
            dims: 2,
            metric: Metric::Cosine,
            seed: 0,
            n_epochs: None,
            learning_rate: 1.0,
            negative_sample_rate: 5.0,
            repulsion_strength: 1.0,
            init: UmapInit::Pca,
            attention_weight: DEFAULT_ATTENTION_WEIGHT,
            attention_kl: DEFAULT_ATTENTION_KL,
            attention_kernel: AttentionKernel::Method,
            interrupt: Interrupt::default(),
        }
    }
}

impl UmapParams {
    /// Neighbourhood size, counting the point itself (default 15). Must be at least 2 and below the
    /// number of points.
    pub fn n_neighbors(mut self, k: usize) -> Self {
        self.n_neighbors = k;
        self
    }

    /// Minimum distance between embedded points (default 0.1); `0 <= min_dist <= spread`.
    pub fn min_dist(mut self, v: f32) -> Self {
        self.min_dist = v;
        self
    }

    /// Scale of the embedded clusters (default 1.0); positive.
    pub fn spread(mut self, v: f32) -> Self {
        self.spread = v;
        self
    }

    /// Output dimensions, 2 or 3 (default 2).
    pub fn dims(mut self, d: u8) -> Self {
        self.dims = d as usize;
        self
    }

    /// Input metric (default cosine, the paper's choice for queries and keys).
    pub fn metric(mut self, m: Metric) -> Self {
        self.metric = m;
        self
    }

    /// Random seed (default 0). The same seed gives bit-identical output on any thread count.
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }

    /// SGD epochs; `None` (default) means 500 for up to 10,000 points, else 200.
    pub fn n_epochs(mut self, e: Option<usize>) -> Self {
        self.n_epochs = e;
        self
    }

    /// Initial SGD learning rate, decayed linearly to 0 (default 1.0).
    pub fn learning_rate(mut self, v: f32) -> Self {
        self.learning_rate = v;
        self
    }

    /// Negative samples per positive sample (default 5).
    pub fn negative_sample_rate(mut self, v: f32) -> Self {
        self.negative_sample_rate = v;
        self
    }

    /// Weight of the repulsive term, umap-learn's `repulsion_strength` / gamma (default 1.0).
    pub fn repulsion_strength(mut self, v: f32) -> Self {
        self.repulsion_strength = v;
        self
    }

    /// Initial layout (default PCA).
    pub fn init(mut self, i: UmapInit) -> Self {
        self.init = i;
        self
    }

    /// Share `w` in `[0, 1)` of the attention graph in the fuzzy graph of the attention-aware fits
    /// ([`UmapValidParams::fit_knn_with_attention`]): `W = (1 - w) W_knn + w (S_knn / S_att)
    /// W_att`, see there; default [`DEFAULT_ATTENTION_WEIGHT`], 0 is plain UMAP. The plain fits
    /// ([`UmapValidParams::fit`], [`UmapValidParams::fit_knn`]) ignore it.
    pub fn attention_weight(mut self, w: f32) -> Self {
        self.attention_weight = w;
        self
    }

    /// Weight `lambda >= 0` of the per-query attention term of the attention-aware fits: every
    /// epoch each query and key also moves by `-lambda` times the gradient of `sum_i KL(A_i ||
    /// R_i)`, where `R_i` is the layout's softmax of query `i` over its attended keys under UMAP's
    /// curve (see [`crate::attention::kl`]), so that a query's own keys compete for it as in
    /// attention. Default [`DEFAULT_ATTENTION_KL`]; the plain fits ignore it. It works with or
    /// without [`Self::attention_weight`].
    pub fn attention_kl(mut self, lambda: f32) -> Self {
        self.attention_kl = lambda;
        self
    }

    /// The kernel of the attention term's softmax: UMAP's own curve (default) or a Gaussian.
    pub fn attention_kernel(mut self, kernel: AttentionKernel) -> Self {
        self.attention_kernel = kernel;
        self
    }

    /// A flag checked once per epoch: when set, the fit stops with [`ProjectError::Interrupted`]
    /// (default: never).
    pub fn interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = interrupt;
        self
    }

    /// Validates the parameters that do not depend on the data; the data-dependent ones
    /// (`n_neighbors < n`, finite input) are checked by `fit`.
    pub fn check(self) -> Result<UmapValidParams, ProjectError> {
        let bad =
            |name: &'static str, reason: String| Err(ProjectError::InvalidParam { name, reason });
        if self.n_neighbors < 2 {
            return bad(
                "n_neighbors",
                format!("must be at least 2, got {}", self.n_neighbors),
            );
        }
        if !(self.spread.is_finite() && self.spread > 0.0) {
            return bad(
                "spread",
                format!("must be finite and positive, got {}", self.spread),
            );
        }
        if !(self.min_dist.is_finite() && self.min_dist >= 0.0) {
            return bad(
                "min_dist",
                format!("must be finite and >= 0, got {}", self.min_dist),
            );
        }
        if self.min_dist > self.spread {
            return bad(
                "min_dist",
                format!(
                    "must not exceed spread ({}), got {}",
                    self.spread, self.min_dist
                ),
            );
        }
        if self.dims != 2 && self.dims != 3 {
            return bad("dims", format!("must be 2 or 3, got {}", self.dims));
        }
        if self.n_epochs == Some(0) {
            return bad("n_epochs", "must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                format!("must be finite and positive, got {}", self.learning_rate),
            );
        }
        if !(self.negative_sample_rate.is_finite() && self.negative_sample_rate >= 0.0) {
            return bad(
                "negative_sample_rate",
                format!("must be finite and >= 0, got {}", self.negative_sample_rate),
            );
        }
        if !(self.repulsion_strength.is_finite() && self.repulsion_strength >= 0.0) {
            return bad(
                "repulsion_strength",
                format!("must be finite and >= 0, got {}", self.repulsion_strength),
            );
        }
        if !(self.attention_weight.is_finite() && (0.0..1.0).contains(&self.attention_weight)) {
            return bad(
                "attention_weight",
                format!("must be in [0, 1), got {}", self.attention_weight),
            );
        }
        if !(self.attention_kl.is_finite() && self.attention_kl >= 0.0) {
            return bad(
                "attention_kl",
                format!("must be finite and >= 0, got {}", self.attention_kl),
            );
        }
        let (a, b) = find_ab_params(self.spread, self.min_dist);
        if !(a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0) {
            return bad(
                "min_dist",
                format!(
                    "curve fit failed for min_dist {} / spread {}",
                    self.min_dist, self.spread
                ),
            );
        }
        Ok(UmapValidParams { p: self, a, b })
    }
}

/// Validated UMAP parameters, with the fitted curve parameters `a` and `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct UmapValidParams {
    p: UmapParams,
    a: f32,
    b: f32,
}

impl UmapValidParams {
    /// What stops the fit (see [`UmapParams::interrupt`]).
    pub fn interrupt(&self) -> &Interrupt {
        &self.p.interrupt
    }

    /// These parameters with another [`Interrupt`] (see [`UmapParams::interrupt`]).
    pub fn with_interrupt(&self, interrupt: Interrupt) -> UmapValidParams {
        let mut valid = self.clone();
        valid.p.interrupt = interrupt;
        valid
    }

    /// Curve parameter `a` of `1 / (1 + a x^(2b))`.
    pub fn a(&self) -> f32 {
        self.a
    }

    /// Curve parameter `b` of `1 / (1 + a x^(2b))`.
    pub fn b(&self) -> f32 {
        self.b
    }

    /// Output dimensions (2 or 3).
    pub fn dims(&self) -> u8 {
        self.p.dims as u8
    }

    /// Input metric.
    pub fn metric(&self) -> Metric {
        self.p.metric
    }

    /// Neighbourhood size, counting the point itself.
    pub fn n_neighbors(&self) -> usize {
        self.p.n_neighbors
    }

    /// Share of the attention graph in the fuzzy graph of the attention-aware fits.
    pub fn attention_weight(&self) -> f32 {
        self.p.attention_weight
    }

    /// Weight of the per-query attention term of the attention-aware fits.
    pub fn attention_kl(&self) -> f32 {
        self.p.attention_kl
    }

    /// Epochs that a fit of `n` points runs.
    pub fn epochs_for(&self, n: usize) -> usize {
        self.p
            .n_epochs
            .unwrap_or(if n <= 10_000 { 500 } else { 200 })
    }

    /// Builds the kNN graph of `data` with [`crate::knn::knn`] (exact for small inputs, seeded
    /// NN-descent above) and fits the layout.
    pub fn fit(&self, data: &Matrix) -> Result<Embedding, ProjectError> {
        self.check_data(data)?;
        let graph = crate::knn::knn(data, self.p.n_neighbors - 1, self.p.metric, self.p.seed)?;
        self.fit_knn(data, &graph)
    }

    /// Fits the layout of `data` from a precomputed kNN graph of it (at least `n_neighbors - 1`
    /// neighbours per point; extra neighbours are ignored). `data` is used for validation and PCA init.
    pub fn fit_knn(&self, data: &Matrix, graph: &KnnGraph) -> Result<Embedding, ProjectError> {
        self.fit_graph(data, graph, None)
    }

    /// Attention-aware [`Self::fit`]: builds the kNN graph as [`Self::fit`] does, then
    /// [`Self::fit_knn_with_attention`].
    pub fn fit_with_attention(
        &self,
        data: &Matrix,
        edges: &AttentionEdges,
    ) -> Result<Embedding, ProjectError> {
        self.check_data(data)?;
        edges.check_points(data.rows())?;
        let graph = crate::knn::knn(data, self.p.n_neighbors - 1, self.p.metric, self.p.seed)?;
        self.fit_knn_with_attention(data, &graph, edges)
    }

    /// Attention-aware [`Self::fit_knn`] of a head's joint query/key set (`data` has `2n` rows,
    /// queries first). After the fuzzy union of the kNN memberships (`W_knn`, total weight
    /// `S_knn`), the attention edges are mixed in: `W = (1 - w) W_knn + w (S_knn / S_att) W_att`,
    /// with `w` = [`UmapParams::attention_weight`], `W_att(i, n + j) = W_att(n + j, i) = a_ij`
    /// (per-query normalized attention) and `S_att` its total, so that a share `w` of the graph's
    /// weight, and so of the SGD's attractive samples, comes from attention; the per-query
    /// attention term ([`UmapParams::attention_kl`]) moves the points every epoch beside. With `w =
    /// 0` and `attention_kl = 0`, or no edges, the result is bit-identical to [`Self::fit_knn`].
    /// The effective `w` and `lambda` are recorded in `spec.params["attention_weight"]` and
    /// `["attention_kl"]`. Fails if `edges` is not for `data.rows() / 2` tokens.
    pub fn fit_knn_with_attention(
        &self,
        data: &Matrix,
        graph: &KnnGraph,
        edges: &AttentionEdges,
    ) -> Result<Embedding, ProjectError> {
        edges.check_points(data.rows())?;
        self.fit_graph(data, graph, Some(edges))
    }

    fn fit_graph(
        &self,
        data: &Matrix,
        graph: &KnnGraph,
        edges: Option<&AttentionEdges>,
    ) -> Result<Embedding, ProjectError> {
        self.check_data(data)?;
        let n = data.rows();
        let k = self.p.n_neighbors - 1;
        if graph.n != n {
            return Err(ProjectError::InvalidInput(format!(
                "kNN graph has {} points, data has {n}",
                graph.n
            )));
        }
        if graph.k < k || graph.indices.len() != n * graph.k || graph.distances.len() != n * graph.k
        {
            return Err(ProjectError::InvalidInput(format!(
                "kNN graph must have at least n_neighbors - 1 = {k} neighbours per point and n*k entries, has k = {}",
                graph.k
            )));
        }
        if graph.indices.iter().any(|&j| j as usize >= n)
            || graph.distances.iter().any(|d| !d.is_finite())
        {
            return Err(ProjectError::InvalidInput(
                "kNN graph has out-of-range indices or non-finite distances".into(),
            ));
        }
        let mut fuzzy = fuzzy_simplicial_set(graph, k, self.p.n_neighbors);
        // Sampling rates stay relative to the heaviest edge of the kNN graph: the total number of
        // samples (and the run time) is that of the plain fit, of which attention edges take a
        // share w; an attention edge heavier than that edge is due several times per epoch.
        let wmax = max_weight(&fuzzy);
        let w = self.p.attention_weight;
        let attention_weight = match edges {
            Some(edges) if w > 0.0 && !edges.is_empty() => {
                fuzzy = mix_attention(&fuzzy, edges, w as f64);
                w
            }
            _ => 0.0,
        };
        let n_epochs = self.epochs_for(n);
        let mut coords = self.initial_layout(data, &fuzzy);
        let sgd = SgdGraph::new(&fuzzy, n_epochs, wmax);
        let attention_kl = KlTerm::new(
            edges,
            self.p.attention_kl,
            self.p.attention_kernel,
            LayoutKernel::Umap {
                a: self.a,
                b: self.b,
            },
        );
        self.optimize(&mut coords, &sgd, attention_kl.as_ref(), n_epochs)?;
        if coords.iter().any(|v| !v.is_finite()) {
            return Err(ProjectError::InvalidInput(
                "UMAP layout diverged to non-finite values".into(),
            ));
        }
        let coords = Matrix::from_vec(n, self.p.dims, coords)
            .map_err(|e| ProjectError::InvalidInput(e.to_string()))?;
        Ok(Embedding {
            coords,
            objective: None,
            spec: self.spec(n_epochs, attention_weight, attention_kl.as_ref()),
        })
    }

    fn check_data(&self, data: &Matrix) -> Result<(), ProjectError> {
        // Shared checks first (>= 2 points, >= 1 column, finite values naming the bad row/column).
        crate::util::check_data(data)?;
        let n = data.rows();
        if self.p.n_neighbors >= n {
            return Err(ProjectError::InvalidParam {
                name: "n_neighbors",
                reason: format!(
                    "must be below the number of points ({n}), got {}",
                    self.p.n_neighbors
                ),
            });
        }
        Ok(())
    }

    fn spec(
        &self,
        n_epochs: usize,
        attention_weight: f32,
        attention_kl: Option<&KlTerm<'_>>,
    ) -> ProjectionSpec {
        let p = &self.p;
        let (lambda, kernel) = KlTerm::spec_params(attention_kl);
        let params: BTreeMap<String, f64> = [
            ("n_neighbors", p.n_neighbors as f64),
            ("min_dist", p.min_dist as f64),
            ("spread", p.spread as f64),
            ("n_epochs", n_epochs as f64),
            ("learning_rate", p.learning_rate as f64),
            ("negative_sample_rate", p.negative_sample_rate as f64),
            ("repulsion_strength", p.repulsion_strength as f64),
            ("init", p.init.code()),
            ("a", self.a as f64),
            ("b", self.b as f64),
            ("attention_weight", attention_weight as f64),
            ("attention_kl", lambda),
            ("attention_kernel", kernel),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        ProjectionSpec {
            method: ProjectionMethod::Umap,
            dims: p.dims as u8,
            metric: p.metric,
            seed: p.seed,
            params,
        }
    }

    /// Initial layout, rescaled to `[0, 10]` per dimension like umap-learn.
    fn initial_layout(&self, data: &Matrix, fuzzy: &Csr) -> Vec<f32> {
        let dims = self.p.dims;
        let n = data.rows();
        let mut rng = ChaCha8Rng::seed_from_u64(self.p.seed);
        let random = |rng: &mut ChaCha8Rng| -> Vec<f32> {
            (0..n * dims)
                .map(|_| rng.random_range(-10.0f32..10.0))
                .collect()
        };
        let mut emb = match self.p.init {
            UmapInit::Random => random(&mut rng),
            UmapInit::Pca => pca_layout(data, dims).unwrap_or_else(|| random(&mut rng)),
            UmapInit::Spectral => spectral_layout(fuzzy, dims, &mut rng)
                .or_else(|| pca_layout(data, dims))
                .unwrap_or_else(|| random(&mut rng)),
        };
        // Tiny noise breaks exact ties (duplicate points, disconnected components that the eigen-solver
        // puts on one spot) that SGD could otherwise never separate.
        rescale(&mut emb, dims, 10.0);
        for v in emb.iter_mut() {
            *v += rng.random_range(-1e-4f32..1e-4);
        }
        rescale(&mut emb, dims, 10.0);
        emb
    }
}

/// Fits `a, b` of `1 / (1 + a x^(2b))` to umap-learn's target curve (1 below `min_dist`, then
/// `exp(-(x - min_dist) / spread)`) on 300 points of `[0, 3 spread]` by Levenberg-Marquardt, starting
/// from `a = b = 1` like scipy's `curve_fit`.
pub fn find_ab_params(spread: f32, min_dist: f32) -> (f32, f32) {
    let (spread, min_dist) = (spread as f64, min_dist as f64);
    let xs: Vec<f64> = (0..300).map(|i| 3.0 * spread * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&x| {
            if x < min_dist {
                1.0
            } else {
                (-(x - min_dist) / spread).exp()
            }
        })
        .collect();
    let sse = |a: f64, b: f64| -> f64 {
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| {
                let r = 1.0 / (1.0 + a * x.powf(2.0 * b)) - y;
                r * r
            })
            .sum()
    };
    let (mut a, mut b) = (1.0f64, 1.0f64);
    let mut lambda = 1e-3;
    let mut cost = sse(a, b);
    for _ in 0..500 {
        // Normal equations J^T J and J^T r of the 2-parameter residual.
        let (mut jaa, mut jab, mut jbb, mut ga, mut gb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&x, &y) in xs.iter().zip(&ys) {
            if x <= 0.0 {
                continue; // f(0) = 1 whatever a, b: no gradient, residual constant
            }
            let u = x.powf(2.0 * b);
            let den = 1.0 + a * u;
            let f = 1.0 / den;
            let r = f - y;
            let da = -u / (den * den);
            let db = -a * u * 2.0 * x.ln() / (den * den);
            jaa += da * da;
            jab += da * db;
            jbb += db * db;
            ga += da * r;
            gb += db * r;
        }
        let mut improved = false;
        for _ in 0..30 {
            let (m11, m22) = (jaa * (1.0 + lambda), jbb * (1.0 + lambda));
            let det = m11 * m22 - jab * jab;
            if det.abs() < 1e-300 {
                lambda *= 10.0;
                continue;
            }
            let sa = -(m22 * ga - jab * gb) / det;
            let sb = -(m11 * gb - jab * ga) / det;
            let (na, nb) = (a + sa, b + sb);
            if na > 0.0 && nb > 0.0 {
                let c = sse(na, nb);
                if c < cost {
                    let rel = (cost - c) / cost.max(1e-300);
                    a = na;
                    b = nb;
                    cost = c;
                    lambda = (lambda / 10.0).max(1e-12);
                    improved = rel > 1e-15;
                    break;
                }
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    (a as f32, b as f32)
}

#[cfg(test)]
mod tests;
