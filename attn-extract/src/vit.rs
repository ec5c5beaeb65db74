//! Vision Transformer: conv patch embedding, CLS token, learned positions, pre-LN encoder.

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::attention::{ForwardRun, LayerTaps, QkvProjection, TapSink, attend};
use crate::error::Result;
use crate::hf::{Activation, HfConfig, RemapRule, load_all_f32};

/// Hugging Face tensor names -> our module paths, applied in order to every key of the file.
///
/// transformers 5.x renamed ViT's modules in memory (`layers.N.attention.q_proj`) but still reads
/// and writes these classic names, which are what checkpoints hold.
const REMAP: &[RemapRule] = &[
    // ViTForImageClassification nests the encoder under `vit.`.
    (r"^vit\.", ""),
    (
        r"^embeddings\.patch_embeddings\.projection\.",
        "embeddings.patch.",
    ),
    // embeddings.cls_token and embeddings.position_embeddings keep their names.
    (
        r"^encoder\.layer\.(\d+)\.attention\.attention\.",
        "layers.$1.attention.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.",
        "layers.$1.attention_output.",
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
        r"^encoder\.layer\.(\d+)\.layernorm_before\.",
        "layers.$1.norm_before.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.layernorm_after\.",
        "layers.$1.norm_after.",
    ),
];

/// Tensors a ViT checkpoint may carry that the encoder does not use: the final LayerNorm (it only
/// feeds the pooler/classifier), pooler, classifier, and the masked-image-modeling token.
const IGNORE: &[&str] = &[
    "layernorm.*",
    "pooler.*",
    "classifier.*",
    "embeddings.mask_token",
    "decoder.*",
];

/// Hyperparameters of a ViT encoder, read from `config.json`.
#[derive(Config, Debug)]
pub struct VitConfig {
    /// Hidden size.
    pub hidden_size: usize,
    /// Number of layers.
    pub num_layers: usize,
    /// Heads per layer.
    pub num_heads: usize,
    /// Feed-forward inner size.
    pub intermediate_size: usize,
    /// Side of the square input image in pixels.
    pub image_size: usize,
    /// Side of a square patch in pixels.
    pub patch_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Whether the query/key/value projections have biases.
    pub qkv_bias: bool,
    /// Feed-forward activation.
    pub activation: Activation,
}

impl VitConfig {
    /// Reads the sizes from a parsed `config.json`.
    pub(crate) fn from_hf(cfg: &HfConfig) -> Result<Self> {
        let hidden = cfg.usize(&["hidden_size"])?;
        let heads = cfg.usize(&["num_attention_heads"])?;
        cfg.head_dim(hidden, heads)?;
        let image_size = cfg.opt_usize(&["image_size"])?.unwrap_or(224);
        let patch_size = cfg.opt_usize(&["patch_size"])?.unwrap_or(16);
        if patch_size == 0 || !image_size.is_multiple_of(patch_size) {
            return Err(crate::ExtractError::InvalidConfig {
                path: cfg.path.clone(),
                message: format!(
                    "image_size {image_size} is not a multiple of patch_size {patch_size}"
                ),
            });
        }
        Ok(Self {
            hidden_size: hidden,
            num_layers: cfg.usize(&["num_hidden_layers"])?,
            num_heads: heads,
            intermediate_size: cfg.usize(&["intermediate_size"])?,
            image_size,
            patch_size,
            num_channels: cfg.opt_usize(&["num_channels"])?.unwrap_or(3),
            layer_norm_eps: cfg.f64_or(&["layer_norm_eps"], 1e-12)?,
            qkv_bias: cfg.bool_or(&["qkv_bias"], true)?,
            activation: cfg.activation(&["hidden_act"], "gelu")?,
        })
    }

    /// Patches per image side.
    pub fn grid_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Builds an encoder with zero weights; the loader overwrites every parameter.
    pub fn init(&self, device: &Device) -> Vit {
        let h = self.hidden_size;
        let lin = |i, o, bias| {
            LinearConfig::new(i, o)
                .with_bias(bias)
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let tokens = self.grid_side() * self.grid_side() + 1;
        Vit {
            embeddings: VitEmbeddings {
                patch: Conv2dConfig::new(
                    [self.num_channels, h],
                    [self.patch_size, self.patch_size],
                )
                .with_stride([self.patch_size, self.patch_size])
                .with_initializer(Initializer::Zeros)
                .init(device),
                cls_token: Initializer::Zeros.init([1, 1, h], device),
                position_embeddings: Initializer::Zeros.init([1, tokens, h], device),
            },
            layers: (0..self.num_layers)
                .map(|_| VitLayer {
                    norm_before: norm(),
                    attention: QkvProjection::new(
                        lin(h, h, self.qkv_bias),
                        lin(h, h, self.qkv_bias),
                        lin(h, h, self.qkv_bias),
                    ),
                    attention_output: lin(h, h, true),
                    norm_after: norm(),
                    intermediate: lin(h, self.intermediate_size, true),
                    output: lin(self.intermediate_size, h, true),
                })
                .collect(),
            num_heads: self.num_heads,
            activation: self.activation,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

/// Patch projection, CLS token and learned position embeddings.
#[derive(Module, Debug)]
pub struct VitEmbeddings {
    patch: Conv2d,
    cls_token: Param<Tensor<3>>,
    position_embeddings: Param<Tensor<3>>,
}

/// One pre-LN encoder layer.
#[derive(Module, Debug)]
pub struct VitLayer {
    norm_before: LayerNorm,
    attention: QkvProjection,
    attention_output: Linear,
    norm_after: LayerNorm,
    intermediate: Linear,
    output: Linear,
}

#[cfg(feature = "flex")]
impl VitLayer {
    /// The parts the CPU kernels read.
    fn parts(&self) -> crate::cpu::EncoderParts<'_> {
        let norms = (&self.norm_before, &self.norm_after);
        (
            &self.attention,
            &self.attention_output,
            norms,
            &self.intermediate,
            &self.output,
        )
    }
}

/// A ViT encoder without pooler or classifier.
#[derive(Module, Debug)]
pub struct Vit {
    embeddings: VitEmbeddings,
    layers: Vec<VitLayer>,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    layer_norm_eps: f64,
}

impl Vit {
    /// Builds the encoder from `config` and loads `dir/model.safetensors`.
    pub(crate) fn load(config: &VitConfig, dir: &Path, device: &Device) -> Result<Self> {
        let mut model = config.init(device);
        load_all_f32(&mut model, dir, REMAP, IGNORE)?;
        for layer in &mut model.layers {
            layer.attention.fuse();
        }
        Ok(model)
    }

    /// Runs layers `0..=run.last_layer` on `pixels` `[batch, channels, size, size]` (already
    /// normalized), handing each layer's taps to `sink`: with the CPU kernels on burn-flex when
    /// `run.cpu_kernels`, else with burn's tensor ops (`bias()`: no mask). Tokens: CLS, then
    /// patches row-major.
    pub(crate) fn forward(
        &self,
        pixels: Tensor<4>,
        bias: impl FnOnce() -> Tensor<4>,
        run: &ForwardRun<'_>,
        sink: &mut TapSink<'_>,
    ) -> Result<()> {
        let [batch, _, _, _] = pixels.dims();
        #[cfg(feature = "flex")]
        let device = pixels.device();
        let patches = self.embeddings.patch.forward(pixels); // [b, hidden, g, g]
        let [_, hidden, gh, gw] = patches.dims();
        let head_dim = hidden / self.num_heads;
        let patches = patches.reshape([batch, hidden, gh * gw]).swap_dims(1, 2);
        let cls = self.embeddings.cls_token.val().expand([batch, 1, hidden]);
        let mut x = Tensor::cat(vec![cls, patches], 1) + self.embeddings.position_embeddings.val();
        #[cfg(feature = "flex")]
        if run.on_cpu_kernels(&device) {
            return self.layers_cpu(x, run, sink);
        }
        let bias = bias();
        for (l, layer) in self.layers.iter().enumerate().take(run.last_layer + 1) {
            let qkv = layer.attention.qkv(layer.norm_before.forward(x.clone()));
            let (context, probs) = attend(qkv.clone(), bias.clone(), self.num_heads, head_dim);
            sink(l, LayerTaps::Tensors { qkv, probs })?;
            if l == run.last_layer {
                // Nothing after the last captured attention is read.
                break;
            }
            x = x + layer.attention_output.forward(context);
            let inner = self.activation.forward(
                layer
                    .intermediate
                    .forward(layer.norm_after.forward(x.clone())),
            );
            x = x + layer.output.forward(inner);
        }
        Ok(())
    }

    /// The layers of [`Vit::forward`] on the embeddings `x` with the CPU kernels (pre-norm).
    #[cfg(feature = "flex")]
    fn layers_cpu(&self, x: Tensor<3>, run: &ForwardRun<'_>, sink: &mut TapSink<'_>) -> Result<()> {
        use crate::cpu::{NormBlock, NormStack, norm_blocks};
        let stack = NormStack {
            pre_norm: true,
            heads: self.num_heads,
            causal: false,
            eps: self.layer_norm_eps,
            activation: self.activation,
        };
        let block = |l: usize| NormBlock::encoder(self.layers[l].parts());
        norm_blocks(x, &stack, run, block, sink)
    }
}
