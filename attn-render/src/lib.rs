#![doc = include_str!("../README.md")]

mod canvas;
mod error;
mod figure;

use std::path::Path;

use attn_store::Dataset;
use attn_types::{PatchPos, ProjectionMethod};
use attn_viz_core::dataset::ViewData;
use attn_viz_core::{
    HeadSimilarity, ImageNode, ImageView, Legend, MatrixView, SentenceView, SingleView, ViewState,
};

use canvas::{Anchor, Rgba, Surface};
pub use error::RenderError;
pub use figure::{Figure, Format};
/// The `image` crate, whose [`image::RgbImage`] [`image_figure`] and [`draw_image`] take.
pub use image;

const WHITE: Rgba = [255, 255, 255, 255];
const INK: Rgba = [40, 40, 40, 255];
const FAINT: Rgba = [150, 150, 150, 255];
const HIGHLIGHT: Rgba = [20, 20, 20, 255];

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

fn draw_legend(s: &mut Figure, legend: &Legend, x: f32, y: f32) -> f32 {
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
        s.text(
            x + 126.0,
            cy,
            12.0,
            Anchor::Start,
            INK,
            &format!("{}: {:.3} .. {:.3}", g.label, g.min, g.max),
        );
        cy += 18.0;
    }
    cy
}

/// The Matrix View: layers as rows (early on top), heads as columns; a legend on the right.
pub fn matrix_figure(view: &MatrixView, title: &str) -> Figure {
    let cell = 150.0;
    let gap = 8.0;
    let (left, top) = (48.0, 64.0);
    let legend_w = 300.0;
    let cols = view.heads_per_layer as f32;
    let rows = view.layers as f32;
    let width = (left + cols * (cell + gap) + legend_w) as u32;
    let height = (top + rows * (cell + gap) + 30.0).max(360.0) as u32;
    let mut c = Figure::new(width, height, WHITE);
    c.text(left, 28.0, 20.0, Anchor::Start, INK, title);
    for h in 0..view.heads_per_layer {
        c.text(
            left + h as f32 * (cell + gap) + cell / 2.0,
            top - 8.0,
            13.0,
            Anchor::Middle,
            FAINT,
            &format!("H{h}"),
        );
    }
    for l in 0..view.layers {
        c.text(
            left - 8.0,
            top + l as f32 * (cell + gap) + cell / 2.0,
            13.0,
            Anchor::End,
            FAINT,
            &format!("L{l}"),
        );
    }
    let radius = |n: usize| {
        if n > 4000 {
            0.7
        } else if n > 1000 {
            1.0
        } else {
            1.6
        }
    };
    for cellv in &view.cells {
        let x0 = left + cellv.head.head as f32 * (cell + gap);
        let y0 = top + cellv.head.layer as f32 * (cell + gap);
        c.rect(x0, y0, cell, cell, [248, 248, 248, 255]);
        let r = radius(cellv.positions.len());
        let inner = cell - 8.0;
        let searching = view.search.is_some();
        for (p, col) in cellv.positions.iter().zip(&cellv.colors) {
            let (px, py) = to_px(*p, view.dims, x0 + 4.0, y0 + 4.0, inner);
            let col = if searching {
                with_alpha(rgba(*col), 0.25)
            } else {
                rgba(*col)
            };
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
            c.text(
                x0 + cell - 4.0,
                y0 + 14.0,
                11.0,
                Anchor::End,
                INK,
                &format!("{} cl.", cellv.match_clusters),
            );
        }
        if let Some(sig) = &cellv.info.signature {
            c.text(
                x0 + 4.0,
                y0 + cell - 5.0,
                10.0,
                Anchor::Start,
                FAINT,
                sig.label.as_str(),
            );
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
    c.text(
        lx,
        ly,
        12.0,
        Anchor::Start,
        FAINT,
        "dot at top left: trust (green high,",
    );
    c.text(
        lx,
        ly + 16.0,
        12.0,
        Anchor::Start,
        FAINT,
        "amber medium, red low, gray unknown)",
    );
    if let Some(s) = &view.search {
        c.text(
            lx,
            ly + 40.0,
            12.0,
            Anchor::Start,
            INK,
            &format!("search \"{}\": {} tokens", s.text, view.matched_tokens),
        );
        c.text(
            lx,
            ly + 56.0,
            12.0,
            Anchor::Start,
            FAINT,
            "top right of a cell: clusters of matches",
        );
    }
    c
}

/// Draws the Matrix View ([`matrix_figure`]) to `path`, PNG or SVG by its extension.
pub fn draw_matrix(view: &MatrixView, title: &str, path: &Path) -> Result<(), RenderError> {
    matrix_figure(view, title).save(path)
}

/// The Single View of one head: its points (search matches and the selected sequence highlighted),
/// attention lines and labels, with a legend and the head's trust and signature on the right.
pub fn single_figure(view: &SingleView, title: &str) -> Figure {
    let (w, h, plot) = (1100u32, 860u32, 800.0f32);
    let (x0, y0) = (30.0, 50.0);
    let mut figure = Figure::new(w, h, WHITE);
    {
        let s = &mut figure;
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
        for p in view
            .points
            .iter()
            .filter(|p| p.search_match || p.in_selected_sequence)
        {
            let (px, py) = to_px(p.position, view.dims, x0, y0, plot);
            s.circle(px, py, base_r * p.size + 1.0, HIGHLIGHT);
            s.circle(px, py, base_r * p.size, rgba(p.color));
        }
        for l in &view.lines {
            let (ax, ay) = to_px(l.from, view.dims, x0, y0, plot);
            let (bx, by) = to_px(l.to, view.dims, x0, y0, plot);
            s.line(
                ax,
                ay,
                bx,
                by,
                2.5,
                with_alpha([30, 30, 200, 255], l.opacity),
            );
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
        line(format!(
            "{} {}D, {} points",
            view.method,
            view.dims,
            view.points.len()
        ));
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
            line(format!(
                "  sequence {} position {}",
                sel.seq_id, sel.position
            ));
        }
        if let Some(sr) = &view.search {
            line(format!(
                "search \"{}\": {} tokens, {} clusters",
                sr.text, view.matched_tokens, view.match_clusters
            ));
        }
        line(format!("prev {}  next {}", view.nav.prev, view.nav.next));
    }
    figure
}

/// Draws the Single View ([`single_figure`]) to `path`, PNG or SVG by its extension.
pub fn draw_single(view: &SingleView, title: &str, path: &Path) -> Result<(), RenderError> {
    single_figure(view, title).save(path)
}

/// The Sentence View: queries left, keys right, line opacity = attention.
pub fn sentence_figure(view: &SentenceView, title: &str) -> Figure {
    let row_h = 22.0;
    let n = view.tokens.len() as f32;
    let (w, h) = (640u32, (90.0 + n * row_h) as u32);
    let (qx, kx, top) = (220.0, 420.0, 70.0);
    let mut figure = Figure::new(w, h, WHITE);
    {
        let s = &mut figure;
        s.text(20.0, 30.0, 16.0, Anchor::Start, INK, title);
        s.text(qx, 55.0, 12.0, Anchor::End, FAINT, "queries");
        s.text(kx, 55.0, 12.0, Anchor::Start, FAINT, "keys");
        let y = |pos: u32| top + pos as f32 * row_h + row_h / 2.0;
        for e in &view.edges {
            let color = if e.focused {
                [200, 60, 30, 255]
            } else {
                [40, 90, 200, 255]
            };
            s.line(
                qx + 6.0,
                y(e.query) - 4.0,
                kx - 6.0,
                y(e.key) - 4.0,
                2.0,
                with_alpha(color, e.opacity),
            );
        }
        for t in &view.tokens {
            let col = if t.hidden {
                FAINT
            } else if view.focus == Some(t.position) {
                [200, 60, 30, 255]
            } else {
                INK
            };
            s.text(qx, y(t.position), 13.0, Anchor::End, col, &t.text);
            s.text(kx, y(t.position), 13.0, Anchor::Start, col, &t.text);
        }
    }
    figure
}

/// Draws the Sentence View ([`sentence_figure`]) to `path`, PNG or SVG by its extension.
pub fn draw_sentence(view: &SentenceView, title: &str, path: &Path) -> Result<(), RenderError> {
    sentence_figure(view, title).save(path)
}

/// The Image View over the input image: the selected patch's attention as a heatmap, each patch's
/// strongest target as an arrow, strong connections as lines, CLS as a square beside the image.
pub fn image_figure(view: &ImageView, image: &image::RgbImage, title: &str) -> Figure {
    let side = 560.0;
    let (x0, y0) = (30.0, 60.0);
    let (w, h) = (660u32, 660u32);
    let mut c = Figure::new(w, h, WHITE);
    c.text(x0, 32.0, 16.0, Anchor::Start, INK, title);
    c.image(image, x0, y0, side, side);
    let (cw, ch) = (side / view.grid_cols as f32, side / view.grid_rows as f32);
    let center = |p: PatchPos| {
        (
            x0 + (p.col as f32 + 0.5) * cw,
            y0 + (p.row as f32 + 0.5) * ch,
        )
    };
    let cls_pos = (x0 + side + 30.0, y0 + 20.0);
    let node = |n: &ImageNode| match n {
        ImageNode::Patch(p) => center(*p),
        ImageNode::Cls => cls_pos,
    };
    // Heatmap: darken the patches the selected patch does not attend to.
    for cell in &view.heatmap {
        let (px, py) = (
            x0 + cell.patch.col as f32 * cw,
            y0 + cell.patch.row as f32 * ch,
        );
        c.rect(
            px,
            py,
            cw,
            ch,
            with_alpha([0, 0, 0, 255], 0.75 * (1.0 - cell.alpha)),
        );
    }
    c.rect(
        cls_pos.0 - 10.0,
        cls_pos.1 - 10.0,
        20.0,
        20.0,
        [90, 90, 90, 255],
    );
    c.text(
        cls_pos.0,
        cls_pos.1 + 26.0,
        11.0,
        Anchor::Middle,
        INK,
        "CLS",
    );
    for e in &view.strong {
        let (a, b) = (node(&e.from), node(&e.to));
        c.line(
            a.0,
            a.1,
            b.0,
            b.1,
            e.width,
            with_alpha([255, 200, 0, 255], e.opacity),
        );
    }
    for a in &view.arrows {
        let (sx, sy) = center(a.from);
        let (tx, ty) = node(&a.to);
        c.line(
            sx,
            sy,
            tx,
            ty,
            1.5,
            with_alpha([0, 200, 255, 255], 0.4 + 0.6 * a.weight),
        );
        c.circle(tx, ty, 2.5, [0, 200, 255, 255]);
    }
    if let Some(ImageNode::Patch(p)) = &view.selected {
        c.rect_outline(
            x0 + p.col as f32 * cw,
            y0 + p.row as f32 * ch,
            cw,
            ch,
            3.0,
            [255, 40, 40, 255],
        );
    }
    c
}

/// Draws the Image View ([`image_figure`]) to `path`, PNG or SVG by its extension.
pub fn draw_image(
    view: &ImageView,
    image: &image::RgbImage,
    title: &str,
    path: &Path,
) -> Result<(), RenderError> {
    image_figure(view, image, title).save(path)
}

/// The head-similarity layout: each head a dot at its MDS position, colored by layer (of `layers`).
pub fn similarity_figure(sim: &HeadSimilarity, layers: u16, title: &str) -> Figure {
    let (w, h, plot) = (900u32, 880u32, 760.0f32);
    let (x0, y0) = (40.0, 80.0);
    let mut c = Figure::new(w, h, WHITE);
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
        let t = if layers > 1 {
            head.layer as f32 / (layers - 1) as f32
        } else {
            0.0
        };
        let col =
            attn_viz_core::Rgba::rgb(250, 200, 80).lerp(attn_viz_core::Rgba::rgb(40, 40, 150), t);
        let px = x0 + (p[0] - minx) / span * plot;
        let py = y0 + plot - (p[1] - miny) / span * plot;
        c.circle(px, py, 6.0, rgba(col));
        c.text(
            px + 8.0,
            py + 4.0,
            11.0,
            Anchor::Start,
            INK,
            &head.to_string(),
        );
    }
    c.text(
        x0,
        52.0,
        12.0,
        Anchor::Start,
        FAINT,
        "color: layer (light = early); distance ~ JS divergence of attention",
    );
    c
}

/// Draws the head-similarity layout ([`similarity_figure`]) to `path`, PNG or SVG by its extension.
pub fn draw_similarity(
    sim: &HeadSimilarity,
    layers: u16,
    title: &str,
    path: &Path,
) -> Result<(), RenderError> {
    similarity_figure(sim, layers, title).save(path)
}

/// The Matrix View of `dataset`'s `method` projections (of `state.dims` dimensions), drawn with
/// `state` (color encoding, search) and titled with the model, method and token count. Reads every
/// head of the dataset.
pub fn dataset_matrix_figure(
    dataset: &Dataset,
    state: &ViewState,
    method: ProjectionMethod,
) -> Result<Figure, RenderError> {
    let data = ViewData::load(dataset, method, state.dims, None)?;
    let view_error = |source| RenderError::View {
        dataset: dataset.dir().to_path_buf(),
        view: "Matrix View",
        source,
    };
    let model = data.model_data().map_err(view_error)?;
    let view = attn_viz_core::matrix_view(&model, state).map_err(view_error)?;
    let title = format!(
        "{}: {} {}D, {} tokens per head",
        data.model().id,
        method,
        state.dims,
        data.tokens().len()
    );
    Ok(matrix_figure(&view, &title))
}

/// Renders the Matrix View of a dataset ([`dataset_matrix_figure`]) to `out`, PNG or SVG by its
/// extension (the CLI's default is [`Dataset::figure_path`]`("matrix_{method}_{dims}d.png")`).
pub fn render_matrix(
    dataset: &Dataset,
    state: &ViewState,
    method: ProjectionMethod,
    out: &Path,
) -> Result<(), RenderError> {
    // Checked first so that a bad name fails before the dataset is read.
    Format::from_path(out)?;
    dataset_matrix_figure(dataset, state, method)?.save(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use attn_store::sample::{SampleSpec, write_sample_dataset};
    use attn_types::{HeadId, Role};
    use attn_viz_core::dataset::LoadError;
    use attn_viz_core::{
        HeatCell, ImageEdge, ModelData, PatchArrow, Search, Selection, SentenceOptions,
    };

    use super::*;

    /// The small synthetic dataset of attn-store (2 x 2 heads, three sequences of 5, 3 and 4 tokens,
    /// pseudo-random vectors, attention and projections), loaded as the views' input: written
    /// through attn-store so that these tests do not depend on the fields of attn-types' structs.
    struct Synthetic {
        _dir: tempfile::TempDir,
        data: ViewData,
    }

    impl Synthetic {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let dataset = write_sample_dataset(dir.path(), &SampleSpec::default()).unwrap();
            let data = ViewData::load(&dataset, ProjectionMethod::Tsne, 2, None).unwrap();
            assert_eq!((data.heads().len(), data.tokens().len()), (4, 12));
            Self { _dir: dir, data }
        }

        fn model(&self) -> ModelData<'_> {
            self.data.model_data().unwrap()
        }
    }

    fn state() -> ViewState {
        ViewState {
            method: Some(ProjectionMethod::Tsne),
            ..ViewState::default()
        }
    }

    /// Pixels clearly colored (not white, gray or black): drawn points, lines or image, never text.
    fn colored_pixels(img: &image::RgbaImage) -> usize {
        img.pixels()
            .filter(|p| {
                let (hi, lo) = (p[0].max(p[1]).max(p[2]), p[0].min(p[1]).min(p[2]));
                hi - lo > 40
            })
            .count()
    }

    /// Writes the figure through `draw` as PNG and SVG into a temporary folder and checks both: the
    /// PNG decodes to `size` with at least `min_colored` colored pixels and equals the in-memory
    /// encoding; the SVG has that size and the title.
    fn check_draw(
        figure: &Figure,
        size: (u32, u32),
        min_colored: usize,
        title: &str,
        draw: impl Fn(&Path) -> Result<(), RenderError>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let png_path = dir.path().join("figures").join("fig.png");
        draw(&png_path).unwrap();
        let bytes = std::fs::read(&png_path).unwrap();
        assert_eq!(
            bytes,
            figure.to_png().unwrap(),
            "the file is the in-memory PNG"
        );
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .unwrap()
            .to_rgba8();
        assert_eq!(img.dimensions(), size);
        assert_eq!((figure.width(), figure.height()), size);
        let colored = colored_pixels(&img);
        assert!(
            colored >= min_colored,
            "only {colored} colored pixels, expected at least {min_colored}"
        );

        let svg_path = dir.path().join("fig.SVG");
        draw(&svg_path).unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert_eq!(svg, figure.to_svg().unwrap());
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains(&format!("width=\"{}\" height=\"{}\"", size.0, size.1)));
        assert!(
            svg.contains(&format!(">{title}</text>")),
            "the SVG lacks the title {title:?}"
        );
        assert!(svg.contains("<circle") || svg.contains("<line") || svg.contains("<image"));
        assert_eq!(figure.encode(Format::Svg).unwrap(), svg.into_bytes());
    }

    #[test]
    fn draw_matrix_writes_png_and_svg() {
        let data = Synthetic::new();
        let view = attn_viz_core::matrix_view(&data.model(), &state()).unwrap();
        let title = "matrix title";
        // 2 x 2 cells of 150 + 8 px, 48 px of row labels, a 300 px legend; at least the 360 px minimum.
        let size = (48 + 2 * 158 + 300, 64 + 2 * 158 + 30);
        // 4 cells x 24 points of ~8 px each (the legend and trust dots alone give ~160).
        check_draw(&matrix_figure(&view, title), size, 600, title, |p| {
            draw_matrix(&view, title, p)
        });
    }

    #[test]
    fn draw_single_writes_png_and_svg() {
        let data = Synthetic::new();
        let plain = attn_viz_core::single_view(
            &data.model(),
            &ViewState {
                head: HeadId::new(1, 1),
                ..state()
            },
        )
        .unwrap();
        let title = "plain single title";
        // 24 points of radius 2.6 (~20 px each; the legend alone gives ~80).
        check_draw(
            &single_figure(&plain, title),
            (1100, 860),
            400,
            title,
            |p| draw_single(&plain, title, p),
        );
        let state = ViewState {
            head: HeadId::new(1, 1),
            selected: Some(Selection {
                token: 1,
                role: Role::Query,
            }),
            search: Some(Search::substring("w0")),
            show_labels: true,
            ..state()
        };
        let view = attn_viz_core::single_view(&data.model(), &state).unwrap();
        assert!(
            !view.lines.is_empty(),
            "the selection draws attention lines"
        );
        let title = "single title";
        check_draw(&single_figure(&view, title), (1100, 860), 400, title, |p| {
            draw_single(&view, title, p)
        });
    }

    #[test]
    fn draw_sentence_writes_png_and_svg() {
        let data = Synthetic::new();
        let view = attn_viz_core::sentence_view(
            &data.model(),
            HeadId::new(0, 1),
            0,
            &SentenceOptions::default(),
        )
        .unwrap();
        let title = "sentence title";
        // Sequence 0 has 5 tokens: 90 px plus 22 per row.
        check_draw(
            &sentence_figure(&view, title),
            (640, 90 + 5 * 22),
            1000,
            title,
            |p| draw_sentence(&view, title, p),
        );
    }

    #[test]
    fn draw_image_writes_png_and_svg() {
        let pp = |row, col| PatchPos { row, col };
        let view = ImageView {
            head: HeadId::new(0, 0),
            seq_id: 0,
            grid_rows: 2,
            grid_cols: 2,
            selected: Some(ImageNode::Patch(pp(0, 0))),
            heatmap: (0..4u16)
                .map(|i| HeatCell {
                    patch: pp(i / 2, i % 2),
                    token: u32::from(i) + 1,
                    weight: 0.25,
                    alpha: f32::from(i) / 3.0,
                })
                .collect(),
            cls: None,
            arrows: vec![PatchArrow {
                from: pp(0, 1),
                to: ImageNode::Cls,
                weight: 0.8,
            }],
            strong: vec![ImageEdge {
                from: ImageNode::Patch(pp(1, 0)),
                to: ImageNode::Patch(pp(1, 1)),
                weight: 0.5,
                opacity: 0.5,
                width: 3.0,
            }],
        };
        let image = image::RgbImage::from_fn(4, 4, |x, y| {
            image::Rgb([(x * 60) as u8, 200, (y * 60) as u8])
        });
        let title = "image title";
        let figure = image_figure(&view, &image, title);
        // The 560 x 560 image is green; the most darkened quarter still keeps a quarter of its light.
        check_draw(&figure, (660, 660), 560 * 560 / 2, title, |p| {
            draw_image(&view, &image, title, p)
        });
        assert!(
            figure
                .to_svg()
                .unwrap()
                .contains("href=\"data:image/png;base64,iVBORw0KGgo")
        );
    }

    #[test]
    fn draw_similarity_writes_png_and_svg() {
        let data = Synthetic::new();
        let sim = attn_viz_core::head_similarity(&data.model()).unwrap();
        assert_eq!(sim.heads.len(), 4);
        let title = "similarity title";
        // Four dots of radius 6 (about 113 px each, less where they overlap).
        check_draw(
            &similarity_figure(&sim, 2, title),
            (900, 880),
            250,
            title,
            |p| draw_similarity(&sim, 2, title, p),
        );
    }

    #[test]
    fn render_matrix_of_sample_dataset_writes_decodable_png() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = write_sample_dataset(dir.path(), &SampleSpec::default()).unwrap();
        for (method, dims) in [(ProjectionMethod::Tsne, 2), (ProjectionMethod::Pca, 3)] {
            let state = ViewState {
                method: Some(method),
                dims,
                ..ViewState::default()
            };
            let out = dataset.figure_path(&format!("matrix_{method}_{dims}d.png"));
            render_matrix(&dataset, &state, method, &out).unwrap();
            let img = image::open(&out).unwrap().to_rgba8();
            assert_eq!(img.dimensions(), (48 + 2 * 158 + 300, 64 + 2 * 158 + 30));
            // 4 cells x 24 points (the legend and trust dots alone give ~160).
            assert!(
                colored_pixels(&img) > 700,
                "{method} {dims}D: too few points drawn"
            );
            let title = format!("sample: {method} {dims}D, 12 tokens per head");
            let figure = dataset_matrix_figure(&dataset, &state, method).unwrap();
            assert!(
                figure
                    .to_svg()
                    .unwrap()
                    .contains(&format!(">{title}</text>"))
            );
            assert_eq!(std::fs::read(&out).unwrap(), figure.to_png().unwrap());
        }
    }

    #[test]
    fn render_matrix_without_the_projection_names_the_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = write_sample_dataset(dir.path(), &SampleSpec::default()).unwrap();
        let state = ViewState {
            method: Some(ProjectionMethod::Umap),
            ..ViewState::default()
        };
        let out = dir.path().join("umap.png");
        let err = render_matrix(&dataset, &state, ProjectionMethod::Umap, &out).unwrap_err();
        assert!(
            matches!(err, RenderError::Load(LoadError::NoProjection { .. })),
            "{err:?}"
        );
        assert!(err.to_string().starts_with(&format!(
            "{}: no head has a umap 2D projection",
            dir.path().display()
        )));
        assert!(!out.exists());
    }

    #[test]
    fn unsupported_extension_names_the_path_and_writes_nothing() {
        let data = Synthetic::new();
        let view = attn_viz_core::single_view(&data.model(), &state()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for name in ["fig.jpg", "fig", "fig.png.tmp"] {
            let path = dir.path().join(name);
            let err = draw_single(&view, "t", &path).unwrap_err();
            assert!(
                matches!(&err, RenderError::UnsupportedExtension { path: p } if *p == path),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("{}: the output must end in .png or .svg", path.display())
            );
        }
        let dataset = write_sample_dataset(&dir.path().join("ds"), &SampleSpec::default()).unwrap();
        let err = render_matrix(
            &dataset,
            &state(),
            ProjectionMethod::Tsne,
            &dir.path().join("m.gif"),
        )
        .unwrap_err();
        assert!(
            matches!(err, RenderError::UnsupportedExtension { .. }),
            "{err:?}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ds"], "nothing but the dataset was written");
    }

    fn listing(dir: &Path) -> Vec<PathBuf> {
        let mut all = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                all.extend(listing(&p));
            }
            all.push(p);
        }
        all.sort();
        all
    }

    #[test]
    fn failed_write_leaves_no_file_and_no_temp_file() {
        let data = Synthetic::new();
        let view = attn_viz_core::matrix_view(&data.model(), &state()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The target is an existing folder: the temporary file is written, the rename fails.
        let taken = dir.path().join("fig.png");
        std::fs::create_dir(&taken).unwrap();
        let err = draw_matrix(&view, "t", &taken).unwrap_err();
        assert!(matches!(err, RenderError::Store(_)), "{err:?}");
        assert!(
            err.to_string().contains(&taken.display().to_string()),
            "{err}"
        );
        assert_eq!(listing(dir.path()), std::slice::from_ref(&taken));
        // The folder cannot be created: a file is in the way.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let under_file = file.join("fig.svg");
        let err = draw_matrix(&view, "t", &under_file).unwrap_err();
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
        assert_eq!(listing(dir.path()), [taken, file.clone()]);
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn invalid_canvas_size_names_the_file() {
        let figure = Figure::new(0, 10, WHITE);
        let err = figure.to_png().unwrap_err();
        assert_eq!(
            err.to_string(),
            "in-memory figure: cannot allocate a 0x10 image"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.png");
        let err = figure.save(&path).unwrap_err();
        assert!(
            matches!(&err, RenderError::CanvasSize { path: Some(p), width: 0, height: 10 } if *p == path),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("{}: cannot allocate a 0x10 image", path.display())
        );
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/b.PNG")).unwrap(),
            Format::Png
        );
        assert_eq!(Format::from_path(Path::new("b.svg")).unwrap(), Format::Svg);
        assert!(Format::from_path(Path::new("png")).is_err());
        assert_eq!(
            (Format::Png.extension(), Format::Png.media_type()),
            ("png", "image/png")
        );
        assert_eq!(
            (Format::Svg.extension(), Format::Svg.media_type()),
            ("svg", "image/svg+xml")
        );
        assert_eq!(Format::Svg.to_string(), "SVG");
    }
}
