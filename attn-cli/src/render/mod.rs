//! Figures: the views of attn-viz-core drawn as PNG or SVG. This module only draws; every position,
//! color, line and label comes from attn-viz-core.

pub mod canvas;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use attn_store::Dataset;
use attn_types::{
    HeadDiagnostics, HeadId, HeadProjection, ModelInfo, PatchPos, ProjectionMethod, SequenceAttention,
    TokenTable,
};
use attn_viz_core::{
    HeadData, HeadSimilarity, ImageNode, ImageView, Legend, MatrixView, ModelData, RawNorms, SentenceView,
    SingleView, ViewState,
};

use canvas::{Anchor, Canvas, Rgba, Surface, SvgDoc};

const WHITE: Rgba = [255, 255, 255, 255];
const INK: Rgba = [40, 40, 40, 255];
const FAINT: Rgba = [150, 150, 150, 255];
const HIGHLIGHT: Rgba = [20, 20, 20, 255];

/// What the views need from a dataset besides the projections, loaded once and shared by the views
/// of every projection (the viewer's server keeps one copy however many projections it shows).
pub struct HeadTables {
    /// The model.
    pub model: ModelInfo,
    /// All tokens.
    pub tokens: TokenTable,
    heads: Vec<HeadId>,
    attention: Vec<Option<Vec<SequenceAttention>>>,
    norms: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    diagnostics: Vec<Option<HeadDiagnostics>>,
}

impl HeadTables {
    /// Loads the token table and, for every head of `dataset` (or only those in `only`), its norms
    /// before scaling, normalization diagnostics and attention.
    pub fn load(dataset: &Dataset, only: Option<&[HeadId]>) -> Result<Self> {
        let mut t = HeadTables {
            model: dataset.meta().model.clone(),
            tokens: dataset.read_tokens()?,
            heads: Vec::new(),
            attention: Vec::new(),
            norms: Vec::new(),
            diagnostics: Vec::new(),
        };
        for head in dataset.heads()? {
            if only.is_some_and(|o| !o.contains(&head)) {
                continue;
            }
            let stored = dataset.read_head(head)?;
            t.norms.push(Some((stored.raw.queries.row_norms(), stored.raw.keys.row_norms())));
            t.diagnostics.push(stored.normalized.map(|n| n.diagnostics));
            t.attention.push(if dataset.has_attention(head) { Some(dataset.read_attention(head)?) } else { None });
            t.heads.push(head);
        }
        Ok(t)
    }
}

/// The data of one projection's views: the shared [`HeadTables`] plus the projection of every head
/// that has one, so that [`ModelData`] can borrow them. Derefs to the tables.
pub struct ViewData {
    tables: Arc<HeadTables>,
    /// `(index into the tables' heads, projection)`.
    projections: Vec<(usize, HeadProjection)>,
}

impl std::ops::Deref for ViewData {
    type Target = HeadTables;
    fn deref(&self) -> &HeadTables {
        &self.tables
    }
}

impl ViewData {
    /// Loads the heads of `dataset` that have a `method`/`dims` projection (all of them, or `only`).
    pub fn load(dataset: &Dataset, method: ProjectionMethod, dims: u8, only: Option<&[HeadId]>) -> Result<Self> {
        Self::with_tables(Arc::new(HeadTables::load(dataset, only)?), dataset, method, dims)
    }

    /// The `method`/`dims` projections of the heads in `tables`.
    pub fn with_tables(tables: Arc<HeadTables>, dataset: &Dataset, method: ProjectionMethod, dims: u8) -> Result<Self> {
        let mut projections = Vec::new();
        for (i, &head) in tables.heads.iter().enumerate() {
            if dataset.has_projection(head, method, dims) {
                projections.push((i, dataset.read_projection(head, method, dims)?));
            }
        }
        if projections.is_empty() {
            bail!(
                "{}: no head has a {method} {dims}D projection; run `attnviz project {} --methods {method} --dims {dims}` first",
                dataset.dir().display(),
                dataset.dir().display()
            );
        }
        Ok(ViewData { tables, projections })
    }

    /// The view-model input borrowing this data.
    pub fn model_data(&self) -> Result<ModelData<'_>> {
        let t = &*self.tables;
        let heads = self
            .projections
            .iter()
            .map(|(i, projection)| {
                let mut h = HeadData::new(t.heads[*i], projection);
                h.attention = t.attention[*i].as_deref();
                h.norms = t.norms[*i].as_ref().map(|(q, k)| RawNorms { queries: q, keys: k });
                h.diagnostics = t.diagnostics[*i].as_ref();
                h
            })
            .collect();
        Ok(ModelData::new(&t.tokens, t.model.num_layers, t.model.num_heads, heads)?)
    }
}

fn rgba(c: attn_viz_core::Rgba) -> Rgba {
    c.0
}

fn with_alpha(mut c: Rgba, alpha: f32) -> Rgba {
    c[3] = (alpha.clamp(0.0, 1.0) * 255.0).round() as u8;
    c
}

/// Maps a normalized point to pixels in a square box; 3D points get a fixed oblique view so that depth
/// stays readable in a still image.
fn to_px(p: [f32; 3], dims: u8, x0: f32, y0: f32, size: f32) -> (f32, f32) {
    let (x, y) = if dims == 3 {
        // Rotate 35 degrees about the vertical axis and tilt 20 degrees, then fit [-0.2, 1.2] into the box.
        let (sa, ca) = 35f32.to_radians().sin_cos();
        let (st, ct) = 20f32.to_radians().sin_cos();
        let (cx, cy, cz) = (p[0] - 0.5, p[1] - 0.5, p[2] - 0.5);
        let rx = ca * cx + sa * cz;
        let rz = -sa * cx + ca * cz;
        let ry = ct * cy - st * rz;
        (rx / 1.4 + 0.5, ry / 1.4 + 0.5)
    } else {
        (p[0], p[1])
    };
    // Views put y up; images put y down.
    (x0 + x * size, y0 + (1.0 - y) * size)
}

fn draw_legend(s: &mut dyn Surface, legend: &Legend, x: f32, y: f32) -> f32 {
    let mut cy = y;
    s.text(x, cy, 14.0, Anchor::Start, INK, &legend.title);
    cy += 20.0;
    for e in &legend.entries {
        s.circle(x + 6.0, cy - 4.0, 5.0, rgba(e.color));
        s.text(x + 16.0, cy, 12.0, Anchor::Start, INK, &e.label);
        cy += 18.0;
    }
    for g in &legend.gradients {
        let steps = 40;
        for i in 0..steps {
            let t = i as f32 / (steps - 1) as f32;
            let c = g.from.lerp(g.to, t);
            s.rect(x + i as f32 * 3.0, cy - 10.0, 3.0, 10.0, rgba(c));
        }
        s.text(x + 126.0, cy, 12.0, Anchor::Start, INK, &format!("{}: {:.3} .. {:.3}", g.label, g.min, g.max));
        cy += 18.0;
    }
    cy
}

/// Draws the Matrix View: layers as rows (early on top), heads as columns.
pub fn draw_matrix(view: &MatrixView, title: &str, path: &Path) -> Result<()> {
    let cell = 150.0;
    let gap = 8.0;
    let (left, top) = (48.0, 64.0);
    let legend_w = 300.0;
    let cols = view.heads_per_layer as f32;
    let rows = view.layers as f32;
    let width = (left + cols * (cell + gap) + legend_w) as u32;
    let height = (top + rows * (cell + gap) + 30.0).max(360.0) as u32;
    let mut c = Canvas::new(width, height, WHITE)?;
    c.text(left, 28.0, 20.0, Anchor::Start, INK, title);
    for h in 0..view.heads_per_layer {
        c.text(left + h as f32 * (cell + gap) + cell / 2.0, top - 8.0, 13.0, Anchor::Middle, FAINT, &format!("H{h}"));
    }
    for l in 0..view.layers {
        c.text(left - 8.0, top + l as f32 * (cell + gap) + cell / 2.0, 13.0, Anchor::End, FAINT, &format!("L{l}"));
    }
    let radius = |n: usize| if n > 4000 { 0.7 } else if n > 1000 { 1.0 } else { 1.6 };
    for cellv in &view.cells {
        let x0 = left + cellv.head.head as f32 * (cell + gap);
        let y0 = top + cellv.head.layer as f32 * (cell + gap);
        c.rect(x0, y0, cell, cell, [248, 248, 248, 255]);
        let r = radius(cellv.positions.len());
        let inner = cell - 8.0;
        let searching = view.search.is_some();
        for (p, col) in cellv.positions.iter().zip(&cellv.colors) {
            let (px, py) = to_px(*p, view.dims, x0 + 4.0, y0 + 4.0, inner);
            let col = if searching { with_alpha(rgba(*col), 0.25) } else { rgba(*col) };
            c.circle(px, py, r, col);
        }
        for &m in &cellv.matches {
            if let Some(p) = cellv.positions.get(m as usize) {
                let (px, py) = to_px(*p, view.dims, x0 + 4.0, y0 + 4.0, inner);
                c.circle(px, py, r + 1.6, HIGHLIGHT);
                c.circle(px, py, r + 0.6, rgba(cellv.colors[m as usize]));
            }
        }
        if searching {
            c.text(x0 + cell - 4.0, y0 + 14.0, 11.0, Anchor::End, INK, &format!("{} cl.", cellv.match_clusters));
        }
        if let Some(sig) = &cellv.info.signature {
            c.text(x0 + 4.0, y0 + cell - 5.0, 10.0, Anchor::Start, FAINT, sig.label.as_str());
        }
        let trust = match cellv.info.trust.level {
            attn_viz_core::TrustLevel::High => [60, 160, 60, 255],
            attn_viz_core::TrustLevel::Medium => [230, 160, 30, 255],
            attn_viz_core::TrustLevel::Low => [210, 50, 50, 255],
            _ => [190, 190, 190, 255],
        };
        c.circle(x0 + 8.0, y0 + 8.0, 3.5, trust);
    }
    let lx = left + cols * (cell + gap) + 16.0;
    let mut ly = draw_legend(&mut c, &view.legend, lx, top + 10.0);
    ly += 10.0;
    c.text(lx, ly, 12.0, Anchor::Start, FAINT, "dot at top left: trust (green high,");
    c.text(lx, ly + 16.0, 12.0, Anchor::Start, FAINT, "amber medium, red low, gray unknown)");
    if let Some(s) = &view.search {
        c.text(lx, ly + 40.0, 12.0, Anchor::Start, INK, &format!("search \"{}\": {} tokens", s.text, view.matched_tokens));
        c.text(lx, ly + 56.0, 12.0, Anchor::Start, FAINT, "top right of a cell: clusters of matches");
    }
    c.save_png(path)
}

/// Draws the Single View (PNG or SVG by the file extension).
pub fn draw_single(view: &SingleView, title: &str, path: &Path) -> Result<()> {
    let (w, h, plot) = (1100u32, 860u32, 800.0f32);
    let (x0, y0) = (30.0, 50.0);
    let draw = |s: &mut dyn Surface| {
        s.text(x0, 30.0, 18.0, Anchor::Start, INK, title);
        s.rect(x0, y0, plot, plot, [250, 250, 250, 255]);
        let highlight_seq = view.selected.is_some();
        let base_r = if view.points.len() > 4000 { 1.6 } else { 2.6 };
        for p in &view.points {
            let (px, py) = to_px(p.position, view.dims, x0, y0, plot);
            let mut col = rgba(p.color);
            if highlight_seq && !p.in_selected_sequence {
                col = with_alpha(col, 0.2);
            }
            if view.search.is_some() && !p.search_match {
                col = with_alpha(col, 0.2);
            }
            s.circle(px, py, base_r * p.size, col);
        }
        for p in view.points.iter().filter(|p| p.search_match || p.in_selected_sequence) {
            let (px, py) = to_px(p.position, view.dims, x0, y0, plot);
            s.circle(px, py, base_r * p.size + 1.0, HIGHLIGHT);
            s.circle(px, py, base_r * p.size, rgba(p.color));
        }
        for l in &view.lines {
            let (ax, ay) = to_px(l.from, view.dims, x0, y0, plot);
            let (bx, by) = to_px(l.to, view.dims, x0, y0, plot);
            s.line(ax, ay, bx, by, 2.5, with_alpha([30, 30, 200, 255], l.opacity));
        }
        for lab in &view.labels {
            // Label boxes are in normalized units with y up; draw the text at the box's lower left.
            let (lx, ly) = to_px([lab.rect[0], lab.rect[1], 0.0], 2, x0, y0, plot);
            s.text(lx, ly - 1.0, 11.0, Anchor::Start, INK, &lab.text);
        }
        let mut ly = draw_legend(s, &view.legend, x0 + plot + 20.0, y0 + 10.0);
        ly += 16.0;
        let info = &view.info;
        let lx = x0 + plot + 20.0;
        let mut line = |t: String| {
            s.text(lx, ly, 12.0, Anchor::Start, INK, &t);
            ly += 17.0;
        };
        line(format!("{} {}D, {} points", view.method, view.dims, view.points.len()));
        if let Some(t) = info.trust.trustworthiness {
            line(format!("trustworthiness@10: {t:.3}"));
        }
        if let Some(r) = info.trust.distance_correlation {
            line(format!("rho(distance, dot): {r:.3}"));
        }
        line(format!("trust: {:?}", info.trust.level));
        if let Some(sig) = &info.signature {
            line(format!("label: {}", sig.label.as_str()));
            line(format!("to first token: {:.2}", sig.first_token));
            line(format!("mean distance: {:.1}", sig.mean_distance));
            line(format!("entropy: {:.2}", sig.entropy));
        }
        if let Some(sel) = &view.selected {
            line(format!("selected: {:?} \"{}\"", sel.role, sel.text));
            line(format!("  sequence {} position {}", sel.seq_id, sel.position));
        }
        if let Some(sr) = &view.search {
            line(format!("search \"{}\": {} tokens, {} clusters", sr.text, view.matched_tokens, view.match_clusters));
        }
        line(format!("prev {}  next {}", view.nav.prev, view.nav.next));
    };
    save_any(path, w, h, draw)
}

fn save_any(path: &Path, w: u32, h: u32, draw: impl Fn(&mut dyn Surface)) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("svg") => {
            let mut d = SvgDoc::new(w, h, WHITE);
            draw(&mut d);
            d.save(path)
        }
        Some("png") => {
            let mut c = Canvas::new(w, h, WHITE)?;
            draw(&mut c);
            c.save_png(path)
        }
        _ => bail!("{}: the output must end in .png or .svg", path.display()),
    }
}

/// Draws the Sentence View: queries left, keys right, line opacity = attention.
pub fn draw_sentence(view: &SentenceView, title: &str, path: &Path) -> Result<()> {
    let row_h = 22.0;
    let n = view.tokens.len() as f32;
    let (w, h) = (640u32, (90.0 + n * row_h) as u32);
    let (qx, kx, top) = (220.0, 420.0, 70.0);
    let draw = |s: &mut dyn Surface| {
        s.text(20.0, 30.0, 16.0, Anchor::Start, INK, title);
        s.text(qx, 55.0, 12.0, Anchor::End, FAINT, "queries");
        s.text(kx, 55.0, 12.0, Anchor::Start, FAINT, "keys");
        let y = |pos: u32| top + pos as f32 * row_h + row_h / 2.0;
        for e in &view.edges {
            let color = if e.focused { [200, 60, 30, 255] } else { [40, 90, 200, 255] };
            s.line(qx + 6.0, y(e.query) - 4.0, kx - 6.0, y(e.key) - 4.0, 2.0, with_alpha(color, e.opacity));
        }
        for t in &view.tokens {
            let col = if t.hidden { FAINT } else if view.focus == Some(t.position) { [200, 60, 30, 255] } else { INK };
            s.text(qx, y(t.position), 13.0, Anchor::End, col, &t.text);
            s.text(kx, y(t.position), 13.0, Anchor::Start, col, &t.text);
        }
    };
    save_any(path, w, h, draw)
}

/// Draws the Image View over the input image.
pub fn draw_image(view: &ImageView, image: &image::RgbImage, title: &str, path: &Path) -> Result<()> {
    let side = 560.0;
    let (x0, y0) = (30.0, 60.0);
    let (w, h) = (660u32, 660u32);
    let mut c = Canvas::new(w, h, WHITE)?;
    c.text(x0, 32.0, 16.0, Anchor::Start, INK, title);
    c.image(image, x0, y0, side, side);
    let (cw, ch) = (side / view.grid_cols as f32, side / view.grid_rows as f32);
    let center = |p: PatchPos| (x0 + (p.col as f32 + 0.5) * cw, y0 + (p.row as f32 + 0.5) * ch);
    let cls_pos = (x0 + side + 30.0, y0 + 20.0);
    let node = |n: &ImageNode| match n {
        ImageNode::Patch(p) => center(*p),
        ImageNode::Cls => cls_pos,
    };
    // Heatmap: darken the patches the selected patch does not attend to.
    for cell in &view.heatmap {
        let (px, py) = (x0 + cell.patch.col as f32 * cw, y0 + cell.patch.row as f32 * ch);
        c.rect(px, py, cw, ch, with_alpha([0, 0, 0, 255], 0.75 * (1.0 - cell.alpha)));
    }
    c.rect(cls_pos.0 - 10.0, cls_pos.1 - 10.0, 20.0, 20.0, [90, 90, 90, 255]);
    c.text(cls_pos.0, cls_pos.1 + 26.0, 11.0, Anchor::Middle, INK, "CLS");
    for e in &view.strong {
        let (a, b) = (node(&e.from), node(&e.to));
        c.line(a.0, a.1, b.0, b.1, e.width, with_alpha([255, 200, 0, 255], e.opacity));
    }
    for a in &view.arrows {
        let (sx, sy) = center(a.from);
        let (tx, ty) = node(&a.to);
        c.line(sx, sy, tx, ty, 1.5, with_alpha([0, 200, 255, 255], 0.4 + 0.6 * a.weight));
        c.circle(tx, ty, 2.5, [0, 200, 255, 255]);
    }
    if let Some(ImageNode::Patch(p)) = &view.selected {
        c.rect_outline(x0 + p.col as f32 * cw, y0 + p.row as f32 * ch, cw, ch, 3.0, [255, 40, 40, 255]);
    }
    c.save_png(path)
}

/// Draws the head-similarity layout: each head a dot at its MDS position, colored by layer.
pub fn draw_similarity(sim: &HeadSimilarity, layers: u16, title: &str, path: &Path) -> Result<()> {
    let (w, h, plot) = (900u32, 880u32, 760.0f32);
    let (x0, y0) = (40.0, 80.0);
    let mut c = Canvas::new(w, h, WHITE)?;
    c.text(x0, 32.0, 18.0, Anchor::Start, INK, title);
    let (mut minx, mut maxx, mut miny, mut maxy) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in &sim.layout {
        minx = minx.min(p[0]);
        maxx = maxx.max(p[0]);
        miny = miny.min(p[1]);
        maxy = maxy.max(p[1]);
    }
    let span = (maxx - minx).max(maxy - miny).max(1e-9);
    for (head, p) in sim.heads.iter().zip(&sim.layout) {
        let t = if layers > 1 { head.layer as f32 / (layers - 1) as f32 } else { 0.0 };
        let col = attn_viz_core::Rgba::rgb(250, 200, 80).lerp(attn_viz_core::Rgba::rgb(40, 40, 150), t);
        let px = x0 + (p[0] - minx) / span * plot;
        let py = y0 + plot - (p[1] - miny) / span * plot;
        c.circle(px, py, 6.0, rgba(col));
        c.text(px + 8.0, py + 4.0, 11.0, Anchor::Start, INK, &head.to_string());
    }
    c.text(x0, 52.0, 12.0, Anchor::Start, FAINT, "color: layer (light = early); distance ~ JS divergence of attention");
    c.save_png(path)
}

/// Default file name of a figure inside a dataset.
pub fn figure_path(dataset: &Dataset, name: &str) -> PathBuf {
    dataset.dir().join("figures").join(name)
}

/// Renders the Matrix View PNG of a dataset for one method and dims.
pub fn render_matrix(dataset: &Dataset, state: &ViewState, method: ProjectionMethod, out: &Path) -> Result<()> {
    let data = ViewData::load(dataset, method, state.dims, None)?;
    let model = data.model_data()?;
    let view = attn_viz_core::matrix_view(&model, state).context("computing the Matrix View")?;
    let title = format!("{}: {} {}D, {} tokens per head", data.model.id, method, state.dims, data.tokens.len());
    draw_matrix(&view, &title, out)
}
