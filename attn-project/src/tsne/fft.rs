//! FFT-accelerated interpolation of the 2D repulsive forces (FIt-SNE, Linderman et al. 2019).
//!
//! The bounding square of the layout is cut into `nb x nb` boxes (about one per unit of length,
//! at least 25) with 3 equispaced interpolation nodes per box and axis, which together form one
//! uniform `N x N` grid (`N = 3 nb`). Charges are spread to the grid with Lagrange weights, convolved
//! with the squared Cauchy kernel `1 / (1 + r²)²` by zero-padded 2D FFT (the kernel only depends on
//! grid offsets), and interpolated back. Charges `1, x, y` give the forces; `x² + y²` gives the
//! normalization `Z` through `w = w² (1 + r²)`. The four real charges travel as two complex grids.

use std::sync::Arc;

use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

/// Minimum boxes per axis (FIt-SNE's `min_num_intervals`).
const MIN_BOXES: usize = 25;
/// Boxes per unit length (FIt-SNE's `intervals_per_integer`).
const BOXES_PER_UNIT: f32 = 1.0;
/// Interpolation nodes per box and axis.
const P: usize = 3;
/// Points per parallel task.
const CHUNK: usize = 512;
/// FFT rows per parallel task.
const ROWS_PER_TASK: usize = 16;
/// Grid columns per task of the column pass (8 complex values = one 64-byte cache line per row).
const COL_BLOCK: usize = 8;
/// Grid rows per task of the transpose back.
const ROW_BLOCK: usize = 16;

/// Plans and buffers reused across iterations.
#[derive(Default)]
pub(crate) struct FftRepulsion {
    planner: Option<FftPlanner<f32>>,
    m: usize,
    fwd: Option<Arc<dyn Fft<f32>>>,
    inv: Option<Arc<dyn Fft<f32>>>,
    /// Charge grids `1 + i x` and `y + i (x² + y²)`: `m / 2` rows of length `m` (the zero-padded
    /// lower half is never stored).
    a: Vec<Complex32>,
    b: Vec<Complex32>,
    /// Kernel spectrum, transposed: `kern[c * m + r]` is the 2D DFT at row `r`, column `c`.
    kern: Vec<Complex32>,
    /// Column-pass output, transposed: `m` columns of `m / 2` values.
    ta: Vec<Complex32>,
    tb: Vec<Complex32>,
    /// `(m, h bits)` of the kernel spectrum held in `kern`, to skip recomputing it.
    kern_key: Option<(usize, u32)>,
}

/// Smallest integer >= `n` whose only prime factors are 2, 3 and 5 (fast FFT sizes).
fn smooth_at_least(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut r = m;
        for p in [2, 3, 5] {
            while r.is_multiple_of(p) {
                r /= p;
            }
        }
        if r == 1 {
            return m;
        }
        m += 1;
    }
}

/// Lagrange weights of the nodes `(m + 0.5) / 3` at local coordinate `t` in `[0, 1]`.
#[inline]
fn lagrange(t: f32) -> [f32; 3] {
    const T0: f32 = 1.0 / 6.0;
    const T1: f32 = 0.5;
    const T2: f32 = 5.0 / 6.0;
    [
        4.5 * (t - T1) * (t - T2),
        -9.0 * (t - T0) * (t - T2),
        4.5 * (t - T0) * (t - T1),
    ]
}

/// FFT of `rows` consecutive rows of length `m`, parallel over fixed row blocks.
fn rows_fft(buf: &mut [Complex32], m: usize, rows: usize, plan: &Arc<dyn Fft<f32>>) {
    buf[..rows * m]
        .par_chunks_mut(m * ROWS_PER_TASK)
        .for_each(|c| {
            let mut scratch = vec![Complex32::new(0.0, 0.0); plan.get_inplace_scratch_len()];
            plan.process_with_scratch(c, &mut scratch);
        });
}

/// `dst = src^T` for `m x m` matrices, blocked for cache, parallel over destination row blocks.
fn transpose(src: &[Complex32], dst: &mut [Complex32], m: usize) {
    const B: usize = 32;
    dst.par_chunks_mut(B * m)
        .enumerate()
        .for_each(|(bi, dchunk)| {
            let r0 = bi * B;
            let rows = dchunk.len() / m;
            for c0 in (0..m).step_by(B) {
                let c1 = (c0 + B).min(m);
                for r in 0..rows {
                    let drow = &mut dchunk[r * m..(r + 1) * m];
                    for c in c0..c1 {
                        drow[c] = src[c * m + r0 + r];
                    }
                }
            }
        });
}

/// Grid origin, boxes per axis and box width for a layout. Once the layout spans MIN_BOXES units,
/// boxes are exactly 1 / BOXES_PER_UNIT wide so the kernel (which depends only on the grid spacing
/// and size) is reused across iterations; before that the boxes shrink to keep MIN_BOXES of them.
fn grid<const D: usize>(y: &[[f32; D]]) -> (f32, usize, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for p in y {
        for &v in &p[..2.min(D)] {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let span = (hi - lo).max(1e-6);
    if span * BOXES_PER_UNIT >= MIN_BOXES as f32 {
        let nb = smooth_at_least((span * BOXES_PER_UNIT).ceil() as usize + 1);
        (lo, nb, 1.0 / BOXES_PER_UNIT)
    } else {
        (lo, MIN_BOXES, span / MIN_BOXES as f32)
    }
}

/// Cells of the zero-padded FFT grid the layout `y` needs: the per-iteration cost driver.
pub(crate) fn padded_cells<const D: usize>(y: &[[f32; D]]) -> usize {
    let m = 2 * P * grid(y).1;
    m * m
}

impl FftRepulsion {
    fn plan(&mut self, m: usize) {
        if self.m != m {
            let planner = self.planner.get_or_insert_with(FftPlanner::new);
            self.fwd = Some(planner.plan_fft_forward(m));
            self.inv = Some(planner.plan_fft_inverse(m));
            self.m = m;
            self.kern_key = None;
            for v in [&mut self.a, &mut self.b, &mut self.ta, &mut self.tb] {
                v.clear();
                v.resize(m * m / 2, Complex32::new(0.0, 0.0));
            }
            self.kern.clear();
            self.kern.resize(m * m, Complex32::new(0.0, 0.0));
        }
    }

    /// `sum_j w_ij² (y_i - y_j)` for every point into `out`, and `Z = sum_{i != j} w_ij`.
    pub fn repulsion<const D: usize>(&mut self, y: &[[f32; D]], out: &mut [[f32; D]]) -> f64 {
        let n = y.len();
        let (lo, nb, box_w) = grid(y);
        let h = box_w / P as f32;
        let ng = nb * P;
        let m = 2 * ng;
        let (Some(fwd), Some(inv)) = ({
            self.plan(m);
            (self.fwd.clone(), self.inv.clone())
        }) else {
            return 0.0;
        };

        // Box and weights of every point (kept for the interpolation back).
        let locate = |v: f32| -> (usize, [f32; 3]) {
            let u = (v - lo) / box_w;
            let bx = (u.floor().max(0.0) as usize).min(nb - 1);
            (bx, lagrange(u - bx as f32))
        };
        let zero = Complex32::new(0.0, 0.0);
        self.a.iter_mut().for_each(|c| *c = zero);
        self.b.iter_mut().for_each(|c| *c = zero);
        // Spreading is sequential: a scatter with a fixed order keeps the sums thread-independent.
        for p in y {
            let (x, yy) = (p[0], p[1]);
            let (bx, wx) = locate(x);
            let (by, wy) = locate(yy);
            let (qa, qb) = (Complex32::new(1.0, x), Complex32::new(yy, x * x + yy * yy));
            for (ix, &lx) in wx.iter().enumerate() {
                let row = (bx * P + ix) * m + by * P;
                for (iy, &ly) in wy.iter().enumerate() {
                    let w = lx * ly;
                    self.a[row + iy] += qa * w;
                    self.b[row + iy] += qb * w;
                }
            }
        }
        // Kernel on the circulant grid: offsets 0..ng-1 then -(ng)..-1.
        let h2 = h * h;
        if self.kern_key != Some((m, h.to_bits())) {
            let off = |i: usize| -> f32 {
                let d = if i < ng {
                    i as f32
                } else {
                    i as f32 - m as f32
                };
                d * d
            };
            self.kern
                .par_chunks_mut(m)
                .enumerate()
                .for_each(|(i, row)| {
                    let di = off(i);
                    for (j, c) in row.iter_mut().enumerate() {
                        let w = 1.0 / (1.0 + h2 * (di + off(j)));
                        *c = Complex32::new(w * w, 0.0);
                    }
                });
            rows_fft(&mut self.kern, m, m, &fwd);
            let mut t = vec![zero; m * m];
            transpose(&self.kern, &mut t, m);
            self.kern = t;
            rows_fft(&mut self.kern, m, m, &fwd);
            self.kern_key = Some((m, h.to_bits()));
        }
        // 2D convolution without full transposes: row FFTs of the ng stored rows; then, per block
        // of columns, gather the columns (rows ng..m are the zero padding), FFT, multiply by the
        // kernel spectrum, inverse FFT, keep rows 0..ng; transpose that half back; inverse row FFTs.
        // Every pass streams at most half the padded grid, and each block is owned by one task.
        rows_fft(&mut self.a, m, ng, &fwd);
        rows_fft(&mut self.b, m, ng, &fwd);
        let (ga, gb, kern) = (&self.a, &self.b, &self.kern);
        self.ta
            .par_chunks_mut(COL_BLOCK * ng)
            .zip(self.tb.par_chunks_mut(COL_BLOCK * ng))
            .enumerate()
            .for_each(|(blk, (oa, ob))| {
                let c0 = blk * COL_BLOCK;
                let cols = oa.len() / ng;
                let mut buf = vec![zero; 2 * cols * m];
                let mut scratch = vec![
                    zero;
                    fwd.get_inplace_scratch_len()
                        .max(inv.get_inplace_scratch_len())
                ];
                let (bufa, bufb) = buf.split_at_mut(cols * m);
                for r in 0..ng {
                    let (ra, rb) = (
                        &ga[r * m + c0..r * m + c0 + cols],
                        &gb[r * m + c0..r * m + c0 + cols],
                    );
                    for l in 0..cols {
                        bufa[l * m + r] = ra[l];
                        bufb[l * m + r] = rb[l];
                    }
                }
                fwd.process_with_scratch(bufa, &mut scratch);
                fwd.process_with_scratch(bufb, &mut scratch);
                for l in 0..cols {
                    let k = &kern[(c0 + l) * m..(c0 + l + 1) * m];
                    for ((x, y), kk) in bufa[l * m..(l + 1) * m]
                        .iter_mut()
                        .zip(&mut bufb[l * m..(l + 1) * m])
                        .zip(k)
                    {
                        *x *= kk;
                        *y *= kk;
                    }
                }
                inv.process_with_scratch(bufa, &mut scratch);
                inv.process_with_scratch(bufb, &mut scratch);
                for l in 0..cols {
                    oa[l * ng..(l + 1) * ng].copy_from_slice(&bufa[l * m..l * m + ng]);
                    ob[l * ng..(l + 1) * ng].copy_from_slice(&bufb[l * m..l * m + ng]);
                }
            });
        let (ta, tb) = (&self.ta, &self.tb);
        self.a
            .par_chunks_mut(ROW_BLOCK * m)
            .zip(self.b.par_chunks_mut(ROW_BLOCK * m))
            .enumerate()
            .for_each(|(blk, (da, db))| {
                let r0 = blk * ROW_BLOCK;
                let rows = da.len() / m;
                for c in 0..m {
                    let (sa, sb) = (
                        &ta[c * ng + r0..c * ng + r0 + rows],
                        &tb[c * ng + r0..c * ng + r0 + rows],
                    );
                    for r in 0..rows {
                        da[r * m + c] = sa[r];
                        db[r * m + c] = sb[r];
                    }
                }
            });
        rows_fft(&mut self.a, m, ng, &inv);
        rows_fft(&mut self.b, m, ng, &inv);
        let norm = 1.0 / (m as f32 * m as f32);

        let (ga, gb) = (&self.a, &self.b);
        let zs: Vec<f64> = out
            .par_chunks_mut(CHUNK)
            .enumerate()
            .map(|(c, oc)| {
                let mut z = 0f64;
                for (o, f) in oc.iter_mut().enumerate() {
                    let p = &y[c * CHUNK + o];
                    let (x, yy) = (p[0], p[1]);
                    let (bx, wx) = locate(x);
                    let (by, wy) = locate(yy);
                    let (mut pa, mut pb) = (zero, zero);
                    for (ix, &lx) in wx.iter().enumerate() {
                        let row = (bx * P + ix) * m + by * P;
                        for (iy, &ly) in wy.iter().enumerate() {
                            let w = lx * ly;
                            pa += ga[row + iy] * w;
                            pb += gb[row + iy] * w;
                        }
                    }
                    let (phi1, phix, phiy, phi2) =
                        (pa.re * norm, pa.im * norm, pb.re * norm, pb.im * norm);
                    let mut fi = [0f32; D];
                    fi[0] = x * phi1 - phix;
                    fi[1] = yy * phi1 - phiy;
                    *f = fi;
                    // sum_j w_ij = sum_j w_ij² (1 + |y_i|² - 2 y_i.y_j + |y_j|²), self term included.
                    let zi = (1.0 + x as f64 * x as f64 + yy as f64 * yy as f64) * phi1 as f64
                        - 2.0 * (x as f64 * phix as f64 + yy as f64 * phiy as f64)
                        + phi2 as f64;
                    z += zi;
                }
                z
            })
            .collect();
        (zs.into_iter().sum::<f64>() - n as f64).max(f64::MIN_POSITIVE)
    }
}
