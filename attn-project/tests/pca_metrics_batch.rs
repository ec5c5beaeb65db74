//! PCA, quality metrics and the batch API.

mod common;

use std::sync::Mutex;

use attn_project::{
    Pca, ProjectError, Projector, Tsne, continuity, distance_spearman, knn_recall_at_k,
    project_batch, quality, trustworthiness,
};
use attn_types::{Matrix, Metric};
use common::{mixture, uniform, with_threads};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Points `3a u1 + b u2 + 0.1 c u3 + offset` in 5D with orthonormal `u`; returns data and `a`.
fn planar(n: usize) -> (Matrix, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let s = 0.5f32;
    let u1 = [s, s, s, s, 0.0];
    let u2 = [s, -s, s, -s, 0.0];
    let u3 = [0.0, 0.0, 0.0, 0.0, 1.0];
    let mut v = Vec::new();
    let mut av = Vec::new();
    for _ in 0..n {
        let (a, b, c): (f32, f32, f32) = (
            StandardNormal.sample(&mut rng),
            StandardNormal.sample(&mut rng),
            StandardNormal.sample(&mut rng),
        );
        av.push(a);
        for t in 0..5 {
            v.push(3.0 * a * u1[t] + b * u2[t] + 0.1 * c * u3[t] + 7.0);
        }
    }
    (Matrix::from_vec(n, 5, v).expect("shape"), av)
}

fn corr(x: &[f32], y: &[f32]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (
        x.iter().map(|&v| v as f64).sum::<f64>() / n,
        y.iter().map(|&v| v as f64).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64 - mx, b as f64 - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    sxy / (sxx * syy).sqrt()
}

#[test]
fn pca_recovers_the_principal_plane() {
    let (data, a) = planar(2000);
    let (emb, ratios) = Pca::params()
        .dims(2)
        .check()
        .expect("params")
        .fit_with_variance(&data)
        .expect("fit");
    // Variances 9, 1, 0.01: ratios ~0.899 and ~0.0999.
    assert!((ratios[0] - 0.899).abs() < 0.02, "{ratios:?}");
    assert!((ratios[1] - 0.0999).abs() < 0.01, "{ratios:?}");
    assert_eq!(
        emb.spec.params["explained_variance_ratio_0"],
        ratios[0] as f64
    );
    let c0: Vec<f32> = (0..2000).map(|i| emb.coords.get(i, 0)).collect();
    // Sign convention: the largest component of u1 is ties at 0.5, all positive -> same sign as a.
    assert!(corr(&c0, &a) > 0.999, "{}", corr(&c0, &a));
    // Centred: the constant offset does not appear.
    assert!(c0.iter().map(|&v| v as f64).sum::<f64>().abs() / 2000.0 < 1e-3);
    // 3D adds the small third axis.
    let emb3 = Pca::params()
        .dims(3)
        .check()
        .expect("params")
        .fit(&data)
        .expect("fit");
    assert!(emb3.spec.params["explained_variance_ratio_2"] < 0.002);
    assert_eq!(emb3.coords.shape(), (2000, 3));
}

#[test]
fn pca_sign_and_thread_determinism() {
    let (data, _) = mixture(3000, 24, 6, 0.5, 1);
    let p = Pca::params().dims(3).check().expect("params");
    let a = with_threads(1, || p.fit(&data).expect("fit"));
    let b = with_threads(2, || p.fit(&data).expect("fit"));
    let bits = |m: &Matrix| m.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.coords), bits(&b.coords));
    // Negating the data keeps the axes (same covariance, same sign rule) and negates coordinates.
    let neg =
        Matrix::from_vec(3000, 24, data.as_slice().iter().map(|v| -v).collect()).expect("shape");
    let c = p.fit(&neg).expect("fit");
    for (x, y) in a.coords.as_slice().iter().zip(c.coords.as_slice()) {
        assert!((x + y).abs() < 1e-3, "{x} vs {y}");
    }
}

#[test]
fn pca_bad_input() {
    assert!(matches!(
        Pca::params().dims(4).check(),
        Err(ProjectError::InvalidParam { name: "dims", .. })
    ));
    let p = Pca::params().dims(3).check().expect("params");
    assert!(matches!(
        p.fit(&uniform(10, 2, 1)),
        Err(ProjectError::InvalidParam { name: "dims", .. })
    ));
    assert!(p.fit(&Matrix::zeros(1, 4)).is_err());
    let mut bad = uniform(10, 4, 1);
    bad.row_mut(4)[0] = f32::NAN;
    assert!(matches!(p.fit(&bad), Err(ProjectError::InvalidInput(m)) if m.contains("row 4")));
    // Identical points: zero variance, zero coordinates, zero ratios.
    let same = Matrix::from_vec(5, 3, [1.0f32, 2.0, 3.0].repeat(5)).expect("shape");
    let emb = p.fit(&same).expect("fit");
    assert!(emb.coords.as_slice().iter().all(|&v| v == 0.0));
    assert_eq!(emb.spec.params["explained_variance_ratio_0"], 0.0);
}

/// Six points on a line at uneven gaps (no distance ties); the embedding swaps the two ends.
/// Hand computation (k = 1, n = 6, normalizer 2 / (n k (2n - 3k - 1)) = 2 / 48):
/// - embedding neighbours 0->4, 1->5, 2->1, 3->2, 4->3, 5->1; input neighbours 0->1, 1->0, 2->1,
///   3->2, 4->3, 5->4;
/// - trustworthiness penalties: i=0: input rank of 4 is 4 (-> 3); i=1: rank of 5 is 5 (-> 4);
///   i=5: rank of 1 is 4 (-> 3); sum 10, T = 1 - 20/48;
/// - continuity penalties: i=0: embedding rank of 1 is 4 (-> 3); i=1: rank of 0 is 5 (-> 4);
///   i=5: rank of 4 is 4 (-> 3); sum 10, C = 1 - 20/48; recall 3/6.
#[test]
fn metrics_match_hand_computed_case() {
    let data = Matrix::from_vec(6, 1, vec![0.0, 1.0, 3.0, 6.0, 10.0, 15.0]).expect("shape");
    let emb = Matrix::from_vec(6, 1, vec![15.0, 1.0, 3.0, 6.0, 10.0, 0.0]).expect("shape");
    let e = 1.0 - 20.0 / 48.0;
    let t = trustworthiness(&data, &emb, 1, Metric::Euclidean).expect("t");
    let c = continuity(&data, &emb, 1, Metric::Euclidean).expect("c");
    let r = knn_recall_at_k(&data, &emb, 1, Metric::Euclidean).expect("r");
    assert!((t - e).abs() < 1e-6, "{t}");
    assert!((c - e).abs() < 1e-6, "{c}");
    assert!((r - 0.5).abs() < 1e-6, "{r}");
    let q = quality(&data, &emb, 1, Metric::Euclidean).expect("q");
    assert_eq!(
        (q.trustworthiness, q.continuity, q.knn_recall, q.k),
        (t, c, r, 1)
    );
    // The identity embedding is perfect.
    assert_eq!(
        trustworthiness(&data, &data, 2, Metric::Euclidean).expect("t"),
        1.0
    );
    assert!(
        trustworthiness(&data, &emb, 3, Metric::Euclidean).is_err(),
        "k must be < n / 2"
    );
}

/// Reference trustworthiness by full sorting, the way scikit-learn computes it.
fn naive_trust(data: &Matrix, emb: &Matrix, k: usize) -> f64 {
    let n = data.rows();
    let d = |m: &Matrix, i: usize, j: usize| -> f64 {
        m.row(i)
            .iter()
            .zip(m.row(j))
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
    };
    let mut sum = 0.0;
    for i in 0..n {
        let order = |m: &Matrix| {
            let mut o: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            o.sort_by(|&a, &b| d(m, i, a).total_cmp(&d(m, i, b)).then(a.cmp(&b)));
            o
        };
        let (oin, oout) = (order(data), order(emb));
        for &j in &oout[..k] {
            let r = oin.iter().position(|&x| x == j).expect("present") + 1;
            if r > k {
                sum += (r - k) as f64;
            }
        }
    }
    1.0 - 2.0 / (n as f64 * k as f64 * (2.0 * n as f64 - 3.0 * k as f64 - 1.0)) * sum
}

#[test]
fn trustworthiness_matches_reference_formula() {
    let data = uniform(300, 6, 4);
    // A lossy "embedding": the first two coordinates plus noise.
    let noise = uniform(300, 2, 5);
    let emb = Matrix::from_vec(
        300,
        2,
        (0..300)
            .flat_map(|i| {
                [
                    data.get(i, 0) + 0.3 * noise.get(i, 0),
                    data.get(i, 1) + 0.3 * noise.get(i, 1),
                ]
            })
            .collect(),
    )
    .expect("shape");
    for k in [1, 5, 12] {
        let t = trustworthiness(&data, &emb, k, Metric::Euclidean).expect("t") as f64;
        let r = naive_trust(&data, &emb, k);
        assert!((t - r).abs() < 1e-5, "k={k}: {t} vs {r}");
        assert!(t < 0.95, "a lossy embedding must not look perfect: {t}");
    }
}

#[test]
fn spearman_of_distances() {
    let data = uniform(200, 3, 1);
    let scaled = Matrix::from_vec(
        200,
        3,
        data.as_slice().iter().map(|v| 2.0 * v + 1.0).collect(),
    )
    .expect("shape");
    let s = distance_spearman(&data, &scaled, Metric::Euclidean, 100, 0).expect("s");
    assert!((s - 1.0).abs() < 1e-6, "{s}");
    let unrelated = uniform(200, 2, 99);
    let s = distance_spearman(&data, &unrelated, Metric::Euclidean, 150, 0).expect("s");
    assert!(s.abs() < 0.1, "{s}");
    assert!(distance_spearman(&data, &scaled, Metric::Euclidean, 2, 0).is_err());
    assert!(distance_spearman(&data, &uniform(10, 2, 1), Metric::Euclidean, 100, 0).is_err());
}

#[test]
fn batch_matches_individual_fits_in_order() {
    let inputs: Vec<Matrix> = (0..4).map(|s| mixture(300, 12, 3, 0.4, s).0).collect();
    let mut with_bad = inputs.clone();
    with_bad.insert(2, Matrix::zeros(1, 12));
    for projector in [
        Projector::Pca(Pca::params().check().expect("params")),
        Projector::Tsne(
            Tsne::params()
                .iterations(120)
                .exaggeration_iterations(60)
                .check()
                .expect("params"),
        ),
    ] {
        let calls = Mutex::new(Vec::new());
        let out = project_batch(&projector, &with_bad, &|done| {
            calls.lock().expect("lock").push(done)
        });
        assert_eq!(out.len(), 5);
        assert!(out[2].is_err());
        let mut calls = calls.into_inner().expect("lock");
        calls.sort_unstable();
        assert_eq!(calls, vec![1, 2, 3, 4, 5]);
        for (i, m) in inputs.iter().enumerate() {
            let j = if i >= 2 { i + 1 } else { i };
            let alone = projector.fit(m).expect("fit");
            assert_eq!(out[j].as_ref().expect("fit"), &alone, "input {i}");
        }
    }
}

/// Reference values from scikit-learn 1.9.1 (`sklearn.manifold.trustworthiness`), produced once by:
///
/// ```python
/// import numpy as np
/// from sklearn.manifold import trustworthiness
/// n, d = 60, 5
/// i = np.arange(n)[:, None].astype(np.float64)
/// t = np.arange(d)[None, :].astype(np.float64)
/// X = np.sin(0.37 * i * (t + 1) + 0.11 * t).astype(np.float32)
/// E = np.stack([X[:, 0] + 0.5 * np.sin(1.3 * i[:, 0]), X[:, 1] + 0.5 * np.cos(0.7 * i[:, 0])],
///              axis=1).astype(np.float32)
/// for metric in ["euclidean", "cosine"]:
///     for k in [1, 5, 10]:
///         print(metric, k, trustworthiness(X.astype(np.float64), E.astype(np.float64),
///                                          n_neighbors=k, metric=metric))
/// ```
#[test]
fn trustworthiness_matches_scikit_learn() {
    let (n, d) = (60usize, 5usize);
    let mut x = Vec::with_capacity(n * d);
    let mut e = Vec::with_capacity(n * 2);
    for i in 0..n {
        for t in 0..d {
            x.push((0.37 * i as f64 * (t + 1) as f64 + 0.11 * t as f64).sin() as f32);
        }
    }
    for i in 0..n {
        let (x0, x1) = (x[i * d] as f64, x[i * d + 1] as f64);
        e.push((x0 + 0.5 * (1.3 * i as f64).sin()) as f32);
        e.push((x1 + 0.5 * (0.7 * i as f64).cos()) as f32);
    }
    let data = Matrix::from_vec(n, d, x).expect("shape");
    let emb = Matrix::from_vec(n, 2, e).expect("shape");
    let expected = [
        (Metric::Euclidean, 1, 0.8247126436781609),
        (Metric::Euclidean, 5, 0.7305128205128205),
        (Metric::Euclidean, 10, 0.7104868913857678),
        (Metric::Cosine, 1, 0.8204022988505747),
        (Metric::Cosine, 5, 0.7469230769230769),
        (Metric::Cosine, 10, 0.7180149812734082),
    ];
    for (metric, k, want) in expected {
        let got = trustworthiness(&data, &emb, k, metric).expect("t") as f64;
        assert!(
            (got - want).abs() < 1e-6,
            "{metric:?} k={k}: {got} vs scikit-learn {want}"
        );
    }
}

#[test]
fn sampled_quality_is_close_to_the_default_and_rejects_zero_queries() {
    use attn_project::{quality, quality_sampled};
    let (data, _) = common::mixture(6000, 16, 5, 1.0, 3);
    let emb = attn_project::Pca::params()
        .dims(2)
        .check()
        .unwrap()
        .fit(&data)
        .unwrap()
        .coords;
    let full = quality(&data, &emb, 10, attn_types::Metric::Euclidean).unwrap();
    let small = quality_sampled(&data, &emb, 10, attn_types::Metric::Euclidean, 1000).unwrap();
    assert!(
        (full.trustworthiness - small.trustworthiness).abs() < 0.02,
        "{full:?} vs {small:?}"
    );
    assert!(quality_sampled(&data, &emb, 10, attn_types::Metric::Euclidean, 0).is_err());
}
