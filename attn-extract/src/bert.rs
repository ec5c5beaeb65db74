//! BERT-architecture encoders (BERT, MiniLM): post-LayerNorm, erf GELU, bidirectional attention.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::{Device, Int, Tensor};

use crate::attention::{ForwardRun, LayerTaps, QkvProjection, TapSink, attend};
use crate::error::Result;
use crate::hf::{Activation, HfConfig, RemapRule, load_all_f32};

/// Hugging Face tensor names -> our module paths, applied in order to every key of the file.
const REMAP: &[RemapRule] = &[
    // Task models (BertForMaskedLM, ...) nest the encoder under `bert.`.
    (r"^bert\.", ""),
    (r"^embeddings\.LayerNorm\.", "embeddings.norm."),
    // Self-attention projections keep their names: attention.{query,key,value}.
    (
        r"^encoder\.layer\.(\d+)\.attention\.self\.",
        "layers.$1.attention.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.",
        "layers.$1.attention_output.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.",
        "layers.$1.attention_norm.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.intermediate\.dense\.",
        "layers.$1.intermediate.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.output\.dense\.",
        "layers.$1.output.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.",
        "layers.$1.output_norm.",
    ),
];

/// Tensors a BERT checkpoint may carry that the encoder does not use.
const IGNORE: &[&str] = &[
    "pooler.*",
    "cls.*",
    "classifier.*",
    "qa_outputs.*",
    "embeddings.position_ids",
    "embeddings.token_type_ids",
];

/// Hyperparameters of a BERT encoder, read from `config.json`.
#[derive(Config, Debug)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Number of layers.
    pub num_layers: usize,
    /// Heads per layer.
    pub num_heads: usize,
    /// Feed-forward inner size.
    pub intermediate_size: usize,
    /// Position table size.
    pub max_positions: usize,
    /// Token-type table size.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Feed-forward activation.
    pub activation: Activation,
}

impl BertConfig {
    /// Reads the sizes from a parsed `config.json`.
    pub(crate) fn from_hf(cfg: &HfConfig) -> Result<Self> {
        let hidden = cfg.usize(&["hidden_size"])?;
        let heads = cfg.usize(&["num_attention_heads"])?;
        cfg.head_dim(hidden, heads)?;
        Ok(Self {
            vocab_size: cfg.usize(&["vocab_size"])?,
            hidden_size: hidden,
            num_layers: cfg.usize(&["num_hidden_layers"])?,
            num_heads: heads,
            intermediate_size: cfg.usize(&["intermediate_size"])?,
            max_positions: cfg.usize(&["max_position_embeddings"])?,
            type_vocab_size: cfg.opt_usize(&["type_vocab_size"])?.unwrap_or(2),
            layer_norm_eps: cfg.f64_or(&["layer_norm_eps"], 1e-12)?,
            activation: cfg.activation(&["hidden_act"], "gelu")?,
        })
    }

    /// Builds an (uninitialized-weight) encoder; the loader overwrites every parameter.
    pub fn init(&self, device: &Device) -> Bert {
        let h = self.hidden_size;
        // Zeros: the values are replaced on load, so skip the cost of random init.
        let lin = |i, o| {
            LinearConfig::new(i, o)
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
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
        Bert {
            embeddings: BertEmbeddings {
                word_embeddings: emb(self.vocab_size),
                position_embeddings: emb(self.max_positions),
                token_type_embeddings: emb(self.type_vocab_size),
                norm: norm(),
            },
            layers: (0..self.num_layers)
                .map(|_| BertLayer {
                    attention: QkvProjection::new(lin(h, h), lin(h, h), lin(h, h)),
                    attention_output: lin(h, h),
                    attention_norm: norm(),
                    intermediate: lin(h, self.intermediate_size),
                    output: lin(self.intermediate_size, h),
                    output_norm: norm(),
                })
                .collect(),
            num_heads: self.num_heads,
            activation: self.activation,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

/// Word + position + token-type embeddings, then LayerNorm.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    norm: LayerNorm,
}

/// One post-LN encoder layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    attention: QkvProjection,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

#[cfg(feature = "flex")]
impl BertLayer {
    /// The parts the CPU kernels read.
    fn parts(&self) -> crate::cpu::EncoderParts<'_> {
        let norms = (&self.attention_norm, &self.output_norm);
        let linears = (&self.intermediate, &self.output);
        (
            &self.attention,
            &self.attention_output,
            norms,
            linears.0,
            linears.1,
        )
    }
}

/// A BERT encoder (no pooler or task head).
#[derive(Module, Debug)]
pub struct Bert {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    layer_norm_eps: f64,
}

impl Bert {
    /// Builds the encoder from `config` and loads `dir/model.safetensors`.
    pub(crate) fn load(config: &BertConfig, dir: &Path, device: &Device) -> Result<Self> {
        let mut model = config.init(device);
        load_all_f32(&mut model, dir, REMAP, IGNORE)?;
        for layer in &mut model.layers {
            layer.attention.fuse();
        }
        Ok(model)
    }

    /// Runs layers `0..=run.last_layer` on `ids` `[batch, seq]` (right-padded to `run.lengths`),
    /// handing each layer's taps to `sink`: with the CPU kernels on burn-flex when
    /// `run.cpu_kernels`, else with burn's tensor ops and the padding mask `bias()`.
    pub(crate) fn forward(
        &self,
        ids: Tensor<2, Int>,
        bias: impl FnOnce() -> Tensor<4>,
        run: &ForwardRun<'_>,
        sink: &mut TapSink<'_>,
    ) -> Result<()> {
        let [_, seq] = ids.dims();
        let device = ids.device();
        let hidden = self.embeddings.norm.gamma.val().dims()[0];
        let head_dim = hidden / self.num_heads;
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>();
        // Every token has type 0 (single-segment input): add row 0 of the type table.
        let token_type = self
            .embeddings
            .token_type_embeddings
            .weight
            .val()
            .narrow(0, 0, 1)
            .unsqueeze::<3>();
        let mut x = self.embeddings.word_embeddings.forward(ids)
            + self.embeddings.position_embeddings.forward(positions)
            + token_type;
        x = self.embeddings.norm.forward(x);
        #[cfg(feature = "flex")]
        if run.on_cpu_kernels(&device) {
            return self.layers_cpu(x, run, sink);
        }
        let bias = bias();
        for (l, layer) in self.layers.iter().enumerate().take(run.last_layer + 1) {
            let qkv = layer.attention.qkv(x.clone());
            let (context, probs) = attend(qkv.clone(), bias.clone(), self.num_heads, head_dim);
            sink(l, LayerTaps::Tensors { qkv, probs })?;
            if l == run.last_layer {
                // Nothing after the last captured attention is read.
                break;
            }
            let attended = layer
                .attention_norm
                .forward(layer.attention_output.forward(context) + x);
            let inner = self
                .activation
                .forward(layer.intermediate.forward(attended.clone()));
            x = layer
                .output_norm
                .forward(layer.output.forward(inner) + attended);
        }
        Ok(())
    }

    /// The layers of [`Bert::forward`] on the embeddings `x` with the CPU kernels (post-norm).
    #[cfg(feature = "flex")]
    fn layers_cpu(&self, x: Tensor<3>, run: &ForwardRun<'_>, sink: &mut TapSink<'_>) -> Result<()> {
        use crate::cpu::{NormBlock, NormStack, norm_blocks};
        let stack = NormStack {
            pre_norm: false,
            heads: self.num_heads,
            causal: false,
            eps: self.layer_norm_eps,
            activation: self.activation,
        };
        let block = |l: usize| NormBlock::encoder(self.layers[l].parts());
        norm_blocks(x, &stack, run, block, sink)
    }
}
