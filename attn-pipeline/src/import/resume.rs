//! Resuming an import: the inputs and settings it records, and what differs from a new plan.

use std::path::PathBuf;

use attn_types::DatasetMeta;

use crate::error::{Context, Result};
use crate::run::{self};

use super::vectors::VectorSource;
use super::{AttentionSource, ImportPlan};

/// Prefix of the run parameters that record an input file: `input_file:<path>`.
pub const INPUT_FILE: &str = "input_file:";

/// Every input file of the import with its size and modification time, as recorded in the
/// dataset: a file replaced or edited in place under the same name is another input.
pub(super) fn input_stamps(
    plan: &ImportPlan,
    source: &VectorSource,
) -> Result<Vec<(String, String)>> {
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
pub(super) fn import_difference(
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
