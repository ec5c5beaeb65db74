//! What a dataset holds, as the per-head summary table and `attnviz info` show it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attn_store::Dataset;
use attn_types::{DatasetMeta, Fidelity, HeadId};

use crate::error::Result;

/// Per-head line of the summary table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeadSummary {
    /// Head id `L{l}H{h}`.
    pub head: String,
    /// Layer.
    pub layer: u16,
    /// Head.
    pub head_index: u16,
    /// Spearman(cosine distance, dot) before normalization.
    pub spearman_cosine_before: Option<f32>,
    /// The same after.
    pub spearman_cosine_after: Option<f32>,
    /// Chosen query scale c.
    pub scale: Option<f32>,
    /// Mean |q| - mean |k| before normalization.
    pub norm_gap: Option<f32>,
    /// Trustworthiness@k of each stored projection, by `method_dims`.
    pub trustworthiness: BTreeMap<String, f32>,
    /// Attention fidelity of each stored projection, by `method_dims`.
    pub fidelity: BTreeMap<String, Fidelity>,
    /// The seed each stored projection was made with (its spec's), by `method_dims`: `project
    /// --seed` may have made it with another seed than the run's.
    pub seeds: BTreeMap<String, u64>,
    /// Attention fidelity of the raw vectors (cosine), when the head has attention.
    pub fidelity_raw: Option<Fidelity>,
    /// Attention fidelity of the normalized vectors (cosine), when the head has attention.
    pub fidelity_normalized: Option<Fidelity>,
    /// The head's ceiling (the fidelity any layout of that many dimensions can reach), by `<dims>d`,
    /// when computed.
    pub ceiling: BTreeMap<String, Fidelity>,
}

/// What a run did, for the summary and `--json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Dataset directory.
    pub dataset: PathBuf,
    /// Model id.
    pub model: String,
    /// Sequences in the corpus.
    pub sequences: usize,
    /// Tokens in the corpus.
    pub tokens: usize,
    /// Heads handled by this invocation.
    pub heads: usize,
    /// Heads whose vectors were extracted now (the rest were on disk).
    pub heads_extracted: usize,
    /// Projections computed now.
    pub projections_computed: usize,
    /// Projections found on disk and kept.
    pub projections_reused: usize,
    /// Whether Ctrl-C stopped the run early.
    pub interrupted: bool,
    /// Seconds spent.
    pub seconds: f64,
    /// Per-head numbers.
    pub per_head: Vec<HeadSummary>,
    /// Figures written.
    pub figures: Vec<PathBuf>,
    /// What a user should know about the results: a setting clamped to what the data allows.
    pub warnings: Vec<String>,
}

impl RunSummary {
    /// The summary of a call that had nothing to do (an empty shard): no head, nothing written.
    pub(crate) fn nothing_to_do(dataset: PathBuf, model: String, seconds: f64) -> Self {
        RunSummary {
            dataset,
            model,
            sequences: 0,
            tokens: 0,
            heads: 0,
            heads_extracted: 0,
            projections_computed: 0,
            projections_reused: 0,
            interrupted: false,
            seconds,
            per_head: Vec::new(),
            figures: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Per-head summary rows from what is on disk (file footers and projections; no vectors are read).
pub fn summarize(dataset: &Dataset, heads: &[HeadId]) -> Result<Vec<HeadSummary>> {
    heads
        .iter()
        .filter(|h| dataset.has_head(**h))
        .map(|&h| {
            let normalization = dataset.read_head_normalization(h)?;
            let diag = normalization.as_ref().map(|(_, d)| *d);
            let scale = normalization.as_ref().map(|(p, _)| p.scale);
            let mut trust = BTreeMap::new();
            let mut fidelity = BTreeMap::new();
            let mut ceiling = BTreeMap::new();
            let mut seeds = BTreeMap::new();
            for (m, d) in dataset.projections(h) {
                let p = dataset.read_projection(h, m, d)?;
                seeds.insert(format!("{m}_{d}d"), p.spec.seed);
                if let Some(q) = p.quality {
                    trust.insert(format!("{m}_{d}d"), q.trustworthiness);
                }
                if let Some(f) = p.fidelity {
                    fidelity.insert(format!("{m}_{d}d"), f);
                }
                if let Some(c) = p.ceiling {
                    ceiling.insert(format!("{d}d"), c);
                }
            }
            Ok(HeadSummary {
                head: h.to_string(),
                layer: h.layer,
                head_index: h.head,
                spearman_cosine_before: diag.map(|d| d.spearman_cosine_before),
                spearman_cosine_after: diag.map(|d| d.spearman_cosine_after),
                scale,
                norm_gap: diag.map(|d| d.norm_gap),
                trustworthiness: trust,
                fidelity,
                seeds,
                fidelity_raw: diag.and_then(|d| d.fidelity_raw),
                fidelity_normalized: diag.and_then(|d| d.fidelity_normalized),
                ceiling,
            })
        })
        .collect()
}

/// `attnviz info`: what a dataset holds.
pub fn dataset_summary(dir: &Path) -> Result<RunSummary> {
    let dataset = Dataset::open(dir)?;
    let (heads, _) = readable_heads(&dataset)?;
    summary_of(&dataset, dir, &heads)
}

/// The stored heads, split into those that can be read and those whose key head's file is gone
/// (grouped-query datasets; see [`Dataset::has_head`]).
pub(super) fn readable_heads(dataset: &Dataset) -> Result<(Vec<HeadId>, Vec<HeadId>)> {
    Ok(dataset
        .heads()?
        .into_iter()
        .partition(|&h| dataset.has_head(h)))
}

/// The summary of `heads` of `dataset` (at `dir`), as a run that computed nothing reports it.
pub(super) fn summary_of(dataset: &Dataset, dir: &Path, heads: &[HeadId]) -> Result<RunSummary> {
    let tokens = if dataset.has_tokens() {
        dataset.read_tokens()?.len()
    } else {
        0
    };
    let meta = dataset.meta();
    Ok(RunSummary {
        dataset: dir.to_path_buf(),
        model: meta.model.id.clone(),
        sequences: meta.run.num_sequences as usize,
        tokens,
        heads: heads.len(),
        heads_extracted: 0,
        projections_computed: 0,
        projections_reused: heads.iter().map(|h| dataset.projections(*h).len()).sum(),
        interrupted: false,
        seconds: 0.0,
        per_head: summarize(dataset, heads)?,
        figures: Vec::new(),
        warnings: Vec::new(),
    })
}

/// What `attnviz info` shows: a dataset's metadata, how complete it is, and its per-head summary
/// (the summary's fields at the top level of the JSON, as [`dataset_summary`] gives them).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatasetInfo {
    /// The model, the run that made the dataset and its settings.
    pub meta: DatasetMeta,
    /// Query heads of the model (layers x heads); fewer are stored when a run selected some, was
    /// interrupted, or ran as shards not all finished.
    pub model_heads: usize,
    /// Heads stored per projection, by `method_dims` (e.g. `tsne_2d`).
    pub projections: BTreeMap<String, usize>,
    /// The seeds the stored projections were made with, by `method_dims` (one when every head's
    /// agrees): what made each layout, which `meta.run.seed` (the extraction's) need not be.
    pub projection_seeds: BTreeMap<String, Vec<u64>>,
    /// Heads whose vectors are stored but whose key head's file is gone (grouped-query datasets):
    /// unreadable, left out of the summary; running the same command again extracts them anew.
    pub heads_lacking_keys: Vec<HeadId>,
    /// The per-head summary.
    #[serde(flatten)]
    pub summary: RunSummary,
}

/// [`DatasetInfo`] of the dataset at `dir`.
pub fn dataset_info(dir: &Path) -> Result<DatasetInfo> {
    let dataset = Dataset::open(dir)?;
    let (heads, heads_lacking_keys) = readable_heads(&dataset)?;
    let mut projections = BTreeMap::new();
    for &head in &heads {
        for (method, dims) in dataset.projections(head) {
            *projections.entry(format!("{method}_{dims}d")).or_insert(0) += 1;
        }
    }
    let summary = summary_of(&dataset, dir, &heads)?;
    let mut projection_seeds: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (key, &seed) in summary.per_head.iter().flat_map(|h| &h.seeds) {
        let seeds = projection_seeds.entry(key.clone()).or_default();
        if let Err(at) = seeds.binary_search(&seed) {
            seeds.insert(at, seed);
        }
    }
    let meta = dataset.meta().clone();
    Ok(DatasetInfo {
        model_heads: usize::from(meta.model.num_layers) * usize::from(meta.model.num_heads),
        meta,
        projections,
        projection_seeds,
        heads_lacking_keys,
        summary,
    })
}
