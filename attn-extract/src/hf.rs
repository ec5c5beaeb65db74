//! Reading Hugging Face model directories: `config.json` fields and safetensors weights.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{
    ApplyError, ApplyResult, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter,
    SafetensorsStore, SafetensorsStoreError,
};
use burn::tensor::DType;
use serde_json::Value;

use crate::error::{ExtractError, Result};

/// The parsed `config.json` of a model directory, with typed accessors that name the file on error.
pub(crate) struct HfConfig {
    pub path: PathBuf,
    pub json: Value,
}

impl HfConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let json = read_json(&path, "the model configuration")?;
        Ok(Self { path, json })
    }

    /// An `InvalidConfig` error naming this file.
    pub fn invalid(&self, message: impl Into<String>) -> ExtractError {
        ExtractError::InvalidConfig {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// The first present key of `keys` as a positive integer.
    pub fn usize(&self, keys: &[&str]) -> Result<usize> {
        self.opt_usize(keys)?
            .ok_or_else(|| self.invalid(format!("missing field `{}`", keys.join("` or `"))))
    }

    /// The first present (non-null) key of `keys` as an integer, if any.
    pub fn opt_usize(&self, keys: &[&str]) -> Result<Option<usize>> {
        for k in keys {
            match self.json.get(*k) {
                None | Some(Value::Null) => continue,
                Some(v) => {
                    return v
                        .as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .map(Some)
                        .ok_or_else(|| {
                            self.invalid(format!("field `{k}` is not a non-negative integer: {v}"))
                        });
                }
            }
        }
        Ok(None)
    }

    /// The first present (non-null) key as a float, or `default`.
    pub fn f64_or(&self, keys: &[&str], default: f64) -> Result<f64> {
        for k in keys {
            if let Some(v) = self.json.get(*k).filter(|v| !v.is_null()) {
                return v
                    .as_f64()
                    .ok_or_else(|| self.invalid(format!("field `{k}` is not a number: {v}")));
            }
        }
        Ok(default)
    }

    /// The first present (non-null) key as a string, or `default`.
    pub fn str_or<'a>(&'a self, keys: &[&str], default: &'a str) -> Result<&'a str> {
        for k in keys {
            if let Some(v) = self.json.get(*k).filter(|v| !v.is_null()) {
                return v
                    .as_str()
                    .ok_or_else(|| self.invalid(format!("field `{k}` is not a string: {v}")));
            }
        }
        Ok(default)
    }

    /// The first present (non-null) key as a bool, or `default`.
    pub fn bool_or(&self, keys: &[&str], default: bool) -> Result<bool> {
        for k in keys {
            if let Some(v) = self.json.get(*k).filter(|v| !v.is_null()) {
                return v
                    .as_bool()
                    .ok_or_else(|| self.invalid(format!("field `{k}` is not a boolean: {v}")));
            }
        }
        Ok(default)
    }

    /// Number of heads dividing the hidden size: returns the head dimension.
    pub fn head_dim(&self, hidden: usize, heads: usize) -> Result<usize> {
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(self.invalid(format!(
                "hidden size {hidden} is not a multiple of the number of heads {heads}"
            )));
        }
        Ok(hidden / heads)
    }

    /// Parses an activation name.
    pub fn activation(&self, keys: &[&str], default: &str) -> Result<Activation> {
        match self.str_or(keys, default)? {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(self.invalid(format!(
                "unsupported activation `{other}` (gelu, gelu_new, relu)"
            ))),
        }
    }
}

/// Reads and parses a JSON file; a missing file is [`ExtractError::MissingFile`].
pub(crate) fn read_json(path: &Path, why: &str) -> Result<Value> {
    if !path.is_file() {
        return Err(ExtractError::MissingFile {
            path: path.to_path_buf(),
            why: why.to_string(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| ExtractError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ExtractError::InvalidConfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Feed-forward activation of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// Exact GELU with erf (BERT, ViT).
    Gelu,
    /// Tanh-approximated GELU (`gelu_new`, GPT-2).
    GeluTanh,
    /// ReLU.
    Relu,
}

impl Activation {
    /// Applies the activation.
    pub fn forward<const D: usize>(self, x: burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D> {
        use burn::tensor::activation;
        match self {
            Activation::Gelu => crate::host::gelu(x),
            Activation::GeluTanh => crate::host::gelu_tanh(x),
            Activation::Relu => activation::relu(x),
        }
    }
}

/// `t` in f32 (a no-op for f32 tensors; half-precision weights are widened as they are used).
pub(crate) fn to_f32<const D: usize>(t: burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D> {
    use burn::tensor::DType;
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(DType::F32)
    }
}

/// One remap rule: a regex on the file's tensor key and its replacement (burn module path).
pub(crate) type RemapRule = (&'static str, &'static str);

/// How a checkpoint's float tensors are held once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightPrecision {
    /// Cast to f32 on load (BERT, GPT-2, ViT: their modules compute in f32 throughout).
    F32,
    /// Kept as stored (f16/bf16 stay half precision): the model casts a layer's weights to f32 as it
    /// uses them, so a half-precision checkpoint never exists twice in memory at full size.
    AsStored,
}

/// Loads the checkpoint of `dir` into `module` through an ordered key-remap table: `model.safetensors`,
/// or the shards listed by `model.safetensors.index.json`.
///
/// Fails when a module parameter receives no tensor, when a tensor's shape disagrees with the
/// module built from the config, when the file holds a tensor that matches no parameter and no
/// pattern of `ignore` (task heads, buffers) and that `not_loaded` does not name (layers left out
/// on purpose), or when a shard index names a missing file or a tensor its shard does not hold.
pub(crate) fn load_safetensors<M: Module + ModuleSnapshot>(
    module: &mut M,
    dir: &Path,
    remap: &[RemapRule],
    ignore: &[&str],
    not_loaded: &dyn Fn(&str) -> bool,
    precision: WeightPrecision,
) -> Result<()> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files = if single.is_file() || !index.is_file() {
        if !single.is_file() {
            return Err(ExtractError::MissingFile {
                path: single,
                why: "the model weights (model.safetensors, or model.safetensors.index.json with its \
                      shards; only safetensors checkpoints are supported)"
                    .into(),
            });
        }
        vec![single]
    } else {
        shard_files(&index)?
    };
    // A parameter is missing only if no shard provides it; a tensor is unused if no parameter
    // took it (each shard reports the parameters it lacks).
    let mut missing: Option<std::collections::BTreeSet<String>> = None;
    let mut unused = Vec::new();
    for file in &files {
        let result = load_file(module, file, remap, precision)?;
        if let Some(err) = result.errors.first() {
            return Err(apply_error(file, err));
        }
        let here: std::collections::BTreeSet<String> =
            result.missing.iter().map(|(p, _)| p.clone()).collect();
        missing = Some(match missing {
            None => here,
            Some(before) => before.intersection(&here).cloned().collect(),
        });
        unused.extend(
            result
                .unused
                .iter()
                .map(|name| (file.clone(), name.clone())),
        );
    }
    let reported = files.last().cloned().unwrap_or_default();
    if let Some(missing) = missing.filter(|m| !m.is_empty()) {
        return Err(ExtractError::MissingTensors {
            file: if files.len() > 1 { index } else { reported },
            tensors: missing.into_iter().collect(),
        });
    }
    let unexpected: Vec<(PathBuf, String)> = unused
        .into_iter()
        .filter(|(_, name)| {
            !ignore.iter().any(|pat| pattern_matches(pat, name)) && !not_loaded(name)
        })
        .collect();
    if let Some((file, _)) = unexpected.first() {
        return Err(ExtractError::UnexpectedTensors {
            file: file.clone(),
            tensors: unexpected.iter().map(|(_, n)| n.clone()).collect(),
        });
    }
    Ok(())
}

/// [`load_safetensors`] of a whole checkpoint cast to f32 (BERT, GPT-2, ViT).
pub(crate) fn load_all_f32<M: Module + ModuleSnapshot>(
    module: &mut M,
    dir: &Path,
    remap: &[RemapRule],
    ignore: &[&str],
) -> Result<()> {
    load_safetensors(module, dir, remap, ignore, &|_| false, WeightPrecision::F32)
}

fn load_file<M: Module + ModuleSnapshot>(
    module: &mut M,
    file: &Path,
    remap: &[RemapRule],
    precision: WeightPrecision,
) -> Result<ApplyResult> {
    let mut store = match precision {
        // Casting to f32 lets f16/bf16 checkpoints load into the f32 modules.
        WeightPrecision::F32 => SafetensorsStore::from_file(file)
            .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32))),
        WeightPrecision::AsStored => {
            SafetensorsStore::from_file(file).with_from_adapter(PyTorchToBurnAdapter)
        }
    }
    .validate(false)
    .allow_partial(true);
    for (from, to) in remap {
        // The patterns are literals of this crate, checked by the fixture tests.
        store = store.with_key_remapping(*from, *to);
    }
    module.load_from(&mut store).map_err(|e| match e {
        SafetensorsStoreError::Io(err) => ExtractError::Io {
            path: file.to_path_buf(),
            message: err.to_string(),
        },
        other => ExtractError::CorruptSafetensors {
            file: file.to_path_buf(),
            message: other.to_string(),
        },
    })
}

/// The shard files of a `model.safetensors.index.json`, checked: every shard exists, and every
/// tensor the index assigns to a shard is in that shard's header.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let json = read_json(index, "the shard index")?;
    let invalid = |message: String| ExtractError::InvalidConfig {
        path: index.to_path_buf(),
        message,
    };
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("missing object `weight_map`".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut by_shard: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| invalid(format!("`weight_map.{tensor}` is not a file name")))?;
        if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
            return Err(invalid(format!(
                "`weight_map.{tensor}` names `{shard}`, not a file beside the index"
            )));
        }
        by_shard.entry(shard.to_string()).or_default().push(tensor);
    }
    if by_shard.is_empty() {
        return Err(invalid("`weight_map` is empty".into()));
    }
    let mut files = Vec::with_capacity(by_shard.len());
    for (shard, tensors) in by_shard {
        let path = dir.join(&shard);
        if !path.is_file() {
            return Err(ExtractError::MissingFile {
                path,
                why: format!("a weight shard listed in {}", index.display()),
            });
        }
        let held = safetensors_header_names(&path)?;
        if let Some(absent) = tensors.iter().find(|t| !held.contains(**t)) {
            return Err(invalid(format!(
                "`weight_map.{absent}` names shard {shard}, which holds no such tensor"
            )));
        }
        files.push(path);
    }
    Ok(files)
}

/// The tensor names in a safetensors file's header (read without touching the data).
fn safetensors_header_names(path: &Path) -> Result<std::collections::HashSet<String>> {
    use std::io::Read;
    let corrupt = |message: String| ExtractError::CorruptSafetensors {
        file: path.to_path_buf(),
        message,
    };
    let io = |e: std::io::Error| ExtractError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| corrupt("shorter than its 8-byte header length".into()))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 || len + 8 > file_len {
        return Err(corrupt(format!(
            "header length {len} does not fit the file ({file_len} bytes)"
        )));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let value: Value =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| corrupt("header is not a JSON object".into()))?;
    Ok(object
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect())
}

fn apply_error(file: &Path, err: &ApplyError) -> ExtractError {
    match err {
        ApplyError::ShapeMismatch {
            path,
            expected,
            found,
        } => ExtractError::ShapeMismatch {
            file: file.to_path_buf(),
            tensor: path.clone(),
            expected: expected.to_vec(),
            actual: found.to_vec(),
        },
        ApplyError::DTypeMismatch {
            path,
            expected,
            found,
        } => ExtractError::LoadTensor {
            file: file.to_path_buf(),
            tensor: path.clone(),
            message: format!("dtype {found:?}, expected {expected:?}"),
        },
        ApplyError::AdapterError { path, message } | ApplyError::LoadError { path, message } => {
            ExtractError::LoadTensor {
                file: file.to_path_buf(),
                tensor: path.clone(),
                message: message.clone(),
            }
        }
    }
}

/// Tiny glob: `prefix*` matches by prefix, `*suffix` by suffix, anything else exactly.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        name.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        name.ends_with(suffix)
    } else {
        name == pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_patterns() {
        assert!(pattern_matches("cls.*", "cls.predictions.bias"));
        assert!(pattern_matches("*.attn.bias", "h.0.attn.bias"));
        assert!(!pattern_matches("*.attn.bias", "h.0.attn.c_attn.bias"));
        assert!(pattern_matches("lm_head.weight", "lm_head.weight"));
        assert!(!pattern_matches("pooler.*", "encoder.pooler"));
    }
}
