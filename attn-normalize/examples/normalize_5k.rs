//! Times the normalization of one 5,000-token x 32-dim head (run with `cargo run --example normalize_5k`).

use std::time::Instant;

use attn_normalize::Normalizer;
use attn_types::{HeadId, HeadVectors, Matrix, TokenTable};
use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, d) = (5000, 32);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut q = Vec::with_capacity(n * d);
    let mut k = Vec::with_capacity(n * d);
    for i in 0..n {
        for c in 0..d {
            let base = if c == i % 8 { 1.0 } else { 0.0 };
            q.push(4.0 * (base + 0.3 * rng.random_range(-1.0f32..1.0)));
            k.push(0.5 * (base + 0.3 * rng.random_range(-1.0f32..1.0)) + 1.0);
        }
    }
    let head = HeadVectors::new(
        HeadId::new(0, 0),
        Matrix::from_vec(n, d, q)?,
        Matrix::from_vec(n, d, k)?,
    )?;
    for (name, lens, causal) in [
        (
            "200 sequences x 25 tokens, bidirectional",
            vec![25; 200],
            false,
        ),
        ("200 sequences x 25 tokens, causal", vec![25; 200], true),
        ("1 sequence x 5000 tokens (subsampled)", vec![5000], false),
    ] {
        let tokens = TokenTable::placeholder(&lens);
        let norm = Normalizer::params().causal(causal).check()?;
        let t = Instant::now();
        let out = norm.normalize(&head, &tokens)?;
        println!(
            "{name}: {:.0} ms, c = {:.4}, pairs = {}, weighted corr {:.3} -> {:.3}, spearman(euclid) {:.3} -> {:.3}",
            t.elapsed().as_secs_f64() * 1e3,
            out.params.scale,
            out.diagnostics.pairs,
            out.diagnostics.weighted_corr_before,
            out.diagnostics.weighted_corr_after,
            out.diagnostics.spearman_euclidean_before,
            out.diagnostics.spearman_euclidean_after,
        );
    }
    Ok(())
}
