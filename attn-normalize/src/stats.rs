//! Rank and weighted correlations (f64 internally).

/// Spearman rank correlation of `a` and `b`: the Pearson correlation of their ranks, tied values
/// receiving the average of the ranks they span.
///
/// Returns `NaN` when it is undefined: different lengths, fewer than two values, a NaN input, or a
/// constant input (zero rank variance).
///
/// ```
/// let r = attn_normalize::spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]);
/// assert!((r - 1.0).abs() < 1e-6);
/// ```
pub fn spearman(a: &[f32], b: &[f32]) -> f32 {
    let a: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    spearman_f64(&a, &b) as f32
}

/// [`spearman`] on f64 values.
pub(crate) fn spearman_f64(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.len() < 2 || a.iter().chain(b).any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let ra = average_ranks(a);
    let rb = average_ranks(b);
    pearson(&ra, &rb)
}

/// 1-based ranks with ties averaged.
pub(crate) fn average_ranks(v: &[f64]) -> Vec<f64> {
    // Sorting (value, index) pairs keeps the comparison cache-friendly; the index breaks ties, so
    // the order is total and the result reproducible.
    let mut order: Vec<(f64, u32)> = v.iter().enumerate().map(|(i, &x)| (x, i as u32)).collect();
    order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut ranks = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && order[end].0 == order[start].0 {
            end += 1;
        }
        // Positions start..end (0-based) hold rank (start+1 + end) / 2 on average.
        let avg = (start + 1 + end) as f64 / 2.0;
        for &(_, i) in &order[start..end] {
            ranks[i as usize] = avg;
        }
        start = end;
    }
    ranks
}

/// Pearson correlation; NaN when a variance is zero.
pub(crate) fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (da, db) = (a - mx, b - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return f64::NAN;
    }
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

/// Weighted Pearson correlation of `(x, y)` with non-negative weights `w` (zero weights ignored);
/// NaN when the total weight or a weighted variance is zero.
pub(crate) fn weighted_pearson(x: &[f64], y: &[f64], w: &[f64]) -> f64 {
    let (mut sw, mut swx, mut swy) = (0.0, 0.0, 0.0);
    for ((&a, &b), &wi) in x.iter().zip(y).zip(w) {
        sw += wi;
        swx += wi * a;
        swy += wi * b;
    }
    if sw <= 0.0 {
        return f64::NAN;
    }
    let (mx, my) = (swx / sw, swy / sw);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for ((&a, &b), &wi) in x.iter().zip(y).zip(w) {
        if wi > 0.0 {
            let (da, db) = (a - mx, b - my);
            sxy += wi * da * db;
            sxx += wi * da * da;
            syy += wi * db * db;
        }
    }
    // Relative threshold: variances that are rounding noise would give a meaningless +-1.
    if sxx <= 1e-24 * sw || syy <= 1e-24 * sw {
        return f64::NAN;
    }
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 30.0, 20.0, 20.0]),
            vec![1.5, 4.0, 1.5, 6.0, 4.0, 4.0]
        );
    }

    #[test]
    fn spearman_hand_computed() {
        // No ties: d = rank differences (0, 0, 1, -1, 0) -> rho = 1 - 6*2/(5*24) = 0.9.
        let r = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 2.0, 4.0, 3.0, 5.0]);
        assert!((r - 0.9).abs() < 1e-6, "{r}");
        // Perfect reversal.
        let r = spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]);
        assert!((r + 1.0).abs() < 1e-6, "{r}");
        // Ties: a ranks (1, 2.5, 2.5, 4), b ranks (1, 2, 3, 4); Pearson of those by hand:
        // mean 2.5 each, deviations a (-1.5, 0, 0, 1.5), b (-1.5, -0.5, 0.5, 1.5):
        // sxy = 4.5, sxx = 4.5, syy = 5 -> 4.5 / sqrt(22.5) = 0.948683.
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[5.0, 6.0, 7.0, 8.0]);
        assert!((r - 4.5 / 22.5f32.sqrt()).abs() < 1e-6, "{r}");
        // Monotone but non-linear is still 1.
        let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 1000.0]);
        assert!((r - 1.0).abs() < 1e-6);
    }

    #[test]
    fn spearman_undefined_is_nan() {
        assert!(spearman(&[1.0], &[2.0]).is_nan());
        assert!(spearman(&[1.0, 2.0], &[2.0]).is_nan());
        assert!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_nan());
        assert!(spearman(&[1.0, f32::NAN], &[1.0, 2.0]).is_nan());
    }

    #[test]
    fn weighted_pearson_matches_replication() {
        // Integer weights equal replicating points.
        let x = [1.0, 2.0, 3.0, 5.0];
        let y = [2.0, 1.0, 4.0, 3.0];
        let w = [1.0, 3.0, 0.0, 2.0];
        let (mut xr, mut yr) = (Vec::new(), Vec::new());
        for i in 0..4 {
            for _ in 0..w[i] as usize {
                xr.push(x[i]);
                yr.push(y[i]);
            }
        }
        let a = weighted_pearson(&x, &y, &w);
        let b = pearson(&xr, &yr);
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        assert!(weighted_pearson(&x, &y, &[0.0; 4]).is_nan());
    }
}
