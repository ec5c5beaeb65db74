//! The real all-MiniLM-L6-v2 against transformers' values (saved by `scripts/make_fixtures.py`).
//!
//! Needs the model directory in `ATTNVIZ_MINILM_DIR`; fails (does not skip) when it is unset or
//! invalid. Run with:
//! `ATTNVIZ_MINILM_DIR=/path/to/model cargo test -p attn-extract --test minilm -- --ignored`
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use attn_extract::{Corpus, ExtractOptions, LoadedModel};
use common::{
    Expected, assert_reference_tokens, assert_rows_sum_to_one, compare, compiled_devices,
    fixture_dir, sentences,
};

#[test]
#[ignore = "needs ATTNVIZ_MINILM_DIR; run by .ci/run"]
fn minilm_matches_transformers() {
    let dir = PathBuf::from(
        std::env::var_os("ATTNVIZ_MINILM_DIR")
            .expect("ATTNVIZ_MINILM_DIR must name the all-MiniLM-L6-v2 directory"),
    );
    // Every backend compiled in: flex in CI, cuda:0 in scripts/gpu-check.sh.
    for (backend, device) in compiled_devices() {
        let model = LoadedModel::load(&dir, &device)
            .unwrap_or_else(|e| panic!("ATTNVIZ_MINILM_DIR={}: {e}", dir.display()));
        let info = model.info();
        assert_eq!(
            (
                info.num_layers,
                info.num_heads,
                info.head_dim,
                info.hidden_size
            ),
            (6, 12, 32, 384)
        );

        let fixture = fixture_dir("minilm_reference");
        let texts = sentences(&fixture);
        let ex = model
            .extract(
                &Corpus::Text(texts.clone()),
                &ExtractOptions {
                    batch_size: 2,
                    ..Default::default()
                },
                &mut |_, _| {},
            )
            .expect("extract");
        assert_eq!(ex.heads.len(), 72);
        let n_tok = ex.tokens.len();
        for cap in &ex.heads {
            assert_eq!(cap.vectors.queries().shape(), (n_tok, 32));
            assert_eq!(cap.vectors.keys().shape(), (n_tok, 32));
            assert_eq!(cap.attention.len(), texts.len());
        }
        // No padding leaked in: tokenizer.json's fixed padding to 128 is switched off.
        assert!(ex.tokens.tokens.iter().all(|t| t.text != "[PAD]"));
        assert_rows_sum_to_one(&ex, 1e-5);

        let expected = Expected::read(&fixture);
        assert_reference_tokens(&ex, &model, &fixture, &expected);
        let err = compare(&ex, &expected, texts.len(), &[0, 5]);
        eprintln!("all-MiniLM-L6-v2 on {backend}: max abs error {err:?}");
        assert_eq!(err.compared, 2 * 12 * texts.len());
        // About 5x the measured worst case (flex): Q 3.6e-6, K 3.5e-6, attention 8.3e-7, value norms
        // 2.9e-6 (against references regenerated with torch 2.15 + transformers 5.23).
        assert!(
            err.q < 2e-5 && err.k < 2e-5 && err.attn < 5e-6 && err.vnorm < 1.5e-5,
            "{err:?}"
        );
    }
}
