use super::sgd::fast_pow;
use super::*;
use rand_distr::{Distribution, Normal};

/// `clusters` Gaussian blobs in `dim` dims, centres at distance ~`sep`, unit noise.
fn mixture(n: usize, clusters: usize, dim: usize, sep: f32, seed: u64) -> (Matrix, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| normal.sample(&mut rng) * sep).collect())
        .collect();
    let mut data = Vec::with_capacity(n * dim);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % clusters;
        labels.push(c);
        data.extend(centres[c].iter().map(|m| m + normal.sample(&mut rng)));
    }
    (Matrix::from_vec(n, dim, data).unwrap(), labels)
}

#[test]
fn fast_pow_matches_powf() {
    for &b in &[0.5f32, 0.8951, 1.0, 1.334, 1.9] {
        let mut x = 1e-6f32;
        while x < 1e6 {
            let (want, got) = (x.powf(b), fast_pow(x, b));
            assert!(
                ((got - want) / want).abs() < 1e-5,
                "{x}^{b}: {got} vs {want}"
            );
            x *= 1.37;
        }
    }
}

#[test]
fn ab_params_match_umap_learn() {
    // umap-learn's find_ab_params(1.0, 0.1) = (1.5769, 0.8951).
    let (a, b) = find_ab_params(1.0, 0.1);
    assert!((a - 1.577).abs() < 0.005, "a = {a}");
    assert!((b - 0.895).abs() < 0.003, "b = {b}");
    // umap-learn's find_ab_params(1.0, 0.5) = (0.5830, 1.3343): a different regime.
    let (a, b) = find_ab_params(1.0, 0.5);
    assert!((a - 0.583).abs() < 0.01, "a = {a}");
    assert!((b - 1.334).abs() < 0.01, "b = {b}");
    let v = Umap::params().check().unwrap();
    assert!((v.a() - 1.577).abs() < 0.005 && (v.b() - 0.895).abs() < 0.003);
}

#[test]
fn bad_params_are_typed_errors() {
    let name = |r: Result<UmapValidParams, ProjectError>| match r {
        Err(ProjectError::InvalidParam { name, .. }) => name,
        other => panic!("expected InvalidParam, got {other:?}"),
    };
    assert_eq!(name(Umap::params().dims(1).check()), "dims");
    assert_eq!(name(Umap::params().dims(4).check()), "dims");
    assert_eq!(
        name(Umap::params().min_dist(1.5).spread(1.0).check()),
        "min_dist"
    );
    assert_eq!(name(Umap::params().min_dist(f32::NAN).check()), "min_dist");
    assert_eq!(name(Umap::params().spread(0.0).check()), "spread");
    assert_eq!(name(Umap::params().n_neighbors(1).check()), "n_neighbors");
    assert_eq!(name(Umap::params().n_epochs(Some(0)).check()), "n_epochs");
    assert_eq!(
        name(Umap::params().learning_rate(-1.0).check()),
        "learning_rate"
    );

    let (data, _) = mixture(20, 2, 4, 5.0, 1);
    let v = Umap::params().n_neighbors(20).check().unwrap();
    assert!(matches!(
        v.fit(&data),
        Err(ProjectError::InvalidParam {
            name: "n_neighbors",
            ..
        })
    ));
    let mut nan = data.clone();
    nan.row_mut(3)[1] = f32::NAN;
    let v = Umap::params().n_neighbors(5).check().unwrap();
    assert!(matches!(v.fit(&nan), Err(ProjectError::InvalidInput(_))));
    // A graph with too few neighbours is refused, not indexed out of bounds.
    let g = KnnGraph {
        n: 20,
        k: 2,
        metric: Metric::Cosine,
        indices: (0..40).map(|e| ((e / 2 + 1 + e % 2) % 20) as u32).collect(),
        distances: vec![0.5; 40],
    };
    assert!(matches!(
        v.fit_knn(&data, &g),
        Err(ProjectError::InvalidInput(_))
    ));
}

#[test]
fn tiny_and_degenerate_inputs_give_finite_layouts() {
    // Three points, the smallest valid n_neighbors, both metrics, all inits.
    let tiny = Matrix::from_rows(&[[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]]).unwrap();
    // Forty identical rows plus a zero row: zero distances everywhere, rho = 0.
    let mut rows = vec![[0.5f32, -0.25, 2.0]; 40];
    rows.push([0.0, 0.0, 0.0]);
    let dup = Matrix::from_rows(&rows).unwrap();
    for (data, k) in [(&tiny, 2), (&dup, 5)] {
        for metric in [Metric::Cosine, Metric::Euclidean] {
            for init in [UmapInit::Spectral, UmapInit::Pca, UmapInit::Random] {
                for dims in [2, 3] {
                    let e = Umap::params()
                        .n_neighbors(k)
                        .metric(metric)
                        .init(init)
                        .dims(dims)
                        .n_epochs(Some(50))
                        .check()
                        .unwrap()
                        .fit(data)
                        .unwrap();
                    assert_eq!(e.coords.shape(), (data.rows(), dims as usize));
                    assert!(
                        e.coords.as_slice().iter().all(|v| v.is_finite()),
                        "{metric:?} {init:?} {dims}"
                    );
                }
            }
        }
    }
}

#[test]
fn identical_output_on_one_and_two_threads() {
    let (data, _) = mixture(600, 4, 16, 3.0, 7);
    for (dims, init) in [(2, UmapInit::Spectral), (3, UmapInit::Random)] {
        let v = Umap::params()
            .dims(dims)
            .init(init)
            .seed(42)
            .n_epochs(Some(100))
            .check()
            .unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| v.fit(&data).unwrap())
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one.coords.shape(), (600, dims as usize));
        let bits = |e: &Embedding| {
            e.coords
                .as_slice()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&one), bits(&two), "dims {dims} init {init:?}");
        // A different seed must change the layout (the seed is really used).
        let other = Umap::params()
            .dims(dims)
            .init(init)
            .seed(43)
            .n_epochs(Some(100))
            .check()
            .unwrap();
        assert_ne!(bits(&one), bits(&other.fit(&data).unwrap()));
    }
}

#[test]
fn mixture_is_embedded_trustworthily() {
    let (data, labels) = mixture(2000, 10, 64, 1.0, 3);
    for init in [UmapInit::Spectral, UmapInit::Pca, UmapInit::Random] {
        let v = Umap::params().seed(1).init(init).check().unwrap();
        let emb = v.fit(&data).unwrap();
        assert_eq!(emb.spec.method, ProjectionMethod::Umap);
        assert!(emb.coords.as_slice().iter().all(|x| x.is_finite()));
        let t = crate::metrics::trustworthiness(&data, &emb.coords, 10, Metric::Cosine).unwrap();
        // Majority label of each point's 10 embedded neighbours: clusters must stay separated.
        let lo = crate::knn::exact_knn(&emb.coords, 10, Metric::Euclidean).unwrap();
        let same = (0..2000)
            .map(|i| {
                lo.neighbors(i)
                    .iter()
                    .filter(|&&j| labels[j as usize] == labels[i])
                    .count()
            })
            .sum::<usize>() as f64
            / 20000.0;
        eprintln!(
            "init {init:?}: trustworthiness@10 = {t:.4}, same-cluster neighbours = {same:.4}"
        );
        // Measured 0.963-0.964 for all three inits (seed 1); a collapsed or scrambled layout scores
        // ~0.5-0.8, and a 0.01 margin absorbs seed-to-seed variation.
        assert!(t > 0.95, "init {init:?}: trustworthiness {t}");
        assert!(same > 0.99, "init {init:?}: same-cluster fraction {same}");
    }
}

mod attention {
    use attn_types::{Matrix, Metric};

    use crate::attention::synthetic::head;
    use crate::{AttentionEdges, ProjectError, Umap, knn};

    fn bits(m: &Matrix) -> Vec<u32> {
        m.as_slice().iter().map(|v| v.to_bits()).collect()
    }

    use crate::test_support::fidelity_scores as scores;

    #[test]
    fn zero_weight_or_no_edges_is_bit_identical_to_fit_knn() {
        let h = head(400, false, 3);
        let joint = h.joint();
        let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, false).unwrap();
        let none = AttentionEdges::from_attention(&h.tokens, &[], false).unwrap();
        // A graph with more neighbours than UMAP needs, as when shared with t-SNE.
        let graph = knn(&joint, 90, Metric::Cosine, 0).unwrap();
        let params = || Umap::params().n_epochs(Some(100)).seed(5);
        let plain = params().check().unwrap().fit_knn(&joint, &graph).unwrap();
        assert_eq!(plain.spec.params["attention_weight"], 0.0);
        let zero = params()
            .attention_weight(0.0)
            .check()
            .unwrap()
            .fit_knn_with_attention(&joint, &graph, &edges)
            .unwrap();
        assert_eq!(bits(&zero.coords), bits(&plain.coords));
        assert_eq!(zero, plain);
        let mixed = params().attention_weight(0.1).check().unwrap();
        assert_eq!(
            mixed.fit_knn_with_attention(&joint, &graph, &none).unwrap(),
            plain
        );
        assert_eq!(mixed.fit_knn(&joint, &graph).unwrap(), plain);
        assert_eq!(
            bits(&mixed.fit(&joint).unwrap().coords),
            bits(&params().check().unwrap().fit(&joint).unwrap().coords)
        );
        let with = mixed
            .fit_knn_with_attention(&joint, &graph, &edges)
            .unwrap();
        assert_ne!(bits(&with.coords), bits(&plain.coords));
        assert_eq!(with.spec.params["attention_weight"], 0.1f32 as f64);
        assert_eq!(mixed.fit_with_attention(&joint, &edges).unwrap(), with);
    }

    #[test]
    fn attention_raises_hit_at_3_and_fidelity() {
        for (causal, seed) in [(false, 11), (true, 12)] {
            let h = head(600, causal, seed);
            let joint = h.joint();
            let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, causal).unwrap();
            let fit = |w: f32| {
                let emb = Umap::params()
                    .attention_weight(w)
                    .check()
                    .unwrap()
                    .fit_with_attention(&joint, &edges)
                    .unwrap();
                let trust =
                    crate::trustworthiness(&joint, &emb.coords, 10, Metric::Cosine).unwrap();
                let (hit, fid) = scores(&h, &emb.coords, causal);
                eprintln!(
                    "causal {causal}, w {w}: hit@3 {hit:.3}, fidelity {fid:.3}, trust {trust:.4}"
                );
                (hit, fid, trust)
            };
            let (hit0, fid0, trust0) = fit(0.0);
            let (hit, fid, trust) = fit(0.1);
            assert!(
                hit > hit0 + MARGIN_HIT,
                "causal {causal}: hit@3 {hit0} -> {hit}"
            );
            assert!(
                fid > fid0 + MARGIN_FID,
                "causal {causal}: fidelity {fid0} -> {fid}"
            );
            assert!(
                trust > trust0 - 0.02,
                "causal {causal}: trust {trust0} -> {trust}"
            );
        }
    }
    // Measured at w = 0.1 (plain -> attention-aware, 1,200 points): hit@3 0.625 -> 0.756 and
    // 0.768 -> 0.859, fidelity 0.581 -> 0.628 and 0.623 -> 0.678, trustworthiness@10 -0.003
    // and -0.009 (exact, all points; on 10k-point heads the cost is smaller, see the README).
    const MARGIN_HIT: f32 = 0.05;
    const MARGIN_FID: f32 = 0.02;

    #[test]
    fn the_per_query_term_orders_each_querys_keys() {
        // The edges alone pull a query toward its keys; the term also orders them.
        crate::test_support::assert_the_term_orders_keys(
            |joint, edges, lambda| {
                Umap::params()
                    .attention_weight(0.1)
                    .attention_kl(lambda)
                    .check()
                    .unwrap()
                    .fit_with_attention(joint, edges)
                    .unwrap()
            },
            KL_TEST_LAMBDA,
            KL_MARGIN_HIT,
            KL_MARGIN_FID,
        );
    }
    // Measured at lambda 3 (off -> on): hit@3 0.756 -> 0.854 and 0.859 -> 0.932, fidelity 0.628 ->
    // 0.646 and 0.678 -> 0.729, trustworthiness@10 -0.011 and -0.011.
    const KL_TEST_LAMBDA: f32 = 3.0;
    const KL_MARGIN_HIT: f32 = 0.05;
    const KL_MARGIN_FID: f32 = 0.005;

    #[test]
    fn invalid_weight_and_mismatched_edges_are_errors() {
        for w in [-0.1f32, 1.0, 1.5, f32::NAN, f32::INFINITY] {
            assert!(
                matches!(
                    Umap::params().attention_weight(w).check(),
                    Err(ProjectError::InvalidParam {
                        name: "attention_weight",
                        ..
                    })
                ),
                "{w}"
            );
        }
        let h = head(60, false, 1);
        let joint = h.joint();
        let other = head(80, false, 2);
        let edges = AttentionEdges::from_attention(&other.tokens, &other.attention, false).unwrap();
        let p = Umap::params().attention_weight(0.1).check().unwrap();
        let graph = knn(&joint, 30, Metric::Cosine, 0).unwrap();
        assert!(matches!(
            p.fit_knn_with_attention(&joint, &graph, &edges),
            Err(ProjectError::InvalidInput(_))
        ));
        assert!(matches!(
            p.fit_with_attention(&joint, &edges),
            Err(ProjectError::InvalidInput(_))
        ));
    }

    #[test]
    fn same_output_on_one_and_three_threads() {
        let h = head(400, true, 4);
        let joint = h.joint();
        let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, true).unwrap();
        // At w = 0.6 attention edges are heavier than the heaviest kNN edge, so they are due
        // several times per epoch: that path is covered too.
        let graph = knn(&joint, 14, Metric::Cosine, 0).unwrap();
        let fuzzy = super::super::fuzzy_simplicial_set(&graph, 14, 15);
        let wmax = super::super::max_weight(&fuzzy);
        let mixed = super::super::mix_attention(&fuzzy, &edges, 0.6);
        assert!(super::super::max_weight(&mixed) > 1.5 * wmax);
        for dims in [2u8, 3] {
            let p = Umap::params()
                .dims(dims)
                .attention_weight(0.6)
                .attention_kl(1.0)
                .n_epochs(Some(100))
                .seed(9)
                .check()
                .unwrap();
            let run = |threads: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| p.fit_with_attention(&joint, &edges).unwrap())
            };
            let (one, three) = (run(1), run(3));
            assert_eq!(bits(&one.coords), bits(&three.coords), "{dims}D");
            assert_eq!(one, three);
        }
    }
}
