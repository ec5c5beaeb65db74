//! The input bundle: borrowed views of what the pipeline produced, checked once.

use std::collections::{BTreeMap, HashMap};

use attn_types::{
    HeadDiagnostics, HeadId, HeadProjection, SequenceAttention, SequenceSpan, TokenTable,
};

use crate::color::Rgba;
use crate::error::VizError;

/// Query and key norms of one head **before** query/key scaling (the `norm` color encoding and dot sizes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawNorms<'a> {
    /// `|q_i|` for every token `i`.
    pub queries: &'a [f32],
    /// `|k_i|` for every token `i`.
    pub keys: &'a [f32],
}

impl RawNorms<'_> {
    /// The norm of a joint row (`0..n` queries, `n..2n` keys).
    pub(crate) fn joint(&self, row: usize) -> f32 {
        let n = self.queries.len();
        if row < n {
            self.queries[row]
        } else {
            self.keys[row - n]
        }
    }
}

/// Everything known about one head. Only `projection` is required; views that need more report
/// [`VizError::Missing`] naming the head and the field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadData<'a> {
    /// Which head.
    pub head: HeadId,
    /// The joint query+key projection (`2n` rows).
    pub projection: &'a HeadProjection,
    /// One attention matrix per sequence, in the token table's sequence order.
    pub attention: Option<&'a [SequenceAttention]>,
    /// Norms before scaling.
    pub norms: Option<RawNorms<'a>>,
    /// Normalization diagnostics (distance / dot-product correlations).
    pub diagnostics: Option<&'a HeadDiagnostics>,
}

impl<'a> HeadData<'a> {
    /// A head with only its projection.
    pub fn new(head: HeadId, projection: &'a HeadProjection) -> Self {
        Self {
            head,
            projection,
            attention: None,
            norms: None,
            diagnostics: None,
        }
    }

    /// The attention slice, or [`VizError::Missing`].
    pub(crate) fn attention_or_err(&self) -> Result<&'a [SequenceAttention], VizError> {
        self.attention.ok_or(VizError::Missing {
            head: self.head,
            field: "attention",
        })
    }

    /// The norms, or [`VizError::Missing`].
    pub(crate) fn norms_or_err(&self) -> Result<RawNorms<'a>, VizError> {
        self.norms.ok_or(VizError::Missing {
            head: self.head,
            field: "norms",
        })
    }
}

/// A whole model's data: the shared token table and any subset of its heads. Built with
/// [`ModelData::new`], which checks every size once so that views can index without failing.
#[derive(Debug, Clone)]
pub struct ModelData<'a> {
    tokens: &'a TokenTable,
    layers: u16,
    heads_per_layer: u16,
    heads: Vec<HeadData<'a>>,
    by_id: BTreeMap<HeadId, usize>,
    spans: Vec<SequenceSpan>,
    span_of_seq: HashMap<u32, usize>,
    patch_colors: Option<&'a [Rgba]>,
}

impl<'a> ModelData<'a> {
    /// Checks and bundles the data of a `layers x heads_per_layer` model.
    ///
    /// Checks: the token table is valid; every head is inside the grid, unique, and its projection is
    /// for that head with `2n` rows of 2 or 3 finite coordinates; attention (when given) has one
    /// `len x len` matrix per sequence in table order; norms (when given) have `n` values each.
    pub fn new(
        tokens: &'a TokenTable,
        layers: u16,
        heads_per_layer: u16,
        heads: Vec<HeadData<'a>>,
    ) -> Result<Self, VizError> {
        tokens
            .validate()
            .map_err(|e| VizError::Tokens(e.to_string()))?;
        let spans = tokens.sequences();
        let n = tokens.len();
        let mut by_id = BTreeMap::new();
        for (i, h) in heads.iter().enumerate() {
            check_head(h, n, &spans, layers, heads_per_layer)?;
            if by_id.insert(h.head, i).is_some() {
                return Err(VizError::DuplicateHead { head: h.head });
            }
        }
        let span_of_seq = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.seq_id, i))
            .collect();
        Ok(Self {
            tokens,
            layers,
            heads_per_layer,
            heads,
            by_id,
            spans,
            span_of_seq,
            patch_colors: None,
        })
    }

    /// Adds the mean pixel color of every token's image patch (one per token, in table order), used by
    /// the `original_patch` color encoding; without it that encoding gives a neutral gray plus an
    /// [`crate::OriginalPatch`] reference.
    pub fn with_patch_colors(mut self, colors: &'a [Rgba]) -> Result<Self, VizError> {
        if colors.len() != self.tokens.len() {
            return Err(VizError::Parameter {
                name: "patch_colors",
                reason: format!("{} colors for {} tokens", colors.len(), self.tokens.len()),
            });
        }
        self.patch_colors = Some(colors);
        Ok(self)
    }

    /// The token table.
    pub fn tokens(&self) -> &'a TokenTable {
        self.tokens
    }

    /// Number of layers of the model.
    pub fn layers(&self) -> u16 {
        self.layers
    }

    /// Heads per layer.
    pub fn heads_per_layer(&self) -> u16 {
        self.heads_per_layer
    }

    /// The heads given, in the order given.
    pub fn heads(&self) -> &[HeadData<'a>] {
        &self.heads
    }

    /// One head's data.
    pub fn head(&self, head: HeadId) -> Result<&HeadData<'a>, VizError> {
        self.by_id
            .get(&head)
            .map(|&i| &self.heads[i])
            .ok_or(VizError::UnknownHead { head })
    }

    /// The sequences of the token table, in order.
    pub fn spans(&self) -> &[SequenceSpan] {
        &self.spans
    }

    /// Index (into [`Self::spans`] and every head's attention) of a sequence.
    pub fn sequence_index(&self, seq_id: u32) -> Result<usize, VizError> {
        self.span_of_seq
            .get(&seq_id)
            .copied()
            .ok_or(VizError::UnknownSequence { seq_id })
    }

    /// Mean patch colors, when given.
    pub(crate) fn patch_colors(&self) -> Option<&'a [Rgba]> {
        self.patch_colors
    }

    /// Checks a token index.
    pub(crate) fn check_token(&self, token: usize) -> Result<(), VizError> {
        if token < self.tokens.len() {
            Ok(())
        } else {
            Err(VizError::TokenOutOfRange {
                token,
                len: self.tokens.len(),
            })
        }
    }

    /// Span index of a (valid) token.
    pub(crate) fn span_index_of_token(&self, token: usize) -> usize {
        let seq = self.tokens.tokens[token].seq_id;
        self.span_of_seq.get(&seq).copied().unwrap_or(0)
    }
}

fn check_head(
    h: &HeadData<'_>,
    n: usize,
    spans: &[SequenceSpan],
    layers: u16,
    heads_per_layer: u16,
) -> Result<(), VizError> {
    let head = h.head;
    if head.layer >= layers || head.head >= heads_per_layer {
        return Err(VizError::Mismatch {
            head,
            field: "head id",
            expected: format!("inside a {layers} x {heads_per_layer} grid"),
            found: head.to_string(),
        });
    }
    if h.projection.head != head {
        return Err(VizError::Mismatch {
            head,
            field: "projection.head",
            expected: head.to_string(),
            found: h.projection.head.to_string(),
        });
    }
    let coords = &h.projection.coords;
    if coords.rows() != 2 * n {
        return Err(VizError::Shape {
            head,
            field: "projection.coords rows",
            expected: 2 * n,
            found: coords.rows(),
        });
    }
    if !(2..=3).contains(&coords.cols()) {
        return Err(VizError::Shape {
            head,
            field: "projection.coords columns (2 or 3)",
            expected: 2,
            found: coords.cols(),
        });
    }
    if let Some(row) = coords
        .iter_rows()
        .position(|r| r.iter().any(|v| !v.is_finite()))
    {
        return Err(VizError::NonFinite { head, row });
    }
    if let Some(att) = h.attention {
        if att.len() != spans.len() {
            return Err(VizError::Shape {
                head,
                field: "attention (one matrix per sequence)",
                expected: spans.len(),
                found: att.len(),
            });
        }
        for (a, s) in att.iter().zip(spans) {
            if a.seq_id != s.seq_id {
                return Err(VizError::Mismatch {
                    head,
                    field: "attention seq_id (table order)",
                    expected: s.seq_id.to_string(),
                    found: a.seq_id.to_string(),
                });
            }
            if a.weights.shape() != (s.len, s.len) {
                return Err(VizError::Shape {
                    head,
                    field: "attention matrix side",
                    expected: s.len,
                    // Report whichever side is wrong.
                    found: if a.weights.rows() != s.len {
                        a.weights.rows()
                    } else {
                        a.weights.cols()
                    },
                });
            }
        }
    }
    if let Some(norms) = h.norms {
        for (field, v) in [("norms.queries", norms.queries), ("norms.keys", norms.keys)] {
            if v.len() != n {
                return Err(VizError::Shape {
                    head,
                    field,
                    expected: n,
                    found: v.len(),
                });
            }
        }
    }
    Ok(())
}
