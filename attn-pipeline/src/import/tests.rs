use super::*;
use std::fs::File;
use std::sync::Arc;

use attn_types::{HeadVectors, Matrix, SequenceSpan};

use arrow_array::{ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;

/// A scratch directory removed on drop (attn-cli has no tempfile dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("attnviz-import-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let mut w = ArrowWriter::try_new(File::create(path).expect("create"), batch.schema(), None)
        .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

#[test]
fn reads_parquet_tokens_of_any_integer_type() {
    let tmp = TempDir::new("tokens");
    let p = tmp.path().join("tokens.parquet");
    write_parquet(
        &p,
        vec![
            (
                "seq_id",
                Arc::new(Int64Array::from(vec![7, 7, 7, 3, 3])) as ArrayRef,
            ),
            (
                "position",
                Arc::new(Int32Array::from(vec![0, 1, 2, 0, 1])) as ArrayRef,
            ),
            (
                "text",
                Arc::new(StringArray::from(vec!["<s>", "a", "b", "<s>", "c"])) as ArrayRef,
            ),
            (
                "is_special",
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    None,
                    Some(true),
                    Some(false),
                ])) as ArrayRef,
            ),
        ],
    );
    let t = read_tokens(&p).expect("reads");
    assert_eq!(t.len(), 5);
    assert_eq!(
        t.sequences()
            .iter()
            .map(|s| (s.seq_id, s.len))
            .collect::<Vec<_>>(),
        vec![(7, 3), (3, 2)]
    );
    assert_eq!(t.tokens[4].seq_len, 2);
    assert_eq!(
        t.tokens.iter().map(|t| t.is_special).collect::<Vec<_>>(),
        vec![true, false, false, true, false]
    );
    assert_eq!(t.tokens[2].text, "b");

    // Interleaved sequences, negative ids and a missing column are errors naming file and field.
    let bad = tmp.path().join("bad.parquet");
    write_parquet(
        &bad,
        vec![
            (
                "seq_id",
                Arc::new(Int64Array::from(vec![0, 1, 0])) as ArrayRef,
            ),
            (
                "position",
                Arc::new(Int64Array::from(vec![0, 0, 1])) as ArrayRef,
            ),
            (
                "text",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
        ],
    );
    let e = crate::error_chain(&read_tokens(&bad).expect_err("interleaved"));
    assert!(
        e.contains("bad.parquet") && e.contains("seq_id") && e.contains("row 2"),
        "{e}"
    );
    write_parquet(
        &bad,
        vec![
            ("seq_id", Arc::new(Int64Array::from(vec![-1])) as ArrayRef),
            ("position", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
            ("text", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
        ],
    );
    let e = crate::error_chain(&read_tokens(&bad).expect_err("negative"));
    assert!(e.contains("bad.parquet") && e.contains("seq_id"), "{e}");
    write_parquet(
        &bad,
        vec![("seq_id", Arc::new(Int64Array::from(vec![0])) as ArrayRef)],
    );
    let e = crate::error_chain(&read_tokens(&bad).expect_err("no position"));
    assert!(e.contains("bad.parquet") && e.contains("`position`"), "{e}");
}

#[test]
fn computed_attention_is_softmax_and_respects_the_mask() {
    let q = Matrix::from_rows(&[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]).expect("q");
    let k = Matrix::from_rows(&[[0.5, 0.5], [1.0, -1.0], [0.0, 3.0]]).expect("k");
    let v = HeadVectors::new(HeadId::new(0, 0), q, k).expect("head");
    let spans = [SequenceSpan {
        seq_id: 4,
        start: 0,
        len: 3,
    }];
    // Bidirectional, causal, and causal with a window of 2 (query 2 no longer sees key 0).
    let masks: [(AttendedKeys, [usize; 3], [usize; 3]); 3] = [
        (false.into(), [0, 0, 0], [3, 3, 3]),
        (true.into(), [0, 0, 0], [1, 2, 3]),
        (
            AttendedKeys {
                causal: true,
                window: Some(2),
            },
            [0, 0, 1],
            [1, 2, 3],
        ),
    ];
    for (keys, first, end) in masks {
        let a = compute_attention(&v, &spans, keys, 1.0 / 2f64.sqrt()).expect("attention");
        assert_eq!(a[0].seq_id, 4);
        for i in 0..3 {
            let visible = first[i]..end[i];
            let logit = |j: usize| {
                let (qi, kj) = (v.queries().row(i), v.keys().row(j));
                (f64::from(qi[0] * kj[0] + qi[1] * kj[1])) / 2f64.sqrt()
            };
            let z: f64 = visible.clone().map(|j| logit(j).exp()).sum();
            for j in 0..3 {
                let want = if visible.contains(&j) {
                    logit(j).exp() / z
                } else {
                    0.0
                };
                assert!(
                    (f64::from(a[0].get(i, j)) - want).abs() < 1e-6,
                    "{keys:?} {i} {j}"
                );
            }
        }
    }
}
