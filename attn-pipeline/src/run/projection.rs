//! Projections of stored heads: the settings, the projector of each method, which stored layouts
//! are still valid, and the layout of one head (shared kNN graph, quality, fidelity).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use attn_project::{AttendedKeys, Embedding, Pca, Projector, Tsne, Umap, UmapInit};
use attn_store::Dataset;
use attn_types::{
    Fidelity, HeadId, HeadProjection, HeadVectors, Matrix, Metric, ProjectionMethod,
    SequenceAttention, TokenTable,
};
use rayon::prelude::*;

use crate::error::{Context, PipelineError, Result, bail};
use crate::progress::{Control, Stage};

use super::resume::{lock_dataset, refuse_window_blind};
use super::store::attended_keys;
use super::summary::{RunSummary, dataset_summary};

/// Query points sampled for each projection's trustworthiness/continuity: a trust indicator needs
/// about +-0.005, which 1,000 queries give, at a quarter of the cost of attn-project's default 4,000.
pub(super) const QUALITY_QUERIES: usize = 1_000;

/// Neighbours of the trustworthiness/continuity estimate (fewer for tiny heads, where the metric
/// needs `k < n / 2`).
pub(super) const QUALITY_K: usize = 10;

/// Projection settings shared by `run` and `project`.
#[derive(Debug, Clone)]
pub struct ProjectionSettings {
    /// Methods to run.
    pub methods: Vec<ProjectionMethod>,
    /// Output dimensions to produce (2 and/or 3).
    pub dims: Vec<u8>,
    /// Input metric.
    pub metric: Metric,
    /// Seed of every fit.
    pub seed: u64,
    /// t-SNE perplexity.
    pub perplexity: f32,
    /// t-SNE iterations (early exaggeration included).
    pub tsne_iterations: usize,
    /// UMAP neighbours.
    pub n_neighbors: usize,
    /// UMAP min_dist.
    pub min_dist: f32,
    /// Compute trustworthiness etc. for every projection.
    pub quality: bool,
    /// Share `w` of attention edges mixed into t-SNE's affinities, in `[0, 1)`: 0 gives plain
    /// t-SNE (see attn-project's attention-aware layouts).
    pub tsne_attention_weight: f32,
    /// The same for UMAP's fuzzy graph.
    pub umap_attention_weight: f32,
    /// Weight `lambda >= 0` of t-SNE's per-query attention term, which makes each query's own keys
    /// compete for it as in attention's softmax (attn-project's `TsneParams::attention_kl`); 0
    /// leaves it out.
    pub tsne_attention_kl: f32,
    /// The same for UMAP (`UmapParams::attention_kl`).
    pub umap_attention_kl: f32,
    /// Compute each head's ceiling in every dimension count laid out (attn-project's
    /// `ceiling`): the fidelity and hit@3 a layout of that many dimensions can reach on the head,
    /// stored beside each of its projections.
    pub ceiling: bool,
    /// UMAP's initial layout.
    pub umap_init: UmapInit,
    /// Which vectors are laid out.
    pub vectors: LayoutVectors,
}

/// attnviz's default [`ProjectionSettings::tsne_attention_kl`]. On all-MiniLM-L6-v2 (12 heads, with
/// the attention share 0.1; `benches/results/fidelity-all-MiniLM-L6-v2-2026-12-06.md`), lambda 0.1 /
/// 0.3 / 1 / 3 took hit@3 0.667 -> 0.736 / 0.814 / 0.899 / 0.941 and fidelity 0.451 -> 0.484 / 0.529
/// / 0.587 / 0.635 at trustworthiness@10 0.986 -> 0.987 / 0.986 / 0.984 / 0.978.
pub const DEFAULT_TSNE_ATTENTION_KL: f32 = 3.0;
/// attnviz's default [`ProjectionSettings::umap_attention_kl`]. On the same heads lambda 1 / 3 / 10
/// / 30 took hit@3 0.726 -> 0.808 / 0.866 / 0.915 / 0.935 and fidelity 0.471 -> 0.498 / 0.520 /
/// 0.541 / 0.567 at trustworthiness@10 0.947 -> 0.948 / 0.948 / 0.947 / 0.949.
pub const DEFAULT_UMAP_ATTENTION_KL: f32 = 30.0;
/// attnviz's default [`ProjectionSettings::ceiling`]: on, as it cost 1.2 s a head against ~17 s
/// for the head's three layouts on the same run.
pub const DEFAULT_CEILING: bool = true;

/// Which of a head's stored vectors a layout is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutVectors {
    /// The normalized vectors (key translation + query/key scaling) when the head has them, else the
    /// raw ones.
    #[default]
    Normalized,
    /// The raw vectors, as the model computed them.
    Raw,
}

impl ProjectionSettings {
    /// attnviz's default layouts: t-SNE (perplexity 30, 750 iterations) and UMAP (15 neighbours,
    /// min_dist 0.1, PCA init), cosine, seed 0, laid out from the **raw** vectors with attention
    /// edges mixed into the neighbour graphs (share 0.1 for both), so that a query lies near the keys
    /// it attends to, and the per-query attention term ([`DEFAULT_TSNE_ATTENTION_KL`],
    /// [`DEFAULT_UMAP_ATTENTION_KL`]), so that its keys lie in the order of its attention; each
    /// head's ceiling computed beside its layouts. Measured on all-MiniLM-L6-v2
    /// (`benches/results/fidelity-all-MiniLM-L6-v2-2026-12-06.md`, 12 heads): against the paper's
    /// normalized vectors without edges, t-SNE hit@3 0.22 -> 0.94 and fidelity 0.19 -> 0.64 with
    /// trustworthiness@10 0.974 -> 0.978; UMAP 0.15 -> 0.94 and 0.14 -> 0.57 with 0.915 -> 0.949.
    /// Larger shares alone raised neither hit@3 nor fidelity much and cost trustworthiness.
    pub fn attnviz(methods: Vec<ProjectionMethod>, dims: Vec<u8>) -> Self {
        ProjectionSettings {
            methods,
            dims,
            metric: Metric::Cosine,
            seed: 0,
            perplexity: 30.0,
            tsne_iterations: 750,
            n_neighbors: 15,
            min_dist: 0.1,
            quality: true,
            tsne_attention_weight: 0.1,
            umap_attention_weight: 0.1,
            tsne_attention_kl: DEFAULT_TSNE_ATTENTION_KL,
            umap_attention_kl: DEFAULT_UMAP_ATTENTION_KL,
            ceiling: DEFAULT_CEILING,
            umap_init: UmapInit::Pca,
            vectors: LayoutVectors::Raw,
        }
    }

    /// The AttentionViz research code's layouts (`shared/reference/technique.md` §3): normalized
    /// vectors, cosine, t-SNE perplexity 50 with 300 iterations, UMAP with random init, seed 0, 15
    /// neighbours, min_dist 0.1, no attention edges.
    pub fn paper(methods: Vec<ProjectionMethod>, dims: Vec<u8>) -> Self {
        ProjectionSettings {
            perplexity: 50.0,
            tsne_iterations: 300,
            tsne_attention_weight: 0.0,
            umap_attention_weight: 0.0,
            tsne_attention_kl: 0.0,
            umap_attention_kl: 0.0,
            umap_init: UmapInit::Random,
            vectors: LayoutVectors::Normalized,
            ..Self::attnviz(methods, dims)
        }
    }
}

/// Checks every projection setting (builds each projector once), before any work.
pub fn check_settings(settings: &ProjectionSettings) -> Result<()> {
    if let Some(d) = settings.dims.iter().find(|d| !matches!(d, 2 | 3)) {
        bail!("dims: {d} is not 2 or 3 (--dims)");
    }
    for &m in &settings.methods {
        for &d in &settings.dims {
            projector(settings, m, d)?;
        }
    }
    Ok(())
}

/// Every (head, method, dims) projection the settings ask for, head by head.
pub(super) fn projection_tasks(
    heads: &[HeadId],
    s: &ProjectionSettings,
) -> Vec<(HeadId, ProjectionMethod, u8)> {
    heads
        .iter()
        .flat_map(|&h| {
            s.methods
                .iter()
                .flat_map(move |&m| s.dims.iter().map(move |&d| (h, m, d)))
        })
        .collect()
}

/// Builds the projector of one method and dimension count.
pub fn projector(s: &ProjectionSettings, method: ProjectionMethod, dims: u8) -> Result<Projector> {
    Ok(match method {
        ProjectionMethod::Tsne => Projector::Tsne(
            Tsne::params()
                .dims(dims)
                .perplexity(s.perplexity)
                .iterations(s.tsne_iterations)
                .metric(s.metric)
                .seed(s.seed)
                .attention_weight(s.tsne_attention_weight)
                .attention_kl(s.tsne_attention_kl)
                .check()?,
        ),
        ProjectionMethod::Umap => Projector::Umap(
            Umap::params()
                .dims(dims)
                .n_neighbors(s.n_neighbors)
                .min_dist(s.min_dist)
                .metric(s.metric)
                .seed(s.seed)
                .init(s.umap_init)
                .attention_weight(s.umap_attention_weight)
                .attention_kl(s.umap_attention_kl)
                .check()?,
        ),
        ProjectionMethod::Pca => Projector::Pca(Pca::params().dims(dims).check()?),
    })
}

/// Projects the given tasks that are not on disk yet (or not made with `settings`). Returns
/// (computed, reused).
///
/// Work is done head by head: each head's vectors and attention are read once, and one kNN graph
/// (with as many neighbours as the most demanding method needs: t-SNE's `3 * perplexity`, UMAP's
/// `n_neighbors - 1`) serves every t-SNE and UMAP fit of that head. Each projection is written as
/// soon as it is done, with its quality and attention fidelity.
pub fn project_heads(
    dataset: &Dataset,
    tasks: &[(HeadId, ProjectionMethod, u8)],
    settings: &ProjectionSettings,
    control: Control<'_>,
) -> Result<(usize, usize)> {
    compute_projections(dataset, tasks, settings, false, control)
}

/// [`project_heads`], every task recomputed when `force`. A recomputed projection replaces the
/// stored one only when it is whole (written to a temporary file and renamed): an interruption or
/// a failing head leaves every other head's stored projection in place.
fn compute_projections(
    dataset: &Dataset,
    tasks: &[(HeadId, ProjectionMethod, u8)],
    settings: &ProjectionSettings,
    force: bool,
    control: Control<'_>,
) -> Result<(usize, usize)> {
    // A stored projection is reused only when it was made with the settings asked for now.
    let mut pending = Vec::new();
    for &(h, m, d) in tasks {
        let reusable = !force && dataset.has_projection(h, m, d) && {
            let stored = dataset.read_projection(h, m, d)?;
            made_with(&stored.spec, settings, dataset.has_attention(h))
                // One stored under `--no-quality` lacks the numbers this run reports: it is made
                // again (the same coordinates, as the settings are the same) with them.
                && !(settings.quality
                    && stored.quality.is_none()
                    && quality_k(stored.coords.rows()) > 0)
                // Likewise one stored without the ceiling a run now asks for (a head with queries
                // to measure; the layout is the same).
                && !(settings.ceiling
                    && stored.ceiling.is_none()
                    && stored.fidelity.is_some_and(|f| f.queries > 0))
        };
        if !reusable {
            pending.push((h, m, d));
        }
    }
    let reused = tasks.len() - pending.len();
    if pending.is_empty() {
        return Ok((0, reused));
    }
    let mut projectors = BTreeMap::new();
    for &(_, m, d) in &pending {
        if let std::collections::btree_map::Entry::Vacant(e) = projectors.entry((m, d)) {
            e.insert(projector(settings, m, d)?.with_interrupt(control.interrupt()));
        }
    }
    let mut by_head: BTreeMap<HeadId, Vec<(ProjectionMethod, u8)>> = BTreeMap::new();
    for &(h, m, d) in &pending {
        by_head.entry(h).or_default().push((m, d));
    }
    let by_head: Vec<_> = by_head.into_iter().collect();
    let tokens = dataset.read_tokens()?;
    let keys = attended_keys(&dataset.meta().model)?;
    let progress = control.start(Stage::Project, pending.len());
    by_head
        .par_iter()
        .try_for_each(|(head, wanted)| -> Result<()> {
            if control.cancelled() {
                return Ok(());
            }
            let input = HeadLayoutInput::read(dataset, *head)?;
            let wanted: Vec<&Projector> = wanted.iter().map(|md| &projectors[md]).collect();
            let laid_out = layout_head(
                &input,
                &tokens,
                keys(*head),
                &wanted,
                settings,
                &|| control.cancelled(),
                &mut |projection, _| {
                    dataset.write_projection(&projection)?;
                    progress.inc();
                    Ok(())
                },
            );
            match laid_out {
                // Stopped within a fit (Ctrl-C): the head's unfinished layout is not stored.
                Err(e)
                    if control.cancelled()
                        && matches!(
                            e.root(),
                            PipelineError::Project(attn_project::ProjectError::Interrupted)
                        ) =>
                {
                    Ok(())
                }
                other => other,
            }
        })?;
    Ok((progress.done(), reused))
}

/// What the stored layouts of `heads` used in place of the settings asked for: t-SNE's perplexity
/// and UMAP's neighbours are clamped to what a head's points allow, each spec recording the value
/// used and the request. One line per method and flag.
pub(super) fn clamp_warnings(
    dataset: &Dataset,
    heads: &[HeadId],
    settings: &ProjectionSettings,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for &method in &settings.methods {
        let (flag, used_key, asked_key) = match method {
            ProjectionMethod::Tsne => ("--perplexity", "perplexity", "perplexity_requested"),
            ProjectionMethod::Umap => ("--n-neighbors", "n_neighbors", "n_neighbors_requested"),
            ProjectionMethod::Pca => continue,
        };
        // Every head lays out as many points (its tokens' queries and keys): one tells for all.
        let stored = settings.dims.iter().find_map(|&dims| {
            heads
                .iter()
                .find(|&&h| dataset.has_projection(h, method, dims))
                .map(|&h| (h, dims))
        });
        let Some((head, dims)) = stored else {
            continue;
        };
        let p = dataset.read_projection(head, method, dims)?;
        let (Some(&used), Some(&asked)) =
            (p.spec.params.get(used_key), p.spec.params.get(asked_key))
        else {
            continue;
        };
        if used < asked {
            warnings.push(format!(
                "{flag} {asked}: {method} used {} ({} points allow no more); the projections record both",
                (used * 10.0).round() / 10.0,
                p.coords.rows()
            ));
        }
    }
    Ok(warnings)
}

/// The neighbourhood size of the quality metrics for a layout of `points` (queries and keys): at
/// most [`QUALITY_K`], and 0 (none computed) when the head is too small.
pub(super) fn quality_k(points: usize) -> usize {
    QUALITY_K.min((points / 2).saturating_sub(1))
}

/// Spec parameter: 1 when the quality numbers stored beside a layout were computed under the cosine
/// metric, 0 under the Euclidean one.
const QUALITY_METRIC_COSINE: &str = "quality_metric_cosine";
/// Spec parameter: the seed of the attention fidelity stored beside a layout (its query sample).
const FIDELITY_SEED: &str = "fidelity_seed";

/// Whether a stored projection's spec is what `settings` would make now: the vectors laid out (raw
/// or normalized) for every method, and for t-SNE and UMAP the metric, seed and every parameter
/// that the settings control. The attention shares are compared as applied: a head without
/// attention records 0. PCA's coordinates depend on none of these, but the quality and fidelity
/// stored beside them do (the metric and the seed): those are compared as recorded
/// ([`QUALITY_METRIC_COSINE`], [`FIDELITY_SEED`]; a PCA stored before they were is made again).
pub(super) fn made_with(
    spec: &attn_types::ProjectionSpec,
    settings: &ProjectionSettings,
    has_attention: bool,
) -> bool {
    let applied = |w: f32| if has_attention { f64::from(w) } else { 0.0 };
    let param = |key: &str| spec.params.get(key).copied();
    let same = |key: &str, want: f64| {
        param(key).is_some_and(|v| (v - want).abs() <= 1e-6 * want.abs().max(1.0))
    };
    // Every method lays out the vectors asked for; PCA depends on nothing else the settings hold.
    let same_vectors = param("vectors_raw").unwrap_or(0.0)
        == f64::from(u8::from(settings.vectors == LayoutVectors::Raw));
    let common = spec.metric == settings.metric && spec.seed == settings.seed;
    let evaluated_alike = param(QUALITY_METRIC_COSINE)
        == Some(f64::from(u8::from(settings.metric == Metric::Cosine)))
        && param(FIDELITY_SEED) == Some(settings.seed as f64);
    same_vectors
        && (common || spec.method == ProjectionMethod::Pca)
        && match spec.method {
            ProjectionMethod::Tsne => {
                same("perplexity_requested", f64::from(settings.perplexity))
                    && same("iterations", settings.tsne_iterations as f64)
                    && param("attention_weight").unwrap_or(0.0)
                        == applied(settings.tsne_attention_weight)
                    && param("attention_kl").unwrap_or(0.0) == applied(settings.tsne_attention_kl)
            }
            ProjectionMethod::Umap => {
                same("n_neighbors_requested", settings.n_neighbors as f64)
                    && same("min_dist", f64::from(settings.min_dist))
                    && param("init") == Some(settings.umap_init.code())
                    && param("attention_weight").unwrap_or(0.0)
                        == applied(settings.umap_attention_weight)
                    && param("attention_kl").unwrap_or(0.0) == applied(settings.umap_attention_kl)
            }
            ProjectionMethod::Pca => evaluated_alike,
        }
}

/// The stored data of one head that its layouts need.
#[derive(Debug, Clone)]
pub struct HeadLayoutInput {
    /// The raw vectors (their dot products are the attention logits).
    pub raw: HeadVectors,
    /// The normalized vectors, when stored.
    pub normalized: Option<HeadVectors>,
    /// The head's attention, one matrix per sequence (empty when the dataset has none).
    pub attention: Vec<SequenceAttention>,
}

impl HeadLayoutInput {
    /// Reads one head of a dataset.
    pub fn read(dataset: &Dataset, head: HeadId) -> Result<Self> {
        let stored = dataset.read_head(head)?;
        let attention = if dataset.has_attention(head) {
            dataset.read_attention(head)?
        } else {
            Vec::new()
        };
        Ok(HeadLayoutInput {
            raw: stored.raw,
            normalized: stored.normalized.map(|n| n.vectors),
            attention,
        })
    }

    /// The attention fidelity of a joint layout of this head (queries first), against its raw
    /// vectors' logits and its attention.
    pub fn layout_fidelity(
        &self,
        coords: &Matrix,
        tokens: &TokenTable,
        keys: AttendedKeys,
        seed: u64,
    ) -> Result<Fidelity> {
        Ok(attn_project::fidelity(
            attn_project::FidelitySpace::Layout(coords),
            self.raw.queries(),
            self.raw.keys(),
            tokens,
            &self.attention,
            keys,
            seed,
        )?)
    }

    /// The vectors `which` asks for (the raw ones when no normalized ones are stored).
    pub fn vectors(&self, which: LayoutVectors) -> &HeadVectors {
        match (which, &self.normalized) {
            (LayoutVectors::Normalized, Some(n)) => n,
            _ => &self.raw,
        }
    }
}

/// Lays out one head with each of `projectors` (t-SNE, UMAP, PCA, any dims), sharing one joint
/// matrix, one kNN graph (as many neighbours as the most demanding method needs) and one set of
/// attention edges between them. Each finished layout, with its quality (when
/// `settings.quality`) and attention fidelity, goes to `done` with the seconds it took (its share of
/// the shared graph included); `cancelled` is polled between layouts.
pub fn layout_head(
    input: &HeadLayoutInput,
    tokens: &TokenTable,
    keys: AttendedKeys,
    projectors: &[&Projector],
    settings: &ProjectionSettings,
    cancelled: &dyn Fn() -> bool,
    done: &mut dyn FnMut(HeadProjection, f64) -> Result<()>,
) -> Result<()> {
    let head = input.raw.head();
    let vectors = input.vectors(settings.vectors);
    let joint: Matrix = vectors.joint();
    let n = joint.rows();
    let shared_start = Instant::now();
    let k = projectors.iter().filter_map(|p| p.neighbors_for(n)).max();
    let graph = match k {
        Some(k) if n >= 2 => Some(
            attn_project::knn(&joint, k.clamp(1, n - 1), settings.metric, settings.seed)
                .with_context(|| format!("kNN graph of head {head}"))?,
        ),
        _ => None,
    };
    let edges = if (settings.ceiling || projectors.iter().any(|p| p.uses_attention()))
        && !input.attention.is_empty()
    {
        Some(
            attn_project::attention_edges(tokens, &input.attention, keys)
                .with_context(|| format!("attention edges of head {head}"))?,
        )
    } else {
        None
    };
    let shared_seconds = shared_start.elapsed().as_secs_f64() / projectors.len().max(1) as f64;
    // The head's ceiling per dimension count, made when its first layout of that many dimensions
    // is (and its time counted with that layout's).
    let mut ceilings: BTreeMap<u8, Option<Fidelity>> = BTreeMap::new();
    for &projector in projectors {
        if cancelled() {
            return Ok(());
        }
        let start = Instant::now();
        let method = projector.method();
        let dims = projector.dims();
        // Like t-SNE's perplexity, UMAP's neighbour count is clamped to what the head's points
        // allow (and the request recorded), rather than failing on a small head.
        let clamped = match projector {
            // UMAP takes fewer neighbours than points (itself excluded).
            Projector::Umap(p) if p.n_neighbors() >= n => {
                let mut s = settings.clone();
                s.n_neighbors = n.saturating_sub(1).max(2);
                Some(self::projector(&s, method, dims)?.with_interrupt(p.interrupt().clone()))
            }
            _ => None,
        };
        let projector = clamped.as_ref().unwrap_or(projector);
        let mut fit: Embedding = match (&graph, &edges) {
            (Some(g), Some(e)) => projector.fit_knn_with_attention(&joint, g, e),
            (Some(g), None) => projector.fit_knn(&joint, g),
            (None, _) => projector.fit(&joint),
        }
        .with_context(|| format!("projecting head {head} with {method} {dims}D"))?;
        if method == ProjectionMethod::Umap {
            fit.spec
                .params
                .insert("n_neighbors_requested".into(), settings.n_neighbors as f64);
        }
        fit.spec.params.insert(
            "vectors_raw".into(),
            f64::from(u8::from(std::ptr::eq(vectors, &input.raw))),
        );
        fit.spec.params.insert(
            QUALITY_METRIC_COSINE.into(),
            f64::from(u8::from(settings.metric == Metric::Cosine)),
        );
        fit.spec
            .params
            .insert(FIDELITY_SEED.into(), settings.seed as f64);
        let k = quality_k(n);
        let quality = if settings.quality && k > 0 {
            Some(attn_project::quality_sampled(
                &joint,
                &fit.coords,
                k,
                settings.metric,
                QUALITY_QUERIES,
            )?)
        } else {
            None
        };
        let fidelity = input
            .layout_fidelity(&fit.coords, tokens, keys, settings.seed)
            .with_context(|| format!("fidelity of head {head} {method} {dims}D"))?;
        let ceiling = match (&edges, settings.ceiling) {
            (Some(edges), true) => match ceilings.get(&dims) {
                Some(known) => *known,
                None => {
                    let made = head_ceiling(
                        input,
                        tokens,
                        keys,
                        edges,
                        dims,
                        settings.seed,
                        projector.interrupt(),
                    )
                    .with_context(|| format!("{dims}-D ceiling of head {head}"))?;
                    *ceilings.entry(dims).or_insert(made)
                }
            },
            _ => None,
        };
        let seconds = start.elapsed().as_secs_f64() + shared_seconds;
        done(
            HeadProjection {
                head,
                spec: fit.spec,
                coords: fit.coords,
                objective: fit.objective,
                quality,
                fidelity: Some(fidelity),
                ceiling,
            },
            seconds,
        )?;
    }
    Ok(())
}

/// The fidelity of a head's ceiling layout in `dims` dimensions (attn-project's `ceiling`), `None`
/// when nothing can be measured (no query with enough keys). `interrupt` stops it between steps.
pub fn head_ceiling(
    input: &HeadLayoutInput,
    tokens: &TokenTable,
    keys: AttendedKeys,
    edges: &attn_project::AttentionEdges,
    dims: u8,
    seed: u64,
    interrupt: attn_project::Interrupt,
) -> Result<Option<Fidelity>> {
    let ceiling = attn_project::AttentionCeiling::params()
        .dims(dims)
        .seed(seed)
        .interrupt(interrupt)
        .check()?
        .fit(edges)?;
    let fidelity = input.layout_fidelity(&ceiling.coords, tokens, keys, seed)?;
    Ok((fidelity.queries > 0).then_some(fidelity))
}

/// `attnviz project`: projects the heads of an existing dataset.
pub fn project_dataset(
    dir: &Path,
    only: Option<&[HeadId]>,
    force: bool,
    settings: &ProjectionSettings,
    control: Control<'_>,
) -> Result<RunSummary> {
    let start = Instant::now();
    let dataset = Dataset::open(dir)?;
    refuse_window_blind(
        dataset.meta(),
        dir,
        "make it again into a new --out directory",
    )?;
    let _lock = lock_dataset(dir, None)?;
    dataset.remove_stale_temp_files()?;
    let stored = dataset.heads()?;
    let heads: Vec<HeadId> = match only {
        Some(list) => {
            if let Some(missing) = list.iter().find(|h| !stored.contains(h)) {
                bail!(
                    "--head {missing}: {} has no vectors for this head",
                    dir.display()
                );
            }
            list.to_vec()
        }
        None => stored,
    };
    if heads.is_empty() {
        bail!(
            "{}: the dataset has no heads yet; run `attnviz extract` first",
            dir.display()
        );
    }
    let tasks = projection_tasks(&heads, settings);
    // Never removed first: each old projection stays until its successor is written whole.
    let (computed, reused) = compute_projections(&dataset, &tasks, settings, force, control)?;
    let mut summary = dataset_summary(dir)?;
    summary.warnings = clamp_warnings(&dataset, &heads, settings)?;
    summary.heads = heads.len();
    summary.projections_computed = computed;
    summary.projections_reused = reused;
    summary.interrupted = control.cancelled();
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}
