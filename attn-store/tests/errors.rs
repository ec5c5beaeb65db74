//! Readers reject bad input with errors that name the file and the column/field; files written by
//! other tools in the documented schemas are accepted.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float32Array, GenericListArray, Int64Array, ListArray, OffsetSizeTrait, RecordBatch,
    UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use attn_store::{Dataset, StoreError, read_vectors_file};
use attn_types::{DATA_MODEL_VERSION, HeadId, ProjectionMethod};
use common::*;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

fn dataset() -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    let ds = Dataset::create(dir.path().join("ds"), &meta("gpt2-test")).unwrap();
    (dir, ds)
}

/// Writes a Parquet file with arrow directly, as another tool would.
fn write_foreign(path: &Path, columns: Vec<(&str, ArrayRef)>, kv: Vec<(&str, String)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(
            kv.into_iter()
                .map(|(k, v)| KeyValue::new(k.to_string(), v))
                .collect(),
        ))
        .build();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn u32s(v: impl IntoIterator<Item = u32>) -> ArrayRef {
    Arc::new(UInt32Array::from_iter_values(v))
}

#[test]
fn truncated_file_is_a_parquet_error_naming_the_file() {
    let (_d, ds) = dataset();
    let h = HeadId::new(0, 1);
    ds.write_head(&raw_head(h, 1), None).unwrap();
    let path = ds.vectors_path(h);
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() - 3, bytes.len() / 2, 4] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = ds.read_head(h).unwrap_err();
        assert!(matches!(err, StoreError::Parquet { .. }), "{err:?}");
        assert!(err.to_string().contains("vectors.parquet"), "{err}");
    }
}

#[test]
fn corrupt_page_data_is_an_error_not_a_panic() {
    let (_d, ds) = dataset();
    let h = HeadId::new(0, 1);
    ds.write_head(&raw_head(h, 1), None).unwrap();
    let path = ds.vectors_path(h);
    let mut bytes = std::fs::read(&path).unwrap();
    // Scribble over the data pages (after the 4-byte magic), leaving the footer intact.
    for b in &mut bytes[4..60] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = ds.read_head(h).unwrap_err();
    assert!(err.to_string().contains("vectors.parquet"), "{err}");
}

#[test]
fn wrong_column_type_names_file_and_column() {
    let (_d, ds) = dataset();
    let t = tokens();
    ds.write_tokens(&t).unwrap();
    // Rewrite tokens.parquet with seq_id as int64, the usual pandas default.
    let good = attn_store::read_tokens_file(ds.tokens_path()).unwrap();
    let n = good.len() as u32;
    write_foreign(
        &ds.tokens_path(),
        vec![
            ("token_index", u32s(0..n)),
            (
                "seq_id",
                Arc::new(Int64Array::from_iter_values(
                    good.tokens.iter().map(|t| i64::from(t.seq_id)),
                )),
            ),
            ("position", u32s(good.tokens.iter().map(|t| t.position))),
            ("seq_len", u32s(good.tokens.iter().map(|t| t.seq_len))),
        ],
        vec![],
    );
    match ds.read_tokens().unwrap_err() {
        e @ StoreError::ColumnType { .. } => {
            let msg = e.to_string();
            assert!(
                msg.contains("tokens.parquet") && msg.contains("`seq_id`") && msg.contains("Int64"),
                "{msg}"
            );
        }
        other => panic!("expected ColumnType, got {other:?}"),
    }
}

#[test]
fn missing_column_names_file_and_column() {
    let (_d, ds) = dataset();
    write_foreign(
        &ds.tokens_path(),
        vec![
            ("seq_id", u32s([0, 0])),
            ("position", u32s([0, 1])),
            ("seq_len", u32s([2, 2])),
        ],
        vec![],
    );
    match ds.read_tokens().unwrap_err() {
        StoreError::MissingColumn { path, column } => {
            assert_eq!(column, "text");
            assert!(path.ends_with("tokens.parquet"));
        }
        other => panic!("expected MissingColumn, got {other:?}"),
    }
}

#[test]
fn future_schema_version_in_meta_json_is_refused() {
    let (_d, ds) = dataset();
    let path = ds.dir().join("meta.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["schema_version"] = serde_json::json!(DATA_MODEL_VERSION + 1);
    // A future format may also change other fields; the version must be reported, not a parse error.
    v["model"] = serde_json::json!("changed");
    std::fs::write(&path, v.to_string()).unwrap();
    for result in [
        Dataset::open(ds.dir()),
        Dataset::create(ds.dir(), &meta("gpt2-test")),
    ] {
        match result.unwrap_err() {
            StoreError::FutureVersion {
                found,
                supported,
                path,
            } => {
                assert_eq!(found, DATA_MODEL_VERSION + 1);
                assert_eq!(supported, DATA_MODEL_VERSION);
                assert!(path.ends_with("meta.json"));
            }
            other => panic!("expected FutureVersion, got {other:?}"),
        }
    }
}

#[test]
fn future_schema_version_in_a_parquet_file_is_refused() {
    let (_d, ds) = dataset();
    let h = HeadId::new(0, 0);
    write_foreign(
        &ds.value_norms_path(h),
        vec![
            ("token_index", u32s([0])),
            ("value_norm", Arc::new(Float32Array::from(vec![1.0]))),
        ],
        vec![(
            attn_store::KV_SCHEMA_VERSION,
            (DATA_MODEL_VERSION + 1).to_string(),
        )],
    );
    let err = ds.read_value_norms(h).unwrap_err();
    assert!(matches!(err, StoreError::FutureVersion { .. }), "{err:?}");
    assert!(err.to_string().contains("value_norms.parquet"));
}

#[test]
fn bad_meta_json_names_the_field() {
    let (_d, ds) = dataset();
    let path = ds.dir().join("meta.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["model"].as_object_mut().unwrap().remove("num_heads");
    std::fs::write(&path, v.to_string()).unwrap();
    let msg = Dataset::open(ds.dir()).unwrap_err().to_string();
    assert!(
        msg.contains("meta.json") && msg.contains("num_heads"),
        "{msg}"
    );

    std::fs::write(&path, "{ not json").unwrap();
    assert!(matches!(
        Dataset::open(ds.dir()),
        Err(StoreError::Json { .. })
    ));
}

#[test]
fn opening_a_directory_without_meta_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("meta.json"));
}

#[test]
fn reading_an_unwritten_head_is_not_found() {
    let (_d, ds) = dataset();
    let err = ds.read_head(HeadId::new(1, 1)).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("L01H01"), "{err}");
    assert!(matches!(
        ds.read_projection(HeadId::new(1, 1), ProjectionMethod::Pca, 2),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn a_file_of_another_head_is_detected() {
    let (_d, ds) = dataset();
    let (a, b) = (HeadId::new(0, 0), HeadId::new(0, 1));
    ds.write_head(&raw_head(a, 1), None).unwrap();
    std::fs::create_dir_all(ds.head_dir(b)).unwrap();
    std::fs::copy(ds.vectors_path(a), ds.vectors_path(b)).unwrap();
    let msg = ds.read_head(b).unwrap_err().to_string();
    assert!(
        msg.contains("attnviz.head") && msg.contains("L0H0"),
        "{msg}"
    );
}

/// A `List<Float32>` (`O = i32`) or `LargeList<Float32>` (`O = i64`) column of `rows`.
fn list_column<O: OffsetSizeTrait>(rows: Vec<Vec<f32>>) -> ArrayRef {
    Arc::new(GenericListArray::<O>::from_iter_primitive::<
        arrow_array::types::Float32Type,
        _,
        _,
    >(
        rows.into_iter()
            .map(|r| Some(r.into_iter().map(Some).collect::<Vec<_>>())),
    ))
}

#[test]
fn user_vectors_as_list_columns_are_accepted_and_ragged_rows_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("my_qk.parquet");
    let list = list_column::<i32>;
    write_foreign(
        &path,
        vec![
            (
                "query",
                list(vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]),
            ),
            (
                "key",
                list(vec![vec![-1.0, 0.5], vec![0.0, 0.0], vec![7.0, 8.0]]),
            ),
        ],
        vec![],
    );
    let head = HeadId::new(3, 4);
    let stored = read_vectors_file(&path, head).unwrap();
    assert_eq!(stored.raw.head(), head);
    assert_eq!(stored.raw.queries().shape(), (3, 2));
    assert_eq!(stored.raw.queries().row(2), &[5.0, 6.0]);
    assert_eq!(stored.raw.keys().row(0), &[-1.0, 0.5]);
    assert!(stored.normalized.is_none());

    // 64-bit offsets (`LargeList`, e.g. from polars) read the same.
    write_foreign(
        &path,
        vec![
            (
                "query",
                list_column::<i64>(vec![vec![1.0, 2.0], vec![3.0, 4.0]]),
            ),
            ("key", list(vec![vec![-1.0, 0.5], vec![0.0, 9.0]])),
        ],
        vec![],
    );
    let stored = read_vectors_file(&path, head).unwrap();
    assert_eq!(stored.raw.queries().row(1), &[3.0, 4.0]);
    assert_eq!(stored.raw.keys().row(1), &[0.0, 9.0]);

    // Long enough to be read back in several record batches.
    let rows: Vec<Vec<f32>> = (0..3000)
        .map(|i| vec![i as f32, -(i as f32), 0.5])
        .collect();
    write_foreign(
        &path,
        vec![("query", list(rows.clone())), ("key", list(rows.clone()))],
        vec![],
    );
    let stored = read_vectors_file(&path, head).unwrap();
    assert_eq!(stored.raw.keys().shape(), (3000, 3));
    assert_eq!(stored.raw.keys().row(2999), rows[2999].as_slice());
    assert_eq!(stored.raw.queries().row(1500), rows[1500].as_slice());

    write_foreign(
        &path,
        vec![
            ("query", list(vec![vec![1.0, 2.0], vec![3.0]])),
            ("key", list(vec![vec![1.0, 2.0], vec![3.0, 4.0]])),
        ],
        vec![],
    );
    let msg = read_vectors_file(&path, head).unwrap_err().to_string();
    assert!(
        msg.contains("my_qk.parquet") && msg.contains("`query`") && msg.contains("row 1"),
        "{msg}"
    );

    // Vectors of the wrong element type are a type error naming the column.
    let f64_list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<
        arrow_array::types::Float64Type,
        _,
        _,
    >(vec![Some(vec![Some(1.0f64)])]));
    write_foreign(
        &path,
        vec![("query", f64_list.clone()), ("key", f64_list)],
        vec![],
    );
    assert!(matches!(
        read_vectors_file(&path, head),
        Err(StoreError::ColumnType { column, .. }) if column == "query"
    ));
}

#[test]
fn out_of_order_token_index_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("norms.parquet");
    write_foreign(
        &path,
        vec![
            ("token_index", u32s([1, 0])),
            ("value_norm", Arc::new(Float32Array::from(vec![1.0, 2.0]))),
        ],
        vec![],
    );
    let msg = attn_store::read_value_norms_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("token_index") && msg.contains("row 0"),
        "{msg}"
    );
}

#[test]
fn attention_positions_outside_the_sequence_are_rejected() {
    let (_d, ds) = dataset();
    let h = HeadId::new(0, 0);
    write_foreign(
        &ds.attention_path(h),
        vec![
            ("seq_id", u32s([0, 0])),
            ("seq_len", u32s([2, 2])),
            ("query_pos", u32s([0, 1])),
            ("key_pos", u32s([0, 2])),
            ("weight", Arc::new(Float32Array::from(vec![1.0, 1.0]))),
        ],
        vec![],
    );
    let msg = ds.read_attention(h).unwrap_err().to_string();
    assert!(
        msg.contains("attention.parquet") && msg.contains("key_pos") && msg.contains("row 1"),
        "{msg}"
    );
}

#[test]
fn projection_rows_in_any_order_read_back_and_duplicates_are_rejected() {
    let (_d, ds) = dataset();
    let h = HeadId::new(0, 2);
    let p = projection(h, ProjectionMethod::Pca, 2, 11);
    ds.write_projection(&p).unwrap();
    let path = ds.projection_path(h, ProjectionMethod::Pca, 2);
    let kv = {
        let reader =
            parquet::file::reader::SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        use parquet::file::reader::FileReader;
        reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .find(|e| e.key == attn_store::KV_PROJECTION)
            .unwrap()
            .value
            .clone()
            .unwrap()
    };
    // Reverse the rows: keys first, last token first.
    let rows: Vec<usize> = (0..2 * N).rev().collect();
    let token = |r: usize| (r % N) as u32;
    let write = |rows: &[usize]| {
        write_foreign(
            &path,
            vec![
                ("token_index", u32s(rows.iter().map(|&r| token(r)))),
                (
                    "is_key",
                    Arc::new(arrow_array::BooleanArray::from(
                        rows.iter().map(|&r| r >= N).collect::<Vec<_>>(),
                    )),
                ),
                (
                    "x",
                    Arc::new(Float32Array::from_iter_values(
                        rows.iter().map(|&r| p.coords.get(r, 0)),
                    )),
                ),
                (
                    "y",
                    Arc::new(Float32Array::from_iter_values(
                        rows.iter().map(|&r| p.coords.get(r, 1)),
                    )),
                ),
            ],
            vec![(attn_store::KV_PROJECTION, kv.clone())],
        )
    };
    write(&rows);
    assert_eq!(ds.read_projection(h, ProjectionMethod::Pca, 2).unwrap(), p);

    let mut dup = rows.clone();
    dup[1] = dup[0];
    write(&dup);
    let msg = ds
        .read_projection(h, ProjectionMethod::Pca, 2)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("appears twice"), "{msg}");
}

#[test]
fn arrow_schemas_are_what_the_readme_documents() {
    let t = attn_store::tokens_schema();
    assert_eq!(
        t.field_with_name("patch_row").unwrap().data_type(),
        &DataType::UInt16
    );
    assert!(t.field_with_name("offset_end").unwrap().is_nullable());
    let v = attn_store::vectors_schema(64, true);
    assert_eq!(
        v.field_with_name("key_normalized").unwrap().data_type(),
        &DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 64)
    );
    let names = |s: Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(attn_store::vectors_schema(64, false)),
        ["token_index", "query", "key", "query_norm", "key_norm"]
    );
    assert_eq!(
        v.field_with_name("query_norm").unwrap().data_type(),
        &DataType::Float32
    );
    let want = Schema::new(vec![
        Field::new("token_index", DataType::UInt32, false),
        Field::new("is_key", DataType::Boolean, false),
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float32, false),
        Field::new("z", DataType::Float32, true),
    ]);
    assert_eq!(attn_store::projection_schema(), want);
}
