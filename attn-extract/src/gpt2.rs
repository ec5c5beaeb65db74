//! GPT-2: pre-LayerNorm decoder, tanh GELU, causal attention, `Conv1D` projections.

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::module::linear;
use burn::tensor::{Device, Int, Tensor};

use crate::attention::{ForwardRun, LayerTaps, TapSink, attend};
use crate::error::Result;
use crate::hf::{Activation, HfConfig, RemapRule, load_all_f32};

/// Hugging Face tensor names -> our module paths, applied in order to every key of the file.
const REMAP: &[RemapRule] = &[
    // GPT2LMHeadModel and friends nest the decoder under `transformer.`.
    (r"^transformer\.", ""),
    // Blocks: h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}.
    (r"^h\.(\d+)\.attn\.c_attn\.", "blocks.$1.c_attn."),
    (r"^h\.(\d+)\.attn\.c_proj\.", "blocks.$1.attn_proj."),
    (r"^h\.(\d+)\.mlp\.c_fc\.", "blocks.$1.mlp_fc."),
    (r"^h\.(\d+)\.mlp\.c_proj\.", "blocks.$1.mlp_proj."),
    (r"^h\.(\d+)\.ln_1\.", "blocks.$1.ln_1."),
    (r"^h\.(\d+)\.ln_2\.", "blocks.$1.ln_2."),
    // wte, wpe and ln_f keep their names.
];

/// Tensors a GPT-2 checkpoint may carry that extraction does not use: the causal-mask buffers of
/// old checkpoints, the (tied) LM head and classification heads. `ln_f` only feeds the LM head.
const IGNORE: &[&str] = &[
    "*.attn.bias",
    "*.attn.masked_bias",
    "lm_head.*",
    "score.*",
    "ln_f.*",
    "multiple_choice_head.*",
];

/// Hyperparameters of a GPT-2 decoder, read from `config.json`.
#[derive(Config, Debug)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size (`n_embd`).
    pub hidden_size: usize,
    /// Number of blocks (`n_layer`).
    pub num_layers: usize,
    /// Heads per block (`n_head`).
    pub num_heads: usize,
    /// MLP inner size (`n_inner`, default 4 x hidden).
    pub inner_size: usize,
    /// Position table size (`n_positions`).
    pub max_positions: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub activation: Activation,
}

impl Gpt2Config {
    /// Reads the sizes from a parsed `config.json`.
    pub(crate) fn from_hf(cfg: &HfConfig) -> Result<Self> {
        let hidden = cfg.usize(&["n_embd", "hidden_size"])?;
        let heads = cfg.usize(&["n_head", "num_attention_heads"])?;
        cfg.head_dim(hidden, heads)?;
        Ok(Self {
            vocab_size: cfg.usize(&["vocab_size"])?,
            hidden_size: hidden,
            num_layers: cfg.usize(&["n_layer", "num_hidden_layers"])?,
            num_heads: heads,
            inner_size: cfg.opt_usize(&["n_inner"])?.unwrap_or(4 * hidden),
            max_positions: cfg.usize(&["n_positions", "max_position_embeddings"])?,
            layer_norm_eps: cfg.f64_or(&["layer_norm_epsilon"], 1e-5)?,
            activation: cfg.activation(&["activation_function"], "gelu_new")?,
        })
    }

    /// Builds a decoder with zero weights; the loader overwrites every parameter.
    pub fn init(&self, device: &Device) -> Gpt2 {
        let h = self.hidden_size;
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let emb = |n| {
            EmbeddingConfig::new(n, h)
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        Gpt2 {
            wte: emb(self.vocab_size),
            wpe: emb(self.max_positions),
            blocks: (0..self.num_layers)
                .map(|_| Gpt2Block {
                    ln_1: norm(),
                    c_attn: HfConv1D::zeros(h, 3 * h, device),
                    attn_proj: HfConv1D::zeros(h, h, device),
                    ln_2: norm(),
                    mlp_fc: HfConv1D::zeros(h, self.inner_size, device),
                    mlp_proj: HfConv1D::zeros(self.inner_size, h, device),
                })
                .collect(),
            num_heads: self.num_heads,
            activation: self.activation,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

/// transformers' `Conv1D`: a linear layer whose weight is stored `[in, out]`.
///
/// Its own module type (not burn's `Linear`) so that `PyTorchToBurnAdapter`, which transposes every
/// `Linear` weight from PyTorch's `[out, in]`, leaves it alone: `[in, out]` is already burn's layout.
#[derive(Module, Debug)]
pub struct HfConv1D {
    weight: Param<Tensor<2>>,
    bias: Param<Tensor<1>>,
}

impl HfConv1D {
    fn zeros(d_in: usize, d_out: usize, device: &Device) -> Self {
        Self {
            weight: Initializer::Zeros.init([d_in, d_out], device),
            bias: Initializer::Zeros.init([d_out], device),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        linear(x, self.weight.val(), Some(self.bias.val()))
    }
}

/// One pre-LN decoder block.
#[derive(Module, Debug)]
pub struct Gpt2Block {
    ln_1: LayerNorm,
    c_attn: HfConv1D,
    attn_proj: HfConv1D,
    ln_2: LayerNorm,
    mlp_fc: HfConv1D,
    mlp_proj: HfConv1D,
}

/// A GPT-2 decoder without its LM head.
#[derive(Module, Debug)]
pub struct Gpt2 {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Gpt2Block>,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    layer_norm_eps: f64,
}

impl Gpt2 {
    /// Builds the decoder from `config` and loads `dir/model.safetensors`.
    pub(crate) fn load(config: &Gpt2Config, dir: &Path, device: &Device) -> Result<Self> {
        let mut model = config.init(device);
        load_all_f32(&mut model, dir, REMAP, IGNORE)?;
        Ok(model)
    }

    /// Runs blocks `0..=run.last_layer` on `ids` `[batch, seq]` (right-padded to `run.lengths`),
    /// handing taps to `sink`: with the CPU kernels on burn-flex when `run.cpu_kernels`, else with
    /// burn's tensor ops and the causal and padding mask `bias()`.
    pub(crate) fn forward(
        &self,
        ids: Tensor<2, Int>,
        bias: impl FnOnce() -> Tensor<4>,
        run: &ForwardRun<'_>,
        sink: &mut TapSink<'_>,
    ) -> Result<()> {
        let [_, seq] = ids.dims();
        let device = ids.device();
        let hidden = self.wpe.weight.val().dims()[1];
        let head_dim = hidden / self.num_heads;
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>();
        let mut x = self.wte.forward(ids) + self.wpe.forward(positions);
        #[cfg(feature = "flex")]
        if run.on_cpu_kernels(&device) {
            return self.blocks_cpu(x, run, sink);
        }
        let bias = bias();
        for (l, block) in self.blocks.iter().enumerate().take(run.last_layer + 1) {
            let qkv = block.c_attn.forward(block.ln_1.forward(x.clone()));
            let (context, probs) = attend(qkv.clone(), bias.clone(), self.num_heads, head_dim);
            sink(l, LayerTaps::Tensors { qkv, probs })?;
            if l == run.last_layer {
                // Nothing after the last captured attention is read.
                break;
            }
            x = x + block.attn_proj.forward(context);
            let inner = self
                .activation
                .forward(block.mlp_fc.forward(block.ln_2.forward(x.clone())));
            x = x + block.mlp_proj.forward(inner);
        }
        Ok(())
    }

    /// The blocks of [`Gpt2::forward`] on the embeddings `x` with the CPU kernels (pre-norm, causal).
    #[cfg(feature = "flex")]
    fn blocks_cpu(&self, x: Tensor<3>, run: &ForwardRun<'_>, sink: &mut TapSink<'_>) -> Result<()> {
        use crate::cpu::{Affine, Norm, NormBlock, NormStack, norm_blocks};
        let stack = NormStack {
            pre_norm: true,
            heads: self.num_heads,
            causal: true,
            eps: self.layer_norm_eps,
            activation: self.activation,
        };
        let conv = |c: &HfConv1D| Affine::new(c.weight.val(), Some(c.bias.val()));
        let block = |l: usize| {
            let b = &self.blocks[l];
            Ok(NormBlock {
                qkv: conv(&b.c_attn)?,
                attention_out: conv(&b.attn_proj)?,
                norm1: Norm::layer_norm(&b.ln_1)?,
                fc: conv(&b.mlp_fc)?,
                proj: conv(&b.mlp_proj)?,
                norm2: Norm::layer_norm(&b.ln_2)?,
            })
        };
        norm_blocks(x, &stack, run, block, sink)
    }
}
