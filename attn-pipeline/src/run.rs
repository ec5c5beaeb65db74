//! The main job: model + corpus -> a dataset directory (extract, normalize, project, store), resumable
//! head by head.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use attn_extract::{AttentionKeep, Corpus, ExtractOptions, LoadedModel};
use attn_normalize::{Normalizer, NormalizerValidParams};
use attn_project::{AttendedKeys, Embedding, Pca, Projector, Tsne, Umap, UmapInit};
use attn_store::Dataset;
use attn_types::{
    DATA_MODEL_VERSION, DatasetMeta, Fidelity, HeadCapture, HeadId, HeadProjection, HeadVectors,
    Matrix, Metric, ModelInfo, ProjectionMethod, RopeCapture, RunInfo, SequenceAttention,
    TokenTable,
};
use rayon::prelude::*;

use crate::corpus;
use crate::error::{Context, PipelineError, Result, bail};
use crate::progress::{Control, Stage, StageCounter};
use crate::select::{Shard, select_heads};

/// Query points sampled for each projection's trustworthiness/continuity: a trust indicator needs
/// about +-0.005, which 1,000 queries give, at a quarter of the cost of attn-project's default 4,000.
const QUALITY_QUERIES: usize = 1_000;

/// Neighbours of the trustworthiness/continuity estimate (fewer for tiny heads, where the metric
/// needs `k < n / 2`).
const QUALITY_K: usize = 10;

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
    /// UMAP's initial layout.
    pub umap_init: UmapInit,
    /// Which vectors are laid out.
    pub vectors: LayoutVectors,
}

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
    /// it attends to. Measured on all-MiniLM-L6-v2 (`benches/results/fidelity-*.md`): against the
    /// paper's normalized vectors without edges, t-SNE hit@3 0.22 -> 0.68 and fidelity 0.20 -> 0.46
    /// with trustworthiness@10 0.974 -> 0.987; UMAP 0.15 -> 0.73 and 0.15 -> 0.47 with 0.913 -> 0.947.
    /// Larger shares raised neither hit@3 nor fidelity much and cost trustworthiness (the knee).
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
            umap_init: UmapInit::Random,
            vectors: LayoutVectors::Normalized,
            ..Self::attnviz(methods, dims)
        }
    }
}

/// Where a run's sequences come from.
#[derive(Debug, Clone, Default)]
pub enum CorpusInput {
    /// The built-in corpus of the model's modality: 320 sentences, or the paper's synthetic images.
    #[default]
    Builtin,
    /// A corpus file or image folder (see [`crate::corpus`]).
    Path(PathBuf),
    /// Texts given in memory (recorded in the dataset as `inline:texts`).
    Texts(Vec<String>),
    /// Images given in memory (recorded as `inline:images`).
    Images(Vec<image::RgbImage>),
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Model directory.
    pub model_dir: PathBuf,
    /// Display id of the model.
    pub model_id: Option<String>,
    /// The sequences to run through the model.
    pub corpus: CorpusInput,
    /// JSONL/Parquet text field.
    pub text_field: String,
    /// Keep at most this many sequences.
    pub max_sequences: Option<usize>,
    /// Dataset directory.
    pub out: PathBuf,
    /// Backend name.
    pub backend: String,
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Truncate over-long sequences instead of failing.
    pub truncate: bool,
    /// Rotary-position models: store queries and keys after the rotation (the default) or before it.
    pub rope: RopeCapture,
    /// Which attention weights to store (see [`AttentionKeep`]).
    pub attention_keep: AttentionKeep,
    /// Most bytes of captured (dense) attention held at once: heads are extracted in as many model
    /// passes as keep them within it ([`RunPlan::DEFAULT_ATTENTION_MEMORY`] = 1 GiB).
    pub attention_memory: usize,
    /// Apply key translation and scaling.
    pub normalize: bool,
    /// Layer filter.
    pub layers: Option<Vec<u16>>,
    /// Head filter.
    pub heads: Option<Vec<u16>>,
    /// Shard of the selected heads.
    pub shard: Option<Shard>,
    /// Projections (empty methods = extract only).
    pub projection: ProjectionSettings,
}

impl RunPlan {
    /// The default [`RunPlan::attention_memory`]: 1 GiB.
    pub const DEFAULT_ATTENTION_MEMORY: usize = 1 << 30;
}

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
    /// Attention fidelity of the raw vectors (cosine), when the head has attention.
    pub fidelity_raw: Option<Fidelity>,
    /// Attention fidelity of the normalized vectors (cosine), when the head has attention.
    pub fidelity_normalized: Option<Fidelity>,
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
}

pub(crate) fn crate_versions() -> BTreeMap<String, String> {
    [
        ("attn-pipeline", env!("CARGO_PKG_VERSION")),
        ("attn-extract", attn_extract::VERSION),
        ("attn-normalize", attn_normalize::VERSION),
        ("attn-project", attn_project::VERSION),
        ("attn-store", attn_store::VERSION),
        ("attn-types", attn_types::VERSION),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one timestamp.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The corpus of a run and the name recorded for it, checked against the model's modality and cut to
/// `limit` sequences.
pub fn load_corpus(
    model: &ModelInfo,
    input: &CorpusInput,
    text_field: &str,
    limit: Option<usize>,
) -> Result<(Corpus, String)> {
    let vision = model.architecture.is_vision();
    let cut = |mut v: Vec<String>| {
        if let Some(l) = limit {
            v.truncate(l);
        }
        v
    };
    match input {
        CorpusInput::Builtin if vision => {
            let size = model.image.map_or(224, |g| g.image_size);
            let n = limit.unwrap_or(8);
            Ok((
                Corpus::Images(attn_extract::synthetic_images(n, size)),
                "builtin:synthetic-images".into(),
            ))
        }
        CorpusInput::Builtin => Ok((
            Corpus::Text(cut(corpus::builtin_sentences())),
            "builtin:sentences".into(),
        )),
        CorpusInput::Texts(texts) if !vision => {
            Ok((Corpus::Text(cut(texts.clone())), "inline:texts".into()))
        }
        CorpusInput::Images(images) if vision => {
            let mut images = images.clone();
            if let Some(l) = limit {
                images.truncate(l);
            }
            Ok((Corpus::Images(images), "inline:images".into()))
        }
        CorpusInput::Texts(_) => bail!("texts were given to the vision model {}", model.id),
        CorpusInput::Images(_) => bail!("images were given to the text model {}", model.id),
        CorpusInput::Path(p) => match corpus::detect(p)? {
            corpus::CorpusKind::Text => {
                if vision {
                    bail!(
                        "{}: a text corpus was given to the vision model {}",
                        p.display(),
                        model.id
                    );
                }
                Ok((
                    Corpus::Text(corpus::load_text_corpus(p, text_field, limit)?),
                    p.display().to_string(),
                ))
            }
            corpus::CorpusKind::Images => {
                if !vision {
                    bail!(
                        "{}: an image folder was given to the text model {}",
                        p.display(),
                        model.id
                    );
                }
                let imgs = corpus::load_image_folder(p, limit)?;
                Ok((
                    Corpus::Images(imgs.into_iter().map(|(_, i)| i).collect()),
                    p.display().to_string(),
                ))
            }
        },
    }
}

/// Runs the main job. Heads whose artifacts exist are not recomputed.
pub fn run(plan: &RunPlan, control: Control<'_>) -> Result<RunSummary> {
    let start = Instant::now();
    // Every setting is checked before any work: a bad one must not cost a model load and an
    // extraction, nor leave files behind.
    check_settings(&plan.projection)?;
    if plan.batch_size == 0 {
        bail!("batch size: must be at least 1 (--batch-size)");
    }
    let device = attn_extract::device_from_name(&plan.backend)?;
    // Layers after the last one asked for are not loaded (Llama-family checkpoints).
    let last_layer = plan.layers.as_ref().and_then(|l| l.iter().copied().max());
    let model = LoadedModel::load_layers(&plan.model_dir, &device, last_layer)
        .with_context(|| format!("loading the model in {}", plan.model_dir.display()))?;
    let mut info = model.info().clone();
    if let Some(id) = &plan.model_id {
        info.id = id.clone();
    }
    if info.rope.is_some() {
        info.rope = Some(plan.rope);
    }
    let (corpus, corpus_name) =
        load_corpus(&info, &plan.corpus, &plan.text_field, plan.max_sequences)?;
    let selected = select_heads(
        info.num_layers,
        info.num_heads,
        plan.layers.as_deref(),
        plan.heads.as_deref(),
        plan.shard,
    )?;

    let base_opts = ExtractOptions {
        batch_size: plan.batch_size,
        layers: None,
        heads: None,
        truncate: plan.truncate,
        warn_truncation: true,
        capture_attention: true,
        rope: plan.rope,
        attention_keep: plan.attention_keep,
        only: None,
        ..ExtractOptions::default()
    };
    // Said in the CLI's terms (the corpus and the flag), not the library's option.
    let too_long = |e: attn_extract::ExtractError| match e {
        attn_extract::ExtractError::SequenceTooLong { index, len, max } => crate::error::input!(
            "{}: sequence {index} has {len} tokens, more than the model's maximum of {max}; pass --truncate to cut it",
            corpus_name_of(plan)
        ),
        e => e.into(),
    };
    // Tokenized before anything is written, so that an over-long sequence leaves no dataset behind.
    let lengths = model
        .sequence_lengths(&corpus, &base_opts)
        .map_err(too_long)?;
    let mut params = BTreeMap::new();
    params.insert("normalize".to_string(), plan.normalize.to_string());
    params.insert("truncate".to_string(), plan.truncate.to_string());
    params.insert("corpus_digest".to_string(), corpus_digest(&corpus));
    if let Some(prep) = model.image_preprocessing() {
        params.insert(
            "image_preprocessing".to_string(),
            format!("{IMAGE_PREPROCESSING}: {prep}"),
        );
    }
    // Recorded as it applies to this corpus: `auto` keeps everything of sequences up to its limit,
    // so such a dataset is one of `all` (as those written before the policy existed).
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let effective = match plan.attention_keep {
        AttentionKeep::Auto if longest <= AttentionKeep::AUTO_DENSE_UP_TO => AttentionKeep::All,
        keep => keep,
    };
    params.insert("attention".to_string(), effective.to_string());
    params.insert("backend".to_string(), plan.backend.clone());
    if attn_extract::model_sliding_windows(&info)?
        .iter()
        .any(Option::is_some)
    {
        params.insert(WINDOW_AWARE.to_string(), "true".to_string());
    }
    let meta = DatasetMeta {
        schema_version: DATA_MODEL_VERSION,
        model: info.clone(),
        run: RunInfo {
            corpus: corpus_name,
            num_sequences: corpus.len() as u32,
            num_tokens: lengths.iter().sum::<usize>() as u64,
            seed: plan.projection.seed,
            params,
            crate_versions: crate_versions(),
            created_at: now_rfc3339(),
        },
    };
    // Locked before the metadata is checked or written: a second run must not replace the metadata
    // of a first that is still extracting.
    let _lock = lock_dataset(&plan.out, plan.shard)?;
    check_same_run(&plan.out, &meta)?;
    let dataset = Dataset::create(&plan.out, &meta)?;
    dataset.remove_stale_temp_files()?;

    // Stage 1: extraction, only if some selected head lacks vectors on disk.
    let missing: Vec<HeadId> = selected
        .iter()
        .copied()
        .filter(|h| !dataset.has_head(*h) || !dataset.has_attention(*h))
        .collect();
    let mut heads_extracted = 0;
    if !missing.is_empty() && !control.cancelled() {
        // Captured attention is dense until stored: extract as many heads per pass as keep it
        // within the budget (all of them for sentences; fewer for long documents, at the price of
        // running the model once per pass).
        let per_head: usize = lengths.iter().map(|&l| l * l * 4).sum();
        let per_pass = (plan.attention_memory / per_head.max(1)).clamp(1, missing.len());
        let passes = missing.len().div_ceil(per_pass);
        let progress = control.start(Stage::Extract, corpus.len() * passes);
        let stored = control.start(Stage::Normalize, missing.len());
        for (pass, chunk) in missing.chunks(per_pass).enumerate() {
            if control.cancelled() {
                break;
            }
            let mut layers: Vec<u16> = chunk.iter().map(|h| h.layer).collect();
            layers.dedup();
            let mut head_idx: Vec<u16> = chunk.iter().map(|h| h.head).collect();
            head_idx.sort_unstable();
            head_idx.dedup();
            let opts = ExtractOptions {
                layers: Some(layers),
                heads: Some(head_idx),
                // Exactly the chunk: its layers x heads cross product may hold many more heads.
                only: Some(chunk.to_vec()),
                // Warned once, when the lengths were counted.
                warn_truncation: false,
                ..base_opts.clone()
            };
            let offset = pass * corpus.len();
            let extraction = match model.extract_until(
                &corpus,
                &opts,
                &mut |done, _| progress.set(offset + done),
                &|| control.cancelled(),
            ) {
                Ok(extraction) => extraction,
                // Interrupted between two batches: the heads of earlier passes are on disk.
                Err(attn_extract::ExtractError::Cancelled { .. }) => break,
                Err(e) => return Err(too_long(e)),
            };
            store_extraction(&dataset, &extraction, chunk, &corpus, &model, plan, &stored)?;
        }
        drop(progress);
        heads_extracted = stored.done();
    }

    // Stage 2: projections, one task per (head, method, dims), each written as soon as it is done
    // (none after an interruption: the extraction may have stored nothing, not even the tokens).
    let tasks = projection_tasks(&selected, &plan.projection);
    let summary_projection = if control.cancelled() {
        (0, 0)
    } else {
        project_heads(&dataset, &tasks, &plan.projection, control)?
    };

    let per_head = summarize(&dataset, &selected)?;
    let tokens = dataset.read_tokens().map(|t| t.len()).unwrap_or(0);
    Ok(RunSummary {
        dataset: plan.out.clone(),
        model: info.id.clone(),
        sequences: corpus.len(),
        tokens,
        heads: selected.len(),
        heads_extracted,
        projections_computed: summary_projection.0,
        projections_reused: summary_projection.1,
        interrupted: control.cancelled(),
        seconds: start.elapsed().as_secs_f64(),
        per_head,
        figures: Vec::new(),
    })
}

/// How the corpus of a plan is named in messages.
fn corpus_name_of(plan: &RunPlan) -> String {
    match &plan.corpus {
        CorpusInput::Builtin => "the built-in corpus".to_string(),
        CorpusInput::Path(p) => p.display().to_string(),
        CorpusInput::Texts(_) => "the given texts".to_string(),
        CorpusInput::Images(_) => "the given images".to_string(),
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

/// Stores the token table (the first time; later passes must agree with it), the images, and the
/// heads of `chunk` from one extraction pass, counting them on `stored`.
fn store_extraction(
    dataset: &Dataset,
    extraction: &attn_types::Extraction,
    chunk: &[HeadId],
    corpus: &Corpus,
    model: &LoadedModel,
    plan: &RunPlan,
    stored: &StageCounter<'_>,
) -> Result<()> {
    if dataset.has_tokens() {
        let stored = dataset.read_tokens()?;
        if stored != extraction.tokens {
            bail!(
                "{}: the dataset holds tokens of another corpus; use a new --out directory",
                plan.out.display()
            );
        }
    } else {
        dataset.write_tokens(&extraction.tokens)?;
    }
    if let Corpus::Images(images) = corpus {
        store_images(dataset, images, model)?;
    }
    let normalizer = head_normalizer(
        plan.normalize,
        model.info().architecture.is_causal(),
        plan.projection.seed,
    )?;
    let tokens = &extraction.tokens;
    let keys = attended_keys(model.info())?;
    extraction
        .heads
        .par_iter()
        .filter(|c| chunk.contains(&c.vectors.head()))
        .try_for_each(|capture| -> Result<()> {
            if stored.cancelled() {
                return Ok(());
            }
            store_head(
                dataset,
                &normalizer,
                capture,
                tokens,
                keys(capture.vectors.head()),
                plan.projection.seed,
            )?;
            stored.inc();
            Ok(())
        })
}

/// A digest of the corpus's contents (over every text, or every image's size and
/// pixels, each sequence closed by its length): a file edited in place under the same name is
/// another corpus.
fn corpus_digest(corpus: &Corpus) -> String {
    let mut digest = crate::digest::Digest::new();
    match corpus {
        Corpus::Text(texts) => {
            for t in texts {
                digest.eat(t.as_bytes());
                digest.eat(&(t.len() as u64).to_le_bytes());
            }
        }
        Corpus::Images(images) => {
            for i in images {
                digest.eat(&i.width().to_le_bytes());
                digest.eat(&i.height().to_le_bytes());
                digest.eat(i.as_raw());
            }
        }
    }
    digest.finish()
}

/// How vision runs prepare their images (recorded with the model's preprocessing settings, and
/// compared on resume): as transformers' PIL image processors, with PIL's resampling reproduced.
/// Datasets of earlier versions resized with the image crate's triangle filter and recorded nothing.
const IMAGE_PREPROCESSING: &str = "transformers-pil";

/// The run settings that decide what a dataset's data is: a dataset that holds data made with other
/// ones must not be resumed with these (its files would be reused as if they were made now).
/// Datasets written before a setting was recorded have it empty, and are not refused for it.
fn run_identity(meta: &DatasetMeta) -> Vec<(&'static str, String)> {
    let param = |k: &str| meta.run.params.get(k).cloned().unwrap_or_default();
    vec![
        ("corpus", meta.run.corpus.clone()),
        (
            "sequences (--max-sequences)",
            meta.run.num_sequences.to_string(),
        ),
        // Of the sequences selected: after their number, which names the flag.
        ("corpus contents", param("corpus_digest")),
        // The normalization's pair subsampling draws from it.
        ("seed (--seed)", meta.run.seed.to_string()),
        // Never empty, so that a vision dataset of before the record is refused, not resumed.
        ("image preprocessing", {
            match (meta.model.image.is_some(), param("image_preprocessing")) {
                (false, _) => "none".to_string(),
                (true, p) if p.is_empty() => "image crate, triangle filter".to_string(),
                (true, p) => p,
            }
        }),
        ("normalize (--no-normalize)", param("normalize")),
        ("truncate (--truncate)", param("truncate")),
        // Datasets written before the policy existed kept every weight.
        ("attention kept (--attention)", {
            let kept = param("attention");
            if kept.is_empty() {
                "all".to_string()
            } else {
                kept
            }
        }),
        (
            "rotary capture (--rope)",
            meta.model.rope.map_or("none".into(), |r| r.to_string()),
        ),
    ]
}

/// Recorded by runs of models with sliding-window layers since their normalization and fidelity
/// leave the keys the window masks out; a dataset of such a model without it was made before.
pub(crate) const WINDOW_AWARE: &str = "window_aware";

/// Refuses a dataset (at `dir`) of a model with sliding-window layers that attnviz made before its
/// normalization and fidelity left out the keys the window masks (it did not record
/// [`WINDOW_AWARE`]): its stored normalization cannot be reused. `remedy` says what to do instead.
pub(crate) fn refuse_window_blind(meta: &DatasetMeta, dir: &Path, remedy: &str) -> Result<()> {
    let windowed = attn_extract::model_sliding_windows(&meta.model)?
        .iter()
        .any(Option::is_some);
    if windowed && !meta.run.params.contains_key(WINDOW_AWARE) {
        bail!(
            "{}: the dataset there was made by an earlier attnviz whose normalization and fidelity counted the keys this model's sliding window masks; {remedy}",
            dir.display()
        );
    }
    Ok(())
}

/// Refuses to resume a dataset that holds data made from another corpus or with other extraction
/// settings, naming the first setting that differs.
fn check_same_run(out: &Path, meta: &DatasetMeta) -> Result<()> {
    let Ok(existing) = Dataset::open(out) else {
        return Ok(());
    };
    if !existing.has_tokens() && existing.heads()?.is_empty() {
        // Nothing was stored: the new run's metadata replaces the old.
        return Ok(());
    }
    if meta.run.params.contains_key(WINDOW_AWARE) {
        refuse_window_blind(
            existing.meta(),
            out,
            "use a new --out directory (or delete that one)",
        )?;
    }
    for ((what, old), (_, new)) in run_identity(existing.meta())
        .into_iter()
        .zip(run_identity(meta))
    {
        if old != new && !old.is_empty() {
            bail!(
                "{}: the dataset there was made with {what} = {old}, this run asks for {new}; use a new --out directory (or delete that one)",
                out.display()
            );
        }
    }
    Ok(())
}

/// Held while a process writes into a dataset (see [`lock_dataset`]); released when dropped.
#[derive(Debug)]
pub(crate) struct DatasetLock {
    _files: Vec<std::fs::File>,
}

/// Takes the advisory locks of a process writing into the dataset at `dir` (made if missing): a
/// whole run (`shard` `None`) holds `.lock-run` exclusively; a shard holds it shared, so that
/// shards run side by side but never beside a whole run, and `.lock-shard-K-of-N` exclusively, so
/// that one shard runs once. A lock held elsewhere is an error at once, not a wait. The locks are
/// `flock`s: they end with the process, however it ends.
pub(crate) fn lock_dataset(dir: &Path, shard: Option<Shard>) -> Result<DatasetLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let open = |name: &str| {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("{}: cannot create the lock file", path.display()))
            .map(|f| (f, path))
    };
    let held = |path: &Path, e: std::fs::TryLockError| -> PipelineError {
        match e {
            std::fs::TryLockError::WouldBlock => crate::error::input!(
                "{}: another attnviz process is writing into this dataset; wait for it to finish (or give this run another --out, or another --shard beside other shards)",
                dir.display()
            ),
            std::fs::TryLockError::Error(e) => PipelineError::Context {
                context: format!("{}: cannot lock", path.display()),
                source: Box::new(e.into()),
            },
        }
    };
    let (run, run_path) = open(".lock-run")?;
    let mut files = Vec::with_capacity(2);
    match shard {
        None => run.try_lock().map_err(|e| held(&run_path, e))?,
        Some(s) => {
            run.try_lock_shared().map_err(|e| held(&run_path, e))?;
            let (file, path) = open(&format!(".lock-shard-{}-of-{}", s.index, s.count))?;
            file.try_lock().map_err(|e| held(&path, e))?;
            files.push(file);
        }
    }
    files.push(run);
    Ok(DatasetLock { _files: files })
}

/// The normalizer of `run`, `extract` and `import`: key translation and query/key scaling when
/// `normalize` (else the identity, stored with its diagnostics), on causal pairs for causal models.
pub fn head_normalizer(normalize: bool, causal: bool, seed: u64) -> Result<NormalizerValidParams> {
    Ok(Normalizer::params()
        .translate(normalize)
        .scale(normalize)
        .causal(causal)
        .seed(seed)
        .check()?)
}

/// Normalizes one captured head and stores it: attention (when captured), value norms (when
/// captured), then the raw and normalized vectors, whose file marks the head as done. Shared by
/// `run`/`extract` and `import`.
pub fn store_head(
    dataset: &Dataset,
    normalizer: &NormalizerValidParams,
    capture: &HeadCapture,
    tokens: &TokenTable,
    keys: AttendedKeys,
    seed: u64,
) -> Result<()> {
    let head = capture.vectors.head();
    // The scale search weighs the pairs the model lets attend: a window layer's masked keys are
    // left out, as the fidelity metrics leave them out.
    let normalizer = normalizer.with_window(keys.window);
    let mut normalized = normalizer
        .normalize(&capture.vectors, tokens)
        .with_context(|| format!("normalizing head {head}"))?;
    // What the normalization does to nearness-means-attention, in the input space itself.
    if !capture.attention.is_empty() {
        let input_fidelity = |v: &attn_types::HeadVectors| {
            attn_project::fidelity(
                attn_project::FidelitySpace::Cosine {
                    queries: v.queries(),
                    keys: v.keys(),
                },
                capture.vectors.queries(),
                capture.vectors.keys(),
                tokens,
                &capture.attention,
                keys,
                seed,
            )
            .with_context(|| format!("fidelity of head {head}"))
        };
        normalized.diagnostics.fidelity_raw = Some(input_fidelity(&capture.vectors)?);
        normalized.diagnostics.fidelity_normalized = Some(input_fidelity(&normalized.vectors)?);
    }
    if !capture.attention.is_empty() {
        dataset.write_attention(head, &capture.attention)?;
    }
    if let Some(norms) = &capture.value_norms {
        dataset.write_value_norms(head, norms)?;
    }
    // Vectors last: their file marks the head as extracted.
    dataset.write_head(&capture.vectors, Some(&normalized))?;
    Ok(())
}

/// The keys each head of `model` may attend to, by head: causal or not, and its layer's sliding
/// window (Mistral, Qwen2/3), so that the fidelity metrics rank only the keys the model could weigh.
pub fn attended_keys(model: &ModelInfo) -> Result<impl Fn(HeadId) -> AttendedKeys + Sync + use<>> {
    let causal = model.architecture.is_causal();
    let windows = attn_extract::model_sliding_windows(model)?;
    Ok(move |head: HeadId| AttendedKeys {
        causal,
        window: windows.get(usize::from(head.layer)).copied().flatten(),
    })
}

/// Every (head, method, dims) projection the settings ask for, head by head.
fn projection_tasks(
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
                .check()?,
        ),
        ProjectionMethod::Pca => Projector::Pca(Pca::params().dims(dims).check()?),
    })
}

/// Projects the given tasks that are not on disk yet. Returns (computed, reused).
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
    // A stored projection is reused only when it was made with the settings asked for now.
    let mut pending = Vec::new();
    for &(h, m, d) in tasks {
        let reusable = dataset.has_projection(h, m, d) && {
            let stored = dataset.read_projection(h, m, d)?;
            made_with(&stored.spec, settings, dataset.has_attention(h))
                // One stored under `--no-quality` lacks the numbers this run reports: it is made
                // again (the same coordinates, as the settings are the same) with them.
                && !(settings.quality
                    && stored.quality.is_none()
                    && quality_k(stored.coords.rows()) > 0)
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
            e.insert(projector(settings, m, d)?);
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
            layout_head(
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
            )
        })?;
    Ok((progress.done(), reused))
}

/// The neighbourhood size of the quality metrics for a layout of `points` (queries and keys): at
/// most [`QUALITY_K`], and 0 (none computed) when the head is too small.
fn quality_k(points: usize) -> usize {
    QUALITY_K.min((points / 2).saturating_sub(1))
}

/// Whether a stored projection's spec is what `settings` would make now: the vectors laid out (raw
/// or normalized) for every method, and for t-SNE and UMAP the metric, seed and every parameter
/// that the settings control. The attention shares are compared as applied: a head without
/// attention records 0.
fn made_with(
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
    same_vectors
        && (common || spec.method == ProjectionMethod::Pca)
        && match spec.method {
            ProjectionMethod::Tsne => {
                same("perplexity_requested", f64::from(settings.perplexity))
                    && same("iterations", settings.tsne_iterations as f64)
                    && param("attention_weight").unwrap_or(0.0)
                        == applied(settings.tsne_attention_weight)
            }
            ProjectionMethod::Umap => {
                same("n_neighbors_requested", settings.n_neighbors as f64)
                    && same("min_dist", f64::from(settings.min_dist))
                    && param("init") == Some(settings.umap_init.code())
                    && param("attention_weight").unwrap_or(0.0)
                        == applied(settings.umap_attention_weight)
            }
            ProjectionMethod::Pca => true,
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
    let edges = if projectors
        .iter()
        .any(|p| p.attention_weight().is_some_and(|w| w > 0.0))
        && !input.attention.is_empty()
    {
        Some(
            attn_project::attention_edges(tokens, &input.attention, keys.causal)
                .with_context(|| format!("attention edges of head {head}"))?,
        )
    } else {
        None
    };
    let shared_seconds = shared_start.elapsed().as_secs_f64() / projectors.len().max(1) as f64;
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
            Projector::Umap(p) if p.n_neighbors() > n => {
                let mut s = settings.clone();
                s.n_neighbors = n.max(2);
                Some(self::projector(&s, method, dims)?)
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
        let fidelity = attn_project::fidelity(
            attn_project::FidelitySpace::Layout(&fit.coords),
            input.raw.queries(),
            input.raw.keys(),
            tokens,
            &input.attention,
            keys,
            settings.seed,
        )
        .with_context(|| format!("fidelity of head {head} {method} {dims}D"))?;
        let seconds = start.elapsed().as_secs_f64() + shared_seconds;
        done(
            HeadProjection {
                head,
                spec: fit.spec,
                coords: fit.coords,
                objective: fit.objective,
                quality,
                fidelity: Some(fidelity),
            },
            seconds,
        )?;
    }
    Ok(())
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
            for (m, d) in dataset.projections(h) {
                let p = dataset.read_projection(h, m, d)?;
                if let Some(q) = p.quality {
                    trust.insert(format!("{m}_{d}d"), q.trustworthiness);
                }
                if let Some(f) = p.fidelity {
                    fidelity.insert(format!("{m}_{d}d"), f);
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
                fidelity_raw: diag.and_then(|d| d.fidelity_raw),
                fidelity_normalized: diag.and_then(|d| d.fidelity_normalized),
            })
        })
        .collect()
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
    if force {
        for &(h, m, d) in &tasks {
            dataset.remove_projection(h, m, d)?;
        }
    }
    let (computed, reused) = project_heads(&dataset, &tasks, settings, control)?;
    let mut summary = dataset_summary(dir)?;
    summary.heads = heads.len();
    summary.projections_computed = computed;
    summary.projections_reused = reused;
    summary.interrupted = control.cancelled();
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// `attnviz info`: what a dataset holds.
pub fn dataset_summary(dir: &Path) -> Result<RunSummary> {
    let dataset = Dataset::open(dir)?;
    let (heads, _) = readable_heads(&dataset)?;
    summary_of(&dataset, dir, &heads)
}

/// The stored heads, split into those that can be read and those whose key head's file is gone
/// (grouped-query datasets; see [`Dataset::has_head`]).
fn readable_heads(dataset: &Dataset) -> Result<(Vec<HeadId>, Vec<HeadId>)> {
    Ok(dataset
        .heads()?
        .into_iter()
        .partition(|&h| dataset.has_head(h)))
}

/// The summary of `heads` of `dataset` (at `dir`), as a run that computed nothing reports it.
fn summary_of(dataset: &Dataset, dir: &Path, heads: &[HeadId]) -> Result<RunSummary> {
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
    let meta = dataset.meta().clone();
    Ok(DatasetInfo {
        model_heads: usize::from(meta.model.num_layers) * usize::from(meta.model.num_heads),
        meta,
        projections,
        heads_lacking_keys,
        summary,
    })
}

/// Saves the input images of a vision run beside the dataset, as the model saw them (resized and
/// cropped as its image processor does), so the Image View can draw them later.
fn store_images(dataset: &Dataset, images: &[image::RgbImage], model: &LoadedModel) -> Result<()> {
    for (i, img) in images.iter().enumerate() {
        let seq_id = i as u32;
        if dataset.has_image(seq_id) {
            continue;
        }
        let Some(input) = model.input_image(img) else {
            return Ok(());
        };
        let mut bytes = Vec::new();
        input
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .with_context(|| format!("encoding {}", dataset.image_path(seq_id).display()))?;
        dataset.write_image_png(seq_id, &bytes)?;
    }
    Ok(())
}
