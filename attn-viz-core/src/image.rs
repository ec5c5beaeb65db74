//! Image View: attention of a ViT head over one image's patch grid.

use attn_types::{HeadId, PatchPos, TokenTable};
use serde::{Deserialize, Serialize};

use crate::data::ModelData;
use crate::error::VizError;
use crate::state::ViewState;

/// Arrows are drawn only to targets with at least this weight.
pub const ARROW_MIN_WEIGHT: f32 = 0.05;
/// The "all strong connections" view keeps edges with weight strictly above this.
pub const STRONG_MIN_WEIGHT: f32 = 0.1;
/// Width (a multiple of the base line width) of a strong edge of weight 0; weight 1 gives
/// `STRONG_WIDTH_MIN + STRONG_WIDTH_RANGE`.
pub const STRONG_WIDTH_MIN: f32 = 1.0;
/// Extra width per unit of weight of a strong edge.
pub const STRONG_WIDTH_RANGE: f32 = 4.0;

/// A node of the image: a patch or the CLS token (drawn as a square outside the image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageNode {
    /// A patch.
    Patch(PatchPos),
    /// The CLS token.
    Cls,
}

/// One patch of the heatmap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeatCell {
    /// The patch.
    pub patch: PatchPos,
    /// Its token index.
    pub token: u32,
    /// Attention from the selected token to this patch.
    pub weight: f32,
    /// Overlay opacity: weight divided by the largest patch weight.
    pub alpha: f32,
}

/// The CLS marker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClsMarker {
    /// Its token index.
    pub token: u32,
    /// Attention from the selected token to CLS (when something is selected).
    pub weight: Option<f32>,
    /// Its opacity on the heatmap's scale (weight / largest patch weight, at most 1).
    pub alpha: Option<f32>,
}

/// An arrow from a patch to the node it attends to most.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PatchArrow {
    /// The attending patch.
    pub from: PatchPos,
    /// Its strongest-attended node (may be itself).
    pub to: ImageNode,
    /// The weight.
    pub weight: f32,
}

/// One edge of the "all strong connections" view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageEdge {
    /// Query node.
    pub from: ImageNode,
    /// Key node.
    pub to: ImageNode,
    /// The weight.
    pub weight: f32,
    /// Opacity (= weight).
    pub opacity: f32,
    /// Width, `STRONG_WIDTH_MIN + STRONG_WIDTH_RANGE * weight`.
    pub width: f32,
}

/// The Image View.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageView {
    /// The head.
    pub head: HeadId,
    /// The image.
    pub seq_id: u32,
    /// Patch rows.
    pub grid_rows: u16,
    /// Patch columns.
    pub grid_cols: u16,
    /// The selected node (outlined), when the selection is a token of this image.
    pub selected: Option<ImageNode>,
    /// The selected node's attention over the patches (empty without selection).
    pub heatmap: Vec<HeatCell>,
    /// The CLS token, if the image has one.
    pub cls: Option<ClsMarker>,
    /// One arrow per patch whose strongest weight is at least [`ARROW_MIN_WEIGHT`].
    pub arrows: Vec<PatchArrow>,
    /// Every query-key pair of distinct tokens with weight above [`STRONG_MIN_WEIGHT`].
    pub strong: Vec<ImageEdge>,
}

/// The token of image `seq`'s patch at `row`, `col` (the Image View's selection; `None` when the
/// table has no such image or patch).
pub fn patch_token(tokens: &TokenTable, seq: u32, row: u16, col: u16) -> Option<usize> {
    tokens
        .tokens
        .iter()
        .position(|t| t.seq_id == seq && t.patch.is_some_and(|p| p.row == row && p.col == col))
}

/// Builds the Image View of `state.head` on image `seq_id`; the selection (`state.selected`, role
/// ignored: the token's query row is used) applies when it is a token of this image.
pub fn image_view(
    model: &ModelData<'_>,
    state: &ViewState,
    seq_id: u32,
) -> Result<ImageView, VizError> {
    let h = model.head(state.head)?;
    let att = h.attention_or_err()?;
    let si = model.sequence_index(seq_id)?;
    let span = model.spans()[si];
    let toks = &model.tokens().tokens[span.range()];
    let a = &att[si];
    let node = |p: usize| match toks[p].patch {
        Some(pp) => Some(ImageNode::Patch(pp)),
        None if toks[p].is_cls => Some(ImageNode::Cls),
        None => None,
    };
    let patches: Vec<(usize, PatchPos)> = toks
        .iter()
        .enumerate()
        .filter_map(|(p, t)| t.patch.map(|pp| (p, pp)))
        .collect();
    if patches.is_empty() {
        return Err(VizError::Missing {
            head: h.head,
            field: "patch positions (the sequence is not an image)",
        });
    }
    let grid_rows = patches.iter().map(|(_, p)| p.row).max().unwrap_or(0) + 1;
    let grid_cols = patches.iter().map(|(_, p)| p.col).max().unwrap_or(0) + 1;
    let cls_pos = toks.iter().position(|t| t.is_cls);

    let sel_pos = match state.selected {
        Some(s) => {
            model.check_token(s.token)?;
            span.range()
                .contains(&s.token)
                .then(|| s.token - span.start)
        }
        None => None,
    };
    let mut heatmap = Vec::new();
    let mut cls_weight = None;
    let mut cls_alpha = None;
    if let Some(sp) = sel_pos {
        let row = a.weights.row(sp);
        let max = patches.iter().map(|&(p, _)| row[p]).fold(0.0f32, f32::max);
        let scale = |w: f32| if max > 0.0 { (w / max).min(1.0) } else { 0.0 };
        heatmap = patches
            .iter()
            .map(|&(p, pp)| HeatCell {
                patch: pp,
                token: (span.start + p) as u32,
                weight: row[p],
                alpha: scale(row[p]),
            })
            .collect();
        if let Some(c) = cls_pos {
            cls_weight = Some(row[c]);
            cls_alpha = Some(scale(row[c]));
        }
    }

    let mut arrows = Vec::new();
    for &(p, pp) in &patches {
        let row = a.weights.row(p);
        // Strongest key; ties go to the lower position so the result is deterministic.
        let best = row
            .iter()
            .enumerate()
            .fold(None::<(usize, f32)>, |acc, (k, &w)| match acc {
                Some((_, bw)) if bw >= w => acc,
                _ => Some((k, w)),
            });
        if let Some((k, w)) = best
            && w >= ARROW_MIN_WEIGHT
            && let Some(to) = node(k)
        {
            arrows.push(PatchArrow {
                from: pp,
                to,
                weight: w,
            });
        }
    }

    let mut strong = Vec::new();
    for q in 0..span.len {
        let Some(from) = node(q) else { continue };
        for (k, &w) in a.weights.row(q).iter().enumerate() {
            if k == q || w <= STRONG_MIN_WEIGHT {
                continue;
            }
            if let Some(to) = node(k) {
                strong.push(ImageEdge {
                    from,
                    to,
                    weight: w,
                    opacity: w.clamp(0.0, 1.0),
                    width: STRONG_WIDTH_MIN + STRONG_WIDTH_RANGE * w.clamp(0.0, 1.0),
                });
            }
        }
    }

    Ok(ImageView {
        head: h.head,
        seq_id,
        grid_rows,
        grid_cols,
        selected: sel_pos.and_then(node),
        heatmap,
        cls: cls_pos.map(|c| ClsMarker {
            token: (span.start + c) as u32,
            weight: cls_weight,
            alpha: cls_alpha,
        }),
        arrows,
        strong,
    })
}
