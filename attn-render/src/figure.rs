//! [`Figure`]: a drawn view held in memory, encoded to PNG or SVG on demand.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::RenderError;
use crate::canvas::{Anchor, Canvas, Rgba, Surface, SvgDoc};

/// An output format of a [`Figure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A raster PNG image (RGBA, 8 bits per channel).
    Png,
    /// A standalone SVG document (text as `<text>` elements, images embedded as PNG data URIs).
    Svg,
}

impl Format {
    /// The format named by `path`'s extension (`.png` or `.svg`, any case).
    pub fn from_path(path: &Path) -> Result<Self, RenderError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => Err(RenderError::UnsupportedExtension {
                path: path.to_path_buf(),
            }),
        }
    }

    /// The file extension, without the dot: `png` or `svg`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
        }
    }

    /// The media (MIME) type, for an HTTP `Content-Type`: `image/png` or `image/svg+xml`.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Svg => "image/svg+xml",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Png => "PNG",
            Format::Svg => "SVG",
        })
    }
}

/// One drawing operation, in pixels with y down.
#[derive(Clone)]
enum Op {
    Circle {
        x: f32,
        y: f32,
        r: f32,
        fill: Rgba,
    },
    Line {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
        width: f32,
        color: Rgba,
    },
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        fill: Rgba,
    },
    RectOutline {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        width: f32,
        color: Rgba,
    },
    Text {
        x: f32,
        y: f32,
        size: f32,
        anchor: Anchor,
        color: Rgba,
        text: String,
    },
    Image {
        image: Arc<image::RgbImage>,
        x: f32,
        y: f32,
        w: f32,
        h: f32,
    },
}

/// A drawn view, held in memory as a list of drawing operations: encode it with
/// [`to_png`](Figure::to_png), [`to_svg`](Figure::to_svg) or [`encode`](Figure::encode) (for a GUI or
/// a web service), or write it with [`save`](Figure::save). Made by [`crate::matrix_figure`] and the
/// other `*_figure` functions; the PNG and the SVG of one figure show the same drawing.
#[derive(Clone)]
pub struct Figure {
    width: u32,
    height: u32,
    background: Rgba,
    ops: Vec<Op>,
}

impl fmt::Debug for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Figure")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("ops", &self.ops.len())
            .finish()
    }
}

impl Figure {
    /// An empty `width x height` figure filled with `background`.
    pub(crate) fn new(width: u32, height: u32, background: Rgba) -> Self {
        Self {
            width,
            height,
            background,
            ops: Vec::new(),
        }
    }

    /// Width in pixels (of the PNG, and of the SVG's view box).
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Draws the figure as a PNG image.
    pub fn to_png(&self) -> Result<Vec<u8>, RenderError> {
        let (width, height) = (self.width, self.height);
        let mut canvas =
            Canvas::new(width, height, self.background).ok_or(RenderError::CanvasSize {
                path: None,
                width,
                height,
            })?;
        self.replay(&mut canvas);
        canvas.encode_png().map_err(|message| RenderError::Encode {
            path: None,
            format: Format::Png,
            message,
        })
    }

    /// Draws the figure as an SVG document.
    pub fn to_svg(&self) -> Result<String, RenderError> {
        let mut doc = SvgDoc::new(self.width, self.height, self.background);
        self.replay(&mut doc);
        doc.finish().map_err(|message| RenderError::Encode {
            path: None,
            format: Format::Svg,
            message,
        })
    }

    /// Draws the figure in `format`: the bytes of a PNG file or of an SVG file (UTF-8).
    pub fn encode(&self, format: Format) -> Result<Vec<u8>, RenderError> {
        match format {
            Format::Png => self.to_png(),
            Format::Svg => self.to_svg().map(String::into_bytes),
        }
    }

    /// Writes the figure to `path`, as PNG or SVG by its extension ([`Format::from_path`]), atomically
    /// (a temporary file in the same folder, fsync, rename: readers never see a partial figure, and a
    /// failed write leaves nothing behind). Creates the folder if needed.
    pub fn save(&self, path: &Path) -> Result<(), RenderError> {
        let format = Format::from_path(path)?;
        let bytes = self.encode(format).map_err(|e| e.at(path))?;
        attn_store::write_file_atomically(path, &bytes)?;
        Ok(())
    }

    fn replay(&self, s: &mut dyn Surface) {
        for op in &self.ops {
            match op {
                &Op::Circle { x, y, r, fill } => s.circle(x, y, r, fill),
                &Op::Line {
                    x0,
                    y0,
                    x1,
                    y1,
                    width,
                    color,
                } => s.line(x0, y0, x1, y1, width, color),
                &Op::Rect { x, y, w, h, fill } => s.rect(x, y, w, h, fill),
                &Op::RectOutline {
                    x,
                    y,
                    w,
                    h,
                    width,
                    color,
                } => s.rect_outline(x, y, w, h, width, color),
                Op::Text {
                    x,
                    y,
                    size,
                    anchor,
                    color,
                    text,
                } => s.text(*x, *y, *size, *anchor, *color, text),
                Op::Image { image, x, y, w, h } => s.image(image, *x, *y, *w, *h),
            }
        }
    }
}

/// Drawing into a figure records the operation.
impl Surface for Figure {
    fn circle(&mut self, x: f32, y: f32, r: f32, fill: Rgba) {
        self.ops.push(Op::Circle { x, y, r, fill });
    }

    fn line(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, width: f32, color: Rgba) {
        self.ops.push(Op::Line {
            x0,
            y0,
            x1,
            y1,
            width,
            color,
        });
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, fill: Rgba) {
        self.ops.push(Op::Rect { x, y, w, h, fill });
    }

    fn rect_outline(&mut self, x: f32, y: f32, w: f32, h: f32, width: f32, color: Rgba) {
        self.ops.push(Op::RectOutline {
            x,
            y,
            w,
            h,
            width,
            color,
        });
    }

    fn text(&mut self, x: f32, y: f32, size: f32, anchor: Anchor, color: Rgba, text: &str) {
        self.ops.push(Op::Text {
            x,
            y,
            size,
            anchor,
            color,
            text: text.to_string(),
        });
    }

    fn image(&mut self, img: &image::RgbImage, x: f32, y: f32, w: f32, h: f32) {
        // Shared, so that cloning the figure does not copy the pixels.
        self.ops.push(Op::Image {
            image: Arc::new(img.clone()),
            x,
            y,
            w,
            h,
        });
    }
}
