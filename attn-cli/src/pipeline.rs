//! The main job: model + corpus -> a dataset directory (extract, normalize, project, store), resumable
//! head by head.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use attn_extract::{Corpus, ExtractOptions, LoadedModel};
use attn_normalize::{Normalizer, NormalizerValidParams};
use attn_project::{Embedding, Pca, Projector, Tsne, Umap};
use attn_store::Dataset;
use attn_types::{
    DATA_MODEL_VERSION, DatasetMeta, HeadCapture, HeadId, HeadProjection, Matrix, Metric, ModelInfo,
    ProjectionMethod, RunInfo, TokenTable,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use crate::corpus;
use crate::select::{Shard, select_heads};

/// Query points sampled for each projection's trustworthiness/continuity: a trust indicator needs
/// about +-0.005, which 1,000 queries give, at a quarter of the cost of attn-project's default 4,000.
pub const QUALITY_QUERIES: usize = 1_000;

/// Neighbours of the trustworthiness/continuity estimate (fewer for tiny heads, where the metric
/// needs `k < n / 2`).
pub const QUALITY_K: usize = 10;

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
}

/// Where the output goes and how chatty to be.
#[derive(Debug, Clone, Copy)]
pub struct Reporting {
    /// No progress bars or informational lines.
    pub quiet: bool,
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Model directory.
    pub model_dir: PathBuf,
    /// Display id of the model.
    pub model_id: Option<String>,
    /// Corpus path; `None` = the built-in corpus of the model's modality.
    pub corpus: Option<PathBuf>,
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

/// Set by Ctrl-C: workers finish the head in hand and start no new one.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        // If a handler cannot be installed (e.g. one exists), Ctrl-C still kills the process, and
        // atomic writes keep every finished head intact.
        let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
        flag
    })
    .clone()
}

pub(crate) fn bar(multi: &MultiProgress, len: u64, msg: &str, quiet: bool) -> ProgressBar {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        multi.add(ProgressBar::new(len))
    };
    let style = ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(msg.to_string());
    pb
}

pub(crate) fn crate_versions() -> BTreeMap<String, String> {
    [
        ("attn-cli", env!("CARGO_PKG_VERSION")),
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

/// The corpus of a run: the user's file, or the built-in one for the model's modality.
pub fn load_corpus(
    model: &ModelInfo,
    path: Option<&Path>,
    text_field: &str,
    limit: Option<usize>,
) -> Result<(Corpus, String)> {
    match path {
        None if model.architecture.is_vision() => {
            let size = model.image.map_or(224, |g| g.image_size);
            let n = limit.unwrap_or(8);
            Ok((Corpus::Images(attn_extract::synthetic_images(n, size)), "builtin:synthetic-images".into()))
        }
        None => {
            let mut s = corpus::builtin_sentences();
            if let Some(l) = limit {
                s.truncate(l);
            }
            Ok((Corpus::Text(s), "builtin:sentences".into()))
        }
        Some(p) => match corpus::detect(p)? {
            corpus::CorpusKind::Text => {
                if model.architecture.is_vision() {
                    bail!("{}: a text corpus was given to the vision model {}", p.display(), model.id);
                }
                Ok((Corpus::Text(corpus::load_text_corpus(p, text_field, limit)?), p.display().to_string()))
            }
            corpus::CorpusKind::Images => {
                if !model.architecture.is_vision() {
                    bail!("{}: an image folder was given to the text model {}", p.display(), model.id);
                }
                let imgs = corpus::load_image_folder(p, limit)?;
                Ok((Corpus::Images(imgs.into_iter().map(|(_, i)| i).collect()), p.display().to_string()))
            }
        },
    }
}

/// Runs the main job. Heads whose artifacts exist are not recomputed.
pub fn run(plan: &RunPlan, report: Reporting) -> Result<RunSummary> {
    let start = Instant::now();
    let interrupted = interrupt_flag();
    let device = attn_extract::device_from_name(&plan.backend)?;
    let model = LoadedModel::load(&plan.model_dir, &device)
        .with_context(|| format!("loading the model in {}", plan.model_dir.display()))?;
    let mut info = model.info().clone();
    if let Some(id) = &plan.model_id {
        info.id = id.clone();
    }
    let (corpus, corpus_name) =
        load_corpus(&info, plan.corpus.as_deref(), &plan.text_field, plan.max_sequences)?;
    let selected = select_heads(
        info.num_layers,
        info.num_heads,
        plan.layers.as_deref(),
        plan.heads.as_deref(),
        plan.shard,
    )?;

    let mut params = BTreeMap::new();
    params.insert("normalize".to_string(), plan.normalize.to_string());
    params.insert("truncate".to_string(), plan.truncate.to_string());
    params.insert("backend".to_string(), plan.backend.clone());
    let meta = DatasetMeta {
        schema_version: DATA_MODEL_VERSION,
        model: info.clone(),
        run: RunInfo {
            corpus: corpus_name,
            num_sequences: corpus.len() as u32,
            num_tokens: 0,
            seed: plan.projection.seed,
            params,
            crate_versions: crate_versions(),
            created_at: now_rfc3339(),
        },
    };
    let dataset = Dataset::create(&plan.out, &meta)?;
    let multi = progress_target(report);

    // Stage 1: extraction, only if some selected head lacks vectors on disk.
    let missing: Vec<HeadId> = selected
        .iter()
        .copied()
        .filter(|h| !dataset.has_head(*h) || !dataset.has_attention(*h))
        .collect();
    let mut heads_extracted = 0;
    if !missing.is_empty() && !interrupted.load(Ordering::SeqCst) {
        let mut layers: Vec<u16> = missing.iter().map(|h| h.layer).collect();
        layers.dedup();
        let mut head_idx: Vec<u16> = missing.iter().map(|h| h.head).collect();
        head_idx.sort_unstable();
        head_idx.dedup();
        let opts = ExtractOptions {
            batch_size: plan.batch_size,
            layers: Some(layers),
            heads: Some(head_idx),
            truncate: plan.truncate,
            capture_attention: true,
        };
        let pb = bar(&multi, corpus.len() as u64, "extract", report.quiet);
        let extraction = model.extract(&corpus, &opts, &mut |done, _| pb.set_position(done as u64))?;
        pb.finish();
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
        if let (Corpus::Images(images), Some(geometry)) = (&corpus, info.image) {
            store_images(&dataset, images, geometry.image_size)?;
        }
        let normalizer = head_normalizer(plan.normalize, info.architecture.is_causal(), plan.projection.seed)?;
        let pb = bar(&multi, missing.len() as u64, "normalize", report.quiet);
        let tokens = &extraction.tokens;
        extraction
            .heads
            .par_iter()
            .filter(|c| missing.contains(&c.vectors.head))
            .try_for_each(|capture| -> Result<()> {
                if interrupted.load(Ordering::SeqCst) {
                    return Ok(());
                }
                store_head(&dataset, &normalizer, capture, tokens)?;
                pb.inc(1);
                Ok(())
            })?;
        pb.finish();
        heads_extracted = missing.len();
    }

    // Stage 2: projections, one task per (head, method, dims), each written as soon as it is done.
    let tasks = projection_tasks(&selected, &plan.projection);
    let summary_projection = project_heads(&dataset, &tasks, &plan.projection, &multi, report)?;

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
        interrupted: interrupted.load(Ordering::SeqCst),
        seconds: start.elapsed().as_secs_f64(),
        per_head,
        figures: Vec::new(),
    })
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
) -> Result<()> {
    let head = capture.vectors.head;
    let normalized = normalizer
        .normalize(&capture.vectors, tokens)
        .with_context(|| format!("normalizing head {head}"))?;
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

/// Every (head, method, dims) projection the settings ask for, head by head.
fn projection_tasks(heads: &[HeadId], s: &ProjectionSettings) -> Vec<(HeadId, ProjectionMethod, u8)> {
    heads
        .iter()
        .flat_map(|&h| s.methods.iter().flat_map(move |&m| s.dims.iter().map(move |&d| (h, m, d))))
        .collect()
}

/// Progress bars on stderr, or nowhere with `--quiet`.
pub(crate) fn progress_target(report: Reporting) -> MultiProgress {
    MultiProgress::with_draw_target(if report.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    })
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
                .check()?,
        ),
        ProjectionMethod::Umap => Projector::Umap(
            Umap::params()
                .dims(dims)
                .n_neighbors(s.n_neighbors)
                .min_dist(s.min_dist)
                .metric(s.metric)
                .seed(s.seed)
                .check()?,
        ),
        ProjectionMethod::Pca => Projector::Pca(Pca::params().dims(dims).check()?),
    })
}

/// Projects the given tasks that are not on disk yet. Returns (computed, reused).
pub fn project_heads(
    dataset: &Dataset,
    tasks: &[(HeadId, ProjectionMethod, u8)],
    settings: &ProjectionSettings,
    multi: &MultiProgress,
    report: Reporting,
) -> Result<(usize, usize)> {
    let interrupted = interrupt_flag();
    let pending: Vec<_> = tasks
        .iter()
        .copied()
        .filter(|&(h, m, d)| !dataset.has_projection(h, m, d))
        .collect();
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
    let pb = bar(multi, pending.len() as u64, "project", report.quiet);
    let done = std::sync::atomic::AtomicUsize::new(0);
    pending.par_iter().try_for_each(|&(head, method, dims)| -> Result<()> {
        if interrupted.load(Ordering::SeqCst) {
            return Ok(());
        }
        let stored = dataset.read_head(head)?;
        let vectors = stored.normalized.map_or(stored.raw, |n| n.vectors);
        let joint: Matrix = vectors.joint();
        let fit: Embedding = projectors[&(method, dims)]
            .fit(&joint)
            .with_context(|| format!("projecting head {head} with {method} {dims}D"))?;
        let k = QUALITY_K.min((joint.rows() / 2).saturating_sub(1));
        let quality = if settings.quality && k > 0 {
            Some(attn_project::quality_sampled(&joint, &fit.coords, k, settings.metric, QUALITY_QUERIES)?)
        } else {
            None
        };
        dataset.write_projection(&HeadProjection {
            head,
            spec: fit.spec,
            coords: fit.coords,
            objective: fit.objective,
            quality,
        })?;
        done.fetch_add(1, Ordering::Relaxed);
        pb.inc(1);
        Ok(())
    })?;
    pb.finish();
    Ok((done.into_inner(), reused))
}

/// Per-head summary rows from what is on disk.
pub fn summarize(dataset: &Dataset, heads: &[HeadId]) -> Result<Vec<HeadSummary>> {
    heads
        .iter()
        .filter(|h| dataset.has_head(**h))
        .map(|&h| {
            let stored = dataset.read_head(h)?;
            let (diag, scale) = stored
                .normalized
                .as_ref()
                .map(|n| (Some(n.diagnostics), Some(n.params.scale)))
                .unwrap_or((None, None));
            let mut trust = BTreeMap::new();
            for (m, d) in dataset.projections(h) {
                let p = dataset.read_projection(h, m, d)?;
                if let Some(q) = p.quality {
                    trust.insert(format!("{m}_{d}d"), q.trustworthiness);
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
            })
        })
        .collect()
}

/// Prints the per-head table and the totals.
pub fn print_summary(s: &RunSummary) {
    let fmt = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut keys: Vec<&String> = s.per_head.iter().flat_map(|h| h.trustworthiness.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut header = format!("{:<8} {:>9} {:>9} {:>7} {:>8}", "head", "rho_cos", "rho_norm", "scale", "qk_gap");
    for k in &keys {
        header.push_str(&format!(" {:>10}", format!("T@10 {k}")));
    }
    outln!("{header}");
    for h in &s.per_head {
        let mut line = format!(
            "{:<8} {:>9} {:>9} {:>7} {:>8}",
            h.head,
            fmt(h.spearman_cosine_before),
            fmt(h.spearman_cosine_after),
            fmt(h.scale),
            fmt(h.norm_gap)
        );
        for k in &keys {
            line.push_str(&format!(" {:>10}", fmt(h.trustworthiness.get(*k).copied())));
        }
        outln!("{line}");
    }
    let mean = |f: &dyn Fn(&HeadSummary) -> Option<f32>| {
        let v: Vec<f32> = s.per_head.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
    };
    outln!(
        "mean     {:>9} {:>9} {:>7} {:>8}",
        fmt(mean(&|h| h.spearman_cosine_before)),
        fmt(mean(&|h| h.spearman_cosine_after)),
        fmt(mean(&|h| h.scale)),
        fmt(mean(&|h| h.norm_gap))
    );
    outln!(
        "{} sequences, {} tokens, {} heads ({} extracted now), {} projections computed, {} reused, {:.1} s",
        s.sequences, s.tokens, s.heads, s.heads_extracted, s.projections_computed, s.projections_reused, s.seconds
    );
    outln!("dataset: {}", s.dataset.display());
    for f in &s.figures {
        outln!("figure:  {}", f.display());
    }
    if s.interrupted {
        outln!("interrupted: finished heads are on disk; run the same command again to resume");
    }
}


/// `attnviz project`: projects the heads of an existing dataset.
pub fn project_dataset(
    dir: &Path,
    only: Option<&[HeadId]>,
    force: bool,
    settings: &ProjectionSettings,
    report: Reporting,
) -> Result<RunSummary> {
    let start = Instant::now();
    let dataset = Dataset::open(dir)?;
    let stored = dataset.heads()?;
    let heads: Vec<HeadId> = match only {
        Some(list) => {
            if let Some(missing) = list.iter().find(|h| !stored.contains(h)) {
                bail!("--head {missing}: {} has no vectors for this head", dir.display());
            }
            list.to_vec()
        }
        None => stored,
    };
    if heads.is_empty() {
        bail!("{}: the dataset has no heads yet; run `attnviz extract` first", dir.display());
    }
    let tasks = projection_tasks(&heads, settings);
    if force {
        for &(h, m, d) in &tasks {
            dataset.remove_projection(h, m, d)?;
        }
    }
    let multi = progress_target(report);
    let (computed, reused) = project_heads(&dataset, &tasks, settings, &multi, report)?;
    let mut summary = dataset_summary(dir)?;
    summary.heads = heads.len();
    summary.projections_computed = computed;
    summary.projections_reused = reused;
    summary.interrupted = interrupt_flag().load(Ordering::SeqCst);
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// `attnviz info`: what a dataset holds.
pub fn dataset_summary(dir: &Path) -> Result<RunSummary> {
    let dataset = Dataset::open(dir)?;
    let heads = dataset.heads()?;
    let tokens = if dataset.has_tokens() { dataset.read_tokens()?.len() } else { 0 };
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
        per_head: summarize(&dataset, &heads)?,
        figures: Vec::new(),
    })
}

pub fn image_path(dataset: &Dataset, seq_id: u32) -> PathBuf {
    dataset.dir().join("images").join(format!("{seq_id:05}.png"))
}

/// Saves the input images of a vision run beside the dataset, at the model's input size, so the Image
/// View can draw them later.
pub fn store_images(dataset: &Dataset, images: &[image::RgbImage], size: u32) -> Result<()> {
    for (i, img) in images.iter().enumerate() {
        let path = image_path(dataset, i as u32);
        if path.exists() {
            continue;
        }
        let resized = image::imageops::resize(img, size, size, image::imageops::FilterType::Triangle);
        let mut bytes = Vec::new();
        resized
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .with_context(|| format!("encoding {}", path.display()))?;
        crate::render::canvas::write_atomically(&path, &bytes)?;
    }
    Ok(())
}

/// The stored input image of sequence `seq_id`.
pub fn stored_image(dataset: &Dataset, seq_id: u32) -> Result<image::RgbImage> {
    let path = image_path(dataset, seq_id);
    let img = image::open(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(img.to_rgb8())
}
