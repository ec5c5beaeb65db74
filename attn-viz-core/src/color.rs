//! Color encodings of points and their legends.

use attn_types::{Role, TokenTable};
use serde::{Deserialize, Serialize};

use crate::data::{HeadData, ModelData};
use crate::error::VizError;

/// An sRGB color with alpha, serialized as `[r, g, b, a]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rgba(pub [u8; 4]);

impl Rgba {
    /// An opaque color.
    pub const fn rgb(r: u8, g: u8, b: u8) -> Self {
        Self([r, g, b, 255])
    }

    /// Linear interpolation from `self` (t = 0) to `to` (t = 1); `t` is clamped to `[0, 1]`.
    pub fn lerp(self, to: Rgba, t: f32) -> Rgba {
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mut out = [0u8; 4];
        for (o, (a, b)) in out.iter_mut().zip(self.0.iter().zip(to.0.iter())) {
            *o = (f32::from(*a) + (f32::from(*b) - f32::from(*a)) * t).round() as u8;
        }
        Rgba(out)
    }

    /// The same hue darkened by `factor` in `[0, 1]` (alpha kept).
    pub fn darken(self, factor: f32) -> Rgba {
        let [r, g, b, a] = self.0;
        let f = |c: u8| (f32::from(c) * factor).round() as u8;
        Rgba([f(r), f(g), f(b), a])
    }
}

/// Query color of the query/key encoding (green, as in the paper).
pub const QUERY_COLOR: Rgba = Rgba::rgb(95, 184, 104);
/// Key color of the query/key encoding (pink, as in the paper).
pub const KEY_COLOR: Rgba = Rgba::rgb(232, 120, 177);
/// Color of points that an encoding does not apply to (e.g. CLS under patch row).
pub const NEUTRAL_COLOR: Rgba = Rgba::rgb(150, 150, 150);
/// Key colors of the discrete position encoding, for `pos mod 5` = 0..4; queries use these darkened
/// by [`QUERY_DARKEN`].
pub const DISCRETE_HUES: [Rgba; 5] = [
    Rgba::rgb(31, 119, 180),
    Rgba::rgb(255, 127, 14),
    Rgba::rgb(44, 160, 44),
    Rgba::rgb(214, 39, 40),
    Rgba::rgb(148, 103, 189),
];
/// Factor applied to a key hue to get the query hue in the discrete position encoding.
pub const QUERY_DARKEN: f32 = 0.6;

// Light-to-dark ramps: queries keep a green hue and keys a pink one so that roles stay readable.
const QUERY_RAMP: (Rgba, Rgba) = (Rgba::rgb(212, 240, 205), Rgba::rgb(20, 90, 40));
const KEY_RAMP: (Rgba, Rgba) = (Rgba::rgb(252, 220, 236), Rgba::rgb(140, 20, 85));
const NORM_RAMP: (Rgba, Rgba) = (Rgba::rgb(255, 237, 160), Rgba::rgb(128, 0, 38));
const ROW_RAMP: (Rgba, Rgba) = (Rgba::rgb(222, 235, 247), Rgba::rgb(8, 48, 107));
const COL_RAMP: (Rgba, Rgba) = (Rgba::rgb(254, 230, 206), Rgba::rgb(166, 54, 3));

/// How points are colored. One encoding is shared by every cell of the Matrix View and the Single View.
///
/// Serialized in snake_case (`query_key`, `normalized_position`, ...); the CLI's `--color` names
/// (`query-key`, `position`, `discrete`, `patch-row`, `patch-column`, `patch`) read too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorEncoding {
    /// Queries green, keys pink.
    #[default]
    #[serde(alias = "query-key")]
    QueryKey,
    /// `pos / (len - 1)`, light (first token) to dark (last); green ramp for queries, pink for keys.
    #[serde(alias = "position")]
    NormalizedPosition,
    /// `pos mod 5`: five hues ([`DISCRETE_HUES`]), darker for queries.
    #[serde(alias = "discrete")]
    DiscretePosition,
    /// Vector norm before scaling, light (smallest) to dark (largest) over the heads shown; needs norms.
    Norm,
    /// Image patch row `row / (rows - 1)`, light (top) to dark; tokens without a patch are gray.
    #[serde(alias = "patch-row")]
    PatchRow,
    /// Image patch column, light (left) to dark; tokens without a patch are gray.
    #[serde(alias = "patch-column")]
    PatchColumn,
    /// The original patch pixels: the mean patch color when given to [`ModelData::with_patch_colors`],
    /// else gray; every patch point also carries an [`OriginalPatch`] for the renderer to draw.
    #[serde(alias = "patch")]
    OriginalPatch,
}

/// Where a point's image patch is, for renderers that draw the patch's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OriginalPatch {
    /// The image (sequence) id.
    pub seq_id: u32,
    /// Patch row.
    pub row: u16,
    /// Patch column.
    pub col: u16,
}

/// One discrete legend entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegendEntry {
    /// What the color means.
    pub label: String,
    /// The color.
    pub color: Rgba,
}

/// One continuous legend ramp: `from` at `min`, `to` at `max`, linear in between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegendGradient {
    /// What the ramp encodes (e.g. `query`).
    pub label: String,
    /// Value at the light end.
    pub min: f32,
    /// Value at the dark end.
    pub max: f32,
    /// Color at `min`.
    pub from: Rgba,
    /// Color at `max`.
    pub to: Rgba,
}

/// The legend of a color encoding: discrete entries, ramps, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Legend {
    /// The encoding.
    pub encoding: ColorEncoding,
    /// Title to show.
    pub title: String,
    /// Discrete entries.
    pub entries: Vec<LegendEntry>,
    /// Continuous ramps.
    pub gradients: Vec<LegendGradient>,
}

/// Colors points under one encoding; built once per view so that ranges are shared across heads.
pub(crate) struct Colorizer<'a> {
    encoding: ColorEncoding,
    tokens: &'a TokenTable,
    patch_colors: Option<&'a [Rgba]>,
    norm_range: (f32, f32),
    max_row: u16,
    max_col: u16,
}

impl<'a> Colorizer<'a> {
    /// Prepares the encoding for `heads` (the norm range is taken over all of them).
    pub(crate) fn new(
        encoding: ColorEncoding,
        model: &ModelData<'a>,
        heads: &[&HeadData<'a>],
    ) -> Result<Self, VizError> {
        let mut norm_range = (0.0, 0.0);
        if encoding == ColorEncoding::Norm {
            let mut lo = f32::INFINITY;
            let mut hi = f32::NEG_INFINITY;
            for h in heads {
                let n = h.norms_or_err()?;
                for &v in n.queries.iter().chain(n.keys) {
                    if v.is_finite() {
                        lo = lo.min(v);
                        hi = hi.max(v);
                    }
                }
            }
            if lo <= hi {
                norm_range = (lo, hi);
            }
        }
        let tokens = model.tokens();
        let (mut max_row, mut max_col) = (0u16, 0u16);
        for t in &tokens.tokens {
            if let Some(p) = t.patch {
                max_row = max_row.max(p.row);
                max_col = max_col.max(p.col);
            }
        }
        Ok(Self {
            encoding,
            tokens,
            patch_colors: model.patch_colors(),
            norm_range,
            max_row,
            max_col,
        })
    }

    /// The color of every joint row of `head` (`0..n` queries, then keys).
    pub(crate) fn colors(&self, head: &HeadData<'_>) -> Result<Vec<Rgba>, VizError> {
        let n = self.tokens.len();
        let norms = if self.encoding == ColorEncoding::Norm {
            Some(head.norms_or_err()?)
        } else {
            None
        };
        Ok((0..2 * n)
            .map(|row| {
                let (token, role) = if row < n {
                    (row, Role::Query)
                } else {
                    (row - n, Role::Key)
                };
                let norm = norms.map_or(0.0, |nr| nr.joint(row));
                self.color(token, role, norm)
            })
            .collect())
    }

    /// The color of one token in one role; `norm` is only read by the norm encoding.
    pub(crate) fn color(&self, token: usize, role: Role, norm: f32) -> Rgba {
        let t = &self.tokens.tokens[token];
        let ramp = |(a, b): (Rgba, Rgba), x: f32| a.lerp(b, x);
        match self.encoding {
            ColorEncoding::QueryKey => match role {
                Role::Query => QUERY_COLOR,
                Role::Key => KEY_COLOR,
            },
            ColorEncoding::NormalizedPosition => {
                let x = t.normalized_position();
                match role {
                    Role::Query => ramp(QUERY_RAMP, x),
                    Role::Key => ramp(KEY_RAMP, x),
                }
            }
            ColorEncoding::DiscretePosition => discrete_position_color(t.position, role),
            ColorEncoding::Norm => {
                let (lo, hi) = self.norm_range;
                let x = if hi > lo {
                    (norm - lo) / (hi - lo)
                } else {
                    0.0
                };
                ramp(NORM_RAMP, x)
            }
            ColorEncoding::PatchRow => match t.patch {
                Some(p) => ramp(ROW_RAMP, frac(p.row, self.max_row)),
                None => NEUTRAL_COLOR,
            },
            ColorEncoding::PatchColumn => match t.patch {
                Some(p) => ramp(COL_RAMP, frac(p.col, self.max_col)),
                None => NEUTRAL_COLOR,
            },
            ColorEncoding::OriginalPatch => match (t.patch, self.patch_colors) {
                (Some(_), Some(c)) => c[token],
                _ => NEUTRAL_COLOR,
            },
        }
    }

    /// The patch reference of every joint row under the original-patch encoding; empty otherwise.
    pub(crate) fn patch_refs(&self) -> Vec<Option<OriginalPatch>> {
        if self.encoding != ColorEncoding::OriginalPatch {
            return Vec::new();
        }
        let refs: Vec<Option<OriginalPatch>> =
            (0..self.tokens.len()).map(|i| self.patch_ref(i)).collect();
        // Queries and keys of a token show the same patch.
        refs.iter().chain(refs.iter()).copied().collect()
    }

    /// The patch reference of one token under the original-patch encoding.
    pub(crate) fn patch_ref(&self, token: usize) -> Option<OriginalPatch> {
        if self.encoding != ColorEncoding::OriginalPatch {
            return None;
        }
        let t = &self.tokens.tokens[token];
        t.patch.map(|p| OriginalPatch {
            seq_id: t.seq_id,
            row: p.row,
            col: p.col,
        })
    }

    /// The legend of the encoding.
    pub(crate) fn legend(&self) -> Legend {
        let grad = |label: &str, min: f32, max: f32, (from, to): (Rgba, Rgba)| LegendGradient {
            label: label.to_string(),
            min,
            max,
            from,
            to,
        };
        let entry = |label: String, color: Rgba| LegendEntry { label, color };
        let no_patch = || entry("no patch (CLS / text)".into(), NEUTRAL_COLOR);
        let (title, entries, gradients) = match self.encoding {
            ColorEncoding::QueryKey => (
                "query / key",
                vec![
                    entry("query".into(), QUERY_COLOR),
                    entry("key".into(), KEY_COLOR),
                ],
                vec![],
            ),
            ColorEncoding::NormalizedPosition => (
                "normalized position pos / (len - 1)",
                vec![],
                vec![
                    grad("query", 0.0, 1.0, QUERY_RAMP),
                    grad("key", 0.0, 1.0, KEY_RAMP),
                ],
            ),
            ColorEncoding::DiscretePosition => {
                let mut e = Vec::with_capacity(10);
                for (role, name) in [(Role::Query, "query"), (Role::Key, "key")] {
                    for p in 0..5u32 {
                        e.push(entry(
                            format!("{name}, pos mod 5 = {p}"),
                            discrete_position_color(p, role),
                        ));
                    }
                }
                ("position mod 5", e, vec![])
            }
            ColorEncoding::Norm => (
                "norm before scaling",
                vec![],
                vec![grad(
                    "norm",
                    self.norm_range.0,
                    self.norm_range.1,
                    NORM_RAMP,
                )],
            ),
            ColorEncoding::PatchRow => (
                "patch row",
                vec![no_patch()],
                vec![grad("row", 0.0, f32::from(self.max_row), ROW_RAMP)],
            ),
            ColorEncoding::PatchColumn => (
                "patch column",
                vec![no_patch()],
                vec![grad("column", 0.0, f32::from(self.max_col), COL_RAMP)],
            ),
            ColorEncoding::OriginalPatch => ("original patch", vec![no_patch()], vec![]),
        };
        Legend {
            encoding: self.encoding,
            title: title.to_string(),
            entries,
            gradients,
        }
    }
}

/// The discrete-position color: hue `pos mod 5`, darkened for queries.
pub fn discrete_position_color(position: u32, role: Role) -> Rgba {
    let hue = DISCRETE_HUES[(position % 5) as usize];
    match role {
        Role::Query => hue.darken(QUERY_DARKEN),
        Role::Key => hue,
    }
}

fn frac(v: u16, max: u16) -> f32 {
    if max == 0 {
        0.0
    } else {
        f32::from(v) / f32::from(max)
    }
}
