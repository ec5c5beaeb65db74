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
use rayon::prelude::*;

use crate::knn::KnnGraph;
use crate::{AttentionEdges, Embedding, ProjectError};

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
    /// weight, and so of the SGD's attractive samples, comes from attention. With `w = 0` or no
    /// edges the result is bit-identical to [`Self::fit_knn`]. The effective `w` is recorded in
    /// `spec.params["attention_weight"]`. Fails if `edges` is not for `data.rows() / 2` tokens.
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
        self.optimize(&mut coords, &sgd, n, n_epochs);
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
            spec: self.spec(n_epochs, attention_weight),
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

    fn spec(&self, n_epochs: usize, attention_weight: f32) -> ProjectionSpec {
        let p = &self.p;
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

    fn optimize(&self, coords: &mut Vec<f32>, g: &SgdGraph, n: usize, n_epochs: usize) {
        match self.p.dims {
            2 => self.optimize_d::<2>(coords, g, n, n_epochs),
            _ => self.optimize_d::<3>(coords, g, n, n_epochs),
        }
    }

    /// The SGD with the output dimension as a constant, so that the per-pair loops unroll.
    fn optimize_d<const D: usize>(
        &self,
        coords: &mut Vec<f32>,
        g: &SgdGraph,
        n: usize,
        n_epochs: usize,
    ) {
        let (a, b) = (self.a, self.b);
        let gamma = self.p.repulsion_strength;
        let neg_rate = self.p.negative_sample_rate as f64;
        let seed = self.p.seed;
        let mut pos: Vec<[f32; D]> = coords
            .chunks_exact(D)
            .map(|c| std::array::from_fn(|d| c[d]))
            .collect();
        let mut next = pos.clone();
        // Vertices per parallel task: large enough to amortize scheduling; any value gives the same result.
        const CHUNK: usize = 256;
        for epoch in 1..=n_epochs {
            let alpha = self.p.learning_rate * (1.0 - (epoch - 1) as f32 / n_epochs as f32);
            let snap: &[[f32; D]] = &pos;
            let (ef, ep) = (epoch as f64, (epoch - 1) as f64);
            next.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
                for (o, cur_out) in out.iter_mut().enumerate() {
                    let i = c * CHUNK + o;
                    // Every gradient of this epoch is taken at the epoch-start position: the terms are
                    // independent, so the CPU overlaps them instead of waiting on a chain of updates.
                    let cur = snap[i];
                    let mut delta = [0.0f32; D];
                    let mut rng = SplitMix64::for_vertex(seed, epoch as u64, i as u64);
                    let (lo, hi) = (g.indptr[i], g.indptr[i + 1]);
                    for (&r, &j) in g.rate[lo..hi].iter().zip(&g.indices[lo..hi]) {
                        // Samples of this edge up to this epoch (`as` truncates = floor, all >= 0):
                        // the edge is due when the count just went up.
                        let count = (ef * r) as i64;
                        let due = count - (ep * r) as i64;
                        if due == 0 {
                            continue;
                        }
                        // Edges heavier than the reference weight (attention edges, rate > 1)
                        // are due several times per epoch: one step of that many samples.
                        let times = 2.0 * due as f32;
                        let other = &snap[j as usize];
                        let d2 = dist2(&cur, other);
                        if d2 > 0.0 {
                            let pb = fast_pow(d2, b);
                            let coeff = -2.0 * a * b * pb / (d2 * (a * pb + 1.0));
                            for d in 0..D {
                                // Twice the step: the edge's other direction, sampled in the same
                                // epoch by vertex j, moves i once more in umap-learn.
                                delta[d] += times * clip(coeff * (cur[d] - other[d]));
                            }
                        }
                        let negs = (count as f64 * neg_rate) as i64
                            - ((count - due) as f64 * neg_rate) as i64;
                        for _ in 0..negs {
                            let k = rng.below(n);
                            if k == i {
                                continue;
                            }
                            let other = &snap[k];
                            let d2 = dist2(&cur, other);
                            if d2 > 0.0 {
                                let coeff =
                                    2.0 * gamma * b / ((0.001 + d2) * (a * fast_pow(d2, b) + 1.0));
                                for d in 0..D {
                                    delta[d] += clip(coeff * (cur[d] - other[d]));
                                }
                            }
                        }
                    }
                    let cur: [f32; D] = std::array::from_fn(|d| {
                        cur[d] + alpha * delta[d].clamp(-MAX_EPOCH_STEP, MAX_EPOCH_STEP)
                    });
                    *cur_out = cur;
                }
            });
            std::mem::swap(&mut pos, &mut next);
        }
        coords.clear();
        coords.extend(pos.iter().flatten());
    }
}

/// Largest step of one vertex per epoch and coordinate (before the learning rate), twice one term's
/// clip. Every term of an epoch is taken at the epoch-start position, so a vertex with many due edges
/// would otherwise add up hundreds of clipped repulsions at once: the 320 identical `[CLS]` keys of a
/// MiniLM head (a component of their own in the kNN graph) jumped ~1,000 units away. Sequential SGD
/// (umap-learn) limits itself, as repulsion fades once a vertex has moved. With 8, layouts of such
/// heads spread like umap-learn's, and trustworthiness on the benchmark data is unchanged or better.
const MAX_EPOCH_STEP: f32 = 8.0;

#[inline]
fn clip(v: f32) -> f32 {
    v.clamp(-4.0, 4.0)
}

/// `x^b` for `x > 0` as `2^(b log2 x)` with polynomial `log2` and `exp2` (relative error below 1e-6):
/// the SGD evaluates one power per sampled pair and `powf` dominated its run time.
#[inline]
fn fast_pow(x: f32, b: f32) -> f32 {
    fast_exp2(b * fast_log2(x))
}

#[inline]
fn fast_log2(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // mantissa in [1, 2)
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // log2(m) = 2 atanh(t) / ln 2 with t = (m - 1) / (m + 1), |t| <= 0.172: four odd terms suffice.
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let s = t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0))));
    e as f32 + s * (2.0 / std::f32::consts::LN_2)
}

#[inline]
fn fast_exp2(y: f32) -> f32 {
    let y = y.clamp(-126.0, 126.0);
    // Round to nearest through a positive truncating cast: `round` is a libm call on baseline x86-64.
    let i = (y + 127.5) as i32 - 127;
    let f = (y - i as f32) * std::f32::consts::LN_2; // |f| <= ln2 / 2
    // Taylor series of e^f to degree 6: error below 2e-7 on |f| <= 0.35.
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    p * f32::from_bits(((i + 127) as u32) << 23)
}

#[inline]
fn dist2<const D: usize>(a: &[f32; D], b: &[f32; D]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Small counter-based generator for the per-(epoch, vertex) negative-sample streams: seeding a
/// cryptographic generator per vertex per epoch would cost more than the samples themselves.
struct SplitMix64(u64);

impl SplitMix64 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn for_vertex(seed: u64, epoch: u64, vertex: u64) -> Self {
        SplitMix64(Self::mix(
            Self::mix(seed ^ 0x5eed)
                ^ Self::mix(epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ vertex),
        ))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        Self::mix(self.0)
    }

    /// Uniform index in `0..n` by multiply-shift (bias below 2^-32 for n < 2^32).
    fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// Symmetric sparse matrix in CSR form (both directions of every edge stored).
#[derive(Debug, Clone)]
struct Csr {
    n: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

/// The SGD's view of the fuzzy graph: CSR rows with per-edge sampling rate `w / w_max` (umap-learn's
/// `1 / epochs_per_sample`), edges too weak to be sampled once in `n_epochs` dropped. `w_max` is the
/// heaviest edge of the kNN graph, so attention edges may have rates above 1 (due several times per
/// epoch).
struct SgdGraph {
    indptr: Vec<usize>,
    indices: Vec<u32>,
    rate: Vec<f64>,
}

impl SgdGraph {
    fn new(g: &Csr, n_epochs: usize, wmax: f32) -> Self {
        let cut = wmax / n_epochs as f32;
        let mut indptr = Vec::with_capacity(g.n + 1);
        let mut indices = Vec::with_capacity(g.indices.len());
        let mut rate = Vec::with_capacity(g.indices.len());
        indptr.push(0);
        for i in 0..g.n {
            for e in g.indptr[i]..g.indptr[i + 1] {
                let w = g.values[e];
                if w >= cut && w > 0.0 {
                    indices.push(g.indices[e]);
                    rate.push(w as f64 / wmax as f64);
                }
            }
            indptr.push(indices.len());
        }
        SgdGraph {
            indptr,
            indices,
            rate,
        }
    }
}

/// The largest edge weight of `g` (0 for an empty graph).
fn max_weight(g: &Csr) -> f32 {
    g.values.iter().copied().fold(0.0f32, f32::max)
}

/// Per-point `(rho, sigma)` by umap-learn's smooth-kNN binary search, so that the membership strengths
/// of the `k` neighbours sum to `log2(n_neighbors)`.
fn smooth_knn(dists: &[f32], n_neighbors: usize, mean_all: f64) -> (f64, f64) {
    const TOL: f64 = 1e-5;
    const MIN_K_DIST_SCALE: f64 = 1e-3;
    let target = (n_neighbors as f64).log2();
    let rho = dists.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0) as f64;
    let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
    for _ in 0..64 {
        let psum: f64 = dists
            .iter()
            .map(|&d| {
                let d = d as f64 - rho;
                if d > 0.0 { (-d / mid).exp() } else { 1.0 }
            })
            .sum();
        if (psum - target).abs() < TOL {
            break;
        }
        if psum > target {
            hi = mid;
            mid = (lo + hi) / 2.0;
        } else {
            lo = mid;
            mid = if hi.is_infinite() {
                mid * 2.0
            } else {
                (lo + hi) / 2.0
            };
        }
    }
    // A floor on sigma keeps memberships from collapsing to 0 for points whose neighbours are all at
    // nearly the same distance (umap-learn's MIN_K_DIST_SCALE rule).
    let mean_i = dists.iter().map(|&d| d as f64).sum::<f64>() / dists.len().max(1) as f64;
    let floor = MIN_K_DIST_SCALE * if rho > 0.0 { mean_i } else { mean_all };
    (rho, mid.max(floor))
}

/// The fuzzy union `P + P^T - P o P^T` of the directed membership strengths of the first `k`
/// neighbours of every point.
fn fuzzy_simplicial_set(graph: &KnnGraph, k: usize, n_neighbors: usize) -> Csr {
    let n = graph.n;
    let mean_all = {
        let s: f64 = (0..n)
            .flat_map(|i| graph.neighbor_distances(i)[..k].iter())
            .map(|&d| d as f64)
            .sum();
        s / (n * k).max(1) as f64
    };
    // (row, col, forward weight, backward weight); each directed edge contributes to both orientations.
    let directed: Vec<Vec<(u32, u32, f32)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let d = &graph.neighbor_distances(i)[..k];
            let idx = &graph.neighbors(i)[..k];
            let (rho, sigma) = smooth_knn(d, n_neighbors, mean_all);
            idx.iter()
                .zip(d)
                .filter(|(j, _)| **j as usize != i)
                .map(|(&j, &dist)| {
                    let x = dist as f64 - rho;
                    let w = if x <= 0.0 { 1.0 } else { (-x / sigma).exp() };
                    (i as u32, j, w as f32)
                })
                .collect()
        })
        .collect();
    let mut entries: Vec<(u32, u32, f32, f32)> = Vec::with_capacity(2 * n * k);
    for (i, j, w) in directed.into_iter().flatten() {
        entries.push((i, j, w, 0.0));
        entries.push((j, i, 0.0, w));
    }
    entries.par_sort_unstable_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    let mut indptr = vec![0usize; n + 1];
    let mut indices = Vec::with_capacity(entries.len() / 2 + n);
    let mut values = Vec::with_capacity(entries.len() / 2 + n);
    let mut s = 0;
    while s < entries.len() {
        let (r, c) = (entries[s].0, entries[s].1);
        let (mut fw, mut bw) = (0.0f32, 0.0f32);
        while s < entries.len() && entries[s].0 == r && entries[s].1 == c {
            fw = fw.max(entries[s].2);
            bw = bw.max(entries[s].3);
            s += 1;
        }
        let w = fw + bw - fw * bw;
        if w > 0.0 {
            indices.push(c);
            values.push(w);
            indptr[r as usize + 1] += 1;
        }
    }
    for i in 0..n {
        indptr[i + 1] += indptr[i];
    }
    Csr {
        n,
        indptr,
        indices,
        values,
    }
}

/// `(1 - w) W + w (S_W / S_att) W_att` (see [`UmapValidParams::fit_knn_with_attention`]): both
/// graphs have sorted rows; each output row is their merge, summed in f64 and rounded once.
fn mix_attention(g: &Csr, edges: &AttentionEdges, w: f64) -> Csr {
    let n = g.n;
    let s_knn: f64 = g.values.iter().map(|&v| v as f64).sum();
    let s_att: f64 = 2.0 * edges.joint_edges().map(|(_, _, a)| a as f64).sum::<f64>();
    let (a_off, a_cols, a_vals) = edges.symmetric_csr(w * s_knn / s_att);
    let keep = 1.0 - w;
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0);
    let mut indices = Vec::with_capacity(g.indices.len() + a_cols.len());
    let mut values = Vec::with_capacity(g.indices.len() + a_cols.len());
    for i in 0..n {
        let (gc, gv) = (
            &g.indices[g.indptr[i]..g.indptr[i + 1]],
            &g.values[g.indptr[i]..g.indptr[i + 1]],
        );
        let (ac, av) = (
            &a_cols[a_off[i]..a_off[i + 1]],
            &a_vals[a_off[i]..a_off[i + 1]],
        );
        let (mut s, mut t) = (0, 0);
        while s < gc.len() || t < ac.len() {
            let next_g = gc.get(s).copied().unwrap_or(u32::MAX);
            let next_a = ac.get(t).copied().unwrap_or(u32::MAX);
            let j = next_g.min(next_a);
            let mut x = 0f64;
            if next_g == j {
                x += keep * gv[s] as f64;
                s += 1;
            }
            if next_a == j {
                x += av[t];
                t += 1;
            }
            indices.push(j);
            values.push(x as f32);
        }
        indptr.push(indices.len());
    }
    Csr {
        n,
        indptr,
        indices,
        values,
    }
}

/// Rescales every column of the `n x dims` layout to `[0, scale]` (constant columns to 0).
fn rescale(emb: &mut [f32], dims: usize, scale: f32) {
    for d in 0..dims {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for v in emb.iter().skip(d).step_by(dims) {
            lo = lo.min(*v);
            hi = hi.max(*v);
        }
        let span = hi - lo;
        let f = if span > 0.0 && span.is_finite() {
            scale / span
        } else {
            0.0
        };
        for v in emb.iter_mut().skip(d).step_by(dims) {
            *v = (*v - lo) * f;
        }
    }
}

/// Top-`dims` principal-component scores of `data`, or `None` if the eigen-decomposition is not finite.
fn pca_layout(data: &Matrix, dims: usize) -> Option<Vec<f32>> {
    let (n, d) = data.shape();
    let mut mean = vec![0.0f64; d];
    for r in data.iter_rows() {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    // Fixed row chunks summed in order: the covariance does not depend on the thread count.
    const ROWS: usize = 512;
    let partials: Vec<Vec<f64>> = data
        .as_slice()
        .par_chunks(ROWS * d)
        .map(|block| {
            let mut cov = vec![0.0f64; d * d];
            let mut x = vec![0.0f64; d];
            for r in block.chunks_exact(d) {
                for (xi, (v, m)) in x.iter_mut().zip(r.iter().zip(&mean)) {
                    *xi = *v as f64 - m;
                }
                for a in 0..d {
                    let xa = x[a];
                    for b in a..d {
                        cov[a * d + b] += xa * x[b];
                    }
                }
            }
            cov
        })
        .collect();
    let mut cov = nalgebra::DMatrix::<f64>::zeros(d, d);
    for p in &partials {
        for a in 0..d {
            for b in a..d {
                cov[(a, b)] += p[a * d + b];
            }
        }
    }
    for a in 0..d {
        for b in 0..a {
            cov[(a, b)] = cov[(b, a)];
        }
    }
    let eig = nalgebra::SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&x, &y| eig.eigenvalues[y].total_cmp(&eig.eigenvalues[x]));
    let comps: Vec<Vec<f64>> = order
        .iter()
        .take(dims)
        .map(|&c| eig.eigenvectors.column(c).iter().copied().collect())
        .collect();
    let mut out = vec![0.0f32; n * dims];
    for (i, r) in data.iter_rows().enumerate() {
        for (c, comp) in comps.iter().enumerate() {
            let s: f64 = r
                .iter()
                .zip(&mean)
                .zip(comp)
                .map(|((v, m), w)| (*v as f64 - m) * w)
                .sum();
            out[i * dims + c] = s as f32;
        }
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

/// Spectral layout: eigenvectors 2..=dims+1 of `D^-1/2 W D^-1/2` (the smallest non-trivial ones of the
/// normalized Laplacian) by subspace iteration on `(I + D^-1/2 W D^-1/2) / 2`, whose spectrum lies in
/// `[0, 1]` so that the wanted eigenvectors dominate. The trivial eigenvector `D^1/2 1` is known and
/// projected out. Returns `None` when the graph has isolated points or the result is not finite.
fn spectral_layout(g: &Csr, dims: usize, rng: &mut ChaCha8Rng) -> Option<Vec<f32>> {
    let n = g.n;
    const EXTRA: usize = 4; // oversampling: convergence rate depends on the gap to eigenvalue p+1
    let p = (dims + EXTRA).min(n.saturating_sub(1));
    if p < dims {
        return None;
    }
    let deg: Vec<f64> = (0..n)
        .map(|i| {
            g.values[g.indptr[i]..g.indptr[i + 1]]
                .iter()
                .map(|&w| w as f64)
                .sum()
        })
        .collect();
    if deg.iter().any(|&x| x <= 0.0) {
        return None;
    }
    let dinv: Vec<f64> = deg.iter().map(|x| 1.0 / x.sqrt()).collect();
    let mut v0: Vec<f64> = deg.iter().map(|x| x.sqrt()).collect();
    normalize(&mut v0);
    // Column-major n x p block.
    let mut x: Vec<f64> = (0..n * p).map(|_| rng.random_range(-1.0f64..1.0)).collect();
    let apply = |x: &[f64], y: &mut [f64]| {
        for c in 0..p {
            let xc = &x[c * n..(c + 1) * n];
            y[c * n..(c + 1) * n]
                .par_iter_mut()
                .enumerate()
                .for_each(|(i, yi)| {
                    let s: f64 = (g.indptr[i]..g.indptr[i + 1])
                        .map(|e| {
                            g.values[e] as f64
                                * dinv[g.indices[e] as usize]
                                * xc[g.indices[e] as usize]
                        })
                        .sum();
                    *yi = 0.5 * (xc[i] + dinv[i] * s);
                });
        }
    };
    orthonormalize(&mut x, n, p, &v0);
    let mut y = vec![0.0f64; n * p];
    let mut prev_ritz = vec![0.0f64; p];
    const MAX_ITERS: usize = 300;
    for it in 0..MAX_ITERS {
        apply(&x, &mut y);
        if it % 10 == 9 {
            // Rayleigh quotients x_c^T A x_c: stop once they no longer move.
            let ritz: Vec<f64> = (0..p)
                .map(|c| dot(&x[c * n..(c + 1) * n], &y[c * n..(c + 1) * n]))
                .collect();
            let moved = ritz
                .iter()
                .zip(&prev_ritz)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            prev_ritz = ritz;
            if moved < 1e-7 {
                std::mem::swap(&mut x, &mut y);
                orthonormalize(&mut x, n, p, &v0);
                break;
            }
        }
        std::mem::swap(&mut x, &mut y);
        orthonormalize(&mut x, n, p, &v0);
    }
    // Rayleigh-Ritz: rotate the subspace onto the eigenvectors of the projected p x p matrix.
    apply(&x, &mut y);
    let mut h = nalgebra::DMatrix::<f64>::zeros(p, p);
    for a in 0..p {
        for b in 0..p {
            h[(a, b)] = dot(&x[a * n..(a + 1) * n], &y[b * n..(b + 1) * n]);
        }
    }
    let h = (&h + h.transpose()) * 0.5;
    let eig = nalgebra::SymmetricEigen::new(h);
    let mut order: Vec<usize> = (0..p).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let mut out = vec![0.0f32; n * dims];
    for (c, &col) in order.iter().take(dims).enumerate() {
        let u = eig.eigenvectors.column(col);
        for i in 0..n {
            let s: f64 = (0..p).map(|q| x[q * n + i] * u[q]).sum();
            out[i * dims + c] = s as f32;
        }
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalize(v: &mut [f64]) -> f64 {
    let nrm = dot(v, v).sqrt();
    if nrm > 0.0 {
        v.iter_mut().for_each(|x| *x /= nrm);
    }
    nrm
}

/// Modified Gram-Schmidt on the columns of the column-major `n x p` block, orthogonal to `v0` too.
/// A column that vanishes is replaced by a deterministic pseudo-random one.
fn orthonormalize(x: &mut [f64], n: usize, p: usize, v0: &[f64]) {
    for c in 0..p {
        let (done, rest) = x.split_at_mut(c * n);
        let col = &mut rest[..n];
        for _pass in 0..2 {
            let s = dot(col, v0);
            col.iter_mut().zip(v0).for_each(|(a, b)| *a -= s * b);
            for q in 0..c {
                let prev = &done[q * n..(q + 1) * n];
                let s = dot(col, prev);
                col.iter_mut().zip(prev).for_each(|(a, b)| *a -= s * b);
            }
        }
        if normalize(col) < 1e-12 {
            let mut r = SplitMix64::for_vertex(0xC01, c as u64, 0);
            col.iter_mut()
                .for_each(|v| *v = (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5);
            let s = dot(col, v0);
            col.iter_mut().zip(v0).for_each(|(a, b)| *a -= s * b);
            normalize(col);
        }
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
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    /// `clusters` Gaussian blobs in `dim` dims, centres at distance ~`sep`, unit noise.
    fn mixture(n: usize, clusters: usize, dim: usize, sep: f32, seed: u64) -> (Matrix, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, 1.0).unwrap();
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| (0..dim).map(|_| normal.sample(&mut rng) * sep).collect())
            .collect();
        let mut data = Vec::with_capacity(n * dim);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % clusters;
            labels.push(c);
            data.extend(centres[c].iter().map(|m| m + normal.sample(&mut rng)));
        }
        (Matrix::from_vec(n, dim, data).unwrap(), labels)
    }

    #[test]
    fn fast_pow_matches_powf() {
        for &b in &[0.5f32, 0.8951, 1.0, 1.334, 1.9] {
            let mut x = 1e-6f32;
            while x < 1e6 {
                let (want, got) = (x.powf(b), fast_pow(x, b));
                assert!(
                    ((got - want) / want).abs() < 1e-5,
                    "{x}^{b}: {got} vs {want}"
                );
                x *= 1.37;
            }
        }
    }

    #[test]
    fn ab_params_match_umap_learn() {
        // umap-learn's find_ab_params(1.0, 0.1) = (1.5769, 0.8951).
        let (a, b) = find_ab_params(1.0, 0.1);
        assert!((a - 1.577).abs() < 0.005, "a = {a}");
        assert!((b - 0.895).abs() < 0.003, "b = {b}");
        // umap-learn's find_ab_params(1.0, 0.5) = (0.5830, 1.3343): a different regime.
        let (a, b) = find_ab_params(1.0, 0.5);
        assert!((a - 0.583).abs() < 0.01, "a = {a}");
        assert!((b - 1.334).abs() < 0.01, "b = {b}");
        let v = Umap::params().check().unwrap();
        assert!((v.a() - 1.577).abs() < 0.005 && (v.b() - 0.895).abs() < 0.003);
    }

    #[test]
    fn bad_params_are_typed_errors() {
        let name = |r: Result<UmapValidParams, ProjectError>| match r {
            Err(ProjectError::InvalidParam { name, .. }) => name,
            other => panic!("expected InvalidParam, got {other:?}"),
        };
        assert_eq!(name(Umap::params().dims(1).check()), "dims");
        assert_eq!(name(Umap::params().dims(4).check()), "dims");
        assert_eq!(
            name(Umap::params().min_dist(1.5).spread(1.0).check()),
            "min_dist"
        );
        assert_eq!(name(Umap::params().min_dist(f32::NAN).check()), "min_dist");
        assert_eq!(name(Umap::params().spread(0.0).check()), "spread");
        assert_eq!(name(Umap::params().n_neighbors(1).check()), "n_neighbors");
        assert_eq!(name(Umap::params().n_epochs(Some(0)).check()), "n_epochs");
        assert_eq!(
            name(Umap::params().learning_rate(-1.0).check()),
            "learning_rate"
        );

        let (data, _) = mixture(20, 2, 4, 5.0, 1);
        let v = Umap::params().n_neighbors(20).check().unwrap();
        assert!(matches!(
            v.fit(&data),
            Err(ProjectError::InvalidParam {
                name: "n_neighbors",
                ..
            })
        ));
        let mut nan = data.clone();
        nan.row_mut(3)[1] = f32::NAN;
        let v = Umap::params().n_neighbors(5).check().unwrap();
        assert!(matches!(v.fit(&nan), Err(ProjectError::InvalidInput(_))));
        // A graph with too few neighbours is refused, not indexed out of bounds.
        let g = KnnGraph {
            n: 20,
            k: 2,
            metric: Metric::Cosine,
            indices: (0..40).map(|e| ((e / 2 + 1 + e % 2) % 20) as u32).collect(),
            distances: vec![0.5; 40],
        };
        assert!(matches!(
            v.fit_knn(&data, &g),
            Err(ProjectError::InvalidInput(_))
        ));
    }

    #[test]
    fn tiny_and_degenerate_inputs_give_finite_layouts() {
        // Three points, the smallest valid n_neighbors, both metrics, all inits.
        let tiny = Matrix::from_rows(&[[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]]).unwrap();
        // Forty identical rows plus a zero row: zero distances everywhere, rho = 0.
        let mut rows = vec![[0.5f32, -0.25, 2.0]; 40];
        rows.push([0.0, 0.0, 0.0]);
        let dup = Matrix::from_rows(&rows).unwrap();
        for (data, k) in [(&tiny, 2), (&dup, 5)] {
            for metric in [Metric::Cosine, Metric::Euclidean] {
                for init in [UmapInit::Spectral, UmapInit::Pca, UmapInit::Random] {
                    for dims in [2, 3] {
                        let e = Umap::params()
                            .n_neighbors(k)
                            .metric(metric)
                            .init(init)
                            .dims(dims)
                            .n_epochs(Some(50))
                            .check()
                            .unwrap()
                            .fit(data)
                            .unwrap();
                        assert_eq!(e.coords.shape(), (data.rows(), dims as usize));
                        assert!(
                            e.coords.as_slice().iter().all(|v| v.is_finite()),
                            "{metric:?} {init:?} {dims}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn identical_output_on_one_and_two_threads() {
        let (data, _) = mixture(600, 4, 16, 3.0, 7);
        for (dims, init) in [(2, UmapInit::Spectral), (3, UmapInit::Random)] {
            let v = Umap::params()
                .dims(dims)
                .init(init)
                .seed(42)
                .n_epochs(Some(100))
                .check()
                .unwrap();
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| v.fit(&data).unwrap())
            };
            let (one, two) = (run(1), run(2));
            assert_eq!(one.coords.shape(), (600, dims as usize));
            let bits = |e: &Embedding| {
                e.coords
                    .as_slice()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&one), bits(&two), "dims {dims} init {init:?}");
            // A different seed must change the layout (the seed is really used).
            let other = Umap::params()
                .dims(dims)
                .init(init)
                .seed(43)
                .n_epochs(Some(100))
                .check()
                .unwrap();
            assert_ne!(bits(&one), bits(&other.fit(&data).unwrap()));
        }
    }

    #[test]
    fn mixture_is_embedded_trustworthily() {
        let (data, labels) = mixture(2000, 10, 64, 1.0, 3);
        for init in [UmapInit::Spectral, UmapInit::Pca, UmapInit::Random] {
            let v = Umap::params().seed(1).init(init).check().unwrap();
            let emb = v.fit(&data).unwrap();
            assert_eq!(emb.spec.method, ProjectionMethod::Umap);
            assert!(emb.coords.as_slice().iter().all(|x| x.is_finite()));
            let t =
                crate::metrics::trustworthiness(&data, &emb.coords, 10, Metric::Cosine).unwrap();
            // Majority label of each point's 10 embedded neighbours: clusters must stay separated.
            let lo = crate::knn::exact_knn(&emb.coords, 10, Metric::Euclidean).unwrap();
            let same = (0..2000)
                .map(|i| {
                    lo.neighbors(i)
                        .iter()
                        .filter(|&&j| labels[j as usize] == labels[i])
                        .count()
                })
                .sum::<usize>() as f64
                / 20000.0;
            eprintln!(
                "init {init:?}: trustworthiness@10 = {t:.4}, same-cluster neighbours = {same:.4}"
            );
            // Measured 0.963-0.964 for all three inits (seed 1); a collapsed or scrambled layout scores
            // ~0.5-0.8, and a 0.01 margin absorbs seed-to-seed variation.
            assert!(t > 0.95, "init {init:?}: trustworthiness {t}");
            assert!(same > 0.99, "init {init:?}: same-cluster fraction {same}");
        }
    }

    mod attention {
        use attn_types::{Matrix, Metric};

        use crate::attention::synthetic::{Head, head};
        use crate::{AttentionEdges, FidelitySpace, ProjectError, Umap, fidelity, knn};

        fn bits(m: &Matrix) -> Vec<u32> {
            m.as_slice().iter().map(|v| v.to_bits()).collect()
        }

        fn scores(h: &Head, coords: &Matrix, causal: bool) -> (f32, f32) {
            let f = fidelity(
                FidelitySpace::Layout(coords),
                &h.queries,
                &h.keys,
                &h.tokens,
                &h.attention,
                causal,
                0,
            )
            .unwrap();
            (f.hit_at_3.unwrap(), f.fidelity.unwrap())
        }

        #[test]
        fn zero_weight_or_no_edges_is_bit_identical_to_fit_knn() {
            let h = head(400, false, 3);
            let joint = h.joint();
            let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, false).unwrap();
            let none = AttentionEdges::from_attention(&h.tokens, &[], false).unwrap();
            // A graph with more neighbours than UMAP needs, as when shared with t-SNE.
            let graph = knn(&joint, 90, Metric::Cosine, 0).unwrap();
            let params = || Umap::params().n_epochs(Some(100)).seed(5);
            let plain = params().check().unwrap().fit_knn(&joint, &graph).unwrap();
            assert_eq!(plain.spec.params["attention_weight"], 0.0);
            let zero = params()
                .attention_weight(0.0)
                .check()
                .unwrap()
                .fit_knn_with_attention(&joint, &graph, &edges)
                .unwrap();
            assert_eq!(bits(&zero.coords), bits(&plain.coords));
            assert_eq!(zero, plain);
            let mixed = params().attention_weight(0.1).check().unwrap();
            assert_eq!(
                mixed.fit_knn_with_attention(&joint, &graph, &none).unwrap(),
                plain
            );
            assert_eq!(mixed.fit_knn(&joint, &graph).unwrap(), plain);
            assert_eq!(
                bits(&mixed.fit(&joint).unwrap().coords),
                bits(&params().check().unwrap().fit(&joint).unwrap().coords)
            );
            let with = mixed
                .fit_knn_with_attention(&joint, &graph, &edges)
                .unwrap();
            assert_ne!(bits(&with.coords), bits(&plain.coords));
            assert_eq!(with.spec.params["attention_weight"], 0.1f32 as f64);
            assert_eq!(mixed.fit_with_attention(&joint, &edges).unwrap(), with);
        }

        #[test]
        fn attention_raises_hit_at_3_and_fidelity() {
            for (causal, seed) in [(false, 11), (true, 12)] {
                let h = head(600, causal, seed);
                let joint = h.joint();
                let edges =
                    AttentionEdges::from_attention(&h.tokens, &h.attention, causal).unwrap();
                let fit = |w: f32| {
                    let emb = Umap::params()
                        .attention_weight(w)
                        .check()
                        .unwrap()
                        .fit_with_attention(&joint, &edges)
                        .unwrap();
                    let trust =
                        crate::trustworthiness(&joint, &emb.coords, 10, Metric::Cosine).unwrap();
                    let (hit, fid) = scores(&h, &emb.coords, causal);
                    eprintln!(
                        "causal {causal}, w {w}: hit@3 {hit:.3}, fidelity {fid:.3}, trust {trust:.4}"
                    );
                    (hit, fid, trust)
                };
                let (hit0, fid0, trust0) = fit(0.0);
                let (hit, fid, trust) = fit(0.1);
                assert!(
                    hit > hit0 + MARGIN_HIT,
                    "causal {causal}: hit@3 {hit0} -> {hit}"
                );
                assert!(
                    fid > fid0 + MARGIN_FID,
                    "causal {causal}: fidelity {fid0} -> {fid}"
                );
                assert!(
                    trust > trust0 - 0.02,
                    "causal {causal}: trust {trust0} -> {trust}"
                );
            }
        }
        // Measured at w = 0.1 (plain -> attention-aware, 1,200 points): hit@3 0.625 -> 0.756 and
        // 0.768 -> 0.859, fidelity 0.581 -> 0.628 and 0.623 -> 0.678, trustworthiness@10 -0.003
        // and -0.009 (exact, all points; on 10k-point heads the cost is smaller, see the README).
        const MARGIN_HIT: f32 = 0.05;
        const MARGIN_FID: f32 = 0.02;

        #[test]
        fn invalid_weight_and_mismatched_edges_are_errors() {
            for w in [-0.1f32, 1.0, 1.5, f32::NAN, f32::INFINITY] {
                assert!(
                    matches!(
                        Umap::params().attention_weight(w).check(),
                        Err(ProjectError::InvalidParam {
                            name: "attention_weight",
                            ..
                        })
                    ),
                    "{w}"
                );
            }
            let h = head(60, false, 1);
            let joint = h.joint();
            let other = head(80, false, 2);
            let edges =
                AttentionEdges::from_attention(&other.tokens, &other.attention, false).unwrap();
            let p = Umap::params().attention_weight(0.1).check().unwrap();
            let graph = knn(&joint, 30, Metric::Cosine, 0).unwrap();
            assert!(matches!(
                p.fit_knn_with_attention(&joint, &graph, &edges),
                Err(ProjectError::InvalidInput(_))
            ));
            assert!(matches!(
                p.fit_with_attention(&joint, &edges),
                Err(ProjectError::InvalidInput(_))
            ));
        }

        #[test]
        fn same_output_on_one_and_three_threads() {
            let h = head(400, true, 4);
            let joint = h.joint();
            let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, true).unwrap();
            // At w = 0.6 attention edges are heavier than the heaviest kNN edge, so they are due
            // several times per epoch: that path is covered too.
            let graph = knn(&joint, 14, Metric::Cosine, 0).unwrap();
            let fuzzy = super::super::fuzzy_simplicial_set(&graph, 14, 15);
            let wmax = super::super::max_weight(&fuzzy);
            let mixed = super::super::mix_attention(&fuzzy, &edges, 0.6);
            assert!(super::super::max_weight(&mixed) > 1.5 * wmax);
            for dims in [2u8, 3] {
                let p = Umap::params()
                    .dims(dims)
                    .attention_weight(0.6)
                    .n_epochs(Some(100))
                    .seed(9)
                    .check()
                    .unwrap();
                let run = |threads: usize| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap()
                        .install(|| p.fit_with_attention(&joint, &edges).unwrap())
                };
                let (one, three) = (run(1), run(3));
                assert_eq!(bits(&one.coords), bits(&three.coords), "{dims}D");
                assert_eq!(one, three);
            }
        }
    }
}
