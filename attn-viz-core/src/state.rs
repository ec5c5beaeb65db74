//! The view state shared by the Matrix View and the Single View.

use attn_types::{HeadId, ProjectionMethod, Role, TokenMeta};
use serde::{Deserialize, Serialize};

use crate::color::ColorEncoding;
use crate::error::VizError;

/// How a search string matches token text.
///
/// Before matching, the tokenizer's word markers are stripped from the token text (a leading `Ġ`
/// (GPT-2), `▁` (SentencePiece) or `##` (WordPiece continuation)), so `the` matches `Ġthe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    /// The stripped token text equals the search string exactly (case-sensitive).
    Exact,
    /// The stripped token text contains the search string, ignoring case (the default).
    #[default]
    Substring,
}

/// A global token search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Search {
    /// The string searched for; an empty string matches nothing.
    pub text: String,
    /// How it matches (substring when absent from JSON).
    #[serde(default)]
    pub mode: SearchMode,
}

impl Search {
    /// A case-insensitive substring search.
    pub fn substring(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            mode: SearchMode::Substring,
        }
    }

    /// An exact search.
    pub fn exact(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            mode: SearchMode::Exact,
        }
    }

    /// Whether a token matches.
    pub fn matches(&self, token: &TokenMeta) -> bool {
        if self.text.is_empty() {
            return false;
        }
        let text = display_text(&token.text);
        match self.mode {
            SearchMode::Exact => text == self.text,
            SearchMode::Substring => text.to_lowercase().contains(&self.text.to_lowercase()),
        }
    }
}

/// Token text without the tokenizer's word markers (`Ġ`, `▁`, `##`); used for search and labels.
pub fn display_text(text: &str) -> &str {
    text.strip_prefix('Ġ')
        .or_else(|| text.strip_prefix('▁'))
        .or_else(|| text.strip_prefix("##"))
        .unwrap_or(text)
}

/// A clicked point: one token in one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Selection {
    /// Token index in the token table.
    pub token: usize,
    /// Query or key point.
    pub role: Role,
}

/// Label geometry in normalized view units (the view's points lie in `[0, 1]^2`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabelStyle {
    /// Approximate width of one character.
    pub char_width: f32,
    /// Height of a label.
    pub char_height: f32,
    /// Gap between a point and its label.
    pub gap: f32,
    /// Most labels to place.
    pub max_labels: usize,
}

impl Default for LabelStyle {
    fn default() -> Self {
        Self {
            char_width: 0.008,
            char_height: 0.016,
            gap: 0.004,
            max_labels: 200,
        }
    }
}

/// Everything the user set; one value drives both the Matrix View and the Single View so that they stay
/// in sync. Deserializes from partial JSON: missing fields take their [`Default`] values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewState {
    /// Projection method every head must have been projected with (`None`: accept any, but still one for
    /// all heads).
    pub method: Option<ProjectionMethod>,
    /// 2 or 3; every projection must have this many columns.
    pub dims: u8,
    /// The color encoding.
    pub encoding: ColorEncoding,
    /// The global search, if any.
    pub search: Option<Search>,
    /// The head of the Single View.
    pub head: HeadId,
    /// The clicked point, if any.
    pub selected: Option<Selection>,
    /// Whether the Single View places labels.
    pub show_labels: bool,
    /// Whether dot size follows the vector norm (before scaling).
    pub size_by_norm: bool,
    /// Label geometry.
    pub labels: LabelStyle,
    /// Cluster link distance of search matches, as a fraction of a cell's extent (see
    /// [`crate::count_clusters`]).
    pub cluster_eps: f32,
}

impl Default for ViewState {
    fn default() -> Self {
        Self {
            method: None,
            dims: 2,
            encoding: ColorEncoding::QueryKey,
            search: None,
            head: HeadId::new(0, 0),
            selected: None,
            show_labels: false,
            size_by_norm: false,
            labels: LabelStyle::default(),
            cluster_eps: DEFAULT_CLUSTER_EPS,
        }
    }
}

/// Default link distance of search-match clusters: 5% of the cell's extent.
pub const DEFAULT_CLUSTER_EPS: f32 = 0.05;

impl ViewState {
    /// Checks the state's own parameters.
    pub fn validate(&self) -> Result<(), VizError> {
        if !(2..=3).contains(&self.dims) {
            return Err(VizError::Parameter {
                name: "dims",
                reason: format!("must be 2 or 3, got {}", self.dims),
            });
        }
        if !(self.cluster_eps.is_finite() && self.cluster_eps > 0.0) {
            return Err(VizError::Parameter {
                name: "cluster_eps",
                reason: format!("must be positive, got {}", self.cluster_eps),
            });
        }
        let l = &self.labels;
        if !(l.char_width.is_finite()
            && l.char_width > 0.0
            && l.char_height.is_finite()
            && l.char_height > 0.0
            && l.gap.is_finite()
            && l.gap >= 0.0)
        {
            return Err(VizError::Parameter {
                name: "labels",
                reason: "char_width and char_height must be positive, gap non-negative".into(),
            });
        }
        Ok(())
    }
}
