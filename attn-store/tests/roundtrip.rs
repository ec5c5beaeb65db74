//! Every artifact written through `Dataset` reads back equal; listing and resuming behave.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;

use attn_store::{Dataset, StoreError};
use attn_types::{HeadId, HeadVectors, ProjectionMethod};
use common::*;
use parquet::file::reader::{FileReader, SerializedFileReader};

fn dataset() -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    let ds = Dataset::create(dir.path().join("ds"), &meta("gpt2-test")).unwrap();
    (dir, ds)
}

#[test]
fn meta_round_trips_through_open() {
    let (_d, ds) = dataset();
    let opened = Dataset::open(ds.dir()).unwrap();
    assert_eq!(opened.meta(), &meta("gpt2-test"));
    assert_eq!(opened.dir(), ds.dir());
}

#[test]
fn tokens_round_trip() {
    let (_d, ds) = dataset();
    assert!(!ds.has_tokens());
    let t = tokens();
    ds.write_tokens(&t).unwrap();
    assert!(ds.has_tokens());
    assert_eq!(ds.read_tokens().unwrap(), t);
}

#[test]
fn head_round_trips_with_and_without_normalization() {
    let (_d, ds) = dataset();
    let h0 = HeadId::new(0, 0);
    let h1 = HeadId::new(1, 2);
    let raw0 = raw_head(h0, 1);
    let raw1 = raw_head(h1, 2);
    let norm1 = normalized(&raw1);
    ds.write_head(&raw0, None).unwrap();
    ds.write_head(&raw1, Some(&norm1)).unwrap();

    let back0 = ds.read_head(h0).unwrap();
    assert_eq!(back0.raw, raw0);
    assert!(back0.normalized.is_none());

    let back1 = ds.read_head(h1).unwrap();
    assert_eq!(back1.raw, raw1);
    let n = back1.normalized.unwrap();
    assert_eq!(n.vectors, norm1.vectors);
    assert_eq!(n.params, norm1.params);
    // NaN != NaN, so compare diagnostics bit for bit: NaN and infinity must survive the JSON.
    let bits = |d: &attn_types::HeadDiagnostics| {
        [
            d.spearman_cosine_before,
            d.spearman_cosine_after,
            d.spearman_euclidean_before,
            d.spearman_euclidean_after,
            d.weighted_corr_before,
            d.weighted_corr_after,
            d.norm_gap,
        ]
        .map(f32::to_bits)
    };
    assert_eq!(bits(&n.diagnostics), bits(&norm1.diagnostics));
    assert_eq!(n.diagnostics.pairs, 123);

    assert_eq!(ds.heads().unwrap(), vec![h0, h1]);
    assert!(ds.has_head(h1));
    assert!(!ds.has_head(HeadId::new(0, 1)));
}

#[test]
fn rewriting_a_head_replaces_it() {
    let (_d, ds) = dataset();
    let h = HeadId::new(0, 1);
    ds.write_head(&raw_head(h, 1), None).unwrap();
    let second = raw_head(h, 99);
    ds.write_head(&second, None).unwrap();
    assert_eq!(ds.read_head(h).unwrap().raw, second);
}

#[test]
fn attention_round_trips_and_stores_only_nonzero_weights() {
    let (_d, ds) = dataset();
    let h = HeadId::new(1, 0);
    let mut att = attention(5);
    // An all-zero row and an empty sequence must survive even though they produce no rows.
    att[0].weights.row_mut(1).iter_mut().for_each(|w| *w = 0.0);
    att.push(attn_types::SequenceAttention {
        seq_id: 9,
        weights: attn_types::Matrix::zeros(0, 0),
    });
    ds.write_attention(h, &att).unwrap();
    assert!(ds.has_attention(h));
    assert_eq!(ds.read_attention(h).unwrap(), att);

    let nonzero: usize = att
        .iter()
        .map(|a| a.weights.as_slice().iter().filter(|w| **w != 0.0).count())
        .sum();
    let reader = SerializedFileReader::new(File::open(ds.attention_path(h)).unwrap()).unwrap();
    assert_eq!(
        reader.metadata().file_metadata().num_rows() as usize,
        nonzero
    );
    // Causal: 6 + 1 + 3 entries minus the 2 zeroed ones.
    assert_eq!(nonzero, 8);
}

#[test]
fn value_norms_round_trip_and_are_optional() {
    let (_d, ds) = dataset();
    let h = HeadId::new(0, 2);
    assert_eq!(ds.read_value_norms(h).unwrap(), None);
    let norms: Vec<f32> = (0..N).map(|i| i as f32 * 0.5 + 0.125).collect();
    ds.write_value_norms(h, &norms).unwrap();
    assert_eq!(ds.read_value_norms(h).unwrap(), Some(norms));
}

#[test]
fn projections_round_trip_2d_and_3d_and_are_listed() {
    let (_d, ds) = dataset();
    let h = HeadId::new(1, 1);
    assert!(ds.projections(h).is_empty());
    let p2 = projection(h, ProjectionMethod::Tsne, 2, 3);
    let mut p3 = projection(h, ProjectionMethod::Umap, 3, 4);
    p3.quality = None;
    p3.spec.params.insert("min_dist".into(), f64::NAN);
    ds.write_projection(&p2).unwrap();
    ds.write_projection(&p3).unwrap();

    assert_eq!(
        ds.read_projection(h, ProjectionMethod::Tsne, 2).unwrap(),
        p2
    );
    let back3 = ds.read_projection(h, ProjectionMethod::Umap, 3).unwrap();
    assert_eq!(back3.coords, p3.coords);
    assert_eq!(back3.quality, None);
    assert_eq!(back3.objective, None);
    assert!(back3.spec.params["min_dist"].is_nan());
    assert_eq!(back3.spec.params["perplexity"], 50.0);

    assert!(ds.has_projection(h, ProjectionMethod::Tsne, 2));
    assert!(!ds.has_projection(h, ProjectionMethod::Tsne, 3));
    assert_eq!(
        ds.projections(h),
        vec![(ProjectionMethod::Tsne, 2), (ProjectionMethod::Umap, 3)]
    );
    // Projections alone do not mark a head as extracted.
    assert!(ds.heads().unwrap().is_empty());
}

#[test]
fn create_resumes_a_compatible_dataset_and_rejects_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ds");
    let first = Dataset::create(&path, &meta("gpt2-test")).unwrap();
    first
        .write_head(&raw_head(HeadId::new(0, 0), 1), None)
        .unwrap();

    let mut later = meta("gpt2-test");
    later.run.created_at = "2030-01-01T00:00:00Z".into();
    let resumed = Dataset::create(&path, &later).unwrap();
    // The first writer's run info is kept; the finished head is visible to the resumed run.
    assert_eq!(resumed.meta().run.created_at, "2026-11-21T00:00:00Z");
    assert!(resumed.has_head(HeadId::new(0, 0)));

    match Dataset::create(&path, &meta("bert-test")) {
        Err(StoreError::Incompatible { field, .. }) => assert_eq!(field, "model.id"),
        other => panic!("expected Incompatible, got {other:?}"),
    }
    let mut other_config = meta("gpt2-test");
    other_config.model.config["n_head"] = serde_json::json!(12);
    match Dataset::create(&path, &other_config) {
        Err(e @ StoreError::Incompatible { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("model.config") && msg.contains("meta.json"),
                "{msg}"
            );
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

#[test]
fn concurrent_shards_write_disjoint_heads_into_one_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ds");
    let all: Vec<HeadId> = HeadId::all(LAYERS, HEADS).collect();
    std::thread::scope(|s| {
        for shard in 0..3usize {
            let (path, all) = (&path, &all);
            s.spawn(move || {
                let ds = Dataset::create(path, &meta("gpt2-test")).unwrap();
                for (i, &h) in all.iter().enumerate().filter(|(i, _)| i % 3 == shard) {
                    ds.write_head(&raw_head(h, i as u64), None).unwrap();
                    ds.write_attention(h, &attention(i as u64)).unwrap();
                }
            });
        }
    });
    let ds = Dataset::open(&path).unwrap();
    assert_eq!(ds.heads().unwrap(), all);
    for (i, &h) in all.iter().enumerate() {
        assert_eq!(ds.read_head(h).unwrap().raw, raw_head(h, i as u64));
    }
    // Atomic writes leave no temporary files behind.
    let mut stack = vec![path.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            assert!(
                !p.to_string_lossy().ends_with(".tmp"),
                "leftover {}",
                p.display()
            );
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
}

#[test]
fn writes_are_checked_against_the_model() {
    let (_d, ds) = dataset();
    let outside = raw_head(HeadId::new(LAYERS, 0), 1);
    assert!(matches!(
        ds.write_head(&outside, None),
        Err(StoreError::Invalid { .. })
    ));
    let wide = attn_types::HeadVectors::new(
        HeadId::new(0, 0),
        attn_types::Matrix::zeros(N, DIM + 1),
        attn_types::Matrix::zeros(N, DIM + 1),
    )
    .unwrap();
    assert!(matches!(
        ds.write_head(&wide, None),
        Err(StoreError::Invalid { .. })
    ));
    let mut p = projection(HeadId::new(0, 0), ProjectionMethod::Pca, 2, 1);
    p.spec.dims = 3;
    assert!(matches!(
        ds.write_projection(&p),
        Err(StoreError::Invalid { .. })
    ));
    // Nothing was written by the failed calls.
    assert!(ds.heads().unwrap().is_empty());
    assert!(ds.projections(HeadId::new(0, 0)).is_empty());
}

/// Run as a child process (by the test below) when `ATTN_STORE_SHARD_DIR` is set: one shard that
/// creates the dataset and writes every third head.
fn shard_main(dir: &str, shard: usize) {
    let ds = Dataset::create(dir, &meta("gpt2-test")).unwrap();
    for (i, h) in HeadId::all(LAYERS, HEADS)
        .enumerate()
        .filter(|(i, _)| i % 3 == shard)
    {
        ds.write_head(&raw_head(h, i as u64), None).unwrap();
        ds.write_projection(&projection(h, ProjectionMethod::Pca, 2, i as u64))
            .unwrap();
    }
}

#[test]
fn separate_processes_write_disjoint_heads() {
    if let Ok(dir) = std::env::var("ATTN_STORE_SHARD_DIR") {
        let shard = std::env::var("ATTN_STORE_SHARD").unwrap().parse().unwrap();
        return shard_main(&dir, shard);
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ds");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|shard| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "separate_processes_write_disjoint_heads",
                    "--test-threads=1",
                ])
                .env("ATTN_STORE_SHARD_DIR", &path)
                .env("ATTN_STORE_SHARD", shard.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let ds = Dataset::open(&path).unwrap();
    let all: Vec<HeadId> = HeadId::all(LAYERS, HEADS).collect();
    assert_eq!(ds.heads().unwrap(), all);
    for (i, &h) in all.iter().enumerate() {
        assert_eq!(ds.read_head(h).unwrap().raw, raw_head(h, i as u64));
        assert_eq!(
            ds.read_projection(h, ProjectionMethod::Pca, 2).unwrap(),
            projection(h, ProjectionMethod::Pca, 2, i as u64)
        );
    }
}

#[test]
fn per_token_artifacts_must_match_the_token_table() {
    let (_d, ds) = dataset();
    assert_eq!(ds.num_tokens().unwrap(), None);
    let h = HeadId::new(0, 0);
    // Before the token table exists nothing can be checked, so a 6-token head is accepted...
    ds.write_head(&raw_head(h, 1), None).unwrap();
    let mut t = tokens();
    t.tokens.pop();
    t.tokens.last_mut().unwrap().seq_len = 1;
    ds.write_tokens(&t).unwrap();
    assert_eq!(ds.num_tokens().unwrap(), Some(N - 1));
    // ...but once it exists (5 tokens), 6-token artifacts are refused, naming the file.
    let msg = ds
        .write_head(&raw_head(h, 2), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("vectors.parquet") && msg.contains("tokens.parquet has 5"),
        "{msg}"
    );
    assert_eq!(
        ds.read_head(h).unwrap().raw,
        raw_head(h, 1),
        "the old file must be untouched"
    );
    assert!(ds.write_attention(h, &attention(1)).is_err());
    assert!(ds.write_value_norms(h, &[1.0; N]).is_err());
    assert!(
        ds.write_projection(&projection(h, ProjectionMethod::Pca, 2, 1))
            .is_err()
    );
    ds.write_value_norms(h, &[1.0; N - 1]).unwrap();
}

#[test]
fn realistic_sizes_round_trip_across_many_record_batches() {
    // 5,000 tokens read back in several record batches (the reader's default batch is 1,024 rows),
    // which exercises the per-batch offsets of the list columns.
    let dir = tempfile::tempdir().unwrap();
    let mut m = meta("big");
    m.model.head_dim = 64;
    let ds = Dataset::create(dir.path(), &m).unwrap();
    let (seqs, len) = (200u32, 25u32);
    let table = attn_types::TokenTable {
        tokens: (0..seqs)
            .flat_map(|s| {
                (0..len).map(move |p| attn_types::TokenMeta {
                    seq_id: s,
                    position: p,
                    seq_len: len,
                    text: format!("tok{s}_{p}"),
                    is_special: p == 0,
                    patch: None,
                    is_cls: false,
                    offsets: Some((p * 4, p * 4 + 3)),
                })
            })
            .collect(),
    };
    let n = table.len();
    ds.write_tokens(&table).unwrap();
    let h = HeadId::new(1, 1);
    let mut rng = Lcg(77);
    let raw = attn_types::HeadVectors::new(h, rng.matrix(n, 64), rng.matrix(n, 64)).unwrap();
    let mut norm = normalized(&HeadVectors::new(h, rng.matrix(n, 64), rng.matrix(n, 64)).unwrap());
    norm.params.key_translation = (0..64).map(|_| rng.next_f32()).collect();
    ds.write_head(&raw, Some(&norm)).unwrap();
    let back = ds.read_head(h).unwrap();
    assert_eq!(back.raw, raw);
    assert_eq!(back.normalized.unwrap().vectors, norm.vectors);
    assert_eq!(ds.read_tokens().unwrap(), table);

    let att: Vec<attn_types::SequenceAttention> = (0..seqs)
        .map(|s| attn_types::SequenceAttention {
            seq_id: s,
            weights: rng.matrix(len as usize, len as usize),
        })
        .collect();
    ds.write_attention(h, &att).unwrap();
    assert_eq!(ds.read_attention(h).unwrap(), att);

    let mut p = projection(h, ProjectionMethod::Tsne, 3, 5);
    p.coords = rng.matrix(2 * n, 3);
    ds.write_projection(&p).unwrap();
    assert_eq!(ds.read_projection(h, ProjectionMethod::Tsne, 3).unwrap(), p);
}

/// A grouped-query dataset (3 query heads per key head) of data model `version`.
fn grouped_dataset(version: u32) -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    let mut m = meta("llama-test");
    m.schema_version = version;
    m.model.num_key_value_heads = Some(1);
    let ds = Dataset::create(dir.path().join("ds"), &m).unwrap();
    ds.write_tokens(&tokens()).unwrap();
    (dir, ds)
}

/// Query head `h` of layer 0 with the group's shared `keys`, normalized as the normalizer would
/// (its own scale and translation per query head).
fn grouped_head(h: u16, keys: &attn_types::Matrix) -> (HeadVectors, attn_types::NormalizedHead) {
    let head = HeadId::new(0, h);
    let raw = HeadVectors::new(head, Lcg(100 + u64::from(h)).matrix(N, DIM), keys.clone()).unwrap();
    let params = attn_types::NormalizationParams {
        key_translation: (0..DIM).map(|j| 0.3 * j as f32 - f32::from(h)).collect(),
        scale: 0.7 + 0.45 * f32::from(h),
    };
    let vectors = HeadVectors::new(
        head,
        params.normalize_queries(raw.queries()),
        params.normalize_keys(raw.keys()),
    )
    .unwrap();
    let mut norm = normalized(&raw);
    norm.vectors = vectors;
    norm.params = params;
    (raw, norm)
}

#[test]
fn grouped_keys_are_stored_once_per_key_head() {
    let (_d, ds) = grouped_dataset(attn_types::DATA_MODEL_VERSION);
    let keys = Lcg(9).matrix(N, DIM);
    let heads: Vec<_> = (0..HEADS).map(|h| grouped_head(h, &keys)).collect();
    for (raw, norm) in &heads {
        assert_eq!(ds.shared_key_head(raw.head()), Some(HeadId::new(0, 0)));
        ds.write_head(raw, Some(norm)).unwrap();
    }
    // One key file for the group; the query heads' files hold no keys and name their key head.
    let key_files: Vec<_> = std::fs::read_dir(ds.dir().join(attn_store::KEY_HEADS_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(key_files, ["L00K00.parquet"]);
    for (raw, norm) in &heads {
        let path = ds.vectors_path(raw.head());
        assert_eq!(
            attn_store::recorded_key_head(&path).unwrap(),
            Some(HeadId::new(0, 0))
        );
        let columns = attn_store::ParquetTable::read(&path).unwrap();
        assert!(!columns.has("key") && !columns.has("key_normalized"));
        // Read back exactly as written, the recomputed normalized keys included.
        let back = ds.read_head(raw.head()).unwrap();
        assert_eq!(&back.raw, raw);
        let n = back.normalized.unwrap();
        assert_eq!(n.vectors, norm.vectors);
        assert_eq!(n.params, norm.params);
        let (qn, kn) = ds.read_head_norms(raw.head()).unwrap();
        assert_eq!(
            (qn, kn),
            (raw.queries().row_norms(), raw.keys().row_norms())
        );
    }
    // The normalized keys of different query heads differ (their own parameters).
    assert_ne!(heads[0].1.vectors.keys(), heads[1].1.vectors.keys());

    // The key file is never replaced: a head whose keys differ from it (another process's
    // extraction, bit for bit) keeps its own keys in its vectors file; the group's other heads
    // still read the key file's.
    let key_file = std::fs::read(ds.keys_path(HeadId::new(0, 0))).unwrap();
    let (other, other_norm) = grouped_head(1, &Lcg(10).matrix(N, DIM));
    ds.write_head(&other, Some(&other_norm)).unwrap();
    assert_eq!(
        std::fs::read(ds.keys_path(HeadId::new(0, 0))).unwrap(),
        key_file
    );
    assert_eq!(
        attn_store::recorded_key_head(ds.vectors_path(other.head())).unwrap(),
        None
    );
    let back = ds.read_head(other.head()).unwrap();
    assert_eq!(back.raw, other);
    assert_eq!(back.normalized.unwrap().vectors, other_norm.vectors);
    for h in [0u16, 2] {
        assert_eq!(
            ds.read_head(HeadId::new(0, h)).unwrap().raw,
            heads[usize::from(h)].0
        );
    }

    // Normalized keys that the parameters do not give are refused.
    let (raw, mut norm) = grouped_head(2, &keys);
    norm.params.scale *= 1.5;
    let msg = ds.write_head(&raw, Some(&norm)).unwrap_err().to_string();
    assert!(msg.contains("key_normalized"), "{msg}");

    // A missing key file is named.
    std::fs::remove_file(ds.keys_path(HeadId::new(0, 0))).unwrap();
    let msg = ds.read_head(HeadId::new(0, 2)).unwrap_err().to_string();
    assert!(msg.contains("L00K00.parquet"), "{msg}");
}

#[test]
fn grouped_datasets_of_data_model_1_keep_keys_with_every_head() {
    let (_d, ds) = grouped_dataset(1);
    let keys = Lcg(9).matrix(N, DIM);
    let (raw, norm) = grouped_head(1, &keys);
    assert_eq!(ds.shared_key_head(raw.head()), None);
    ds.write_head(&raw, Some(&norm)).unwrap();
    assert!(!ds.dir().join(attn_store::KEY_HEADS_DIR).exists());
    assert_eq!(
        attn_store::recorded_key_head(ds.vectors_path(raw.head())).unwrap(),
        None
    );
    assert_eq!(ds.read_head(raw.head()).unwrap().raw, raw);
}
