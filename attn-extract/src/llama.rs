//! Llama-family decoders (Llama 2/3, Mistral, Qwen2, Qwen3): pre-RMSNorm blocks, rotary position
//! embeddings, grouped-query attention, SwiGLU MLP, causal (optionally sliding-window) attention.
//!
//! Weights keep the checkpoint's precision (bf16 and f16 stay half precision in memory); every
//! layer casts what it uses to f32 as it runs, so activations, queries, keys and attention are
//! computed in f32 as transformers' eager f32 model does.

use std::path::Path;

use attn_types::{Architecture, RopeCapture};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig,
};

use burn::tensor::module::linear;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use serde_json::Value;

use crate::attention::{ForwardRun, LayerTaps, TapSink, attend_heads, attention_bias};
use crate::error::{ExtractError, Result};
use crate::hf::{HfConfig, RemapRule, WeightPrecision, load_safetensors, to_f32};

/// Hugging Face tensor names -> our module paths, applied in order to every key of the file.
const REMAP: &[RemapRule] = &[
    // LlamaForCausalLM and friends nest the decoder under `model.`.
    (r"^model\.", ""),
    // Norms: `input_layernorm` / `post_attention_layernorm` of every block (RmsNorm's `weight` is
    // mapped to `gamma` by the PyTorch adapter).
    (
        r"^layers\.(\d+)\.input_layernorm\.",
        "layers.$1.input_norm.",
    ),
    (
        r"^layers\.(\d+)\.post_attention_layernorm\.",
        "layers.$1.post_attention_norm.",
    ),
    // Qwen3's per-head query/key norms.
    (
        r"^layers\.(\d+)\.self_attn\.(q|k)_norm\.",
        "layers.$1.${2}_norm.",
    ),
    // Attention projections: self_attn.{q,k,v,o}_proj.
    (
        r"^layers\.(\d+)\.self_attn\.(q|k|v|o)_proj\.",
        "layers.$1.${2}_proj.",
    ),
    // SwiGLU MLP: mlp.{gate,up,down}_proj.
    (
        r"^layers\.(\d+)\.mlp\.(gate|up|down)_proj\.",
        "layers.$1.${2}_proj.",
    ),
    // embed_tokens keeps its name.
];

/// Tensors a checkpoint may carry that extraction does not use: the LM head (tied or not) and the
/// final norm feed only the logits; old checkpoints store the rotary frequencies as a buffer.
const IGNORE: &[&str] = &["lm_head.*", "norm.*", "score.*", "*.rotary_emb.inv_freq"];

/// Hyperparameters of a Llama-family decoder, read from `config.json`.
#[derive(Config, Debug)]
pub struct DecoderConfig {
    /// Which family (`model_type`).
    pub architecture: Architecture,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden (residual stream) size.
    pub hidden_size: usize,
    /// Number of blocks.
    pub num_layers: usize,
    /// Query heads per block.
    pub num_heads: usize,
    /// Key/value heads per block (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Longest sequence (`max_position_embeddings`).
    pub max_positions: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Biases on the query, key and value projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// Qwen3's RMSNorm of every query and key head before the rotation.
    pub qk_norm: bool,
    /// Rotary inverse frequencies, `head_dim / 2` of them, as transformers computes them in f32.
    pub inv_freq: Vec<f32>,
    /// Per layer: the sliding attention window (a query sees the keys less than this many positions
    /// back), or `None` for full causal attention.
    pub sliding_window: Vec<Option<usize>>,
}

impl DecoderConfig {
    /// Reads the sizes of a `llama`, `mistral`, `qwen2` or `qwen3` `config.json`.
    pub(crate) fn from_hf(cfg: &HfConfig, architecture: Architecture) -> Result<Self> {
        let invalid = |message: String| ExtractError::InvalidConfig {
            path: cfg.path.clone(),
            message,
        };
        let hidden = cfg.usize(&["hidden_size"])?;
        let heads = cfg.usize(&["num_attention_heads"])?;
        // transformers' defaults when config.json leaves the field out: Mistral 8 key/value heads,
        // the others one per query head.
        let kv_default = if architecture == Architecture::Mistral {
            8
        } else {
            heads
        };
        let kv_heads = cfg
            .opt_usize(&["num_key_value_heads"])?
            .unwrap_or(kv_default);
        if kv_heads == 0 || heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(invalid(format!(
                "`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` \
                 ({kv_heads})"
            )));
        }
        let head_dim = match cfg.opt_usize(&["head_dim"])? {
            Some(d) => d,
            // Qwen3Config's default head_dim is 128, whatever the hidden size.
            None if architecture == Architecture::Qwen3 => 128,
            None => cfg.head_dim(hidden, heads)?,
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(invalid(format!(
                "head dimension {head_dim} is not a positive even number (rotary embeddings \
                 rotate pairs of coordinates)"
            )));
        }
        let act = cfg.str_or(&["hidden_act"], "silu")?;
        if act != "silu" {
            return Err(invalid(format!(
                "unsupported `hidden_act` `{act}` (Llama-family MLPs use silu)"
            )));
        }
        let num_layers = cfg.usize(&["num_hidden_layers"])?;
        let attention_bias = cfg.bool_or(&["attention_bias"], false)?;
        let (qkv_bias, o_bias, mlp_bias) = match architecture {
            Architecture::Llama => (
                attention_bias,
                attention_bias,
                cfg.bool_or(&["mlp_bias"], false)?,
            ),
            Architecture::Qwen2 => (true, false, false),
            Architecture::Qwen3 => (attention_bias, attention_bias, false),
            _ => (false, false, false),
        };
        Ok(Self {
            architecture,
            vocab_size: cfg.usize(&["vocab_size"])?,
            hidden_size: hidden,
            num_layers,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            intermediate_size: cfg.usize(&["intermediate_size"])?,
            max_positions: cfg.usize(&["max_position_embeddings"])?,
            rms_norm_eps: cfg.f64_or(&["rms_norm_eps"], 1e-6)?,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm: architecture == Architecture::Qwen3,
            inv_freq: rope_inv_freq(cfg, head_dim)?,
            sliding_window: sliding_windows(cfg, architecture, num_layers)?,
        })
    }

    /// Builds a decoder whose parameters are created lazily: the loader fills each from the
    /// checkpoint, so none is ever allocated at full precision first.
    pub fn init(&self, device: &Device) -> Decoder {
        let lin = |d_in, d_out, bias| {
            LinearConfig::new(d_in, d_out)
                .with_bias(bias)
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        let norm = |d| {
            RmsNormConfig::new(d)
                .with_epsilon(self.rms_norm_eps)
                .init(device)
        };
        let (h, d) = (self.hidden_size, self.head_dim);
        let (q_width, kv_width) = (self.num_heads * d, self.num_kv_heads * d);
        Decoder {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, h)
                .with_initializer(Initializer::Zeros)
                .init(device),
            layers: (0..self.num_layers)
                .map(|_| DecoderLayer {
                    input_norm: norm(h),
                    q_proj: lin(h, q_width, self.qkv_bias),
                    k_proj: lin(h, kv_width, self.qkv_bias),
                    v_proj: lin(h, kv_width, self.qkv_bias),
                    o_proj: lin(q_width, h, self.o_bias),
                    q_norm: self.qk_norm.then(|| norm(d)),
                    k_norm: self.qk_norm.then(|| norm(d)),
                    post_attention_norm: norm(h),
                    gate_proj: lin(h, self.intermediate_size, self.mlp_bias),
                    up_proj: lin(h, self.intermediate_size, self.mlp_bias),
                    down_proj: lin(self.intermediate_size, h, self.mlp_bias),
                })
                .collect(),
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: d,
            inv_freq: self.inv_freq.clone(),
            sliding_window: self.sliding_window.clone(),
        }
    }
}

/// The sliding window of every layer of a model (`None`: full attention), from the `config.json`
/// its [`attn_types::ModelInfo`] records: what the attention it captured was masked with. Models
/// other than the Llama family have none.
pub fn model_sliding_windows(info: &attn_types::ModelInfo) -> Result<Vec<Option<usize>>> {
    let cfg = HfConfig {
        path: std::path::PathBuf::from("config.json"),
        json: info.config.clone(),
    };
    sliding_windows(&cfg, info.architecture, usize::from(info.num_layers))
}

/// Which layers attend through a sliding window, as transformers decides it: Mistral slides every
/// layer when `sliding_window` is set; Qwen2/Qwen3 follow `layer_types` when config.json has it, else
/// slide layers from `max_window_layers` on when `use_sliding_window` is true. An `attnviz import`
/// records its `--window` the same way (`sliding_window` and `layer_types`).
fn sliding_windows(
    cfg: &HfConfig,
    architecture: Architecture,
    num_layers: usize,
) -> Result<Vec<Option<usize>>> {
    let window = cfg.opt_usize(&["sliding_window"])?;
    let per_layer = match architecture {
        Architecture::Mistral => vec![window; num_layers],
        Architecture::Qwen2 | Architecture::Qwen3 => {
            let use_window = cfg.bool_or(&["use_sliding_window"], false)?;
            let window = window.filter(|_| use_window);
            match layer_types(cfg, window, num_layers)? {
                Some(per_layer) => per_layer,
                None => {
                    let first = cfg.opt_usize(&["max_window_layers"])?.unwrap_or(28);
                    (0..num_layers)
                        .map(|i| window.filter(|_| i >= first))
                        .collect()
                }
            }
        }
        Architecture::Imported { .. } => {
            layer_types(cfg, window, num_layers)?.unwrap_or_else(|| vec![window; num_layers])
        }
        _ => vec![None; num_layers],
    };
    if per_layer.contains(&Some(0)) {
        return Err(cfg.invalid("`sliding_window` must be at least 1"));
    }
    Ok(per_layer)
}

/// The window of every layer from config.json's `layer_types` (`None` when it has none):
/// `"sliding_attention"` layers get `window`, `"full_attention"` layers none.
fn layer_types(
    cfg: &HfConfig,
    window: Option<usize>,
    num_layers: usize,
) -> Result<Option<Vec<Option<usize>>>> {
    let types = match cfg.json.get("layer_types").filter(|v| !v.is_null()) {
        None => return Ok(None),
        Some(Value::Array(types)) => types,
        Some(other) => {
            return Err(cfg.invalid(format!("`layer_types` is not a list: {other}")));
        }
    };
    if types.len() != num_layers {
        return Err(cfg.invalid(format!(
            "`layer_types` has {} entries for {num_layers} layers",
            types.len()
        )));
    }
    types
        .iter()
        .enumerate()
        .map(|(i, t)| match t.as_str() {
            Some("full_attention") => Ok(None),
            Some("sliding_attention") if window.is_some() => Ok(window),
            // transformers refuses this too (no window to slide).
            Some("sliding_attention") => Err(cfg.invalid(format!(
                "`layer_types[{i}]` is \"sliding_attention\" but no `sliding_window` applies \
                 (`use_sliding_window` is false or `sliding_window` null)"
            ))),
            _ => Err(cfg.invalid(format!(
                "`layer_types[{i}]` is {t}, not \"full_attention\" or \"sliding_attention\""
            ))),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The rotary inverse frequencies of transformers' `ROPE_INIT_FUNCTIONS`, in f32 arithmetic as
/// torch does them (libm's `powf` and torch's `pow` can differ in the last bit of a frequency, about
/// 1e-6 rad at position 32k; the fixtures agree bit for bit).
///
/// Reads both forms in use: transformers 5's `rope_parameters` object (`rope_type`, `rope_theta`,
/// scaling fields), and the top-level `rope_theta` with a `rope_scaling` object (or null) that most
/// released checkpoints carry; when both are present `rope_scaling` wins, as in transformers.
/// Supported types: `default`, `linear`, `llama3`.
fn rope_inv_freq(cfg: &HfConfig, head_dim: usize) -> Result<Vec<f32>> {
    let (key, params) = match (
        cfg.json.get("rope_scaling").filter(|v| !v.is_null()),
        cfg.json.get("rope_parameters").filter(|v| !v.is_null()),
    ) {
        (Some(p), _) => ("rope_scaling", Some(p)),
        (None, Some(p)) => ("rope_parameters", Some(p)),
        (None, None) => ("rope_scaling", None),
    };
    let invalid = |message: String| ExtractError::InvalidConfig {
        path: cfg.path.clone(),
        message,
    };
    if let Some(p) = params
        && !p.is_object()
    {
        return Err(invalid(format!("`{key}` is not an object: {p}")));
    }
    let field = |name: &str| params.and_then(|p| p.get(name)).filter(|v| !v.is_null());
    let number = |name: &str| -> Result<f64> {
        let v = field(name).ok_or_else(|| invalid(format!("missing field `{key}.{name}`")))?;
        v.as_f64()
            .ok_or_else(|| invalid(format!("field `{key}.{name}` is not a number: {v}")))
    };
    let theta = match field("rope_theta") {
        Some(_) => number("rope_theta")?,
        None => cfg.f64_or(&["rope_theta"], 10_000.0)?,
    };
    if !(theta.is_finite() && theta > 1.0) {
        return Err(invalid(format!(
            "rope theta {theta} is not a number above 1"
        )));
    }
    let partial = match field("partial_rotary_factor") {
        Some(_) => number("partial_rotary_factor")?,
        None => cfg.f64_or(&["partial_rotary_factor"], 1.0)?,
    };
    if partial != 1.0 {
        return Err(invalid(format!(
            "unsupported `partial_rotary_factor` {partial} (only full rotation, 1.0)"
        )));
    }
    let (type_key, rope_type) = match (field("rope_type"), field("type")) {
        (Some(v), _) => ("rope_type", Some(v)),
        (None, Some(v)) => ("type", Some(v)),
        (None, None) => ("rope_type", None),
    };
    let rope_type = match rope_type {
        None => "default",
        Some(v) => v
            .as_str()
            .ok_or_else(|| invalid(format!("`{key}.{type_key}` is not a string: {v}")))?,
    };
    // torch: 1 / (base ** (arange(0, dim, 2).float() / dim)), all in f32.
    let base = theta as f32;
    let dim = head_dim as f32;
    let mut inv: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / dim))
        .collect();
    match rope_type {
        "default" => {}
        "linear" => {
            let factor = number("factor")? as f32;
            if !(factor.is_finite() && factor > 0.0) {
                return Err(invalid(format!("`{key}.factor` {factor} is not positive")));
            }
            inv.iter_mut().for_each(|f| *f /= factor);
        }
        "llama3" => {
            let factor = number("factor")? as f32;
            let low = number("low_freq_factor")? as f32;
            let high = number("high_freq_factor")? as f32;
            // transformers: the top-level value wins, then the scaling's own, then the positions.
            let old = match cfg.opt_usize(&["original_max_position_embeddings"])? {
                Some(n) => n as f32,
                None if field("original_max_position_embeddings").is_some() => {
                    number("original_max_position_embeddings")? as f32
                }
                None => cfg.usize(&["max_position_embeddings"])? as f32,
            };
            if !(factor > 0.0 && low > 0.0 && high > low && old > 0.0) {
                return Err(invalid(format!(
                    "`{key}`: llama3 scaling needs factor > 0 and high_freq_factor > \
                     low_freq_factor > 0"
                )));
            }
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            for f in &mut inv {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                let scaled = if wavelen > low_wavelen {
                    *f / factor
                } else {
                    *f
                };
                let smooth = (old / wavelen - low) / (high - low);
                let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
                // transformers: ~(wavelen < high) * ~(wavelen > low); wavelengths are finite here.
                let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                *f = if medium { smoothed } else { scaled };
            }
        }
        other => {
            return Err(invalid(format!(
                "unsupported `{key}.{type_key}` `{other}` (supported: default, linear, llama3)"
            )));
        }
    }
    Ok(inv)
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    input_norm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    post_attention_norm: RmsNorm,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

/// A Llama-family decoder without its LM head.
#[derive(Module, Debug)]
pub struct Decoder {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    num_kv_heads: usize,
    #[module(skip)]
    head_dim: usize,
    #[module(skip)]
    inv_freq: Vec<f32>,
    #[module(skip)]
    sliding_window: Vec<Option<usize>>,
}

impl Decoder {
    /// Builds the decoder's first `layers` blocks (all when `None`) from `config` and loads them from
    /// the checkpoint of `dir` in its stored precision; later blocks are neither built nor read.
    pub(crate) fn load(
        config: &DecoderConfig,
        dir: &Path,
        device: &Device,
        layers: Option<usize>,
    ) -> Result<Self> {
        let mut model = config.init(device);
        let kept = layers.unwrap_or(config.num_layers).min(config.num_layers);
        model.layers.truncate(kept);
        // Remapped names of the blocks left out: `layers.{n}.` with n >= kept.
        let not_loaded = |name: &str| {
            name.strip_prefix("layers.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= kept)
        };
        // Half precision stays half where the backend computes with it (flex, cuda); burn-ndarray
        // has no f16/bf16 tensors, so there the weights are widened as they load.
        let half = |dtype: DType| device.supports_dtype(dtype);
        let precision = if half(DType::F16) && half(DType::BF16) {
            WeightPrecision::AsStored
        } else {
            WeightPrecision::F32
        };
        load_safetensors(&mut model, dir, REMAP, IGNORE, &not_loaded, precision)?;
        Ok(model)
    }

    /// Number of blocks loaded.
    pub(crate) fn loaded_layers(&self) -> usize {
        self.layers.len()
    }

    /// Runs blocks `0..=run.last_layer` on `ids` `[batch, seq]` (right-padded to `run.lengths`),
    /// handing taps to `sink`: with the CPU kernels on burn-flex when `run.cpu_kernels`, else with
    /// burn's tensor ops. The taps hold the queries and keys after the rotation
    /// (`RopeCapture::Post`) or before it.
    pub(crate) fn forward(
        &self,
        ids: Tensor<2, Int>,
        run: &ForwardRun<'_>,
        sink: &mut TapSink<'_>,
    ) -> Result<()> {
        #[cfg(feature = "flex")]
        if run.on_cpu_kernels(&ids.device()) {
            return self.forward_cpu(ids, run, sink);
        }
        self.forward_tensors(ids, run, sink)
    }

    /// [`Decoder::forward`] with burn's tensor ops: padding and future keys (and, in window layers,
    /// keys outside the window) masked by an additive bias.
    fn forward_tensors(
        &self,
        ids: Tensor<2, Int>,
        run: &ForwardRun<'_>,
        sink: &mut TapSink<'_>,
    ) -> Result<()> {
        let [batch, seq] = ids.dims();
        let device = ids.device();
        let (heads, kv_heads, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (cos, sin) = rotary_tables(&self.inv_freq, seq);
        let table = |v| Tensor::<4>::from_data(TensorData::new(v, [1, 1, seq, d]), &device);
        let (cos, sin) = (table(cos), table(sin));
        let scale = 1.0 / (d as f64).sqrt();
        let bias = attention_bias(run.lengths, seq, true, None, &device);
        let window_bias = self
            .sliding_window
            .iter()
            .flatten()
            .next()
            .map(|&w| attention_bias(run.lengths, seq, true, Some(w), &device));
        let mut x = to_f32(self.embed_tokens.forward(ids));
        for (l, layer) in self.layers.iter().enumerate().take(run.last_layer + 1) {
            let h = rms_norm(&layer.input_norm, x.clone());
            let split = |t: Tensor<3>, n: usize| t.reshape([batch, seq, n, d]).swap_dims(1, 2);
            let mut q = split(project(&layer.q_proj, h.clone()), heads);
            let mut k = split(project(&layer.k_proj, h.clone()), kv_heads);
            let v = split(project(&layer.v_proj, h), kv_heads);
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                q = rms_norm(qn, q);
                k = rms_norm(kn, k);
            }
            let q_rot = rotate(q.clone(), &cos, &sin);
            let k_rot = rotate(k.clone(), &cos, &sin);
            let layer_bias = match (self.sliding_window[l], &window_bias) {
                (Some(_), Some(w)) => w.clone(),
                _ => bias.clone(),
            };
            let (context, probs) =
                attend_heads(q_rot.clone(), k_rot.clone(), v.clone(), layer_bias, scale);
            let (tap_q, tap_k) = match run.rope {
                RopeCapture::Post => (q_rot, k_rot),
                RopeCapture::Pre => (q, k),
            };
            let flat = |t: Tensor<4>, n: usize| t.swap_dims(1, 2).reshape([batch, seq, n * d]);
            let qkv = Tensor::cat(
                vec![flat(tap_q, heads), flat(tap_k, kv_heads), flat(v, kv_heads)],
                2,
            );
            sink(l, LayerTaps::Tensors { qkv, probs })?;
            if l == run.last_layer {
                // Nothing after the last captured attention is read.
                break;
            }
            x = x + project(&layer.o_proj, context);
            let h = rms_norm(&layer.post_attention_norm, x.clone());
            let inner = crate::host::silu(project(&layer.gate_proj, h.clone()))
                * project(&layer.up_proj, h);
            x = x + project(&layer.down_proj, inner);
        }
        Ok(())
    }

    /// [`Decoder::forward`] with the CPU kernels of [`crate::cpu`]: activations are host buffers of
    /// the sequences' real rows packed one after another (no padding) from the embedding on, and
    /// each sequence attends over its own keys.
    #[cfg(feature = "flex")]
    fn forward_cpu(
        &self,
        ids: Tensor<2, Int>,
        run: &ForwardRun<'_>,
        sink: &mut TapSink<'_>,
    ) -> Result<()> {
        use crate::cpu::{self, host_vector};
        let [_, seq] = ids.dims();
        let (heads, kv_heads, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (q_width, kv_width) = (heads * d, kv_heads * d);
        let tap_width = q_width + 2 * kv_width;
        let (cos, sin) = rotary_tables(&self.inv_freq, seq);
        let weights = cpu::Affine::linear;
        let gamma = |norm: &RmsNorm| host_vector(norm.gamma.val());
        let hidden = self.embed_tokens.weight.val().dims()[1];
        let embedded = crate::to_vec(to_f32(self.embed_tokens.forward(ids)))?;
        let mut x = cpu::pack_rows(&embedded, hidden, seq, run.lengths);
        drop(embedded);
        let rows: usize = run.lengths.iter().sum();
        let starts = cpu::starts(run.lengths);
        for (l, layer) in self.layers.iter().enumerate().take(run.last_layer + 1) {
            let h = cpu::rms_norm(
                &x,
                hidden,
                &gamma(&layer.input_norm)?,
                layer.input_norm.epsilon,
            );
            // q, k and v side by side in each row: the layout the taps and `attend` read.
            let (q, k, v) = (
                weights(&layer.q_proj)?,
                weights(&layer.k_proj)?,
                weights(&layer.v_proj)?,
            );
            let mut qkv = cpu::side_by_side(&h, rows, &[&q, &k, &v]);
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                let (qg, kg) = (gamma(qn)?, gamma(kn)?);
                cpu::rms_norm_in_place(&mut qkv, tap_width, 0, q_width, &qg, qn.epsilon);
                let keys = q_width + kv_width;
                cpu::rms_norm_in_place(&mut qkv, tap_width, q_width, keys, &kg, kn.epsilon);
            }
            let before_rotation = (run.rope == RopeCapture::Pre).then(|| qkv.clone());
            let rotated = (heads + kv_heads, d);
            cpu::rotate(&mut qkv, tap_width, run.lengths, rotated, &cos, &sin);
            let shape = cpu::AttentionShape {
                lengths: run.lengths,
                seq,
                heads,
                kv_heads,
                head_dim: d,
                scale: 1.0 / (d as f32).sqrt(),
                causal: true,
                window: self.sliding_window[l],
            };
            let (context, probs) = cpu::attend(&qkv, &shape);
            let qkv = before_rotation.unwrap_or(qkv);
            let starts = starts.clone();
            sink(l, LayerTaps::Host { qkv, probs, starts })?;
            if l == run.last_layer {
                // Nothing after the last captured attention is read.
                break;
            }
            let o_proj = weights(&layer.o_proj)?;
            cpu::add_linear(&context, rows, &o_proj, &mut x);
            let post = &layer.post_attention_norm;
            let h = cpu::rms_norm(&x, hidden, &gamma(post)?, post.epsilon);
            let mut inner = cpu::linear(&h, rows, &weights(&layer.gate_proj)?);
            let up = cpu::linear(&h, rows, &weights(&layer.up_proj)?);
            crate::host::silu_times(&mut inner, &up);
            let down = weights(&layer.down_proj)?;
            cpu::add_linear(&inner, rows, &down, &mut x);
        }
        Ok(())
    }
}

/// `x W + b` with the layer's weights widened to f32.
fn project(layer: &Linear, x: Tensor<3>) -> Tensor<3> {
    linear(
        x,
        to_f32(layer.weight.val()),
        layer.bias.as_ref().map(|b| to_f32(b.val())),
    )
}

/// transformers' `LlamaRMSNorm`: `weight * (x * rsqrt(mean(x^2) + eps))`, in f32.
fn rms_norm<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    let inv_rms = x
        .clone()
        .square()
        .mean_dim(D - 1)
        .add_scalar(norm.epsilon)
        .sqrt()
        .recip();
    to_f32(norm.gamma.val()).unsqueeze::<D>() * (x * inv_rms)
}

/// The `[seq, head_dim]` cosine and sine tables of positions `0..seq`, row-major: transformers'
/// `cat(freqs, freqs)` with `freqs = position * inv_freq` rounded to f32 before the cosine.
fn rotary_tables(inv_freq: &[f32], seq: usize) -> (Vec<f32>, Vec<f32>) {
    let d = 2 * inv_freq.len();
    let mut cos = Vec::with_capacity(seq * d);
    let mut sin = Vec::with_capacity(seq * d);
    for p in 0..seq {
        let row: Vec<f32> = inv_freq.iter().map(|&f| p as f32 * f).collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|&a| (f64::from(a)).cos() as f32));
            sin.extend(row.iter().map(|&a| (f64::from(a)).sin() as f32));
        }
    }
    (cos, sin)
}

/// `x * cos + rotate_half(x) * sin`, with `rotate_half(x) = cat(-x2, x1)` over the two halves of
/// the head dimension (transformers' `apply_rotary_pos_emb`).
fn rotate(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let first = x.clone().narrow(3, 0, d / 2);
    let second = x.clone().narrow(3, d / 2, d / 2);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * cos.clone() + rotated * sin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::HfConfig;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// Half-precision weights stay half precision in memory (the f32 copy of a layer exists only
    /// while it runs); f32 checkpoints stay f32.
    #[test]
    fn weights_keep_the_checkpoint_precision() {
        let device = Device::default();
        for (name, arch, dtype) in [
            ("mistral_tiny", Architecture::Mistral, DType::BF16),
            ("qwen2_tiny", Architecture::Qwen2, DType::F16),
            ("llama_tiny", Architecture::Llama, DType::F32),
        ] {
            let dir = fixture(name);
            let cfg = DecoderConfig::from_hf(&HfConfig::read(&dir).unwrap(), arch).unwrap();
            let model = Decoder::load(&cfg, &dir, &device, None).unwrap();
            assert_eq!(model.embed_tokens.weight.val().dtype(), dtype, "{name}");
            assert_eq!(
                model.layers[2].down_proj.weight.val().dtype(),
                dtype,
                "{name}"
            );
            assert_eq!(
                model.layers[0].input_norm.gamma.val().dtype(),
                dtype,
                "{name}"
            );
        }
    }

    /// An import's `--window` is recorded as transformers records windows; `model_sliding_windows`
    /// reads it back per layer.
    #[test]
    fn an_imported_window_applies_to_the_layers_it_names() {
        let windows = |config: Value| {
            let info = attn_types::ModelInfo {
                id: "imported".into(),
                architecture: Architecture::Imported { causal: true },
                num_layers: 3,
                num_heads: 2,
                head_dim: 4,
                hidden_size: 0,
                max_positions: 16,
                image: None,
                config,
                num_key_value_heads: None,
                rope: None,
            };
            model_sliding_windows(&info)
        };
        assert_eq!(windows(serde_json::json!({})).unwrap(), vec![None; 3]);
        assert_eq!(
            windows(serde_json::json!({"sliding_window": 5})).unwrap(),
            vec![Some(5); 3]
        );
        let types = ["full_attention", "sliding_attention", "full_attention"];
        assert_eq!(
            windows(serde_json::json!({"sliding_window": 5, "layer_types": types})).unwrap(),
            vec![None, Some(5), None]
        );
        let err = windows(serde_json::json!({"layer_types": types})).unwrap_err();
        assert!(err.to_string().contains("layer_types[1]"), "{err}");
    }

    #[test]
    fn llama3_frequencies_equal_transformers() {
        // transformers 5.23's ROPE_INIT_FUNCTIONS["llama3"] on llama_tiny's config (theta 5000,
        // head_dim 10, factor 4, low 1, high 4, original 64 positions), as f32 bits: the first
        // frequency is high (kept), the second medium (smoothed), the others low (divided by 4).
        let cfg = HfConfig::read(&fixture("llama_tiny")).unwrap();
        let inv = rope_inv_freq(&cfg, 10).unwrap();
        let torch = [
            0x3f80_0000u32,
            0x3dac_dae4,
            0x3c07_c291,
            0x3ac5_ba55,
            0x398f_fd93,
        ];
        assert_eq!(inv.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), torch);
    }
}
