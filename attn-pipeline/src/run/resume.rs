//! Resuming a dataset: the settings that decide what its data is (a dataset made with others is
//! refused), and the locks of the processes writing into it.

use std::collections::BTreeMap;
use std::path::Path;

use attn_store::Dataset;
use attn_types::DatasetMeta;

use crate::error::{Context, PipelineError, Result, bail};
use crate::select::Shard;

/// Prefix of the run parameters that record a file of the model directory, by name:
/// `model_file:<name>` = `<bytes> bytes, xxh3:<digest>`.
pub const MODEL_FILE: &str = "model_file:";

/// The files of a model directory besides its weights (`*.safetensors`) that decide what the model
/// makes of a corpus: its configuration, shard index, tokenizer and image preprocessing.
const MODEL_SIDE_FILES: &[&str] = &[
    "config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
];

/// The model's identity by content, as run parameters: every `*.safetensors` file of `dir` and
/// each of [`MODEL_SIDE_FILES`] present, with its size and a digest of all its bytes. All of them:
/// weights scaled in place keep the safetensors header and size (same shapes, dtypes, offsets), so
/// only the data tells them apart. Hashing MiniLM's 90 MB takes 27-40 ms (2.3-3.4 GB/s from the
/// page cache, on 2 busy cores): a tenth of the smallest run (2 heads, 3 sentences: 0.3 s), 0.03% of
/// a 72-head run (24 sentences, three methods: 107 s); about 1 s per 3 GB of a larger checkpoint.
pub(super) fn model_files(dir: &Path) -> Result<BTreeMap<String, String>> {
    let listing =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry.with_context(|| format!("{}: cannot list", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.ends_with(".safetensors") || MODEL_SIDE_FILES.contains(&name.as_str()))
            && entry.path().is_file()
        {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let (bytes, digest) = crate::digest::file_xxh3(&path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            Ok((
                format!("{MODEL_FILE}{name}"),
                format!("{bytes} bytes, {digest}"),
            ))
        })
        .collect()
}

/// Why a dataset whose run parameters are `old` cannot be resumed with the model files of `new`
/// (this run's, from `model_dir`): the first file that differs, with both records; `None` when they
/// are the same. A dataset that recorded none was made before attnviz recorded them: its model
/// cannot be told from another, so it is refused too (as a sliding-window dataset made before
/// [`WINDOW_AWARE`] is).
fn model_difference(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    model_dir: &Path,
) -> Option<String> {
    let files = |params: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        params
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(MODEL_FILE)?.to_string(), v.clone())))
            .collect()
    };
    let (old, new) = (files(old), files(new));
    if old.is_empty() {
        return Some(format!(
            "the dataset there was made by an earlier attnviz that did not record the model's files, so it cannot tell whether --model {} is its model",
            model_dir.display()
        ));
    }
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names.into_iter().find_map(|name| {
        let (there, now) = (old.get(name), new.get(name));
        (there != now).then(|| {
            let say = |v: Option<&String>| v.map_or("absent".to_string(), |v| v.clone());
            format!(
                "the dataset there was made from another model than --model {} ({name}: {} there, {} now)",
                model_dir.display(),
                say(there),
                say(now)
            )
        })
    })
}

/// How vision runs prepare their images (recorded with the model's preprocessing settings, and
/// compared on resume): as transformers' PIL image processors, with PIL's resampling reproduced.
/// Datasets of earlier versions resized with the image crate's triangle filter and recorded nothing.
pub(super) const IMAGE_PREPROCESSING: &str = "transformers-pil";

/// The run settings that decide what a dataset's data is: a dataset that holds data made with other
/// ones must not be resumed with these (its files would be reused as if they were made now).
/// Datasets written before a setting was recorded have it empty, and are not refused for it.
pub(super) fn run_identity(meta: &DatasetMeta) -> Vec<(&'static str, String)> {
    let param = |k: &str| meta.run.params.get(k).cloned().unwrap_or_default();
    vec![
        // A corpus file or folder is known by its contents (the digest below), not by its path:
        // `./corpus.txt`, its absolute path and an identical copy elsewhere are the same corpus.
        ("corpus", {
            let named = &meta.run.corpus;
            let inline = named.starts_with("builtin:") || named.starts_with("inline:");
            if inline || param("corpus_digest").is_empty() {
                named.clone()
            } else {
                "a file or folder".to_string()
            }
        }),
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

/// Refuses to resume a dataset that holds data made from another corpus, another model (by the
/// contents of its files, see [`model_files`]; made from `model_dir` now) or with other extraction
/// settings, naming the first setting that differs.
pub(super) fn check_same_run(out: &Path, meta: &DatasetMeta, model_dir: &Path) -> Result<()> {
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
    if let Some(why) = model_difference(&existing.meta().run.params, &meta.run.params, model_dir) {
        bail!(
            "{}: {why}; use a new --out directory (or delete that one)",
            out.display()
        );
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
