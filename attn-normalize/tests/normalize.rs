//! Behavioural tests of attn-normalize: attention invariance, scale recovery, errors, determinism.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns; a panic is the failure report

use attn_normalize::{NormalizeError, Normalizer, apply, key_translation};
use attn_types::{HeadId, HeadVectors, Matrix, NormalizationParams, TokenTable};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn table(lens: &[usize]) -> TokenTable {
    TokenTable::placeholder(lens)
}

fn head(n: usize, d: usize, q: Vec<f32>, k: Vec<f32>) -> HeadVectors {
    HeadVectors::new(
        HeadId::new(1, 2),
        Matrix::from_vec(n, d, q).unwrap(),
        Matrix::from_vec(n, d, k).unwrap(),
    )
    .unwrap()
}

fn random_head(
    rng: &mut ChaCha8Rng,
    n: usize,
    d: usize,
    q_scale: f32,
    k_scale: f32,
) -> HeadVectors {
    let q = (0..n * d)
        .map(|_| rng.random_range(-1.0f32..1.0) * q_scale)
        .collect();
    let k = (0..n * d)
        .map(|_| rng.random_range(-1.0f32..1.0) * k_scale + 0.7)
        .collect();
    head(n, d, q, k)
}

/// Clustered head: tokens in `groups` clusters; queries and keys of one cluster attend to each
/// other. Queries have norm ~`a`, keys ~`b` around an offset.
fn clustered_head(
    rng: &mut ChaCha8Rng,
    n: usize,
    d: usize,
    groups: usize,
    a: f32,
    b: f32,
) -> HeadVectors {
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
                    v.queries()
                        .row(i)
                        .iter()
                        .zip(v.keys().row(j))
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

/// The scale objective of `v` normalized with scale `c` (translation on) through the public API only.
fn objective_at(v: &HeadVectors, tokens: &TokenTable, c: f32, causal: bool) -> f32 {
    let params = NormalizationParams {
        key_translation: key_translation(v, c),
        scale: c,
    };
    let n = Normalizer::params().causal(causal).check().unwrap();
    n.weighted_correlation(&apply(v, &params).unwrap(), tokens)
        .unwrap()
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
                        let (mq, mk) = (mean(out.vectors.queries(), c), mean(out.vectors.keys(), c));
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

/// A head whose optimum is known: keys lie on a sphere of radius `r` around `z`, and the query
/// centroid is `(mean(k) - z) / c0^2`. After translation and scaling by `c0`, every normalized key
/// has the same norm `r / c0`, so for each query `|q' - k'|^2 = |q'|^2 + r^2 / c0^2 - 2 q' . k'` is
/// a decreasing function of its logits: the per-query Spearman(Euclidean distance, logit) is
/// exactly -1 at `c0` and worse elsewhere (key norms then vary and distort each query's ranking).
fn sphere_head(
    rng: &mut ChaCha8Rng,
    lens: &[usize],
    d: usize,
    c0: f32,
) -> (HeadVectors, TokenTable) {
    let tokens = table(lens);
    let n = tokens.len();
    let (r, z): (f32, Vec<f32>) = (2.0, (0..d).map(|c| 0.3 * c as f32 - 1.0).collect());
    let mut k = Vec::with_capacity(n * d);
    for _ in 0..n {
        // Directions biased towards +x, so the key centroid is off the sphere's centre.
        let u: Vec<f32> = (0..d)
            .map(|c| rng.random_range(-1.0f32..1.0) + if c == 0 { 0.8 } else { 0.0 })
            .collect();
        let norm = u.iter().map(|x| x * x).sum::<f32>().sqrt();
        k.extend(u.iter().zip(&z).map(|(x, zc)| zc + r * x / norm));
    }
    let mk: Vec<f32> = (0..d)
        .map(|c| (0..n).map(|j| k[j * d + c]).sum::<f32>() / n as f32)
        .collect();
    let mut q: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    for c in 0..d {
        let m = (0..n).map(|i| q[i * d + c]).sum::<f32>() / n as f32;
        let target = (mk[c] - z[c]) / (c0 * c0);
        (0..n).for_each(|i| q[i * d + c] += target - m);
    }
    (head(n, d, q, k), tokens)
}

#[test]
fn recovers_a_known_optimal_scale() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for c0 in [0.4f32, 1.0, 2.5] {
        let (v, tokens) = sphere_head(&mut rng, &[30, 25, 40], 6, c0);
        let norm = Normalizer::params().flat_tolerance(0.0).check().unwrap();
        // The construction: Spearman after is -1 at c0.
        let at_c0 = apply(
            &v,
            &NormalizationParams {
                key_translation: key_translation(&v, c0),
                scale: c0,
            },
        )
        .unwrap();
        let dg0 = norm.diagnostics(&v, &at_c0, &tokens).unwrap();
        assert!(dg0.spearman_euclidean_after < -0.9999, "c0={c0}: {dg0:?}");
        let out = norm.normalize(&v, &tokens).unwrap();
        let c = out.params.scale;
        assert!((c / c0).ln().abs() < 0.1, "c0={c0}: found c={c}");
        assert!(
            out.diagnostics.spearman_euclidean_after < -0.99,
            "c0={c0}: {:?}",
            out.diagnostics
        );
        // Away from c0 the ranking is distorted.
        for f in [0.3f32, 3.0] {
            let cf = c0 * f;
            let w = apply(
                &v,
                &NormalizationParams {
                    key_translation: key_translation(&v, cf),
                    scale: cf,
                },
            )
            .unwrap();
            let dg = norm.diagnostics(&v, &w, &tokens).unwrap();
            assert!(
                dg.spearman_euclidean_after > dg0.spearman_euclidean_after + 1e-3,
                "c0={c0} c={cf}: {dg:?}"
            );
            assert!(
                dg.weighted_corr_after > out.diagnostics.weighted_corr_after,
                "c0={c0} c={cf}: {dg:?}"
            );
        }
    }
}

#[test]
fn optimizer_finds_the_global_optimum_of_a_fine_scan() {
    for (seed, causal, a, b) in [
        (1u64, false, 5.0f32, 0.4f32),
        (2, true, 0.5, 3.0),
        (3, false, 1.0, 1.0),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let lens = [9, 14, 7, 12, 10];
        let tokens = table(&lens);
        let v = clustered_head(&mut rng, tokens.len(), 10, 5, a, b);
        let strict = Normalizer::params()
            .causal(causal)
            .flat_tolerance(0.0)
            .check()
            .unwrap();
        let out = strict.normalize(&v, &tokens).unwrap();
        // Fine scan of the same objective, evaluated on `apply`-ed vectors.
        let steps = 1200;
        let (lo, hi) = (0.05f32.ln(), 20f32.ln());
        let mut best = (f32::INFINITY, 0.0f32);
        for s in 0..=steps {
            let c = (lo + (hi - lo) * s as f32 / steps as f32).exp();
            let r = objective_at(&v, &tokens, c, causal);
            if r < best.0 {
                best = (r, c);
            }
        }
        let found = out.diagnostics.weighted_corr_after;
        assert!(
            found <= best.0 + 1e-3,
            "seed {seed}: optimizer {found} at c={} vs scan {} at c={}",
            out.params.scale,
            best.0,
            best.1
        );
        assert!(found <= objective_at(&v, &tokens, 1.0, causal) + 1e-5);
        // With the default flatness tolerance: within it of the optimum, and no farther from c = 1.
        let eps = 0.002;
        let tol = Normalizer::params()
            .causal(causal)
            .check()
            .unwrap()
            .normalize(&v, &tokens)
            .unwrap();
        let (ct, cs) = (tol.params.scale, out.params.scale);
        assert!(
            tol.diagnostics.weighted_corr_after <= best.0 + eps + 1e-3,
            "seed {seed}: {:?}",
            tol.diagnostics
        );
        assert!(
            ct.ln().abs() <= cs.ln().abs() + 1e-3 && ct.ln() * cs.ln() >= 0.0,
            "seed {seed}: c {ct} vs strict {cs}"
        );
        if ct != 1.0 {
            // c = 1 was not good enough.
            assert!(objective_at(&v, &tokens, 1.0, causal) > best.0 + eps - 1e-3);
        }
    }
}

#[test]
fn flat_tails_do_not_reach_the_search_bound() {
    // Independent random clouds: the per-query objective is nearly monotone in c and flattens out
    // towards a bound; the tolerance stops the scale where the curve has flattened.
    let mut hits = 0;
    for seed in 0..8u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tokens = table(&[15, 20, 25]);
        let v = random_head(&mut rng, tokens.len(), 8, 1.0 + seed as f32, 1.0);
        // The wide range of the search makes the tails long enough to matter.
        let strict = Normalizer::params()
            .scale_range(0.05, 20.0)
            .flat_tolerance(0.0)
            .check()
            .unwrap()
            .normalize(&v, &tokens)
            .unwrap();
        let out = Normalizer::params()
            .scale_range(0.05, 20.0)
            .check()
            .unwrap()
            .normalize(&v, &tokens)
            .unwrap();
        let c = out.params.scale;
        hits += usize::from(!(0.06..19.0).contains(&strict.params.scale));
        assert!(
            (0.06..19.0).contains(&c),
            "seed {seed}: c = {c}, strict {}",
            strict.params.scale
        );
        assert!(
            out.diagnostics.weighted_corr_after
                <= strict.diagnostics.weighted_corr_after + 0.002 + 1e-4
        );
    }
    assert!(
        hits > 0,
        "no strict optimum at a bound: the test does not exercise flat tails"
    );
}

#[test]
fn scale_is_equivariant() {
    // Feeding (alpha q, k / alpha) must give c / alpha: the objective only sees c * alpha (without
    // the flatness rule, which anchors at c = 1).
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (v, tokens) = sphere_head(&mut rng, &[20, 15, 25], 5, 1.7);
    let norm = Normalizer::params().flat_tolerance(0.0).check().unwrap();
    let base = norm.normalize(&v, &tokens).unwrap().params.scale;
    for alpha in [0.5f32, 2.0] {
        let w = apply(
            &v,
            &NormalizationParams {
                key_translation: Vec::new(),
                scale: alpha,
            },
        )
        .unwrap();
        let c = norm.normalize(&w, &tokens).unwrap().params.scale;
        assert!(
            ((c * alpha) / base).ln().abs() < 0.02,
            "alpha {alpha}: {c} * alpha vs {base}"
        );
    }
}

#[test]
fn pair_counts_follow_sequences_and_causality() {
    let tokens = table(&[1, 4, 3]);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let v = random_head(&mut rng, 8, 3, 1.0, 1.0);
    let bi = Normalizer::params()
        .check()
        .unwrap()
        .normalize(&v, &tokens)
        .unwrap();
    assert_eq!(bi.diagnostics.pairs, 16 + 9);
    let ca = Normalizer::params()
        .causal(true)
        .check()
        .unwrap()
        .normalize(&v, &tokens)
        .unwrap();
    // Causal: positions 1.. of each sequence see p + 1 keys: (2+3+4) + (2+3).
    assert_eq!(ca.diagnostics.pairs, 9 + 5);
}

#[test]
fn subsampling_is_capped_and_deterministic() {
    // 100 sequences of 20 tokens: 40,000 pairs, capped at 5,000 by keeping whole queries.
    let tokens = table(&[20; 100]);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let v = clustered_head(&mut rng, 2000, 6, 3, 2.0, 1.0);
    let run = |seed: u64| {
        Normalizer::params()
            .max_pairs(5000)
            .seed(seed)
            .check()
            .unwrap()
            .normalize(&v, &tokens)
            .unwrap()
    };
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(a, b);
    let p = a.diagnostics.pairs;
    assert!((4000..6000).contains(&p), "{p} pairs for a cap of 5000");
    assert_eq!(p % 20, 0, "kept queries keep all their keys");
    assert_ne!(a.diagnostics, c.diagnostics);
}

#[test]
fn same_result_for_any_thread_count() {
    let tokens = table(&[12, 30, 18]);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let heads: Vec<HeadVectors> = (0..6)
        .map(|h| {
            let (_, q, k) = clustered_head(&mut rng, 60, 8, 3, 1.0 + h as f32, 0.5).into_parts();
            HeadVectors::new(HeadId::new(0, h), q, k).unwrap()
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
        assert_eq!(r.as_ref().unwrap().vectors.head(), h.head());
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
    assert!((dg.norm_gap - (mean(v.queries()) - mean(v.keys()))).abs() < 1e-4);
    assert_eq!(dg, norm.diagnostics(&v, &out.vectors, &tokens).unwrap());
    assert_eq!(
        dg.weighted_corr_before,
        norm.weighted_correlation(&v, &tokens).unwrap()
    );
    // Spearman before and after, recomputed by hand from the documented definition: per query over
    // the keys of its sequence, against the original logits, averaged over queries.
    let per_query = |w: &HeadVectors, cosine: bool| {
        let (mut sum, mut cnt) = (0.0f32, 0);
        for s in tokens.sequences() {
            for i in s.range() {
                let (mut dist, mut dots) = (Vec::new(), Vec::new());
                for j in s.range() {
                    let (q, k) = (w.queries().row(i), w.keys().row(j));
                    let dot = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>();
                    let nq = q.iter().map(|a| a * a).sum::<f32>().sqrt();
                    let nk = k.iter().map(|a| a * a).sum::<f32>().sqrt();
                    let euc = q
                        .iter()
                        .zip(k)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f32>()
                        .sqrt();
                    dist.push(if cosine { 1.0 - dot / (nq * nk) } else { euc });
                    dots.push(
                        v.queries()
                            .row(i)
                            .iter()
                            .zip(v.keys().row(j))
                            .map(|(a, b)| a * b)
                            .sum::<f32>(),
                    );
                }
                let r = attn_normalize::spearman(&dist, &dots);
                if r.is_finite() {
                    sum += r;
                    cnt += 1;
                }
            }
        }
        sum / cnt as f32
    };
    for (hand, got) in [
        (per_query(&v, false), dg.spearman_euclidean_before),
        (per_query(&v, true), dg.spearman_cosine_before),
        (per_query(&out.vectors, false), dg.spearman_euclidean_after),
        (per_query(&out.vectors, true), dg.spearman_cosine_after),
    ] {
        assert!((hand - got).abs() < 2e-3, "{hand} vs {got}");
    }
    for x in [
        dg.spearman_cosine_after,
        dg.spearman_euclidean_after,
        dg.spearman_cosine_before,
    ] {
        assert!((-1.0..=1.0).contains(&x));
    }
}

#[test]
fn bad_inputs_give_typed_errors() {
    let norm = Normalizer::params().check().unwrap();
    let tokens = table(&[3]);
    let good = head(3, 2, vec![1.0; 6], vec![0.5; 6]);

    let empty = head(0, 2, vec![], vec![]);
    assert!(matches!(
        norm.normalize(&empty, &table(&[])),
        Err(NormalizeError::EmptyHead { rows: 0, .. })
    ));

    let (h, q, mut k) = good.clone().into_parts();
    k.row_mut(2)[1] = f32::NAN;
    let nan = HeadVectors::new(h, q, k).unwrap();
    match norm.normalize(&nan, &tokens) {
        Err(NormalizeError::NonFinite {
            head,
            matrix: "keys",
            row: 2,
            ..
        }) => assert_eq!(head, HeadId::new(1, 2)),
        other => panic!("{other:?}"),
    }
    let (h, mut q, k) = good.clone().into_parts();
    q.row_mut(1)[0] = f32::INFINITY;
    let inf = HeadVectors::new(h, q, k).unwrap();
    assert!(matches!(
        norm.normalize(&inf, &tokens),
        Err(NormalizeError::NonFinite {
            matrix: "queries",
            row: 1,
            ..
        })
    ));

    // Queries and keys of different shapes can no longer reach the normalizer: `HeadVectors`
    // refuses them when it is built.
    let q = good.queries().clone();
    assert!(HeadVectors::new(good.head(), q.clone(), Matrix::zeros(2, 2)).is_err());
    assert!(HeadVectors::new(good.head(), q, Matrix::zeros(3, 3)).is_err());
    assert!(matches!(
        norm.normalize(&good, &table(&[4])),
        Err(NormalizeError::DimMismatch {
            what: "query rows vs token count",
            expected: 4,
            found: 3,
            ..
        })
    ));

    let singles = table(&[1, 1, 1]);
    assert!(matches!(
        norm.normalize(&good, &singles),
        Err(NormalizeError::NoPairs {
            tokens: 3,
            sequences: 3,
            ..
        })
    ));
    let causal = Normalizer::params().causal(true).check().unwrap();
    assert!(matches!(
        causal.normalize(&good, &singles),
        Err(NormalizeError::NoPairs { .. })
    ));
    assert!(
        norm.normalize_many(&[good.clone(), nan], &tokens)
            .iter()
            .map(Result::is_ok)
            .eq([true, false])
    );

    for (params, name) in [
        (Normalizer::params().near_percentile(0.0), "near_percentile"),
        (
            Normalizer::params().near_percentile(100.5),
            "near_percentile",
        ),
        (
            Normalizer::params().near_percentile(f32::NAN),
            "near_percentile",
        ),
        (Normalizer::params().max_pairs(1), "max_pairs"),
        (Normalizer::params().flat_tolerance(-0.1), "flat_tolerance"),
        (Normalizer::params().scale_range(2.0, 1.0), "scale_range"),
        (Normalizer::params().scale_range(0.0, 1.0), "scale_range"),
    ] {
        match params.check() {
            Err(NormalizeError::InvalidParam { param, .. }) => assert_eq!(param, name),
            other => panic!("{name}: {other:?}"),
        }
    }

    let bad_t = NormalizationParams {
        key_translation: vec![0.0; 3],
        scale: 1.0,
    };
    assert!(matches!(
        apply(&good, &bad_t),
        Err(NormalizeError::DimMismatch {
            what: "key translation length vs head dim",
            ..
        })
    ));
    for c in [0.0, -1.0, f32::NAN] {
        let p = NormalizationParams {
            key_translation: vec![],
            scale: c,
        };
        assert!(matches!(
            apply(&good, &p),
            Err(NormalizeError::InvalidParam { param: "scale", .. })
        ));
    }
    // Error messages name the head.
    let msg = norm.normalize(&good, &singles).unwrap_err().to_string();
    assert!(msg.contains("L1H2"), "{msg}");
}
