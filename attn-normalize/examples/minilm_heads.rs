//! Normalizes every head of a stored dataset (e.g. all-MiniLM-L6-v2) and prints, per head, the
//! per-query Spearman correlations (cosine and Euclidean distance vs attention logit) before and
//! after normalization, the scale `c`, and the means over heads.
//!
//! `cargo run --release -p attn-normalize --example minilm_heads -- DATASET_DIR [PERCENTILE] [FLAGS]`
//! with flags `head` (near threshold over the whole head instead of per query), `causal`,
//! `notranslate`; the environment variable `EPS` sets the flat tolerance (default 0.002).

use std::time::Instant;

use attn_normalize::{NearScope, Normalizer};
use attn_store::Dataset;
use attn_types::HeadId;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .ok_or("usage: minilm_heads DATASET_DIR [PERCENTILE] [head] [causal] [notranslate]")?;
    let pct: f32 = args.get(1).map_or(Ok(20.0), |s| s.parse())?;
    let flag = |f: &str| args.iter().skip(2).any(|a| a == f);
    let scope = if flag("head") {
        NearScope::Head
    } else {
        NearScope::Query
    };
    let (causal, translate) = (flag("causal"), !flag("notranslate"));
    let ds = Dataset::open(dir)?;
    let tokens = ds.read_tokens()?;
    let m = &ds.meta().model;
    let mut params = Normalizer::params()
        .near_percentile(pct)
        .near_scope(scope)
        .causal(causal)
        .translate(translate);
    let eps = std::env::var("EPS")
        .ok()
        .and_then(|s| s.parse::<f32>().ok());
    if let Some(eps) = eps {
        params = params.flat_tolerance(eps);
    }
    let norm = params.check()?;
    println!(
        "{} ({} tokens, {} sequences), near percentile {pct}, scope {scope:?}, causal {causal}, translate {translate}, flat tolerance {}",
        m.id,
        tokens.len(),
        tokens.sequences().len(),
        eps.map_or("default".to_string(), |e| e.to_string()),
    );
    println!(
        "head    cos before -> after   euc before -> after   wcorr before -> after   c        |q|-|k|  ms"
    );
    let mut sums = [0.0f64; 7];
    let (mut n, mut at_bound) = (0usize, Vec::new());
    for l in 0..m.num_layers {
        for h in 0..m.num_heads {
            let id = HeadId::new(l, h);
            let raw = ds.read_head(id)?.raw;
            let t = Instant::now();
            let out = norm.normalize(&raw, &tokens)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let d = out.diagnostics;
            let c = out.params.scale;
            println!(
                "{id:7} {:+.3} -> {:+.3}         {:+.3} -> {:+.3}         {:+.3} -> {:+.3}          {c:<8.4} {:+.2}    {ms:.0}",
                d.spearman_cosine_before,
                d.spearman_cosine_after,
                d.spearman_euclidean_before,
                d.spearman_euclidean_after,
                d.weighted_corr_before,
                d.weighted_corr_after,
                d.norm_gap,
            );
            for (s, v) in sums.iter_mut().zip([
                d.spearman_cosine_before,
                d.spearman_cosine_after,
                d.spearman_euclidean_before,
                d.spearman_euclidean_after,
                d.weighted_corr_before,
                d.weighted_corr_after,
                d.norm_gap,
            ]) {
                *s += f64::from(v);
            }
            n += 1;
            let (lo, hi) = norm.scale_range();
            if c <= lo * 1.001 || c >= hi * 0.999 {
                at_bound.push(format!("{id} (c = {c:.3})"));
            }
        }
    }
    let mean: Vec<f64> = sums.iter().map(|s| s / n as f64).collect();
    println!(
        "mean over {n} heads: cos {:+.3} -> {:+.3}, euclid {:+.3} -> {:+.3}, weighted corr {:+.3} -> {:+.3}, |q|-|k| {:+.3}",
        mean[0], mean[1], mean[2], mean[3], mean[4], mean[5], mean[6]
    );
    println!(
        "heads at the search bound: {}",
        if at_bound.is_empty() {
            "none".into()
        } else {
            at_bound.join(", ")
        }
    );
    Ok(())
}
