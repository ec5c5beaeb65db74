//! Storing what an extraction captured: tokens, images, and each head normalized with its
//! diagnostics.

use attn_extract::{Corpus, LoadedModel};
use attn_normalize::{Normalizer, NormalizerValidParams};
use attn_project::AttendedKeys;
use attn_store::Dataset;
use attn_types::{HeadCapture, HeadId, ModelInfo, TokenTable};
use rayon::prelude::*;

use crate::error::{Context, Result, bail};
use crate::progress::StageCounter;

use super::RunPlan;

/// Stores the token table (the first time; later passes must agree with it), the images, and the
/// heads of `chunk` from one extraction pass, counting them on `stored`.
pub(super) fn store_extraction(
    dataset: &Dataset,
    extraction: &attn_types::Extraction,
    chunk: &[HeadId],
    corpus: &Corpus,
    model: &LoadedModel,
    plan: &RunPlan,
    stored: &StageCounter<'_>,
) -> Result<()> {
    if dataset.has_tokens() {
        let stored = dataset.read_tokens()?;
        if stored != extraction.tokens {
            bail!(
                "{}: the dataset holds tokens of another corpus; use a new --out directory",
                plan.out.display()
            );
        }
    } else {
        dataset.write_tokens(&extraction.tokens)?;
    }
    if let Corpus::Images(images) = corpus {
        store_images(dataset, images, model)?;
    }
    let normalizer = head_normalizer(
        plan.normalize,
        model.info().architecture.is_causal(),
        plan.projection.seed,
    )?;
    let tokens = &extraction.tokens;
    let keys = attended_keys(model.info())?;
    extraction
        .heads
        .par_iter()
        .filter(|c| chunk.contains(&c.vectors.head()))
        .try_for_each(|capture| -> Result<()> {
            if stored.cancelled() {
                return Ok(());
            }
            store_head(
                dataset,
                &normalizer,
                capture,
                tokens,
                keys(capture.vectors.head()),
                plan.projection.seed,
            )?;
            stored.inc();
            Ok(())
        })
}

/// A digest of the corpus's contents (over every text, or every image's size and
/// pixels, each sequence closed by its length): a file edited in place under the same name is
/// another corpus.
pub(super) fn corpus_digest(corpus: &Corpus) -> String {
    let mut digest = crate::digest::Digest::new();
    match corpus {
        Corpus::Text(texts) => {
            for t in texts {
                digest.eat(t.as_bytes());
                digest.eat(&(t.len() as u64).to_le_bytes());
            }
        }
        Corpus::Images(images) => {
            for i in images {
                digest.eat(&i.width().to_le_bytes());
                digest.eat(&i.height().to_le_bytes());
                digest.eat(i.as_raw());
            }
        }
    }
    digest.finish()
}

/// The normalizer of `run`, `extract` and `import`: key translation and query/key scaling when
/// `normalize` (else the identity, stored with its diagnostics), on causal pairs for causal models.
pub fn head_normalizer(normalize: bool, causal: bool, seed: u64) -> Result<NormalizerValidParams> {
    Ok(Normalizer::params()
        .translate(normalize)
        .scale(normalize)
        .causal(causal)
        .seed(seed)
        .check()?)
}

/// Normalizes one captured head and stores it: attention (when captured), value norms (when
/// captured), then the raw and normalized vectors, whose file marks the head as done. Shared by
/// `run`/`extract` and `import`.
pub fn store_head(
    dataset: &Dataset,
    normalizer: &NormalizerValidParams,
    capture: &HeadCapture,
    tokens: &TokenTable,
    keys: AttendedKeys,
    seed: u64,
) -> Result<()> {
    let head = capture.vectors.head();
    // The scale search weighs the pairs the model lets attend: a window layer's masked keys are
    // left out, as the fidelity metrics leave them out.
    let normalizer = normalizer.with_window(keys.window);
    let mut normalized = normalizer
        .normalize(&capture.vectors, tokens)
        .with_context(|| format!("normalizing head {head}"))?;
    // What the normalization does to nearness-means-attention, in the input space itself.
    if !capture.attention.is_empty() {
        let input_fidelity = |v: &attn_types::HeadVectors| {
            attn_project::fidelity(
                attn_project::FidelitySpace::Cosine {
                    queries: v.queries(),
                    keys: v.keys(),
                },
                capture.vectors.queries(),
                capture.vectors.keys(),
                tokens,
                &capture.attention,
                keys,
                seed,
            )
            .with_context(|| format!("fidelity of head {head}"))
        };
        normalized.diagnostics.fidelity_raw = Some(input_fidelity(&capture.vectors)?);
        normalized.diagnostics.fidelity_normalized = Some(input_fidelity(&normalized.vectors)?);
    }
    if !capture.attention.is_empty() {
        dataset.write_attention(head, &capture.attention)?;
    }
    if let Some(norms) = &capture.value_norms {
        dataset.write_value_norms(head, norms)?;
    }
    // Vectors last: their file marks the head as extracted.
    dataset.write_head(&capture.vectors, Some(&normalized))?;
    Ok(())
}

/// The keys each head of `model` may attend to, by head: causal or not, and its layer's sliding
/// window (Mistral, Qwen2/3), so that the fidelity metrics rank only the keys the model could weigh.
pub fn attended_keys(model: &ModelInfo) -> Result<impl Fn(HeadId) -> AttendedKeys + Sync + use<>> {
    let causal = model.architecture.is_causal();
    let windows = attn_extract::model_sliding_windows(model)?;
    Ok(move |head: HeadId| AttendedKeys {
        causal,
        window: windows.get(usize::from(head.layer)).copied().flatten(),
    })
}

/// Saves the input images of a vision run beside the dataset, as the model saw them (resized and
/// cropped as its image processor does), so the Image View can draw them later.
pub(super) fn store_images(
    dataset: &Dataset,
    images: &[image::RgbImage],
    model: &LoadedModel,
) -> Result<()> {
    for (i, img) in images.iter().enumerate() {
        let seq_id = i as u32;
        if dataset.has_image(seq_id) {
            continue;
        }
        let Some(input) = model.input_image(img) else {
            return Ok(());
        };
        let mut bytes = Vec::new();
        input
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .with_context(|| format!("encoding {}", dataset.image_path(seq_id).display()))?;
        dataset.write_image_png(seq_id, &bytes)?;
    }
    Ok(())
}
