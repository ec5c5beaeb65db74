//! UMAP on a real attention head: 1,000 random tokens (2,000 joint query+key points, 32 dims) of
//! all-MiniLM-L6-v2's head L1H7 after attnviz's normalization, stored as little-endian f32 rows
//! (queries first). Its keys lie in a narrow cone and the `[CLS]` keys are near-copies of each other,
//! hubs of a component of their own in the kNN graph: the case that once flung them hundreds of units
//! away (umap-learn keeps every point within ~18 of the median on this file).
#![allow(clippy::unwrap_used)]

use attn_project::{Umap, quality};
use attn_types::{Matrix, Metric};

fn head() -> Matrix {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm_l1h7_2000x32.f32"
    );
    let bytes = std::fs::read(path).unwrap();
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Matrix::from_vec(2000, 32, values).unwrap()
}

#[test]
fn umap_keeps_hub_components_near_the_rest() {
    let data = head();
    for dims in [2u8, 3] {
        let e = Umap::params()
            .metric(Metric::Cosine)
            .dims(dims)
            .check()
            .unwrap()
            .fit(&data)
            .unwrap();
        let y = &e.coords;
        let d = usize::from(dims);
        let median: Vec<f32> = (0..d)
            .map(|c| {
                let mut v: Vec<f32> = (0..y.rows()).map(|i| y.row(i)[c]).collect();
                v.sort_by(f32::total_cmp);
                v[v.len() / 2]
            })
            .collect();
        let mut dist: Vec<f32> = (0..y.rows())
            .map(|i| {
                y.row(i)
                    .iter()
                    .zip(&median)
                    .map(|(a, m)| (a - m).powi(2))
                    .sum::<f32>()
                    .sqrt()
            })
            .collect();
        dist.sort_by(f32::total_cmp);
        let (p50, max) = (dist[dist.len() / 2], dist[dist.len() - 1]);
        assert!(
            max < 6.0 * p50,
            "{dims}D: a point ended {max:.1} from the median (median distance {p50:.1})"
        );
        let q = quality(&data, y, 10, Metric::Cosine).unwrap();
        assert!(
            q.trustworthiness > 0.88,
            "{dims}D trustworthiness {}",
            q.trustworthiness
        );
    }
}
