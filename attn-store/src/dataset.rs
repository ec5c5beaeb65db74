//! The dataset directory: `meta.json`, `tokens.parquet` and one folder per head.

use std::path::{Path, PathBuf};

use attn_types::{
    DATA_MODEL_VERSION, DatasetMeta, HeadDiagnostics, HeadId, HeadProjection, HeadVectors,
    NormalizationParams, NormalizedHead, ProjectionMethod, SequenceAttention, TokenTable,
};

use crate::StoreError;
use crate::files::{
    StoredHead, create_keys_file, key_file_name, read_attention_file, read_keys_file,
    read_normalization_file, read_projection_file, read_tokens_file, read_value_norms_file,
    read_vector_norms_file, read_vectors_file, write_attention_file, write_projection_file,
    write_query_vectors_file, write_tokens_file, write_value_norms_file, write_vectors_file,
};
use crate::pq::{temp_path, write_file_atomically};

/// File name of the dataset metadata.
pub const META_FILE: &str = "meta.json";
/// File name of the token table.
pub const TOKENS_FILE: &str = "tokens.parquet";
/// Folder holding one sub-folder per head.
pub const HEADS_DIR: &str = "heads";
/// Folder of the key files of a grouped-query dataset, one per key head
/// (`L{layer:02}K{key head:02}.parquet`), shared by the query heads of its group.
pub const KEY_HEADS_DIR: &str = "key_heads";
/// Per-head file of query/key vectors (its presence marks the head as done).
pub const VECTORS_FILE: &str = "vectors.parquet";
/// Per-head file of attention weights.
pub const ATTENTION_FILE: &str = "attention.parquet";
/// Per-head file of value norms.
pub const VALUE_NORMS_FILE: &str = "value_norms.parquet";
/// Per-head folder of projections.
pub const PROJECTIONS_DIR: &str = "projections";
/// Folder of the input images of a vision run (`{seq_id:05}.png`, at the model's input size).
pub const IMAGES_DIR: &str = "images";
/// Folder of rendered figures (PNG, SVG).
pub const FIGURES_DIR: &str = "figures";
/// Default file name of the self-contained HTML viewer export.
pub const VIEWER_FILE: &str = "viewer.html";

/// Folder name of a head: `L{layer:02}H{head:02}` (sorts in layer-major order for < 100 heads).
pub fn head_dir_name(head: HeadId) -> String {
    format!("L{:02}H{:02}", head.layer, head.head)
}

/// Parses a folder name written by [`head_dir_name`].
pub fn parse_head_dir_name(name: &str) -> Option<HeadId> {
    let rest = name.strip_prefix('L')?;
    let (l, h) = rest.split_once('H')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(l) || !digits(h) {
        return None;
    }
    Some(HeadId::new(l.parse().ok()?, h.parse().ok()?))
}

/// File name of a projection: `{method}_{dims}d.parquet`.
pub fn projection_file_name(method: ProjectionMethod, dims: u8) -> String {
    format!("{}_{dims}d.parquet", method.as_str())
}

/// Parses a file name written by [`projection_file_name`].
pub fn parse_projection_file_name(name: &str) -> Option<(ProjectionMethod, u8)> {
    let stem = name.strip_suffix("d.parquet")?;
    let (method, dims) = stem.rsplit_once('_')?;
    Some((method.parse().ok()?, dims.parse().ok()?))
}

/// The writer's process id of a temporary file named by `temp_path` (`.NAME.PID-N.tmp`).
fn temp_file_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, tail) = rest.rsplit_once('.')?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether two matrices hold the same values bit for bit (NaN equal to itself, -0 not to 0).
fn same_bits(a: &attn_types::Matrix, b: &attn_types::Matrix) -> bool {
    a.shape() == b.shape()
        && a.as_slice()
            .iter()
            .zip(b.as_slice())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

/// An attnviz dataset on disk. Every write is atomic (temporary file + rename), so a file that exists
/// is complete; this is what makes runs resumable and lets shards write disjoint heads concurrently.
#[derive(Debug, Clone)]
pub struct Dataset {
    dir: PathBuf,
    meta: DatasetMeta,
}

/// Reads and checks `meta.json`: the version is checked before the rest is parsed, so that a future
/// format is reported as such rather than as a parse error.
fn read_meta(path: &Path) -> Result<DatasetMeta, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound {
                path: path.to_path_buf(),
                what: "dataset metadata (is this an attnviz dataset directory?)".into(),
            }
        } else {
            StoreError::io(path, e)
        }
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| StoreError::json(path, META_FILE, e.to_string()))?;
    let version = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            StoreError::json(path, "schema_version", "missing or not an unsigned integer")
        })?;
    if version > u64::from(DATA_MODEL_VERSION) {
        return Err(StoreError::FutureVersion {
            path: path.to_path_buf(),
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: DATA_MODEL_VERSION,
        });
    }
    // serde's message names the offending field (e.g. "missing field `num_heads`").
    serde_json::from_value(value).map_err(|e| StoreError::json(path, META_FILE, e.to_string()))
}

/// The first model field in which two metas differ, as `(field, existing, requested)`.
fn model_difference(
    existing: &DatasetMeta,
    requested: &DatasetMeta,
) -> Option<(String, String, String)> {
    let (a, b) = (&existing.model, &requested.model);
    let fields = [
        ("model.id", a.id.clone(), b.id.clone()),
        (
            "model.architecture",
            a.architecture.to_string(),
            b.architecture.to_string(),
        ),
        (
            "model.num_layers",
            a.num_layers.to_string(),
            b.num_layers.to_string(),
        ),
        (
            "model.num_heads",
            a.num_heads.to_string(),
            b.num_heads.to_string(),
        ),
        (
            "model.head_dim",
            a.head_dim.to_string(),
            b.head_dim.to_string(),
        ),
        (
            "model.num_key_value_heads",
            a.key_heads().to_string(),
            b.key_heads().to_string(),
        ),
        (
            "model.rope",
            a.rope.map_or("none".into(), |r| r.to_string()),
            b.rope.map_or("none".into(), |r| r.to_string()),
        ),
    ];
    fields
        .into_iter()
        .find(|(_, x, y)| x != y)
        .map(|(f, x, y)| (f.to_string(), x, y))
        .or_else(|| json_difference("model.config", &a.config, &b.config))
}

/// The first place two JSON values differ, as `(path, existing, requested)` with the path in dotted
/// form (`model.config.rope_theta`, `...layer_types[2]`) and absent values as `(absent)`, so that a
/// message names the setting rather than printing two whole documents.
fn json_difference(
    path: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        _ if a == b => None,
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let shown = |v: Option<&Value>| v.map_or("(absent)".into(), Value::to_string);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => json_difference(&format!("{path}.{k}"), va, vb),
                    (va, vb) => Some((format!("{path}.{k}"), shown(va), shown(vb))),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| json_difference(&format!("{path}[{i}]"), va, vb)),
        _ => Some((path.to_string(), a.to_string(), b.to_string())),
    }
}

impl Dataset {
    /// Creates a dataset in `dir` (making the directory if needed), or opens the existing one there to
    /// resume or to add a shard's heads. An existing dataset must be for the same model (id,
    /// architecture, sizes and config), else [`StoreError::Incompatible`]; its `meta.json` is kept as
    /// is (the first writer's run info wins).
    ///
    /// Safe against a concurrent `create` in another process: `meta.json` is written to a temporary
    /// file and hard-linked into place, which fails rather than overwrites if the other won.
    pub fn create(dir: impl AsRef<Path>, meta: &DatasetMeta) -> Result<Dataset, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        if meta.schema_version > DATA_MODEL_VERSION {
            return Err(StoreError::FutureVersion {
                path: dir.join(META_FILE),
                found: meta.schema_version,
                supported: DATA_MODEL_VERSION,
            });
        }
        let heads = dir.join(HEADS_DIR);
        std::fs::create_dir_all(&heads).map_err(|e| StoreError::io(&heads, e))?;
        let path = dir.join(META_FILE);
        if !path.exists() {
            let text = serde_json::to_string_pretty(meta)
                .map_err(|e| StoreError::json(&path, META_FILE, e.to_string()))?;
            let tmp = temp_path(&path);
            write_file_atomically(&tmp, text.as_bytes())?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    return Ok(Dataset {
                        dir,
                        meta: meta.clone(),
                    });
                }
                // Another process created it first: fall through and check compatibility.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        let existing = read_meta(&path)?;
        if let Some((field, existing, requested)) = model_difference(&existing, meta) {
            return Err(StoreError::Incompatible {
                path,
                field,
                existing,
                requested,
            });
        }
        let dataset = Dataset {
            dir,
            meta: existing,
        };
        if !dataset.has_tokens() && dataset.heads()?.is_empty() && dataset.meta.run != meta.run {
            // A run that failed before storing anything left its metadata: the data about to be
            // written is this run's, so the metadata must be too.
            let text = serde_json::to_string_pretty(meta)
                .map_err(|e| StoreError::json(&path, META_FILE, e.to_string()))?;
            write_file_atomically(&path, text.as_bytes())?;
            return Ok(Dataset {
                dir: dataset.dir,
                meta: meta.clone(),
            });
        }
        Ok(dataset)
    }

    /// Removes the temporary files (`.NAME.PID-N.tmp`) that a killed writer left in the dataset, when
    /// the process that wrote them is gone (so a concurrent shard's files in flight are kept). Returns
    /// how many were removed. On systems without `/proc` nothing is removed.
    pub fn remove_stale_temp_files(&self) -> Result<usize, StoreError> {
        if !Path::new("/proc/self").exists() {
            return Ok(0);
        }
        let mut removed = 0;
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let Some(pid) = temp_file_pid(&path) else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Opens an existing dataset, checking that its `meta.json` is not from a newer data model.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let meta = read_meta(&dir.join(META_FILE))?;
        Ok(Dataset { dir, meta })
    }

    /// The dataset's metadata.
    pub fn meta(&self) -> &DatasetMeta {
        &self.meta
    }

    /// The dataset directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of one head (which may not exist yet).
    pub fn head_dir(&self, head: HeadId) -> PathBuf {
        self.dir.join(HEADS_DIR).join(head_dir_name(head))
    }

    /// Path of `tokens.parquet`.
    pub fn tokens_path(&self) -> PathBuf {
        self.dir.join(TOKENS_FILE)
    }

    /// Path of a head's `vectors.parquet`.
    pub fn vectors_path(&self, head: HeadId) -> PathBuf {
        self.head_dir(head).join(VECTORS_FILE)
    }

    /// The key head whose keys query head `head` attends with, when this dataset stores keys once
    /// per key head: a grouped-query model (fewer key heads than query heads) in a dataset of data
    /// model 2 or later (version 1 stored keys with every query head, and a resumed dataset keeps
    /// its layout). `key_head.head` counts key heads.
    pub fn shared_key_head(&self, head: HeadId) -> Option<HeadId> {
        let m = &self.meta.model;
        (self.meta.schema_version >= 2 && m.key_heads() < m.num_heads)
            .then(|| HeadId::new(head.layer, m.key_head_of(head.head)))
    }

    /// Path of a key head's file (grouped-query datasets; see [`Self::shared_key_head`]).
    pub fn keys_path(&self, key_head: HeadId) -> PathBuf {
        self.dir.join(KEY_HEADS_DIR).join(key_file_name(key_head))
    }

    /// Path of a head's `attention.parquet`.
    pub fn attention_path(&self, head: HeadId) -> PathBuf {
        self.head_dir(head).join(ATTENTION_FILE)
    }

    /// Path of a head's `value_norms.parquet`.
    pub fn value_norms_path(&self, head: HeadId) -> PathBuf {
        self.head_dir(head).join(VALUE_NORMS_FILE)
    }

    /// Path of a head's projection file.
    pub fn projection_path(&self, head: HeadId, method: ProjectionMethod, dims: u8) -> PathBuf {
        self.head_dir(head)
            .join(PROJECTIONS_DIR)
            .join(projection_file_name(method, dims))
    }

    /// Path of the stored input image of sequence `seq_id` (vision runs).
    pub fn image_path(&self, seq_id: u32) -> PathBuf {
        self.dir.join(IMAGES_DIR).join(format!("{seq_id:05}.png"))
    }

    /// Whether sequence `seq_id` has a stored input image.
    pub fn has_image(&self, seq_id: u32) -> bool {
        self.image_path(seq_id).is_file()
    }

    /// Stores the PNG-encoded input image of sequence `seq_id`, atomically.
    pub fn write_image_png(&self, seq_id: u32, png: &[u8]) -> Result<(), StoreError> {
        write_file_atomically(&self.image_path(seq_id), png)
    }

    /// The PNG bytes of the stored input image of sequence `seq_id`.
    pub fn read_image_png(&self, seq_id: u32) -> Result<Vec<u8>, StoreError> {
        let path = self.image_path(seq_id);
        std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound {
                    path: path.clone(),
                    what: format!("the image of sequence {seq_id}"),
                }
            } else {
                StoreError::io(&path, e)
            }
        })
    }

    /// Path of the figure `name` (e.g. `matrix_tsne_2d.png`) in the dataset's figures folder.
    pub fn figure_path(&self, name: &str) -> PathBuf {
        self.dir.join(FIGURES_DIR).join(name)
    }

    /// Default path of the self-contained HTML export.
    pub fn viewer_path(&self) -> PathBuf {
        self.dir.join(VIEWER_FILE)
    }

    /// Checks a head against the model's sizes before anything is written for it.
    fn check_head_id(&self, head: HeadId, path: &Path) -> Result<(), StoreError> {
        let m = &self.meta.model;
        if head.layer >= m.num_layers || head.head >= m.num_heads {
            return Err(StoreError::invalid(
                path,
                "head",
                format!(
                    "{head} is outside the model's {} x {} heads",
                    m.num_layers, m.num_heads
                ),
            ));
        }
        Ok(())
    }

    /// Number of tokens in `tokens.parquet`, read from the file footer only (cheap); `None` before
    /// the token table is written.
    pub fn num_tokens(&self) -> Result<Option<usize>, StoreError> {
        let path = self.tokens_path();
        if !path.is_file() {
            return Ok(None);
        }
        crate::pq::parquet_num_rows(&path).map(Some)
    }

    /// Checks a per-token count against the token table, when it has been written: catches a head
    /// computed on another corpus before it is stored next to the wrong tokens.
    fn check_token_count(&self, path: &Path, field: &str, found: usize) -> Result<(), StoreError> {
        match self.num_tokens()? {
            Some(n) if n != found => Err(StoreError::invalid(
                path,
                field,
                format!("{found} tokens, but tokens.parquet has {n}"),
            )),
            _ => Ok(()),
        }
    }

    /// Writes the token table.
    pub fn write_tokens(&self, tokens: &TokenTable) -> Result<(), StoreError> {
        write_tokens_file(self.tokens_path(), tokens)
    }

    /// Reads the token table.
    pub fn read_tokens(&self) -> Result<TokenTable, StoreError> {
        read_tokens_file(self.tokens_path())
    }

    /// Whether the token table has been written.
    pub fn has_tokens(&self) -> bool {
        self.tokens_path().is_file()
    }

    /// Writes a head's raw vectors and, optionally, its normalization. Checks the head against the
    /// model's layer/head counts, the head dimension (when the model states one) and the token count
    /// (when the token table is written). Every per-head writer checks the head and token count.
    pub fn write_head(
        &self,
        raw: &HeadVectors,
        normalized: Option<&NormalizedHead>,
    ) -> Result<(), StoreError> {
        let path = self.vectors_path(raw.head());
        self.check_head_id(raw.head(), &path)?;
        let d = self.meta.model.head_dim as usize;
        if d != 0 && raw.dim() != d {
            return Err(StoreError::invalid(
                &path,
                "query",
                format!(
                    "head dimension {} differs from the model's head_dim {d}",
                    raw.dim()
                ),
            ));
        }
        self.check_token_count(&path, "token_index", raw.len())?;
        match self.shared_key_head(raw.head()) {
            None => write_vectors_file(path, raw, normalized),
            Some(key_head) => {
                // The reader recomputes shared keys' normalized form from the parameters: normalized
                // keys that are not exactly that would not read back as written.
                if let Some(norm) = normalized
                    && !same_bits(norm.vectors.keys(), &norm.params.normalize_keys(raw.keys()))
                {
                    return Err(StoreError::invalid(
                        &path,
                        "key_normalized",
                        "the normalized keys are not the stored parameters applied to the raw \
                         keys, which a grouped-query dataset stores in their place",
                    ));
                }
                if self.share_keys(raw, key_head)? {
                    write_query_vectors_file(path, raw, normalized, key_head)
                } else {
                    write_vectors_file(path, raw, normalized)
                }
            }
        }
    }

    /// Makes the key head's file hold `raw`'s keys if it does not exist yet, and tells whether it
    /// holds exactly them. The file is created once and never replaced (first writer wins: shards
    /// take the heads of one group in turn and write it side by side), so no stored head's keys can
    /// change under it; a head whose keys differ from the file's (another process's extraction,
    /// bit for bit) keeps its own keys in its vectors file, which readers take file by file.
    fn share_keys(&self, raw: &HeadVectors, key_head: HeadId) -> Result<bool, StoreError> {
        let path = self.keys_path(key_head);
        if !path.is_file() {
            create_keys_file(&path, key_head, raw.keys())?;
        }
        Ok(same_bits(&read_keys_file(&path, key_head)?, raw.keys()))
    }

    /// Reads a head's vectors.
    pub fn read_head(&self, head: HeadId) -> Result<StoredHead, StoreError> {
        read_vectors_file(self.vectors_path(head), head)
    }

    /// The raw query and key norms of a head, without reading its vectors.
    pub fn read_head_norms(&self, head: HeadId) -> Result<(Vec<f32>, Vec<f32>), StoreError> {
        read_vector_norms_file(self.vectors_path(head), head)
    }

    /// A head's normalization parameters and diagnostics (`None` if stored without normalization),
    /// from the vectors file's footer alone.
    pub fn read_head_normalization(
        &self,
        head: HeadId,
    ) -> Result<Option<(NormalizationParams, HeadDiagnostics)>, StoreError> {
        read_normalization_file(self.vectors_path(head), head)
    }

    /// Whether a head's vectors are on disk (the completion marker of extraction for that head),
    /// with its key head's file where the dataset stores keys once per key head: without that file
    /// the head cannot be read, so a resumed run extracts it again, which writes the file anew.
    pub fn has_head(&self, head: HeadId) -> bool {
        self.vectors_path(head).is_file() && self.missing_keys_file(head).is_none()
    }

    /// The file of the key head whose keys `head` reads (see [`Self::shared_key_head`]), when that
    /// file is missing.
    pub fn missing_keys_file(&self, head: HeadId) -> Option<PathBuf> {
        self.shared_key_head(head)
            .map(|key_head| self.keys_path(key_head))
            .filter(|path| !path.is_file())
    }

    /// Heads whose vectors are on disk, in layer-major order.
    pub fn heads(&self) -> Result<Vec<HeadId>, StoreError> {
        let dir = self.dir.join(HEADS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        let mut heads = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            if let Some(head) = parse_head_dir_name(&entry.file_name().to_string_lossy())
                && entry.path().join(VECTORS_FILE).is_file()
            {
                heads.push(head);
            }
        }
        heads.sort();
        Ok(heads)
    }

    /// Writes a head's attention matrices (one per sequence).
    pub fn write_attention(
        &self,
        head: HeadId,
        attention: &[SequenceAttention],
    ) -> Result<(), StoreError> {
        let path = self.attention_path(head);
        self.check_head_id(head, &path)?;
        let total = attention.iter().map(SequenceAttention::len).sum();
        self.check_token_count(&path, "seq_len", total)?;
        write_attention_file(path, head, attention)
    }

    /// Reads a head's attention matrices.
    pub fn read_attention(&self, head: HeadId) -> Result<Vec<SequenceAttention>, StoreError> {
        read_attention_file(self.attention_path(head))
    }

    /// Whether a head's attention is on disk.
    pub fn has_attention(&self, head: HeadId) -> bool {
        self.attention_path(head).is_file()
    }

    /// Writes a head's value norms (one per token).
    pub fn write_value_norms(&self, head: HeadId, norms: &[f32]) -> Result<(), StoreError> {
        let path = self.value_norms_path(head);
        self.check_head_id(head, &path)?;
        self.check_token_count(&path, "token_index", norms.len())?;
        write_value_norms_file(path, head, norms)
    }

    /// Reads a head's value norms; `None` when none were written.
    pub fn read_value_norms(&self, head: HeadId) -> Result<Option<Vec<f32>>, StoreError> {
        let path = self.value_norms_path(head);
        if !path.is_file() {
            return Ok(None);
        }
        read_value_norms_file(path).map(Some)
    }

    /// Writes a head's projection (one file per method and dimension).
    pub fn write_projection(&self, p: &HeadProjection) -> Result<(), StoreError> {
        let path = self.projection_path(p.head, p.spec.method, p.spec.dims);
        self.check_head_id(p.head, &path)?;
        self.check_token_count(&path, "token_index", p.coords.rows() / 2)?;
        write_projection_file(path, p)
    }

    /// Reads a head's projection, checking that the file holds what its name says.
    pub fn read_projection(
        &self,
        head: HeadId,
        method: ProjectionMethod,
        dims: u8,
    ) -> Result<HeadProjection, StoreError> {
        let path = self.projection_path(head, method, dims);
        let p = read_projection_file(&path)?;
        if p.head != head || p.spec.method != method || p.spec.dims != dims {
            return Err(StoreError::invalid(
                &path,
                crate::files::KV_PROJECTION,
                format!(
                    "file holds {} {} {}d, expected {head} {method} {dims}d",
                    p.head, p.spec.method, p.spec.dims
                ),
            ));
        }
        Ok(p)
    }

    /// Whether a head's projection with this method and dimension is on disk.
    pub fn has_projection(&self, head: HeadId, method: ProjectionMethod, dims: u8) -> bool {
        self.projection_path(head, method, dims).is_file()
    }

    /// Deletes a head's projection with this method and dimension, if present (to recompute it).
    pub fn remove_projection(
        &self,
        head: HeadId,
        method: ProjectionMethod,
        dims: u8,
    ) -> Result<(), StoreError> {
        let path = self.projection_path(head, method, dims);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// The projections on disk for a head, sorted; empty when there are none (or the folder is
    /// unreadable).
    pub fn projections(&self, head: HeadId) -> Vec<(ProjectionMethod, u8)> {
        let dir = self.head_dir(head).join(PROJECTIONS_DIR);
        let mut out: Vec<(ProjectionMethod, u8)> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| parse_projection_file_name(&e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::json_difference;
    use serde_json::json;

    #[test]
    fn config_differences_name_the_first_differing_setting() {
        let a = json!({"rope_theta": 10000.0, "layer_types": ["full", "sliding"], "n": {"x": 1}});
        let same = json_difference("model.config", &a, &a.clone());
        assert_eq!(same, None);
        let mut b = a.clone();
        b["layer_types"][1] = json!("full");
        assert_eq!(
            json_difference("model.config", &a, &b),
            Some((
                "model.config.layer_types[1]".into(),
                "\"sliding\"".into(),
                "\"full\"".into()
            ))
        );
        let mut c = a.clone();
        c["n"]["y"] = json!(2);
        assert_eq!(
            json_difference("model.config", &a, &c),
            Some(("model.config.n.y".into(), "(absent)".into(), "2".into()))
        );
        let d = json!({"rope_theta": 10000.0, "layer_types": ["full"], "n": {"x": 1}});
        assert_eq!(
            json_difference("model.config", &a, &d).map(|t| t.0),
            Some("model.config.layer_types".into())
        );
    }
}
