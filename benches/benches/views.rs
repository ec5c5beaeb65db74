//! View-model benchmarks: Single View and Matrix View of a 6 x 12-head model with 10k joint points per
//! head (5,000 tokens in 200 sentences of 25), plus head similarity and the aggregate Sentence View.
//! Synthetic, seeded data; run with `cargo bench -p attnviz-benches --bench views`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use attn_types::{
    HeadDiagnostics, HeadId, HeadProjection, Matrix, Metric, ProjectionMethod, ProjectionQuality,
    ProjectionSpec, Role, SequenceAttention, TokenMeta, TokenTable,
};
use attn_viz_core::{
    ColorEncoding, HeadData, ModelData, RawNorms, Search, Selection, SentenceOptions, ViewState,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LAYERS: u16 = 6;
const HEADS: u16 = 12;
const SEQS: usize = 200;
const SEQ_LEN: usize = 25;
const TOKENS: usize = SEQS * SEQ_LEN;
const WORDS: [&str; 12] = [
    "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "park", "and", "then",
];

fn main() {
    divan::main();
}

/// Owned synthetic data of every head.
struct Fixture {
    tokens: TokenTable,
    projections: Vec<HeadProjection>,
    attention: Vec<Vec<SequenceAttention>>,
    norms: Vec<(Vec<f32>, Vec<f32>)>,
    diagnostics: HeadDiagnostics,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(build);

fn build() -> Fixture {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut tokens = Vec::with_capacity(TOKENS);
    for s in 0..SEQS {
        for p in 0..SEQ_LEN {
            let special = p == 0 || p + 1 == SEQ_LEN;
            let text = if p == 0 {
                "[CLS]".to_string()
            } else if p + 1 == SEQ_LEN {
                "[SEP]".to_string()
            } else {
                WORDS[rng.random_range(0..WORDS.len())].to_string()
            };
            tokens.push(TokenMeta {
                seq_id: s as u32,
                position: p as u32,
                seq_len: SEQ_LEN as u32,
                text,
                is_special: special,
                patch: None,
                is_cls: false,
                offsets: None,
            });
        }
    }
    let mut projections = Vec::new();
    let mut attention = Vec::new();
    let mut norms = Vec::new();
    for head in HeadId::all(LAYERS, HEADS) {
        // Points in 8 blobs so that search matches form a few clusters.
        let coords: Vec<f32> = (0..2 * TOKENS)
            .flat_map(|_| {
                let blob = rng.random_range(0..8) as f32;
                [
                    blob * 3.0 + rng.random::<f32>(),
                    (blob * 1.7).sin() * 5.0 + rng.random::<f32>(),
                ]
            })
            .collect();
        projections.push(HeadProjection {
            head,
            spec: ProjectionSpec {
                method: ProjectionMethod::Umap,
                dims: 2,
                metric: Metric::Cosine,
                seed: 0,
                params: BTreeMap::new(),
            },
            coords: Matrix::from_vec(2 * TOKENS, 2, coords).unwrap_or_default(),
            objective: None,
            quality: Some(ProjectionQuality {
                trustworthiness: 0.9,
                continuity: 0.9,
                knn_recall: 0.4,
                k: 15,
            }),
            fidelity: None,
            ceiling: None,
        });
        attention.push(
            (0..SEQS)
                .map(|s| {
                    let mut w = Vec::with_capacity(SEQ_LEN * SEQ_LEN);
                    for _ in 0..SEQ_LEN {
                        let row: Vec<f32> =
                            (0..SEQ_LEN).map(|_| rng.random::<f32>().powi(4)).collect();
                        let sum: f32 = row.iter().sum();
                        w.extend(row.iter().map(|v| v / sum));
                    }
                    SequenceAttention {
                        seq_id: s as u32,
                        weights: Matrix::from_vec(SEQ_LEN, SEQ_LEN, w).unwrap_or_default(),
                    }
                })
                .collect(),
        );
        norms.push((
            (0..TOKENS).map(|_| 5.0 + rng.random::<f32>()).collect(),
            (0..TOKENS).map(|_| 3.0 + rng.random::<f32>()).collect(),
        ));
    }
    Fixture {
        tokens: TokenTable { tokens },
        projections,
        attention,
        norms,
        diagnostics: HeadDiagnostics {
            spearman_cosine_after: -0.85,
            ..Default::default()
        },
    }
}

fn model(f: &Fixture) -> ModelData<'_> {
    let heads = f
        .projections
        .iter()
        .zip(&f.attention)
        .zip(&f.norms)
        .map(|((p, a), (q, k))| HeadData {
            head: p.head,
            projection: p,
            attention: Some(a),
            norms: Some(RawNorms {
                queries: q,
                keys: k,
            }),
            diagnostics: Some(&f.diagnostics),
        })
        .collect();
    ModelData::new(&f.tokens, LAYERS, HEADS, heads).expect("synthetic data is consistent")
}

fn state() -> ViewState {
    ViewState {
        head: HeadId::new(3, 7),
        encoding: ColorEncoding::NormalizedPosition,
        search: Some(Search::substring("the")),
        selected: Some(Selection {
            token: 1234,
            role: Role::Query,
        }),
        show_labels: true,
        size_by_norm: true,
        ..Default::default()
    }
}

#[divan::bench(sample_count = 20)]
fn single_view(bencher: divan::Bencher) {
    let m = model(&FIXTURE);
    let s = state();
    bencher.bench(|| attn_viz_core::single_view(&m, &s).expect("valid"));
}

#[divan::bench(sample_count = 5)]
fn matrix_view(bencher: divan::Bencher) {
    let m = model(&FIXTURE);
    let s = state();
    bencher.bench(|| attn_viz_core::matrix_view(&m, &s).expect("valid"));
}

#[divan::bench(sample_count = 3)]
fn head_similarity(bencher: divan::Bencher) {
    let m = model(&FIXTURE);
    bencher.bench(|| attn_viz_core::head_similarity(&m).expect("valid"));
}

#[divan::bench(sample_count = 20)]
fn aggregate_sentence_view(bencher: divan::Bencher) {
    let m = model(&FIXTURE);
    bencher.bench(|| {
        attn_viz_core::aggregate_sentence_view(&m, HeadId::new(3, 7), &SentenceOptions::default())
            .expect("valid")
    });
}
