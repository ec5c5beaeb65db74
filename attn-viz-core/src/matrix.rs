//! Matrix View: every head as a small multiple in a layers x heads grid.

use attn_types::{Fidelity, HeadId, ProjectionMethod};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::color::{ColorEncoding, Colorizer, Legend, OriginalPatch, Rgba};
use crate::data::{HeadData, ModelData};
use crate::error::VizError;
use crate::geometry::{count_clusters, normalize_cell};
use crate::signature::{HeadSignature, signature_of};
use crate::state::{Search, ViewState};
use crate::trust::{TrustInfo, trust_info};

/// What a cell (or the Single View) tells about its head besides the points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellInfo {
    /// Trust signals and level.
    pub trust: TrustInfo,
    /// Attention signature and label, when the head has attention.
    pub signature: Option<HeadSignature>,
    /// The projection's fit statistic (KL divergence for t-SNE), when reported.
    pub objective: Option<f32>,
    /// How well nearness in this layout tracks attention, when measured (see
    /// `attn_project::fidelity`).
    #[serde(default)]
    pub fidelity: Option<Fidelity>,
    /// The head's ceiling in the layout's number of dimensions, when computed: the fidelity any
    /// layout of that many dimensions could reach (see `attn_project::ceiling`).
    #[serde(default)]
    pub ceiling: Option<Fidelity>,
}

/// One head's cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixCell {
    /// The head; its grid row is `head.layer` (early layers on top) and its column `head.head`.
    pub head: HeadId,
    /// Joint points (rows `0..n` queries, `n..2n` keys) scaled into this cell's `[0, 1]^dims`, aspect
    /// preserved; `z = 0` in 2D.
    pub positions: Vec<[f32; 3]>,
    /// Color of every point under the shared encoding.
    pub colors: Vec<Rgba>,
    /// Under the original-patch encoding: the patch of every point (`None` for CLS); else empty.
    pub patches: Vec<Option<OriginalPatch>>,
    /// Joint rows of the search matches (query rows, then key rows), ascending.
    pub matches: Vec<u32>,
    /// Number of clusters the matching points form (see [`crate::count_clusters`]); few suggest the
    /// head groups the word semantically, many that it groups by position.
    pub match_clusters: usize,
    /// Joint row of the selected point, if any.
    pub selected_row: Option<u32>,
    /// Trust, signature and fit.
    pub info: CellInfo,
}

/// The Matrix View.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixView {
    /// Grid rows (layers).
    pub layers: u16,
    /// Grid columns (heads per layer).
    pub heads_per_layer: u16,
    /// 2 or 3.
    pub dims: u8,
    /// The one projection method of all cells (`None` when there are no cells).
    pub method: Option<ProjectionMethod>,
    /// The shared encoding.
    pub encoding: ColorEncoding,
    /// Its legend.
    pub legend: Legend,
    /// The search, if any.
    pub search: Option<Search>,
    /// Number of tokens matching the search.
    pub matched_tokens: usize,
    /// The head the Single View shows (outline it).
    pub focused_head: HeadId,
    /// Cells of the heads present in the data, in layer-major order; heads without data have no cell.
    pub cells: Vec<MatrixCell>,
}

/// Builds the Matrix View of every head in `model` under `state`.
pub fn matrix_view(model: &ModelData<'_>, state: &ViewState) -> Result<MatrixView, VizError> {
    state.validate()?;
    let mut heads: Vec<&HeadData<'_>> = model.heads().iter().collect();
    heads.sort_by_key(|h| h.head);
    let method = check_projections(&heads, state)?;
    if let Some(sel) = state.selected {
        model.check_token(sel.token)?;
    }
    let colorizer = Colorizer::new(state.encoding, model, &heads)?;
    let matched = matched_tokens(model, state.search.as_ref());
    let cells = heads
        .par_iter()
        .map(|h| cell(model, h, state, &colorizer, &matched))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MatrixView {
        layers: model.layers(),
        heads_per_layer: model.heads_per_layer(),
        dims: state.dims,
        method,
        encoding: state.encoding,
        legend: colorizer.legend(),
        search: state.search.clone(),
        matched_tokens: matched.len(),
        focused_head: state.head,
        cells,
    })
}

fn cell(
    model: &ModelData<'_>,
    h: &HeadData<'_>,
    state: &ViewState,
    colorizer: &Colorizer<'_>,
    matched: &[usize],
) -> Result<MatrixCell, VizError> {
    let n = model.tokens().len();
    let positions = normalize_cell(h.head, &h.projection.coords)?;
    let matches = match_rows(matched, n);
    let match_points: Vec<[f32; 3]> = matches.iter().map(|&r| positions[r as usize]).collect();
    Ok(MatrixCell {
        head: h.head,
        colors: colorizer.colors(h)?,
        patches: colorizer.patch_refs(),
        match_clusters: count_clusters(&match_points, state.cluster_eps),
        matches,
        positions,
        selected_row: state
            .selected
            .map(|s| attn_types::JointIndex { tokens: n }.row(s.token, s.role) as u32),
        info: cell_info(model, h)?,
    })
}

/// Trust, signature (when attention is present) and fit of one head.
pub(crate) fn cell_info(model: &ModelData<'_>, h: &HeadData<'_>) -> Result<CellInfo, VizError> {
    Ok(CellInfo {
        trust: trust_info(h),
        signature: match h.attention {
            Some(_) => Some(signature_of(model, h)?),
            None => None,
        },
        objective: h.projection.objective,
        fidelity: h.projection.fidelity,
        ceiling: h.projection.ceiling,
    })
}

/// Checks dims and method of every head; returns the common method.
pub(crate) fn check_projections(
    heads: &[&HeadData<'_>],
    state: &ViewState,
) -> Result<Option<ProjectionMethod>, VizError> {
    let mut method = state.method;
    for h in heads {
        let spec = &h.projection.spec;
        let cols = h.projection.coords.cols();
        if cols != usize::from(state.dims) {
            return Err(VizError::Mismatch {
                head: h.head,
                field: "projection dims",
                expected: state.dims.to_string(),
                found: cols.to_string(),
            });
        }
        match method {
            Some(m) if m != spec.method => {
                return Err(VizError::Mismatch {
                    head: h.head,
                    field: "projection method",
                    expected: m.to_string(),
                    found: spec.method.to_string(),
                });
            }
            Some(_) => {}
            None => method = Some(spec.method),
        }
    }
    Ok(method)
}

/// Token indices matching the search, ascending.
pub(crate) fn matched_tokens(model: &ModelData<'_>, search: Option<&Search>) -> Vec<usize> {
    match search {
        Some(s) => model
            .tokens()
            .tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| s.matches(t))
            .map(|(i, _)| i)
            .collect(),
        None => Vec::new(),
    }
}

/// Joint rows of matched tokens: query rows, then key rows.
pub(crate) fn match_rows(matched: &[usize], n: usize) -> Vec<u32> {
    matched
        .iter()
        .map(|&t| t as u32)
        .chain(matched.iter().map(|&t| (n + t) as u32))
        .collect()
}
