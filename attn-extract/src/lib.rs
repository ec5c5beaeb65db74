#![doc = include_str!("../README.md")]

mod attention;
mod bert;
#[cfg(feature = "flex")]
mod cpu;
mod error;
mod gpt2;
mod hf;
mod host;
mod images;
mod llama;
mod text;
mod vit;

use std::path::Path;

pub use attn_types::AttentionKeep;
use attn_types::{
    Architecture, Extraction, HeadCapture, HeadId, HeadVectors, ImageGeometry, Matrix, ModelInfo,
    PatchPos, RopeCapture, SequenceAttention, TokenMeta, TokenTable,
};
pub use burn::tensor::Device;
use burn::tensor::{Int, Tensor, TensorData};
pub use image::RgbImage;
use rayon::prelude::*;

// The burn models and their configs stay private: a user loads a model with `LoadedModel::load`
// (the configs' `init` returns model types that only this crate can run).
pub use crate::error::{ExtractError, Result};
pub use crate::images::synthetic_images;
pub use crate::llama::model_sliding_windows;

use crate::attention::{ForwardRun, LayerTaps, attention_bias};
use crate::bert::{Bert, BertConfig};
use crate::gpt2::{Gpt2, Gpt2Config};
use crate::hf::HfConfig;
use crate::images::ImagePrep;
use crate::llama::{Decoder, DecoderConfig};
use crate::text::TextTokenizer;
use crate::vit::{Vit, VitConfig};

/// The input of an extraction.
#[derive(Debug, Clone)]
pub enum Corpus {
    /// Sentences or documents, for the text models (BERT, GPT-2, the Llama family).
    Text(Vec<String>),
    /// Images, for ViT (any size: they are resized to the model's input).
    Images(Vec<RgbImage>),
}

impl Corpus {
    /// Number of sequences.
    pub fn len(&self) -> usize {
        match self {
            Corpus::Text(t) => t.len(),
            Corpus::Images(i) => i.len(),
        }
    }

    /// True when there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Settings of [`LoadedModel::extract`].
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractOptions {
    /// Sequences per forward pass (sequences of similar length are batched together).
    pub batch_size: usize,
    /// Layers to capture (zero-based); `None` = all. Layers after the last one are not computed.
    pub layers: Option<Vec<u16>>,
    /// Heads to capture within each captured layer; `None` = all.
    pub heads: Option<Vec<u16>>,
    /// Capture only these (layer, head) pairs of the `layers` x `heads` selection (e.g. a few heads
    /// spread over several layers, without the rest of their cross product); `None` = all of it.
    pub only: Option<Vec<HeadId>>,
    /// Cut sequences longer than the model's position table (with a warning on stderr) instead of
    /// failing with [`ExtractError::SequenceTooLong`].
    pub truncate: bool,
    /// With `truncate`: print one warning line on stderr saying how many sequences were cut.
    pub warn_truncation: bool,
    /// Capture the attention probabilities (`HeadCapture::attention`); when false that list is empty.
    pub capture_attention: bool,
    /// For rotary-position models (the Llama family): capture queries and keys after the rotation
    /// (what attention multiplies; the default) or before it. Ignored by the other families.
    pub rope: RopeCapture,
    /// Which attention weights to keep (the others are stored as 0; a row's missing mass is
    /// `1 - sum`): everything for ordinary sentences, the strongest keys per query for long
    /// sequences, whose dense attention grows with the square of their length.
    pub attention_keep: AttentionKeep,
    /// On burn-flex, run every family's layers with attn-extract's own CPU kernels (the default:
    /// on the benchmark models 1.00x (MiniLM) and 1.12x (a 100M Llama-shaped decoder) PyTorch's
    /// rate, where burn-flex's tensor ops gave 0.75x; see the README). `false` runs burn's tensor
    /// ops, as every other backend does.
    pub cpu_kernels: bool,
}

/// Largest read-back of attention probabilities per forward pass, in f32 values (512 MiB): batches
/// of long sequences are split so that `batch x heads x seq^2` stays below it.
const PROBS_PER_BATCH: usize = 128 << 20;

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            batch_size: 16,
            layers: None,
            heads: None,
            truncate: false,
            warn_truncation: true,
            capture_attention: true,
            rope: RopeCapture::Post,
            attention_keep: AttentionKeep::Auto,
            only: None,
            cpu_kernels: true,
        }
    }
}

/// Picks a burn device by name: `flex`/`cpu` (pure-Rust CPU, default), `ndarray` (when built with the
/// `ndarray` feature), `cuda` or `cuda:N` (with the `cuda` feature), `default` (burn's choice).
pub fn device_from_name(name: &str) -> Result<Device> {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        #[cfg(feature = "flex")]
        "flex" | "cpu" => return Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        // burn 0.22 deprecates ndarray in favour of flex; still offered for BLAS.
        "ndarray" => return Ok(Device::ndarray()),
        "default" => return Ok(Device::default()),
        _ => {}
    }
    #[cfg(feature = "cuda")]
    if let Some(rest) = lower.strip_prefix("cuda") {
        let index = match rest.strip_prefix(':') {
            None if rest.is_empty() => Some(0usize),
            Some(n) => n.parse().ok(),
            None => None,
        };
        if let Some(index) = index {
            let device = Device::cuda(index);
            probe_device(&device, name)?;
            return Ok(device);
        }
    }
    let mut available: Vec<&str> = Vec::new();
    if cfg!(feature = "flex") {
        available.extend(["flex", "cpu"]);
    }
    if cfg!(feature = "ndarray") {
        available.push("ndarray");
    }
    if cfg!(feature = "cuda") {
        available.extend(["cuda", "cuda:N"]);
    }
    available.push("default");
    Err(ExtractError::UnknownDevice {
        name: name.to_string(),
        available: available.join(", "),
    })
}

/// One tiny upload and read-back on `device`. GPU backends reach the driver only at the first
/// tensor, and a missing driver or GPU panics in burn's device thread (and then aborts the process
/// inside the weight loader); probing first turns that into an error naming the device.
#[cfg(feature = "cuda")]
fn probe_device(device: &Device, name: &str) -> Result<()> {
    use std::sync::{Arc, Mutex};
    let first_panic: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = Arc::clone(&first_panic);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut slot) = seen.lock() {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            slot.get_or_insert(text);
        }
    }));
    let probe = device.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        Tensor::<1>::from_data(TensorData::new(vec![1.0f32], [1]), &probe).into_data()
    }));
    std::panic::set_hook(previous);
    if outcome.is_ok() {
        return Ok(());
    }
    let cause = first_panic
        .lock()
        .ok()
        .and_then(|slot| slot.clone())
        .unwrap_or_default();
    // cudarc's message lists every library name it tried; its first sentence says enough.
    let cause = cause.split(" - ").next().unwrap_or("").trim().to_string();
    Err(ExtractError::DeviceUnavailable {
        name: name.to_string(),
        message: if cause.is_empty() {
            "the first tensor could not be created on it (no GPU or driver?)".into()
        } else {
            format!("{cause} (is an NVIDIA driver installed and a GPU visible?)")
        },
    })
}

// Boxed tokenizers keep the variants of similar size.
enum Family {
    Bert {
        model: Bert,
        tokenizer: Box<TextTokenizer>,
        vocab_size: usize,
    },
    Gpt2 {
        model: Gpt2,
        tokenizer: Box<TextTokenizer>,
        vocab_size: usize,
    },
    Vit {
        model: Vit,
        prep: ImagePrep,
        grid: usize,
    },
    Decoder {
        model: Decoder,
        tokenizer: Box<TextTokenizer>,
        vocab_size: usize,
    },
}

/// A model loaded on a device, ready to extract from.
pub struct LoadedModel {
    info: ModelInfo,
    family: Family,
    device: Device,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("info", &self.info.id)
            .field("architecture", &self.info.architecture)
            .field("device", &self.device)
            .finish()
    }
}

/// One input sequence, before batching.
struct SeqInput {
    tokens: Vec<TokenMeta>,
    ids: Vec<u32>,
    pixels: Vec<f32>,
}

/// What one captured head collects over the whole corpus, filled batch by batch in place: rows in
/// corpus order (sequence `si` starts at token row `first_token[si]`), attention per sequence.
struct HeadBuffers {
    q: Vec<f32>,
    k: Vec<f32>,
    vnorm: Vec<f32>,
    attn: Vec<Vec<f32>>,
}

impl LoadedModel {
    /// Loads `dir` (config.json, model.safetensors, and tokenizer files or preprocessor_config.json)
    /// onto `device`. The family is chosen by `model_type` in config.json.
    pub fn load(dir: &Path, device: &Device) -> Result<LoadedModel> {
        Self::load_layers(dir, device, None)
    }

    /// As [`LoadedModel::load`], loading only layers `0..=last_layer` of a Llama-family decoder (the
    /// later layers' weights are never read, so a large checkpoint costs only what is used); other
    /// families load every layer. [`ModelInfo::num_layers`] still counts them all, and extracting
    /// a layer that was not loaded is an error.
    pub fn load_layers(
        dir: &Path,
        device: &Device,
        last_layer: Option<u16>,
    ) -> Result<LoadedModel> {
        let cfg = HfConfig::read(dir)?;
        let model_type = cfg.str_or(&["model_type"], "")?.to_string();
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| dir.display().to_string());
        let (info, family) = match model_type.as_str() {
            // BERT-architecture encoders; MiniLM checkpoints declare model_type "bert".
            "bert" => {
                let c = BertConfig::from_hf(&cfg)?;
                let model = Bert::load(&c, dir, device)?;
                let tokenizer = Box::new(TextTokenizer::load(dir, Architecture::Bert)?);
                let info = model_info(
                    id,
                    Architecture::Bert,
                    Sizes::multi_head(c.num_layers, c.num_heads, c.hidden_size),
                    c.max_positions,
                    None,
                    &cfg,
                )?;
                (
                    info,
                    Family::Bert {
                        model,
                        tokenizer,
                        vocab_size: c.vocab_size,
                    },
                )
            }
            "gpt2" => {
                let c = Gpt2Config::from_hf(&cfg)?;
                let model = Gpt2::load(&c, dir, device)?;
                let tokenizer = Box::new(TextTokenizer::load(dir, Architecture::Gpt2)?);
                let info = model_info(
                    id,
                    Architecture::Gpt2,
                    Sizes::multi_head(c.num_layers, c.num_heads, c.hidden_size),
                    c.max_positions,
                    None,
                    &cfg,
                )?;
                (
                    info,
                    Family::Gpt2 {
                        model,
                        tokenizer,
                        vocab_size: c.vocab_size,
                    },
                )
            }
            "vit" => {
                let c = VitConfig::from_hf(&cfg)?;
                let model = Vit::load(&c, dir, device)?;
                let image_size =
                    u32::try_from(c.image_size).map_err(|_| too_big(&cfg, "image_size"))?;
                let prep = ImagePrep::from_dir(dir, image_size)?;
                let grid = c.grid_side();
                let geometry = ImageGeometry {
                    image_size,
                    patch_size: u32::try_from(c.patch_size)
                        .map_err(|_| too_big(&cfg, "patch_size"))?,
                };
                let info = model_info(
                    id,
                    Architecture::Vit,
                    Sizes::multi_head(c.num_layers, c.num_heads, c.hidden_size),
                    grid * grid + 1,
                    Some(geometry),
                    &cfg,
                )?;
                (info, Family::Vit { model, prep, grid })
            }
            "llama" | "mistral" | "qwen2" | "qwen3" => {
                let architecture = match model_type.as_str() {
                    "llama" => Architecture::Llama,
                    "mistral" => Architecture::Mistral,
                    "qwen2" => Architecture::Qwen2,
                    _ => Architecture::Qwen3,
                };
                let c = DecoderConfig::from_hf(&cfg, architecture)?;
                let tokenizer = Box::new(TextTokenizer::load(dir, architecture)?);
                let model = Decoder::load(&c, dir, device, last_layer.map(|l| usize::from(l) + 1))?;
                let sizes = Sizes {
                    layers: c.num_layers,
                    heads: c.num_heads,
                    kv_heads: Some(c.num_kv_heads),
                    head_dim: c.head_dim,
                    hidden: c.hidden_size,
                };
                let mut info = model_info(id, architecture, sizes, c.max_positions, None, &cfg)?;
                info.rope = Some(RopeCapture::Post);
                (
                    info,
                    Family::Decoder {
                        model,
                        tokenizer,
                        vocab_size: c.vocab_size,
                    },
                )
            }
            _ => {
                return Err(ExtractError::UnknownArchitecture {
                    model_type,
                    path: cfg.path.clone(),
                });
            }
        };
        Ok(LoadedModel {
            info,
            family,
            device: device.clone(),
        })
    }

    /// Identity and sizes of the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// For a vision model, a description of its image preprocessing (size, resampling filter,
    /// crop, rescale, mean and std, as read from `preprocessor_config.json`), so that a dataset can
    /// record it; `None` for text models.
    pub fn image_preprocessing(&self) -> Option<String> {
        match &self.family {
            Family::Vit { prep, .. } => Some(format!("{prep:?}")),
            _ => None,
        }
    }

    /// For a vision model, the image it sees for `img`: resized (PIL's filter of
    /// `preprocessor_config.json`) and centre-cropped as transformers' image processor does, before
    /// rescaling and normalization; `None` for text models. Views draw patches over it.
    pub fn input_image(&self, img: &RgbImage) -> Option<RgbImage> {
        match &self.family {
            Family::Vit { prep, .. } => Some(prep.input_image(img)),
            _ => None,
        }
    }

    /// Runs `corpus` through the model and captures the selected heads.
    ///
    /// Sequences are batched by similar length (padding masked out) but returned in corpus order;
    /// `progress(done, total)` is called after every batch with the number of sequences processed.
    pub fn extract(
        &self,
        corpus: &Corpus,
        opts: &ExtractOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Extraction> {
        self.extract_until(corpus, opts, progress, &|| false)
    }

    /// [`Self::extract`] that stops before the next batch once `cancelled()` returns true, with
    /// [`ExtractError::Cancelled`] (a long document's pass can be interrupted between its batches).
    pub fn extract_until(
        &self,
        corpus: &Corpus,
        opts: &ExtractOptions,
        progress: &mut dyn FnMut(usize, usize),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Extraction> {
        let (layers, heads) = self.selection(opts)?;
        let inputs = self.prepare(corpus, opts, opts.warn_truncation)?;
        // Batches reuse their freed buffers instead of faulting fresh pages in (glibc).
        let _retain = crate::host::RetainFreedBuffers::new();
        let n_seq = inputs.len();
        let n_heads = self.info.num_heads as usize;
        let d = self.info.head_dim as usize;
        // Tap rows are `[q (heads) | k (kv heads) | v (kv heads)]`, head-major.
        let kv_heads = self.info.key_heads() as usize;
        let (q_width, kv_width) = (n_heads * d, kv_heads * d);
        let tap_width = q_width + 2 * kv_width;
        let key_head: Vec<usize> = (0..n_heads)
            .map(|h| self.info.key_head_of(h as u16) as usize)
            .collect();
        let last_layer = layers.iter().copied().max().unwrap_or(0);
        // layer -> slot in `store`; usize::MAX for layers computed but not captured.
        let mut layer_slot = vec![usize::MAX; self.info.num_layers as usize];
        for (slot, &l) in layers.iter().enumerate() {
            layer_slot[l] = slot;
        }
        // First token row of every sequence in the corpus-order output.
        let mut first_token = Vec::with_capacity(n_seq);
        let mut n_tok = 0;
        for s in &inputs {
            first_token.push(n_tok);
            n_tok += s.tokens.len();
        }
        // store[layer slot][head slot], written in place so that nothing is copied twice; `None`
        // for the pairs that `only` leaves out.
        let wanted = |l: usize, h: usize| {
            opts.only
                .as_ref()
                .is_none_or(|only| only.contains(&HeadId::new(l as u16, h as u16)))
        };
        let mut store: Vec<Vec<Option<HeadBuffers>>> = layers
            .iter()
            .map(|&l| {
                heads
                    .iter()
                    .map(|&h| {
                        wanted(l, h).then(|| HeadBuffers {
                            q: vec![0.0; n_tok * d],
                            k: vec![0.0; n_tok * d],
                            vnorm: vec![0.0; n_tok],
                            attn: vec![Vec::new(); if opts.capture_attention { n_seq } else { 0 }],
                        })
                    })
                    .collect()
            })
            .collect();

        // Batches of sequences of similar length: sort indices by length (stable, so ties keep
        // corpus order), then cut into runs of `batch_size`.
        let mut order: Vec<usize> = (0..n_seq).collect();
        order.sort_by_key(|&i| inputs[i].tokens.len());
        let mut done = 0;
        for batch in batches(&order, |i| inputs[i].tokens.len(), opts.batch_size, n_heads) {
            if cancelled() {
                return Err(ExtractError::Cancelled { done, total: n_seq });
            }
            let batch = batch.as_slice();
            let lengths: Vec<usize> = batch.iter().map(|&i| inputs[i].tokens.len()).collect();
            let seq = lengths.iter().copied().max().unwrap_or(0);
            let causal = self.info.architecture.is_causal();
            let bias = || attention_bias(&lengths, seq, causal, None, &self.device);
            let run = ForwardRun {
                lengths: &lengths,
                last_layer,
                rope: opts.rope,
                cpu_kernels: opts.cpu_kernels,
            };
            let capture = opts.capture_attention;
            let mut sink = |layer: usize, taps: LayerTaps| -> Result<()> {
                let slot = layer_slot[layer];
                if slot == usize::MAX {
                    return Ok(());
                }
                // One read-back per batch and layer for q/k/v, one for the probabilities.
                // `first_row[b]`: the row of sequence `b`'s first token in `qkv`.
                let padded = || (0..batch.len()).map(|b| b * seq).collect();
                let (qkv, probs, first_row): (_, _, Vec<usize>) = match taps {
                    LayerTaps::Tensors { qkv, probs } if capture => {
                        (to_vec(qkv)?, to_vec(probs)?, padded())
                    }
                    LayerTaps::Tensors { qkv, .. } => (to_vec(qkv)?, Vec::new(), padded()),
                    LayerTaps::Host { qkv, probs, starts } => (qkv, probs, starts),
                };
                // Heads are independent: scatter them on the rayon threads, which would otherwise
                // idle while this thread copies.
                store[slot]
                    .par_iter_mut()
                    .zip(heads.par_iter())
                    .for_each(|(buf, &h)| {
                        let Some(buf) = buf else {
                            return;
                        };
                        let k_at = q_width + key_head[h] * d;
                        let v_at = k_at + kv_width;
                        for (b, &si) in batch.iter().enumerate() {
                            let len = lengths[b];
                            for t in 0..len {
                                let r = first_row[b] + t;
                                let row = &qkv[r * tap_width..(r + 1) * tap_width];
                                let out = (first_token[si] + t) * d;
                                buf.q[out..out + d].copy_from_slice(&row[h * d..(h + 1) * d]);
                                buf.k[out..out + d].copy_from_slice(&row[k_at..k_at + d]);
                                let v = &row[v_at..v_at + d];
                                buf.vnorm[first_token[si] + t] =
                                    v.iter().map(|x| x * x).sum::<f32>().sqrt();
                            }
                            if capture {
                                let base = ((b * n_heads + h) * seq) * seq;
                                let attn = &mut buf.attn[si];
                                attn.reserve_exact(len * len);
                                for qi in 0..len {
                                    let start = base + qi * seq;
                                    attn.extend_from_slice(&probs[start..start + len]);
                                    let row = attn.len() - len;
                                    opts.attention_keep.apply(&mut attn[row..], len);
                                }
                            }
                        }
                    });
                Ok(())
            };
            match &self.family {
                Family::Bert { model, .. } => {
                    let ids = self.ids_tensor(batch, &inputs, seq);
                    model.forward(ids, bias, &run, &mut sink)?;
                }
                Family::Gpt2 { model, .. } => {
                    let ids = self.ids_tensor(batch, &inputs, seq);
                    model.forward(ids, bias, &run, &mut sink)?;
                }
                Family::Decoder { model, .. } => {
                    let ids = self.ids_tensor(batch, &inputs, seq);
                    model.forward(ids, &run, &mut sink)?;
                }
                Family::Vit { model, prep, .. } => {
                    let size = prep.size as usize;
                    let mut px = Vec::with_capacity(batch.len() * 3 * size * size);
                    for &i in batch {
                        px.extend_from_slice(&inputs[i].pixels);
                    }
                    let pixels = Tensor::<4>::from_data(
                        TensorData::new(px, [batch.len(), 3, size, size]),
                        &self.device,
                    );
                    model.forward(pixels, bias, &run, &mut sink)?;
                }
            }
            done += batch.len();
            progress(done, n_seq);
        }

        // The buffers already hold corpus order: wrap them without copying.
        let mut tokens = Vec::with_capacity(n_tok);
        for s in &inputs {
            tokens.extend(s.tokens.iter().cloned());
        }
        let mut captures = Vec::with_capacity(layers.len() * heads.len());
        for (per_head, &l) in store.into_iter().zip(&layers) {
            for (buf, &h) in per_head.into_iter().zip(&heads) {
                let Some(buf) = buf else {
                    continue;
                };
                let attention = buf
                    .attn
                    .into_iter()
                    .enumerate()
                    .map(|(si, weights)| {
                        let len = inputs[si].tokens.len();
                        Ok(SequenceAttention {
                            seq_id: si as u32,
                            weights: matrix(len, len, weights)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let head = HeadId::new(l as u16, h as u16);
                let vectors =
                    HeadVectors::new(head, matrix(n_tok, d, buf.q)?, matrix(n_tok, d, buf.k)?)
                        .map_err(|e| ExtractError::Backend(e.to_string()))?;
                captures.push(HeadCapture {
                    vectors,
                    attention,
                    value_norms: Some(buf.vnorm),
                });
            }
        }
        let mut model = self.info.clone();
        if model.rope.is_some() {
            model.rope = Some(opts.rope);
        }
        Ok(Extraction {
            model,
            tokens: TokenTable { tokens },
            heads: captures,
        })
    }

    /// The number of tokens of each sequence of `corpus` as [`LoadedModel::extract`] would run them
    /// (tokenization only; fails as `extract` does on an over-long sequence without `truncate`, and
    /// warns as it does with `truncate` and `warn_truncation`).
    pub fn sequence_lengths(&self, corpus: &Corpus, opts: &ExtractOptions) -> Result<Vec<usize>> {
        if let (Family::Vit { grid, .. }, Corpus::Images(images)) = (&self.family, corpus) {
            return Ok(vec![grid * grid + 1; images.len()]);
        }
        Ok(self
            .prepare(corpus, opts, opts.warn_truncation)?
            .iter()
            .map(|s| s.tokens.len())
            .collect())
    }

    /// The token ids a text corpus runs through the model with, per sequence (special tokens and
    /// truncation as in [`Self::extract`]); [`ExtractError::InvalidOption`] for images.
    pub fn token_ids(&self, corpus: &Corpus, opts: &ExtractOptions) -> Result<Vec<Vec<u32>>> {
        if matches!(corpus, Corpus::Images(_)) {
            return Err(ExtractError::InvalidOption(
                "token ids: images have no tokens".into(),
            ));
        }
        Ok(self
            .prepare(corpus, opts, false)?
            .into_iter()
            .map(|s| s.ids)
            .collect())
    }

    /// Validated, sorted, deduplicated layer and head selections.
    fn selection(&self, opts: &ExtractOptions) -> Result<(Vec<usize>, Vec<usize>)> {
        if opts.batch_size == 0 {
            return Err(ExtractError::InvalidOption(
                "batch_size must be at least 1".into(),
            ));
        }
        let pick = |sel: &Option<Vec<u16>>, n: u16, what: &str| -> Result<Vec<usize>> {
            let mut out: Vec<usize> = match sel {
                None => (0..n as usize).collect(),
                Some(v) => {
                    if let Some(bad) = v.iter().find(|&&x| x >= n) {
                        return Err(ExtractError::InvalidOption(format!(
                            "{what} {bad} does not exist (the model has {n})"
                        )));
                    }
                    v.iter().map(|&x| x as usize).collect()
                }
            };
            out.sort_unstable();
            out.dedup();
            if out.is_empty() {
                return Err(ExtractError::InvalidOption(format!("no {what} selected")));
            }
            Ok(out)
        };
        let layers = pick(&opts.layers, self.info.num_layers, "layer")?;
        if let Family::Decoder { model, .. } = &self.family
            && let Some(&beyond) = layers.iter().find(|&&l| l >= model.loaded_layers())
        {
            return Err(ExtractError::InvalidOption(format!(
                "layer {beyond} was not loaded (LoadedModel::load_layers loaded layers 0..{})",
                model.loaded_layers()
            )));
        }
        Ok((layers, pick(&opts.heads, self.info.num_heads, "head")?))
    }

    /// Tokenizes (or preprocesses) every sequence and builds its token metadata; `warn` reports the
    /// truncated sequences on stderr, in one line.
    fn prepare(&self, corpus: &Corpus, opts: &ExtractOptions, warn: bool) -> Result<Vec<SeqInput>> {
        if corpus.is_empty() {
            return Err(ExtractError::EmptyCorpus(
                "the corpus has no sequences".into(),
            ));
        }
        let max = self.info.max_positions as usize;
        match (&self.family, corpus) {
            (
                Family::Bert {
                    tokenizer,
                    vocab_size,
                    ..
                }
                | Family::Gpt2 {
                    tokenizer,
                    vocab_size,
                    ..
                }
                | Family::Decoder {
                    tokenizer,
                    vocab_size,
                    ..
                },
                Corpus::Text(texts),
            ) => {
                let mut out = Vec::with_capacity(texts.len());
                // (sequences cut, the first one cut, the longest length).
                let mut cut: Option<(usize, usize, usize)> = None;
                for (si, text) in texts.iter().enumerate() {
                    let mut enc = tokenizer.encode(text, None)?;
                    if enc.ids.len() > max {
                        if !opts.truncate {
                            return Err(ExtractError::SequenceTooLong {
                                index: si,
                                len: enc.ids.len(),
                                max,
                            });
                        }
                        let len = enc.ids.len();
                        cut = Some(cut.map_or((1, si, len), |(n, first, longest)| {
                            (n + 1, first, longest.max(len))
                        }));
                        enc = tokenizer.encode(text, Some(max))?;
                    }
                    if enc.ids.is_empty() {
                        return Err(ExtractError::EmptyCorpus(format!(
                            "sequence {si} has no tokens"
                        )));
                    }
                    if let Some((pos, &id)) = enc
                        .ids
                        .iter()
                        .enumerate()
                        .find(|(_, id)| **id as usize >= *vocab_size)
                    {
                        return Err(ExtractError::TokenOutOfVocab {
                            sequence: si,
                            token: enc.tokens[pos].clone(),
                            id,
                            vocab_size: *vocab_size,
                        });
                    }
                    let len = enc.ids.len() as u32;
                    let tokens = (0..enc.ids.len())
                        .map(|p| TokenMeta {
                            seq_id: si as u32,
                            position: p as u32,
                            seq_len: len,
                            text: enc.tokens[p].clone(),
                            is_special: enc.special[p],
                            patch: None,
                            is_cls: false,
                            offsets: Some((enc.offsets[p].0 as u32, enc.offsets[p].1 as u32)),
                        })
                        .collect();
                    out.push(SeqInput {
                        tokens,
                        ids: enc.ids,
                        pixels: Vec::new(),
                    });
                }
                if let (true, Some((n, first, longest))) = (warn, cut) {
                    eprintln!(
                        "attn-extract: warning: {n} of {} sequences are longer than the model's {max} \
                         positions and were truncated to {max} tokens (the first is sequence {first}; \
                         the longest had {longest} tokens)",
                        texts.len()
                    );
                }
                Ok(out)
            }
            (Family::Vit { prep, grid, .. }, Corpus::Images(images)) => {
                let len = (grid * grid + 1) as u32;
                if let Some(i) = images
                    .iter()
                    .position(|img| img.width() == 0 || img.height() == 0)
                {
                    return Err(ExtractError::EmptyCorpus(format!(
                        "image {i} has no pixels"
                    )));
                }
                Ok(images
                    .iter()
                    .enumerate()
                    .map(|(si, img)| {
                        let mut pixels = Vec::with_capacity(3 * (prep.size * prep.size) as usize);
                        prep.pixels_into(img, &mut pixels);
                        let mut tokens = Vec::with_capacity(len as usize);
                        tokens.push(TokenMeta {
                            seq_id: si as u32,
                            position: 0,
                            seq_len: len,
                            text: "[CLS]".into(),
                            is_special: true,
                            patch: None,
                            is_cls: true,
                            offsets: None,
                        });
                        for p in 0..grid * grid {
                            let (row, col) = (p / grid, p % grid);
                            tokens.push(TokenMeta {
                                seq_id: si as u32,
                                position: p as u32 + 1,
                                seq_len: len,
                                text: format!("patch {row},{col}"),
                                is_special: false,
                                patch: Some(PatchPos {
                                    row: row as u16,
                                    col: col as u16,
                                }),
                                is_cls: false,
                                offsets: None,
                            });
                        }
                        SeqInput {
                            tokens,
                            ids: Vec::new(),
                            pixels,
                        }
                    })
                    .collect())
            }
            (_, corpus) => Err(ExtractError::CorpusKind {
                model: self.info.architecture.to_string(),
                corpus: match corpus {
                    Corpus::Text(_) => "text".into(),
                    Corpus::Images(_) => "images".into(),
                },
            }),
        }
    }

    /// `[batch, seq]` token ids, right-padded with id 0 (masked out by the attention bias).
    fn ids_tensor(&self, batch: &[usize], inputs: &[SeqInput], seq: usize) -> Tensor<2, Int> {
        let mut ids = vec![0i64; batch.len() * seq];
        for (b, &i) in batch.iter().enumerate() {
            for (t, &id) in inputs[i].ids.iter().enumerate() {
                ids[b * seq + t] = i64::from(id);
            }
        }
        Tensor::from_data(TensorData::new(ids, [batch.len(), seq]), &self.device)
    }
}

/// Cuts `order` (sequence indices sorted by length) into batches of at most `batch_size` sequences
/// whose attention read-back, `batch x heads x longest^2` values, stays within [`PROBS_PER_BATCH`]
/// (a single sequence over it still forms a batch of one).
fn batches(
    order: &[usize],
    len_of: impl Fn(usize) -> usize,
    batch_size: usize,
    heads: usize,
) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for &i in order {
        // Sorted by length: the newest sequence is the batch's longest.
        let longest = len_of(i);
        let probs = (current.len() + 1) * heads * longest * longest;
        if !current.is_empty() && (current.len() == batch_size || probs > PROBS_PER_BATCH) {
            out.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The attention sizes of a model, as [`ModelInfo`] records them.
struct Sizes {
    layers: usize,
    heads: usize,
    /// Key/value heads under grouped-query attention.
    kv_heads: Option<usize>,
    head_dim: usize,
    hidden: usize,
}

impl Sizes {
    /// Multi-head attention with `hidden / heads`-dimensional heads (BERT, GPT-2, ViT).
    fn multi_head(layers: usize, heads: usize, hidden: usize) -> Self {
        Self {
            layers,
            heads,
            kv_heads: None,
            head_dim: hidden / heads.max(1),
            hidden,
        }
    }
}

fn model_info(
    id: String,
    architecture: Architecture,
    sizes: Sizes,
    max_positions: usize,
    image: Option<ImageGeometry>,
    cfg: &HfConfig,
) -> Result<ModelInfo> {
    Ok(ModelInfo {
        id,
        architecture,
        num_layers: u16::try_from(sizes.layers).map_err(|_| too_big(cfg, "num_hidden_layers"))?,
        num_heads: u16::try_from(sizes.heads).map_err(|_| too_big(cfg, "num_attention_heads"))?,
        head_dim: u32::try_from(sizes.head_dim).map_err(|_| too_big(cfg, "head_dim"))?,
        hidden_size: u32::try_from(sizes.hidden).map_err(|_| too_big(cfg, "hidden_size"))?,
        max_positions: u32::try_from(max_positions)
            .map_err(|_| too_big(cfg, "max_position_embeddings"))?,
        image,
        config: cfg.json.clone(),
        num_key_value_heads: sizes
            .kv_heads
            .map(u16::try_from)
            .transpose()
            .map_err(|_| too_big(cfg, "num_key_value_heads"))?,
        rope: None,
    })
}

fn too_big(cfg: &HfConfig, field: &str) -> ExtractError {
    ExtractError::InvalidConfig {
        path: cfg.path.clone(),
        message: format!("`{field}` is too large"),
    }
}

/// `t`'s values, row-major (moved out without a copy when `t` owns a contiguous buffer, as burn-flex
/// tensors that are not views do).
fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ExtractError::Backend(format!("reading results back: {e:?}")))
}

fn matrix(rows: usize, cols: usize, data: Vec<f32>) -> Result<Matrix> {
    Matrix::from_vec(rows, cols, data).map_err(|e| ExtractError::Backend(e.to_string()))
}

/// Version of this crate, recorded in dataset provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_the_count_and_the_attention_budget() {
        let order: Vec<usize> = (0..10).collect();
        let short = batches(&order, |_| 10, 4, 12);
        assert_eq!(
            short.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        // 4,096 tokens x 12 heads: 201M values per sequence, over the 134M budget: one per batch.
        let long = batches(&order[..3], |_| 4096, 16, 12);
        assert_eq!(long, vec![vec![0], vec![1], vec![2]]);
        // 2,048 tokens: 50M values each, two fit.
        let mid = batches(&order[..5], |_| 2048, 16, 12);
        assert_eq!(mid.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
    }
}
