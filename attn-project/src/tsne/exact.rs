//! Exact O(n²) repulsion for small inputs.

use rayon::prelude::*;

const CHUNK: usize = 64;

/// `sum_j w_ij² (y_i - y_j)` for every point into `out`, and `Z = sum_{i != j} w_ij`.
pub(crate) fn repulsion<const D: usize>(y: &[[f32; D]], out: &mut [[f32; D]]) -> f64 {
    let zs: Vec<f64> = out
        .par_chunks_mut(CHUNK)
        .enumerate()
        .map(|(c, oc)| {
            let mut z = 0f64;
            for (o, f) in oc.iter_mut().enumerate() {
                let i = c * CHUNK + o;
                let yi = y[i];
                let mut acc = [0f32; D];
                let mut zi = 0f32;
                for (j, yj) in y.iter().enumerate() {
                    if j == i {
                        continue;
                    }
                    let mut dd = [0f32; D];
                    let mut r2 = 0f32;
                    for a in 0..D {
                        dd[a] = yi[a] - yj[a];
                        r2 += dd[a] * dd[a];
                    }
                    let w = 1.0 / (1.0 + r2);
                    zi += w;
                    for a in 0..D {
                        acc[a] += w * w * dd[a];
                    }
                }
                *f = acc;
                z += zi as f64;
            }
            z
        })
        .collect();
    zs.into_iter().sum()
}
