//! Llama-family decoders (llama, mistral, qwen2, qwen3) against transformers.
//!
//! Fixtures from `scripts/make_fixtures.py --only decoders`: random weights in odd sizes, grouped-query
//! attention with ratio 3 (6 query heads, 2 key heads), explicit head dimensions, non-default rotary
//! bases, a `llama3` scaling, sliding windows shorter than the test sentences, qwen2 biases, qwen3
//! q/k norms, bf16 and f16 weights, a sharded checkpoint, byte-level and Metaspace/byte-fallback
//! tokenizers. Queries and keys after and before the rotation and the attention must match on every
//! backend compiled in, with the five sentences batched three at a time (padded, length-sorted) where
//! the reference ran each alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use attn_extract::{Corpus, Device, ExtractError, ExtractOptions, LoadedModel, device_from_name};
use attn_types::{Architecture, Extraction, RopeCapture};
use common::{Expected, assert_rows_sum_to_one, compare_tensors, fixture_dir, sentences};

/// Max abs error of queries and keys (after or before the rotation) against transformers: the issue's
/// 1e-4, 3.3x the worst measured on flex (max over heads, sentences and both captures: Q 1.6e-5 /
/// 7.6e-6 / 2.9e-5 / 3.5e-6 and K 1.1e-5 / 6.4e-6 / 3.0e-5 / 3.8e-6 on llama / mistral / qwen2 /
/// qwen3; qwen2's biases and f16 weights give the largest values, hence the largest rounding).
const TOL_QK: f32 = 1e-4;
/// Max abs error of the attention weights: about 5x the worst measured, 8.2e-6 (qwen2; llama 4.9e-6,
/// mistral 4.1e-6, qwen3 6.0e-7).
const TOL_ATTN: f32 = 4e-5;
/// Max abs error of the value norms (of the group's value head): 4.4x the worst measured, 2.3e-5
/// (qwen2; llama 1.3e-5, mistral 4.8e-6, qwen3 3.3e-6).
const TOL_VNORM: f32 = 1e-4;

fn compiled_devices() -> Vec<(&'static str, Device)> {
    let mut names = vec!["flex"];
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda:0");
    }
    names
        .into_iter()
        .map(|name| (name, device_from_name(name).expect(name)))
        .collect()
}

fn extract(dir: &Path, device: &Device, rope: RopeCapture) -> Extraction {
    let model = LoadedModel::load(dir, device).expect("load");
    let opts = ExtractOptions {
        batch_size: 3,
        rope,
        ..Default::default()
    };
    model
        .extract(&Corpus::Text(sentences(dir)), &opts, &mut |_, _| {})
        .expect("extract")
}

/// Per sequence: the reference token ids, token strings and special-token marks.
struct ReferenceTokens {
    ids: Vec<Vec<i64>>,
    tokens: Vec<Vec<String>>,
    special: Vec<Vec<bool>>,
}

/// The fixture's reference tokenization (inputs.json).
fn reference_tokens(dir: &Path) -> ReferenceTokens {
    let text = std::fs::read_to_string(dir.join("inputs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect();
    let tokens = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    let special = v["special"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64() == Some(1))
                .collect()
        })
        .collect();
    ReferenceTokens {
        ids,
        tokens,
        special,
    }
}

fn decoder_case(name: &str, arch: Architecture, head_dim: u32, bos: bool) {
    let dir = fixture_dir(name);
    let expected = Expected::read(&dir);
    let n_seq = sentences(&dir).len();
    let reference = reference_tokens(&dir);
    for (backend, device) in compiled_devices() {
        for (rope, names) in [
            (RopeCapture::Post, ("q", "k")),
            (RopeCapture::Pre, ("qpre", "kpre")),
        ] {
            let ex = extract(&dir, &device, rope);
            assert_eq!(ex.model.architecture, arch);
            assert_eq!(ex.model.rope, Some(rope));
            assert_eq!(
                (
                    ex.model.num_layers,
                    ex.model.num_heads,
                    ex.model.key_heads(),
                    ex.model.head_dim
                ),
                (3, 6, 2, head_dim)
            );
            assert_eq!(ex.heads.len(), 18);
            ex.tokens.validate().expect("token table is consistent");
            let err = compare_tensors(&ex, &expected, n_seq, &[0, 1, 2], names);
            eprintln!("{name} on {backend}, rope {rope}: max abs error {err:?}");
            assert_eq!(err.compared, 18 * n_seq);
            assert!(
                err.q < TOL_QK && err.k < TOL_QK && err.attn < TOL_ATTN && err.vnorm < TOL_VNORM,
                "{name} on {backend}, rope {rope}: {err:?}"
            );
            assert_rows_sum_to_one(&ex, 1e-5);
            // Query heads 0-2 share key head 0, 3-5 key head 1: their keys are the same vectors.
            let keys = |h: u16| {
                ex.heads
                    .iter()
                    .find(|c| c.vectors.head().layer == 1 && c.vectors.head().head == h)
                    .unwrap()
                    .vectors
                    .keys()
                    .clone()
            };
            assert_eq!(keys(0), keys(2));
            assert_eq!(keys(3), keys(5));
            assert_ne!(keys(0), keys(3));
        }
    }
    // Tokens: ids, strings and the special mark (the BOS a post-processor adds) as the tokenizers
    // library gave them to the reference.
    let ex = extract(&dir, &compiled_devices()[0].1, RopeCapture::Post);
    for (i, span) in ex.tokens.sequences().iter().enumerate() {
        let toks = &ex.tokens.tokens[span.start..span.start + span.len];
        let ids = expected.get(&format!("s{i}.ids")).i64;
        assert_eq!(ids, reference.ids[i], "sequence {i}: fixture ids");
        let texts: Vec<String> = toks.iter().map(|t| t.text.clone()).collect();
        assert_eq!(texts, reference.tokens[i], "sequence {i}: token strings");
        let special: Vec<bool> = toks.iter().map(|t| t.is_special).collect();
        assert_eq!(special, reference.special[i], "sequence {i}: special marks");
        assert_eq!(toks[0].is_special, bos, "sequence {i}: BOS");
    }
}

#[test]
fn llama_gqa_llama3_rope_scaling_matches_transformers() {
    decoder_case("llama_tiny", Architecture::Llama, 10, true);
}

#[test]
fn mistral_sliding_window_sharded_bf16_matches_transformers() {
    decoder_case("mistral_tiny", Architecture::Mistral, 8, true);
}

#[test]
fn qwen2_biases_sliding_layers_f16_matches_transformers() {
    decoder_case("qwen2_tiny", Architecture::Qwen2, 8, false);
}

#[test]
fn qwen3_qk_norm_bf16_matches_transformers() {
    decoder_case("qwen3_tiny", Architecture::Qwen3, 12, false);
}

/// Copies a fixture into a temporary directory, with `edit` applied to its config.json.
fn edited_copy(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    tmp
}

/// Released Llama checkpoints carry `rope_theta` and `rope_scaling` at the top level, transformers 5
/// writes a `rope_parameters` object: both forms give the same extraction, bit for bit.
#[test]
fn legacy_rope_config_form_loads_identically() {
    let device = device_from_name("flex").unwrap();
    let legacy = edited_copy("llama_tiny", |cfg| {
        let obj = cfg.as_object_mut().unwrap();
        let mut params = obj.remove("rope_parameters").unwrap();
        let theta = params
            .as_object_mut()
            .unwrap()
            .remove("rope_theta")
            .unwrap();
        let rope_type = params.as_object_mut().unwrap().remove("rope_type").unwrap();
        params["rope_type"] = rope_type;
        obj.insert("rope_theta".into(), theta);
        obj.insert("rope_scaling".into(), params);
    });
    let text = std::fs::read_to_string(legacy.path().join("config.json")).unwrap();
    assert!(text.contains("rope_scaling") && !text.contains("rope_parameters"));
    let a = extract(&fixture_dir("llama_tiny"), &device, RopeCapture::Post);
    let b = extract(legacy.path(), &device, RopeCapture::Post);
    for (x, y) in a.heads.iter().zip(&b.heads) {
        assert_eq!(x.vectors, y.vectors);
        assert_eq!(x.attention, y.attention);
    }
    // And the scaling matters: without it the rotated vectors differ.
    let unscaled = edited_copy("llama_tiny", |cfg| {
        cfg["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 5000.0});
    });
    let c = extract(unscaled.path(), &device, RopeCapture::Post);
    assert_ne!(a.heads[0].vectors, c.heads[0].vectors);
}

fn load_error(dir: &Path) -> ExtractError {
    LoadedModel::load(dir, &device_from_name("flex").unwrap()).expect_err("load must fail")
}

#[test]
fn bad_decoder_checkpoints_name_the_file_and_key() {
    // An unsupported rope scaling type, in either config form.
    let yarn = edited_copy("llama_tiny", |cfg| {
        cfg["rope_parameters"]["rope_type"] = "yarn".into();
    });
    let msg = load_error(yarn.path()).to_string();
    assert!(
        msg.contains("config.json")
            && msg.contains("rope_parameters.rope_type")
            && msg.contains("yarn"),
        "{msg}"
    );
    let dynamic = edited_copy("llama_tiny", |cfg| {
        cfg.as_object_mut().unwrap().remove("rope_parameters");
        cfg["rope_scaling"] = serde_json::json!({"type": "dynamic", "factor": 2.0});
    });
    let msg = load_error(dynamic.path()).to_string();
    assert!(
        msg.contains("rope_scaling.rope_type") && msg.contains("dynamic"),
        "{msg}"
    );
    // Sizes that disagree with the weights: the tensor and both shapes are named.
    let sizes = edited_copy("qwen3_tiny", |cfg| cfg["num_key_value_heads"] = 3.into());
    let msg = load_error(sizes.path()).to_string();
    assert!(
        msg.contains("k_proj") && msg.contains("model.safetensors"),
        "{msg}"
    );
    // A query-head count that key heads do not divide.
    let ratio = edited_copy("qwen3_tiny", |cfg| cfg["num_key_value_heads"] = 4.into());
    let msg = load_error(ratio.path()).to_string();
    assert!(msg.contains("num_key_value_heads"), "{msg}");
    // A missing shard.
    let shard = edited_copy("mistral_tiny", |_| {});
    std::fs::remove_file(shard.path().join("model-00003-of-00004.safetensors")).unwrap();
    let err = load_error(shard.path());
    let msg = err.to_string();
    assert!(
        matches!(err, ExtractError::MissingFile { .. }) && msg.contains("model-00003-of-00004"),
        "{msg}"
    );
    // A shard index naming a tensor its shard does not hold.
    let index = edited_copy("mistral_tiny", |_| {});
    let path = index.path().join("model.safetensors.index.json");
    let mut idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    idx["weight_map"]["model.layers.9.mlp.up_proj.weight"] =
        "model-00001-of-00004.safetensors".into();
    std::fs::write(&path, idx.to_string()).unwrap();
    let msg = load_error(index.path()).to_string();
    assert!(
        msg.contains("model.safetensors.index.json")
            && msg.contains("model.layers.9.mlp.up_proj.weight"),
        "{msg}"
    );
    // An unknown model_type names the supported ones.
    let unknown = edited_copy("qwen3_tiny", |cfg| cfg["model_type"] = "gemma3".into());
    let msg = load_error(unknown.path()).to_string();
    assert!(msg.contains("gemma3") && msg.contains("qwen3"), "{msg}");
    // No tokenizer.json.
    let no_tok = edited_copy("qwen2_tiny", |_| {});
    std::fs::remove_file(no_tok.path().join("tokenizer.json")).unwrap();
    let msg = load_error(no_tok.path()).to_string();
    assert!(msg.contains("tokenizer.json"), "{msg}");
}

/// `load_layers` reads only the first layers of a (sharded, bf16) checkpoint: they extract exactly as
/// from the whole model, and a later layer is refused by name.
#[test]
fn loading_the_first_layers_only() {
    let dir = fixture_dir("mistral_tiny");
    let device = device_from_name("flex").unwrap();
    let opts = ExtractOptions {
        layers: Some(vec![0]),
        ..Default::default()
    };
    let corpus = Corpus::Text(sentences(&dir));
    let full = LoadedModel::load(&dir, &device).unwrap();
    let first = LoadedModel::load_layers(&dir, &device, Some(0)).unwrap();
    assert_eq!(
        first.info().num_layers,
        3,
        "the model's size is still reported whole"
    );
    let a = full.extract(&corpus, &opts, &mut |_, _| {}).unwrap();
    let b = first.extract(&corpus, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(a.heads, b.heads);
    let later = ExtractOptions {
        layers: Some(vec![1]),
        ..Default::default()
    };
    let msg = first
        .extract(&corpus, &later, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(msg.contains("layer 1 was not loaded"), "{msg}");
}
