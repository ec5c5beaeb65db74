//! A small synthetic dataset (feature `sample`), written through the public API: for tests and
//! examples of the crates that read datasets (renderers, viewer) and for trying a front end without
//! a model.

use std::collections::BTreeMap;
use std::path::Path;

use attn_types::{
    Architecture, DATA_MODEL_VERSION, DatasetMeta, HeadDiagnostics, HeadId, HeadProjection,
    HeadVectors, Matrix, Metric, ModelInfo, NormalizationParams, NormalizedHead, ProjectionMethod,
    ProjectionQuality, ProjectionSpec, RunInfo, SequenceAttention, TokenMeta, TokenTable,
};

use crate::{Dataset, StoreError};

/// What [`write_sample_dataset`] writes.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    /// Model layers.
    pub layers: u16,
    /// Heads per layer.
    pub heads: u16,
    /// Head dimension.
    pub dim: usize,
    /// Length of each sequence (its words are `w{seq}_{pos}`, the first token `[CLS]`, special).
    pub sequences: Vec<usize>,
    /// Causal attention (keys after the query get 0) instead of full attention.
    pub causal: bool,
    /// Projections written for every head.
    pub projections: Vec<(ProjectionMethod, u8)>,
    /// Seed of the pseudo-random vectors, attention and coordinates.
    pub seed: u64,
}

impl Default for SampleSpec {
    fn default() -> Self {
        SampleSpec {
            layers: 2,
            heads: 2,
            dim: 4,
            sequences: vec![5, 3, 4],
            causal: false,
            projections: vec![(ProjectionMethod::Tsne, 2), (ProjectionMethod::Pca, 3)],
            seed: 7,
        }
    }
}

/// Deterministic pseudo-random floats in `[-2, 2)` (an LCG), so that no RNG crate is needed.
struct Lcg(u64);

impl Lcg {
    fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }

    fn matrix(&mut self, rows: usize, cols: usize) -> Matrix {
        let data = (0..rows * cols).map(|_| self.next_f32()).collect();
        Matrix::from_vec(rows, cols, data).unwrap_or_else(|_| Matrix::zeros(rows, cols))
    }
}

/// The token table of `spec`.
pub fn sample_tokens(spec: &SampleSpec) -> TokenTable {
    let mut tokens = Vec::new();
    for (seq, &len) in spec.sequences.iter().enumerate() {
        for pos in 0..len {
            let first = pos == 0;
            tokens.push(TokenMeta {
                seq_id: seq as u32,
                position: pos as u32,
                seq_len: len as u32,
                text: if first {
                    "[CLS]".to_string()
                } else {
                    format!("w{seq}_{pos}")
                },
                is_special: first,
                patch: None,
                is_cls: first,
                offsets: None,
            });
        }
    }
    TokenTable { tokens }
}

/// Writes a complete synthetic dataset (meta, tokens, and per head: raw and normalized vectors,
/// attention, value norms and the projections of `spec`) into `dir`.
pub fn write_sample_dataset(dir: &Path, spec: &SampleSpec) -> Result<Dataset, StoreError> {
    let tokens = sample_tokens(spec);
    let n = tokens.len();
    let meta = DatasetMeta {
        schema_version: DATA_MODEL_VERSION,
        model: ModelInfo {
            id: "sample".to_string(),
            architecture: if spec.causal {
                Architecture::Gpt2
            } else {
                Architecture::Bert
            },
            num_layers: spec.layers,
            num_heads: spec.heads,
            head_dim: spec.dim as u32,
            hidden_size: (spec.dim * usize::from(spec.heads)) as u32,
            max_positions: 512,
            image: None,
            config: serde_json::json!({"model_type": "sample"}),
            num_key_value_heads: None,
            rope: None,
        },
        run: RunInfo {
            corpus: "builtin:sample".to_string(),
            num_sequences: spec.sequences.len() as u32,
            num_tokens: n as u64,
            seed: spec.seed,
            params: BTreeMap::new(),
            crate_versions: BTreeMap::from([(
                "attn-store".to_string(),
                crate::VERSION.to_string(),
            )]),
            created_at: "2026-01-01T00:00:00Z".to_string(),
        },
    };
    let dataset = Dataset::create(dir, &meta)?;
    dataset.write_tokens(&tokens)?;
    let mut rng = Lcg(spec.seed);
    for head in HeadId::all(spec.layers, spec.heads) {
        let raw = HeadVectors::new(head, rng.matrix(n, spec.dim), rng.matrix(n, spec.dim))
            .map_err(|e| StoreError::invalid(dir, "sample", e.to_string()))?;
        let normalized = NormalizedHead {
            vectors: raw.clone(),
            params: NormalizationParams {
                key_translation: vec![0.0; spec.dim],
                scale: 1.0,
            },
            diagnostics: HeadDiagnostics {
                spearman_cosine_before: -0.5,
                spearman_cosine_after: -0.6,
                spearman_euclidean_before: -0.4,
                spearman_euclidean_after: -0.5,
                weighted_corr_before: 0.1,
                weighted_corr_after: 0.2,
                norm_gap: 1.5,
                pairs: 100,
                fidelity_raw: None,
                fidelity_normalized: None,
            },
        };
        let attention: Vec<SequenceAttention> = tokens
            .sequences()
            .iter()
            .map(|s| {
                let len = s.len;
                let mut w = Matrix::zeros(len, len);
                for q in 0..len {
                    let keys = if spec.causal { q + 1 } else { len };
                    let raw: Vec<f32> = (0..keys).map(|_| rng.next_f32().abs() + 0.01).collect();
                    let sum: f32 = raw.iter().sum();
                    for (k, r) in raw.iter().enumerate() {
                        w.row_mut(q)[k] = r / sum;
                    }
                }
                SequenceAttention {
                    seq_id: s.seq_id,
                    weights: w,
                }
            })
            .collect();
        dataset.write_attention(head, &attention)?;
        let norms: Vec<f32> = (0..n).map(|_| rng.next_f32().abs() + 0.5).collect();
        dataset.write_value_norms(head, &norms)?;
        dataset.write_head(&raw, Some(&normalized))?;
        for &(method, dims) in &spec.projections {
            dataset.write_projection(&HeadProjection {
                head,
                spec: ProjectionSpec {
                    method,
                    dims,
                    metric: Metric::Cosine,
                    seed: spec.seed,
                    params: BTreeMap::new(),
                },
                coords: rng.matrix(2 * n, usize::from(dims)),
                objective: None,
                quality: Some(ProjectionQuality {
                    trustworthiness: 0.9,
                    continuity: 0.85,
                    knn_recall: 0.4,
                    k: 3,
                }),
                fidelity: None,
                ceiling: None,
            })?;
        }
    }
    Ok(dataset)
}
