//! Long sequences: the attention kept per query and the model passes that bound captured attention.
//!
//! On the qwen2 fixture (grouped-query attention, sliding windows): extracting one head per pass
//! (`attention_memory` below one head's attention) writes the same bytes as one pass over all heads,
//! and `AttentionKeep::TopK` stores at most k weights per query, the k largest of the full row.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use attn_pipeline::{AttentionKeep, Control, CorpusInput, ProjectionSettings, RunPlan, Shard, run};
use attn_store::Dataset;
use attn_types::HeadId;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../attn-extract/tests/fixtures")
        .join(name)
}

fn plan(out: &Path, keep: AttentionKeep, attention_memory: usize) -> RunPlan {
    RunPlan {
        model_dir: fixture("qwen2_tiny"),
        model_id: None,
        corpus: CorpusInput::Texts(
            [
                "the cat sat on the mat",
                "a dog ran to the park and back again before the rain",
                "hello world",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        text_field: "text".into(),
        max_sequences: None,
        out: out.to_path_buf(),
        backend: "flex".into(),
        batch_size: 2,
        truncate: true,
        rope: Default::default(),
        attention_keep: keep,
        attention_memory,
        normalize: true,
        layers: None,
        heads: None,
        shard: None,
        // Extraction only: the files compared here are the extracted ones.
        projection: ProjectionSettings::attnviz(Vec::new(), vec![2]),
    }
}

/// The vectors and attention files of `heads` are byte for byte the same in both datasets.
fn assert_same_head_files(a: &Dataset, b: &Dataset, heads: impl IntoIterator<Item = HeadId>) {
    for h in heads {
        // The grouped-query fixture stores its key heads once, beside the query heads.
        let key_head = a.shared_key_head(h).expect("a grouped-query dataset");
        for (x, y) in [
            (a.vectors_path(h), b.vectors_path(h)),
            (a.attention_path(h), b.attention_path(h)),
            (a.keys_path(key_head), b.keys_path(key_head)),
        ] {
            assert_eq!(
                std::fs::read(&x).unwrap(),
                std::fs::read(&y).unwrap(),
                "{h}: {x:?}"
            );
        }
    }
}

#[test]
fn one_head_per_pass_writes_the_same_bytes_as_one_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, many) = (tmp.path().join("one"), tmp.path().join("many"));
    let a = run(
        &plan(&one, AttentionKeep::All, usize::MAX),
        Control::silent(),
    )
    .unwrap();
    let b = run(&plan(&many, AttentionKeep::All, 1), Control::silent()).unwrap();
    assert_eq!((a.heads_extracted, b.heads_extracted), (18, 18));
    let (da, db) = (Dataset::open(&one).unwrap(), Dataset::open(&many).unwrap());
    assert_same_head_files(&da, &db, HeadId::all(3, 6));
}

/// Passes of a few heads spread over layers (a shard takes every 5th head): each pass captures
/// exactly its heads, not its layers x heads cross product, and the files equal a one-pass run's.
#[test]
fn passes_of_a_shard_capture_only_their_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, passes) = (tmp.path().join("one"), tmp.path().join("passes"));
    let shard = Some(Shard { index: 1, count: 5 });
    let a = run(
        &RunPlan {
            shard,
            ..plan(&one, AttentionKeep::All, usize::MAX)
        },
        Control::silent(),
    )
    .unwrap();
    // One head's captured attention: sum of len^2 f32 values over the sequences.
    let da = Dataset::open(&one).unwrap();
    let per_head: usize = da
        .read_tokens()
        .unwrap()
        .sequences()
        .iter()
        .map(|s| s.len * s.len * 4)
        .sum();
    let b = run(
        &RunPlan {
            shard,
            ..plan(&passes, AttentionKeep::All, 2 * per_head)
        },
        Control::silent(),
    )
    .unwrap();
    // Heads 1, 6, 11, 16 of the 18 (layer-major): L0H1, L1H0, L1H5, L2H4.
    assert_eq!((a.heads_extracted, b.heads_extracted), (4, 4));
    let db = Dataset::open(&passes).unwrap();
    assert_eq!(da.heads().unwrap(), db.heads().unwrap());
    assert_same_head_files(&da, &db, da.heads().unwrap());
}

#[test]
fn top_k_keeps_the_k_strongest_keys_of_every_query() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, top) = (tmp.path().join("full"), tmp.path().join("top"));
    run(
        &plan(&full, AttentionKeep::All, usize::MAX),
        Control::silent(),
    )
    .unwrap();
    run(
        &plan(&top, AttentionKeep::TopK(2), usize::MAX),
        Control::silent(),
    )
    .unwrap();
    let (df, dt) = (Dataset::open(&full).unwrap(), Dataset::open(&top).unwrap());
    assert_eq!(dt.meta().run.params.get("attention").unwrap(), "top:2");
    let mut cut = 0;
    for h in HeadId::all(3, 6) {
        for (f, t) in df
            .read_attention(h)
            .unwrap()
            .iter()
            .zip(&dt.read_attention(h).unwrap())
        {
            for q in 0..f.len() {
                let (rf, rt) = (f.weights.row(q), t.weights.row(q));
                let kept: Vec<usize> = (0..rt.len()).filter(|&k| rt[k] != 0.0).collect();
                assert_eq!(kept.len(), 2.min(q + 1), "{h} q{q}: {rt:?}");
                let mut order: Vec<usize> = (0..rf.len()).collect();
                order.sort_by(|&x, &y| rf[y].total_cmp(&rf[x]).then(x.cmp(&y)));
                let mut strongest = order[..kept.len()].to_vec();
                strongest.sort_unstable();
                assert_eq!(kept, strongest, "{h} q{q}");
                for &k in &kept {
                    assert_eq!(rt[k], rf[k]);
                }
                cut += usize::from(rf.iter().filter(|w| **w != 0.0).count() > 2);
            }
        }
    }
    assert!(cut > 0, "some rows had more than two keys to cut");
}

#[test]
fn a_pass_is_interrupted_between_its_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    // One pass over every head, one sequence per batch: the flag set after the first batch stops
    // the pass before the second, and nothing of it is stored.
    let mut p = plan(&out, AttentionKeep::All, usize::MAX);
    p.batch_size = 1;
    // With a projection asked for: an interrupted run must not go on to project (no tokens yet).
    p.projection = ProjectionSettings::attnviz(vec![attn_types::ProjectionMethod::Pca], vec![2]);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let on_progress = |event| {
        if let attn_pipeline::ProgressEvent::Advance {
            stage: attn_pipeline::Stage::Extract,
            done: 1,
        } = event
        {
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let summary = run(&p, Control::new(&cancel, &on_progress)).unwrap();
    assert!(summary.interrupted);
    assert_eq!(summary.heads_extracted, 0);
    assert!(Dataset::open(&out).unwrap().heads().unwrap().is_empty());
    // The run resumes from there.
    let again = run(&p, Control::silent()).unwrap();
    assert_eq!((again.interrupted, again.heads_extracted), (false, 18));
    assert_eq!(again.projections_computed, 18);
}
