//! Runs UMAP (cosine, defaults) on a raw little-endian `f32` file of `n x dim` rows and prints how far
//! the points spread and the trustworthiness: `cargo run -p attn-project --example umap_file --
//! <file.f32> <dim> [out.f32]`. Used to check layouts of real heads against umap-learn.

use attn_project::{Umap, quality_sampled};
use attn_types::{Matrix, Metric};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(dim)) = (
        args.get(1),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: umap_file <file.f32> <dim> [out.f32]");
        std::process::exit(2);
    };
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n = values.len() / dim;
    let data = Matrix::from_vec(n, dim, values).unwrap_or_else(|e| panic!("{e}"));
    let t = std::time::Instant::now();
    let emb = Umap::params()
        .metric(Metric::Cosine)
        .check()
        .and_then(|p| p.fit(&data))
        .unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    let y = &emb.coords;
    let med = |col: usize| {
        let mut v: Vec<f32> = (0..n).map(|i| y.row(i)[col]).collect();
        v.sort_by(f32::total_cmp);
        v[n / 2]
    };
    let (mx, my) = (med(0), med(1));
    let mut dist: Vec<f32> = (0..n)
        .map(|i| ((y.row(i)[0] - mx).powi(2) + (y.row(i)[1] - my).powi(2)).sqrt())
        .collect();
    dist.sort_by(f32::total_cmp);
    let q = quality_sampled(&data, y, 10, Metric::Cosine, 2000).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "n {n}: {secs:.1}s, distance to median p50 {:.2} p99 {:.2} max {:.2}, trust {:.3}",
        dist[n / 2],
        dist[n * 99 / 100],
        dist[n - 1],
        q.trustworthiness
    );
    if let Some(out) = args.get(3) {
        let raw: Vec<u8> = y.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(out, raw).unwrap_or_else(|e| panic!("{out}: {e}"));
    }
}
