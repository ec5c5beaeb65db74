//! A dataset written here is read by pyarrow (`tests/pyarrow/check_dataset.py`) with the documented
//! columns, types and values. Needs a Python with pyarrow in `ATTNVIZ_PYTHON`:
//! `cargo test -p attn-store --test pyarrow -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use attn_store::Dataset;
use attn_types::{HeadId, ProjectionMethod};
use common::*;
use serde_json::json;

fn python() -> PathBuf {
    match std::env::var_os("ATTNVIZ_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        // Fail, not skip: this test only runs when asked for (`--ignored`), so it must not pass silently.
        _ => panic!("ATTNVIZ_PYTHON is not set: point it at a python with pyarrow installed"),
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pyarrow/check_dataset.py")
}

/// Runs the checker on `dir` (against the expectations file `expect`, when given).
fn run(dir: &Path, expect: Option<&Path>) -> (bool, String) {
    let out = Command::new(python())
        .arg(script())
        .arg(dir)
        .args(expect)
        .output()
        .expect("failed to start ATTNVIZ_PYTHON");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
#[ignore = "needs ATTNVIZ_PYTHON with pyarrow; run by .ci/run"]
fn pyarrow_reads_the_dataset() {
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    // ATTNVIZ_KEEP_DATASET=DIR keeps the dataset for inspection (DIR must not hold another dataset).
    let dir = std::env::var_os("ATTNVIZ_KEEP_DATASET")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("ds"));
    let ds = Dataset::create(&dir, &meta("gpt2-pyarrow")).unwrap();
    let t = tokens();
    ds.write_tokens(&t).unwrap();

    let mut heads_json = Vec::new();
    for (i, head) in [HeadId::new(0, 0), HeadId::new(1, 2)]
        .into_iter()
        .enumerate()
    {
        let raw = raw_head(head, 10 + i as u64);
        let norm = (i == 1).then(|| normalized(&raw));
        ds.write_head(&raw, norm.as_ref()).unwrap();
        let att = attention(20 + i as u64);
        ds.write_attention(head, &att).unwrap();
        let nonzero: usize = att
            .iter()
            .map(|a| a.weights.as_slice().iter().filter(|w| **w != 0.0).count())
            .sum();
        let norms: Vec<f32> = (0..N).map(|j| 1.0 + j as f32 / 3.0).collect();
        ds.write_value_norms(head, &norms).unwrap();
        let mut projections = Vec::new();
        for (method, dims) in [(ProjectionMethod::Tsne, 2), (ProjectionMethod::Umap, 3)] {
            let p = projection(head, method, dims, 30 + i as u64);
            ds.write_projection(&p).unwrap();
            projections.push(json!({
                "file": attn_store::projection_file_name(method, dims),
                "method": method.as_str(),
                "dims": dims,
                "coords": p.coords.iter_rows().map(<[f32]>::to_vec).collect::<Vec<_>>(),
            }));
        }
        heads_json.push(json!({
            "dir": attn_store::head_dir_name(head),
            "query": raw.queries().iter_rows().map(<[f32]>::to_vec).collect::<Vec<_>>(),
            "key": raw.keys().iter_rows().map(<[f32]>::to_vec).collect::<Vec<_>>(),
            "normalized": norm.is_some(),
            "attention_rows": nonzero,
            "value_norms": norms,
            "projections": projections,
        }));
    }
    let tokens_json: Vec<_> = t
        .tokens
        .iter()
        .map(|m| {
            json!({
                "text": m.text, "seq_id": m.seq_id, "position": m.position, "seq_len": m.seq_len,
                "is_special": m.is_special, "is_cls": m.is_cls,
                "patch_row": m.patch.map(|p| p.row), "patch_col": m.patch.map(|p| p.col),
                "offset_start": m.offsets.map(|o| o.0), "offset_end": m.offsets.map(|o| o.1),
            })
        })
        .collect();
    let mut expect = json!({
        "schema_version": attn_types::DATA_MODEL_VERSION,
        "model_id": "gpt2-pyarrow",
        "head_dim": DIM,
        "tokens": tokens_json,
        "heads": heads_json,
    });
    let expect_path = tmp.path().join("expect.json");
    std::fs::write(&expect_path, expect.to_string()).unwrap();
    let (ok, out) = run(&dir, Some(&expect_path));
    assert!(ok, "check_dataset.py with {} failed:\n{out}", py.display());
    assert!(
        out.contains("ok:") && out.contains("6 tokens, 2 heads"),
        "{out}"
    );

    // The checker must be able to fail: a wrong expectation is reported.
    expect["tokens"][1]["text"] = json!("not the token");
    expect["heads"][0]["query"][0][0] = json!(1234.5);
    std::fs::write(&expect_path, expect.to_string()).unwrap();
    let (ok, out) = run(&dir, Some(&expect_path));
    assert!(!ok, "check_dataset.py accepted a wrong expectation:\n{out}");
    assert!(
        out.contains("tokens.parquet row 1: text") && out.contains("query values differ"),
        "{out}"
    );
}

#[test]
#[ignore = "needs ATTNVIZ_PYTHON with pyarrow; run by .ci/run"]
fn pyarrow_reads_a_grouped_query_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ds");
    let mut m = meta("llama-pyarrow");
    m.model.num_key_value_heads = Some(1);
    let ds = Dataset::create(&dir, &m).unwrap();
    ds.write_tokens(&tokens()).unwrap();
    // Three query heads sharing layer 0's one key head, each normalized with its own parameters.
    let keys = Lcg(5).matrix(N, DIM);
    for h in 0..HEADS {
        let head = HeadId::new(0, h);
        let raw =
            attn_types::HeadVectors::new(head, Lcg(6 + u64::from(h)).matrix(N, DIM), keys.clone())
                .unwrap();
        let params = attn_types::NormalizationParams {
            key_translation: vec![0.5; DIM],
            scale: 1.0 + f32::from(h),
        };
        let mut norm = normalized(&raw);
        norm.vectors = attn_types::HeadVectors::new(
            head,
            params.normalize_queries(raw.queries()),
            params.normalize_keys(raw.keys()),
        )
        .unwrap();
        norm.params = params;
        ds.write_head(&raw, Some(&norm)).unwrap();
    }
    let check = || run(&dir, None);
    let (ok, out) = check();
    assert!(ok && out.contains("3 heads"), "{out}");
    // Without its key file the query heads are reported.
    std::fs::remove_file(ds.keys_path(HeadId::new(0, 0))).unwrap();
    let (ok, out) = check();
    assert!(!ok && out.contains("key file"), "{out}");
}
