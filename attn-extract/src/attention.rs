//! Our own self-attention arithmetic, shared by the three families.
//!
//! burn-nn's `MultiHeadAttention` hides the query/key projections and the probabilities; the
//! extraction needs both, so every model computes one fused `[q | k | v]` projection and hands it here.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor, TensorData};

/// Additive logit bias that masks padding (and, when `causal`, future keys; with a `window`, keys
/// `window` or more positions back, as transformers' sliding-window mask).
///
/// Shape `[batch, 1, seq, seq]`, broadcast over heads: 0 where a query may attend to a key, a large
/// negative number elsewhere (exp underflows to exactly 0, as with transformers' `finfo.min`).
pub(crate) fn attention_bias(
    lengths: &[usize],
    seq: usize,
    causal: bool,
    window: Option<usize>,
    device: &Device,
) -> Tensor<4> {
    const MASKED: f32 = -1.0e9;
    let mut data = vec![0.0f32; lengths.len() * seq * seq];
    for (b, &len) in lengths.iter().enumerate() {
        let block = &mut data[b * seq * seq..(b + 1) * seq * seq];
        for q in 0..seq {
            for k in 0..seq {
                let outside_window = window.is_some_and(|w| q >= k + w);
                if k >= len || (causal && k > q) || outside_window {
                    block[q * seq + k] = MASKED;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [lengths.len(), 1, seq, seq]), device)
}

/// Scaled dot-product attention over a fused projection.
///
/// `qkv` is `[batch, seq, 3 * heads * head_dim]` laid out `[q | k | v]`, each block head-major (as
/// BERT's separate Linears concatenated, GPT-2's `c_attn` and ViT's query/key/value). Returns the
/// context `[batch, seq, heads * head_dim]` and the probabilities `[batch, heads, seq, seq]`.
pub(crate) fn attend(
    qkv: Tensor<3>,
    bias: Tensor<4>,
    heads: usize,
    head_dim: usize,
) -> (Tensor<3>, Tensor<4>) {
    let [batch, seq, _] = qkv.dims();
    let hidden = heads * head_dim;
    let split = |block: usize| {
        qkv.clone()
            .narrow(2, block * hidden, hidden)
            .reshape([batch, seq, heads, head_dim])
            .swap_dims(1, 2)
    };
    let (q, k, v) = (split(0), split(1), split(2));
    attend_heads(q, k, v, bias, 1.0 / (head_dim as f64).sqrt())
}

/// Scaled dot-product attention of `q` `[batch, heads, seq, d]` over `k`, `v`
/// `[batch, kv_heads, seq, d]`, where query head `h` reads key/value head `h / (heads / kv_heads)`
/// (grouped-query attention; `kv_heads == heads` is plain multi-head attention). Returns the context
/// `[batch, seq, heads * d]` and the probabilities `[batch, heads, seq, seq]`.
pub(crate) fn attend_heads(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Tensor<4>,
    scale: f64,
) -> (Tensor<3>, Tensor<4>) {
    let [batch, heads, seq, d] = q.dims();
    let kv_heads = k.dims()[1];
    let group = heads / kv_heads;
    // The query heads of one group are contiguous: fold them into the row axis so that each key
    // head is multiplied once, without repeating it `group` times as `repeat_kv` does.
    let scores = q
        .reshape([batch, kv_heads, group * seq, d])
        .matmul(k.swap_dims(2, 3))
        .reshape([batch, heads, seq, seq])
        .mul_scalar(scale)
        + bias;
    let probs = softmax(scores, 3);
    let context = probs
        .clone()
        .reshape([batch, kv_heads, group * seq, seq])
        .matmul(v)
        .reshape([batch, heads, seq, d])
        .swap_dims(1, 2)
        .reshape([batch, seq, heads * d]);
    (context, probs)
}

/// What one layer exposes to the extraction: the fused projection and the probabilities, as
/// tensors (burn's ops) or already in host memory (the CPU kernels).
// One per layer, moved straight into the sink: boxing the tensors would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum LayerTaps {
    Tensors {
        /// `[batch, seq, (heads + 2 * kv_heads) * head_dim]`: queries, keys, values (bias
        /// included, unscaled), each block head-major.
        qkv: Tensor<3>,
        /// `[batch, heads, seq, seq]`.
        probs: Tensor<4>,
    },
    /// The same two arrays in host memory, except that the rows of `qkv` are packed: sequence
    /// `b`'s tokens are rows `starts[b]..`, without padding between sequences.
    #[cfg_attr(not(feature = "flex"), allow(dead_code))] // made by the CPU kernels only
    Host {
        qkv: Vec<f32>,
        probs: Vec<f32>,
        starts: Vec<usize>,
    },
}

/// What one forward pass runs on.
pub(crate) struct ForwardRun<'a> {
    /// Tokens of each sequence of the batch.
    pub lengths: &'a [usize],
    /// The last layer to run (its attention is the last tap).
    pub last_layer: usize,
    /// Which queries and keys the taps hold (rotary models).
    pub rope: attn_types::RopeCapture,
    /// Use the CPU kernels on burn-flex.
    #[cfg_attr(not(feature = "flex"), allow(dead_code))]
    pub cpu_kernels: bool,
}

impl ForwardRun<'_> {
    /// Whether the pass runs on the CPU kernels: asked for, and on burn-flex (whose host buffers
    /// they read).
    #[cfg(feature = "flex")]
    pub(crate) fn on_cpu_kernels(&self, device: &Device) -> bool {
        self.cpu_kernels && *device == Device::flex()
    }
}

/// Receives the taps of a layer; returns an error to stop the forward pass.
pub(crate) type TapSink<'a> = dyn FnMut(usize, LayerTaps) -> crate::error::Result<()> + 'a;

/// The query/key/value projections of one layer (HF `attention.self` in BERT,
/// `attention.attention` in ViT); GPT-2 keeps its fused `c_attn` Conv1D instead.
#[derive(Module, Debug)]
pub struct QkvProjection {
    query: Linear,
    key: Linear,
    value: Linear,
    /// The `[q | k | v]` weight and bias, concatenated once by [`QkvProjection::fuse`] after the
    /// weights are loaded instead of on every forward pass.
    #[module(skip)]
    fused: Option<(Tensor<2>, Option<Tensor<1>>)>,
}

impl QkvProjection {
    /// Three projections, not yet fused.
    pub(crate) fn new(query: Linear, key: Linear, value: Linear) -> Self {
        Self {
            query,
            key,
            value,
            fused: None,
        }
    }

    /// Concatenates the loaded weights for [`QkvProjection::qkv`]; call again after changing them.
    pub(crate) fn fuse(&mut self) {
        self.fused = Some(self.concat());
    }

    fn concat(&self) -> (Tensor<2>, Option<Tensor<1>>) {
        let w = Tensor::cat(
            vec![
                self.query.weight.val(),
                self.key.weight.val(),
                self.value.weight.val(),
            ],
            1,
        );
        let b = [&self.query, &self.key, &self.value]
            .iter()
            .map(|l| l.bias.as_ref().map(|b| b.val()))
            .collect::<Option<Vec<_>>>()
            .map(|bs| Tensor::cat(bs, 0));
        (w, b)
    }

    /// One `[q | k | v]` projection: a single matmul instead of three.
    pub(crate) fn qkv(&self, x: Tensor<3>) -> Tensor<3> {
        let (w, b) = self.weights();
        linear(x, w, b)
    }

    /// The `[q | k | v]` weight `[in, 3 out]` and bias.
    pub(crate) fn weights(&self) -> (Tensor<2>, Option<Tensor<1>>) {
        self.fused.clone().unwrap_or_else(|| self.concat())
    }
}
