//! Fixtures shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use attn_types::{
    Architecture, DATA_MODEL_VERSION, DatasetMeta, HeadDiagnostics, HeadId, HeadProjection,
    HeadVectors, Matrix, Metric, ModelInfo, NormalizationParams, NormalizedHead, PatchPos,
    ProjectionMethod, ProjectionQuality, ProjectionSpec, RunInfo, SequenceAttention, TokenMeta,
    TokenTable,
};

pub const LAYERS: u16 = 2;
pub const HEADS: u16 = 3;
pub const DIM: usize = 4;

/// Deterministic pseudo-random floats (a small LCG), so that tests need no RNG crate.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }
    pub fn matrix(&mut self, rows: usize, cols: usize) -> Matrix {
        Matrix::from_vec(
            rows,
            cols,
            (0..rows * cols).map(|_| self.next_f32()).collect(),
        )
        .unwrap()
    }
}

pub fn meta(id: &str) -> DatasetMeta {
    DatasetMeta {
        schema_version: DATA_MODEL_VERSION,
        model: ModelInfo {
            id: id.to_string(),
            architecture: Architecture::Gpt2,
            num_layers: LAYERS,
            num_heads: HEADS,
            head_dim: DIM as u32,
            hidden_size: (DIM * HEADS as usize) as u32,
            max_positions: 64,
            image: None,
            config: serde_json::json!({"n_layer": LAYERS, "n_head": HEADS, "activation": "gelu_new"}),
            num_key_value_heads: None,
            rope: None,
        },
        run: RunInfo {
            corpus: "builtin:test".into(),
            num_sequences: 3,
            num_tokens: 6,
            seed: 7,
            params: BTreeMap::from([("translate".to_string(), "true".to_string())]),
            crate_versions: BTreeMap::from([("attn-store".to_string(), "0.1.0".to_string())]),
            created_at: "2026-11-21T00:00:00Z".into(),
        },
    }
}

fn tok(seq: u32, pos: u32, len: u32, text: &str) -> TokenMeta {
    TokenMeta {
        seq_id: seq,
        position: pos,
        seq_len: len,
        text: text.to_string(),
        is_special: false,
        patch: None,
        is_cls: false,
        offsets: None,
    }
}

/// Three sequences (lengths 3, 1, 2) = 6 tokens, mixing text, special, unicode, patches and offsets.
pub fn tokens() -> TokenTable {
    let mut t = vec![
        tok(0, 0, 3, "<|endoftext|>"),
        tok(0, 1, 3, "Ġcafé"),
        tok(0, 2, 3, "日本"),
        tok(1, 0, 1, "[CLS]"),
        tok(2, 0, 2, "patch 0,0"),
        tok(2, 1, 2, "patch 0,1"),
    ];
    t[0].is_special = true;
    t[1].offsets = Some((0, 6));
    t[2].offsets = Some((6, 12));
    t[3].is_cls = true;
    t[3].is_special = true;
    t[4].patch = Some(PatchPos { row: 0, col: 0 });
    t[5].patch = Some(PatchPos { row: 0, col: 1 });
    TokenTable { tokens: t }
}

pub const N: usize = 6;

pub fn raw_head(head: HeadId, seed: u64) -> HeadVectors {
    let mut rng = Lcg(seed);
    HeadVectors::new(head, rng.matrix(N, DIM), rng.matrix(N, DIM)).unwrap()
}

pub fn normalized(raw: &HeadVectors) -> NormalizedHead {
    let mut q = raw.queries().clone();
    q.as_mut_slice().iter_mut().for_each(|v| *v *= 2.0);
    let mut k = raw.keys().clone();
    k.as_mut_slice()
        .iter_mut()
        .for_each(|v| *v = (*v + 0.1) / 2.0);
    NormalizedHead {
        vectors: HeadVectors::new(raw.head(), q, k).unwrap(),
        params: NormalizationParams {
            key_translation: vec![0.1, -0.25, 1e-7, 3.0],
            scale: 2.0,
        },
        diagnostics: HeadDiagnostics {
            spearman_cosine_before: -0.5,
            spearman_cosine_after: -0.75,
            spearman_euclidean_before: f32::NAN,
            spearman_euclidean_after: f32::INFINITY,
            weighted_corr_before: 0.1,
            weighted_corr_after: -0.3,
            norm_gap: -4.59,
            pairs: 123,
            fidelity_raw: None,
            fidelity_normalized: None,
        },
    }
}

/// Causal attention for the three sequences: row q spreads over keys 0..=q (the rest exactly 0).
pub fn attention(seed: u64) -> Vec<SequenceAttention> {
    let mut rng = Lcg(seed);
    [(0u32, 3usize), (1, 1), (2, 2)]
        .into_iter()
        .map(|(seq_id, len)| {
            let mut m = Matrix::zeros(len, len);
            for q in 0..len {
                let raw: Vec<f32> = (0..=q).map(|_| rng.next_f32().abs() + 0.01).collect();
                let sum: f32 = raw.iter().sum();
                for (k, r) in raw.iter().enumerate() {
                    m.row_mut(q)[k] = r / sum;
                }
            }
            SequenceAttention { seq_id, weights: m }
        })
        .collect()
}

pub fn projection(head: HeadId, method: ProjectionMethod, dims: u8, seed: u64) -> HeadProjection {
    let mut rng = Lcg(seed);
    HeadProjection {
        head,
        spec: ProjectionSpec {
            method,
            dims,
            metric: Metric::Cosine,
            seed,
            params: BTreeMap::from([
                ("perplexity".to_string(), 50.0),
                ("iterations".to_string(), 300.0),
            ]),
        },
        coords: rng.matrix(2 * N, usize::from(dims)),
        objective: if method == ProjectionMethod::Tsne {
            Some(1.25)
        } else {
            None
        },
        quality: Some(ProjectionQuality {
            trustworthiness: 0.9,
            continuity: 0.8,
            knn_recall: 0.3,
            k: 10,
        }),
        fidelity: None,
        ceiling: None,
    }
}
