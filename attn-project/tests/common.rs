//! Seeded test data shared by the integration tests.
#![allow(dead_code)]

use attn_types::Matrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// `n` points in `d` dims from `clusters` Gaussian blobs (centres uniform in [-1, 1]^d, noise std
/// `sigma`); returns the data and the cluster of every point (`i % clusters`).
pub fn mixture(n: usize, d: usize, clusters: usize, sigma: f32, seed: u64) -> (Matrix, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centers: Vec<f32> = (0..clusters * d)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut v = Vec::with_capacity(n * d);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % clusters;
        labels.push(c);
        for t in 0..d {
            let g: f32 = StandardNormal.sample(&mut rng);
            v.push(centers[c * d + t] + sigma * g);
        }
    }
    (Matrix::from_vec(n, d, v).expect("shape"), labels)
}

/// Uniform random points in [-1, 1]^d.
pub fn uniform(n: usize, d: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Matrix::from_vec(
        n,
        d,
        (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
    )
    .expect("shape")
}

/// Runs `f` inside a rayon pool with `threads` threads.
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool")
        .install(f)
}

/// Fraction of points whose nearest embedding neighbour has the same label.
pub fn nn_label_agreement(coords: &Matrix, labels: &[usize]) -> f32 {
    let n = coords.rows();
    let mut ok = 0;
    for i in 0..n {
        let mut best = (f32::INFINITY, 0);
        for j in 0..n {
            if j != i {
                let d: f32 = coords
                    .row(i)
                    .iter()
                    .zip(coords.row(j))
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                if d < best.0 {
                    best = (d, j);
                }
            }
        }
        if labels[best.1] == labels[i] {
            ok += 1;
        }
    }
    ok as f32 / n as f32
}
