//! The dataset's own files under `/files/`: its data files, and its metadata without the absolute
//! paths of this machine.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::params::percent_decode;

/// Resolves `/files/<rel>` inside the dataset directory: only plain relative paths to regular files
/// that stay inside the directory (no `..`, no absolute paths, no symlink leaving it), and of those
/// only the data files (`meta.json`, Parquet tables, images and figures): no lock or temporary
/// file (named `.*`), nothing else a user put there.
pub(crate) fn dataset_file(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = percent_decode(rel);
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return None;
    }
    let rel_path = Path::new(&rel);
    if !rel_path
        .components()
        .all(|c| matches!(c, Component::Normal(name) if !name.to_string_lossy().starts_with('.')))
    {
        return None;
    }
    let data_file = rel == attn_store::META_FILE
        || matches!(
            rel_path.extension().and_then(|e| e.to_str()),
            Some("parquet" | "png" | "svg")
        );
    if !data_file {
        return None;
    }
    let root = dir.canonicalize().ok()?;
    let full = root.join(rel_path).canonicalize().ok()?;
    (full.starts_with(&root) && full.is_file()).then_some(full)
}

/// The content type of a dataset file served under `/files/`.
pub(super) fn content_type_of(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The bytes served for the dataset file at `path` (resolved by [`dataset_file`]): the file as it
/// is, except `meta.json`, whose absolute paths (an import's input files, a corpus) are cut to
/// their file names.
pub(super) fn served_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    if path.file_name().and_then(|n| n.to_str()) != Some(attn_store::META_FILE) {
        return Ok(bytes);
    }
    let meta: Value = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(without_absolute_paths(meta).to_string().into_bytes())
}

/// `value` with every absolute path in its strings and object keys cut to its file name: a string
/// that is one (`/home/u/q.npy`), or ends in one after a `:` or a space (`input_file:/home/u/q.npy`).
fn without_absolute_paths(value: Value) -> Value {
    fn cut(s: &str) -> String {
        let start = s
            .char_indices()
            .find(|&(i, c)| c == '/' && (i == 0 || s[..i].ends_with([':', ' '])))
            .map(|(i, _)| i);
        match start {
            Some(i) => {
                let name = Path::new(&s[i..])
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned());
                format!("{}{name}", &s[..i])
            }
            None => s.to_string(),
        }
    }
    match value {
        Value::String(s) => Value::String(cut(&s)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(without_absolute_paths).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (cut(&k), without_absolute_paths(v)))
                .collect(),
        ),
        other => other,
    }
}
