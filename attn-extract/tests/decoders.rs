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
use common::{
    Expected, assert_reference_tokens, assert_rows_sum_to_one, compare_tensors, compiled_devices,
    compiled_paths, fixture_dir, reference_lists, sentences,
};

/// Max abs error of queries and keys (after or before the rotation) against transformers: the issue's
/// 1e-4, 3.4x the worst measured (max over heads, sentences and both captures: Q 2.0e-5 / 1.2e-5 /
/// 1.3e-5 / 3.3e-6 and K 1.4e-5 / 8.0e-6 / 1.2e-5 / 4.6e-6 on llama / mistral / qwen2 / qwen3 with the
/// CPU kernels; with burn's ops on flex qwen2's Q 3.0e-5 and K 3.1e-5 are the largest: its biases and
/// f16 weights give the largest values, hence the largest rounding).
const TOL_QK: f32 = 1e-4;
/// Max abs error of the attention weights: about 5x the worst measured, 8.2e-6 (qwen2; llama 4.9e-6,
/// mistral 4.1e-6, qwen3 6.0e-7).
const TOL_ATTN: f32 = 4e-5;
/// Max abs error of the value norms (of the group's value head): 4.4x the worst measured, 2.2e-5
/// (qwen2 on burn's ops; the CPU kernels' worst 9.5e-6).
const TOL_VNORM: f32 = 1e-4;
/// Max abs difference of the stored attention and the attention recomputed (in f64) from the stored
/// rotated queries and keys: about 5x the worst measured, 5.1e-7 (llama; mistral 3.6e-7, qwen2
/// 4.2e-7, qwen3 1.2e-7).
const TOL_RECOMPUTED: f32 = 2.5e-6;

fn extract(dir: &Path, device: &Device, rope: RopeCapture) -> Extraction {
    extract_with(dir, device, rope, true)
}

/// [`extract`] with or without attn-extract's CPU kernels (which only flex has).
fn extract_with(dir: &Path, device: &Device, rope: RopeCapture, cpu_kernels: bool) -> Extraction {
    let model = LoadedModel::load(dir, device).expect("load");
    let opts = ExtractOptions {
        batch_size: 3,
        rope,
        cpu_kernels,
        ..Default::default()
    };
    model
        .extract(&Corpus::Text(sentences(dir)), &opts, &mut |_, _| {})
        .expect("extract")
}

fn decoder_case(name: &str, arch: Architecture, head_dim: u32, bos: bool) {
    let dir = fixture_dir(name);
    let expected = Expected::read(&dir);
    let n_seq = sentences(&dir).len();
    let ref_ids = reference_lists(&dir, "ids", |x| x.as_i64().expect("token id"));
    let ref_special = reference_lists(&dir, "special", |x| x.as_u64() == Some(1));
    for (backend, device, cpu_kernels) in compiled_paths() {
        for (rope, names) in [
            (RopeCapture::Post, ("q", "k")),
            (RopeCapture::Pre, ("qpre", "kpre")),
        ] {
            let ex = extract_with(&dir, &device, rope, cpu_kernels);
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
            // Query heads 0-2 share key head 0, 3-5 key head 1 (h / 3, not h % 2): their keys are
            // the same vectors.
            let keys = |h: u16| {
                ex.heads
                    .iter()
                    .find(|c| c.vectors.head().layer == 1 && c.vectors.head().head == h)
                    .unwrap()
                    .vectors
                    .keys()
                    .clone()
            };
            assert_eq!(keys(0), keys(1));
            assert_eq!(keys(1), keys(2));
            assert_eq!(keys(3), keys(4));
            assert_eq!(keys(4), keys(5));
            assert_ne!(keys(2), keys(3));
            if rope == RopeCapture::Post {
                let err = recomputed_attention_error(&ex, name);
                eprintln!(
                    "{name} on {backend}: attention from the stored vectors, max abs {err:e}"
                );
                assert!(err < TOL_RECOMPUTED, "{name}: {err}");
            }
        }
    }
    // Tokens: ids, strings and the special mark (the BOS a post-processor adds) as the tokenizers
    // library gave them to the reference.
    let device = &compiled_devices()[0].1;
    let ex = extract(&dir, device, RopeCapture::Post);
    let model = LoadedModel::load(&dir, device).expect("loads");
    assert_reference_tokens(&ex, &model, &dir, &expected);
    for (i, span) in ex.tokens.sequences().iter().enumerate() {
        let toks = &ex.tokens.tokens[span.start..span.start + span.len];
        let ids = expected.get(&format!("s{i}.ids")).i64;
        assert_eq!(ids, ref_ids[i], "sequence {i}: fixture ids");
        let special: Vec<bool> = toks.iter().map(|t| t.is_special).collect();
        assert_eq!(special, ref_special[i], "sequence {i}: special marks");
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

/// Max abs difference between the stored attention and `softmax(q . k / sqrt(d))` recomputed from
/// the stored (rotated) queries and keys with the causal and sliding-window masks: the captured
/// vectors are the ones attention multiplied.
fn recomputed_attention_error(ex: &Extraction, name: &str) -> f32 {
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir(name).join("config.json")).unwrap(),
    )
    .unwrap();
    let window = |layer: u16| -> Option<usize> {
        let w = cfg["sliding_window"].as_u64().map(|w| w as usize);
        match cfg["layer_types"].as_array() {
            Some(types) => w.filter(|_| types[usize::from(layer)] == "sliding_attention"),
            None => w,
        }
    };
    let d = ex.model.head_dim as usize;
    let scale = 1.0 / (d as f64).sqrt();
    let mut worst = 0.0f32;
    for cap in &ex.heads {
        let layer = cap.vectors.head().layer;
        for (span, att) in ex.tokens.sequences().iter().zip(&cap.attention) {
            for qi in 0..span.len {
                let q = cap.vectors.queries().row(span.start + qi);
                let visible = |ki: usize| ki <= qi && window(layer).is_none_or(|w| qi < ki + w);
                let scores: Vec<f64> = (0..span.len)
                    .map(|ki| {
                        let k = cap.vectors.keys().row(span.start + ki);
                        let dot: f64 = q.iter().zip(k).map(|(a, b)| f64::from(a * b)).sum();
                        if visible(ki) {
                            dot * scale
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (ki, s) in scores.iter().enumerate() {
                    let p = ((s - max).exp() / total) as f32;
                    worst = worst.max(common::abs_err(att.get(qi, ki), p));
                }
            }
        }
    }
    worst
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
        msg.contains("rope_scaling.type") && msg.contains("dynamic"),
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

/// A checkpoint holding only layer 0's tensors loads with `load_layers(.., Some(0))` (the later
/// layers are never read) and fails to load whole, naming the missing tensors.
#[test]
fn later_layers_are_neither_built_nor_read() {
    let source = fixture_dir("qwen3_tiny");
    let tmp = edited_copy("qwen3_tiny", |_| {});
    let bytes = std::fs::read(source.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| {
            !(name.starts_with("model.layers.1.") || name.starts_with("model.layers.2."))
        })
        .collect();
    assert!(kept.len() < st.len());
    let out = safetensors::serialize(kept, None).unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), out).unwrap();
    let device = device_from_name("flex").unwrap();
    let first = LoadedModel::load_layers(tmp.path(), &device, Some(0)).expect("layer 0 loads");
    let ex = first
        .extract(
            &Corpus::Text(vec!["Hello world".into()]),
            &ExtractOptions {
                layers: Some(vec![0]),
                ..Default::default()
            },
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(ex.heads.len(), 6);
    let msg = LoadedModel::load(tmp.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("missing tensor") && msg.contains("layers.1."),
        "{msg}"
    );
}

/// `only` captures exactly the listed heads of the layers x heads selection, as the full capture
/// would have them.
#[test]
fn only_the_listed_heads_are_captured() {
    let dir = fixture_dir("qwen2_tiny");
    let model = LoadedModel::load(&dir, &device_from_name("flex").unwrap()).unwrap();
    let corpus = Corpus::Text(sentences(&dir));
    let pairs = vec![attn_types::HeadId::new(0, 5), attn_types::HeadId::new(2, 1)];
    let some = model
        .extract(
            &corpus,
            &ExtractOptions {
                layers: Some(vec![0, 2]),
                heads: Some(vec![1, 5]),
                only: Some(pairs.clone()),
                ..Default::default()
            },
            &mut |_, _| {},
        )
        .unwrap();
    let got: Vec<_> = some.heads.iter().map(|c| c.vectors.head()).collect();
    assert_eq!(
        got, pairs,
        "the cross product's other two heads are not captured"
    );
    let all = model
        .extract(&corpus, &ExtractOptions::default(), &mut |_, _| {})
        .unwrap();
    for cap in &some.heads {
        let full = all
            .heads
            .iter()
            .find(|c| c.vectors.head() == cap.vectors.head())
            .unwrap();
        assert_eq!(cap, full);
    }
}

/// The CPU kernels split rows, heads and products over the rayon threads: the same bits at any
/// thread count (a decoder and both LayerNorm stacks), and within the references' tolerances of
/// burn's tensor ops.
#[cfg(feature = "flex")]
#[test]
fn cpu_kernels_give_the_same_bits_at_any_thread_count() {
    // The fixtures' products are below gemm's threshold for splitting one product over threads;
    // without this the test would only split the rows and heads.
    gemm::set_threading_threshold(0);
    let device = device_from_name("flex").unwrap();
    for name in ["qwen2_tiny", "bert_tiny", "gpt2_tiny"] {
        let dir = fixture_dir(name);
        let on_threads = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| extract_with(&dir, &device, RopeCapture::Post, true))
        };
        let one = on_threads(1);
        assert!(one == on_threads(3), "{name}: 1 and 3 threads differ");
        let burn_ops = extract_with(&dir, &device, RopeCapture::Post, false);
        assert_eq!(one.tokens, burn_ops.tokens);
        for (a, b) in one.heads.iter().zip(&burn_ops.heads) {
            let worst = common::max_abs_err(
                a.vectors.queries().as_slice(),
                b.vectors.queries().as_slice(),
            );
            assert!(
                worst < TOL_QK,
                "{name} {:?}: queries differ by {worst}",
                a.vectors.head()
            );
        }
    }
}
