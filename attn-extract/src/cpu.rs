//! CPU kernels for the layers of every family on burn-flex.
//!
//! On the Llama-shaped benchmark model, burn-flex 0.22 spent a quarter of the pass outside the
//! matrix products of the projections, and ran those at three quarters of what the `gemm` crate
//! under it reaches: each op's result is a zeroed byte vector copied into an aligned buffer, every
//! reshape of the heads is materialized, and the softmax runs over the padded `seq x seq` scores of
//! every head. Here a layer is a few calls to that same `gemm`, each writing into its own buffer
//! (biases and the residual add fused into the product), one pass per sequence over its own keys for
//! the masked softmax, and row-parallel loops for the norms and the rotation. The weights stay in
//! burn's modules and are read in place. Other backends (ndarray, cuda) run burn's tensor ops, as
//! does flex with `ExtractOptions::cpu_kernels` off; the fixture tests compare both to transformers.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::error::{ExtractError, Result};
use crate::hf::to_f32;

/// Rows per rayon task in the element-wise kernels: enough work to amortize scheduling.
const ROWS_PER_TASK: usize = 8;

/// An f32 matrix `[rows, cols]` in a burn-flex buffer, read in place with its own strides (the
/// checkpoint loader leaves linear weights transposed views of the stored `[out, in]` tensors).
pub(crate) struct HostMatrix {
    tensor: FlexTensor,
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl HostMatrix {
    /// `t` (widened to f32 when stored in half precision) as burn-flex holds it.
    pub(crate) fn of(t: Tensor<2>) -> Result<Self> {
        let tensor = to_f32(t)
            .try_into_primitive::<Flex>()
            .map_err(|e| ExtractError::Backend(format!("CPU kernels need burn-flex: {e:?}")))?;
        let layout = tensor.layout();
        let (shape, strides) = (layout.shape(), layout.strides());
        let (rows, cols) = (shape[0], shape[1]);
        let (row_stride, col_stride) = (strides[0], strides[1]);
        // Every element the strides reach lies inside the buffer (the kernels read through raw
        // pointers); views burn-flex makes of weights have non-negative strides.
        let last = layout.start_offset() as isize
            + (rows.max(1) as isize - 1) * row_stride
            + (cols.max(1) as isize - 1) * col_stride;
        let len = tensor.storage::<f32>().len() as isize;
        if row_stride < 0 || col_stride < 0 || last >= len {
            return Err(ExtractError::Backend(format!(
                "unexpected weight layout: shape [{rows}, {cols}], strides {strides:?}"
            )));
        }
        Ok(Self {
            tensor,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    fn operand(&self) -> Operand {
        let start = self.tensor.layout().start_offset();
        Operand {
            ptr: self.tensor.storage::<f32>()[start..].as_ptr(),
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }
}

/// `x W + b`: a weight `[in, out]` as burn-flex holds it and its bias, read for the kernels.
pub(crate) struct Affine {
    weight: HostMatrix,
    bias: Option<Vec<f32>>,
}

impl Affine {
    /// `weight` `[in, out]` and `bias`.
    pub(crate) fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Result<Self> {
        Ok(Self {
            weight: HostMatrix::of(weight)?,
            bias: bias.map(host_vector).transpose()?,
        })
    }

    /// A burn `Linear` layer.
    pub(crate) fn linear(lin: &burn::nn::Linear) -> Result<Self> {
        Self::new(lin.weight.val(), lin.bias.as_ref().map(|b| b.val()))
    }
}

/// A LayerNorm's scale and shift, read for the kernels.
pub(crate) struct Norm {
    gamma: Vec<f32>,
    beta: Option<Vec<f32>>,
}

impl Norm {
    /// A burn `LayerNorm` (its epsilon is the model's, kept beside it).
    pub(crate) fn layer_norm(norm: &burn::nn::LayerNorm) -> Result<Self> {
        Ok(Self {
            gamma: host_vector(norm.gamma.val())?,
            beta: norm
                .beta
                .as_ref()
                .map(|b| host_vector(b.val()))
                .transpose()?,
        })
    }
}

/// The first row of each sequence when sequences of `lengths` rows are packed one after another.
pub(crate) fn starts(lengths: &[usize]) -> Vec<usize> {
    lengths
        .iter()
        .scan(0, |next, &len| {
            let start = *next;
            *next += len;
            Some(start)
        })
        .collect()
}

/// `t` (a bias or norm weight) as an f32 vector.
pub(crate) fn host_vector(t: Tensor<1>) -> Result<Vec<f32>> {
    crate::to_vec(to_f32(t))
}

/// A matrix operand of [`gemm`]: element `(i, j)` at `ptr + i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
struct Operand {
    ptr: *const f32,
    row_stride: isize,
    col_stride: isize,
}

/// `dst[m, n] = (dst if accumulate) + scale * lhs[m, k] rhs[k, n]`, `dst` row-major with row stride
/// `dst_row_stride`; on the rayon threads when `parallel`.
///
/// # Safety
/// Every element of the three matrices, as their strides place them, is in bounds of its
/// allocation, and `dst` overlaps neither input.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_row_stride: usize,
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
    scale: f32,
    parallel: bool,
) {
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract; gemm reads `dst` only when `accumulate`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `out += x W + b` (a residual add): `x` is `[rows, W.rows]`, `out` `[rows, W.cols]`, both
/// row-major.
pub(crate) fn add_linear(x: &[f32], rows: usize, affine: &Affine, out: &mut [f32]) {
    let (w, bias) = (&affine.weight, affine.bias.as_deref());
    let (k, n) = (w.rows, w.cols);
    assert!(
        x.len() == rows * k && out.len() == rows * n,
        "add_linear: x {} values for {rows} rows of {k}, out {} values for rows of {n}",
        x.len(),
        out.len(),
    );
    if rows == 0 {
        return;
    }
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "add_linear: bias length");
        out.par_chunks_mut(n * ROWS_PER_TASK).for_each(|chunk| {
            for row in chunk.chunks_mut(n) {
                row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
            }
        });
    }
    let lhs = Operand {
        ptr: x.as_ptr(),
        row_stride: k as isize,
        col_stride: 1,
    };
    // SAFETY: `x` is `[rows, k]` and `out` `[rows, n]` with `rows >= 1` (asserted above), `w` was
    // bounds-checked by `HostMatrix::of`; `out` is a distinct, exclusively borrowed buffer.
    unsafe {
        gemm(
            rows,
            n,
            k,
            out.as_mut_ptr(),
            n,
            true,
            lhs,
            w.operand(),
            1.0,
            true,
        );
    }
}

/// `x W + b` (`x` `[rows, W.rows]`) as a new `[rows, W.cols]` buffer.
pub(crate) fn linear(x: &[f32], rows: usize, affine: &Affine) -> Vec<f32> {
    side_by_side(x, rows, &[affine])
}

/// The products `x W_i + b_i` (`x` `[rows, W_i.rows]`) side by side in each row of a new `[rows,
/// sum of W_i.cols]` buffer (the `[q | k | v]` rows of a layer). The buffer starts as the biases
/// (without any, uninitialized) and the products add to it: zeroing it first cost as much as a
/// tenth of a product.
pub(crate) fn side_by_side(x: &[f32], rows: usize, parts: &[&Affine]) -> Vec<f32> {
    let k = parts.first().map_or(0, |a| a.weight.rows);
    let width: usize = parts.iter().map(|a| a.weight.cols).sum();
    assert!(
        x.len() == rows * k && parts.iter().all(|a| a.weight.rows == k),
        "side_by_side: {} values for {rows} rows of {k}",
        x.len()
    );
    if rows == 0 || width == 0 {
        return vec![0.0; rows * width];
    }
    let biased = parts.iter().any(|a| a.bias.is_some());
    let mut out: Vec<f32> = Vec::with_capacity(rows * width);
    if biased {
        let row: Vec<f32> = parts
            .iter()
            .flat_map(|a| a.bias.clone().unwrap_or_else(|| vec![0.0; a.weight.cols]))
            .collect();
        for _ in 0..rows {
            out.extend_from_slice(&row);
        }
    }
    let dst = out.spare_capacity_mut().as_mut_ptr().cast::<f32>();
    let dst = if biased { out.as_mut_ptr() } else { dst };
    let lhs = Operand {
        ptr: x.as_ptr(),
        row_stride: k as isize,
        col_stride: 1,
    };
    let mut col = 0;
    for Affine { weight: w, .. } in parts.iter().copied() {
        // SAFETY: `x` is `[rows, k]` (asserted), `w` was bounds-checked by `HostMatrix::of`, and
        // columns `col..col + w.cols` of the `rows >= 1` rows of `width` lie within the
        // allocation (initialized when `biased`, which the product then reads).
        unsafe {
            gemm(
                rows,
                w.cols,
                k,
                dst.add(col),
                width,
                biased,
                lhs,
                w.operand(),
                1.0,
                true,
            );
        }
        col += w.cols;
    }
    if !biased {
        // SAFETY: the products wrote every column (their widths sum to `width`) of every row.
        unsafe { out.set_len(rows * width) };
    }
    out
}

/// The real rows of a `[batch, seq, width]` right-padded buffer, packed: `[sum of lengths, width]`.
pub(crate) fn pack_rows(padded: &[f32], width: usize, seq: usize, lengths: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(lengths.iter().sum::<usize>() * width);
    for (b, &len) in lengths.iter().enumerate() {
        out.extend_from_slice(&padded[b * seq * width..(b * seq + len) * width]);
    }
    out
}

/// `x` (`[sum of lengths, width]`, sequences one after another) cut into one slice per sequence.
fn sequences_mut<'a>(x: &'a mut [f32], width: usize, lengths: &[usize]) -> Vec<&'a mut [f32]> {
    let mut rest = x;
    let mut out = Vec::with_capacity(lengths.len());
    for &len in lengths {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len * width);
        out.push(head);
        rest = tail;
    }
    out
}

/// transformers' `LlamaRMSNorm` of every `width`-wide row of `x`: `gamma * (x / sqrt(mean(x^2) +
/// eps))`, into a new buffer.
pub(crate) fn rms_norm(x: &[f32], width: usize, gamma: &[f32], eps: f64) -> Vec<f32> {
    let mut out = x.to_vec();
    rms_norm_in_place(&mut out, width, 0, width, gamma, eps);
    out
}

/// [`rms_norm`] in place of every `gamma.len()`-wide slice of the columns `from..to` of each
/// `width`-wide row (Qwen3's per-head query/key norms: one slice per head).
pub(crate) fn rms_norm_in_place(
    x: &mut [f32],
    width: usize,
    from: usize,
    to: usize,
    gamma: &[f32],
    eps: f64,
) {
    let n = gamma.len();
    assert!(
        n > 0
            && from <= to
            && to <= width
            && (to - from).is_multiple_of(n)
            && x.len().is_multiple_of(width),
        "rms_norm_in_place: columns {from}..{to} of {width} in slices of {n}"
    );
    let eps = eps as f32;
    x.par_chunks_mut(width * ROWS_PER_TASK).for_each(|chunk| {
        for row in chunk.chunks_mut(width) {
            for v in row[from..to].chunks_mut(n) {
                let mean = v.iter().map(|a| a * a).sum::<f32>() / n as f32;
                let inv = 1.0 / (mean + eps).sqrt();
                v.iter_mut()
                    .zip(gamma)
                    .for_each(|(a, g)| *a = g * (*a * inv));
            }
        }
    });
}

/// `LayerNorm` in place of every `width`-wide row of `x`: `(x - mean) / sqrt(var + eps) * gamma +
/// beta`, with the biased variance (torch's).
pub(crate) fn layer_norm_in_place(x: &mut [f32], width: usize, norm: &Norm, eps: f64) {
    let eps = eps as f32;
    let (gamma, beta) = (&norm.gamma, norm.beta.as_deref());
    x.par_chunks_mut(width * ROWS_PER_TASK).for_each(|chunk| {
        for row in chunk.chunks_mut(width) {
            let mean = row.iter().sum::<f32>() / width as f32;
            let var = row.iter().map(|a| (a - mean) * (a - mean)).sum::<f32>() / width as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for (i, a) in row.iter_mut().enumerate() {
                let shift = beta.map_or(0.0, |b| b[i]);
                *a = (*a - mean) * inv * gamma[i] + shift;
            }
        }
    });
}

/// The weights of one block of a LayerNorm transformer (BERT, GPT-2, ViT), read for the kernels.
pub(crate) struct NormBlock {
    /// The fused `[q | k | v]` projection.
    pub qkv: Affine,
    pub attention_out: Affine,
    /// Before the attention (pre-norm) or after its residual add (post-norm).
    pub norm1: Norm,
    /// The MLP's first and second layer.
    pub fc: Affine,
    pub proj: Affine,
    /// Before the MLP (pre-norm) or after its residual add (post-norm).
    pub norm2: Norm,
}

/// A BERT or ViT layer's parts, as [`NormBlock::encoder`] reads them: the fused q/k/v projection,
/// the attention output, the two norms (in block order), the MLP's two layers.
pub(crate) type EncoderParts<'a> = (
    &'a crate::attention::QkvProjection,
    &'a burn::nn::Linear,
    (&'a burn::nn::LayerNorm, &'a burn::nn::LayerNorm),
    &'a burn::nn::Linear,
    &'a burn::nn::Linear,
);

impl NormBlock {
    /// A BERT or ViT layer.
    pub(crate) fn encoder(
        (qkv, attention_out, (norm1, norm2), fc, proj): EncoderParts<'_>,
    ) -> Result<Self> {
        let (w, b) = qkv.weights();
        Ok(Self {
            qkv: Affine::new(w, b)?,
            attention_out: Affine::linear(attention_out)?,
            norm1: Norm::layer_norm(norm1)?,
            fc: Affine::linear(fc)?,
            proj: Affine::linear(proj)?,
            norm2: Norm::layer_norm(norm2)?,
        })
    }
}

/// How the blocks of a LayerNorm transformer are arranged.
pub(crate) struct NormStack {
    /// GPT-2, ViT: `x + f(LN(x))`; BERT (false): `LN(x + f(x))`.
    pub pre_norm: bool,
    pub heads: usize,
    pub causal: bool,
    pub eps: f64,
    pub activation: crate::hf::Activation,
}

/// Blocks `0..=run.last_layer` of a LayerNorm transformer on the embeddings `x` `[batch, seq,
/// hidden]` (right-padded to `run.lengths`), handing each block's taps to `sink`; `block(l)` reads
/// block `l`'s weights.
pub(crate) fn norm_blocks(
    x: Tensor<3>,
    stack: &NormStack,
    run: &crate::attention::ForwardRun<'_>,
    block: impl Fn(usize) -> Result<NormBlock>,
    sink: &mut crate::attention::TapSink<'_>,
) -> Result<()> {
    let [_, seq, hidden] = x.dims();
    let mut x = pack_rows(&crate::to_vec(x)?, hidden, seq, run.lengths);
    let rows: usize = run.lengths.iter().sum();
    let starts = starts(run.lengths);
    let head_dim = hidden / stack.heads;
    let shape = AttentionShape {
        lengths: run.lengths,
        seq,
        heads: stack.heads,
        kv_heads: stack.heads,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
        causal: stack.causal,
        window: None,
    };
    let normed = |x: &[f32], norm: &Norm| {
        let mut h = x.to_vec();
        layer_norm_in_place(&mut h, hidden, norm, stack.eps);
        h
    };
    for l in 0..=run.last_layer {
        let b = block(l)?;
        let qkv = if stack.pre_norm {
            linear(&normed(&x, &b.norm1), rows, &b.qkv)
        } else {
            linear(&x, rows, &b.qkv)
        };
        let (context, probs) = attend(&qkv, &shape);
        let starts = starts.clone();
        sink(l, crate::attention::LayerTaps::Host { qkv, probs, starts })?;
        if l == run.last_layer {
            // Nothing after the last captured attention is read.
            break;
        }
        add_linear(&context, rows, &b.attention_out, &mut x);
        let mut inner = if stack.pre_norm {
            linear(&normed(&x, &b.norm2), rows, &b.fc)
        } else {
            layer_norm_in_place(&mut x, hidden, &b.norm1, stack.eps);
            linear(&x, rows, &b.fc)
        };
        crate::host::activate(&mut inner, stack.activation);
        add_linear(&inner, rows, &b.proj, &mut x);
        if !stack.pre_norm {
            layer_norm_in_place(&mut x, hidden, &b.norm2, stack.eps);
        }
    }
    Ok(())
}

/// transformers' `apply_rotary_pos_emb` in place on the `heads` heads of `d` columns at the start of
/// each `width`-wide row of `x` (the packed rows of sequences of `lengths` tokens): `x cos +
/// rotate_half(x) sin` with `cos`, `sin` the `[positions, d]` tables.
pub(crate) fn rotate(
    x: &mut [f32],
    width: usize,
    lengths: &[usize],
    (heads, d): (usize, usize),
    cos: &[f32],
    sin: &[f32],
) {
    let half = d / 2;
    sequences_mut(x, width, lengths)
        .into_par_iter()
        .for_each(|sequence| {
            for (t, row) in sequence.chunks_mut(width).enumerate() {
                let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
                for head in row[..heads * d].chunks_mut(d) {
                    let (first, second) = head.split_at_mut(half);
                    for i in 0..half {
                        let (a, b) = (first[i], second[i]);
                        first[i] = a * c[i] + -b * s[i];
                        second[i] = b * c[half + i] + a * s[half + i];
                    }
                }
            }
        });
}

/// The shape of one attention layer over a batch of sequences whose rows are packed one after
/// another.
pub(crate) struct AttentionShape<'a> {
    /// Each sequence's number of tokens.
    pub lengths: &'a [usize],
    /// The longest sequence: the probabilities are `[batch, heads, seq, seq]`.
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Logit scale (`1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Each query attends to the keys up to its own position only (decoders).
    pub causal: bool,
    /// Keys this many positions back or more are masked (sliding-window layers).
    pub window: Option<usize>,
}

/// Grouped-query attention (causal when `shape.causal`) over `qkv` (the packed rows of `[q | k | v]`, `(heads + 2
/// kv_heads) d` wide, head-major): returns the context (packed rows, `heads d` wide) and the
/// probabilities `[batch, heads, seq, seq]` (zero outside each sequence's own causal, windowed
/// keys; padding rows zero). Query head `h` reads key/value head `h / (heads / kv_heads)`.
pub(crate) fn attend(qkv: &[f32], shape: &AttentionShape<'_>) -> (Vec<f32>, Vec<f32>) {
    let &AttentionShape {
        lengths,
        seq,
        heads,
        kv_heads,
        head_dim: d,
        scale,
        causal,
        window,
    } = shape;
    let width = (heads + 2 * kv_heads) * d;
    let batch = lengths.len();
    let total: usize = lengths.iter().sum();
    // Computed here, not taken from the caller: the blocks' writes into `context` are disjoint
    // only for these starts.
    let starts = starts(lengths);
    assert!(
        qkv.len() == total * width
            && lengths.iter().all(|&l| l <= seq)
            && kv_heads > 0
            && heads.is_multiple_of(kv_heads),
        "attend: {} values for {total} rows of {width}, {heads} heads over {kv_heads} key heads",
        qkv.len()
    );
    if seq == 0 || heads == 0 || d == 0 {
        return (
            vec![0.0; total * heads * d],
            vec![0.0; batch * heads * seq * seq],
        );
    }
    let group = heads / kv_heads;
    let mut probs = vec![0.0f32; batch * heads * seq * seq];
    let mut context = vec![0.0f32; total * heads * d];
    let context_ptr = SharedMut(context.as_mut_ptr());
    probs
        .par_chunks_mut(seq * seq)
        .enumerate()
        .for_each(|(block, p)| {
            let (b, h) = (block / heads, block % heads);
            let len = lengths[b];
            if len == 0 {
                return;
            }
            let g = h / group;
            let rows = starts[b] * width;
            let operand = |col: usize, row_stride: isize, col_stride: isize| Operand {
                ptr: qkv[rows + col..].as_ptr(),
                row_stride,
                col_stride,
            };
            let q = operand(h * d, width as isize, 1);
            // K transposed: element (i, j) is coordinate i of key j.
            let k_t = operand((heads + g) * d, 1, width as isize);
            let v = operand((heads + kv_heads + g) * d, width as isize, 1);
            // SAFETY: the sequence's `len` rows from `starts[b]` hold its q, k and v columns
            // (asserted above); `p` is this block's exclusive `[seq, seq]` slice.
            unsafe {
                gemm(
                    len,
                    len,
                    d,
                    p.as_mut_ptr(),
                    seq,
                    false,
                    q,
                    k_t,
                    scale,
                    false,
                )
            };
            for (t, row) in p.chunks_mut(seq).take(len).enumerate() {
                let end = if causal { t + 1 } else { len };
                let first = window.map_or(0, |w| (t + 1).saturating_sub(w));
                let (head, rest) = row[..end].split_at_mut(first);
                head.fill(0.0);
                softmax(rest);
                row[end..len].fill(0.0);
            }
            let probs_operand = Operand {
                ptr: p.as_ptr(),
                row_stride: seq as isize,
                col_stride: 1,
            };
            // SAFETY: rows `starts[b] .. starts[b] + len`, columns `h d .. (h + 1) d` of `context` are
            // written by this block alone (blocks differ in `b` or `h`); the inputs are in bounds
            // as above.
            unsafe {
                let out = context_ptr.at(starts[b] * heads * d + h * d);
                gemm(
                    len,
                    d,
                    len,
                    out,
                    heads * d,
                    false,
                    probs_operand,
                    v,
                    1.0,
                    false,
                );
            }
        });
    (context, probs)
}

/// A pointer written from several rayon tasks, each to its own disjoint cells.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
impl SharedMut {
    /// The cell `offset` places past the start.
    ///
    /// # Safety
    /// `offset` is within the allocation.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(offset) }
    }
}

// SAFETY: only used where the writers' regions are disjoint (see `attend`).
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

/// Softmax of `row` in place (torch's: `exp(x - max) / sum`).
fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}
