//! One function pair per artifact file: its Arrow schema, a writer and a validating reader. The
//! [`crate::Dataset`] methods call these with the dataset's paths; they are public so that files can be
//! written or read on their own (e.g. a user's own query/key vectors).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float32Array, StringArray, UInt16Array, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use attn_types::{
    HeadDiagnostics, HeadId, HeadProjection, HeadVectors, Matrix, NormalizationParams,
    NormalizedHead, PatchPos, SequenceAttention, TokenMeta, TokenTable,
};
use serde_json::{Value, json};

use crate::StoreError;
use crate::json::{
    head_from_json, head_to_json, normalization_from_json, normalization_to_json,
    projection_from_json, projection_to_json,
};
use crate::pq::{ParquetTable, batch, vector_array, vector_type, write_parquet};

/// Key-value metadata key: the head a per-head file belongs to, `{"layer":0,"head":1}`.
pub const KV_HEAD: &str = "attnviz.head";
/// Key-value metadata key in `vectors.parquet`: `{"params":{...},"diagnostics":{...}}`.
pub const KV_NORMALIZATION: &str = "attnviz.normalization";
/// Key-value metadata key of grouped-query datasets: in a query head's `vectors.parquet`, the key
/// head whose file holds its keys; in that key file, the key head itself (`{"layer":0,"head":1}`,
/// `head` counting key heads).
pub const KV_KEY_HEAD: &str = "attnviz.key_head";
/// Key-value metadata key in `attention.parquet`: `[[seq_id, len], ...]` in sequence order.
pub const KV_SEQUENCES: &str = "attnviz.sequences";
/// Key-value metadata key in projection files: `{"head","spec","objective","quality"}`.
pub const KV_PROJECTION: &str = "attnviz.projection";

/// A head's vectors as stored: the raw query/key vectors and, when written, the normalized ones with
/// their parameters and diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHead {
    /// Raw (un-normalized) queries and keys.
    pub raw: HeadVectors,
    /// The normalized head, when it was stored.
    pub normalized: Option<NormalizedHead>,
}

fn to_u32(path: &Path, field: &str, v: usize) -> Result<u32, StoreError> {
    u32::try_from(v)
        .map_err(|_| StoreError::invalid(path, field, format!("{v} does not fit in u32")))
}

fn head_kv(head: HeadId) -> (String, String) {
    (KV_HEAD.to_string(), head_to_json(head).to_string())
}

/// Checks the file's recorded head (when it records one) against the head asked for.
fn check_head(c: &ParquetTable, head: HeadId) -> Result<(), StoreError> {
    if let Some(v) = c.kv_json(KV_HEAD)? {
        let found = head_from_json(&c.path, KV_HEAD, &v)?;
        if found != head {
            return Err(StoreError::invalid(
                &c.path,
                KV_HEAD,
                format!("file holds head {found}, expected {head}"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------- tokens

/// Schema of `tokens.parquet`: one row per token, row `i` = token index `i`.
pub fn tokens_schema() -> Schema {
    Schema::new(vec![
        Field::new("token_index", DataType::UInt32, false),
        Field::new("seq_id", DataType::UInt32, false),
        Field::new("position", DataType::UInt32, false),
        Field::new("seq_len", DataType::UInt32, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("is_special", DataType::Boolean, false),
        Field::new("patch_row", DataType::UInt16, true),
        Field::new("patch_col", DataType::UInt16, true),
        Field::new("is_cls", DataType::Boolean, false),
        Field::new("offset_start", DataType::UInt32, true),
        Field::new("offset_end", DataType::UInt32, true),
    ])
}

/// Writes a token table as `tokens.parquet` (atomically).
pub fn write_tokens_file(path: impl AsRef<Path>, tokens: &TokenTable) -> Result<(), StoreError> {
    let path = path.as_ref();
    let t = &tokens.tokens;
    let n = to_u32(path, "token_index", t.len())?;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(0..n)),
        Arc::new(UInt32Array::from_iter_values(t.iter().map(|x| x.seq_id))),
        Arc::new(UInt32Array::from_iter_values(t.iter().map(|x| x.position))),
        Arc::new(UInt32Array::from_iter_values(t.iter().map(|x| x.seq_len))),
        Arc::new(StringArray::from_iter_values(
            t.iter().map(|x| x.text.as_str()),
        )),
        Arc::new(BooleanArray::from_iter(
            t.iter().map(|x| Some(x.is_special)),
        )),
        Arc::new(UInt16Array::from_iter(
            t.iter().map(|x| x.patch.map(|p| p.row)),
        )),
        Arc::new(UInt16Array::from_iter(
            t.iter().map(|x| x.patch.map(|p| p.col)),
        )),
        Arc::new(BooleanArray::from_iter(t.iter().map(|x| Some(x.is_cls)))),
        Arc::new(UInt32Array::from_iter(
            t.iter().map(|x| x.offsets.map(|o| o.0)),
        )),
        Arc::new(UInt32Array::from_iter(
            t.iter().map(|x| x.offsets.map(|o| o.1)),
        )),
    ];
    let b = batch(path, Arc::new(tokens_schema()), cols)?;
    write_parquet(path, &b, Vec::new())
}

/// Pairs two nullable columns that must be null together.
fn pair_opt<T: Copy, U>(
    path: &Path,
    names: (&str, &str),
    a: Option<Vec<Option<T>>>,
    b: Option<Vec<Option<T>>>,
    n: usize,
    make: impl Fn(T, T) -> U,
) -> Result<Vec<Option<U>>, StoreError> {
    match (a, b) {
        (None, None) => Ok((0..n).map(|_| None).collect()),
        (Some(_), None) => Err(StoreError::MissingColumn {
            path: path.to_path_buf(),
            column: names.1.to_string(),
        }),
        (None, Some(_)) => Err(StoreError::MissingColumn {
            path: path.to_path_buf(),
            column: names.0.to_string(),
        }),
        (Some(a), Some(b)) => a
            .into_iter()
            .zip(b)
            .enumerate()
            .map(|(row, pair)| match pair {
                (Some(x), Some(y)) => Ok(Some(make(x, y))),
                (None, None) => Ok(None),
                _ => Err(StoreError::invalid(
                    path,
                    format!("{}/{}", names.0, names.1),
                    format!("row {row}: one is null and the other is not"),
                )),
            })
            .collect(),
    }
}

/// Reads `tokens.parquet`. `patch_*`, `offset_*` and `is_cls` may be absent (text corpora written by
/// other tools); the other columns are required. Checks that rows are in token order and that the
/// sequences are consistent ([`TokenTable::validate`]).
pub fn read_tokens_file(path: impl AsRef<Path>) -> Result<TokenTable, StoreError> {
    let c = ParquetTable::read(path.as_ref())?;
    let path = c.path.as_path();
    c.check_token_index()?;
    let seq_id = c.u32("seq_id")?;
    let position = c.u32("position")?;
    let seq_len = c.u32("seq_len")?;
    let text = c.strings("text")?;
    let is_special = c.bool("is_special")?;
    let n = c.rows;
    let is_cls = if c.has("is_cls") {
        c.bool("is_cls")?
    } else {
        vec![false; n]
    };
    let patches = pair_opt(
        path,
        ("patch_row", "patch_col"),
        c.u16_opt("patch_row")?,
        c.u16_opt("patch_col")?,
        n,
        |row, col| PatchPos { row, col },
    )?;
    let offsets = pair_opt(
        path,
        ("offset_start", "offset_end"),
        c.u32_opt("offset_start")?,
        c.u32_opt("offset_end")?,
        n,
        |a, b| (a, b),
    )?;
    let mut tokens = Vec::with_capacity(n);
    for (i, text) in text.into_iter().enumerate() {
        tokens.push(TokenMeta {
            seq_id: seq_id[i],
            position: position[i],
            seq_len: seq_len[i],
            text,
            is_special: is_special[i],
            patch: patches[i],
            is_cls: is_cls[i],
            offsets: offsets[i],
        });
    }
    let table = TokenTable { tokens };
    table
        .validate()
        .map_err(|e| StoreError::invalid(path, "seq_id/position/seq_len", e.to_string()))?;
    Ok(table)
}

// --------------------------------------------------------------------------------------------- vectors

/// Schema of `vectors.parquet` for head dimension `d`: `token_index`, `query`, `key`, the raw norms
/// `query_norm` and `key_norm` (so that views and summaries need not read the vectors), and, when
/// `normalized`, `query_normalized` and `key_normalized` (all vectors `FixedSizeList<Float32, d>`).
pub fn vectors_schema(d: usize, normalized: bool) -> Schema {
    vectors_schema_with(d, normalized, true)
}

/// Schema of the `vectors.parquet` of a query head whose keys are stored once per key head
/// (grouped-query attention): [`vectors_schema`] without the key columns.
pub fn query_vectors_schema(d: usize, normalized: bool) -> Schema {
    vectors_schema_with(d, normalized, false)
}

fn vectors_schema_with(d: usize, normalized: bool, keys: bool) -> Schema {
    let d = i32::try_from(d).unwrap_or(i32::MAX);
    let mut fields = vec![
        Field::new("token_index", DataType::UInt32, false),
        Field::new("query", vector_type(d), false),
    ];
    if keys {
        fields.push(Field::new("key", vector_type(d), false));
    }
    fields.push(Field::new("query_norm", DataType::Float32, false));
    if keys {
        fields.push(Field::new("key_norm", DataType::Float32, false));
    }
    if normalized {
        fields.push(Field::new("query_normalized", vector_type(d), false));
        if keys {
            fields.push(Field::new("key_normalized", vector_type(d), false));
        }
    }
    Schema::new(fields)
}

/// Schema of a key head's file (`key_heads/L<layer>K<key head>.parquet`): `token_index`, the raw
/// `key` vectors and their norms `key_norm`.
pub fn keys_schema(d: usize) -> Schema {
    let d = i32::try_from(d).unwrap_or(i32::MAX);
    Schema::new(vec![
        Field::new("token_index", DataType::UInt32, false),
        Field::new("key", vector_type(d), false),
        Field::new("key_norm", DataType::Float32, false),
    ])
}

/// Name of a key head's file: `L{layer:02}K{key head:02}.parquet` (`key_head.head` is the key head).
pub fn key_file_name(key_head: HeadId) -> String {
    format!("L{:02}K{:02}.parquet", key_head.layer, key_head.head)
}

/// Where the key file of `key_head` lies for the query head file at `vectors_path`, in the store's
/// layout: `<dataset>/heads/L..H../vectors.parquet` -> `<dataset>/key_heads/L..K...parquet`.
pub fn key_file_beside(vectors_path: &Path, key_head: HeadId) -> std::path::PathBuf {
    // Absolute first: a relative `L00H00/vectors.parquet` has `.`-less parents.
    let vectors_path = std::path::absolute(vectors_path).unwrap_or_else(|_| vectors_path.into());
    let dataset = vectors_path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    dataset
        .join(crate::dataset::KEY_HEADS_DIR)
        .join(key_file_name(key_head))
}

/// Writes a head's raw (and optionally normalized) query/key vectors, with the normalization
/// parameters and diagnostics as JSON in the key-value metadata (`attnviz.normalization`).
pub fn write_vectors_file(
    path: impl AsRef<Path>,
    raw: &HeadVectors,
    normalized: Option<&NormalizedHead>,
) -> Result<(), StoreError> {
    write_vectors(path.as_ref(), raw, normalized, None)
}

/// Writes a query head's file without its keys, which are stored once in `key_head`'s file (see
/// [`write_keys_file`]); the footer records the key head (`attnviz.key_head`). Readers recompute the
/// normalized keys from the raw ones and the stored parameters, with the normalizer's own arithmetic
/// ([`NormalizationParams::normalize_keys`]), so they equal what it produced bit for bit.
pub fn write_query_vectors_file(
    path: impl AsRef<Path>,
    raw: &HeadVectors,
    normalized: Option<&NormalizedHead>,
    key_head: HeadId,
) -> Result<(), StoreError> {
    write_vectors(path.as_ref(), raw, normalized, Some(key_head))
}

fn write_vectors(
    path: &Path,
    raw: &HeadVectors,
    normalized: Option<&NormalizedHead>,
    shared_keys: Option<HeadId>,
) -> Result<(), StoreError> {
    let (n, d) = raw.queries().shape();
    if raw.keys().shape() != (n, d) {
        return Err(StoreError::invalid(
            path,
            "key",
            format!("keys are {:?}, queries are {n} x {d}", raw.keys().shape()),
        ));
    }
    let inline_keys = shared_keys.is_none();
    let mut cols = vec![
        Arc::new(UInt32Array::from_iter_values(
            0..to_u32(path, "token_index", n)?,
        )) as ArrayRef,
        vector_array(path, "query", d, n, raw.queries().as_slice())?,
    ];
    if inline_keys {
        cols.push(vector_array(path, "key", d, n, raw.keys().as_slice())?);
    }
    cols.push(Arc::new(Float32Array::from(raw.queries().row_norms())) as ArrayRef);
    if inline_keys {
        cols.push(Arc::new(Float32Array::from(raw.keys().row_norms())) as ArrayRef);
    }
    let mut kv = vec![head_kv(raw.head())];
    if let Some(key_head) = shared_keys {
        kv.push((KV_KEY_HEAD.to_string(), head_to_json(key_head).to_string()));
    }
    if let Some(norm) = normalized {
        let v = &norm.vectors;
        if v.head() != raw.head() {
            return Err(StoreError::invalid(
                path,
                "query_normalized",
                format!(
                    "normalized vectors are of head {}, raw of {}",
                    v.head(),
                    raw.head()
                ),
            ));
        }
        for (name, m) in [
            ("query_normalized", v.queries()),
            ("key_normalized", v.keys()),
        ] {
            if m.shape() != (n, d) {
                return Err(StoreError::invalid(
                    path,
                    name,
                    format!("shape {:?} differs from the raw {n} x {d}", m.shape()),
                ));
            }
            if name == "query_normalized" || inline_keys {
                cols.push(vector_array(path, name, d, n, m.as_slice())?);
            }
        }
        kv.push((
            KV_NORMALIZATION.to_string(),
            normalization_to_json(&norm.params, &norm.diagnostics).to_string(),
        ));
    }
    let b = batch(
        path,
        Arc::new(vectors_schema_with(d, normalized.is_some(), inline_keys)),
        cols,
    )?;
    write_parquet(path, &b, kv)
}

/// Writes the raw keys of a key head that several query heads share (grouped-query attention).
pub fn write_keys_file(
    path: impl AsRef<Path>,
    key_head: HeadId,
    keys: &Matrix,
) -> Result<(), StoreError> {
    let path = path.as_ref();
    let (n, d) = keys.shape();
    let cols = vec![
        Arc::new(UInt32Array::from_iter_values(
            0..to_u32(path, "token_index", n)?,
        )) as ArrayRef,
        vector_array(path, "key", d, n, keys.as_slice())?,
        Arc::new(Float32Array::from(keys.row_norms())) as ArrayRef,
    ];
    let b = batch(path, Arc::new(keys_schema(d)), cols)?;
    write_parquet(
        path,
        &b,
        vec![(KV_KEY_HEAD.to_string(), head_to_json(key_head).to_string())],
    )
}

/// Creates a key head's file unless it exists (a unique temporary file, hard-linked into place):
/// a file already there, written by a concurrent writer, is kept as it is.
pub(crate) fn create_keys_file(
    path: &Path,
    key_head: HeadId,
    keys: &Matrix,
) -> Result<(), StoreError> {
    let tmp = crate::pq::temp_path(path);
    write_keys_file(&tmp, key_head, keys)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// The key head a table records (`attnviz.key_head`), when it records one.
fn key_head_of_table(c: &ParquetTable) -> Result<Option<HeadId>, StoreError> {
    c.kv_json(KV_KEY_HEAD)?
        .map(|v| head_from_json(&c.path, KV_KEY_HEAD, &v))
        .transpose()
}

/// The key head that a query head's vectors file records (`attnviz.key_head`: its keys are in that
/// key head's file), from the footer alone; `None` for files that hold their keys.
pub fn recorded_key_head(path: impl AsRef<Path>) -> Result<Option<HeadId>, StoreError> {
    let footer = ParquetTable::read_columns(path.as_ref(), &[])?;
    if footer.has_file_column("key") {
        return Ok(None);
    }
    key_head_of_table(&footer)
}

/// Checks that a key file records `key_head` and has `rows` rows (the query head file's).
fn check_key_file(c: &ParquetTable, key_head: HeadId, rows: usize) -> Result<(), StoreError> {
    match key_head_of_table(c)? {
        Some(found) if found == key_head => {}
        found => {
            return Err(StoreError::invalid(
                &c.path,
                KV_KEY_HEAD,
                format!(
                    "file holds key head {}, expected {key_head}",
                    found.map_or("none".into(), |h| h.to_string())
                ),
            ));
        }
    }
    if c.rows != rows {
        return Err(StoreError::invalid(
            &c.path,
            "key",
            format!("{} keys, but the query head has {rows} tokens", c.rows),
        ));
    }
    Ok(())
}

/// Reads the raw keys of a key head's file (see [`write_keys_file`]).
pub fn read_keys_file(path: impl AsRef<Path>, key_head: HeadId) -> Result<Matrix, StoreError> {
    read_keys(path.as_ref(), key_head, None)
}

/// The keys of `key_head`'s file at `path`, checked to be that key head's and, when `rows` is
/// given, to have that many rows (a query head's tokens).
fn read_keys(path: &Path, key_head: HeadId, rows: Option<usize>) -> Result<Matrix, StoreError> {
    let c = ParquetTable::read(path)?;
    check_key_file(&c, key_head, rows.unwrap_or(c.rows))?;
    c.check_token_index()?;
    matrix_col(&c, "key")
}

/// Reads one vector column as an `n x d` matrix.
fn matrix_col(c: &ParquetTable, column: &str) -> Result<Matrix, StoreError> {
    let (d, values) = c.vectors(column)?;
    Matrix::from_vec(c.rows, d, values)
        .map_err(|e| StoreError::invalid(&c.path, column, e.to_string()))
}

/// Reads a vectors file as head `head`.
///
/// Accepts files from other tools: required columns `query` and `key`, each `FixedSizeList<Float32, d>`
/// or `List<Float32>` with `d` values in every row, one row per token in token order; `token_index`
/// (`UInt32`) is optional but, when present, must be `0..n` in order. `query_normalized` /
/// `key_normalized` are optional (both or neither) and then need the `attnviz.normalization`
/// key-value metadata. A recorded `attnviz.head` must equal `head`.
///
/// A query head file of a grouped-query dataset has no key columns and records its key head
/// (`attnviz.key_head`): its keys are read from that key head's file in the store's layout
/// ([`key_file_beside`]) and its normalized keys recomputed from the stored parameters.
pub fn read_vectors_file(path: impl AsRef<Path>, head: HeadId) -> Result<StoredHead, StoreError> {
    let c = ParquetTable::read(path.as_ref())?;
    check_head(&c, head)?;
    c.check_token_index()?;
    let shared_keys = match key_head_of_table(&c)? {
        Some(key_head) if !c.has("key") => Some(key_head),
        _ => None,
    };
    let queries = matrix_col(&c, "query")?;
    let keys = match shared_keys {
        Some(key_head) => read_keys(&key_file_beside(&c.path, key_head), key_head, Some(c.rows))
            .map_err(|e| match e {
                StoreError::NotFound { path, .. } => StoreError::NotFound {
                    path,
                    what: format!(
                        "the key file of key head {key_head}, which {} reads its keys from \
                         (a grouped-query dataset keeps it in `key_heads/` beside `heads/`)",
                        c.path.display()
                    ),
                },
                e => e,
            })?,
        None => matrix_col(&c, "key")?,
    };
    let raw = HeadVectors::new(head, queries, keys)
        .map_err(|e| StoreError::invalid(&c.path, "key", e.to_string()))?;
    // Shared keys are normalized on reading, so their `key_normalized` is as present as the queries'.
    let key_normalized = match shared_keys {
        Some(_) => c.has("query_normalized"),
        None => c.has("key_normalized"),
    };
    let normalized = match (c.has("query_normalized"), key_normalized) {
        (false, false) => None,
        (true, false) | (false, true) => {
            let missing = if c.has("query_normalized") {
                "key_normalized"
            } else {
                "query_normalized"
            };
            return Err(StoreError::MissingColumn {
                path: c.path.clone(),
                column: missing.into(),
            });
        }
        (true, true) => {
            let record = c.kv_json(KV_NORMALIZATION)?.ok_or_else(|| {
                StoreError::json(
                    &c.path,
                    KV_NORMALIZATION,
                    "missing from the key-value metadata",
                )
            })?;
            let (params, diagnostics) =
                normalization_from_json(&c.path, KV_NORMALIZATION, &record)?;
            let keys = match shared_keys {
                Some(_) => {
                    check_params(&c.path, &params, raw.dim())?;
                    params.normalize_keys(raw.keys())
                }
                None => matrix_col(&c, "key_normalized")?,
            };
            let vectors = HeadVectors::new(head, matrix_col(&c, "query_normalized")?, keys)
                .map_err(|e| StoreError::invalid(&c.path, "key_normalized", e.to_string()))?;
            if vectors.dim() != raw.dim() {
                return Err(StoreError::invalid(
                    &c.path,
                    "query_normalized",
                    format!(
                        "dimension {} differs from the raw {}",
                        vectors.dim(),
                        raw.dim()
                    ),
                ));
            }
            Some(NormalizedHead {
                vectors,
                params,
                diagnostics,
            })
        }
    };
    Ok(StoredHead { raw, normalized })
}

/// Checks stored normalization parameters before keys are recomputed with them.
fn check_params(path: &Path, p: &NormalizationParams, d: usize) -> Result<(), StoreError> {
    if !(p.scale.is_finite() && p.scale > 0.0) {
        return Err(StoreError::invalid(
            path,
            format!("{KV_NORMALIZATION}.params.scale"),
            format!("{} is not a finite positive number", p.scale),
        ));
    }
    let t = &p.key_translation;
    if !(t.is_empty() || t.len() == d) || t.iter().any(|v| !v.is_finite()) {
        return Err(StoreError::invalid(
            path,
            format!("{KV_NORMALIZATION}.params.key_translation"),
            format!("needs {d} finite values (or none), has {}", t.len()),
        ));
    }
    Ok(())
}

/// The raw query and key norms of a vectors file (`|q|`, `|k|` per token, before normalization), read
/// from its `query_norm`/`key_norm` columns without decoding the vectors (for a query head with
/// shared keys, `key_norm` of its key head's file); computed from the vectors for files that lack
/// those columns (written by other tools).
pub fn read_vector_norms_file(
    path: impl AsRef<Path>,
    head: HeadId,
) -> Result<(Vec<f32>, Vec<f32>), StoreError> {
    let path = path.as_ref();
    match ParquetTable::read_columns(path, &["query_norm", "key_norm"]) {
        Ok(c) => {
            check_head(&c, head)?;
            Ok((c.f32("query_norm")?, c.f32("key_norm")?))
        }
        Err(StoreError::NoSuchColumn { .. }) => {
            if let Ok(c) = ParquetTable::read_columns(path, &["query_norm"])
                && !c.has_file_column("key")
                && let Some(key_head) = key_head_of_table(&c)?
            {
                check_head(&c, head)?;
                let k = ParquetTable::read_columns(key_file_beside(path, key_head), &["key_norm"])?;
                check_key_file(&k, key_head, c.rows)?;
                return Ok((c.f32("query_norm")?, k.f32("key_norm")?));
            }
            let raw = read_vectors_file(path, head)?.raw;
            Ok((raw.queries().row_norms(), raw.keys().row_norms()))
        }
        Err(e) => Err(e),
    }
}

/// The normalization parameters and diagnostics of a vectors file, from its footer alone (`None`
/// when the head was stored without normalization).
pub fn read_normalization_file(
    path: impl AsRef<Path>,
    head: HeadId,
) -> Result<Option<(NormalizationParams, HeadDiagnostics)>, StoreError> {
    let path = path.as_ref();
    let c = ParquetTable::read_columns(path, &[])?;
    check_head(&c, head)?;
    match c.kv_json(KV_NORMALIZATION)? {
        None => Ok(None),
        Some(record) => Ok(Some(normalization_from_json(
            path,
            KV_NORMALIZATION,
            &record,
        )?)),
    }
}

// ------------------------------------------------------------------------------------------- attention

/// Schema of `attention.parquet`: sparse long format, one row per non-zero weight, so causal masks
/// (half zeros) cost nothing and DuckDB can aggregate directly.
pub fn attention_schema() -> Schema {
    Schema::new(vec![
        Field::new("seq_id", DataType::UInt32, false),
        Field::new("seq_len", DataType::UInt32, false),
        Field::new("query_pos", DataType::UInt32, false),
        Field::new("key_pos", DataType::UInt32, false),
        Field::new("weight", DataType::Float32, false),
    ])
}

/// Writes a head's attention matrices: every non-zero entry as one row, sequences in order, rows
/// by query then key position. The sequence list (`[[seq_id, len], ...]`) is kept in the metadata so
/// that all-zero rows and empty sequences survive the round trip.
pub fn write_attention_file(
    path: impl AsRef<Path>,
    head: HeadId,
    attention: &[SequenceAttention],
) -> Result<(), StoreError> {
    let path = path.as_ref();
    let (mut seq, mut lens, mut qs, mut ks, mut ws) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut sequences = Vec::with_capacity(attention.len());
    for a in attention {
        let (rows, cols) = a.weights.shape();
        if rows != cols {
            return Err(StoreError::invalid(
                path,
                "weight",
                format!(
                    "sequence {}: attention is {rows} x {cols}, not square",
                    a.seq_id
                ),
            ));
        }
        let len = to_u32(path, "seq_len", rows)?;
        sequences.push(json!([a.seq_id, len]));
        for (q, row) in a.weights.iter_rows().enumerate() {
            for (k, &w) in row.iter().enumerate() {
                if w != 0.0 {
                    seq.push(a.seq_id);
                    lens.push(len);
                    // q, k < len, which fits in u32.
                    qs.push(q as u32);
                    ks.push(k as u32);
                    ws.push(w);
                }
            }
        }
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(seq)),
        Arc::new(UInt32Array::from(lens)),
        Arc::new(UInt32Array::from(qs)),
        Arc::new(UInt32Array::from(ks)),
        Arc::new(Float32Array::from(ws)),
    ];
    let b = batch(path, Arc::new(attention_schema()), cols)?;
    let kv = vec![
        head_kv(head),
        (
            KV_SEQUENCES.to_string(),
            Value::Array(sequences).to_string(),
        ),
    ];
    write_parquet(path, &b, kv)
}

/// Reads `attention.parquet` back into dense matrices. Without the `attnviz.sequences` metadata
/// (a file from another tool) the sequences are taken in order of first appearance, sized by
/// `seq_len`.
pub fn read_attention_file(path: impl AsRef<Path>) -> Result<Vec<SequenceAttention>, StoreError> {
    let c = ParquetTable::read(path.as_ref())?;
    let path = c.path.as_path();
    let seq = c.u32("seq_id")?;
    let lens = c.u32("seq_len")?;
    let qs = c.u32("query_pos")?;
    let ks = c.u32("key_pos")?;
    let ws = c.f32("weight")?;
    let mut order: Vec<(u32, usize)> = Vec::new();
    match c.kv_json(KV_SEQUENCES)? {
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let pair = item
                    .as_array()
                    .filter(|p| p.len() == 2)
                    .and_then(|p| Some((p[0].as_u64()?, p[1].as_u64()?)))
                    .and_then(|(s, l)| Some((u32::try_from(s).ok()?, usize::try_from(l).ok()?)))
                    .ok_or_else(|| {
                        StoreError::json(
                            path,
                            format!("{KV_SEQUENCES}[{i}]"),
                            "expected [seq_id, len]",
                        )
                    })?;
                order.push(pair);
            }
        }
        Some(_) => return Err(StoreError::json(path, KV_SEQUENCES, "expected an array")),
        None => {
            let mut seen = std::collections::HashSet::new();
            for (&s, &l) in seq.iter().zip(&lens) {
                if seen.insert(s) {
                    order.push((s, l as usize));
                }
            }
        }
    }
    let mut index: HashMap<u32, usize> = HashMap::with_capacity(order.len());
    let mut out = Vec::with_capacity(order.len());
    for (i, &(s, l)) in order.iter().enumerate() {
        if index.insert(s, i).is_some() {
            return Err(StoreError::json(
                path,
                KV_SEQUENCES,
                format!("sequence {s} listed twice"),
            ));
        }
        out.push(SequenceAttention {
            seq_id: s,
            weights: Matrix::zeros(l, l),
        });
    }
    for row in 0..seq.len() {
        let s = seq[row];
        let i = *index.get(&s).ok_or_else(|| {
            StoreError::invalid(
                path,
                "seq_id",
                format!("row {row}: sequence {s} is not listed"),
            )
        })?;
        let m = &mut out[i].weights;
        let l = m.rows();
        if lens[row] as usize != l {
            return Err(StoreError::invalid(
                path,
                "seq_len",
                format!(
                    "row {row}: sequence {s} has length {l}, row says {}",
                    lens[row]
                ),
            ));
        }
        let (q, k) = (qs[row] as usize, ks[row] as usize);
        if q >= l || k >= l {
            return Err(StoreError::invalid(
                path,
                "query_pos/key_pos",
                format!("row {row}: ({q}, {k}) outside sequence {s} of length {l}"),
            ));
        }
        m.row_mut(q)[k] = ws[row];
    }
    Ok(out)
}

// ----------------------------------------------------------------------------------------- value norms

/// Schema of `value_norms.parquet`: `token_index`, `value_norm` (`|v|` of the token's value vector).
pub fn value_norms_schema() -> Schema {
    Schema::new(vec![
        Field::new("token_index", DataType::UInt32, false),
        Field::new("value_norm", DataType::Float32, false),
    ])
}

/// Writes a head's value norms, one per token.
pub fn write_value_norms_file(
    path: impl AsRef<Path>,
    head: HeadId,
    norms: &[f32],
) -> Result<(), StoreError> {
    let path = path.as_ref();
    let n = to_u32(path, "token_index", norms.len())?;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(0..n)),
        Arc::new(Float32Array::from(norms.to_vec())),
    ];
    let b = batch(path, Arc::new(value_norms_schema()), cols)?;
    write_parquet(path, &b, vec![head_kv(head)])
}

/// Reads a value-norms file (rows in token order).
pub fn read_value_norms_file(path: impl AsRef<Path>) -> Result<Vec<f32>, StoreError> {
    let c = ParquetTable::read(path.as_ref())?;
    c.check_token_index()?;
    c.f32("value_norm")
}

// ----------------------------------------------------------------------------------------- projections

/// Schema of a projection file: one row per joint point (queries of tokens `0..n`, then their keys),
/// `z` null for 2-D projections.
pub fn projection_schema() -> Schema {
    Schema::new(vec![
        Field::new("token_index", DataType::UInt32, false),
        Field::new("is_key", DataType::Boolean, false),
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float32, false),
        Field::new("z", DataType::Float32, true),
    ])
}

/// Writes a head's projection, with its spec, objective and quality as JSON in the key-value
/// metadata (`attnviz.projection`).
pub fn write_projection_file(path: impl AsRef<Path>, p: &HeadProjection) -> Result<(), StoreError> {
    let path = path.as_ref();
    let (rows, dims) = p.coords.shape();
    if !(2..=3).contains(&p.spec.dims) || dims != usize::from(p.spec.dims) {
        return Err(StoreError::invalid(
            path,
            "x/y/z",
            format!(
                "coordinates have {dims} columns, spec.dims is {} (2 or 3 allowed)",
                p.spec.dims
            ),
        ));
    }
    if rows % 2 != 0 {
        return Err(StoreError::invalid(
            path,
            "token_index",
            format!("{rows} points: a joint query+key set has an even number"),
        ));
    }
    let n = to_u32(path, "token_index", rows / 2)?;
    let col = |j: usize| p.coords.iter_rows().map(move |r| r[j]);
    let z: Float32Array = if dims == 3 {
        col(2).map(Some).collect()
    } else {
        std::iter::repeat_n(None::<f32>, rows).collect()
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values((0..n).chain(0..n))),
        Arc::new(BooleanArray::from_iter(
            (0..rows).map(|r| Some(r >= rows / 2)),
        )),
        Arc::new(Float32Array::from_iter_values(col(0))),
        Arc::new(Float32Array::from_iter_values(col(1))),
        Arc::new(z),
    ];
    let b = batch(path, Arc::new(projection_schema()), cols)?;
    let record = projection_to_json(
        p.head,
        &p.spec,
        p.objective,
        p.quality.as_ref(),
        p.fidelity.as_ref(),
        p.ceiling.as_ref(),
    );
    write_parquet(
        path,
        &b,
        vec![(KV_PROJECTION.to_string(), record.to_string())],
    )
}

/// Reads a projection file. Rows may come in any order; each `(token_index, is_key)` must appear
/// exactly once for tokens `0..n`.
pub fn read_projection_file(path: impl AsRef<Path>) -> Result<HeadProjection, StoreError> {
    let c = ParquetTable::read(path.as_ref())?;
    let path = c.path.as_path();
    let record = c.kv_json(KV_PROJECTION)?.ok_or_else(|| {
        StoreError::json(path, KV_PROJECTION, "missing from the key-value metadata")
    })?;
    let record = projection_from_json(path, KV_PROJECTION, &record)?;
    let dims = usize::from(record.spec.dims);
    if !(2..=3).contains(&dims) {
        return Err(StoreError::json(
            path,
            format!("{KV_PROJECTION}.spec.dims"),
            "must be 2 or 3",
        ));
    }
    let tokens = c.u32("token_index")?;
    let is_key = c.bool("is_key")?;
    let x = c.f32("x")?;
    let y = c.f32("y")?;
    let z = if dims == 3 {
        let z = c.f32_opt("z")?.ok_or_else(|| StoreError::MissingColumn {
            path: path.to_path_buf(),
            column: "z".into(),
        })?;
        z.into_iter()
            .enumerate()
            .map(|(row, v)| {
                v.ok_or_else(|| {
                    StoreError::invalid(path, "z", format!("row {row}: null in a 3-D projection"))
                })
            })
            .collect::<Result<Vec<f32>, _>>()?
    } else {
        Vec::new()
    };
    let rows = c.rows;
    if rows % 2 != 0 {
        return Err(StoreError::invalid(
            path,
            "token_index",
            format!("{rows} rows: not an even number"),
        ));
    }
    let n = rows / 2;
    let mut coords = Matrix::zeros(rows, dims);
    let mut filled = vec![false; rows];
    for r in 0..rows {
        let t = tokens[r] as usize;
        if t >= n {
            return Err(StoreError::invalid(
                path,
                "token_index",
                format!("row {r}: token {t} out of range for {n} tokens"),
            ));
        }
        let target = if is_key[r] { n + t } else { t };
        if std::mem::replace(&mut filled[target], true) {
            return Err(StoreError::invalid(
                path,
                "token_index/is_key",
                format!("row {r}: token {t} (is_key = {}) appears twice", is_key[r]),
            ));
        }
        let out = coords.row_mut(target);
        out[0] = x[r];
        out[1] = y[r];
        if dims == 3 {
            out[2] = z[r];
        }
    }
    Ok(HeadProjection {
        head: record.head,
        spec: record.spec,
        coords,
        objective: record.objective,
        fidelity: record.fidelity,
        ceiling: record.ceiling,
        quality: record.quality,
    })
}
