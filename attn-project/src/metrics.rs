//! Projection quality: trustworthiness, continuity, kNN recall and distance rank correlation.
//!
//! Trustworthiness and continuity follow Venna & Kaski (2001) exactly as scikit-learn's
//! `trustworthiness` computes it: with `r(i, j)` the rank of `j` among `i`'s neighbours in input
//! space (1 = nearest, self excluded),
//! `T(k) = 1 - 2 / (n k (2n - 3k - 1)) * sum_i sum_{j in U_i} (r(i, j) - k)` where `U_i` are the
//! points among `i`'s `k` nearest in the embedding but not in input space. Continuity swaps the
//! roles of the two spaces. Ranks are exact (ties broken by index). Up to [`METRIC_EXACT_MAX_N`]
//! points every point is a query; above, a fixed seeded sample of that many query points is ranked
//! against all points and the sum is normalized by the sample size instead of `n`.
//! The embedding space is always Euclidean.

use attn_types::{Matrix, Metric, ProjectionQuality};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::ProjectError;
use crate::util::{check_data, metric_dist, prepare_rows, sq_dist};

/// Above this many points, rank-based metrics use this many sampled query points.
pub const METRIC_EXACT_MAX_N: usize = 4_000;
/// Seed of the query sample for large inputs (fixed, so metrics are reproducible).
const SAMPLE_SEED: u64 = 0x5eed;
/// Queries per parallel task.
const CHUNK: usize = 64;

fn check_pair(data: &Matrix, emb: &Matrix) -> Result<(), ProjectError> {
    check_data(data)?;
    check_data(emb)?;
    if data.rows() != emb.rows() {
        return Err(ProjectError::InvalidInput(format!(
            "data has {} rows but the embedding {}",
            data.rows(),
            emb.rows()
        )));
    }
    Ok(())
}

/// Sums over the query points: trustworthiness and continuity penalties and neighbour hits.
struct RankSums {
    trust: u64,
    cont: u64,
    hits: u64,
    queries: usize,
}

/// Indices of the `k` smallest `(dist, index)` pairs of `dist` (index `skip` excluded).
fn k_smallest(dist: &[f32], skip: usize, k: usize, buf: &mut Vec<(f32, u32)>) -> Vec<u32> {
    buf.clear();
    buf.extend(
        dist.iter()
            .enumerate()
            .filter(|&(j, _)| j != skip)
            .map(|(j, &d)| (d, j as u32)),
    );
    let cmp = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    buf.select_nth_unstable_by(k - 1, cmp);
    buf[..k].iter().map(|p| p.1).collect()
}

/// 1-based rank of `j` among all points but `skip` by `(dist, index)`.
fn rank_of(dist: &[f32], skip: usize, j: usize) -> u64 {
    let dj = dist[j];
    let mut r = 1u64;
    for (l, &d) in dist.iter().enumerate() {
        if l != skip && l != j && (d < dj || (d == dj && l < j)) {
            r += 1;
        }
    }
    r
}

fn rank_sums(
    data: &Matrix,
    emb: &Matrix,
    k: usize,
    metric: Metric,
    max_queries: usize,
) -> Result<RankSums, ProjectError> {
    check_pair(data, emb)?;
    let n = data.rows();
    if k == 0 || 2 * k >= n {
        return Err(ProjectError::InvalidParam {
            name: "k",
            reason: format!("must be in 1..n/2 (n = {n}), got {k}"),
        });
    }
    if max_queries == 0 {
        return Err(ProjectError::InvalidParam {
            name: "max_queries",
            reason: "must be at least 1".into(),
        });
    }
    let queries: Vec<usize> = if n <= max_queries {
        (0..n).collect()
    } else {
        let mut q = sample(&mut ChaCha8Rng::seed_from_u64(SAMPLE_SEED), n, max_queries).into_vec();
        q.sort_unstable();
        q
    };
    let d = data.cols();
    let e = emb.cols();
    let rows = prepare_rows(data, metric);
    let coords = emb.as_slice();
    let parts: Vec<(u64, u64, u64)> = queries
        .par_chunks(CHUNK)
        .map(|qs| {
            let mut din = vec![0f32; n];
            let mut dout = vec![0f32; n];
            let mut buf = Vec::with_capacity(n);
            let (mut t, mut c, mut h) = (0u64, 0u64, 0u64);
            for &i in qs {
                let ri = &rows[i * d..(i + 1) * d];
                let ei = &coords[i * e..(i + 1) * e];
                for j in 0..n {
                    din[j] = metric_dist(ri, &rows[j * d..(j + 1) * d], metric);
                    dout[j] = sq_dist(ei, &coords[j * e..(j + 1) * e]);
                }
                let nin = k_smallest(&din, i, k, &mut buf);
                let nout = k_smallest(&dout, i, k, &mut buf);
                for &j in &nout {
                    if nin.contains(&j) {
                        h += 1;
                    } else {
                        t += rank_of(&din, i, j as usize) - k as u64;
                    }
                }
                for &j in &nin {
                    if !nout.contains(&j) {
                        c += rank_of(&dout, i, j as usize) - k as u64;
                    }
                }
            }
            (t, c, h)
        })
        .collect();
    let mut s = RankSums {
        trust: 0,
        cont: 0,
        hits: 0,
        queries: queries.len(),
    };
    for (t, c, h) in parts {
        s.trust += t;
        s.cont += c;
        s.hits += h;
    }
    Ok(s)
}

fn normalize(sum: u64, m: usize, n: usize, k: usize) -> f32 {
    let (m, n, k) = (m as f64, n as f64, k as f64);
    (1.0 - 2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0)) * sum as f64) as f32
}

/// Trustworthiness at `k` (1 = every embedding neighbour is a true neighbour); `k < n / 2`.
pub fn trustworthiness(
    data: &Matrix,
    emb: &Matrix,
    k: usize,
    metric: Metric,
) -> Result<f32, ProjectError> {
    Ok(quality(data, emb, k, metric)?.trustworthiness)
}

/// Continuity at `k` (1 = every true neighbour stays a neighbour in the embedding); `k < n / 2`.
pub fn continuity(
    data: &Matrix,
    emb: &Matrix,
    k: usize,
    metric: Metric,
) -> Result<f32, ProjectError> {
    Ok(quality(data, emb, k, metric)?.continuity)
}

/// Fraction of each point's `k` input-space neighbours that are among its `k` embedding
/// neighbours, averaged over (sampled) points; `k < n / 2`.
pub fn knn_recall_at_k(
    data: &Matrix,
    emb: &Matrix,
    k: usize,
    metric: Metric,
) -> Result<f32, ProjectError> {
    Ok(quality(data, emb, k, metric)?.knn_recall)
}

/// Trustworthiness, continuity and kNN recall in one pass (exact up to [`METRIC_EXACT_MAX_N`] points,
/// a fixed sample of that many query points above).
pub fn quality(
    data: &Matrix,
    emb: &Matrix,
    k: usize,
    metric: Metric,
) -> Result<ProjectionQuality, ProjectError> {
    quality_sampled(data, emb, k, metric, METRIC_EXACT_MAX_N)
}

/// [`quality`] ranking at most `max_queries` query points (a fixed seeded sample) against all points:
/// the cost is linear in `max_queries`, the standard error of trustworthiness about
/// `sd / sqrt(max_queries)`.
pub fn quality_sampled(
    data: &Matrix,
    emb: &Matrix,
    k: usize,
    metric: Metric,
    max_queries: usize,
) -> Result<ProjectionQuality, ProjectError> {
    let s = rank_sums(data, emb, k, metric, max_queries)?;
    let n = data.rows();
    Ok(ProjectionQuality {
        trustworthiness: normalize(s.trust, s.queries, n, k),
        continuity: normalize(s.cont, s.queries, n, k),
        knn_recall: s.hits as f32 / (s.queries * k) as f32,
        k: k as u32,
    })
}

/// Average ranks (1-based, ties share their mean rank).
fn ranks(v: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0f64; v.len()];
    let mut s = 0;
    while s < order.len() {
        let mut e = s + 1;
        while e < order.len() && v[order[e]] == v[order[s]] {
            e += 1;
        }
        let avg = (s + e + 1) as f64 / 2.0;
        for &o in &order[s..e] {
            r[o] = avg;
        }
        s = e;
    }
    r
}

/// Spearman rank correlation between input distances (`metric`) and embedding Euclidean distances
/// over all pairs of `sample` points drawn with `seed` (all points if `sample >= n`). Needs at
/// least 3 points; returns 0 when either set of distances is constant.
pub fn distance_spearman(
    data: &Matrix,
    emb: &Matrix,
    metric: Metric,
    sample_size: usize,
    seed: u64,
) -> Result<f32, ProjectError> {
    check_pair(data, emb)?;
    let n = data.rows();
    let s = sample_size.min(n);
    if s < 3 {
        return Err(ProjectError::InvalidParam {
            name: "sample",
            reason: format!("need at least 3 points, got {s}"),
        });
    }
    let mut idx = sample(&mut ChaCha8Rng::seed_from_u64(seed), n, s).into_vec();
    idx.sort_unstable();
    let rows = prepare_rows(data, metric);
    let (d, e) = (data.cols(), emb.cols());
    let c = emb.as_slice();
    let mut din = Vec::with_capacity(s * (s - 1) / 2);
    let mut dout = Vec::with_capacity(s * (s - 1) / 2);
    for (a, &i) in idx.iter().enumerate() {
        for &j in &idx[a + 1..] {
            din.push(metric_dist(
                &rows[i * d..(i + 1) * d],
                &rows[j * d..(j + 1) * d],
                metric,
            ));
            dout.push(sq_dist(&c[i * e..(i + 1) * e], &c[j * e..(j + 1) * e]));
        }
    }
    Ok(spearman(&din, &dout).map_or(0.0, |r| r as f32))
}

/// Spearman rank correlation of two equally long samples, with average ranks for ties (the Pearson
/// correlation of their [`ranks`]). `None` when either sample is constant (or empty).
pub(crate) fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    debug_assert_eq!(a.len(), b.len());
    let (ra, rb) = (ranks(a), ranks(b));
    let m = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / m, rb.iter().sum::<f64>() / m);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (a, b) in ra.iter().zip(&rb) {
        sab += (a - ma) * (b - mb);
        saa += (a - ma) * (a - ma);
        sbb += (b - mb) * (b - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return None;
    }
    Some(sab / (saa * sbb).sqrt())
}
