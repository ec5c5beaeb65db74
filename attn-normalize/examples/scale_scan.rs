//! Mean over all heads of a stored dataset of the per-query diagnostics after normalizing with a
//! *fixed* scale `c`, for a range of `c`, with and without key translation: shows what any choice
//! of `c` can achieve.
//!
//! `cargo run --release -p attn-normalize --example scale_scan -- DATASET_DIR`

use attn_normalize::{Normalizer, apply, key_translation};
use attn_store::Dataset;
use attn_types::{HeadId, NormalizationParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: scale_scan DATASET_DIR")?;
    let ds = Dataset::open(dir)?;
    let tokens = ds.read_tokens()?;
    let (layers, heads) = (ds.meta().model.num_layers, ds.meta().model.num_heads);
    let norm = Normalizer::params().check()?;
    let cs = [
        0.05f32, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 5.0, 10.0, 20.0, 100.0,
    ];
    let raws = (0..layers)
        .flat_map(|l| (0..heads).map(move |h| HeadId::new(l, h)))
        .map(|id| Ok(ds.read_head(id)?.raw))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let n = raws.len() as f64;
    let mut before = [0.0f64; 3];
    for raw in &raws {
        let d = norm.diagnostics(raw, raw, &tokens)?;
        before[0] += f64::from(d.spearman_cosine_before) / n;
        before[1] += f64::from(d.spearman_euclidean_before) / n;
        before[2] += f64::from(d.weighted_corr_before) / n;
    }
    println!(
        "raw vectors: cos {:+.3} euc {:+.3} wcorr {:+.3}",
        before[0], before[1], before[2]
    );
    for translate in [true, false] {
        for &c in &cs {
            let mut s = [0.0f64; 3];
            for raw in &raws {
                let t = if translate {
                    key_translation(raw, c)
                } else {
                    Vec::new()
                };
                let p = NormalizationParams {
                    key_translation: t,
                    scale: c,
                };
                let d = norm.diagnostics(raw, &apply(raw, &p)?, &tokens)?;
                s[0] += f64::from(d.spearman_cosine_after) / n;
                s[1] += f64::from(d.spearman_euclidean_after) / n;
                s[2] += f64::from(d.weighted_corr_after) / n;
            }
            println!(
                "translate {translate:5} c {c:6.2}: cos {:+.3} euc {:+.3} wcorr {:+.3}",
                s[0], s[1], s[2]
            );
        }
    }
    Ok(())
}
