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

    fn invalid(&self, message: String) -> ExtractError {
        ExtractError::InvalidConfig {
            path: self.path.clone(),
            message,
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

    /// The first present key as a float, or `default`.
    pub fn f64_or(&self, keys: &[&str], default: f64) -> Result<f64> {
        for k in keys {
            if let Some(v) = self.json.get(*k) {
                return v
                    .as_f64()
                    .ok_or_else(|| self.invalid(format!("field `{k}` is not a number: {v}")));
            }
        }
        Ok(default)
    }

    /// The first present key as a string, or `default`.
    pub fn str_or<'a>(&'a self, keys: &[&str], default: &'a str) -> Result<&'a str> {
        for k in keys {
            if let Some(v) = self.json.get(*k) {
                return v
                    .as_str()
                    .ok_or_else(|| self.invalid(format!("field `{k}` is not a string: {v}")));
            }
        }
        Ok(default)
    }

    /// The first present key as a bool, or `default`.
    pub fn bool_or(&self, keys: &[&str], default: bool) -> Result<bool> {
        for k in keys {
            if let Some(v) = self.json.get(*k) {
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

/// One remap rule: a regex on the file's tensor key and its replacement (burn module path).
pub(crate) type RemapRule = (&'static str, &'static str);

/// Loads `dir/model.safetensors` into `module` through an ordered key-remap table.
///
/// Fails when a module parameter receives no tensor, when a tensor's shape disagrees with the
/// module built from the config, or when the file holds a tensor that matches no parameter and no
/// pattern of `ignore` (task heads, buffers).
pub(crate) fn load_safetensors<M: Module + ModuleSnapshot>(
    module: &mut M,
    dir: &Path,
    remap: &[RemapRule],
    ignore: &[&str],
) -> Result<()> {
    let file = dir.join("model.safetensors");
    if !file.is_file() {
        return Err(ExtractError::MissingFile {
            path: file,
            why: "the model weights (only safetensors checkpoints are supported)".into(),
        });
    }
    // Casting to f32 lets f16/bf16 checkpoints load into the f32 modules.
    let adapter = PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32));
    let mut store = SafetensorsStore::from_file(&file)
        .with_from_adapter(adapter)
        .validate(false)
        .allow_partial(true);
    for (from, to) in remap {
        // The patterns are literals of this crate, checked by the fixture tests.
        store = store.with_key_remapping(*from, *to);
    }
    let result = module.load_from(&mut store).map_err(|e| match e {
        SafetensorsStoreError::Io(err) => ExtractError::Io {
            path: file.clone(),
            message: err.to_string(),
        },
        other => ExtractError::CorruptSafetensors {
            file: file.clone(),
            message: other.to_string(),
        },
    })?;
    check_apply(&file, &result, ignore)
}

fn check_apply(file: &Path, result: &ApplyResult, ignore: &[&str]) -> Result<()> {
    if let Some(err) = result.errors.first() {
        return Err(match err {
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
            ApplyError::AdapterError { path, message }
            | ApplyError::LoadError { path, message } => ExtractError::LoadTensor {
                file: file.to_path_buf(),
                tensor: path.clone(),
                message: message.clone(),
            },
        });
    }
    if !result.missing.is_empty() {
        return Err(ExtractError::MissingTensors {
            file: file.to_path_buf(),
            tensors: result.missing.iter().map(|(p, _)| p.clone()).collect(),
        });
    }
    let unexpected: Vec<String> = result
        .unused
        .iter()
        .filter(|name| !ignore.iter().any(|pat| pattern_matches(pat, name)))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        return Err(ExtractError::UnexpectedTensors {
            file: file.to_path_buf(),
            tensors: unexpected,
        });
    }
    Ok(())
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
