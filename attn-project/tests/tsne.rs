//! t-SNE: quality on a Gaussian mixture, determinism across thread counts, input handling.

mod common;

use attn_project::{
    KnnGraph, ProjectError, Repulsion, Tsne, TsneInit, approximate_knn, exact_knn, trustworthiness,
};
use attn_types::{Matrix, Metric, ProjectionMethod};
use common::{mixture, nn_label_agreement, uniform, with_threads};

#[test]
fn mixture_2d_and_3d_quality() {
    // 10 well-separated clusters of 200 points in 64 dims. Measured T@10 is ~0.96-0.97 in 2D and
    // 3D (clusters are isotropic noise, so within-cluster ranks are partly arbitrary); 0.93 leaves
    // room for platform differences while catching a broken gradient (random layouts give ~0.5).
    let (data, labels) = mixture(2000, 64, 10, 0.3, 7);
    for dims in [2u8, 3] {
        let emb = Tsne::params()
            .dims(dims)
            .seed(1)
            .check()
            .expect("params")
            .fit(&data)
            .expect("fit");
        assert_eq!(emb.coords.shape(), (2000, dims as usize));
        assert_eq!(emb.spec.method, ProjectionMethod::Tsne);
        let t = trustworthiness(&data, &emb.coords, 10, Metric::Cosine).expect("trust");
        assert!(t > 0.93, "{dims}D trustworthiness {t}");
        let agree = nn_label_agreement(&emb.coords, &labels);
        assert!(
            agree > 0.99,
            "{dims}D nearest-neighbour label agreement {agree}"
        );
        let kl = emb.objective.expect("kl");
        assert!(kl.is_finite() && kl > 0.0 && kl < 3.0, "KL {kl}");
    }
}

#[test]
fn all_repulsion_methods_agree_on_quality() {
    let (data, labels) = mixture(1200, 32, 6, 0.3, 3);
    let mut kls = Vec::new();
    for rep in [Repulsion::Exact, Repulsion::BarnesHut, Repulsion::Fft] {
        let emb = Tsne::params()
            .repulsion(rep)
            .check()
            .expect("params")
            .fit(&data)
            .expect("fit");
        let t = trustworthiness(&data, &emb.coords, 10, Metric::Cosine).expect("trust");
        assert!(t > 0.93, "{rep:?}: {t}");
        assert!(nn_label_agreement(&emb.coords, &labels) > 0.99, "{rep:?}");
        kls.push(emb.objective.expect("kl"));
    }
    // The approximate normalizations must give nearly the exact objective.
    for kl in &kls[1..] {
        assert!((kl - kls[0]).abs() < 0.05 * kls[0], "{kls:?}");
    }
}

fn bits(m: &Matrix) -> Vec<u32> {
    m.as_slice().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn same_seed_is_bit_identical_across_thread_counts() {
    let (data, _) = mixture(1500, 20, 5, 0.4, 2);
    let cases = [
        (2u8, Repulsion::BarnesHut, TsneInit::Pca),
        (2, Repulsion::Fft, TsneInit::Random),
        (2, Repulsion::Exact, TsneInit::Pca),
        (3, Repulsion::BarnesHut, TsneInit::Random),
    ];
    for (dims, rep, init) in cases {
        let p = Tsne::params()
            .dims(dims)
            .repulsion(rep)
            .init(init)
            .iterations(300)
            .seed(42)
            .check()
            .expect("params");
        let a = with_threads(1, || p.fit(&data).expect("fit"));
        let b = with_threads(2, || p.fit(&data).expect("fit"));
        assert_eq!(bits(&a.coords), bits(&b.coords), "{dims}D {rep:?} {init:?}");
        assert_eq!(a.objective.map(f32::to_bits), b.objective.map(f32::to_bits));
    }
    // A different seed changes a random initialization.
    let p = |s| {
        Tsne::params()
            .init(TsneInit::Random)
            .iterations(50)
            .exaggeration_iterations(50)
            .seed(s)
            .check()
            .expect("params")
    };
    let a = p(1).fit(&data).expect("fit");
    let b = p(2).fit(&data).expect("fit");
    assert_ne!(bits(&a.coords), bits(&b.coords));
}

#[test]
fn fft_path_on_an_approximate_graph_is_thread_independent() {
    // The large-n path: NN-descent graph (as `knn` picks above EXACT_KNN_MAX_N) and FFT repulsion
    // (Auto from FFT_MIN_N points in 2D), bit-identical on 1 and 2 threads.
    let (data, labels) = mixture(6000, 16, 10, 0.3, 5);
    let p = Tsne::params()
        .iterations(200)
        .exaggeration_iterations(100)
        .check()
        .expect("params");
    let run = || {
        let g = approximate_knn(&data, p.neighbors_for(6000), Metric::Cosine, 3).expect("knn");
        p.fit_knn(&data, &g).expect("fit")
    };
    let a = with_threads(1, run);
    let b = with_threads(2, run);
    assert_eq!(bits(&a.coords), bits(&b.coords));
    assert_eq!(a.spec.params["repulsion"], 3.0);
    assert!(nn_label_agreement(&a.coords.slice_rows(0, 1000), &labels[..1000]) > 0.95);
}

#[test]
fn fit_knn_reuses_a_graph() {
    let (data, _) = mixture(600, 16, 4, 0.3, 1);
    let p = Tsne::params()
        .perplexity(10.0)
        .iterations(200)
        .exaggeration_iterations(100)
        .check()
        .expect("params");
    let g = exact_knn(&data, 30, Metric::Cosine).expect("knn");
    let a = p.fit_knn(&data, &g).expect("fit");
    let b = p.fit(&data).expect("fit");
    assert_eq!(a, b);
    // A graph with fewer neighbours clamps the perplexity to k / 3.
    let small = exact_knn(&data, 9, Metric::Cosine).expect("knn");
    let c = p.fit_knn(&data, &small).expect("fit");
    assert_eq!(c.spec.params["perplexity"], 3.0);
    assert_eq!(c.spec.params["n_neighbors"], 9.0);
    // A graph of another data set is rejected.
    let wrong = KnnGraph { n: 10, ..g.clone() };
    assert!(p.fit_knn(&data, &wrong).is_err());
    let mut looped = g;
    looped.indices[0] = 0;
    assert!(p.fit_knn(&data, &looped).is_err());
}

#[test]
fn invalid_parameters_are_typed_errors() {
    let cases: Vec<(attn_project::TsneParams, &str)> = vec![
        (Tsne::params().dims(4), "dims"),
        (Tsne::params().dims(1), "dims"),
        (Tsne::params().perplexity(0.0), "perplexity"),
        (Tsne::params().perplexity(f32::NAN), "perplexity"),
        (Tsne::params().iterations(0), "iterations"),
        (Tsne::params().iterations(100), "exaggeration_iterations"),
        (Tsne::params().early_exaggeration(0.5), "early_exaggeration"),
        (Tsne::params().learning_rate(Some(-1.0)), "learning_rate"),
        (Tsne::params().theta(-0.1), "theta"),
        (
            Tsne::params().dims(3).repulsion(Repulsion::Fft),
            "repulsion",
        ),
    ];
    for (p, name) in cases {
        match p.check() {
            Err(ProjectError::InvalidParam { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: expected an error, got {other:?}"),
        }
    }
}

#[test]
fn bad_and_degenerate_inputs() {
    let p = Tsne::params()
        .iterations(100)
        .exaggeration_iterations(50)
        .check()
        .expect("params");
    // Too few points.
    assert!(matches!(
        p.fit(&Matrix::zeros(1, 5)),
        Err(ProjectError::InvalidInput(_))
    ));
    assert!(matches!(
        p.fit(&Matrix::zeros(0, 5)),
        Err(ProjectError::InvalidInput(_))
    ));
    // Non-finite values name the row.
    let mut bad = uniform(30, 4, 1);
    bad.row_mut(17)[1] = f32::INFINITY;
    match p.fit(&bad) {
        Err(ProjectError::InvalidInput(msg)) => assert!(msg.contains("row 17"), "{msg}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // More output than input dimensions.
    let p3 = Tsne::params().dims(3).check().expect("params");
    assert!(matches!(
        p3.fit(&uniform(30, 2, 1)),
        Err(ProjectError::InvalidParam { name: "dims", .. })
    ));
    // Perplexity too large for n: clamped to (n - 1) / 3 and recorded.
    let emb = p.fit(&uniform(10, 4, 2)).expect("small fit");
    assert_eq!(emb.spec.params["perplexity"], 3.0);
    assert!(emb.coords.as_slice().iter().all(|v| v.is_finite()));
    // Two points.
    let emb = p.fit(&uniform(2, 3, 2)).expect("two points");
    assert!(emb.coords.as_slice().iter().all(|v| v.is_finite()));
    // Zero vectors under cosine (distance 1 to everything) and duplicate points.
    let mut data = uniform(200, 8, 3);
    for i in 0..5 {
        data.row_mut(i).iter_mut().for_each(|v| *v = 0.0);
    }
    for i in 100..150 {
        let copy = data.row(99).to_vec();
        data.row_mut(i).copy_from_slice(&copy);
    }
    for rep in [Repulsion::Exact, Repulsion::BarnesHut, Repulsion::Fft] {
        let q = Tsne::params()
            .repulsion(rep)
            .iterations(200)
            .exaggeration_iterations(100)
            .check()
            .expect("params");
        let emb = q.fit(&data).expect("degenerate fit");
        assert!(
            emb.coords.as_slice().iter().all(|v| v.is_finite()),
            "{rep:?}"
        );
        assert!(emb.objective.is_some_and(f32::is_finite));
    }
    // All points identical: still finite.
    let same = Matrix::from_vec(40, 3, [1.0f32, 2.0, 3.0].repeat(40)).expect("shape");
    let emb = p.fit(&same).expect("identical points");
    assert!(emb.coords.as_slice().iter().all(|v| v.is_finite()));
}

#[test]
fn huge_values_and_divergence_are_errors_not_nan() {
    let p = Tsne::params()
        .iterations(60)
        .exaggeration_iterations(30)
        .check()
        .expect("params");
    let mut data = uniform(40, 3, 4);
    data.row_mut(5)[0] = 1e20;
    match p.fit(&data) {
        Err(ProjectError::InvalidInput(msg)) => assert!(msg.contains("row 5"), "{msg}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // An absurd learning rate must not hand back NaN coordinates.
    let wild = Tsne::params()
        .learning_rate(Some(1e38))
        .iterations(60)
        .exaggeration_iterations(30)
        .check()
        .expect("params");
    match wild.fit(&uniform(40, 3, 4)) {
        Ok(emb) => assert!(emb.coords.as_slice().iter().all(|v| v.is_finite())),
        Err(e) => assert!(matches!(e, ProjectError::InvalidInput(_))),
    }
}
