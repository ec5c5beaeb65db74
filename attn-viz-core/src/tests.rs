//! Tests on small datasets whose answers are known by hand, and snapshots of the serialized views.

use std::collections::BTreeMap;

use attn_types::{
    HeadDiagnostics, HeadId, HeadProjection, Matrix, Metric, PatchPos, ProjectionMethod,
    ProjectionQuality, ProjectionSpec, Role, SequenceAttention, TokenMeta, TokenTable,
};

use crate::*;
// Tuning constants are crate-private; the tests check the views against them.
use crate::image::{STRONG_MIN_WEIGHT, STRONG_WIDTH_MIN, STRONG_WIDTH_RANGE};
use crate::single::{MIN_LINE_WEIGHT, SIZE_MAX, SIZE_MIN};
use crate::state::DEFAULT_CLUSTER_EPS;

fn tok(seq: u32, pos: u32, len: u32, text: &str, special: bool) -> TokenMeta {
    TokenMeta {
        seq_id: seq,
        position: pos,
        seq_len: len,
        text: text.to_string(),
        is_special: special,
        patch: None,
        is_cls: false,
        offsets: None,
    }
}

/// Two BERT-like sentences: `[CLS] the cat [SEP]` and `[CLS] The [SEP]` (7 tokens, 14 joint rows).
fn text_tokens() -> TokenTable {
    TokenTable {
        tokens: vec![
            tok(0, 0, 4, "[CLS]", true),
            tok(0, 1, 4, "the", false),
            tok(0, 2, 4, "cat", false),
            tok(0, 3, 4, "[SEP]", true),
            tok(1, 0, 3, "[CLS]", true),
            tok(1, 1, 3, "The", false),
            tok(1, 2, 3, "[SEP]", true),
        ],
    }
}

fn projection(head: HeadId, rows: &[[f32; 2]], quality: Option<f32>) -> HeadProjection {
    HeadProjection {
        head,
        spec: ProjectionSpec {
            method: ProjectionMethod::Tsne,
            dims: 2,
            metric: Metric::Cosine,
            seed: 0,
            params: BTreeMap::new(),
        },
        coords: Matrix::from_rows(rows).unwrap(),
        objective: Some(0.5),
        quality: quality.map(|t| ProjectionQuality {
            trustworthiness: t,
            continuity: 0.9,
            knn_recall: 0.5,
            k: 10,
        }),
        fidelity: None,
        ceiling: None,
    }
}

fn att(seq: u32, rows: &[&[f32]]) -> SequenceAttention {
    SequenceAttention {
        seq_id: seq,
        weights: Matrix::from_rows(rows).unwrap(),
    }
}

/// Head L0H0: x spans 0..10 and y 0..5, so normalized `x' = x / 10`, `y' = y / 10 + 0.25`.
/// The `the` matches sit at q1 (1,1), q5 (1.2,1), k1 (8,1), k5 (3,4): three clusters at eps 0.05.
fn h00_proj() -> HeadProjection {
    projection(
        HeadId::new(0, 0),
        &[
            [0.0, 0.0],
            [1.0, 1.0],
            [5.0, 2.0],
            [9.0, 4.0],
            [0.0, 1.0],
            [1.2, 1.0],
            [10.0, 5.0],
            [0.5, 0.0],
            [8.0, 1.0],
            [5.0, 3.0],
            [9.0, 5.0],
            [0.5, 1.0],
            [3.0, 4.0],
            [10.0, 4.0],
        ],
        Some(0.95),
    )
}

/// Head L0H1: the four `the` points are within 0.05 of each other: one cluster.
fn h01_proj() -> HeadProjection {
    projection(
        HeadId::new(0, 1),
        &[
            [0.0, 0.0],
            [1.0, 1.0],
            [5.0, 2.0],
            [9.0, 4.0],
            [0.0, 3.0],
            [1.1, 1.0],
            [10.0, 10.0],
            [0.5, 0.0],
            [1.0, 1.2],
            [5.0, 3.0],
            [9.0, 5.0],
            [0.5, 7.0],
            [1.2, 1.2],
            [10.0, 4.0],
        ],
        Some(0.95),
    )
}

fn h00_att() -> Vec<SequenceAttention> {
    vec![
        att(
            0,
            &[
                &[0.7, 0.1, 0.1, 0.1],
                &[0.5, 0.04, 0.3, 0.16],
                &[0.2, 0.6, 0.1, 0.1],
                &[0.25, 0.25, 0.25, 0.25],
            ],
        ),
        att(1, &[&[0.8, 0.1, 0.1], &[0.9, 0.06, 0.04], &[0.3, 0.2, 0.5]]),
    ]
}

/// A pure previous-token head (position 0 attends to itself).
fn h01_att() -> Vec<SequenceAttention> {
    vec![
        att(
            0,
            &[
                &[1.0, 0.0, 0.0, 0.0],
                &[1.0, 0.0, 0.0, 0.0],
                &[0.0, 1.0, 0.0, 0.0],
                &[0.0, 0.0, 1.0, 0.0],
            ],
        ),
        att(1, &[&[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0]]),
    ]
}

const Q_NORMS: [f32; 7] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
const K_NORMS: [f32; 7] = [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 8.0];

struct TextFixture {
    tokens: TokenTable,
    p00: HeadProjection,
    p01: HeadProjection,
    a00: Vec<SequenceAttention>,
    a01: Vec<SequenceAttention>,
    d00: HeadDiagnostics,
    d01: HeadDiagnostics,
}

impl TextFixture {
    fn new() -> Self {
        Self {
            tokens: text_tokens(),
            p00: h00_proj(),
            p01: h01_proj(),
            a00: h00_att(),
            a01: h01_att(),
            d00: HeadDiagnostics {
                spearman_cosine_after: -0.9,
                ..Default::default()
            },
            d01: HeadDiagnostics {
                spearman_cosine_after: -0.6,
                ..Default::default()
            },
        }
    }

    /// A 2 x 2 model with data for L0H0 and L0H1 only.
    fn model(&self) -> ModelData<'_> {
        let h00 = HeadData {
            head: HeadId::new(0, 0),
            projection: &self.p00,
            attention: Some(&self.a00),
            norms: Some(RawNorms {
                queries: &Q_NORMS,
                keys: &K_NORMS,
            }),
            diagnostics: Some(&self.d00),
        };
        let h01 = HeadData {
            head: HeadId::new(0, 1),
            projection: &self.p01,
            attention: Some(&self.a01),
            norms: None,
            diagnostics: Some(&self.d01),
        };
        ModelData::new(&self.tokens, 2, 2, vec![h01, h00]).unwrap()
    }
}

fn approx(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-5
}

// ---- Sentence View ----

#[test]
fn renormalization_after_hiding() {
    let r = renormalize_hidden(&[0.5, 0.3, 0.2], &[true, false, false]);
    assert_eq!(r[0], 0.0);
    assert!(approx(r[1], 0.6) && approx(r[2], 0.4));
    // Everything hidden: zeros, not a division by zero.
    assert_eq!(
        renormalize_hidden(&[1.0, 0.0], &[true, false]),
        vec![0.0, 0.0]
    );

    let f = TextFixture::new();
    let m = f.model();
    let opts = SentenceOptions {
        hide: HideTokens::for_architecture(attn_types::Architecture::Bert),
        focus: Some(2),
        min_weight: 0.0,
    };
    let v = sentence_view(&m, HeadId::new(0, 0), 0, &opts).unwrap();
    // [CLS] and [SEP] hidden: only the/cat remain; q1 row [0.5, 0.04, 0.3, 0.16] loses 0.66.
    assert_eq!(
        v.tokens.iter().map(|t| t.hidden).collect::<Vec<_>>(),
        vec![true, false, false, true]
    );
    let w = |q: u32, k: u32| {
        v.edges
            .iter()
            .find(|e| e.query == q && e.key == k)
            .map(|e| e.weight)
    };
    assert_eq!(v.edges.len(), 4);
    assert!(approx(w(1, 1).unwrap(), 0.04 / 0.34));
    assert!(approx(w(1, 2).unwrap(), 0.3 / 0.34));
    assert!(approx(w(2, 1).unwrap(), 0.6 / 0.7));
    assert!(approx(w(2, 2).unwrap(), 0.1 / 0.7));
    assert_eq!(w(0, 1), None);
    // Focus on position 2 marks its edges: (1,2), (2,1), (2,2).
    assert_eq!(v.edges.iter().filter(|e| e.focused).count(), 3);
    // GPT-2 default hides the first token only.
    let g = HideTokens::for_architecture(attn_types::Architecture::Gpt2);
    assert!(g.first && !g.special);
    let i = HideTokens::for_architecture(attn_types::Architecture::Imported { causal: true });
    assert!(i.first && i.special);
    let i = HideTokens::for_architecture(attn_types::Architecture::Imported { causal: false });
    assert!(!i.first && i.special);
}

#[test]
fn aggregate_attention_by_position() {
    // Lengths 2 and 3, nothing hidden.
    let tokens = TokenTable {
        tokens: vec![
            tok(0, 0, 2, "a", false),
            tok(0, 1, 2, "b", false),
            tok(1, 0, 3, "c", false),
            tok(1, 1, 3, "d", false),
            tok(1, 2, 3, "e", false),
        ],
    };
    let attention = vec![
        att(0, &[&[1.0, 0.0], &[0.5, 0.5]]),
        att(1, &[&[0.6, 0.4, 0.0], &[0.2, 0.2, 0.6], &[0.1, 0.1, 0.8]]),
    ];
    let proj = projection(HeadId::new(0, 0), &[[0.0, 0.0]; 10], None);
    let mut h = HeadData::new(HeadId::new(0, 0), &proj);
    h.attention = Some(&attention);
    let m = ModelData::new(&tokens, 1, 1, vec![h]).unwrap();
    let v = aggregate_sentence_view(&m, HeadId::new(0, 0), &SentenceOptions::default()).unwrap();
    let w = |q: u32, k: u32| {
        v.edges
            .iter()
            .find(|e| e.query == q && e.key == k)
            .map_or(0.0, |e| e.weight)
    };
    // q0: means (1+0.6)/2, (0+0.4)/2, 0 -> already sums to 1.
    assert!(approx(w(0, 0), 0.8) && approx(w(0, 1), 0.2) && w(0, 2) == 0.0);
    // q1: means 0.35, 0.35 and 0.6 (only the second sequence has key 2) -> / 1.3.
    assert!(approx(w(1, 0), 0.35 / 1.3));
    assert!(approx(w(1, 1), 0.35 / 1.3));
    assert!(approx(w(1, 2), 0.6 / 1.3));
    // q2: only the second sequence.
    assert!(approx(w(2, 2), 0.8));
    assert_eq!(v.tokens.len(), 3);
    assert_eq!(v.seq_id, None);
}

// ---- Single View ----

#[test]
fn top2_lines_with_cut() {
    let f = TextFixture::new();
    let m = f.model();
    // Query "the" (token 1): row [0.5, 0.04, 0.3, 0.16] -> keys 0 (0.5) and 2 (0.3).
    let mut s = ViewState {
        selected: Some(Selection {
            token: 1,
            role: Role::Query,
        }),
        ..Default::default()
    };
    let v = single_view(&m, &s).unwrap();
    let ends: Vec<(u32, u32, f32)> = v
        .lines
        .iter()
        .map(|l| (l.from_row, l.to_row, l.opacity))
        .collect();
    assert_eq!(ends, vec![(1, 7, 0.5), (1, 9, 0.3)]);
    // The whole first sentence is highlighted, the second not.
    let in_seq: Vec<bool> = v.points[..7]
        .iter()
        .map(|p| p.in_selected_sequence)
        .collect();
    assert_eq!(in_seq, vec![true, true, true, true, false, false, false]);

    // Query "The" (token 5): row [0.9, 0.06, 0.04] -> 0.9 and 0.06; 0.04 is cut.
    s.selected = Some(Selection {
        token: 5,
        role: Role::Query,
    });
    let v = single_view(&m, &s).unwrap();
    let ends: Vec<(u32, u32)> = v.lines.iter().map(|l| (l.from_row, l.to_row)).collect();
    assert_eq!(ends, vec![(5, 11), (5, 12)]);

    // Key "cat" (token 2): column [0.1, 0.3, 0.1, 0.25] -> queries 1 and 3.
    s.selected = Some(Selection {
        token: 2,
        role: Role::Key,
    });
    let v = single_view(&m, &s).unwrap();
    let ends: Vec<(u32, u32, f32)> = v
        .lines
        .iter()
        .map(|l| (l.from_row, l.to_row, l.weight))
        .collect();
    assert_eq!(ends, vec![(9, 1, 0.3), (9, 3, 0.25)]);
    assert_eq!(
        top_attended(&[0.01, 0.049, 0.02], 2, MIN_LINE_WEIGHT),
        vec![]
    );
}

#[test]
fn size_by_norm_and_navigation() {
    let f = TextFixture::new();
    let m = f.model();
    let s = ViewState {
        size_by_norm: true,
        ..Default::default()
    };
    let v = single_view(&m, &s).unwrap();
    // Norms span 1 (q0) .. 8 (k6).
    assert_eq!(v.points[0].size, SIZE_MIN);
    assert_eq!(v.points[13].size, SIZE_MAX);
    assert!(approx(v.points[7].size, SIZE_MIN + 1.5 / 7.0));
    // L0H1 has no norms: a named error.
    let s = ViewState {
        head: HeadId::new(0, 1),
        size_by_norm: true,
        ..Default::default()
    };
    assert_eq!(
        single_view(&m, &s).unwrap_err(),
        VizError::Missing {
            head: HeadId::new(0, 1),
            field: "norms"
        }
    );

    let nav = head_nav(HeadId::new(0, 11), 6, 12);
    assert_eq!(nav.next, HeadId::new(1, 0));
    assert_eq!(nav.prev, HeadId::new(0, 10));
    assert_eq!(nav.up, None);
    assert_eq!(nav.down, Some(HeadId::new(1, 11)));
    let nav = head_nav(HeadId::new(0, 0), 6, 12);
    assert_eq!(nav.prev, HeadId::new(5, 11));
    assert_eq!(head_nav(HeadId::new(5, 11), 6, 12).next, HeadId::new(0, 0));
}

// ---- Colors ----

#[test]
fn discrete_position_colors() {
    let key2 = discrete_position_color(7, Role::Key);
    assert_eq!(key2, Rgba([44, 160, 44, 255]));
    assert_eq!(
        discrete_position_color(7, Role::Query),
        Rgba([26, 96, 26, 255])
    );
    assert_eq!(
        discrete_position_color(0, Role::Key),
        discrete_position_color(5, Role::Key)
    );
    assert_ne!(
        discrete_position_color(1, Role::Key),
        discrete_position_color(2, Role::Key)
    );

    let f = TextFixture::new();
    let m = f.model();
    let s = ViewState {
        encoding: ColorEncoding::DiscretePosition,
        ..Default::default()
    };
    let v = single_view(&m, &s).unwrap();
    // Token 2 ("cat", position 2): query row 2, key row 9.
    assert_eq!(v.points[9].color, key2);
    assert_eq!(v.points[2].color, Rgba([26, 96, 26, 255]));
    assert_eq!(v.legend.entries.len(), 10);

    let s = ViewState::default();
    let v = single_view(&m, &s).unwrap();
    assert_eq!(v.points[0].color, QUERY_COLOR);
    assert_eq!(v.points[7].color, KEY_COLOR);
}

#[test]
fn norm_encoding_range_is_shared() {
    let f = TextFixture::new();
    let m = f.model();
    let s = ViewState {
        encoding: ColorEncoding::Norm,
        ..Default::default()
    };
    // Matrix View needs norms of every head: L0H1 has none.
    assert!(matches!(
        matrix_view(&m, &s),
        Err(VizError::Missing { field: "norms", .. })
    ));
    let v = single_view(&m, &s).unwrap();
    assert_eq!(v.legend.gradients[0].min, 1.0);
    assert_eq!(v.legend.gradients[0].max, 8.0);
}

// ---- Search ----

#[test]
fn search_hits_and_clusters() {
    let f = TextFixture::new();
    let m = f.model();
    let s = ViewState {
        search: Some(Search::substring("THE")),
        ..Default::default()
    };
    let v = matrix_view(&m, &s).unwrap();
    assert_eq!(v.matched_tokens, 2);
    assert_eq!(v.cells.len(), 2);
    assert_eq!(v.cells[0].head, HeadId::new(0, 0));
    assert_eq!(v.cells[0].matches, vec![1, 5, 8, 12]);
    // L0H0: q1 and q5 are 0.02 apart, k1 and k5 far: three clusters. L0H1: one.
    assert_eq!(v.cells[0].match_clusters, 3);
    assert_eq!(v.cells[1].match_clusters, 1);

    let exact = Search::exact("the");
    let t = text_tokens();
    assert!(exact.matches(&t.tokens[1]) && !exact.matches(&t.tokens[5]));
    assert!(exact.matches(&tok(0, 0, 1, "Ġthe", false)));
    assert!(!Search::substring("").matches(&t.tokens[1]));
    let s = ViewState {
        search: Some(exact),
        ..Default::default()
    };
    assert_eq!(matrix_view(&m, &s).unwrap().cells[0].matches, vec![1, 8]);
}

#[test]
fn cells_are_normalized_per_head() {
    let f = TextFixture::new();
    let m = f.model();
    let v = matrix_view(&m, &ViewState::default()).unwrap();
    let p = &v.cells[0].positions;
    assert_eq!(p[0], [0.0, 0.25, 0.0]);
    assert_eq!(p[6], [1.0, 0.75, 0.0]);
    for c in &v.cells {
        for q in &c.positions {
            assert!(q.iter().all(|x| (0.0..=1.0).contains(x)));
        }
    }
    // Wrong dims are refused, naming the head.
    let s = ViewState {
        dims: 3,
        ..Default::default()
    };
    assert!(matches!(
        matrix_view(&m, &s),
        Err(VizError::Mismatch {
            field: "projection dims",
            ..
        })
    ));
    let s = ViewState {
        method: Some(ProjectionMethod::Umap),
        ..Default::default()
    };
    assert!(matches!(
        matrix_view(&m, &s),
        Err(VizError::Mismatch {
            field: "projection method",
            ..
        })
    ));
}

// ---- Signatures, similarity, trust ----

#[test]
fn previous_token_head_is_labelled() {
    let f = TextFixture::new();
    let m = f.model();
    let s = head_signature(&m, HeadId::new(0, 1)).unwrap();
    assert_eq!(s.previous_share, 1.0);
    assert_eq!(s.label, HeadLabel::PreviousToken);
    assert_eq!(s.label.to_string(), "previous token");
    // 7 rows: q0 of each sequence attends to itself (distance 0), the other 5 at distance 1.
    assert!(approx(s.mean_distance, 5.0 / 7.0));
    assert!(approx(s.self_share, 2.0 / 7.0));
    assert_eq!(s.entropy, 0.0);
    // L0H0: previous share (0.5+0.6+0.25+0.9+0.2)/5 = 0.49 misses the 0.5 bar; attention to position 0,
    // (0.7+0.5+0.2+0.25+0.8+0.9+0.3)/7 = 0.52, makes it "attends to first".
    let s0 = head_signature(&m, HeadId::new(0, 0)).unwrap();
    assert!(approx(s0.previous_share, 0.49));
    assert!(approx(s0.first_token, 3.65 / 7.0));
    assert_eq!(s0.label, HeadLabel::AttendsToFirst);
}

#[test]
fn jsd_of_identical_heads_is_zero() {
    let f = TextFixture::new();
    let m = f.model();
    let a = HeadId::new(0, 0);
    assert_eq!(head_divergence(&m, a, a).unwrap(), 0.0);
    assert_eq!(jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]), 1.0);
    assert_eq!(jensen_shannon(&[0.5, 0.5], &[0.5, 0.5]), 0.0);
    let sim = head_similarity(&m).unwrap();
    assert_eq!(sim.heads, vec![HeadId::new(0, 0), HeadId::new(0, 1)]);
    assert_eq!(sim.divergence[0], 0.0);
    assert!(sim.divergence[1] > 0.0 && sim.divergence[1] == sim.divergence[2]);
    // Two heads: the layout distance equals sqrt(divergence).
    let d = ((sim.layout[0][0] - sim.layout[1][0]).powi(2)
        + (sim.layout[0][1] - sim.layout[1][1]).powi(2))
    .sqrt();
    assert!(approx(d, sim.divergence[1].sqrt()));
}

#[test]
fn mds_recovers_points_on_a_line() {
    // Points at 0, 1, 3: squared distances.
    let x = [0.0f64, 1.0, 3.0];
    let d2: Vec<f64> = x
        .iter()
        .flat_map(|a| x.iter().map(move |b| (a - b) * (a - b)))
        .collect();
    let l = classical_mds(&d2, 3);
    for i in 0..3 {
        for j in 0..3 {
            let d = ((l[i][0] - l[j][0]).powi(2) + (l[i][1] - l[j][1]).powi(2)).sqrt();
            assert!((f64::from(d) - (x[i] - x[j]).abs()).abs() < 1e-4);
        }
    }
    // One-dimensional data: the second axis is (numerically) empty.
    assert!(l.iter().all(|p| p[1].abs() < 1e-3));
    assert_eq!(classical_mds(&d2, 3), l, "deterministic");
}

#[test]
fn trust_levels() {
    let f = TextFixture::new();
    let m = f.model();
    let v = matrix_view(&m, &ViewState::default()).unwrap();
    assert_eq!(v.cells[0].info.trust.level, TrustLevel::High);
    assert_eq!(v.cells[1].info.trust.level, TrustLevel::Medium);
    assert_eq!(v.cells[0].info.trust.distance_correlation, Some(-0.9));
    let low = projection(HeadId::new(0, 0), &[[0.0, 0.0]; 14], Some(0.6));
    assert_eq!(
        trust_info(&HeadData::new(HeadId::new(0, 0), &low)).level,
        TrustLevel::Low
    );
    let none = projection(HeadId::new(0, 0), &[[0.0, 0.0]; 14], None);
    assert_eq!(
        trust_info(&HeadData::new(HeadId::new(0, 0), &none)).level,
        TrustLevel::Unknown
    );
}

#[test]
fn bad_input_is_named() {
    let t = text_tokens();
    let short = projection(HeadId::new(0, 0), &[[0.0, 0.0]; 10], None);
    let err = ModelData::new(&t, 1, 1, vec![HeadData::new(HeadId::new(0, 0), &short)]).unwrap_err();
    assert_eq!(
        err,
        VizError::Shape {
            head: HeadId::new(0, 0),
            field: "projection.coords rows",
            expected: 14,
            found: 10
        }
    );
    let ok = projection(HeadId::new(0, 0), &[[0.0, 0.0]; 14], None);
    let m = ModelData::new(&t, 1, 1, vec![HeadData::new(HeadId::new(0, 0), &ok)]).unwrap();
    assert!(matches!(
        sentence_view(&m, HeadId::new(0, 0), 0, &SentenceOptions::default()),
        Err(VizError::Missing {
            field: "attention",
            ..
        })
    ));
    assert_eq!(
        single_view(
            &m,
            &ViewState {
                head: HeadId::new(0, 1),
                ..Default::default()
            }
        )
        .unwrap_err(),
        VizError::UnknownHead {
            head: HeadId::new(0, 1)
        }
    );
    let mut nan = ok.clone();
    nan.coords.row_mut(3)[1] = f32::NAN;
    assert!(matches!(
        ModelData::new(&t, 1, 1, vec![HeadData::new(HeadId::new(0, 0), &nan)]),
        Err(VizError::NonFinite { row: 3, .. })
    ));
}

// ---- Image View ----

/// One 2 x 2 image: token 0 is CLS, tokens 1..5 patches (0,0), (0,1), (1,0), (1,1).
fn image_tokens() -> TokenTable {
    let mut tokens = vec![TokenMeta {
        is_cls: true,
        ..tok(0, 0, 5, "[CLS]", true)
    }];
    for (i, (r, c)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
        tokens.push(TokenMeta {
            patch: Some(PatchPos { row: r, col: c }),
            ..tok(0, i as u32 + 1, 5, &format!("patch {r},{c}"), false)
        });
    }
    TokenTable { tokens }
}

fn image_att() -> Vec<SequenceAttention> {
    vec![att(
        0,
        &[
            &[0.2, 0.2, 0.2, 0.2, 0.2],
            &[0.5, 0.3, 0.1, 0.05, 0.05],
            &[0.02, 0.04, 0.04, 0.04, 0.86],
            &[0.2, 0.2, 0.2, 0.2, 0.2],
            // Not a distribution: exercises the 0.05 arrow cut.
            &[0.04, 0.01, 0.01, 0.01, 0.03],
        ],
    )]
}

#[test]
fn image_arrows_and_strong_edges() {
    let t = image_tokens();
    let a = image_att();
    let p = projection(HeadId::new(0, 0), &[[0.0, 0.0]; 10], None);
    let mut h = HeadData::new(HeadId::new(0, 0), &p);
    h.attention = Some(&a);
    let m = ModelData::new(&t, 1, 1, vec![h]).unwrap();
    let s = ViewState {
        selected: Some(Selection {
            token: 1,
            role: Role::Query,
        }),
        ..Default::default()
    };
    let v = image_view(&m, &s, 0).unwrap();
    let pp = |row, col| PatchPos { row, col };
    assert_eq!((v.grid_rows, v.grid_cols), (2, 2));
    assert_eq!(v.selected, Some(ImageNode::Patch(pp(0, 0))));
    // Arrows: (0,0) -> CLS 0.5, (0,1) -> (1,1) 0.86, (1,0) -> CLS (tie, lowest); (1,1) max 0.04: none.
    let arrows: Vec<(PatchPos, ImageNode)> = v.arrows.iter().map(|a| (a.from, a.to)).collect();
    assert_eq!(
        arrows,
        vec![
            (pp(0, 0), ImageNode::Cls),
            (pp(0, 1), ImageNode::Patch(pp(1, 1))),
            (pp(1, 0), ImageNode::Cls),
        ]
    );
    // Strong edges (> 0.1, no self): CLS -> 4 patches, (0,0) -> CLS (0.1 is not > 0.1), (0,1) -> (1,1),
    // (1,0) -> 4 others.
    assert_eq!(v.strong.len(), 10);
    assert!(v.strong.iter().all(|e| e.weight > STRONG_MIN_WEIGHT));
    assert!(
        !v.strong
            .iter()
            .any(|e| e.from == ImageNode::Patch(pp(0, 0)) && e.to == ImageNode::Patch(pp(0, 1)))
    );
    let e = v
        .strong
        .iter()
        .find(|e| e.from == ImageNode::Patch(pp(0, 1)))
        .unwrap();
    assert!(approx(
        e.width,
        STRONG_WIDTH_MIN + STRONG_WIDTH_RANGE * 0.86
    ));
    // Heatmap of (0,0): patch weights 0.3, 0.1, 0.05, 0.05 scaled by 0.3; CLS 0.5 clamps to 1.
    let alphas: Vec<f32> = v.heatmap.iter().map(|c| c.alpha).collect();
    assert!(approx(alphas[0], 1.0) && approx(alphas[1], 1.0 / 3.0) && approx(alphas[3], 1.0 / 6.0));
    let cls = v.cls.unwrap();
    assert_eq!(
        (cls.token, cls.weight, cls.alpha),
        (0, Some(0.5), Some(1.0))
    );
}

#[test]
fn patch_encodings() {
    let t = image_tokens();
    let p = projection(HeadId::new(0, 0), &[[0.0, 0.0]; 10], None);
    let colors = [Rgba([1, 2, 3, 255]); 5];
    let m = ModelData::new(&t, 1, 1, vec![HeadData::new(HeadId::new(0, 0), &p)])
        .unwrap()
        .with_patch_colors(&colors)
        .unwrap();
    let s = ViewState {
        encoding: ColorEncoding::OriginalPatch,
        ..Default::default()
    };
    let v = single_view(&m, &s).unwrap();
    assert_eq!(v.points[0].patch, None);
    assert_eq!(v.points[0].color, NEUTRAL_COLOR);
    assert_eq!(
        v.points[9].patch,
        Some(OriginalPatch {
            seq_id: 0,
            row: 1,
            col: 1
        })
    );
    assert_eq!(v.points[9].color, Rgba([1, 2, 3, 255]));
    let s = ViewState {
        encoding: ColorEncoding::PatchRow,
        ..Default::default()
    };
    let v = single_view(&m, &s).unwrap();
    // Rows 0 and 1 are the two ends of the ramp.
    assert_eq!(v.points[1].color, v.legend.gradients[0].from);
    assert_eq!(v.points[4].color, v.legend.gradients[0].to);
}

// ---- Snapshots of the serialized views ----

#[test]
fn snapshot_matrix_view() {
    let f = TextFixture::new();
    let m = f.model();
    let s = ViewState {
        search: Some(Search::substring("the")),
        selected: Some(Selection {
            token: 2,
            role: Role::Key,
        }),
        encoding: ColorEncoding::NormalizedPosition,
        ..Default::default()
    };
    insta::assert_json_snapshot!("matrix_view", matrix_view(&m, &s).unwrap());
}

#[test]
fn snapshot_single_view() {
    let f = TextFixture::new();
    let m = f.model();
    let s = ViewState {
        search: Some(Search::substring("the")),
        selected: Some(Selection {
            token: 1,
            role: Role::Query,
        }),
        show_labels: true,
        size_by_norm: true,
        encoding: ColorEncoding::DiscretePosition,
        ..Default::default()
    };
    insta::assert_json_snapshot!("single_view", single_view(&m, &s).unwrap());
}

#[test]
fn snapshot_sentence_views() {
    let f = TextFixture::new();
    let m = f.model();
    let opts = SentenceOptions {
        hide: HideTokens::for_architecture(attn_types::Architecture::Bert),
        focus: Some(1),
        min_weight: 0.0,
    };
    insta::assert_json_snapshot!(
        "sentence_view",
        sentence_view(&m, HeadId::new(0, 0), 0, &opts).unwrap()
    );
    insta::assert_json_snapshot!(
        "aggregate_sentence_view",
        aggregate_sentence_view(&m, HeadId::new(0, 0), &SentenceOptions::default()).unwrap()
    );
}

#[test]
fn snapshot_image_view() {
    let t = image_tokens();
    let a = image_att();
    let p = projection(HeadId::new(0, 0), &[[0.0, 0.0]; 10], None);
    let mut h = HeadData::new(HeadId::new(0, 0), &p);
    h.attention = Some(&a);
    let m = ModelData::new(&t, 1, 1, vec![h]).unwrap();
    let s = ViewState {
        selected: Some(Selection {
            token: 2,
            role: Role::Query,
        }),
        ..Default::default()
    };
    insta::assert_json_snapshot!("image_view", image_view(&m, &s, 0).unwrap());
}

#[test]
fn snapshot_similarity_and_signatures() {
    let f = TextFixture::new();
    let m = f.model();
    insta::assert_json_snapshot!("head_similarity", head_similarity(&m).unwrap());
    insta::assert_json_snapshot!("head_signatures", head_signatures(&m).unwrap());
}

#[test]
fn state_deserializes_from_partial_json() {
    let s: ViewState = serde_json::from_str(
        r#"{"head": {"layer": 1, "head": 2}, "dims": 3, "search": {"text": "the"},
            "selected": {"token": 4, "role": "key"}, "encoding": "discrete_position"}"#,
    )
    .unwrap();
    assert_eq!(s.head, HeadId::new(1, 2));
    assert_eq!(s.dims, 3);
    assert_eq!(s.search, Some(Search::substring("the")));
    assert_eq!(
        s.selected,
        Some(Selection {
            token: 4,
            role: Role::Key
        })
    );
    assert_eq!(s.encoding, ColorEncoding::DiscretePosition);
    assert_eq!(s.labels, LabelStyle::default());
    assert_eq!(s.cluster_eps, DEFAULT_CLUSTER_EPS);
    let back: ViewState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    let o: SentenceOptions = serde_json::from_str(r#"{"hide": {"first": true}}"#).unwrap();
    assert!(o.hide.first && !o.hide.special && o.focus.is_none());
}

#[test]
fn three_dimensional_cells() {
    // A 2 x 1 x 0.5 box: x fills [0, 1], y is centred in [0.25, 0.75], z in [0.375, 0.625].
    let rows: Vec<[f32; 3]> = (0..14)
        .map(|i| match i % 2 {
            0 => [0.0, 0.0, 0.0],
            _ => [2.0, 1.0, 0.5],
        })
        .collect();
    let mut p = HeadProjection {
        coords: Matrix::from_rows(&rows).unwrap(),
        ..h00_proj()
    };
    p.spec.dims = 3;
    let t = text_tokens();
    let m = ModelData::new(&t, 1, 1, vec![HeadData::new(HeadId::new(0, 0), &p)]).unwrap();
    let s = ViewState {
        dims: 3,
        ..Default::default()
    };
    let v = matrix_view(&m, &s).unwrap();
    assert_eq!(v.cells[0].positions[0], [0.0, 0.25, 0.375]);
    assert_eq!(v.cells[0].positions[1], [1.0, 0.75, 0.625]);
    assert_eq!(
        single_view(&m, &s).unwrap().points[1].position,
        [1.0, 0.75, 0.625]
    );
}

#[test]
fn similar_heads_are_grouped() {
    // Heads 0 and 2 nearly identical, head 1 far from both.
    let sim = HeadSimilarity {
        heads: vec![HeadId::new(0, 0), HeadId::new(0, 1), HeadId::new(0, 2)],
        divergence: vec![0.0, 0.6, 0.01, 0.6, 0.0, 0.5, 0.01, 0.5, 0.0],
        similarity: vec![],
        layout: vec![],
    };
    assert_eq!(head_groups(&sim, 0.05), vec![0, 1, 0]);
    // Merging {0, 2} with 1 costs (0.6 + 0.5) / 2 = 0.55.
    assert_eq!(head_groups(&sim, 0.56), vec![0, 0, 0]);
    assert_eq!(head_groups(&sim, 0.54), vec![0, 1, 0]);
    assert_eq!(head_groups(&sim, 0.0), vec![0, 1, 2]);
}

#[test]
fn far_outliers_do_not_shrink_the_layout() {
    use attn_types::{HeadId, Matrix};
    // 1,000 points on a grid plus two points 1,000 units away: the grid must still fill the cell.
    let mut rows: Vec<[f32; 2]> = (0..1000)
        .map(|i| [(i % 40) as f32, (i / 40) as f32])
        .collect();
    rows.push([1000.0, 0.0]);
    rows.push([-1000.0, 0.0]);
    let m = Matrix::from_rows(&rows).unwrap();
    let p = crate::normalize_cell(HeadId::new(0, 0), &m).unwrap();
    let xs: Vec<f32> = p[..1000].iter().map(|q| q[0]).collect();
    let spread =
        xs.iter().copied().fold(f32::MIN, f32::max) - xs.iter().copied().fold(f32::MAX, f32::min);
    assert!(spread > 0.7, "the bulk spans only {spread} of the cell");
    assert_eq!(p[1000][0], 1.0, "outliers are drawn on the border");
    assert_eq!(p[1001][0], 0.0);
    // Small cells keep exact bounds.
    let small = Matrix::from_rows(&[[0.0f32, 0.0], [10.0, 0.0], [1.0, 1.0]]).unwrap();
    let q = crate::normalize_cell(HeadId::new(0, 0), &small).unwrap();
    assert_eq!(q[1][0], 1.0);
    assert!((q[2][0] - 0.1).abs() < 1e-6);
}

#[test]
fn patch_token_finds_the_patch() {
    let mut tokens = text_tokens();
    assert_eq!(
        crate::patch_token(&tokens, 0, 0, 0),
        None,
        "text has no patches"
    );
    tokens.tokens[2].patch = Some(attn_types::PatchPos { row: 1, col: 2 });
    let seq = tokens.tokens[2].seq_id;
    assert_eq!(crate::patch_token(&tokens, seq, 1, 2), Some(2));
    assert_eq!(crate::patch_token(&tokens, seq + 1, 1, 2), None);
}

/// The viewer API's encoding names and the CLI's `--color` names read as the same encoding; the
/// API name is what is written.
#[test]
fn encodings_read_by_their_api_and_cli_names() {
    for (api, cli) in [
        ("query_key", "query-key"),
        ("normalized_position", "position"),
        ("discrete_position", "discrete"),
        ("norm", "norm"),
        ("patch_row", "patch-row"),
        ("patch_column", "patch-column"),
        ("original_patch", "patch"),
    ] {
        let by_api: ColorEncoding = serde_json::from_value(api.into()).unwrap();
        let by_cli: ColorEncoding = serde_json::from_value(cli.into()).unwrap();
        assert_eq!(by_api, by_cli, "{api} / {cli}");
        assert_eq!(serde_json::to_value(by_api).unwrap(), api);
    }
    assert!(serde_json::from_value::<ColorEncoding>("rainbow".into()).is_err());
}
