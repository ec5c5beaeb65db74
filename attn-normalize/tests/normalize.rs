//! Behavioural tests of attn-normalize: attention invariance, scale recovery, errors, determinism.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns; a panic is the failure report

use attn_normalize::{NormalizeError, Normalizer, apply, key_translation};
use attn_types::{HeadId, HeadVectors, Matrix, NormalizationParams, TokenMeta, TokenTable};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn table(lens: &[usize]) -> TokenTable {
    let mut tokens = Vec::new();
    for (s, &len) in lens.iter().enumerate() {
        for p in 0..len {
            tokens.push(TokenMeta {
                seq_id: s as u32,
                position: p as u32,
                seq_len: len as u32,
                text: format!("t{p}"),
                is_special: false,
                patch: None,
                is_cls: false,
                offsets: None,
            });
        }
    }
    TokenTable { tokens }
}

fn head(n: usize, d: usize, q: Vec<f32>, k: Vec<f32>) -> HeadVectors {
    HeadVectors::new(
        HeadId::new(1, 2),
        Matrix::from_vec(n, d, q).unwrap(),
        Matrix::from_vec(n, d, k).unwrap(),
    )
    .unwrap()
}

fn random_head(rng: &mut ChaCha8Rng, n: usize, d: usize, q_scale: f32, k_scale: f32) -> HeadVectors {
    let q = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0) * q_scale).collect();
    let k = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0) * k_scale + 0.7).collect();
    head(n, d, q, k)
}

/// Clustered head: tokens in `groups` clusters; queries and keys of one cluster attend to each
/// other. Queries have norm ~`a`, keys ~`b` around an offset.
fn clustered_head(rng: &mut ChaCha8Rng, n: usize, d: usize, groups: usize, a: f32, b: f32) -> HeadVectors {
    let (mut q, mut k) = (Vec::new(), Vec::new());
    for i in 0..n {
        let g = i % groups;
        for c in 0..d {
            let base = if c == g { 1.0 } else { 0.0 };
            q.push(a * (base + 0.3 * rng.random_range(-1.0f32..1.0)));
            k.push(b * (base + 0.3 * rng.random_range(-1.0f32..1.0)) + 2.0);
        }
    }
    head(n, d, q, k)
}

/// Row-wise softmax of `q k^T / sqrt(d)` within each sequence, in f64.
fn attention(v: &HeadVectors, tokens: &TokenTable, causal: bool) -> Vec<Vec<f64>> {
    let d = v.dim();
    let mut rows = Vec::new();
    for span in tokens.sequences() {
        for (p, i) in span.range().enumerate() {
            let visible = if causal { p + 1 } else { span.len };
            let logits: Vec<f64> = (span.start..span.start + visible)
                .map(|j| {
                    v.queries
                        .row(i)
                        .iter()
                        .zip(v.keys.row(j))
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>()
                        / (d as f64).sqrt()
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
            let z: f64 = e.iter().sum();
            rows.push(e.iter().map(|x| x / z).collect());
        }
    }
    rows
}

/// The scale objective of `v` normalized with scale `c` through the public API only.
fn objective_at(v: &HeadVectors, tokens: &TokenTable, c: f32, translate: bool, near: f32) -> f32 {
    let params = NormalizationParams {
        key_translation: if translate { key_translation(v, c) } else { Vec::new() },
        scale: c,
    };
    let n = Normalizer::params().near_percentile(near).check().unwrap();
    n.weighted_correlation(&apply(v, &params).unwrap(), tokens).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn attention_is_unchanged(
        lens in prop::collection::vec(1usize..7, 1..4),
        d in 1usize..8,
        seed in any::<u64>(),
        translate in any::<bool>(),
        scale in any::<bool>(),
        causal in any::<bool>(),
        q_scale in 0.1f32..3.0,
    ) {
        let tokens = table(&lens);
        let n = tokens.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v = random_head(&mut rng, n, d, q_scale, 1.0);
        let norm = Normalizer::params().translate(translate).scale(scale).causal(causal).check().unwrap();
        match norm.normalize(&v, &tokens) {
            Err(NormalizeError::NoPairs { .. }) => {
                let max_len = lens.iter().copied().max().unwrap_or(0);
                prop_assert!(max_len < 2, "NoPairs although a sequence has {max_len} tokens");
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
            Ok(out) => {
                let before = attention(&v, &tokens, causal);
                let after = attention(&out.vectors, &tokens, causal);
                for (rb, ra) in before.iter().zip(&after) {
                    for (x, y) in rb.iter().zip(ra) {
                        prop_assert!((x - y).abs() < 1e-5, "attention {x} became {y}");
                    }
                }
                prop_assert!(out.params.scale > 0.0);
                if !scale {
                    prop_assert_eq!(out.params.scale, 1.0);
                }
                if translate {
                    // Centroids coincide after normalization.
                    let mean = |m: &Matrix, c: usize| m.iter_rows().map(|r| f64::from(r[c])).sum::<f64>() / n as f64;
                    for c in 0..d {
                        let (mq, mk) = (mean(&out.vectors.queries, c), mean(&out.vectors.keys, c));
                        prop_assert!((mq - mk).abs() < 1e-4 * (1.0 + mq.abs()), "centroid {c}: {mq} vs {mk}");
                    }
                } else {
                    prop_assert!(out.params.key_translation.is_empty());
                }
                prop_assert_eq!(apply(&v, &out.params).unwrap(), out.vectors);
            }
        }
    }
}

#[test]
fn recovers_the_scale_of_a_mirrored_head() {
    // Keys mirror the (centred) queries, k = b x + m, q = a x with mean(x) = 0. Then the objective
    // satisfies r(c) = r(c0^2 / c) with c0 = sqrt(b / a) (distances of (i, j) at c equal those of
    // (j, i) at c0^2 / c, and the centred logits are symmetric): the optimum is c0 or a mirror pair
    // around it.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (n, d, groups) = (48, 12, 4);
    let mut x: Vec<f32> = Vec::new();
    for i in 0..n {
        for c in 0..d {
            x.push(if c == i % groups { 1.0 } else { 0.0 } + 0.3 * rng.random_range(-1.0f32..1.0));
        }
    }
    for c in 0..d {
        let m = (0..n).map(|i| x[i * d + c]).sum::<f32>() / n as f32;
        (0..n).for_each(|i| x[i * d + c] -= m);
    }
    let tokens = table(&[n]);
    for (a, b) in [(4.0f32, 0.5f32), (0.3, 2.0), (1.0, 1.0)] {
        let q = x.iter().map(|v| a * v).collect();
        let k = x.iter().enumerate().map(|(i, v)| b * v + 1.5 - (i % d) as f32 * 0.2).collect();
        let v = head(n, d, q, k);
        let c0 = (b / a).sqrt();
        // The symmetry itself, through the public API.
        for delta in [0.2f32, 0.7, 1.3] {
            let lo = objective_at(&v, &tokens, c0 * (-delta).exp(), true, 80.0);
            let hi = objective_at(&v, &tokens, c0 * delta.exp(), true, 80.0);
            assert!((lo - hi).abs() < 2e-4, "a={a} b={b} delta={delta}: {lo} vs {hi}");
        }
        let out = Normalizer::params().check().unwrap().normalize(&v, &tokens).unwrap();
        // The minimizers come in mirror pairs (c, c0^2 / c); with this data the curve has a shallow
        // dip on each side of c0, so the optimizer must land close to c0, on either side, with the
        // mirror scale scoring the same.
        let c = out.params.scale;
        let err = (c / c0).ln().abs();
        assert!(err < 0.15, "a={a} b={b}: found c={c} expected about {c0}");
        let r = out.diagnostics.weighted_corr_after;
        assert!(r <= objective_at(&v, &tokens, c0, true, 80.0) + 1e-5);
        assert!((objective_at(&v, &tokens, c0 * c0 / c, true, 80.0) - r).abs() < 2e-4);
        // Balanced norms after normalization.
        let mean = |m: &Matrix| m.row_norms().iter().sum::<f32>() / n as f32;
        let ratio = mean(&out.vectors.queries) / mean(&out.vectors.keys);
        assert!(out.diagnostics.weighted_corr_after <= out.diagnostics.weighted_corr_before + 1e-6);
        assert!(out.diagnostics.weighted_corr_after < -0.3, "{:?}", out.diagnostics);
        assert!((0.3..3.0).contains(&ratio), "a={a} b={b}: norm ratio {ratio}");
    }
}

#[test]
fn optimizer_finds_the_global_optimum_of_a_fine_scan() {
    for (seed, causal, a, b) in [(1u64, false, 5.0f32, 0.4f32), (2, true, 0.5, 3.0), (3, false, 1.0, 1.0)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let lens = [9, 14, 7, 12, 10];
        let tokens = table(&lens);
        let v = clustered_head(&mut rng, tokens.len(), 10, 5, a, b);
        let out = Normalizer::params().causal(causal).check().unwrap().normalize(&v, &tokens).unwrap();
        // Fine scan of the same objective, evaluated on `apply`-ed vectors.
        let steps = 1200;
        let (lo, hi) = (0.05f32.ln(), 20f32.ln());
        let norm = Normalizer::params().causal(causal).check().unwrap();
        let mut best = (f32::INFINITY, 0.0f32);
        for s in 0..=steps {
            let c = (lo + (hi - lo) * s as f32 / steps as f32).exp();
            let params = NormalizationParams { key_translation: key_translation(&v, c), scale: c };
            let r = norm.weighted_correlation(&apply(&v, &params).unwrap(), &tokens).unwrap();
            if r < best.0 {
                best = (r, c);
            }
        }
        let found = out.diagnostics.weighted_corr_after;
        assert!(found <= best.0 + 1e-3, "seed {seed}: optimizer {found} at c={} vs scan {} at c={}", out.params.scale, best.0, best.1);
        assert!(found < out.diagnostics.weighted_corr_before || found < -0.5, "{:?}", out.diagnostics);
    }
}

#[test]
fn clustered_heads_get_balanced_scales() {
    // Queries and keys of a cluster share a direction; query spread ~a, key spread ~b (noise
    // independent, so no exact symmetry). The clouds overlap best at c = sqrt(b / a).
    for (seed, a, b) in [(3u64, 1.0f32, 1.0f32), (1, 5.0, 0.4), (2, 0.5, 3.0), (4, 8.0, 0.25)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tokens = table(&[9, 14, 7, 12, 10]);
        let v = clustered_head(&mut rng, tokens.len(), 10, 5, a, b);
        let out = Normalizer::params().check().unwrap().normalize(&v, &tokens).unwrap();
        let c0 = (b / a).sqrt();
        assert!((out.params.scale / c0).ln().abs() < 0.35, "a={a} b={b}: c={} vs {c0}", out.params.scale);
        // Distance tracks attention better after normalization.
        let dg = out.diagnostics;
        assert!(dg.spearman_euclidean_after < dg.spearman_euclidean_before.min(-0.7), "{dg:?}");
    }
}

#[test]
fn scale_is_equivariant() {
    // Feeding (alpha q, k / alpha) must give c / alpha: the objective only sees c * alpha.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let tokens = table(&[20, 15, 25]);
    let v = clustered_head(&mut rng, tokens.len(), 8, 4, 3.0, 0.5);
    let norm = Normalizer::params().check().unwrap();
    let base = norm.normalize(&v, &tokens).unwrap().params.scale;
    for alpha in [0.5f32, 2.0] {
        let w = apply(&v, &NormalizationParams { key_translation: Vec::new(), scale: alpha }).unwrap();
        let c = norm.normalize(&w, &tokens).unwrap().params.scale;
        assert!(((c * alpha) / base).ln().abs() < 0.02, "alpha {alpha}: {c} * alpha vs {base}");
    }
}

#[test]
fn pair_counts_follow_sequences_and_causality() {
    let tokens = table(&[1, 4, 3]);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let v = random_head(&mut rng, 8, 3, 1.0, 1.0);
    let bi = Normalizer::params().check().unwrap().normalize(&v, &tokens).unwrap();
    assert_eq!(bi.diagnostics.pairs, 16 + 9);
    let ca = Normalizer::params().causal(true).check().unwrap().normalize(&v, &tokens).unwrap();
    // Causal: positions 1.. of each sequence see p + 1 keys: (2+3+4) + (2+3).
    assert_eq!(ca.diagnostics.pairs, 9 + 5);
}

#[test]
fn subsampling_is_capped_and_deterministic() {
    let tokens = table(&[300]);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let v = clustered_head(&mut rng, 300, 6, 3, 2.0, 1.0);
    let run = |seed: u64| {
        Normalizer::params().max_pairs(5000).seed(seed).check().unwrap().normalize(&v, &tokens).unwrap()
    };
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(a, b);
    let p = a.diagnostics.pairs;
    assert!((4000..6000).contains(&p), "{p} pairs for a cap of 5000");
    assert_ne!(a.diagnostics, c.diagnostics);
}

#[test]
fn same_result_for_any_thread_count() {
    let tokens = table(&[12, 30, 18]);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let heads: Vec<HeadVectors> = (0..6)
        .map(|h| {
            let mut v = clustered_head(&mut rng, 60, 8, 3, 1.0 + h as f32, 0.5);
            v.head = HeadId::new(0, h);
            v
        })
        .collect();
    let norm = Normalizer::params().max_pairs(1000).check().unwrap();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| norm.normalize_many(&heads, &tokens))
    };
    let one = run(1);
    assert_eq!(one, run(4));
    for (h, r) in heads.iter().zip(&one) {
        assert_eq!(r.as_ref().unwrap().vectors.head, h.head);
        assert_eq!(r.as_ref().unwrap(), &norm.normalize(h, &tokens).unwrap());
    }
}

#[test]
fn diagnostics_have_the_documented_meaning() {
    let tokens = table(&[10, 10]);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let v = clustered_head(&mut rng, 20, 6, 3, 4.0, 0.5);
    let norm = Normalizer::params().check().unwrap();
    let out = norm.normalize(&v, &tokens).unwrap();
    let dg = out.diagnostics;
    let mean = |m: &Matrix| m.row_norms().iter().sum::<f32>() / 20.0;
    assert!((dg.norm_gap - (mean(&v.queries) - mean(&v.keys))).abs() < 1e-4);
    assert_eq!(dg, norm.diagnostics(&v, &out.vectors, &tokens).unwrap());
    assert_eq!(dg.weighted_corr_before, norm.weighted_correlation(&v, &tokens).unwrap());
    // Spearman before, recomputed by hand from the documented pair set (all pairs in a sequence).
    let (mut dist, mut dots) = (Vec::new(), Vec::new());
    for s in tokens.sequences() {
        for i in s.range() {
            for j in s.range() {
                let (q, k) = (v.queries.row(i), v.keys.row(j));
                dots.push(q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>());
                dist.push(q.iter().zip(k).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt());
            }
        }
    }
    let r = attn_normalize::spearman(&dist, &dots);
    assert!((r - dg.spearman_euclidean_before).abs() < 1e-3, "{r} vs {}", dg.spearman_euclidean_before);
    for x in [dg.spearman_cosine_after, dg.spearman_euclidean_after, dg.spearman_cosine_before] {
        assert!((-1.0..=1.0).contains(&x));
    }
}

#[test]
fn bad_inputs_give_typed_errors() {
    let norm = Normalizer::params().check().unwrap();
    let tokens = table(&[3]);
    let good = head(3, 2, vec![1.0; 6], vec![0.5; 6]);

    let empty = head(0, 2, vec![], vec![]);
    assert!(matches!(norm.normalize(&empty, &table(&[])), Err(NormalizeError::EmptyHead { rows: 0, .. })));

    let mut nan = good.clone();
    nan.keys.row_mut(2)[1] = f32::NAN;
    match norm.normalize(&nan, &tokens) {
        Err(NormalizeError::NonFinite { head, matrix: "keys", row: 2, .. }) => assert_eq!(head, HeadId::new(1, 2)),
        other => panic!("{other:?}"),
    }
    let mut inf = good.clone();
    inf.queries.row_mut(1)[0] = f32::INFINITY;
    assert!(matches!(norm.normalize(&inf, &tokens), Err(NormalizeError::NonFinite { matrix: "queries", row: 1, .. })));

    let mut rows = good.clone();
    rows.keys = Matrix::zeros(2, 2);
    assert!(matches!(norm.normalize(&rows, &tokens), Err(NormalizeError::DimMismatch { what: "key rows vs query rows", expected: 3, found: 2, .. })));
    let mut cols = good.clone();
    cols.keys = Matrix::zeros(3, 3);
    assert!(matches!(norm.normalize(&cols, &tokens), Err(NormalizeError::DimMismatch { what: "key dim vs query dim", .. })));
    assert!(matches!(norm.normalize(&good, &table(&[4])), Err(NormalizeError::DimMismatch { what: "query rows vs token count", expected: 4, found: 3, .. })));

    let singles = table(&[1, 1, 1]);
    assert!(matches!(norm.normalize(&good, &singles), Err(NormalizeError::NoPairs { tokens: 3, sequences: 3, .. })));
    let causal = Normalizer::params().causal(true).check().unwrap();
    assert!(matches!(causal.normalize(&good, &singles), Err(NormalizeError::NoPairs { .. })));
    assert!(norm.normalize_many(&[good.clone(), nan], &tokens).iter().map(Result::is_ok).eq([true, false]));

    for (params, name) in [
        (Normalizer::params().near_percentile(0.0), "near_percentile"),
        (Normalizer::params().near_percentile(100.5), "near_percentile"),
        (Normalizer::params().near_percentile(f32::NAN), "near_percentile"),
        (Normalizer::params().max_pairs(1), "max_pairs"),
        (Normalizer::params().scale_range(2.0, 1.0), "scale_range"),
        (Normalizer::params().scale_range(0.0, 1.0), "scale_range"),
    ] {
        match params.check() {
            Err(NormalizeError::InvalidParam { param, .. }) => assert_eq!(param, name),
            other => panic!("{name}: {other:?}"),
        }
    }

    let bad_t = NormalizationParams { key_translation: vec![0.0; 3], scale: 1.0 };
    assert!(matches!(apply(&good, &bad_t), Err(NormalizeError::DimMismatch { what: "key translation length vs head dim", .. })));
    for c in [0.0, -1.0, f32::NAN] {
        let p = NormalizationParams { key_translation: vec![], scale: c };
        assert!(matches!(apply(&good, &p), Err(NormalizeError::InvalidParam { param: "scale", .. })));
    }
    // Error messages name the head.
    let msg = norm.normalize(&good, &singles).unwrap_err().to_string();
    assert!(msg.contains("L1H2"), "{msg}");
}
