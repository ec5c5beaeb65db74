//! The dataset layout beyond the Parquet files: cheap per-head readers, images, figures, stale
//! temporary files, metadata that always describes the data, and the public column reader.
#![allow(clippy::unwrap_used)]

mod common;

use attn_store::{Dataset, ParquetTable, StoreError, write_file_atomically};
use attn_types::{Fidelity, HeadId};
use common::*;

fn dataset() -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    let ds = Dataset::create(dir.path(), &meta("m")).unwrap();
    ds.write_tokens(&tokens()).unwrap();
    (dir, ds)
}

#[test]
fn norms_and_normalization_are_read_without_the_vectors() {
    let (_d, ds) = dataset();
    let h = HeadId::new(1, 2);
    let raw = raw_head(h, 3);
    let mut norm = normalized(&raw);
    let f = Fidelity {
        fidelity: Some(0.5),
        hit_at_3: Some(0.75),
        chance_at_3: None,
        global_fidelity: Some(-0.25),
        queries: 4,
        rho_queries: 3,
    };
    norm.diagnostics.fidelity_raw = Some(f);
    ds.write_head(&raw, Some(&norm)).unwrap();
    let (q, k) = ds.read_head_norms(h).unwrap();
    assert_eq!(q, raw.queries().row_norms());
    assert_eq!(k, raw.keys().row_norms());
    let (params, diag) = ds.read_head_normalization(h).unwrap().unwrap();
    assert_eq!(params, norm.params);
    assert_eq!(diag.fidelity_raw, Some(f));
    assert_eq!(diag.fidelity_normalized, None);
    assert_eq!(diag.pairs, norm.diagnostics.pairs);
    // A head stored without normalization has none.
    let h2 = HeadId::new(0, 0);
    ds.write_head(&raw_head(h2, 4), None).unwrap();
    assert!(ds.read_head_normalization(h2).unwrap().is_none());
    // Another head's file is refused by name.
    let err = attn_store::read_vector_norms_file(ds.vectors_path(h), h2).unwrap_err();
    assert!(err.to_string().contains("vectors.parquet"), "{err}");
}

#[test]
fn images_and_figures_have_their_places() {
    let (_d, ds) = dataset();
    assert!(!ds.has_image(3));
    let err = ds.read_image_png(3).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { .. }) && err.to_string().contains("00003.png"),
        "{err}"
    );
    ds.write_image_png(3, b"\x89PNG fake").unwrap();
    assert!(ds.has_image(3));
    assert_eq!(ds.read_image_png(3).unwrap(), b"\x89PNG fake");
    assert!(
        ds.figure_path("matrix_tsne_2d.png")
            .starts_with(ds.dir().join("figures"))
    );
    assert_eq!(ds.viewer_path(), ds.dir().join("viewer.html"));
}

#[test]
fn stale_temporary_files_of_dead_writers_are_removed() {
    let (_d, ds) = dataset();
    let head_dir = ds.head_dir(HeadId::new(0, 1));
    std::fs::create_dir_all(&head_dir).unwrap();
    // pid 0 never names a user process; this process is alive.
    let dead = head_dir.join(".vectors.parquet.0-7.tmp");
    let alive = head_dir.join(format!(".vectors.parquet.{}-8.tmp", std::process::id()));
    let other = head_dir.join("notes.tmp");
    for p in [&dead, &alive, &other] {
        std::fs::write(p, b"x").unwrap();
    }
    assert_eq!(ds.remove_stale_temp_files().unwrap(), 1);
    assert!(!dead.exists() && alive.exists() && other.exists());
}

#[test]
fn metadata_of_a_dataset_without_data_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = meta("m");
    first.run.params.insert("truncate".into(), "false".into());
    Dataset::create(dir.path(), &first).unwrap();
    // A run that failed before writing data left its metadata; the next one's replaces it.
    let mut second = meta("m");
    second.run.params.insert("truncate".into(), "true".into());
    let ds = Dataset::create(dir.path(), &second).unwrap();
    assert_eq!(ds.meta().run.params["truncate"], "true");
    assert_eq!(
        Dataset::open(dir.path()).unwrap().meta().run.params["truncate"],
        "true"
    );
    // Once data is stored, the metadata that describes it stays.
    ds.write_tokens(&tokens()).unwrap();
    let mut third = meta("m");
    third.run.params.insert("truncate".into(), "other".into());
    let ds = Dataset::create(dir.path(), &third).unwrap();
    assert_eq!(ds.meta().run.params["truncate"], "true");
}

#[test]
fn column_reader_reads_only_what_is_asked_and_names_what_is_missing() {
    let (_d, ds) = dataset();
    let table = ParquetTable::read_columns(ds.tokens_path(), &["text", "seq_id"]).unwrap();
    assert_eq!(table.num_rows(), tokens().len());
    let texts: Vec<String> = table
        .strings_nullable("text")
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(
        texts,
        tokens()
            .tokens
            .iter()
            .map(|t| t.text.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        table.u32_any("seq_id").unwrap(),
        tokens().tokens.iter().map(|t| t.seq_id).collect::<Vec<_>>()
    );
    assert!(
        !table.has("position"),
        "unrequested columns are not decoded"
    );
    let err = ParquetTable::read_columns(ds.tokens_path(), &["sentence"]).unwrap_err();
    assert!(matches!(err, StoreError::NoSuchColumn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("`sentence`") && err.to_string().contains("text"),
        "{err}"
    );
    assert_eq!(
        attn_store::parquet_num_rows(&ds.tokens_path()).unwrap(),
        tokens().len()
    );
}

#[test]
fn atomic_writer_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("file.bin");
    write_file_atomically(&path, b"abc").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"abc");
    // A target that cannot be replaced (a directory) fails and leaves nothing behind.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(blocked.join("inner")).unwrap();
    assert!(write_file_atomically(&blocked, b"x").is_err());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
