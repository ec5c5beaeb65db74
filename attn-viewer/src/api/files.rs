//! The dataset's own files under `/files/`.

use std::path::{Component, Path, PathBuf};

use super::params::percent_decode;

/// Resolves `/files/<rel>` inside the dataset directory: only plain relative paths to regular files
/// that stay inside the directory (no `..`, no absolute paths, no symlink leaving it).
pub(crate) fn dataset_file(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = percent_decode(rel);
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return None;
    }
    let rel_path = Path::new(&rel);
    if !rel_path
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
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
