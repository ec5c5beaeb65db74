//! End-to-end on the real all-MiniLM-L6-v2: the full chain (extract, normalize, t-SNE/UMAP/PCA, store,
//! render). Needs the model directory in `ATTNVIZ_MINILM_DIR` (`scripts/test.sh` provides it).

use attn_store::Dataset;
use attn_types::{HeadId, ProjectionMethod};
use attnviz_tests::{attnviz_ok, png_size};

#[test]
#[ignore = "needs ATTNVIZ_MINILM_DIR; run by scripts/test.sh"]
fn minilm_full_chain() {
    let dir = std::env::var("ATTNVIZ_MINILM_DIR")
        .expect("ATTNVIZ_MINILM_DIR must point at all-MiniLM-L6-v2 (see scripts/test.sh)");
    let tmp = tempfile::tempdir().unwrap();
    let out = attnviz_ok(
        tmp.path(),
        &[
            "run",
            "--model",
            &dir,
            "--max-sequences",
            "24",
            "--out",
            "ds",
            "--quiet",
            "--json",
            "--tsne-iterations",
            "300",
        ],
    );
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["heads"], 72);
    let ds = Dataset::open(tmp.path().join("ds")).unwrap();
    let tokens = ds.read_tokens().unwrap();
    assert_eq!(tokens.sequences().len(), 24);
    assert!(tokens.tokens[0].text == "[CLS]" && tokens.tokens[0].is_special);
    assert_eq!(ds.heads().unwrap().len(), 72);
    let mut rho = Vec::new();
    for h in HeadId::all(6, 12) {
        let head = ds.read_head(h).unwrap();
        assert_eq!(head.raw.dim(), 32);
        let norm = head.normalized.unwrap();
        rho.push(norm.diagnostics.spearman_cosine_before);
        for m in [
            ProjectionMethod::Tsne,
            ProjectionMethod::Umap,
            ProjectionMethod::Pca,
        ] {
            let p = ds.read_projection(h, m, 2).unwrap();
            assert_eq!(p.coords.rows(), 2 * tokens.len());
        }
    }
    // The paper's headline finding for BERT: distance tracks attention (mean Spearman -0.938).
    let mean = rho.iter().sum::<f32>() / rho.len() as f32;
    assert!(
        mean < -0.5,
        "mean Spearman(distance, dot) over MiniLM heads is {mean}"
    );
    for m in ["tsne", "umap", "pca"] {
        let (w, h) = png_size(&tmp.path().join(format!("ds/figures/matrix_{m}_2d.png")));
        assert!(w > 1500 && h > 800, "{m}: {w}x{h}");
    }
    // A second run finds everything done.
    let again: serde_json::Value = serde_json::from_str(&attnviz_ok(
        tmp.path(),
        &[
            "run",
            "--model",
            &dir,
            "--max-sequences",
            "24",
            "--out",
            "ds",
            "--quiet",
            "--json",
            "--no-render",
            "--tsne-iterations",
            "300",
        ],
    ))
    .unwrap();
    assert_eq!(again["heads_extracted"], 0);
    assert_eq!(again["projections_computed"], 0);
}
