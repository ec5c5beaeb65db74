//! The SGD of UMAP: every epoch, each vertex moves by its clipped attractive and repulsive terms,
//! all evaluated at the epoch-start positions (see the module docs of [`super`]).

// Coordinate loops `for d in 0..D` index several fixed-size arrays in lockstep.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use super::UmapValidParams;
use super::graph::SgdGraph;
use crate::ProjectError;
use crate::attention::kl::{self, KlTerm, dist2};

impl UmapValidParams {
    pub(super) fn optimize(
        &self,
        coords: &mut Vec<f32>,
        g: &SgdGraph,
        attention_kl: Option<&KlTerm<'_>>,
        n_epochs: usize,
    ) -> Result<(), ProjectError> {
        match self.p.dims {
            2 => self.optimize_d::<2>(coords, g, attention_kl, n_epochs),
            _ => self.optimize_d::<3>(coords, g, attention_kl, n_epochs),
        }
    }

    /// The SGD with the output dimension as a constant, so that the per-pair loops unroll.
    fn optimize_d<const D: usize>(
        &self,
        coords: &mut Vec<f32>,
        g: &SgdGraph,
        attention_kl: Option<&KlTerm<'_>>,
        n_epochs: usize,
    ) -> Result<(), ProjectError> {
        let (a, b) = (self.a, self.b);
        let gamma = self.p.repulsion_strength;
        let neg_rate = self.p.negative_sample_rate as f64;
        let seed = self.p.seed;
        let mut pos: Vec<[f32; D]> = coords
            .chunks_exact(D)
            .map(|c| std::array::from_fn(|d| c[d]))
            .collect();
        let n = pos.len();
        let mut next = pos.clone();
        // The attention term's gradient of the epoch (see `UmapParams::attention_kl`).
        let mut kl_gradient = vec![[0f32; D]; if attention_kl.is_some() { n } else { 0 }];
        // Vertices per parallel task: large enough to amortize scheduling; any value gives the same result.
        const CHUNK: usize = 256;
        for epoch in 1..=n_epochs {
            self.p.interrupt.check()?;
            let alpha = self.p.learning_rate * (1.0 - (epoch - 1) as f32 / n_epochs as f32);
            if let Some(term) = attention_kl {
                kl::gradient(term.edges, &pos, term.kernel, false, &mut kl_gradient);
            }
            let kl_gradient = &kl_gradient;
            let snap: &[[f32; D]] = &pos;
            let (ef, ep) = (epoch as f64, (epoch - 1) as f64);
            next.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
                for (o, cur_out) in out.iter_mut().enumerate() {
                    let i = c * CHUNK + o;
                    // Every gradient of this epoch is taken at the epoch-start position: the terms are
                    // independent, so the CPU overlaps them instead of waiting on a chain of updates.
                    let cur = snap[i];
                    let mut delta = [0.0f32; D];
                    let mut rng = SplitMix64::for_vertex(seed, epoch as u64, i as u64);
                    let (lo, hi) = (g.indptr[i], g.indptr[i + 1]);
                    for (&r, &j) in g.rate[lo..hi].iter().zip(&g.indices[lo..hi]) {
                        // Samples of this edge up to this epoch (`as` truncates = floor, all >= 0):
                        // the edge is due when the count just went up.
                        let count = (ef * r) as i64;
                        let due = count - (ep * r) as i64;
                        if due == 0 {
                            continue;
                        }
                        // Edges heavier than the reference weight (attention edges, rate > 1)
                        // are due several times per epoch: one step of that many samples.
                        let times = 2.0 * due as f32;
                        let other = &snap[j as usize];
                        let d2 = dist2(&cur, other);
                        if d2 > 0.0 {
                            let pb = fast_pow(d2, b);
                            let coeff = -2.0 * a * b * pb / (d2 * (a * pb + 1.0));
                            for d in 0..D {
                                // Twice the step: the edge's other direction, sampled in the same
                                // epoch by vertex j, moves i once more in umap-learn.
                                delta[d] += times * clip(coeff * (cur[d] - other[d]));
                            }
                        }
                        let negs = (count as f64 * neg_rate) as i64
                            - ((count - due) as f64 * neg_rate) as i64;
                        for _ in 0..negs {
                            let k = rng.below(n);
                            if k == i {
                                continue;
                            }
                            let other = &snap[k];
                            let d2 = dist2(&cur, other);
                            if d2 > 0.0 {
                                let coeff =
                                    2.0 * gamma * b / ((0.001 + d2) * (a * fast_pow(d2, b) + 1.0));
                                for d in 0..D {
                                    delta[d] += clip(coeff * (cur[d] - other[d]));
                                }
                            }
                        }
                    }
                    if let Some(term) = attention_kl {
                        for d in 0..D {
                            // Clipped as one attractive term is: a key that many queries attend to
                            // sums their pulls.
                            delta[d] -= clip(term.lambda * kl_gradient[i][d]);
                        }
                    }
                    let cur: [f32; D] = std::array::from_fn(|d| {
                        cur[d] + alpha * delta[d].clamp(-MAX_EPOCH_STEP, MAX_EPOCH_STEP)
                    });
                    *cur_out = cur;
                }
            });
            std::mem::swap(&mut pos, &mut next);
        }
        coords.clear();
        coords.extend(pos.iter().flatten());
        Ok(())
    }
}

/// Largest step of one vertex per epoch and coordinate (before the learning rate), twice one term's
/// clip. Every term of an epoch is taken at the epoch-start position, so a vertex with many due edges
/// would otherwise add up hundreds of clipped repulsions at once: the 320 identical `[CLS]` keys of a
/// MiniLM head (a component of their own in the kNN graph) jumped ~1,000 units away. Sequential SGD
/// (umap-learn) limits itself, as repulsion fades once a vertex has moved. With 8, layouts of such
/// heads spread like umap-learn's, and trustworthiness on the benchmark data is unchanged or better.
const MAX_EPOCH_STEP: f32 = 8.0;

#[inline]
fn clip(v: f32) -> f32 {
    v.clamp(-4.0, 4.0)
}

/// `x^b` for `x > 0` as `2^(b log2 x)` with polynomial `log2` and `exp2` (relative error below 1e-6):
/// the SGD evaluates one power per sampled pair and `powf` dominated its run time.
#[inline]
pub(crate) fn fast_pow(x: f32, b: f32) -> f32 {
    fast_exp2(b * fast_log2(x))
}

#[inline]
fn fast_log2(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // mantissa in [1, 2)
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // log2(m) = 2 atanh(t) / ln 2 with t = (m - 1) / (m + 1), |t| <= 0.172: four odd terms suffice.
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let s = t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0))));
    e as f32 + s * (2.0 / std::f32::consts::LN_2)
}

#[inline]
fn fast_exp2(y: f32) -> f32 {
    let y = y.clamp(-126.0, 126.0);
    // Round to nearest through a positive truncating cast: `round` is a libm call on baseline x86-64.
    let i = (y + 127.5) as i32 - 127;
    let f = (y - i as f32) * std::f32::consts::LN_2; // |f| <= ln2 / 2
    // Taylor series of e^f to degree 6: error below 2e-7 on |f| <= 0.35.
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    p * f32::from_bits(((i + 127) as u32) << 23)
}

/// Small counter-based generator for the per-(epoch, vertex) negative-sample streams: seeding a
/// cryptographic generator per vertex per epoch would cost more than the samples themselves.
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn for_vertex(seed: u64, epoch: u64, vertex: u64) -> Self {
        SplitMix64(Self::mix(
            Self::mix(seed ^ 0x5eed)
                ^ Self::mix(epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ vertex),
        ))
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        Self::mix(self.0)
    }

    /// Uniform index in `0..n` by multiply-shift (bias below 2^-32 for n < 2^32).
    pub(super) fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}
