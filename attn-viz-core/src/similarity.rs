//! Head similarity from attention behaviour, and a 2D layout of heads.

use attn_types::{HeadId, SequenceAttention};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::ModelData;
use crate::error::VizError;

/// Jensen-Shannon divergence of two distributions in bits (base-2 logarithm), so in `[0, 1]`.
/// `JSD(p, q) = H((p + q) / 2) - (H(p) + H(q)) / 2`; entries are used as given (rows of attention already
/// sum to 1).
pub fn jensen_shannon(p: &[f32], q: &[f32]) -> f32 {
    let m: f64 = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| plogp((f64::from(a) + f64::from(b)) / 2.0))
        .sum();
    let hp: f64 = p.iter().map(|&a| plogp(f64::from(a))).sum();
    let hq: f64 = q.iter().map(|&b| plogp(f64::from(b))).sum();
    ((m - (hp + hq) / 2.0).max(0.0)) as f32
}

/// `-x log2 x`, 0 at 0.
fn plogp(x: f64) -> f64 {
    if x > 0.0 { -x * x.log2() } else { 0.0 }
}

/// Similarity of heads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadSimilarity {
    /// The heads compared (those with attention), in layer-major order.
    pub heads: Vec<HeadId>,
    /// `h x h` row-major mean Jensen-Shannon divergence (bits): for every query token of the corpus,
    /// the divergence between the two heads' attention rows, averaged over all query tokens.
    pub divergence: Vec<f32>,
    /// `h x h` row-major `1 - divergence`, in `[0, 1]`.
    pub similarity: Vec<f32>,
    /// A 2D position per head: classical MDS of the distances `sqrt(divergence)` (a metric), top two
    /// components by deterministic power iteration; sign fixed so each axis' largest entry is positive.
    pub layout: Vec<[f32; 2]>,
}

/// The mean Jensen-Shannon divergence between the attention of two heads over all query tokens.
pub fn head_divergence(model: &ModelData<'_>, a: HeadId, b: HeadId) -> Result<f32, VizError> {
    let ha = model.head(a)?.attention_or_err()?;
    let hb = model.head(b)?.attention_or_err()?;
    let (ea, eb) = (mean_row_entropy(ha), mean_row_entropy(hb));
    Ok(pair_divergence(ha, hb, ea, eb))
}

/// The head x head similarity of every head with attention, and its 2D layout.
pub fn head_similarity(model: &ModelData<'_>) -> Result<HeadSimilarity, VizError> {
    let mut heads: Vec<(HeadId, &[SequenceAttention])> = model
        .heads()
        .iter()
        .filter_map(|h| h.attention.map(|a| (h.head, a)))
        .collect();
    heads.sort_by_key(|(id, _)| *id);
    let n = heads.len();
    // Mean JSD = mean H(m) - (mean H(p) + mean H(q)) / 2, so each head's entropy is computed once.
    let entropy: Vec<f64> = heads.par_iter().map(|(_, a)| mean_row_entropy(a)).collect();
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .collect();
    let values: Vec<f32> = pairs
        .par_iter()
        .map(|&(i, j)| pair_divergence(heads[i].1, heads[j].1, entropy[i], entropy[j]))
        .collect();
    let mut divergence = vec![0.0f32; n * n];
    for (&(i, j), &v) in pairs.iter().zip(&values) {
        divergence[i * n + j] = v;
        divergence[j * n + i] = v;
    }
    let similarity = divergence.iter().map(|d| 1.0 - d).collect();
    // Squared distances of the metric sqrt(divergence) are the divergences themselves.
    let d2: Vec<f64> = divergence.iter().map(|&d| f64::from(d)).collect();
    Ok(HeadSimilarity {
        heads: heads.iter().map(|(id, _)| *id).collect(),
        divergence,
        similarity,
        layout: classical_mds(&d2, n),
    })
}

/// Groups of similar heads: average-linkage agglomerative clustering of `sim.divergence`, merging the
/// two closest groups while their mean pairwise divergence is at most `max_divergence`. Returns a group
/// id per head of `sim.heads`, numbered in order of each group's first head. Deterministic (ties merge
/// the lowest-indexed pair first).
pub fn head_groups(sim: &HeadSimilarity, max_divergence: f32) -> Vec<usize> {
    let n = sim.heads.len();
    if sim.divergence.len() != n * n {
        return (0..n).collect();
    }
    let mut groups: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for a in 0..groups.len() {
            for b in a + 1..groups.len() {
                let total: f64 = groups[a]
                    .iter()
                    .flat_map(|&i| groups[b].iter().map(move |&j| (i, j)))
                    .map(|(i, j)| f64::from(sim.divergence[i * n + j]))
                    .sum();
                let mean = total / (groups[a].len() * groups[b].len()) as f64;
                if best.is_none_or(|(m, _, _)| mean < m) {
                    best = Some((mean, a, b));
                }
            }
        }
        match best {
            Some((m, a, b)) if m <= f64::from(max_divergence) => {
                let merged = groups.remove(b);
                groups[a].extend(merged);
            }
            _ => break,
        }
    }
    let mut ids = vec![0usize; n];
    let mut firsts: Vec<(usize, usize)> = groups
        .iter()
        .enumerate()
        .map(|(g, members)| (members.iter().copied().min().unwrap_or(0), g))
        .collect();
    firsts.sort_unstable();
    for (new_id, &(_, g)) in firsts.iter().enumerate() {
        for &i in &groups[g] {
            ids[i] = new_id;
        }
    }
    ids
}

/// Mean over all query rows of the row entropy (bits).
fn mean_row_entropy(att: &[SequenceAttention]) -> f64 {
    let (mut s, mut rows) = (0.0f64, 0usize);
    for a in att {
        for r in a.weights.iter_rows() {
            s += r.iter().map(|&x| plogp(f64::from(x))).sum::<f64>();
            rows += 1;
        }
    }
    if rows == 0 { 0.0 } else { s / rows as f64 }
}

fn pair_divergence(a: &[SequenceAttention], b: &[SequenceAttention], ea: f64, eb: f64) -> f32 {
    let (mut s, mut rows) = (0.0f64, 0usize);
    for (x, y) in a.iter().zip(b) {
        for (rx, ry) in x.weights.iter_rows().zip(y.weights.iter_rows()) {
            s += rx
                .iter()
                .zip(ry)
                .map(|(&p, &q)| plogp((f64::from(p) + f64::from(q)) / 2.0))
                .sum::<f64>();
            rows += 1;
        }
    }
    if rows == 0 {
        return 0.0;
    }
    ((s / rows as f64 - (ea + eb) / 2.0).max(0.0)) as f32
}

/// Classical (Torgerson) MDS to 2D of `n` items from squared distances `d2` (`n x n`, row-major):
/// `B = -1/2 J D2 J`, its top two eigenvectors by power iteration on `B + sI` (`s` = the largest
/// absolute row sum, so every eigenvalue is shifted to be non-negative and the largest algebraic one
/// wins), coordinates `v * sqrt(max(lambda, 0))`. Deterministic: fixed start vector, fixed tolerance.
pub fn classical_mds(d2: &[f64], n: usize) -> Vec<[f32; 2]> {
    if n == 0 || d2.len() != n * n {
        return vec![[0.0, 0.0]; n];
    }
    let nf = n as f64;
    let row_mean: Vec<f64> = (0..n)
        .map(|i| d2[i * n..(i + 1) * n].iter().sum::<f64>() / nf)
        .collect();
    let grand = row_mean.iter().sum::<f64>() / nf;
    let mut b = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            // D2 is symmetric, so column means equal row means.
            b[i * n + j] = -0.5 * (d2[i * n + j] - row_mean[i] - row_mean[j] + grand);
        }
    }
    let shift = (0..n)
        .map(|i| b[i * n..(i + 1) * n].iter().map(|v| v.abs()).sum::<f64>())
        .fold(0.0f64, f64::max);
    let mut found: Vec<Vec<f64>> = Vec::new();
    let mut out = vec![[0.0f32; 2]; n];
    let ones = vec![1.0 / nf.sqrt(); n];
    for comp in 0..2 {
        let mut v: Vec<f64> = (0..n)
            .map(|i| 1.0 + ((i as f64 + 1.0) * 0.618_033_988_749_895).fract())
            .collect();
        // B's range is orthogonal to the constant vector; keep iterates there too.
        orthogonalize(&mut v, std::iter::once(&ones).chain(found.iter()));
        if !normalize(&mut v) {
            break;
        }
        for _ in 0..1000 {
            let mut w = matvec(&b, &v, n);
            for (wi, vi) in w.iter_mut().zip(&v) {
                *wi += shift * vi;
            }
            orthogonalize(&mut w, std::iter::once(&ones).chain(found.iter()));
            if !normalize(&mut w) {
                break;
            }
            let delta: f64 = w.iter().zip(&v).map(|(a, c)| (a - c).abs()).sum();
            v = w;
            if delta < 1e-12 {
                break;
            }
        }
        let bv = matvec(&b, &v, n);
        let lambda: f64 = bv.iter().zip(&v).map(|(a, c)| a * c).sum();
        // Fix the sign: the largest-magnitude entry (lowest index on ties) is positive.
        let mut k = 0;
        for i in 1..n {
            if v[i].abs() > v[k].abs() + 1e-12 {
                k = i;
            }
        }
        let sign = if v[k] < 0.0 { -1.0 } else { 1.0 };
        let scale = lambda.max(0.0).sqrt() * sign;
        for (o, vi) in out.iter_mut().zip(&v) {
            o[comp] = (vi * scale) as f32;
        }
        found.push(v);
    }
    out
}

fn matvec(m: &[f64], v: &[f64], n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            m[i * n..(i + 1) * n]
                .iter()
                .zip(v)
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect()
}

fn orthogonalize<'a>(v: &mut [f64], basis: impl Iterator<Item = &'a Vec<f64>>) {
    for u in basis {
        let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
        for (vi, ui) in v.iter_mut().zip(u) {
            *vi -= d * ui;
        }
    }
}

fn normalize(v: &mut [f64]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm < 1e-300 || !norm.is_finite() {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}
