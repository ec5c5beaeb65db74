//! The main job: model + corpus -> a dataset directory (extract, normalize, project, store), resumable
//! head by head.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use attn_extract::{AttentionKeep, Corpus, ExtractOptions, LoadedModel};
use attn_store::Dataset;
use attn_types::{DATA_MODEL_VERSION, DatasetMeta, HeadId, ModelInfo, RopeCapture, RunInfo};

use crate::corpus;
use crate::error::{Context, Result, bail};
use crate::progress::{Control, Stage};
use crate::select::{Shard, select_heads};

mod projection;
mod resume;
mod store;
mod summary;

pub use projection::{
    DEFAULT_CEILING, DEFAULT_TSNE_ATTENTION_KL, DEFAULT_UMAP_ATTENTION_KL, HeadLayoutInput,
    LayoutVectors, ProjectionSettings, check_settings, head_ceiling, layout_head, project_dataset,
    project_heads, projector,
};
use projection::{clamp_warnings, projection_tasks};
pub use resume::MODEL_FILE;
use resume::{IMAGE_PREPROCESSING, check_same_run, model_files};
pub(crate) use resume::{WINDOW_AWARE, lock_dataset, refuse_window_blind};
pub use store::{attended_keys, head_normalizer, store_head};
use store::{corpus_digest, store_extraction};
pub use summary::{DatasetInfo, HeadSummary, RunSummary, dataset_info, dataset_summary, summarize};

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
                    corpus_path_name(p),
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
                    corpus_path_name(p),
                ))
            }
        },
    }
}

/// The name recorded for a corpus file or folder: its canonical path, the same however it was
/// named (`./corpus.txt`, `corpus.txt`, its absolute path) and meaningful from any directory.
fn corpus_path_name(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
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
    params.extend(model_files(&plan.model_dir)?);
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
    if selected.is_empty() {
        // A shard beyond the selection's heads: nothing to do, and nothing is written.
        return Ok(RunSummary::nothing_to_do(
            plan.out.clone(),
            info.id.clone(),
            start.elapsed().as_secs_f64(),
        ));
    }
    // Locked before the metadata is checked or written: a second run must not replace the metadata
    // of a first that is still extracting.
    let _lock = lock_dataset(&plan.out, plan.shard)?;
    check_same_run(&plan.out, &meta, &plan.model_dir)?;
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
    let warnings = clamp_warnings(&dataset, &selected, &plan.projection)?;

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
        warnings,
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
