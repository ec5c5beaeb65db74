//! t-SNE (van der Maaten & Hinton 2008) with Barnes-Hut (2D/3D) and FFT-interpolation (2D,
//! Linderman et al. 2019) repulsion, in the optimization schedule of openTSNE.
//!
//! Pipeline: kNN graph with `k = min(n - 1, floor(3 * perplexity))` neighbours -> per-point
//! bandwidths by bisection -> sparse symmetric `P` -> gradient descent with momentum and gains.
//! The gradient is written without the conventional factor 4 (as in bhtsne, FIt-SNE and openTSNE),
//! and the automatic learning rate is `max(n / early_exaggeration, 200)` in both phases (Belkina et
//! al. 2019; openTSNE uses it during exaggeration but `n` afterwards). openTSNE's larger late step
//! spreads the layout ~25% wider, which makes the FFT grid ~1.6x larger; on a 10k-point swiss roll
//! both reach trustworthiness@10 0.9999 and ours takes 30% less time (a 10k-point mixture: 0.965 vs
//! 0.969).

// Coordinate loops `for a in 0..D` index several fixed-size arrays in lockstep; iterators would
// obscure them without being faster.
#![allow(clippy::needless_range_loop)]

mod affinity;
mod bh;
mod exact;
mod fft;

use std::collections::BTreeMap;

use attn_types::{Matrix, Metric, ProjectionMethod, ProjectionSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::attention::kl::{self, AttentionKernel, KlTerm, LayoutKernel};
use crate::pca::principal_axes;
use crate::util::{check_data, prepare_rows};
use crate::{AttentionEdges, Embedding, Interrupt, KnnGraph, ProjectError, knn};

/// How the repulsive forces are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Repulsion {
    /// [`Repulsion::Exact`] below [`EXACT_MAX_N`] points; [`Repulsion::BarnesHut`] in 3D and below
    /// [`FFT_MIN_N`] points; in 2D from [`FFT_MIN_N`] points, per iteration [`Repulsion::Fft`] while
    /// its grid has at most [`FFT_MAX_CELLS_PER_POINT`] cells per point, Barnes-Hut beyond.
    #[default]
    Auto,
    /// All pairs, O(n²) per iteration.
    Exact,
    /// Barnes-Hut tree, O(n log n) per iteration: a cell of half-width `h` at distance `r` is
    /// summarized by its centre of mass when `h / r < theta` (bhtsne's convention).
    BarnesHut,
    /// FFT-accelerated polynomial interpolation on a grid (FIt-SNE), O(n + grid log grid) per
    /// iteration; 2D only.
    Fft,
}

/// [`Repulsion::Auto`] uses exact repulsion for fewer points than this.
pub const EXACT_MAX_N: usize = 300;
/// [`Repulsion::Auto`] considers FFT interpolation in 2D from this many points on.
pub const FFT_MIN_N: usize = 5_000;
/// From [`FFT_MIN_N`] points, [`Repulsion::Auto`] uses FFT interpolation in an iteration when its
/// zero-padded grid has at most this many cells per point, Barnes-Hut otherwise. The FFT's cost
/// grows with the layout's area, Barnes-Hut's with `n log n`: at 10k points FFT was 1.5x faster on a
/// clustered layout (15 cells per point at the end) and Barnes-Hut 1.3x faster on a swiss roll
/// (56 cells per point).
pub const FFT_MAX_CELLS_PER_POINT: usize = 20;

/// Default [`TsneParams::attention_weight`]: the knee measured on synthetic heads (crate README,
/// "Attention-aware layouts"): hit@3 0.37 -> 0.74 (causal 0.63 -> 0.87) at a trustworthiness@10
/// cost of at most 0.002, where 0.3 cost up to 0.021.
pub const DEFAULT_ATTENTION_WEIGHT: f32 = 0.2;

/// Default [`TsneParams::attention_kl`]: 0, the term is off unless asked for (attn-pipeline sets
/// its own default from the MiniLM measurements).
pub const DEFAULT_ATTENTION_KL: f32 = 0.0;

/// Initial layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TsneInit {
    /// Top principal components of the input (of the L2-normalized rows under the cosine metric),
    /// scaled so that the first coordinate has standard deviation 1e-4 (openTSNE). Falls back to
    /// random when the input has no variance.
    #[default]
    Pca,
    /// Isotropic Gaussian with standard deviation 1e-4, from the seed.
    Random,
}

/// Entry point of the t-SNE builder: `Tsne::params().perplexity(30.0).check()?.fit(&data)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tsne;

impl Tsne {
    /// Default parameters: 2D, perplexity 30 (the AttentionViz research code used 50), 750
    /// iterations of which 250 with early exaggeration 12, automatic learning rate, cosine metric,
    /// seed 0, theta 0.5, automatic repulsion, PCA initialization, attention weight
    /// [`DEFAULT_ATTENTION_WEIGHT`] (used by the attention-aware fits only).
    pub fn params() -> TsneParams {
        TsneParams(Settings {
            dims: 2,
            perplexity: 30.0,
            iterations: 750,
            early_exaggeration: 12.0,
            exaggeration_iterations: 250,
            learning_rate: None,
            metric: Metric::Cosine,
            seed: 0,
            theta: 0.5,
            repulsion: Repulsion::Auto,
            init: TsneInit::Pca,
            attention_weight: DEFAULT_ATTENTION_WEIGHT,
            attention_kl: DEFAULT_ATTENTION_KL,
            attention_kernel: AttentionKernel::Method,
            interrupt: Interrupt::default(),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    dims: u8,
    perplexity: f32,
    iterations: usize,
    early_exaggeration: f32,
    exaggeration_iterations: usize,
    learning_rate: Option<f32>,
    metric: Metric,
    seed: u64,
    theta: f32,
    repulsion: Repulsion,
    init: TsneInit,
    attention_weight: f32,
    attention_kl: f32,
    attention_kernel: AttentionKernel,
    interrupt: Interrupt,
}

/// Unchecked t-SNE parameters; see [`Tsne::params`] for the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TsneParams(Settings);

/// Validated t-SNE parameters; see [`TsneValidParams::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct TsneValidParams(Settings);

impl TsneParams {
    /// Output dimensions, 2 or 3.
    pub fn dims(mut self, dims: u8) -> Self {
        self.0.dims = dims;
        self
    }
    /// Effective number of neighbours (> 0). Clamped to `(n - 1) / 3` for small inputs, so that
    /// the `3 * perplexity` neighbours exist; the value used is recorded in the spec.
    pub fn perplexity(mut self, perplexity: f32) -> Self {
        self.0.perplexity = perplexity;
        self
    }
    /// Total gradient-descent iterations, early exaggeration included.
    pub fn iterations(mut self, iterations: usize) -> Self {
        self.0.iterations = iterations;
        self
    }
    /// Attraction multiplier (>= 1) during the first [`Self::exaggeration_iterations`] iterations.
    pub fn early_exaggeration(mut self, factor: f32) -> Self {
        self.0.early_exaggeration = factor;
        self
    }
    /// Iterations with early exaggeration (<= iterations).
    pub fn exaggeration_iterations(mut self, iterations: usize) -> Self {
        self.0.exaggeration_iterations = iterations;
        self
    }
    /// Fixed learning rate (> 0), or `None` for `max(n / early_exaggeration, 200)`.
    pub fn learning_rate(mut self, rate: Option<f32>) -> Self {
        self.0.learning_rate = rate;
        self
    }
    /// Input metric for the kNN graph (default cosine).
    pub fn metric(mut self, metric: Metric) -> Self {
        self.0.metric = metric;
        self
    }
    /// Seed of the random initialization and the approximate kNN search.
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = seed;
        self
    }
    /// Barnes-Hut accuracy (>= 0; 0 is exact but slow): cells of half-width `h` at distance `r`
    /// are summarized when `h / r < theta`, as in bhtsne (openTSNE's `theta` is twice ours).
    pub fn theta(mut self, theta: f32) -> Self {
        self.0.theta = theta;
        self
    }
    /// Repulsion method.
    pub fn repulsion(mut self, repulsion: Repulsion) -> Self {
        self.0.repulsion = repulsion;
        self
    }
    /// Initial layout.
    pub fn init(mut self, init: TsneInit) -> Self {
        self.0.init = init;
        self
    }

    /// Share `w` in `[0, 1)` of the attention graph in the joint affinities of the
    /// attention-aware fits ([`TsneValidParams::fit_knn_with_attention`]):
    /// `P = (1 - w) P_knn + w P_att` (see [`crate::attention`]); default
    /// [`DEFAULT_ATTENTION_WEIGHT`], 0 is plain t-SNE. The plain fits ([`TsneValidParams::fit`],
    /// [`TsneValidParams::fit_knn`]) ignore it.
    pub fn attention_weight(mut self, w: f32) -> Self {
        self.0.attention_weight = w;
        self
    }

    /// Weight `lambda >= 0` of the per-query attention term of the attention-aware fits: the
    /// objective becomes `KL(P || Q) + lambda * mean_i KL(A_i || R_i)`, where `R_i` is the
    /// layout's softmax of query `i` over its attended keys (see [`crate::attention::kl`]), so that
    /// a query's own keys compete for it as in attention. Default [`DEFAULT_ATTENTION_KL`]; the
    /// plain fits ignore it. It works with or without [`Self::attention_weight`].
    pub fn attention_kl(mut self, lambda: f32) -> Self {
        self.0.attention_kl = lambda;
        self
    }
    /// The kernel of the attention term's softmax: t-SNE's own Student-t (default) or a Gaussian.
    pub fn attention_kernel(mut self, kernel: AttentionKernel) -> Self {
        self.0.attention_kernel = kernel;
        self
    }

    /// A flag checked once per iteration: when set, the fit stops with
    /// [`ProjectError::Interrupted`] (default: never).
    pub fn interrupt(mut self, interrupt: Interrupt) -> Self {
        self.0.interrupt = interrupt;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<TsneValidParams, ProjectError> {
        let s = &self.0;
        let err =
            |name: &'static str, reason: String| Err(ProjectError::InvalidParam { name, reason });
        if !(2..=3).contains(&s.dims) {
            return err("dims", format!("must be 2 or 3, got {}", s.dims));
        }
        if !(s.perplexity.is_finite() && s.perplexity > 0.0) {
            return err(
                "perplexity",
                format!("must be finite and > 0, got {}", s.perplexity),
            );
        }
        if s.iterations == 0 {
            return err("iterations", "must be at least 1".into());
        }
        if s.exaggeration_iterations > s.iterations {
            return err(
                "exaggeration_iterations",
                format!(
                    "{} exceeds the {} total iterations",
                    s.exaggeration_iterations, s.iterations
                ),
            );
        }
        if !(s.early_exaggeration.is_finite() && s.early_exaggeration >= 1.0) {
            return err(
                "early_exaggeration",
                format!("must be finite and >= 1, got {}", s.early_exaggeration),
            );
        }
        if let Some(lr) = s.learning_rate
            && !(lr.is_finite() && lr > 0.0)
        {
            return err("learning_rate", format!("must be finite and > 0, got {lr}"));
        }
        if !(s.theta.is_finite() && s.theta >= 0.0) {
            return err("theta", format!("must be finite and >= 0, got {}", s.theta));
        }
        if !(s.attention_weight.is_finite() && (0.0..1.0).contains(&s.attention_weight)) {
            return err(
                "attention_weight",
                format!("must be in [0, 1), got {}", s.attention_weight),
            );
        }
        if !(s.attention_kl.is_finite() && s.attention_kl >= 0.0) {
            return err(
                "attention_kl",
                format!("must be finite and >= 0, got {}", s.attention_kl),
            );
        }
        if s.repulsion == Repulsion::Fft && s.dims != 2 {
            return err(
                "repulsion",
                "FFT interpolation is implemented for 2D only".into(),
            );
        }
        Ok(TsneValidParams(self.0))
    }
}

/// Iteration-independent state of one fit.
struct Problem<'a> {
    p: affinity::SparseP,
    /// `sum P log P`, for the KL divergence.
    p_log_p: f64,
    perplexity: f64,
    k: usize,
    /// The attention share actually used (0 without attention edges).
    attention_weight: f32,
    /// The per-query attention term, when used.
    attention_kl: Option<KlTerm<'a>>,
}

impl TsneValidParams {
    /// What stops the fit (see [`TsneParams::interrupt`]).
    pub fn interrupt(&self) -> &Interrupt {
        &self.0.interrupt
    }

    /// These parameters with another [`Interrupt`] (see [`TsneParams::interrupt`]).
    pub fn with_interrupt(&self, interrupt: Interrupt) -> TsneValidParams {
        let mut settings = self.0.clone();
        settings.interrupt = interrupt;
        TsneValidParams(settings)
    }

    /// Output dimensions.
    pub fn dims(&self) -> u8 {
        self.0.dims
    }
    /// Input metric.
    pub fn metric(&self) -> Metric {
        self.0.metric
    }
    /// Share of the attention graph in the affinities of the attention-aware fits.
    pub fn attention_weight(&self) -> f32 {
        self.0.attention_weight
    }
    /// Weight of the per-query attention term of the attention-aware fits.
    pub fn attention_kl(&self) -> f32 {
        self.0.attention_kl
    }
    /// Neighbours needed for `n` points: `min(n - 1, floor(3 * perplexity))`, at least 1.
    pub fn neighbors_for(&self, n: usize) -> usize {
        ((3.0 * self.0.perplexity as f64).floor() as usize).clamp(1, n.saturating_sub(1).max(1))
    }

    /// Fits t-SNE: builds the kNN graph with [`knn()`] (exact up to
    /// [`crate::knn::EXACT_KNN_MAX_N`] points, NN-descent above), then [`Self::fit_knn`].
    pub fn fit(&self, data: &Matrix) -> Result<Embedding, ProjectError> {
        check_data(data)?;
        self.check_dims(data)?;
        let graph = knn(
            data,
            self.neighbors_for(data.rows()),
            self.0.metric,
            self.0.seed,
        )?;
        self.fit_knn(data, &graph)
    }

    /// Fits t-SNE on a precomputed kNN graph of `data` (e.g. shared with UMAP). Uses the first
    /// `min(graph.k, floor(3 * perplexity))` neighbours; when the graph has fewer than
    /// `3 * perplexity` neighbours the perplexity is clamped to `graph.k / 3`. `data` is used for
    /// the PCA initialization only. `objective` is the final KL(P || Q), exact for exact repulsion
    /// and with the approximate normalization `Z` of Barnes-Hut / FFT otherwise.
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
        check_data(data)?;
        self.check_dims(data)?;
        edges.check_points(data.rows())?;
        let graph = knn(
            data,
            self.neighbors_for(data.rows()),
            self.0.metric,
            self.0.seed,
        )?;
        self.fit_knn_with_attention(data, &graph, edges)
    }

    /// Attention-aware [`Self::fit_knn`] of a head's joint query/key set (`data` has `2n` rows,
    /// queries first): the joint affinities are `P = (1 - w) P_knn + w P_att` with `w` =
    /// [`TsneParams::attention_weight`], `P_knn` the usual symmetric kNN affinities and `P_att`
    /// the attention edges made symmetric, `P_att(i, n + j) = P_att(n + j, i) = a_ij / 2S` (`a_ij`
    /// per-query normalized, `S` their sum), so that both sum to 1; the per-query attention term
    /// ([`TsneParams::attention_kl`]) joins the gradient after early exaggeration. With `w = 0` and
    /// `attention_kl = 0`, or no edges, the result is bit-identical to [`Self::fit_knn`]. The
    /// effective `w` and `lambda` are recorded in `spec.params["attention_weight"]` and
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
        check_data(data)?;
        self.check_dims(data)?;
        graph.validate()?;
        let n = data.rows();
        if graph.n != n {
            return Err(ProjectError::InvalidInput(format!(
                "kNN graph has {} points, data {n}",
                graph.n
            )));
        }
        let s = &self.0;
        let perplexity = (s.perplexity as f64)
            .min((n - 1) as f64 / 3.0)
            .min(graph.k as f64 / 3.0);
        let k = self.neighbors_for(n).min(graph.k).max(1);
        let cond = affinity::conditional(graph, k, perplexity);
        let mut p = affinity::symmetrize(graph, k, &cond);
        drop(cond);
        let mut attention_weight = 0.0;
        if let Some(edges) = edges
            && s.attention_weight > 0.0
            && !edges.is_empty()
        {
            p = affinity::mix_attention(&p, edges, s.attention_weight as f64);
            attention_weight = s.attention_weight;
        }
        let p_log_p = p
            .vals
            .iter()
            .filter(|&&v| v > 0.0)
            .map(|&v| v as f64 * (v as f64).ln())
            .sum();
        let attention_kl = KlTerm::new(
            edges,
            s.attention_kl,
            s.attention_kernel,
            LayoutKernel::StudentT,
        );
        let problem = Problem {
            p,
            p_log_p,
            perplexity,
            k,
            attention_weight,
            attention_kl,
        };
        let method = match s.repulsion {
            Repulsion::Auto if n < EXACT_MAX_N => Repulsion::Exact,
            // Stays `Auto`: FFT or Barnes-Hut is picked per iteration in `gradient`.
            Repulsion::Auto if s.dims == 2 && n >= FFT_MIN_N => Repulsion::Auto,
            Repulsion::Auto => Repulsion::BarnesHut,
            other => other,
        };
        let (coords, kl) = if s.dims == 2 {
            let y0 = self.initial::<2>(data)?;
            let (y, kl) = self.optimize(&problem, y0, method)?;
            (y.into_iter().flatten().collect::<Vec<f32>>(), kl)
        } else {
            let y0 = self.initial::<3>(data)?;
            let (y, kl) = self.optimize(&problem, y0, method)?;
            (y.into_iter().flatten().collect::<Vec<f32>>(), kl)
        };
        if coords.iter().any(|v| !v.is_finite()) {
            // Only reachable with extreme user settings (e.g. a huge fixed learning rate).
            return Err(ProjectError::InvalidInput(
                "t-SNE diverged to non-finite coordinates; lower the learning rate".into(),
            ));
        }
        let coords = Matrix::from_vec(n, s.dims as usize, coords)
            .map_err(|e| ProjectError::InvalidInput(format!("internal shape error: {e}")))?;
        Ok(Embedding {
            coords,
            objective: Some(kl as f32),
            spec: self.spec(n, &problem, method),
        })
    }

    fn check_dims(&self, data: &Matrix) -> Result<(), ProjectError> {
        if self.0.dims as usize > data.cols() {
            return Err(ProjectError::InvalidParam {
                name: "dims",
                reason: format!(
                    "{} output dimensions exceed the {} input dimensions",
                    self.0.dims,
                    data.cols()
                ),
            });
        }
        Ok(())
    }

    fn spec(&self, n: usize, problem: &Problem, method: Repulsion) -> ProjectionSpec {
        let s = &self.0;
        let mut params = BTreeMap::new();
        params.insert("perplexity".into(), problem.perplexity);
        params.insert("perplexity_requested".into(), s.perplexity as f64);
        params.insert("n_neighbors".into(), problem.k as f64);
        params.insert("iterations".into(), s.iterations as f64);
        params.insert("early_exaggeration".into(), s.early_exaggeration as f64);
        params.insert(
            "exaggeration_iterations".into(),
            s.exaggeration_iterations as f64,
        );
        params.insert("learning_rate".into(), self.learning_rate(n) as f64);
        params.insert(
            "learning_rate_auto".into(),
            if s.learning_rate.is_none() { 1.0 } else { 0.0 },
        );
        params.insert("theta".into(), s.theta as f64);
        params.insert("attention_weight".into(), problem.attention_weight as f64);
        let (lambda, kernel) = KlTerm::spec_params(problem.attention_kl.as_ref());
        params.insert("attention_kl".into(), lambda);
        params.insert("attention_kernel".into(), kernel);
        let code = match method {
            Repulsion::Exact => 0.0,
            Repulsion::BarnesHut => 1.0,
            Repulsion::Fft => 2.0,
            Repulsion::Auto => 3.0,
        };
        params.insert("repulsion".into(), code);
        params.insert(
            "init_random".into(),
            if s.init == TsneInit::Random { 1.0 } else { 0.0 },
        );
        ProjectionSpec {
            method: ProjectionMethod::Tsne,
            dims: s.dims,
            metric: s.metric,
            seed: s.seed,
            params,
        }
    }

    /// `max(n / early_exaggeration, 200)` in both phases unless set (see the module docs).
    fn learning_rate(&self, n: usize) -> f32 {
        self.0
            .learning_rate
            .unwrap_or_else(|| (n as f32 / self.0.early_exaggeration).max(200.0))
    }

    fn initial<const D: usize>(&self, data: &Matrix) -> Result<Vec<[f32; D]>, ProjectError> {
        let (n, d) = data.shape();
        if self.0.init == TsneInit::Pca {
            let rows = prepare_rows(data, self.0.metric);
            let (mean, axes, _, _) = principal_axes(&rows, n, d, D);
            let flat = crate::pca::project_rows(&rows, d, &mean, &axes, D);
            let m: f64 = flat.iter().step_by(D).map(|&v| v as f64).sum::<f64>() / n as f64;
            let var: f64 = flat
                .iter()
                .step_by(D)
                .map(|&v| (v as f64 - m).powi(2))
                .sum::<f64>()
                / n as f64;
            if var > 0.0 && var.is_finite() {
                let scale = (1e-4 / var.sqrt()) as f32;
                return Ok(flat
                    .chunks_exact(D)
                    .map(|r| std::array::from_fn(|a| r[a] * scale))
                    .collect());
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.0.seed);
        Ok((0..n)
            .map(|_| {
                std::array::from_fn(|_| {
                    let v: f32 = StandardNormal.sample(&mut rng);
                    1e-4 * v
                })
            })
            .collect())
    }

    /// Gradient descent with momentum and delta-bar-delta gains. Returns the layout and KL(P||Q);
    /// stops between iterations when the interrupt is set.
    fn optimize<const D: usize>(
        &self,
        problem: &Problem<'_>,
        mut y: Vec<[f32; D]>,
        method: Repulsion,
    ) -> Result<(Vec<[f32; D]>, f64), ProjectError> {
        let s = &self.0;
        let n = y.len();
        let mut grad = vec![[0f32; D]; n];
        let mut rep = vec![[0f32; D]; n];
        let mut update = vec![[0f32; D]; n];
        let mut gains = vec![[1f32; D]; n];
        let mut fft = fft::FftRepulsion::default();
        let mut scratch = vec![[0f32; D]; if problem.attention_kl.is_some() { n } else { 0 }];
        for it in 0..s.iterations {
            s.interrupt.check()?;
            let (exag, momentum) = if it < s.exaggeration_iterations {
                (s.early_exaggeration, 0.5f32)
            } else {
                (1.0, 0.8)
            };
            let lr = self.learning_rate(n);
            gradient(
                problem, &y, exag, method, s.theta, false, &mut grad, &mut rep, &mut fft,
            );
            // The term joins after early exaggeration: during it, on the synthetic heads, it moved
            // hit@3, fidelity and trustworthiness by under 0.01 either way, for 1/3 more of its cost.
            // A schedule that is all exaggeration has it throughout, so that it is never inert.
            if let Some(term) = &problem.attention_kl
                && (it >= s.exaggeration_iterations || s.exaggeration_iterations >= s.iterations)
            {
                kl::gradient(term.edges, &y, term.kernel, false, &mut scratch);
                // lambda times the mean over queries, over 4: t-SNE's gradient here omits its 4.
                let scale = term.lambda / (4.0 * term.edges.queries_with_edges() as f32);
                grad.par_chunks_mut(CHUNK)
                    .zip(scratch.par_chunks(CHUNK))
                    .for_each(|(gc, ac)| {
                        for (g, a) in gc.iter_mut().zip(ac) {
                            for d in 0..D {
                                g[d] += scale * a[d];
                            }
                        }
                    });
            }
            y.par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(update.par_chunks_mut(CHUNK))
                .zip(gains.par_chunks_mut(CHUNK))
                .for_each(|(((yc, gc), uc), gnc)| {
                    for (((yi, g), u), gn) in
                        yc.iter_mut().zip(gc).zip(uc.iter_mut()).zip(gnc.iter_mut())
                    {
                        for a in 0..D {
                            // Delta-bar-delta: grow the gain while the gradient keeps its direction.
                            gn[a] = if (g[a] > 0.0) != (u[a] > 0.0) {
                                gn[a] + 0.2
                            } else {
                                (gn[a] * 0.8).max(0.01)
                            };
                            u[a] = momentum * u[a] - lr * gn[a] * g[a];
                            yi[a] += u[a];
                        }
                    }
                });
            // Keep the layout centred (the objective is translation invariant; this bounds the
            // FFT grid and the tree's bounding box).
            let mut mean = [0f64; D];
            for p in &y {
                for a in 0..D {
                    mean[a] += p[a] as f64;
                }
            }
            let mean: [f32; D] = std::array::from_fn(|a| (mean[a] / n as f64) as f32);
            y.iter_mut()
                .for_each(|p| (0..D).for_each(|a| p[a] -= mean[a]));
        }
        let (kl_attr, z) = gradient(
            problem, &y, 1.0, method, s.theta, true, &mut grad, &mut rep, &mut fft,
        );
        // KL = sum P log P - sum P log w + log Z, since q_ij = w_ij / Z and sum P = 1.
        let kl = problem.p_log_p - kl_attr + z.max(f64::MIN_POSITIVE).ln();
        Ok((y, kl))
    }
}

/// Points per parallel task.
const CHUNK: usize = 256;

/// `sum_j P_ij w_ij (y_i - y_j)` over one row of `P` and, if `KL`, `-sum_j P_ij ln(1 + d_ij²)`.
/// Four interleaved accumulators break the floating-point add dependency chain, which otherwise
/// limits the loop to one neighbour per add latency.
#[inline]
fn attraction<const D: usize, const KL: bool>(
    yi: [f32; D],
    y: &[[f32; D]],
    cols: &[u32],
    vals: &[f32],
) -> ([f32; D], f32) {
    const W: usize = 4;
    let mut acc = [[0f32; D]; W];
    let mut kl = [0f32; W];
    let full = cols.len() / W * W;
    let term = |j: u32, pij: f32, acc: &mut [f32; D], kl: &mut f32| {
        let yj = y[j as usize];
        let mut dd = [0f32; D];
        let mut r2 = 0f32;
        for a in 0..D {
            dd[a] = yi[a] - yj[a];
            r2 += dd[a] * dd[a];
        }
        if KL {
            *kl -= pij * (1.0 + r2).ln();
        }
        let pw = pij / (1.0 + r2);
        for a in 0..D {
            acc[a] += pw * dd[a];
        }
    };
    for (cj, pj) in cols[..full]
        .chunks_exact(W)
        .zip(vals[..full].chunks_exact(W))
    {
        for l in 0..W {
            term(cj[l], pj[l], &mut acc[l], &mut kl[l]);
        }
    }
    for (&j, &pij) in cols[full..].iter().zip(&vals[full..]) {
        term(j, pij, &mut acc[0], &mut kl[0]);
    }
    let attr = std::array::from_fn(|a| (acc[0][a] + acc[1][a]) + (acc[2][a] + acc[3][a]));
    (attr, (kl[0] + kl[1]) + (kl[2] + kl[3]))
}

/// Writes the gradient into `grad`; returns `(sum P log w, Z)` (the first is 0 unless `want_kl`).
#[allow(clippy::too_many_arguments)]
fn gradient<const D: usize>(
    problem: &Problem<'_>,
    y: &[[f32; D]],
    exaggeration: f32,
    method: Repulsion,
    theta: f32,
    want_kl: bool,
    grad: &mut [[f32; D]],
    rep: &mut [[f32; D]],
    fft: &mut fft::FftRepulsion,
) -> (f64, f64) {
    let use_fft = |y: &[[f32; D]]| fft::padded_cells(y) <= FFT_MAX_CELLS_PER_POINT * y.len();
    let z = match method {
        Repulsion::Exact => exact::repulsion(y, rep),
        Repulsion::Auto if D == 2 && use_fft(y) => fft.repulsion(y, rep),
        Repulsion::Fft if D == 2 => fft.repulsion(y, rep),
        _ => bh::Tree::build(y).repulsion(theta, rep),
    };
    let inv_z = (1.0 / z.max(f64::MIN_POSITIVE)) as f32;
    let p = &problem.p;
    let parts: Vec<f64> = grad
        .par_chunks_mut(CHUNK)
        .zip(rep.par_chunks(CHUNK))
        .enumerate()
        .map(|(c, (gc, rc))| {
            let mut plogw = 0f64;
            for (o, (g, r)) in gc.iter_mut().zip(rc).enumerate() {
                let i = c * CHUNK + o;
                let yi = y[i];
                let (cols, vals) = p.row(i);
                let (attr, acc) = if want_kl {
                    attraction::<D, true>(yi, y, cols, vals)
                } else {
                    attraction::<D, false>(yi, y, cols, vals)
                };
                plogw += acc as f64;
                for a in 0..D {
                    g[a] = exaggeration * attr[a] - r[a] * inv_z;
                }
            }
            plogw
        })
        .collect();
    (parts.into_iter().sum(), z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// A clustered 2D/3D layout: 6 blobs of radius ~`spread / 10` inside `[-spread, spread]^D`.
    fn layout<const D: usize>(n: usize, spread: f32, seed: u64) -> Vec<[f32; D]> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centers: Vec<[f32; D]> = (0..6)
            .map(|_| std::array::from_fn(|_| rng.random_range(-spread..spread)))
            .collect();
        (0..n)
            .map(|i| {
                let c = centers[i % 6];
                std::array::from_fn(|a| c[a] + 0.1 * spread * rng.random_range(-1.0f32..1.0))
            })
            .collect()
    }

    fn rel_err<const D: usize>(a: &[[f32; D]], b: &[[f32; D]]) -> f64 {
        let (mut num, mut den) = (0f64, 0f64);
        for (x, y) in a.iter().zip(b) {
            for d in 0..D {
                num += ((x[d] - y[d]) as f64).powi(2);
                den += (y[d] as f64).powi(2);
            }
        }
        (num / den).sqrt()
    }

    #[test]
    fn fft_and_barnes_hut_match_exact_repulsion_2d() {
        // Both grid regimes: spans below and above MIN_BOXES units.
        for spread in [3.0f32, 40.0] {
            let y = layout::<2>(1500, spread, 1);
            let mut exact_f = vec![[0f32; 2]; y.len()];
            let z_exact = exact::repulsion(&y, &mut exact_f);
            let mut fft_f = vec![[0f32; 2]; y.len()];
            let z_fft = fft::FftRepulsion::default().repulsion(&y, &mut fft_f);
            let mut bh_f = vec![[0f32; 2]; y.len()];
            let z_bh = bh::Tree::build(&y).repulsion(0.5, &mut bh_f);
            let (ef, eb) = (rel_err(&fft_f, &exact_f), rel_err(&bh_f, &exact_f));
            // FIt-SNE's defaults (boxes of width 1 with 3 nodes) give ~2% relative force error on
            // these dense blobs (measured 0.020; boxes of width 1/2 give < 1%); the end-to-end
            // trustworthiness tests show this does not hurt the layouts.
            assert!(ef < 3e-2, "spread {spread}: FFT force error {ef}");
            // theta = 0.5 in bhtsne's half-width convention: a few % force error (measured 0.086 on
            // the tight spread-3 blobs, where most cells are near), shrinking with theta.
            assert!(eb < 0.12, "spread {spread}: BH force error {eb}");
            let z_fine = bh::Tree::build(&y).repulsion(0.2, &mut bh_f);
            let fine = rel_err(&bh_f, &exact_f);
            assert!(
                fine < eb / 3.0 && fine < 0.03,
                "spread {spread}: BH error {fine} at theta 0.2"
            );
            assert!(((z_fine - z_exact) / z_exact).abs() < 2e-3);
            assert!(
                ((z_fft - z_exact) / z_exact).abs() < 5e-3,
                "FFT Z {z_fft} vs {z_exact}"
            );
            // Centre-of-mass summaries underestimate Z slightly (measured -1.2% and -2.5%).
            assert!(
                ((z_bh - z_exact) / z_exact).abs() < 4e-2,
                "BH Z {z_bh} vs {z_exact}"
            );
        }
    }

    #[test]
    fn barnes_hut_matches_exact_repulsion_3d() {
        let y = layout::<3>(1500, 15.0, 2);
        let mut exact_f = vec![[0f32; 3]; y.len()];
        let z_exact = exact::repulsion(&y, &mut exact_f);
        let mut bh_f = vec![[0f32; 3]; y.len()];
        let z_bh = bh::Tree::build(&y).repulsion(0.5, &mut bh_f);
        let e = rel_err(&bh_f, &exact_f);
        assert!(e < 0.06, "BH 3D force error {e}");
        assert!(((z_bh - z_exact) / z_exact).abs() < 1e-2);
        // theta = 0 opens every cell: exact up to summation order.
        let z0 = bh::Tree::build(&y).repulsion(0.0, &mut bh_f);
        assert!(rel_err(&bh_f, &exact_f) < 1e-4);
        assert!(((z0 - z_exact) / z_exact).abs() < 1e-5);
    }

    #[test]
    fn tree_handles_duplicates() {
        let mut y = layout::<2>(300, 5.0, 3);
        for i in 0..100 {
            y[i] = [1.0, 1.0];
        }
        let mut exact_f = vec![[0f32; 2]; y.len()];
        let z_exact = exact::repulsion(&y, &mut exact_f);
        let mut bh_f = vec![[0f32; 2]; y.len()];
        let z_bh = bh::Tree::build(&y).repulsion(0.0, &mut bh_f);
        assert!(((z_bh - z_exact) / z_exact).abs() < 1e-5);
        assert!(bh_f.iter().flatten().all(|v| v.is_finite()));
    }

    mod attention {
        use attn_types::{Matrix, Metric};

        use crate::attention::synthetic::head;
        use crate::{AttentionEdges, ProjectError, Tsne, knn};

        fn bits(m: &Matrix) -> Vec<u32> {
            m.as_slice().iter().map(|v| v.to_bits()).collect()
        }

        use crate::test_support::fidelity_scores as scores;

        #[test]
        fn zero_weight_or_no_edges_is_bit_identical_to_fit_knn() {
            let h = head(400, false, 3);
            let joint = h.joint();
            let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, false).unwrap();
            let none = AttentionEdges::from_attention(&h.tokens, &[], false).unwrap();
            assert!(!edges.is_empty() && none.is_empty());
            let graph = knn(&joint, 90, Metric::Cosine, 0).unwrap();
            let params = || Tsne::params().iterations(300).seed(5);
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
            let mixed = params().attention_weight(0.2).check().unwrap();
            let no_edges = mixed.fit_knn_with_attention(&joint, &graph, &none).unwrap();
            assert_eq!(no_edges, plain);
            // The plain fits ignore the weight.
            assert_eq!(mixed.fit_knn(&joint, &graph).unwrap(), plain);
            assert_eq!(
                bits(&mixed.fit(&joint).unwrap().coords),
                bits(&params().check().unwrap().fit(&joint).unwrap().coords)
            );
            // With edges the layout changes and the spec says how it was made.
            let with = mixed
                .fit_knn_with_attention(&joint, &graph, &edges)
                .unwrap();
            assert_ne!(bits(&with.coords), bits(&plain.coords));
            assert_eq!(with.spec.params["attention_weight"], 0.2f32 as f64);
            assert_eq!(mixed.fit_with_attention(&joint, &edges).unwrap(), with);
        }

        #[test]
        fn attention_raises_hit_at_3_and_fidelity() {
            // Non-causal and causal synthetic heads of ~600 tokens (1,200 points), where plain
            // t-SNE keeps queries near their most attended keys poorly.
            for (causal, seed) in [(false, 11), (true, 12)] {
                let h = head(600, causal, seed);
                let joint = h.joint();
                let edges =
                    AttentionEdges::from_attention(&h.tokens, &h.attention, causal).unwrap();
                let fit = |w: f32| {
                    let emb = Tsne::params()
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
                let (hit, fid, trust) = fit(0.2);
                assert!(
                    hit > hit0 + MARGIN_HIT,
                    "causal {causal}: hit@3 {hit0} -> {hit}"
                );
                assert!(
                    fid > fid0 + MARGIN_FID,
                    "causal {causal}: fidelity {fid0} -> {fid}"
                );
                assert!(
                    trust > trust0 - 0.01,
                    "causal {causal}: trust {trust0} -> {trust}"
                );
            }
        }
        // Measured at w = 0.2 (plain -> attention-aware): hit@3 0.588 -> 0.835 and 0.749 -> 0.886,
        // fidelity 0.627 -> 0.694 and 0.580 -> 0.674, trustworthiness@10 -0.004 and -0.005.
        const MARGIN_HIT: f32 = 0.1;
        const MARGIN_FID: f32 = 0.03;

        #[test]
        fn invalid_weight_and_mismatched_edges_are_errors() {
            for w in [-0.1f32, 1.0, 1.5, f32::NAN, f32::INFINITY] {
                assert!(
                    matches!(
                        Tsne::params().attention_weight(w).check(),
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
            let p = Tsne::params().attention_weight(0.1).check().unwrap();
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
        fn the_per_query_term_orders_each_querys_keys() {
            // The edges alone pull a query toward its keys; the term also orders them.
            crate::test_support::assert_the_term_orders_keys(
                |joint, edges, lambda| {
                    Tsne::params()
                        .attention_weight(0.1)
                        .attention_kl(lambda)
                        .check()
                        .unwrap()
                        .fit_with_attention(joint, edges)
                        .unwrap()
                },
                KL_TEST_LAMBDA,
                KL_MARGIN_HIT,
                KL_MARGIN_FID,
            );
        }
        #[test]
        fn the_term_acts_when_every_iteration_is_exaggerated() {
            let h = head(300, false, 5);
            let joint = h.joint();
            let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, false).unwrap();
            let fit = |lambda: f32| {
                Tsne::params()
                    .iterations(100)
                    .exaggeration_iterations(100)
                    .attention_kl(lambda)
                    .check()
                    .unwrap()
                    .fit_with_attention(&joint, &edges)
                    .unwrap()
                    .coords
            };
            assert_ne!(bits(&fit(0.0)), bits(&fit(1.0)));
        }

        // Measured at lambda 0.3 (off -> on): hit@3 0.753 -> 0.848 and 0.857 -> 0.921, fidelity
        // 0.672 -> 0.685 and 0.643 -> 0.687, trustworthiness@10 -0.006 and -0.004.
        const KL_TEST_LAMBDA: f32 = 0.3;
        const KL_MARGIN_HIT: f32 = 0.05;
        const KL_MARGIN_FID: f32 = 0.005;

        #[test]
        fn same_output_on_one_and_three_threads() {
            let h = head(400, true, 4);
            let joint = h.joint();
            let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, true).unwrap();
            for dims in [2u8, 3] {
                let p = Tsne::params()
                    .dims(dims)
                    .attention_kl(1.0)
                    .attention_weight(0.2)
                    .iterations(300)
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
