//! `attnviz import`: bring your own vectors. Query/key vectors computed elsewhere (NumPy `.npy`
//! arrays, or per-head Parquet files) plus a token table become an attnviz dataset, normalized and
//! stored exactly as `extract` stores the heads of a model it loads; `project`, `render` and `info`
//! then work on it.
//!
//! Everything that can be checked without the vector data (files exist, headers, dtypes, shapes,
//! token table, row counts) is checked before the dataset directory is created. A fresh import that
//! fails later anyway (a NaN in some head) removes what it wrote; an import into an existing dataset
//! resumes and skips heads already written.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use attn_project::AttendedKeys;
use attn_store::{Dataset, NpyFile, ParquetTable};
use attn_types::{
    Architecture, DATA_MODEL_VERSION, DatasetMeta, HeadCapture, HeadId, HeadVectors, Matrix,
    ModelInfo, RunInfo, SequenceAttention, SequenceSpan, TokenMeta, TokenTable,
};
use rayon::prelude::*;

use crate::error::{Context, Result, bail, input};
use crate::progress::{Control, Stage};
use crate::run::{self, RunSummary};
use crate::select::{Shard, select_heads};

/// Row sums of given attention must be within this of 1 (float16 inputs round to ~1e-3).
const ROW_SUM_TOLERANCE: f64 = 1e-2;
/// Weights of given attention at padded or (causal) future positions must not exceed this.
const ZERO_TOLERANCE: f32 = 1e-6;

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
    /// Layer filter.
    pub layers: Option<Vec<u16>>,
    /// Head filter.
    pub heads: Option<Vec<u16>>,
    /// Shard of the selected heads.
    pub shard: Option<Shard>,
}

/// Where the vectors come from, validated.
enum VectorSource {
    /// `queries` and `keys` of equal shape `[layers, heads, n, d]`.
    /// `kv_heads` divides `heads`: query head `h` uses key head `h / (heads / kv_heads)` (grouped-query
    /// attention, as Hugging Face's `repeat_kv`).
    Npy {
        queries: NpyFile,
        keys: NpyFile,
        heads: u16,
        kv_heads: u16,
        n: usize,
        d: usize,
    },
    /// One Parquet file per head (rows checked against the token count). `kv_heads`: the key heads
    /// per layer when the files are a grouped-query dataset's query heads, which record them.
    Parquet {
        dir: PathBuf,
        files: BTreeMap<HeadId, PathBuf>,
        d: usize,
        kv_heads: Option<u16>,
    },
}

/// `[layers, heads, n, d]` of an array of 2, 3 or 4 dimensions.
fn grid_shape(flag: &str, f: &NpyFile, trailing: &str) -> Result<[usize; 4]> {
    let s = f.shape();
    let shape = match *s {
        [n, d] => [1, 1, n, d],
        [h, n, d] => [1, h, n, d],
        [l, h, n, d] => [l, h, n, d],
        _ => bail!(
            "{flag} {}: shape {s:?} has {} dimensions; expected [layers, heads, {trailing}], [heads, {trailing}] or [{trailing}]",
            f.path().display(),
            s.len()
        ),
    };
    if shape.contains(&0) {
        bail!(
            "{flag} {}: shape {s:?} has an empty dimension",
            f.path().display()
        );
    }
    if shape[0] > usize::from(u16::MAX) || shape[1] > usize::from(u16::MAX) {
        bail!(
            "{flag} {}: shape {s:?}: at most {} layers and heads",
            f.path().display(),
            u16::MAX
        );
    }
    Ok(shape)
}

fn open_npy(flag: &str, path: &Path) -> Result<NpyFile> {
    NpyFile::open(path).with_context(|| flag.to_string())
}

impl VectorSource {
    fn open(plan: &ImportPlan) -> Result<(VectorSource, u16, u16, usize)> {
        match (&plan.queries, &plan.keys, &plan.vectors) {
            (Some(q), Some(k), None) => {
                let queries = open_npy("--queries", q)?;
                let keys = open_npy("--keys", k)?;
                let qs = grid_shape("--queries", &queries, "n, d")?;
                let ks = grid_shape("--keys", &keys, "n, d")?;
                // Equal shapes, or fewer key heads that each serve a group of query heads (grouped-query
                // and multi-query attention).
                let grouped = qs[1] % ks[1] == 0 && queries.shape().len() == keys.shape().len();
                if qs[0] != ks[0] || qs[2] != ks[2] || qs[3] != ks[3] || !grouped {
                    bail!(
                        "--keys {}: shape {:?} does not fit the shape {:?} of --queries {} (same layers, tokens and \
                         head dimension; as many heads, or a divisor of them for grouped-query attention)",
                        k.display(),
                        keys.shape(),
                        queries.shape(),
                        q.display()
                    );
                }
                let [layers, heads, n, d] = qs;
                Ok((
                    VectorSource::Npy {
                        queries,
                        keys,
                        heads: heads as u16,
                        kv_heads: ks[1] as u16,
                        n,
                        d,
                    },
                    layers as u16,
                    heads as u16,
                    n,
                ))
            }
            (None, None, Some(dir)) => Self::open_parquet_dir(dir),
            (Some(_), None, _) => bail!("--queries needs --keys (or give --vectors DIR instead)"),
            (None, Some(_), _) => bail!("--keys needs --queries (or give --vectors DIR instead)"),
            (Some(_), Some(_), Some(_)) => {
                bail!("--vectors cannot be combined with --queries/--keys")
            }
            (None, None, None) => {
                bail!("no vectors given: pass --queries Q.npy --keys K.npy, or --vectors DIR")
            }
        }
    }

    /// A folder holding `L<layer>H<head>.parquet` files, or `L<layer>H<head>/vectors.parquet`
    /// folders (the store's own layout, e.g. another dataset's `heads/`).
    fn open_parquet_dir(dir: &Path) -> Result<(VectorSource, u16, u16, usize)> {
        if !dir.is_dir() {
            bail!("--vectors {}: no such directory", dir.display());
        }
        let mut files: BTreeMap<HeadId, PathBuf> = BTreeMap::new();
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("--vectors {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("--vectors {}", dir.display()))?
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (head, file) = if path.is_dir() {
                match attn_store::parse_head_dir_name(&name) {
                    Some(h) if path.join(attn_store::VECTORS_FILE).is_file() => {
                        (h, path.join(attn_store::VECTORS_FILE))
                    }
                    _ => continue,
                }
            } else {
                match name
                    .strip_suffix(".parquet")
                    .and_then(attn_store::parse_head_dir_name)
                {
                    Some(h) => (h, path.clone()),
                    None => continue,
                }
            };
            if let Some(other) = files.insert(head, file.clone()) {
                bail!(
                    "--vectors {}: head {head} is given twice ({} and {})",
                    dir.display(),
                    other.display(),
                    file.display()
                );
            }
        }
        let Some((&first, first_file)) = files.iter().next() else {
            bail!(
                "--vectors {}: no per-head Parquet files (expected names like L0H3.parquet or L00H03/vectors.parquet)",
                dir.display()
            );
        };
        // Row counts from the footers (cheap), so a wrong file is reported before anything is written.
        let mut n = None;
        for file in files.values() {
            let rows = parquet_rows(file)?;
            match n {
                None => n = Some(rows),
                Some(n0) if n0 != rows => bail!(
                    "--vectors {}: {rows} rows, but {} has {n0}",
                    file.display(),
                    files[&first].display()
                ),
                Some(_) => {}
            }
        }
        let n = n.unwrap_or(0);
        let d = attn_store::read_vectors_file(first_file, first)
            .with_context(|| "--vectors".to_string())?
            .raw
            .dim();
        let layers = files.keys().map(|h| h.layer).max().unwrap_or(0) + 1;
        let heads = files.keys().map(|h| h.head).max().unwrap_or(0) + 1;
        let kv_heads = Self::grouping(&files, heads)?;
        Ok((
            VectorSource::Parquet {
                dir: dir.to_path_buf(),
                files,
                d,
                kv_heads,
            },
            layers,
            heads,
            n,
        ))
    }

    /// The key heads per layer of a grouped-query dataset's query head files (each records its key
    /// head), so that the import stores keys once per key head as the source did; `None` when the
    /// files record none or a grouping that `h / (heads / kv_heads)` does not give.
    fn grouping(files: &BTreeMap<HeadId, PathBuf>, heads: u16) -> Result<Option<u16>> {
        let mut pairs = Vec::with_capacity(files.len());
        for (head, file) in files {
            match attn_store::recorded_key_head(file).with_context(|| "--vectors".to_string())? {
                Some(key_head) => pairs.push((head.head, key_head.head)),
                None => return Ok(None),
            }
        }
        let kv = pairs.iter().map(|&(_, k)| k).max().unwrap_or(0) + 1;
        let grouped = kv < heads
            && heads.is_multiple_of(kv)
            && pairs.iter().all(|&(h, k)| h / (heads / kv) == k);
        Ok(grouped.then_some(kv))
    }

    fn dim(&self) -> usize {
        match self {
            VectorSource::Npy { d, .. } | VectorSource::Parquet { d, .. } => *d,
        }
    }

    fn heads(&self, layers: u16, heads: u16) -> Vec<HeadId> {
        match self {
            VectorSource::Npy { .. } => HeadId::all(layers, heads).collect(),
            VectorSource::Parquet { files, .. } => files.keys().copied().collect(),
        }
    }

    /// One head's raw vectors, checked to be finite.
    fn load(&self, head: HeadId) -> Result<HeadVectors> {
        match self {
            VectorSource::Npy {
                queries,
                keys,
                heads,
                kv_heads,
                n,
                d,
            } => {
                let slab = n * d;
                let read =
                    |flag: &str, f: &NpyFile, per_layer: u16, index: u16| -> Result<Matrix> {
                        let start = (usize::from(head.layer) * usize::from(per_layer)
                            + usize::from(index))
                            * slab;
                        let data = f.read_f32(start, slab).with_context(|| flag.to_string())?;
                        check_finite(flag, f.path(), head, &data, *d)?;
                        Ok(Matrix::from_vec(*n, *d, data)?)
                    };
                let kv_head = head.head / (heads / kv_heads);
                Ok(HeadVectors::new(
                    head,
                    read("--queries", queries, *heads, head.head)?,
                    read("--keys", keys, *kv_heads, kv_head)?,
                )?)
            }
            VectorSource::Parquet { files, d, .. } => {
                let path = &files[&head];
                let stored = attn_store::read_vectors_file(path, head)
                    .with_context(|| "--vectors".to_string())?;
                if stored.raw.dim() != *d {
                    bail!(
                        "--vectors {}: vectors of dimension {}, but {} has {d}",
                        path.display(),
                        stored.raw.dim(),
                        files
                            .values()
                            .next()
                            .map_or_else(String::new, |p| p.display().to_string())
                    );
                }
                check_finite(
                    "--vectors",
                    path,
                    head,
                    stored.raw.queries().as_slice(),
                    stored.raw.dim(),
                )?;
                check_finite(
                    "--vectors",
                    path,
                    head,
                    stored.raw.keys().as_slice(),
                    stored.raw.dim(),
                )?;
                Ok(stored.raw)
            }
        }
    }

    /// What the import's provenance records about the source.
    fn describe(&self) -> serde_json::Value {
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        match self {
            VectorSource::Npy { queries, keys, .. } => serde_json::json!({
                "format": "npy",
                "queries": { "file": name(queries.path()), "shape": queries.shape(), "dtype": queries.dtype().name() },
                "keys": { "file": name(keys.path()), "shape": keys.shape(), "dtype": keys.dtype().name() },
            }),
            VectorSource::Parquet { files, dir, .. } => serde_json::json!({
                "format": "parquet",
                "files": files
                    .values()
                    .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
                    .collect::<Vec<_>>(),
            }),
        }
    }
}

fn check_finite(flag: &str, path: &Path, head: HeadId, data: &[f32], d: usize) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        bail!(
            "{flag} {}: head {head}, token {} holds a non-finite value ({})",
            path.display(),
            i / d.max(1),
            data[i]
        );
    }
    Ok(())
}

fn parquet_rows(path: &Path) -> Result<usize> {
    attn_store::parquet_num_rows(path).with_context(|| "--vectors")
}

// ----------------------------------------------------------------------------------------------- tokens

/// One token row as given by the user.
struct TokenRow {
    seq_id: u32,
    position: u32,
    text: String,
    is_special: bool,
}

/// Reads `--tokens`: JSONL (one object per line) or Parquet, with `seq_id`, `position`, `text` and
/// optionally `is_special`; checks that sequences are contiguous and positions run `0..len`.
pub fn read_tokens(path: &Path) -> Result<TokenTable> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if !path.is_file() {
        bail!("--tokens {}: no such file", path.display());
    }
    let rows = match ext.as_str() {
        "jsonl" | "ndjson" => read_token_jsonl(path)?,
        "parquet" => read_token_parquet(path)?,
        _ => bail!(
            "--tokens {}: expected a .jsonl or .parquet file",
            path.display()
        ),
    };
    if rows.is_empty() {
        bail!("--tokens {}: no tokens", path.display());
    }
    // Rows are 1-based lines (JSONL) or 0-based rows (Parquet) in messages.
    let row_name = |i: usize| {
        if ext == "parquet" {
            format!("row {i}")
        } else {
            format!("line {}", i + 1)
        }
    };
    let mut seen = HashSet::new();
    let mut lens: Vec<(usize, usize)> = Vec::new(); // (start, len) of every sequence
    for (i, r) in rows.iter().enumerate() {
        let continues = i > 0 && rows[i - 1].seq_id == r.seq_id;
        if !continues {
            if !seen.insert(r.seq_id) {
                bail!(
                    "--tokens {}: `seq_id` {} at {} is not contiguous: its tokens appeared before (sequences must not be interleaved)",
                    path.display(),
                    r.seq_id,
                    row_name(i)
                );
            }
            lens.push((i, 0));
        }
        let (start, len) = lens
            .last_mut()
            .map(|s| (s.0, &mut s.1))
            .ok_or_else(|| input!("no sequence"))?;
        if r.position as usize != i - start {
            bail!(
                "--tokens {}: `position` at {} is {}, expected {} (positions must run 0..len-1 within sequence {}, in order)",
                path.display(),
                row_name(i),
                r.position,
                i - start,
                r.seq_id
            );
        }
        *len += 1;
    }
    let mut tokens = Vec::with_capacity(rows.len());
    for (start, len) in lens {
        for r in &rows[start..start + len] {
            tokens.push(TokenMeta {
                seq_id: r.seq_id,
                position: r.position,
                seq_len: u32::try_from(len).map_err(|_| {
                    input!("--tokens {}: a sequence of {len} tokens", path.display())
                })?,
                text: r.text.clone(),
                is_special: r.is_special,
                patch: None,
                is_cls: false,
                offsets: None,
            });
        }
    }
    let table = TokenTable { tokens };
    table
        .validate()
        .with_context(|| format!("--tokens {}", path.display()))?;
    Ok(table)
}

fn read_token_jsonl(path: &Path) -> Result<Vec<TokenRow>> {
    let file = File::open(path).with_context(|| format!("--tokens {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let line = line.with_context(|| format!("--tokens {}: line {line_no}", path.display()))?;
        let line = line.trim_start_matches('\u{feff}');
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("--tokens {}: line {line_no}", path.display());
        let value: serde_json::Value = serde_json::from_str(line).with_context(at)?;
        let obj = value
            .as_object()
            .ok_or_else(|| input!("{}: not a JSON object", at()))?;
        let uint = |field: &str| -> Result<u32> {
            let v = obj
                .get(field)
                .ok_or_else(|| input!("{}: field `{field}` is missing", at()))?;
            v.as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    input!(
                        "{}: field `{field}` is {v}, not an integer in 0..2^32",
                        at()
                    )
                })
        };
        let text = match obj.get("text") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => bail!("{}: field `text` is {v}, not a string", at()),
            None => bail!("{}: field `text` is missing", at()),
        };
        let is_special = match obj.get("is_special") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(v) => bail!("{}: field `is_special` is {v}, not a bool", at()),
        };
        rows.push(TokenRow {
            seq_id: uint("seq_id")?,
            position: uint("position")?,
            text,
            is_special,
        });
    }
    Ok(rows)
}

fn read_token_parquet(path: &Path) -> Result<Vec<TokenRow>> {
    let at = || "--tokens";
    let table = ParquetTable::read(path).with_context(at)?;
    let seq = table.u32_any("seq_id").with_context(at)?;
    let pos = table.u32_any("position").with_context(at)?;
    let text = table.strings_nullable("text").with_context(at)?;
    let special = table
        .bool_or_false("is_special")
        .with_context(at)?
        .unwrap_or_else(|| vec![false; seq.len()]);
    let mut rows = Vec::with_capacity(seq.len());
    for (i, text) in text.into_iter().enumerate() {
        let text = text
            .ok_or_else(|| input!("--tokens {}: column `text` row {i} is null", path.display()))?;
        rows.push(TokenRow {
            seq_id: seq[i],
            position: pos[i],
            text,
            is_special: special[i],
        });
    }
    Ok(rows)
}

// -------------------------------------------------------------------------------------------- attention

/// `softmax(scale * q . k)` of every sequence (`scale` is `1/sqrt(d)` for standard attention) over
/// the keys each query may attend to (`keys`: causal mask, sliding window; the others get 0). Exact
/// for scaled dot-product attention whose scores have no other terms.
pub fn compute_attention(
    vectors: &HeadVectors,
    spans: &[SequenceSpan],
    keys: impl Into<AttendedKeys>,
    scale: f64,
) -> Result<Vec<SequenceAttention>> {
    let keys = keys.into();
    spans
        .iter()
        .map(|span| {
            let len = span.len;
            let mut w = vec![0f32; len * len];
            let mut logits = vec![0f64; len];
            for qi in 0..len {
                let q = vectors.queries().row(span.start + qi);
                let visible = keys.range(qi, len);
                let mut max = f64::NEG_INFINITY;
                for kj in visible.clone() {
                    let k = vectors.keys().row(span.start + kj);
                    logits[kj] = f64::from(dot(q, k)) * scale;
                    max = max.max(logits[kj]);
                }
                let mut sum = 0.0;
                for kj in visible.clone() {
                    logits[kj] = (logits[kj] - max).exp();
                    sum += logits[kj];
                }
                for kj in visible {
                    w[qi * len + kj] = (logits[kj] / sum) as f32;
                }
            }
            Ok(SequenceAttention {
                seq_id: span.seq_id,
                weights: Matrix::from_vec(len, len, w)?,
            })
        })
        .collect()
}

/// `a . b` with eight independent f32 accumulators (vectorizes; long sums stay accurate).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Opens `--attention` and checks its shape against the vectors' `[layers, heads, n]`.
fn open_attention(
    path: &Path,
    layers: u16,
    heads: u16,
    n: usize,
    max_len: usize,
) -> Result<(NpyFile, usize)> {
    let f = open_npy("--attention", path)?;
    let [l, h, rows, width] = grid_shape("--attention", &f, "n, max_len")?;
    if (l, h, rows) != (usize::from(layers), usize::from(heads), n) {
        bail!(
            "--attention {}: shape {:?} does not match the vectors' {layers} layers x {heads} heads x {n} tokens",
            path.display(),
            f.shape()
        );
    }
    if width < max_len {
        bail!(
            "--attention {}: rows of {width} weights, but the longest sequence has {max_len} tokens",
            path.display()
        );
    }
    Ok((f, width))
}

/// One head's given attention, checked: weights finite and non-negative, padding zero, rows summing
/// to 1, and nothing on keys the query may not attend to (after it when causal, before the window).
fn read_attention(
    f: &NpyFile,
    width: usize,
    head: HeadId,
    heads: u16,
    spans: &[SequenceSpan],
    keys: AttendedKeys,
) -> Result<Vec<SequenceAttention>> {
    let n: usize = spans.iter().map(|s| s.len).sum();
    let start = (usize::from(head.layer) * usize::from(heads) + usize::from(head.head)) * n * width;
    let data = f
        .read_f32(start, n * width)
        .with_context(|| "--attention".to_string())?;
    let fail = |token: usize, what: String| {
        input!(
            "--attention {}: head {head}, token {token}: {what}",
            f.path().display()
        )
    };
    spans
        .iter()
        .map(|span| {
            let len = span.len;
            let mut w = Vec::with_capacity(len * len);
            for qi in 0..len {
                let token = span.start + qi;
                let row = &data[token * width..(token + 1) * width];
                if let Some(v) = row.iter().find(|v| !v.is_finite() || **v < 0.0) {
                    return Err(fail(token, format!("weight {v} is not a probability")));
                }
                if let Some(p) = row[len..].iter().position(|v| *v > ZERO_TOLERANCE) {
                    return Err(fail(
                        token,
                        format!("weight {} at position {} beyond its sequence of {len} tokens (padding must be 0)", row[len + p], len + p),
                    ));
                }
                let visible = keys.range(qi, len);
                if let Some(p) = row[visible.end..len].iter().position(|v| *v > ZERO_TOLERANCE) {
                    let j = visible.end + p;
                    return Err(fail(
                        token,
                        format!("--causal, but position {qi} attends to the later position {j} ({})", row[j]),
                    ));
                }
                if let Some(j) = row[..visible.start].iter().position(|v| *v > ZERO_TOLERANCE) {
                    return Err(fail(
                        token,
                        format!(
                            "--window {}, but position {qi} attends to position {j} ({}), {} positions back",
                            keys.window.unwrap_or_default(),
                            row[j],
                            qi - j
                        ),
                    ));
                }
                let sum: f64 = row[..len].iter().map(|v| f64::from(*v)).sum();
                if (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
                    return Err(fail(token, format!("weights sum to {sum:.4}, not 1 (are these logits rather than probabilities?)")));
                }
                w.extend_from_slice(&row[..len]);
            }
            Ok(SequenceAttention { seq_id: span.seq_id, weights: Matrix::from_vec(len, len, w)? })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------- import

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

/// Prefix of the run parameters that record an input file: `input_file:<path>`.
pub const INPUT_FILE: &str = "input_file:";

/// Every input file of the import with its size and modification time, as recorded in the
/// dataset: a file replaced or edited in place under the same name is another input.
fn input_stamps(plan: &ImportPlan, source: &VectorSource) -> Result<Vec<(String, String)>> {
    let mut files: Vec<PathBuf> = Vec::new();
    match source {
        VectorSource::Npy { queries, keys, .. } => {
            files.extend([queries.path().to_path_buf(), keys.path().to_path_buf()]);
        }
        VectorSource::Parquet {
            files: f, kv_heads, ..
        } => {
            for file in f.values() {
                files.push(file.clone());
                // A grouped-query dataset's query heads read their keys from its key files.
                if kv_heads.is_some()
                    && let Some(key_head) = attn_store::recorded_key_head(file)?
                {
                    files.push(attn_store::key_file_beside(file, key_head));
                }
            }
        }
    }
    if let AttentionSource::Npy(p) = &plan.attention {
        files.push(p.clone());
    }
    files.sort();
    files.dedup();
    files
        .iter()
        .map(|file| {
            let meta = std::fs::metadata(file).with_context(|| file.display().to_string())?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let path = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            Ok((
                path.display().to_string(),
                format!(
                    "{} bytes, modified {modified} ns after the epoch",
                    meta.len()
                ),
            ))
        })
        .collect()
}

/// The first import setting in which an existing dataset differs from the one asked for, as
/// `(setting, existing, requested)`: the inputs (`--queries`, `--keys`, `--vectors`, `--attention`),
/// `--no-normalize`, `--causal`, `--window`, `--window-layers`, `--seed`, and whether it was
/// imported at all.
fn import_difference(
    existing: &DatasetMeta,
    requested: &DatasetMeta,
) -> Option<(String, String, String)> {
    let flag = |key: &str| match key {
        "import" => "import (a dataset of `attnviz run`)".to_string(),
        "normalize" => "normalize (--no-normalize)".to_string(),
        other if other.starts_with(INPUT_FILE) => format!(
            "input file {} (size, modification time)",
            &other[INPUT_FILE.len()..]
        ),
        other => format!("--{other}"),
    };
    let (a, b) = (&existing.run.params, &requested.run.params);
    let absent = || "(none)".to_string();
    // Not a flag: what it says is checked by `run::refuse_window_blind`.
    let compared = |k: &&String| k.as_str() != run::WINDOW_AWARE;
    // The flags first: another `--keys` is named as such, not as its file's missing stamp.
    let (files, flags): (Vec<&String>, Vec<&String>) = a
        .keys()
        .chain(b.keys())
        .filter(compared)
        .partition(|k| k.starts_with(INPUT_FILE));
    flags
        .into_iter()
        .chain(files)
        .find(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            (
                flag(k),
                a.get(k).cloned().unwrap_or_else(absent),
                b.get(k).cloned().unwrap_or_else(absent),
            )
        })
        .or_else(|| {
            (existing.run.seed != requested.run.seed).then(|| {
                (
                    "--seed".to_string(),
                    existing.run.seed.to_string(),
                    requested.run.seed.to_string(),
                )
            })
        })
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
            Some(open_attention(path, layers, heads, n, max_len)?)
        }
        _ => None,
    };
    if plan.out.is_file() {
        bail!("--out {}: is a file, not a directory", plan.out.display());
    }
    let available = source.heads(layers, heads);
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
        bail!("--layers/--heads/--shard: the selection holds none of the heads of the input");
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;

    /// A scratch directory removed on drop (attn-cli has no tempfile dependency).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("attnviz-import-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("scratch dir");
            TempDir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).expect("batch");
        let mut w = ArrowWriter::try_new(File::create(path).expect("create"), batch.schema(), None)
            .expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
    }

    #[test]
    fn reads_parquet_tokens_of_any_integer_type() {
        let tmp = TempDir::new("tokens");
        let p = tmp.path().join("tokens.parquet");
        write_parquet(
            &p,
            vec![
                (
                    "seq_id",
                    Arc::new(Int64Array::from(vec![7, 7, 7, 3, 3])) as ArrayRef,
                ),
                (
                    "position",
                    Arc::new(Int32Array::from(vec![0, 1, 2, 0, 1])) as ArrayRef,
                ),
                (
                    "text",
                    Arc::new(StringArray::from(vec!["<s>", "a", "b", "<s>", "c"])) as ArrayRef,
                ),
                (
                    "is_special",
                    Arc::new(BooleanArray::from(vec![
                        Some(true),
                        Some(false),
                        None,
                        Some(true),
                        Some(false),
                    ])) as ArrayRef,
                ),
            ],
        );
        let t = read_tokens(&p).expect("reads");
        assert_eq!(t.len(), 5);
        assert_eq!(
            t.sequences()
                .iter()
                .map(|s| (s.seq_id, s.len))
                .collect::<Vec<_>>(),
            vec![(7, 3), (3, 2)]
        );
        assert_eq!(t.tokens[4].seq_len, 2);
        assert_eq!(
            t.tokens.iter().map(|t| t.is_special).collect::<Vec<_>>(),
            vec![true, false, false, true, false]
        );
        assert_eq!(t.tokens[2].text, "b");

        // Interleaved sequences, negative ids and a missing column are errors naming file and field.
        let bad = tmp.path().join("bad.parquet");
        write_parquet(
            &bad,
            vec![
                (
                    "seq_id",
                    Arc::new(Int64Array::from(vec![0, 1, 0])) as ArrayRef,
                ),
                (
                    "position",
                    Arc::new(Int64Array::from(vec![0, 0, 1])) as ArrayRef,
                ),
                (
                    "text",
                    Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
                ),
            ],
        );
        let e = crate::error_chain(&read_tokens(&bad).expect_err("interleaved"));
        assert!(
            e.contains("bad.parquet") && e.contains("seq_id") && e.contains("row 2"),
            "{e}"
        );
        write_parquet(
            &bad,
            vec![
                ("seq_id", Arc::new(Int64Array::from(vec![-1])) as ArrayRef),
                ("position", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
                ("text", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
            ],
        );
        let e = crate::error_chain(&read_tokens(&bad).expect_err("negative"));
        assert!(e.contains("bad.parquet") && e.contains("seq_id"), "{e}");
        write_parquet(
            &bad,
            vec![("seq_id", Arc::new(Int64Array::from(vec![0])) as ArrayRef)],
        );
        let e = crate::error_chain(&read_tokens(&bad).expect_err("no position"));
        assert!(e.contains("bad.parquet") && e.contains("`position`"), "{e}");
    }

    #[test]
    fn computed_attention_is_softmax_and_respects_the_mask() {
        let q = Matrix::from_rows(&[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]).expect("q");
        let k = Matrix::from_rows(&[[0.5, 0.5], [1.0, -1.0], [0.0, 3.0]]).expect("k");
        let v = HeadVectors::new(HeadId::new(0, 0), q, k).expect("head");
        let spans = [SequenceSpan {
            seq_id: 4,
            start: 0,
            len: 3,
        }];
        // Bidirectional, causal, and causal with a window of 2 (query 2 no longer sees key 0).
        let masks: [(AttendedKeys, [usize; 3], [usize; 3]); 3] = [
            (false.into(), [0, 0, 0], [3, 3, 3]),
            (true.into(), [0, 0, 0], [1, 2, 3]),
            (
                AttendedKeys {
                    causal: true,
                    window: Some(2),
                },
                [0, 0, 1],
                [1, 2, 3],
            ),
        ];
        for (keys, first, end) in masks {
            let a = compute_attention(&v, &spans, keys, 1.0 / 2f64.sqrt()).expect("attention");
            assert_eq!(a[0].seq_id, 4);
            for i in 0..3 {
                let visible = first[i]..end[i];
                let logit = |j: usize| {
                    let (qi, kj) = (v.queries().row(i), v.keys().row(j));
                    (f64::from(qi[0] * kj[0] + qi[1] * kj[1])) / 2f64.sqrt()
                };
                let z: f64 = visible.clone().map(|j| logit(j).exp()).sum();
                for j in 0..3 {
                    let want = if visible.contains(&j) {
                        logit(j).exp() / z
                    } else {
                        0.0
                    };
                    assert!(
                        (f64::from(a[0].get(i, j)) - want).abs() < 1e-6,
                        "{keys:?} {i} {j}"
                    );
                }
            }
        }
    }
}
