//! Bad inputs give clear errors naming the file, tensor, token or sequence at fault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use attn_extract::{Corpus, ExtractError, ExtractOptions, LoadedModel, RgbImage, device_from_name};
use common::fixture_dir;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

/// A writable copy of a fixture checkpoint.
fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join(name);
    std::fs::create_dir(&dst).unwrap();
    for entry in std::fs::read_dir(fixture_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    (tmp, dst)
}

fn load(dir: &Path) -> Result<LoadedModel, ExtractError> {
    LoadedModel::load(dir, &device_from_name("flex").unwrap())
}

fn edit_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

/// Rewrites model.safetensors through `edit` (name -> (dtype, shape, bytes)).
fn edit_weights(
    dir: &Path,
    edit: impl FnOnce(&mut HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut map: HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, TensorView<'_>)> = map
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn missing_weights_file_is_named() {
    let (_tmp, dir) = copy_fixture("bert_tiny");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load(&dir).unwrap_err();
    match &err {
        ExtractError::MissingFile { path, .. } => assert!(path.ends_with("model.safetensors")),
        other => panic!("wrong error {other:?}"),
    }
    assert!(err.to_string().contains("model.safetensors"));
}

#[test]
fn missing_config_and_tokenizer_are_named() {
    let (_tmp, dir) = copy_fixture("gpt2_tiny");
    std::fs::remove_file(dir.join("merges.txt")).unwrap();
    match load(&dir).unwrap_err() {
        ExtractError::MissingFile { path, .. } => assert!(path.ends_with("merges.txt")),
        other => panic!("wrong error {other:?}"),
    }
    std::fs::remove_file(dir.join("config.json")).unwrap();
    match load(&dir).unwrap_err() {
        ExtractError::MissingFile { path, .. } => assert!(path.ends_with("config.json")),
        other => panic!("wrong error {other:?}"),
    }
}

#[test]
fn config_weights_disagreement_names_tensor_and_shapes() {
    let (_tmp, dir) = copy_fixture("bert_tiny");
    edit_config(&dir, "intermediate_size", 40.into());
    let err = load(&dir).unwrap_err();
    match &err {
        ExtractError::ShapeMismatch {
            file,
            tensor,
            expected,
            actual,
        } => {
            assert!(file.ends_with("model.safetensors"));
            assert!(
                tensor.contains("intermediate") || tensor.contains("output"),
                "{tensor}"
            );
            assert!(expected.contains(&40), "{expected:?}");
            assert!(actual.contains(&37), "{actual:?}");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(err.to_string().contains("config.json implies"));
}

#[test]
fn gpt2_conv1d_shape_disagreement_is_caught() {
    let (_tmp, dir) = copy_fixture("gpt2_tiny");
    edit_config(&dir, "n_inner", 36.into());
    assert!(matches!(
        load(&dir).unwrap_err(),
        ExtractError::ShapeMismatch { .. }
    ));
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let (_tmp, dir) = copy_fixture("vit32_tiny");
    edit_weights(&dir, |m| {
        m.remove("encoder.layer.1.attention.attention.key.weight")
            .unwrap();
    });
    match load(&dir).unwrap_err() {
        ExtractError::MissingTensors { tensors, .. } => {
            assert_eq!(tensors, vec!["layers.1.attention.key.weight".to_string()])
        }
        other => panic!("wrong error {other:?}"),
    }
    let (_tmp2, dir) = copy_fixture("vit32_tiny");
    edit_weights(&dir, |m| {
        let bias = m["pooler.dense.bias"].clone();
        m.insert(
            "encoder.layer.0.attention.attention.extra.bias".into(),
            bias,
        );
    });
    match load(&dir).unwrap_err() {
        ExtractError::UnexpectedTensors { tensors, .. } => {
            assert_eq!(tensors.len(), 1);
            assert!(tensors[0].contains("extra"), "{tensors:?}");
        }
        other => panic!("wrong error {other:?}"),
    }
}

#[test]
fn corrupt_safetensors_header_is_reported() {
    let (_tmp, dir) = copy_fixture("bert_tiny");
    // A header length far beyond the file, then garbage.
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{not json");
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    let err = load(&dir).unwrap_err();
    match &err {
        ExtractError::CorruptSafetensors { file, .. } => {
            assert!(file.ends_with("model.safetensors"))
        }
        other => panic!("wrong error {other:?}"),
    }
}

#[test]
fn unknown_model_type_is_named() {
    let (_tmp, dir) = copy_fixture("bert_tiny");
    edit_config(&dir, "model_type", "gemma3".into());
    match load(&dir).unwrap_err() {
        ExtractError::UnknownArchitecture { model_type, path } => {
            assert_eq!(model_type, "gemma3");
            assert!(path.ends_with("config.json"));
        }
        other => panic!("wrong error {other:?}"),
    }
}

#[test]
fn tokenizer_vocab_mismatch_is_reported() {
    let (_tmp, dir) = copy_fixture("bert_tiny");
    // A vocab.txt with one more word than the embedding table has rows.
    let mut vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    vocab.push_str("zebra\n");
    std::fs::write(dir.join("vocab.txt"), vocab).unwrap();
    let model = load(&dir).unwrap();
    let err = model
        .extract(
            &Corpus::Text(vec!["a zebra".into()]),
            &ExtractOptions::default(),
            &mut |_, _| {},
        )
        .unwrap_err();
    match &err {
        ExtractError::TokenOutOfVocab {
            sequence,
            token,
            id,
            vocab_size,
        } => {
            assert_eq!(
                (*sequence, token.as_str(), *id, *vocab_size),
                (0, "zebra", 150, 150)
            );
        }
        other => panic!("wrong error {other:?}"),
    }
}

#[test]
fn corpus_problems_are_reported() {
    let model = load(&fixture_dir("bert_tiny")).unwrap();
    let opts = ExtractOptions::default();
    let run = |c: &Corpus, o: &ExtractOptions| model.extract(c, o, &mut |_, _| {});
    assert!(matches!(
        run(&Corpus::Text(vec![]), &opts),
        Err(ExtractError::EmptyCorpus(_))
    ));
    assert!(matches!(
        run(&Corpus::Images(vec![RgbImage::new(8, 8)]), &opts),
        Err(ExtractError::CorpusKind { .. })
    ));
    // max_position_embeddings is 40 in the fixture.
    let long = "the cat sat on the mat ".repeat(10);
    let corpus = Corpus::Text(vec!["short".into(), long]);
    match run(&corpus, &opts) {
        Err(ExtractError::SequenceTooLong { index, len, max }) => {
            assert_eq!((index, max), (1, 40));
            assert!(len > 40);
        }
        other => panic!("wrong result {other:?}"),
    }
    let truncated = run(
        &corpus,
        &ExtractOptions {
            truncate: true,
            ..Default::default()
        },
    )
    .unwrap();
    let spans = truncated.tokens.sequences();
    assert_eq!(spans[1].len, 40);
    assert_eq!(truncated.tokens.tokens[spans[1].start + 39].text, "[SEP]");
    let bad_layer = ExtractOptions {
        layers: Some(vec![3]),
        ..Default::default()
    };
    assert!(matches!(
        run(&corpus, &bad_layer),
        Err(ExtractError::InvalidOption(_))
    ));
    let zero_batch = ExtractOptions {
        batch_size: 0,
        ..Default::default()
    };
    assert!(matches!(
        run(&corpus, &zero_batch),
        Err(ExtractError::InvalidOption(_))
    ));
}

#[test]
fn unknown_device_lists_the_available_ones() {
    match device_from_name("tpu") {
        Err(ExtractError::UnknownDevice { name, available }) => {
            assert_eq!(name, "tpu");
            assert!(available.contains("flex"));
        }
        other => panic!("wrong result {other:?}"),
    }
    assert!(device_from_name("CPU").is_ok());
}
