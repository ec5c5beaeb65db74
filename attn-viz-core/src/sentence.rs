//! Sentence View: BertViz-style bipartite attention of one sequence, or aggregated over all.

use attn_types::{Architecture, HeadId, TokenMeta};
use serde::{Deserialize, Serialize};

use crate::data::ModelData;
use crate::error::VizError;

/// Which tokens to hide (their attention is removed and each row renormalized).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HideTokens {
    /// Hide special tokens (`[CLS]`, `[SEP]`, ...).
    pub special: bool,
    /// Hide position 0.
    pub first: bool,
    /// Hide these positions too.
    pub positions: Vec<u32>,
}

impl HideTokens {
    /// The paper's default: `[CLS]`/`[SEP]` for BERT, the first token for GPT-2, nothing for ViT.
    /// For imported vectors: the tokens the import flagged `is_special`, and, when the imported
    /// attention is causal, the first token too (the attention sink of decoders, as for GPT-2).
    pub fn for_architecture(arch: Architecture) -> Self {
        Self {
            special: matches!(arch, Architecture::Bert | Architecture::Imported { .. }),
            first: arch.is_causal(),
            positions: Vec::new(),
        }
    }

    /// Whether a token is hidden.
    pub fn hides(&self, t: &TokenMeta) -> bool {
        (self.special && t.is_special)
            || (self.first && t.position == 0)
            || self.positions.contains(&t.position)
    }
}

/// Options of the Sentence View.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SentenceOptions {
    /// Tokens to hide.
    pub hide: HideTokens,
    /// The hovered token position: its edges are marked `focused`.
    pub focus: Option<u32>,
    /// Edges with weight at or below this are left out (0 keeps every non-zero edge).
    pub min_weight: f32,
}

/// One token of both columns (queries left, keys right).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceToken {
    /// Position in the sequence.
    pub position: u32,
    /// Text (`pos N` in the aggregate view).
    pub text: String,
    /// Special token (in the aggregate view: special in every sequence having this position).
    pub is_special: bool,
    /// Hidden: drawn without edges (in the aggregate view: hidden in every sequence).
    pub hidden: bool,
}

/// One query-to-key edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceEdge {
    /// Query position (left column).
    pub query: u32,
    /// Key position (right column).
    pub key: u32,
    /// Attention after hiding and renormalization.
    pub weight: f32,
    /// Line opacity (= weight).
    pub opacity: f32,
    /// Whether the edge touches the focused token.
    pub focused: bool,
}

/// The Sentence View.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceView {
    /// The head.
    pub head: HeadId,
    /// The sequence, or `None` for the aggregate view.
    pub seq_id: Option<u32>,
    /// Tokens, by position.
    pub tokens: Vec<SentenceToken>,
    /// Edges between visible tokens with weight above `min_weight`, query-major.
    pub edges: Vec<SentenceEdge>,
    /// The focused position.
    pub focus: Option<u32>,
}

/// Removes the `hidden` entries of an attention row and renormalizes the rest as
/// `a / (1 - sum of hidden)`; hidden entries become 0. A row whose hidden mass is (nearly) 1 becomes all
/// zeros rather than exploding.
pub fn renormalize_hidden(row: &[f32], hidden: &[bool]) -> Vec<f32> {
    let hidden_mass: f32 = row
        .iter()
        .zip(hidden)
        .filter(|(_, h)| **h)
        .map(|(a, _)| *a)
        .sum();
    let rest = 1.0 - hidden_mass;
    row.iter()
        .zip(hidden)
        .map(|(&a, &h)| if h || rest <= 1e-6 { 0.0 } else { a / rest })
        .collect()
}

/// The Sentence View of one sequence of one head.
pub fn sentence_view(
    model: &ModelData<'_>,
    head: HeadId,
    seq_id: u32,
    opts: &SentenceOptions,
) -> Result<SentenceView, VizError> {
    check_opts(opts)?;
    let h = model.head(head)?;
    let att = h.attention_or_err()?;
    let si = model.sequence_index(seq_id)?;
    let span = model.spans()[si];
    let toks = &model.tokens().tokens[span.range()];
    let hidden: Vec<bool> = toks.iter().map(|t| opts.hide.hides(t)).collect();
    let a = &att[si];
    let mut edges = Vec::new();
    for q in 0..span.len {
        if hidden[q] {
            continue;
        }
        let row = renormalize_hidden(a.weights.row(q), &hidden);
        push_edges(&mut edges, q, &row, &hidden, opts);
    }
    Ok(SentenceView {
        head,
        seq_id: Some(seq_id),
        tokens: toks
            .iter()
            .zip(&hidden)
            .map(|(t, &hid)| SentenceToken {
                position: t.position,
                text: t.text.clone(),
                is_special: t.is_special,
                hidden: hid,
            })
            .collect(),
        edges,
        focus: opts.focus,
    })
}

/// The aggregate Sentence View of one head: for every (query position, key position) pair, the mean of
/// the (hidden-renormalized) attention over the sequences that have both positions visible, then every
/// query row divided by its sum so that it sums to 1.
pub fn aggregate_sentence_view(
    model: &ModelData<'_>,
    head: HeadId,
    opts: &SentenceOptions,
) -> Result<SentenceView, VizError> {
    check_opts(opts)?;
    let h = model.head(head)?;
    let att = h.attention_or_err()?;
    let max_len = model.spans().iter().map(|s| s.len).max().unwrap_or(0);
    let mut sum = vec![0.0f64; max_len * max_len];
    let mut count = vec![0u32; max_len * max_len];
    // Per position: sequences having it, of which it was visible, of which it was special.
    let mut seen = vec![0u32; max_len];
    let mut visible = vec![0u32; max_len];
    let mut special = vec![0u32; max_len];
    for (span, a) in model.spans().iter().zip(att) {
        let toks = &model.tokens().tokens[span.range()];
        let hidden: Vec<bool> = toks.iter().map(|t| opts.hide.hides(t)).collect();
        for (p, t) in toks.iter().enumerate() {
            seen[p] += 1;
            visible[p] += u32::from(!hidden[p]);
            special[p] += u32::from(t.is_special);
        }
        for q in 0..span.len {
            if hidden[q] {
                continue;
            }
            let row = renormalize_hidden(a.weights.row(q), &hidden);
            for k in (0..span.len).filter(|&k| !hidden[k]) {
                sum[q * max_len + k] += f64::from(row[k]);
                count[q * max_len + k] += 1;
            }
        }
    }
    let all_hidden: Vec<bool> = visible.iter().map(|&v| v == 0).collect();
    let mut edges = Vec::new();
    for q in 0..max_len {
        let mean: Vec<f64> = (0..max_len)
            .map(|k| {
                let c = count[q * max_len + k];
                if c == 0 {
                    0.0
                } else {
                    sum[q * max_len + k] / f64::from(c)
                }
            })
            .collect();
        let total: f64 = mean.iter().sum();
        if total <= 0.0 {
            continue;
        }
        let row: Vec<f32> = mean.iter().map(|m| (m / total) as f32).collect();
        push_edges(&mut edges, q, &row, &all_hidden, opts);
    }
    Ok(SentenceView {
        head,
        seq_id: None,
        tokens: (0..max_len)
            .map(|p| SentenceToken {
                position: p as u32,
                text: format!("pos {p}"),
                is_special: seen[p] > 0 && special[p] == seen[p],
                hidden: all_hidden[p],
            })
            .collect(),
        edges,
        focus: opts.focus,
    })
}

fn push_edges(
    edges: &mut Vec<SentenceEdge>,
    q: usize,
    row: &[f32],
    hidden: &[bool],
    opts: &SentenceOptions,
) {
    for (k, &w) in row.iter().enumerate() {
        if hidden[k] || w <= opts.min_weight {
            continue;
        }
        let focused = opts
            .focus
            .is_some_and(|f| f as usize == q || f as usize == k);
        edges.push(SentenceEdge {
            query: q as u32,
            key: k as u32,
            weight: w,
            opacity: w.clamp(0.0, 1.0),
            focused,
        });
    }
}

fn check_opts(opts: &SentenceOptions) -> Result<(), VizError> {
    if !(opts.min_weight.is_finite() && opts.min_weight >= 0.0) {
        return Err(VizError::Parameter {
            name: "min_weight",
            reason: format!("must be a non-negative number, got {}", opts.min_weight),
        });
    }
    Ok(())
}
