//! Helpers shared by the integration tests: reading the Python reference fixtures and comparing.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use attn_extract::{Corpus, ExtractOptions, LoadedModel};
use attn_types::Extraction;
use safetensors::{Dtype, SafeTensors};

/// Every backend the test binary was built with, by name: flex always, ndarray and the first GPU
/// with their features.
pub fn compiled_devices() -> Vec<(&'static str, attn_extract::Device)> {
    let mut names = vec!["flex"];
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda:0");
    }
    names
        .into_iter()
        .map(|name| {
            (
                name,
                attn_extract::device_from_name(name).unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        })
        .collect()
}

/// Every way the test binary can compute a model, by name, with its `ExtractOptions::cpu_kernels`:
/// on flex attn-extract's CPU kernels (the default) and burn's tensor ops (what the other backends
/// run), then each other backend compiled in.
pub fn compiled_paths() -> Vec<(&'static str, attn_extract::Device, bool)> {
    compiled_devices()
        .into_iter()
        .flat_map(|(backend, device)| {
            let burn_ops = (backend == "flex").then(|| ("flex, burn ops", device.clone(), false));
            std::iter::once((backend, device, true)).chain(burn_ops)
        })
        .collect()
}

/// `attn-extract/tests/fixtures/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// The reference tensors written by `scripts/make_fixtures.py`.
pub struct Expected {
    bytes: Vec<u8>,
}

/// A reference tensor: shape and values as f32 (or raw bytes for u8 images).
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
    pub u8: Vec<u8>,
}

impl Expected {
    pub fn read(dir: &Path) -> Self {
        let bytes = std::fs::read(dir.join("expected.safetensors")).expect("expected.safetensors");
        Self { bytes }
    }

    pub fn get(&self, name: &str) -> RefTensor {
        let st = SafeTensors::deserialize(&self.bytes).expect("parse expected.safetensors");
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture tensor {name}"));
        let data = t.data();
        let mut out = RefTensor {
            shape: t.shape().to_vec(),
            f32: Vec::new(),
            i64: Vec::new(),
            u8: Vec::new(),
        };
        match t.dtype() {
            Dtype::F32 => {
                out.f32 = data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            Dtype::I64 => {
                out.i64 = data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            }
            Dtype::U8 => out.u8 = data.to_vec(),
            other => panic!("unexpected dtype {other:?}"),
        }
        out
    }
}

/// `|a - b|`, or infinity when either side is NaN or infinite, so that a maximum built from it fails
/// any `< tol` check on a non-finite value (`f32::max` skips NaN, and a NaN difference compared with
/// `<`/`>` is silently false).
pub fn abs_err(a: f32, b: f32) -> f32 {
    if a.is_finite() && b.is_finite() {
        (a - b).abs()
    } else {
        f32::INFINITY
    }
}

/// Largest [`abs_err`] over two equally long slices: infinity if either holds a NaN or infinity.
pub fn max_abs_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| abs_err(x, y))
        .fold(0.0, f32::max)
}

/// Max abs errors of Q, K and attention against the reference, over the given layers and all heads
/// (infinite where either side holds a NaN or infinity, see [`abs_err`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Errors {
    pub q: f32,
    pub k: f32,
    pub attn: f32,
    /// Value norms `|v|` against the norms of the reference's value projections.
    pub vnorm: f32,
    pub compared: usize,
}

/// Compares every captured head of `layers` for sequences `0..n_seq` with the fixture.
pub fn compare(ex: &Extraction, expected: &Expected, n_seq: usize, layers: &[u16]) -> Errors {
    compare_tensors(ex, expected, n_seq, layers, ("q", "k"))
}

/// As [`compare`], against the fixture's query and key tensors named `s{i}.{names.0}.{layer}` and
/// `s{i}.{names.1}.{layer}` (keys hold one block per key head: grouped-query attention reads key
/// head `ex.model.key_head_of(head)`).
pub fn compare_tensors(
    ex: &Extraction,
    expected: &Expected,
    n_seq: usize,
    layers: &[u16],
    names: (&str, &str),
) -> Errors {
    let spans = ex.tokens.sequences();
    assert_eq!(spans.len(), n_seq, "sequence count");
    let d = ex.model.head_dim as usize;
    let mut err = Errors::default();
    for cap in &ex.heads {
        let (layer, head) = (cap.vectors.head().layer, cap.vectors.head().head);
        if !layers.contains(&layer) {
            continue;
        }
        for (i, span) in spans.iter().enumerate() {
            let q = expected.get(&format!("s{i}.{}.{layer}", names.0));
            let k = expected.get(&format!("s{i}.{}.{layer}", names.1));
            let v = expected.get(&format!("s{i}.v.{layer}"));
            let a = expected.get(&format!("s{i}.attn.{layer}"));
            let len = q.shape[0];
            assert_eq!(
                span.len, len,
                "sequence {i}: token count differs from the reference"
            );
            let (q_width, k_width) = (q.shape[1], k.shape[1]);
            let h = head as usize;
            // The reference's key head, from its own shapes (not from the model's grouping rule):
            // `k_width / d` key heads, each serving a contiguous group of query heads.
            let group = ex.model.num_heads as usize / (k_width / d);
            let kh = h / group;
            let norms = cap.value_norms.as_ref().expect("value norms captured");
            for t in 0..len {
                let row = span.start + t;
                // Values have as many heads as keys (one per key head under grouped-query attention).
                let value = &v.f32[t * k_width + kh * d..t * k_width + (kh + 1) * d];
                let norm = value.iter().map(|x| x * x).sum::<f32>().sqrt();
                err.vnorm = err.vnorm.max(abs_err(norms[row], norm));
                for j in 0..d {
                    err.q = err.q.max(abs_err(
                        cap.vectors.queries().get(row, j),
                        q.f32[t * q_width + h * d + j],
                    ));
                    err.k = err.k.max(abs_err(
                        cap.vectors.keys().get(row, j),
                        k.f32[t * k_width + kh * d + j],
                    ));
                }
            }
            let att = &cap.attention[i];
            assert_eq!(att.len(), len);
            for qi in 0..len {
                for ki in 0..len {
                    let r = a.f32[(h * len + qi) * len + ki];
                    err.attn = err.attn.max(abs_err(att.get(qi, ki), r));
                }
            }
            err.compared += 1;
        }
    }
    err
}

/// Every attention row sums to 1 (within `tol`).
pub fn assert_rows_sum_to_one(ex: &Extraction, tol: f32) {
    for cap in &ex.heads {
        for att in &cap.attention {
            for r in att.weights.iter_rows() {
                let s: f32 = r.iter().sum();
                assert!(
                    (s - 1.0).abs() < tol,
                    "{}: row sums to {s}",
                    cap.vectors.head()
                );
            }
        }
    }
}

/// The per-sequence list `key` of the fixture's inputs.json (e.g. `ids`, `tokens`), each element
/// read by `item`.
pub fn reference_lists<T>(
    dir: &Path,
    key: &str,
    item: impl Fn(&serde_json::Value) -> T,
) -> Vec<Vec<T>> {
    let text = std::fs::read_to_string(dir.join("inputs.json")).expect("inputs.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("inputs.json parses");
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("`{key}` in inputs.json"))
        .iter()
        .map(|seq| {
            seq.as_array()
                .expect("a list per sequence")
                .iter()
                .map(&item)
                .collect()
        })
        .collect()
}

/// Asserts that every sequence's token strings are the reference tokenizer's (`tokens` in the
/// fixture's inputs.json) and that `model` runs the fixture's sentences with the reference's token
/// ids (`s{i}.ids`, what transformers ran).
pub fn assert_reference_tokens(
    ex: &Extraction,
    model: &LoadedModel,
    dir: &Path,
    expected: &Expected,
) {
    let reference = reference_lists(dir, "tokens", |t| {
        t.as_str().expect("token string").to_string()
    });
    let ids = model
        .token_ids(&Corpus::Text(sentences(dir)), &ExtractOptions::default())
        .expect("token ids");
    assert_eq!(ids.len(), ex.tokens.sequences().len());
    for (i, span) in ex.tokens.sequences().iter().enumerate() {
        let texts: Vec<&str> = ex.tokens.tokens[span.start..span.start + span.len]
            .iter()
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(texts, reference[i], "sequence {i}: token strings");
        let want: Vec<i64> = expected.get(&format!("s{i}.ids")).i64;
        let got: Vec<i64> = ids[i].iter().map(|&id| i64::from(id)).collect();
        assert_eq!(got, want, "sequence {i}: token ids");
    }
}

/// The fixture's sentences.
pub fn sentences(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("inputs.json")).expect("inputs.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("inputs.json parses");
    v["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}
