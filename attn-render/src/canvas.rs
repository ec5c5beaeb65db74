//! The drawing back ends (private): a raster canvas over tiny-skia with text from an embedded font,
//! and a matching SVG writer.
//!
//! Figures record their drawing through the [`Surface`] trait (see [`crate::Figure`]) and replay it on
//! a [`Canvas`] (PNG) or an [`SvgDoc`] (SVG), so that one drawing routine yields both formats.

use std::fmt::Write as _;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use base64::Engine as _;
use tiny_skia::{FillRule, LineCap, Paint, PathBuilder, Pixmap, Rect, Stroke, Transform};

/// DejaVu Sans (Bitstream Vera license, see `assets/DejaVuSans-LICENSE.txt`).
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// An RGBA colour, 8 bits per channel, not premultiplied.
pub(crate) type Rgba = [u8; 4];

/// Horizontal anchor of a text label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// `x` is the left edge.
    Start,
    /// `x` is the centre.
    Middle,
    /// `x` is the right edge.
    End,
}

/// Drawing operations shared by the PNG and SVG back ends. Coordinates are in pixels, y down.
pub(crate) trait Surface {
    /// Filled circle.
    fn circle(&mut self, x: f32, y: f32, r: f32, fill: Rgba);
    /// Straight line.
    fn line(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, width: f32, color: Rgba);
    /// Filled rectangle.
    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, fill: Rgba);
    /// Rectangle outline.
    fn rect_outline(&mut self, x: f32, y: f32, w: f32, h: f32, width: f32, color: Rgba);
    /// Text with its baseline at `y`.
    fn text(&mut self, x: f32, y: f32, size: f32, anchor: Anchor, color: Rgba, text: &str);
    /// An RGB image scaled into the rectangle `(x, y, w, h)` (nearest neighbour).
    fn image(&mut self, img: &image::RgbImage, x: f32, y: f32, w: f32, h: f32);
}

/// Width in pixels of `text` at `size` in the embedded font.
pub(crate) fn text_width(text: &str, size: f32) -> f32 {
    let font = font();
    let scaled = font.as_scaled(PxScale::from(size));
    let mut width = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            width += scaled.kern(p, id);
        }
        width += scaled.h_advance(id);
        prev = Some(id);
    }
    width
}

fn font() -> FontRef<'static> {
    // The font is compiled in; failing to parse it is a build defect caught by every render test.
    FontRef::try_from_slice(FONT_BYTES).unwrap_or_else(|_| unreachable!("embedded font is valid"))
}

fn anchor_offset(anchor: Anchor, width: f32) -> f32 {
    match anchor {
        Anchor::Start => 0.0,
        Anchor::Middle => -width / 2.0,
        Anchor::End => -width,
    }
}

/// Raster canvas (PNG output).
pub(crate) struct Canvas {
    pixmap: Pixmap,
}

impl Canvas {
    /// A `width x height` canvas filled with `background`; `None` when tiny-skia cannot hold that
    /// size (a zero side, or a row too long).
    pub(crate) fn new(width: u32, height: u32, background: Rgba) -> Option<Self> {
        let mut pixmap = Pixmap::new(width, height)?;
        pixmap.fill(color(background));
        Some(Self { pixmap })
    }

    /// Encodes the canvas as PNG.
    pub(crate) fn encode_png(&self) -> Result<Vec<u8>, String> {
        self.pixmap.encode_png().map_err(|e| e.to_string())
    }
}

fn color(c: Rgba) -> tiny_skia::Color {
    tiny_skia::Color::from_rgba8(c[0], c[1], c[2], c[3])
}

fn paint(c: Rgba) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color(color(c));
    p.anti_alias = true;
    p
}

impl Surface for Canvas {
    fn image(&mut self, img: &image::RgbImage, x: f32, y: f32, w: f32, h: f32) {
        let (iw, ih) = img.dimensions();
        if iw == 0 || ih == 0 {
            return;
        }
        let (cw, ch) = (self.pixmap.width() as i64, self.pixmap.height() as i64);
        let x0 = x.round() as i64;
        let y0 = y.round() as i64;
        let (w, h) = (w.round().max(1.0) as i64, h.round().max(1.0) as i64);
        let stride = self.pixmap.width() as usize;
        let pixels = self.pixmap.pixels_mut();
        for py in y0.max(0)..(y0 + h).min(ch) {
            let sy = (((py - y0) as f32 + 0.5) / h as f32 * ih as f32) as u32;
            for px in x0.max(0)..(x0 + w).min(cw) {
                let sx = (((px - x0) as f32 + 0.5) / w as f32 * iw as f32) as u32;
                let p = img.get_pixel(sx.min(iw - 1), sy.min(ih - 1));
                pixels[py as usize * stride + px as usize] =
                    tiny_skia::ColorU8::from_rgba(p[0], p[1], p[2], 255).premultiply();
            }
        }
    }

    fn circle(&mut self, x: f32, y: f32, r: f32, fill: Rgba) {
        if let Some(path) = PathBuilder::from_circle(x, y, r.max(0.3)) {
            self.pixmap.fill_path(
                &path,
                &paint(fill),
                FillRule::Winding,
                Transform::identity(),
                None,
            );
        }
    }

    fn line(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, width: f32, c: Rgba) {
        let mut pb = PathBuilder::new();
        pb.move_to(x0, y0);
        pb.line_to(x1, y1);
        if let Some(path) = pb.finish() {
            let stroke = Stroke {
                width,
                line_cap: LineCap::Round,
                ..Stroke::default()
            };
            self.pixmap
                .stroke_path(&path, &paint(c), &stroke, Transform::identity(), None);
        }
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, fill: Rgba) {
        if let Some(r) = Rect::from_xywh(x, y, w, h) {
            self.pixmap
                .fill_rect(r, &paint(fill), Transform::identity(), None);
        }
    }

    fn rect_outline(&mut self, x: f32, y: f32, w: f32, h: f32, width: f32, c: Rgba) {
        if let Some(r) = Rect::from_xywh(x, y, w, h) {
            let path = PathBuilder::from_rect(r);
            let stroke = Stroke {
                width,
                ..Stroke::default()
            };
            self.pixmap
                .stroke_path(&path, &paint(c), &stroke, Transform::identity(), None);
        }
    }

    fn text(&mut self, x: f32, y: f32, size: f32, anchor: Anchor, c: Rgba, text: &str) {
        let font = font();
        let scaled = font.as_scaled(PxScale::from(size));
        let mut caret = x + anchor_offset(anchor, text_width(text, size));
        let (w, h) = (self.pixmap.width() as i32, self.pixmap.height() as i32);
        let stride = self.pixmap.width() as usize;
        let pixels = self.pixmap.pixels_mut();
        let mut prev = None;
        for ch in text.chars() {
            let id = scaled.glyph_id(ch);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            let glyph = id.with_scale_and_position(PxScale::from(size), ab_glyph::point(caret, y));
            caret += scaled.h_advance(id);
            prev = Some(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i32 + gx as i32;
                let py = bounds.min.y as i32 + gy as i32;
                if px < 0 || py < 0 || px >= w || py >= h {
                    return;
                }
                let alpha = coverage.clamp(0.0, 1.0) * c[3] as f32 / 255.0;
                let dst = &mut pixels[py as usize * stride + px as usize];
                let blend =
                    |s: u8, d: u8| (s as f32 * alpha + d as f32 * (1.0 - alpha)).round() as u8;
                let (r, g, b, a) = (dst.red(), dst.green(), dst.blue(), dst.alpha());
                let out_a = (255.0 * alpha + a as f32 * (1.0 - alpha)).round() as u8;
                // Premultiplied source over premultiplied destination.
                let (sr, sg, sb) = (c[0], c[1], c[2]);
                let nr = blend(sr, r).min(out_a);
                let ng = blend(sg, g).min(out_a);
                let nb = blend(sb, b).min(out_a);
                if let Some(p) = tiny_skia::PremultipliedColorU8::from_rgba(nr, ng, nb, out_a) {
                    *dst = p;
                }
            });
        }
    }
}

/// Vector document (SVG output).
pub(crate) struct SvgDoc {
    width: u32,
    height: u32,
    body: String,
    /// The first image that could not be embedded (PNG encoding failed); reported by `finish`.
    error: Option<String>,
}

impl SvgDoc {
    /// A `width x height` document with a `background` rectangle.
    pub(crate) fn new(width: u32, height: u32, background: Rgba) -> Self {
        let mut doc = Self {
            width,
            height,
            body: String::new(),
            error: None,
        };
        doc.rect(0.0, 0.0, width as f32, height as f32, background);
        doc
    }

    /// The SVG text, or why an embedded image could not be encoded.
    pub(crate) fn finish(&self) -> Result<String, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        Ok(format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"DejaVu Sans, Verdana, sans-serif\">\n{body}</svg>\n",
            w = self.width,
            h = self.height,
            body = self.body
        ))
    }
}

fn svg_color(c: Rgba) -> String {
    format!(
        "rgb({},{},{})\" {}-opacity=\"{:.3}",
        c[0],
        c[1],
        c[2],
        "%KIND%",
        c[3] as f32 / 255.0
    )
}

fn fill_attr(c: Rgba) -> String {
    format!("fill=\"{}\"", svg_color(c).replace("%KIND%", "fill"))
}

fn stroke_attr(c: Rgba) -> String {
    format!("stroke=\"{}\"", svg_color(c).replace("%KIND%", "stroke"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Surface for SvgDoc {
    fn circle(&mut self, x: f32, y: f32, r: f32, fill: Rgba) {
        let _ = writeln!(
            self.body,
            "<circle cx=\"{x:.2}\" cy=\"{y:.2}\" r=\"{r:.2}\" {}/>",
            fill_attr(fill)
        );
    }

    fn line(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, width: f32, c: Rgba) {
        let _ = writeln!(
            self.body,
            "<line x1=\"{x0:.2}\" y1=\"{y0:.2}\" x2=\"{x1:.2}\" y2=\"{y1:.2}\" stroke-width=\"{width:.2}\" stroke-linecap=\"round\" {}/>",
            stroke_attr(c)
        );
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, fill: Rgba) {
        let _ = writeln!(
            self.body,
            "<rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{w:.2}\" height=\"{h:.2}\" {}/>",
            fill_attr(fill)
        );
    }

    fn rect_outline(&mut self, x: f32, y: f32, w: f32, h: f32, width: f32, c: Rgba) {
        let _ = writeln!(
            self.body,
            "<rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{w:.2}\" height=\"{h:.2}\" fill=\"none\" stroke-width=\"{width:.2}\" {}/>",
            stroke_attr(c)
        );
    }

    fn text(&mut self, x: f32, y: f32, size: f32, anchor: Anchor, c: Rgba, text: &str) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let _ = writeln!(
            self.body,
            "<text x=\"{x:.2}\" y=\"{y:.2}\" font-size=\"{size:.1}\" text-anchor=\"{anchor}\" {}>{}</text>",
            fill_attr(c),
            escape(text)
        );
    }

    fn image(&mut self, img: &image::RgbImage, x: f32, y: f32, w: f32, h: f32) {
        if img.width() == 0 || img.height() == 0 {
            return;
        }
        let mut png = Vec::new();
        if let Err(e) = img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png) {
            self.error
                .get_or_insert_with(|| format!("cannot encode an embedded image as PNG: {e}"));
            return;
        }
        let data = base64::engine::general_purpose::STANDARD.encode(&png);
        // Pixelated scaling matches the PNG back end's nearest-neighbour sampling.
        let _ = writeln!(
            self.body,
            "<image x=\"{x:.2}\" y=\"{y:.2}\" width=\"{w:.2}\" height=\"{h:.2}\" preserveAspectRatio=\"none\" style=\"image-rendering:pixelated\" href=\"data:image/png;base64,{data}\"/>"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_and_measured() {
        let mut c = Canvas::new(120, 40, [255, 255, 255, 255]).unwrap();
        c.text(10.0, 30.0, 20.0, Anchor::Start, [0, 0, 0, 255], "Hello");
        let dark = c.pixmap.pixels().iter().filter(|p| p.red() < 128).count();
        assert!(dark > 50, "text left only {dark} dark pixels");
        assert!(text_width("Hello", 20.0) > text_width("Hi", 20.0));
    }

    #[test]
    fn svg_escapes_text() {
        let mut d = SvgDoc::new(10, 10, [0, 0, 0, 255]);
        d.text(0.0, 0.0, 10.0, Anchor::Middle, [1, 2, 3, 128], "<a&b>");
        let s = d.finish().unwrap();
        assert!(s.contains("&lt;a&amp;b&gt;"));
        assert!(s.contains("fill-opacity=\"0.502\""));
    }
}
