//! Single View: one head in detail.

use attn_types::{HeadId, JointIndex, ProjectionMethod, Role};
use serde::{Deserialize, Serialize};

use crate::color::{ColorEncoding, Colorizer, Legend, OriginalPatch, Rgba};
use crate::data::ModelData;
use crate::error::VizError;
use crate::geometry::{Label, count_clusters, normalize_cell, place_labels};
use crate::matrix::{CellInfo, cell_info, check_projections, match_rows, matched_tokens};
use crate::state::{Search, ViewState, display_text};

/// Attention lines go to at most this many tokens.
pub const TOP_LINES: usize = 2;
/// Attention weights below this draw no line.
pub const MIN_LINE_WEIGHT: f32 = 0.05;
/// Dot size (a multiple of the renderer's base size) of the smallest norm when sizing by norm.
pub const SIZE_MIN: f32 = 0.5;
/// Dot size of the largest norm when sizing by norm.
pub const SIZE_MAX: f32 = 2.0;

/// One point of the Single View.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinglePoint {
    /// Joint row (`0..n` queries, `n..2n` keys).
    pub row: u32,
    /// Token index.
    pub token: u32,
    /// Query or key.
    pub role: Role,
    /// Position in `[0, 1]^dims` (aspect preserved), `z = 0` in 2D.
    pub position: [f32; 3],
    /// Color under the encoding.
    pub color: Rgba,
    /// Under the original-patch encoding: the patch to draw.
    pub patch: Option<OriginalPatch>,
    /// Dot size as a multiple of the base size: 1, or from [`SIZE_MIN`] (smallest norm of the head) to
    /// [`SIZE_MAX`] (largest) linearly when sizing by norm.
    pub size: f32,
    /// Whether the token matches the search.
    pub search_match: bool,
    /// Whether the token belongs to the selected point's sequence (the whole sequence is highlighted).
    pub in_selected_sequence: bool,
}

/// A line from the selected point to a point it is linked to by attention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionLine {
    /// Joint row of the selected point.
    pub from_row: u32,
    /// Joint row of the other end (a key for a selected query, a query for a selected key).
    pub to_row: u32,
    /// Start position.
    pub from: [f32; 3],
    /// End position.
    pub to: [f32; 3],
    /// The attention weight.
    pub weight: f32,
    /// Line opacity (= weight).
    pub opacity: f32,
}

/// The selected point, described.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectedPoint {
    /// Joint row.
    pub row: u32,
    /// Token index.
    pub token: u32,
    /// Role.
    pub role: Role,
    /// Token text.
    pub text: String,
    /// Sequence id.
    pub seq_id: u32,
    /// Position in the sequence.
    pub position: u32,
}

/// Adjacent heads, for stepping through the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadNav {
    /// Previous head in layer-major order (wraps to the previous layer's last head, and from the very
    /// first head to the very last).
    pub prev: HeadId,
    /// Next head in layer-major order (wraps likewise).
    pub next: HeadId,
    /// Same head one layer earlier, if any.
    pub up: Option<HeadId>,
    /// Same head one layer later, if any.
    pub down: Option<HeadId>,
}

/// The Single View.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SingleView {
    /// The head.
    pub head: HeadId,
    /// 2 or 3.
    pub dims: u8,
    /// Projection method.
    pub method: ProjectionMethod,
    /// The encoding.
    pub encoding: ColorEncoding,
    /// Its legend.
    pub legend: Legend,
    /// All `2n` points in joint-row order.
    pub points: Vec<SinglePoint>,
    /// The selected point.
    pub selected: Option<SelectedPoint>,
    /// Lines to the top-2 attended tokens (empty without selection or attention).
    pub lines: Vec<AttentionLine>,
    /// Placed labels (empty unless labels are shown).
    pub labels: Vec<Label>,
    /// The search, if any.
    pub search: Option<Search>,
    /// Tokens matching the search.
    pub matched_tokens: usize,
    /// Clusters the matching points form in this head.
    pub match_clusters: usize,
    /// Adjacent heads.
    pub nav: HeadNav,
    /// Trust, signature and fit.
    pub info: CellInfo,
}

/// Adjacent heads of `head` in a `layers x heads_per_layer` grid.
pub fn head_nav(head: HeadId, layers: u16, heads_per_layer: u16) -> HeadNav {
    let total = u32::from(layers) * u32::from(heads_per_layer);
    if total == 0 {
        return HeadNav {
            prev: head,
            next: head,
            up: None,
            down: None,
        };
    }
    let hpl = u32::from(heads_per_layer);
    let idx = u32::from(head.layer) * hpl + u32::from(head.head);
    let at = |i: u32| HeadId::new((i / hpl) as u16, (i % hpl) as u16);
    HeadNav {
        prev: at((idx + total - 1) % total),
        next: at((idx + 1) % total),
        up: head.layer.checked_sub(1).map(|l| HeadId::new(l, head.head)),
        down: (head.layer + 1 < layers).then(|| HeadId::new(head.layer + 1, head.head)),
    }
}

/// The `k` largest weights at or above `min` as `(index, weight)`, largest first (ties: lower index).
pub fn top_attended(weights: &[f32], k: usize, min: f32) -> Vec<(usize, f32)> {
    let mut v: Vec<(usize, f32)> = weights
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, w)| w >= min)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

/// Builds the Single View of `state.head`.
///
/// Lines: for a selected query, to the keys of its sequence with the [`TOP_LINES`] largest weights in
/// its attention row; for a selected key, to the queries with the largest weights in its attention
/// column; weights below [`MIN_LINE_WEIGHT`] are skipped.
///
/// Labels (when `show_labels`): candidates in priority order are the selected point, the points of the
/// selected sequence in the selected role, then search matches; with neither a selection nor a search,
/// every point. They are placed by [`place_labels`].
pub fn single_view(model: &ModelData<'_>, state: &ViewState) -> Result<SingleView, VizError> {
    state.validate()?;
    let h = model.head(state.head)?;
    let method = check_projections(&[h], state)?.unwrap_or(h.projection.spec.method);
    let tokens = &model.tokens().tokens;
    let n = tokens.len();
    let joint = JointIndex { tokens: n };
    let positions = normalize_cell(h.head, &h.projection.coords)?;
    let colorizer = Colorizer::new(state.encoding, model, &[h])?;
    let colors = colorizer.colors(h)?;
    let sizes = sizes(h, state.size_by_norm, n)?;
    let matched = matched_tokens(model, state.search.as_ref());
    let mut is_match = vec![false; n];
    for &t in &matched {
        is_match[t] = true;
    }
    let selected_span = match state.selected {
        Some(sel) => {
            model.check_token(sel.token)?;
            Some(model.spans()[model.span_index_of_token(sel.token)])
        }
        None => None,
    };
    let in_sel = |t: usize| selected_span.is_some_and(|s| s.range().contains(&t));
    let points: Vec<SinglePoint> = (0..2 * n)
        .map(|row| {
            let (token, role) = joint.token(row);
            SinglePoint {
                row: row as u32,
                token: token as u32,
                role,
                position: positions[row],
                color: colors[row],
                patch: colorizer.patch_ref(token),
                size: sizes[row],
                search_match: is_match[token],
                in_selected_sequence: in_sel(token),
            }
        })
        .collect();

    let mut selected = None;
    let mut lines = Vec::new();
    if let (Some(sel), Some(span)) = (state.selected, selected_span) {
        let t = &tokens[sel.token];
        let from_row = joint.row(sel.token, sel.role);
        selected = Some(SelectedPoint {
            row: from_row as u32,
            token: sel.token as u32,
            role: sel.role,
            text: t.text.clone(),
            seq_id: t.seq_id,
            position: t.position,
        });
        if let Some(att) = h.attention {
            let a = &att[model.span_index_of_token(sel.token)];
            let p = t.position as usize;
            let (weights, other_role): (Vec<f32>, Role) = match sel.role {
                Role::Query => (a.weights.row(p).to_vec(), Role::Key),
                Role::Key => ((0..span.len).map(|q| a.get(q, p)).collect(), Role::Query),
            };
            for (k, w) in top_attended(&weights, TOP_LINES, MIN_LINE_WEIGHT) {
                let to_row = joint.row(span.start + k, other_role);
                lines.push(AttentionLine {
                    from_row: from_row as u32,
                    to_row: to_row as u32,
                    from: positions[from_row],
                    to: positions[to_row],
                    weight: w,
                    opacity: w.clamp(0.0, 1.0),
                });
            }
        }
    }

    let labels = if state.show_labels {
        let mut rows: Vec<usize> = Vec::new();
        if let (Some(sel), Some(span)) = (state.selected, selected_span) {
            rows.push(joint.row(sel.token, sel.role));
            rows.extend(span.range().map(|t| joint.row(t, sel.role)));
        }
        rows.extend(matched.iter().copied());
        rows.extend(matched.iter().map(|&t| n + t));
        if state.selected.is_none() && state.search.is_none() {
            rows.extend(0..2 * n);
        }
        let mut seen = vec![false; 2 * n];
        let candidates: Vec<(u32, &str, [f32; 2])> = rows
            .into_iter()
            .filter(|&r| !std::mem::replace(&mut seen[r], true))
            .map(|r| {
                let p = positions[r];
                (
                    r as u32,
                    display_text(&tokens[joint.token(r).0].text),
                    [p[0], p[1]],
                )
            })
            .collect();
        place_labels(&candidates, &state.labels)
    } else {
        Vec::new()
    };

    let match_rows = match_rows(&matched, n);
    let match_points: Vec<[f32; 3]> = match_rows.iter().map(|&r| positions[r as usize]).collect();
    Ok(SingleView {
        head: h.head,
        dims: state.dims,
        method,
        encoding: state.encoding,
        legend: colorizer.legend(),
        points,
        selected,
        lines,
        labels,
        search: state.search.clone(),
        matched_tokens: matched.len(),
        match_clusters: count_clusters(&match_points, state.cluster_eps),
        nav: head_nav(h.head, model.layers(), model.heads_per_layer()),
        info: cell_info(model, h)?,
    })
}

/// Dot sizes of every joint row.
fn sizes(h: &crate::data::HeadData<'_>, by_norm: bool, n: usize) -> Result<Vec<f32>, VizError> {
    if !by_norm {
        return Ok(vec![1.0; 2 * n]);
    }
    let norms = h.norms_or_err()?;
    let all = || {
        norms
            .queries
            .iter()
            .chain(norms.keys)
            .copied()
            .filter(|v| v.is_finite())
    };
    let lo = all().fold(f32::INFINITY, f32::min);
    let hi = all().fold(f32::NEG_INFINITY, f32::max);
    Ok((0..2 * n)
        .map(|row| {
            let v = norms.joint(row);
            if hi > lo && v.is_finite() {
                SIZE_MIN + (SIZE_MAX - SIZE_MIN) * (v - lo) / (hi - lo)
            } else {
                1.0
            }
        })
        .collect())
}
