//! `attnviz import`: bring your own vectors. Query/key vectors computed elsewhere (NumPy `.npy`
//! arrays, or per-head Parquet files) plus a token table become an attnviz dataset, normalized and
//! stored exactly as `extract` stores the heads of a model it loads; `project`, `render` and `info`
//! then work on it.
//!
//! Everything that can be checked without the vector data (files exist, headers, dtypes, shapes,
//! token table, row counts) is checked before the dataset directory is created. A fresh import that
//! fails later anyway (a NaN in some head) removes what it wrote; an import into an existing dataset
//! resumes and skips heads already written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use attn_project::AttendedKeys;
use attn_store::Dataset;
use attn_types::{
    Architecture, DATA_MODEL_VERSION, DatasetMeta, HeadCapture, HeadId, ModelInfo, RunInfo,
};
use rayon::prelude::*;

use crate::error::{Result, bail, input};
use crate::progress::{Control, Stage};
use crate::run::{self, RunSummary};
use crate::select::{Shard, select_heads};

mod attention;
mod resume;
#[cfg(test)]
mod tests;
mod tokens;
mod vectors;

pub use attention::compute_attention;
use attention::{open_attention, read_attention};
pub use resume::INPUT_FILE;
use resume::{import_difference, input_stamps};
pub use tokens::read_tokens;
use vectors::VectorSource;

/// Where the attention of the imported heads comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum AttentionSource {
    /// `softmax(scale * q . k)` per sequence, causal-masked when the import is causal; `scale`
    /// defaults to `1/sqrt(d)`.
    Computed {
        /// The logit scale, when not `1/sqrt(d)`.
        scale: Option<f64>,
    },
    /// A `.npy` array `[layers, heads, n, max_len]`: row `i` is token `i`'s attention over the
    /// positions of its own sequence (zero-padded beyond its length).
    Npy(PathBuf),
    /// No attention is stored.
    None,
}

/// Everything `attnviz import` needs.
#[derive(Debug, Clone)]
pub struct ImportPlan {
    /// Queries `.npy`, with [`Self::keys`].
    pub queries: Option<PathBuf>,
    /// Keys `.npy`, with [`Self::queries`].
    pub keys: Option<PathBuf>,
    /// Or a folder of per-head Parquet files.
    pub vectors: Option<PathBuf>,
    /// The token table (JSONL or Parquet).
    pub tokens: PathBuf,
    /// Attention of the heads.
    pub attention: AttentionSource,
    /// Dataset directory.
    pub out: PathBuf,
    /// Model id recorded in the dataset.
    pub model_id: String,
    /// Causal attention.
    pub causal: bool,
    /// A sliding window (with [`Self::causal`]): keys `window` or more positions before the query
    /// get no attention, as in Mistral's or Qwen2's window layers.
    pub window: Option<usize>,
    /// The layers the window applies to (`None`: all).
    pub window_layers: Option<Vec<u16>>,
    /// Key translation and query/key scaling (else raw vectors only).
    pub normalize: bool,
    /// Seed of the normalizer's pair subsampling.
    pub seed: u64,
    /// The model layer of each layer of the `.npy` arrays, strictly increasing (`None`: 0, 1, 2,
    /// ...): arrays that hold some layers of a model keep the model's layer numbers.
    pub layer_ids: Option<Vec<u16>>,
    /// How many layers the model has, when the arrays hold some of them (default: the highest of
    /// [`Self::layer_ids`] + 1); recorded as the dataset's model size.
    pub model_layers: Option<u16>,
    /// Layer filter.
    pub layers: Option<Vec<u16>>,
    /// Head filter.
    pub heads: Option<Vec<u16>>,
    /// Shard of the selected heads.
    pub shard: Option<Shard>,
}

/// Removes what a failed fresh import wrote, so that no partial dataset is left behind.
struct Cleanup {
    out: PathBuf,
    dir_existed: bool,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.dir_existed {
            let _ = std::fs::remove_file(self.out.join(attn_store::META_FILE));
            let _ = std::fs::remove_file(self.out.join(attn_store::TOKENS_FILE));
            let _ = std::fs::remove_dir_all(self.out.join(attn_store::HEADS_DIR));
            let _ = std::fs::remove_dir_all(self.out.join(attn_store::KEY_HEADS_DIR));
        } else {
            let _ = std::fs::remove_dir_all(&self.out);
        }
    }
}

impl ImportPlan {
    /// The keys a query of `layer` may attend to: the causal mask and the window where it applies.
    pub fn attended_keys(&self, layer: u16) -> AttendedKeys {
        let windowed = self
            .window_layers
            .as_ref()
            .is_none_or(|layers| layers.contains(&layer));
        AttendedKeys {
            causal: self.causal,
            window: self.window.filter(|_| windowed),
        }
    }

    /// The window flags, checked against each other and the input's `layers`.
    fn check_window(&self, layers: u16) -> Result<()> {
        match (self.window, &self.window_layers) {
            (Some(0), _) => bail!("--window 0: a window must hold at least 1 position"),
            (Some(w), _) if !self.causal => bail!(
                "--window {w} needs --causal: a sliding window masks keys {w} or more positions before the query in causal attention"
            ),
            (None, Some(_)) => bail!("--window-layers needs --window"),
            (Some(_), Some(list)) => {
                if let Some(l) = list.iter().find(|&&l| l >= layers) {
                    bail!("--window-layers: layer {l} is not in the input's {layers} layers");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Runs the import. Heads already in the dataset are skipped.
pub fn import(plan: &ImportPlan, control: Control<'_>) -> Result<RunSummary> {
    let start = Instant::now();

    // 1. Everything checkable without the data, before anything is written.
    let (source, layers, heads, n) = VectorSource::open(plan)?;
    let layers = match plan.model_layers {
        Some(m) if m < layers => bail!(
            "--model-layers {m}: the input holds layer {} (layers are numbered from 0)",
            layers - 1
        ),
        Some(m) => m,
        None => layers,
    };
    plan.check_window(layers)?;
    let tokens = read_tokens(&plan.tokens)?;
    if tokens.len() != n {
        let what = match &source {
            VectorSource::Npy { queries, .. } => {
                format!(
                    "--queries {} has {n} tokens per head (shape {:?})",
                    queries.path().display(),
                    queries.shape()
                )
            }
            VectorSource::Parquet { .. } => format!("the --vectors files have {n} rows"),
        };
        bail!(
            "--tokens {}: {} tokens, but {what}",
            plan.tokens.display(),
            tokens.len()
        );
    }
    let spans = tokens.sequences();
    let max_len = spans.iter().map(|s| s.len).max().unwrap_or(0);
    let given = match &plan.attention {
        AttentionSource::Npy(path) => {
            if matches!(source, VectorSource::Parquet { .. }) {
                bail!(
                    "--attention {}: only with --queries/--keys (.npy)",
                    path.display()
                );
            }
            let array_layers = match &source {
                VectorSource::Npy { layer_ids, .. } => layer_ids.len() as u16,
                VectorSource::Parquet { .. } => layers,
            };
            Some(open_attention(path, array_layers, heads, n, max_len)?)
        }
        _ => None,
    };
    if plan.out.is_file() {
        bail!("--out {}: is a file, not a directory", plan.out.display());
    }
    let available = source.heads(heads);
    let selection: Vec<HeadId> = select_heads(
        layers,
        heads,
        plan.layers.as_deref(),
        plan.heads.as_deref(),
        plan.shard,
    )?
    .into_iter()
    .filter(|h| available.contains(h))
    .collect();
    if selection.is_empty() {
        let unsharded = select_heads(
            layers,
            heads,
            plan.layers.as_deref(),
            plan.heads.as_deref(),
            None,
        )?;
        if plan.shard.is_none() || !unsharded.iter().any(|h| available.contains(h)) {
            bail!("--layers/--heads/--shard: the selection holds none of the heads of the input");
        }
        // A shard beyond the input's heads: nothing to do, and nothing is written.
        return Ok(RunSummary::nothing_to_do(
            plan.out.clone(),
            plan.model_id.clone(),
            start.elapsed().as_secs_f64(),
        ));
    }
    let normalizer = run::head_normalizer(plan.normalize, plan.causal, plan.seed)?;

    // 2. The dataset.
    let d = source.dim();
    let attention_mode = match &plan.attention {
        AttentionSource::Computed { scale: None } => {
            "computed: softmax(q.k/sqrt(d)) per sequence".to_string()
        }
        AttentionSource::Computed { scale: Some(s) } => {
            format!("computed: softmax({s} q.k) per sequence")
        }
        AttentionSource::Npy(p) => format!(
            "given: {}",
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        AttentionSource::None => "none".to_string(),
    };
    let mut config = serde_json::json!({
        "attnviz_import": {
            "source": source.describe(),
            "tokens": { "file": plan.tokens.file_name().map(|n| n.to_string_lossy().into_owned()), "count": n, "sequences": spans.len() },
            "causal": plan.causal,
            "attention": attention_mode,
        }
    });
    if let Some(window) = plan.window {
        // In transformers' terms (`sliding_window`, `layer_types`), which `attended_keys` reads
        // back for the fidelity metrics as it does from a model's config.json.
        config["sliding_window"] = window.into();
        config["layer_types"] = (0..layers)
            .map(|l| match plan.attended_keys(l).window {
                Some(_) => "sliding_attention",
                None => "full_attention",
            })
            .collect::<Vec<_>>()
            .into();
    }
    let info = ModelInfo {
        id: plan.model_id.clone(),
        architecture: Architecture::Imported {
            causal: plan.causal,
        },
        num_layers: layers,
        num_heads: heads,
        head_dim: u32::try_from(d).map_err(|_| input!("head dimension {d} is too large"))?,
        hidden_size: 0,
        max_positions: u32::try_from(max_len)
            .map_err(|_| input!("sequence length {max_len} is too large"))?,
        image: None,
        config,
        // The grouping, as `extract` records it for a grouped-query model.
        num_key_value_heads: match &source {
            VectorSource::Npy {
                heads, kv_heads, ..
            } if kv_heads != heads => Some(*kv_heads),
            VectorSource::Parquet { kv_heads, .. } => *kv_heads,
            VectorSource::Npy { .. } => None,
        },
        rope: None,
    };
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let mut params = BTreeMap::new();
    params.insert("import".to_string(), "true".to_string());
    if let (Some(q), Some(k)) = (&plan.queries, &plan.keys) {
        params.insert("queries".to_string(), abs(q));
        params.insert("keys".to_string(), abs(k));
    }
    if let Some(v) = &plan.vectors {
        params.insert("vectors".to_string(), abs(v));
    }
    if let AttentionSource::Npy(p) = &plan.attention {
        params.insert("attention".to_string(), abs(p));
    }
    // What the input files were when imported: a file replaced or edited in place under the same
    // name is another input (a resumed import must not mix its heads with the old ones).
    for (file, stamp) in input_stamps(plan, &source)? {
        params.insert(format!("{INPUT_FILE}{file}"), stamp);
    }
    if let Some(ids) = &plan.layer_ids {
        let ids: Vec<String> = ids.iter().map(u16::to_string).collect();
        params.insert("layer-ids".to_string(), ids.join(","));
    }
    params.insert("normalize".to_string(), plan.normalize.to_string());
    params.insert("causal".to_string(), plan.causal.to_string());
    // Recorded only when given, so that imports made before the flag existed resume unchanged.
    if let Some(window) = plan.window {
        params.insert("window".to_string(), window.to_string());
        // A list naming every layer is the window on all of them, recorded as when none is given,
        // so that the two resume each other.
        if let Some(list) = plan
            .window_layers
            .as_ref()
            .filter(|list| !(0..layers).all(|l| list.contains(&l)))
        {
            let list: Vec<String> = list.iter().map(u16::to_string).collect();
            params.insert("window-layers".to_string(), list.join(","));
        }
    }
    // As `run` records it: this import's normalization and fidelity leave the window's masked keys.
    if attn_extract::model_sliding_windows(&info)?
        .iter()
        .any(Option::is_some)
    {
        params.insert(run::WINDOW_AWARE.to_string(), "true".to_string());
    }
    let meta = DatasetMeta {
        schema_version: DATA_MODEL_VERSION,
        model: info.clone(),
        run: RunInfo {
            corpus: abs(&plan.tokens),
            num_sequences: u32::try_from(spans.len())
                .map_err(|_| input!("{} sequences are too many", spans.len()))?,
            num_tokens: n as u64,
            seed: plan.seed,
            params,
            crate_versions: run::crate_versions(),
            created_at: run::now_rfc3339(),
        },
    };
    let dir_existed = plan.out.exists();
    let fresh = !plan.out.join(attn_store::META_FILE).exists();
    // Armed only once the lock is held: a process that finds the dataset locked must not delete
    // what the holder is writing.
    let _lock = run::lock_dataset(&plan.out, plan.shard)?;
    let mut cleanup = Cleanup {
        out: plan.out.clone(),
        dir_existed,
        // Shards share the directory: a failing one must not delete the others' heads.
        armed: fresh && plan.shard.is_none(),
    };
    // Heads on disk are reused only when they were imported as this command asks: the import's
    // own settings are compared first, so that a refusal names the flag (`--window`) rather than
    // the model description it shapes (`model.config.sliding_window`).
    // (An existing dataset's directory is never armed for deletion: `cleanup` leaves it alone.)
    if !fresh {
        let existing = Dataset::open(&plan.out)?;
        if existing.has_tokens() || !existing.heads()?.is_empty() {
            let remedy = "use a new --out directory (or delete that one)";
            run::refuse_window_blind(existing.meta(), &plan.out, remedy)?;
            if let Some((what, old, new)) = import_difference(existing.meta(), &meta) {
                bail!(
                    "--out {}: the dataset there was made with {what} = {old}, this import asks for {new}; {remedy}",
                    plan.out.display()
                );
            }
        }
    }
    let dataset = Dataset::create(&plan.out, &meta)?;
    dataset.remove_stale_temp_files()?;
    if dataset.has_tokens() {
        if dataset.read_tokens()? != tokens {
            cleanup.armed = false;
            bail!(
                "--out {}: the dataset holds other tokens than --tokens {}; use a new --out directory",
                plan.out.display(),
                plan.tokens.display()
            );
        }
    } else {
        dataset.write_tokens(&tokens)?;
    }

    // 3. Heads, in parallel: read, attention, normalize, store (the `extract` path).
    let selected = selection.clone();
    let want_attention = !matches!(plan.attention, AttentionSource::None);
    let missing: Vec<HeadId> = selected
        .iter()
        .copied()
        .filter(|&h| !dataset.has_head(h) || (want_attention && !dataset.has_attention(h)))
        .collect();
    let progress = control.start(Stage::Import, missing.len());
    missing.par_iter().try_for_each(|&head| -> Result<()> {
        if control.cancelled() {
            return Ok(());
        }
        let vectors = source.load(head)?;
        let attention = match (&plan.attention, &given) {
            (AttentionSource::Computed { scale }, _) => {
                let scale = scale.unwrap_or_else(|| 1.0 / (d as f64).sqrt());
                compute_attention(&vectors, &spans, plan.attended_keys(head.layer), scale)?
            }
            (AttentionSource::Npy(_), Some((f, width))) => read_attention(
                f,
                *width,
                head,
                source.array_layer(head.layer),
                heads,
                &spans,
                plan.attended_keys(head.layer),
            )?,
            _ => Vec::new(),
        };
        let capture = HeadCapture {
            vectors,
            attention,
            value_norms: None,
        };
        run::store_head(
            &dataset,
            &normalizer,
            &capture,
            &tokens,
            plan.attended_keys(head.layer),
            plan.seed,
        )?;
        progress.inc();
        Ok(())
    })?;
    let heads_extracted = progress.done();
    drop(progress);
    cleanup.armed = false;

    let per_head = run::summarize(&dataset, &selected)?;
    Ok(RunSummary {
        dataset: plan.out.clone(),
        model: info.id,
        sequences: spans.len(),
        tokens: n,
        heads: selected.len(),
        heads_extracted,
        projections_computed: 0,
        projections_reused: 0,
        interrupted: control.cancelled(),
        seconds: start.elapsed().as_secs_f64(),
        per_head,
        figures: Vec::new(),
        warnings: Vec::new(),
    })
}
