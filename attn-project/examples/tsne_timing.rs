//! Times kNN, t-SNE and PCA on a seeded Gaussian mixture: `cargo run -p attn-project --example
//! tsne_timing -- <n> <dims> <repulsion: auto|exact|bh|fft> [threads]`.

use std::time::Instant;

use attn_project::{Repulsion, Tsne, approximate_knn, exact_knn, knn_recall, trustworthiness};
use attn_types::{Matrix, Metric};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn mixture(n: usize, d: usize, clusters: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centers: Vec<f32> = (0..clusters * d)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut v = Vec::with_capacity(n * d);
    for i in 0..n {
        let c = i % clusters;
        for t in 0..d {
            let g: f32 = (0..4).map(|_| rng.random_range(-0.5f32..0.5)).sum();
            v.push(centers[c * d + t] + 0.35 * g);
        }
    }
    Matrix::from_vec(n, d, v).unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let dims: u8 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let rep = match args.get(3).map(String::as_str) {
        Some("exact") => Repulsion::Exact,
        Some("bh") => Repulsion::BarnesHut,
        Some("fft") => Repulsion::Fft,
        Some("knn") => {
            let data = mixture(n, 64, 10, 1);
            let t = Instant::now();
            let e = exact_knn(&data, 90, Metric::Cosine).unwrap_or_else(|e| panic!("{e}"));
            println!("exact knn k=90: {:.2}s", t.elapsed().as_secs_f64());
            let t = Instant::now();
            let a = approximate_knn(&data, 90, Metric::Cosine, 0).unwrap_or_else(|e| panic!("{e}"));
            println!(
                "approx knn k=90: {:.2}s recall {:.4}",
                t.elapsed().as_secs_f64(),
                knn_recall(&a, &e)
            );
            return;
        }
        _ => Repulsion::Auto,
    };
    let threads: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // `ATTN_NPY=path` loads a 2D little-endian f32 .npy (C order) instead of the mixture.
    let (data, metric) = match std::env::var("ATTN_NPY") {
        Ok(path) => (load_npy(&path), Metric::Euclidean),
        Err(_) => (mixture(n, 64, 10, 1), Metric::Cosine),
    };
    let n = data.rows();
    let theta: f32 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(0.5);
    let params = Tsne::params()
        .metric(metric)
        .dims(dims)
        .repulsion(rep)
        .theta(theta)
        .learning_rate(std::env::var("ATTN_LR").ok().and_then(|s| s.parse().ok()))
        .check()
        .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let emb = pool
        .install(|| params.fit(&data))
        .unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    let c = emb.coords.as_slice();
    let (lo, hi) = c
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    println!("span {lo:.1}..{hi:.1}");
    let tw = if std::env::var("ATTN_NO_TRUST").is_ok() {
        f32::NAN
    } else {
        pool.install(|| trustworthiness(&data, &emb.coords, 10, metric))
            .unwrap_or(f32::NAN)
    };
    println!(
        "n={n} dims={dims} {:?}: {secs:.2}s KL={:?} T@10={tw:.4} repulsion={:?}",
        rep,
        emb.objective,
        emb.spec.params.get("repulsion")
    );
}

fn load_npy(path: &str) -> Matrix {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + hlen]).to_string();
    let shape = &header[header.find("'shape': (").map(|p| p + 10).unwrap_or(0)..];
    let dims: Vec<usize> = shape[..shape.find(')').unwrap_or(0)]
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let v: Vec<f32> = bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Matrix::from_vec(dims[0], dims[1], v).unwrap_or_default()
}
