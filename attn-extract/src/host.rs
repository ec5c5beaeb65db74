//! Element-wise work done on the host for CPU devices, where burn's own kernel is the bottleneck.
//!
//! burn-flex 0.22 evaluates GELU element by element with libm's scalar `erff` on a single thread;
//! on all-MiniLM-L6-v2 that was a fifth of the extraction time. On a CPU device the tensor already
//! lives in host memory, so taking its data, rewriting it in place with a branch-free (hence
//! vectorized) erf on the rayon threads and handing it back costs at most two copies.

use burn::tensor::{Device, Tensor, activation};
use rayon::prelude::*;

/// Elements per rayon task: large enough to amortize scheduling, small enough to split a
/// `[batch * seq, intermediate]` activation across the threads.
const CHUNK: usize = 16 * 1024;

/// True for backends whose tensors live in host memory (burn-flex, burn-ndarray).
fn is_host(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    if *device == Device::flex() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    // burn 0.22 deprecates ndarray in favour of flex; still offered for BLAS.
    if *device == Device::ndarray() {
        return true;
    }
    let _ = device; // unused when neither CPU backend is compiled in
    false
}

/// Exact (erf) GELU, `0.5 x (1 + erf(x / sqrt 2))`: on the host for CPU devices, else burn's.
pub(crate) fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !is_host(&device) {
        return activation::gelu(x);
    }
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => values
            .par_chunks_mut(CHUNK)
            .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = gelu_f32(*v))),
        // Not f32 (the loaders cast every weight to f32, so not expected): burn's kernel.
        Err(_) => return activation::gelu(Tensor::from_data(data, &device)),
    }
    Tensor::from_data(data, &device)
}

// `inline(always)`: at the workspace's opt-level 2 these were left as a call per element, which
// kept the loop in `gelu` scalar.
#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Numerator (odd, x^1..x^13) and denominator (even, x^0..x^8) coefficients of Eigen's and XLA's
/// f32 `erf`, highest power first.
const ERF_P: [f64; 7] = [
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
];
const ERF_Q: [f64; 5] = [
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
];

/// erf as a rational function of x: absolute error below 5e-7 against the exact erf, with no
/// branches or calls, so the loop in [`gelu`] vectorizes.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    // erf(+-4) rounds to +-1 in f32; clamping keeps the polynomials in their fitted range.
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    x * horner(&ERF_P, x2) / horner(&ERF_Q, x2)
}

/// `coefficients` (highest power first) evaluated at `x`.
#[inline(always)]
fn horner(coefficients: &[f64], x: f32) -> f32 {
    let (&first, rest) = coefficients.split_first().unwrap_or((&0.0, &[]));
    rest.iter().fold(first as f32, |acc, &c| acc * x + c as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0.0f32;
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4; // [-10, 10]
            worst = worst.max((erf_f32(x) - libm_erf(x)).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst}");
        assert_eq!(erf_f32(0.0), 0.0);
        assert_eq!(erf_f32(f32::INFINITY), erf_f32(4.0));
    }

    // f64 reference through the standard library's (C) erf.
    fn libm_erf(x: f32) -> f32 {
        unsafe extern "C" {
            safe fn erf(x: f64) -> f64;
        }
        erf(f64::from(x)) as f32
    }
}
