//! Element-wise work done on the host for CPU devices, where burn's own kernel is the bottleneck.
//!
//! burn-flex 0.22 evaluates GELU element by element with libm's scalar `erff` on a single thread
//! (a fifth of the extraction time on all-MiniLM-L6-v2), and GPT-2's tanh GELU as separate passes
//! with scalar `powf` and `tanhf` (two fifths of it on a GPT-2-small-sized model). On a CPU device
//! the tensor already lives in host memory, so taking its data, rewriting it in place with
//! branch-free (hence vectorized) rational approximations on the rayon threads and handing it back
//! costs at most two copies.

use burn::tensor::{Device, Tensor, activation};
use rayon::prelude::*;

/// While alive, freed activation buffers stay in the process heap for reuse (glibc only; a no-op
/// elsewhere). [`crate::LoadedModel::extract`] holds one for its forward passes.
///
/// glibc hands out every allocation above its mmap threshold (which adapts up to 32 MiB) as fresh
/// pages, and returns freed heap memory above 128 KiB to the system: every batch and layer of a
/// forward pass then page-faults its multi-megabyte tensors in anew. Serving allocations up to
/// 32 MiB from the heap and trimming it only above 2 GiB of free space made extraction 1.3x faster
/// on the Llama-shaped benchmark model (671 -> 872 tokens/s). On drop, the thresholds go back to
/// glibc's initial 128 KiB and the heap is trimmed, so that the rest of a program (attnviz's
/// projections) does not keep the extraction's memory: kept process-wide, it raised the main job's
/// peak RSS from 358 to 637 MB for no gain in its time.
pub(crate) struct RetainFreedBuffers(());

impl RetainFreedBuffers {
    pub(crate) fn new() -> Self {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes glibc's allocator parameters; it is thread-safe and the
        // values are within the documented ranges (M_MMAP_THRESHOLD at most 32 MiB on 64-bit).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
        RetainFreedBuffers(())
    }
}

impl Drop for RetainFreedBuffers {
    fn drop(&mut self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: as in `new`; malloc_trim only returns free heap memory to the system.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
            libc::malloc_trim(0);
        }
    }
}

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
    map_on_host(x, gelu_f32, activation::gelu)
}

/// Tanh-approximated GELU (`gelu_new`, GPT-2), `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`:
/// on the host for CPU devices, else burn's.
pub(crate) fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    map_on_host(x, gelu_tanh_f32, activation::gelu_approximate)
}

/// SiLU, `x * sigmoid(x)` (the Llama family's SwiGLU gate), as `0.5 x (1 + tanh(x / 2))` with the
/// vectorized tanh: on the host for CPU devices, else burn's.
pub(crate) fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    map_on_host(x, silu_f32, activation::silu)
}

/// SwiGLU's `silu(gate) * up` in place of `gate`, on the rayon threads (the CPU kernels' MLP).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn silu_times(gate: &mut [f32], up: &[f32]) {
    assert_eq!(
        gate.len(),
        up.len(),
        "silu_times: gate and up differ in size"
    );
    gate.par_chunks_mut(CHUNK)
        .zip(up.par_chunks(CHUNK))
        .for_each(|(g, u)| g.iter_mut().zip(u).for_each(|(g, u)| *g = silu_f32(*g) * u));
}

/// `activation` applied in place to every value, on the rayon threads (the CPU kernels).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn activate(values: &mut [f32], activation: crate::hf::Activation) {
    use crate::hf::Activation;
    match activation {
        Activation::Gelu => map_values(values, gelu_f32),
        Activation::GeluTanh => map_values(values, gelu_tanh_f32),
        Activation::Relu => map_values(values, |x| x.max(0.0)),
    }
}

/// `f` applied in place to every value on the rayon threads; generic (not a function pointer) so
/// that `f` is inlined into the loop and vectorized.
#[inline(always)]
fn map_values(values: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    values
        .par_chunks_mut(CHUNK)
        .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = f(*v)));
}

/// `f` applied to every element on the rayon threads when `x` lives in host memory; `on_device`
/// otherwise (and for non-f32 data, which the loaders never produce: they cast weights to f32).
#[inline(always)]
fn map_on_host<const D: usize>(
    x: Tensor<D>,
    f: impl Fn(f32) -> f32 + Sync,
    on_device: fn(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    let device = x.device();
    if !is_host(&device) {
        return on_device(x);
    }
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => map_values(values, f),
        Err(_) => return on_device(Tensor::from_data(data, &device)),
    }
    Tensor::from_data(data, &device)
}

// `inline(always)`: at the workspace's opt-level 2 these were left as a call per element, which
// kept the loop in `map_on_host` scalar.
#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn silu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh_f32(0.5 * x))
}

#[inline(always)]
fn gelu_tanh_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + tanh_f32(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
}

/// Numerator (odd, x^1..x^13) and denominator (even, x^0..x^6) coefficients of Eigen's and XLA's
/// f32 `tanh`, highest power first.
const TANH_P: [f64; 7] = [
    -2.76076847742355e-16,
    2.00018790482477e-13,
    -8.60467152213735e-11,
    5.12229709037114e-08,
    1.48572235717979e-05,
    6.37261928875436e-04,
    4.89352455891786e-03,
];
const TANH_Q: [f64; 4] = [
    1.19825839466702e-06,
    1.18534705686654e-04,
    2.26843463243900e-03,
    4.89352518554385e-03,
];

/// tanh as a rational function of x (absolute error below 1e-6), branch-free like [`erf_f32`].
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    // tanh(+-7.9) rounds to +-1 in f32; clamping keeps the polynomials in their fitted range.
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    x * horner(&TANH_P, x2) / horner(&TANH_Q, x2)
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

    #[test]
    fn tanh_matches_libm() {
        let mut worst = 0.0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // [-20, 20]
            worst = worst.max((tanh_f32(x) - f64::from(x).tanh() as f32).abs());
        }
        assert!(worst < 1e-6, "max |tanh error| {worst}");
        assert_eq!(tanh_f32(0.0), 0.0);
        assert!((tanh_f32(f32::INFINITY) - 1.0).abs() < 1e-6);
        assert!((tanh_f32(f32::NEG_INFINITY) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn gelu_tanh_matches_its_formula_in_f64() {
        let mut worst = 0.0f64;
        for i in -100_000..=100_000 {
            let x = f64::from(i as f32 * 1e-4); // [-10, 10]
            let exact = 0.5
                * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            worst = worst.max((f64::from(gelu_tanh_f32(x as f32)) - exact).abs());
        }
        assert!(worst < 1e-5, "max |gelu_tanh error| {worst}");
    }

    #[test]
    fn silu_matches_its_formula_in_f64() {
        let mut worst = 0.0f64;
        for i in -200_000..=200_000 {
            let x = f64::from(i as f32 * 1e-4); // [-20, 20]
            let exact = x / (1.0 + (-x).exp());
            worst = worst.max((f64::from(silu_f32(x as f32)) - exact).abs());
        }
        assert!(worst < 1e-5, "max |silu error| {worst}");
    }

    // f64 reference through the standard library's (C) erf.
    fn libm_erf(x: f32) -> f32 {
        unsafe extern "C" {
            safe fn erf(x: f64) -> f64;
        }
        erf(f64::from(x)) as f32
    }
}
