//! The attention of an imported head: computed from its vectors, or read from `--attention` and checked.

use std::path::Path;

use attn_project::AttendedKeys;
use attn_store::NpyFile;
use attn_types::{HeadId, HeadVectors, Matrix, SequenceAttention, SequenceSpan};

use crate::error::{Context, Result, bail, input};

use super::vectors::{grid_shape, open_npy};

/// Row sums of given attention must be within this of 1 (float16 inputs round to ~1e-3).
pub(super) const ROW_SUM_TOLERANCE: f64 = 1e-2;
/// Weights of given attention at padded or (causal) future positions must not exceed this.
pub(super) const ZERO_TOLERANCE: f32 = 1e-6;

/// `softmax(scale * q . k)` of every sequence (`scale` is `1/sqrt(d)` for standard attention) over
/// the keys each query may attend to (`keys`: causal mask, sliding window; the others get 0). Exact
/// for scaled dot-product attention whose scores have no other terms.
pub fn compute_attention(
    vectors: &HeadVectors,
    spans: &[SequenceSpan],
    keys: impl Into<AttendedKeys>,
    scale: f64,
) -> Result<Vec<SequenceAttention>> {
    let keys = keys.into();
    spans
        .iter()
        .map(|span| {
            let len = span.len;
            let mut w = vec![0f32; len * len];
            let mut logits = vec![0f64; len];
            for qi in 0..len {
                let q = vectors.queries().row(span.start + qi);
                let visible = keys.range(qi, len);
                let mut max = f64::NEG_INFINITY;
                for kj in visible.clone() {
                    let k = vectors.keys().row(span.start + kj);
                    logits[kj] = f64::from(dot(q, k)) * scale;
                    max = max.max(logits[kj]);
                }
                let mut sum = 0.0;
                for kj in visible.clone() {
                    logits[kj] = (logits[kj] - max).exp();
                    sum += logits[kj];
                }
                for kj in visible {
                    w[qi * len + kj] = (logits[kj] / sum) as f32;
                }
            }
            Ok(SequenceAttention {
                seq_id: span.seq_id,
                weights: Matrix::from_vec(len, len, w)?,
            })
        })
        .collect()
}

/// `a . b` with eight independent f32 accumulators (vectorizes; long sums stay accurate).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Opens `--attention` and checks its shape against the vectors' `[layers, heads, n]`.
pub(super) fn open_attention(
    path: &Path,
    layers: u16,
    heads: u16,
    n: usize,
    max_len: usize,
) -> Result<(NpyFile, usize)> {
    let f = open_npy("--attention", path)?;
    let [l, h, rows, width] = grid_shape("--attention", &f, "n, max_len")?;
    if (l, h, rows) != (usize::from(layers), usize::from(heads), n) {
        bail!(
            "--attention {}: shape {:?} does not match the vectors' {layers} layers x {heads} heads x {n} tokens",
            path.display(),
            f.shape()
        );
    }
    if width < max_len {
        bail!(
            "--attention {}: rows of {width} weights, but the longest sequence has {max_len} tokens",
            path.display()
        );
    }
    Ok((f, width))
}

/// One head's given attention, checked: weights finite and non-negative, padding zero, rows summing
/// to 1, and nothing on keys the query may not attend to (after it when causal, before the window).
pub(super) fn read_attention(
    f: &NpyFile,
    width: usize,
    head: HeadId,
    array_layer: usize,
    heads: u16,
    spans: &[SequenceSpan],
    keys: AttendedKeys,
) -> Result<Vec<SequenceAttention>> {
    let n: usize = spans.iter().map(|s| s.len).sum();
    let start = (array_layer * usize::from(heads) + usize::from(head.head)) * n * width;
    let data = f
        .read_f32(start, n * width)
        .with_context(|| "--attention".to_string())?;
    let fail = |token: usize, what: String| {
        input!(
            "--attention {}: head {head}, token {token}: {what}",
            f.path().display()
        )
    };
    spans
        .iter()
        .map(|span| {
            let len = span.len;
            let mut w = Vec::with_capacity(len * len);
            for qi in 0..len {
                let token = span.start + qi;
                let row = &data[token * width..(token + 1) * width];
                if let Some(v) = row.iter().find(|v| !v.is_finite() || **v < 0.0) {
                    return Err(fail(token, format!("weight {v} is not a probability")));
                }
                if let Some(p) = row[len..].iter().position(|v| *v > ZERO_TOLERANCE) {
                    return Err(fail(
                        token,
                        format!("weight {} at position {} beyond its sequence of {len} tokens (padding must be 0)", row[len + p], len + p),
                    ));
                }
                let visible = keys.range(qi, len);
                if let Some(p) = row[visible.end..len].iter().position(|v| *v > ZERO_TOLERANCE) {
                    let j = visible.end + p;
                    return Err(fail(
                        token,
                        format!("--causal, but position {qi} attends to the later position {j} ({})", row[j]),
                    ));
                }
                if let Some(j) = row[..visible.start].iter().position(|v| *v > ZERO_TOLERANCE) {
                    return Err(fail(
                        token,
                        format!(
                            "--window {}, but position {qi} attends to position {j} ({}), {} positions back",
                            keys.window.unwrap_or_default(),
                            row[j],
                            qi - j
                        ),
                    ));
                }
                let sum: f64 = row[..len].iter().map(|v| f64::from(*v)).sum();
                if (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
                    return Err(fail(token, format!("weights sum to {sum:.4}, not 1 (are these logits rather than probabilities?)")));
                }
                w.extend_from_slice(&row[..len]);
            }
            Ok(SequenceAttention { seq_id: span.seq_id, weights: Matrix::from_vec(len, len, w)? })
        })
        .collect()
}
