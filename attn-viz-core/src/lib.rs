#![doc = include_str!("../README.md")]

mod color;
mod data;
#[cfg(feature = "dataset")]
pub mod dataset;
mod error;
mod geometry;
mod image;
mod matrix;
mod sentence;
mod signature;
mod similarity;
mod single;
mod state;
mod trust;

pub use color::{
    ColorEncoding, DISCRETE_HUES, KEY_COLOR, Legend, LegendEntry, LegendGradient, NEUTRAL_COLOR,
    OriginalPatch, QUERY_COLOR, QUERY_DARKEN, Rgba, discrete_position_color,
};
pub use data::{HeadData, ModelData, RawNorms};
pub use error::VizError;
pub use geometry::{Label, count_clusters, normalize_cell, place_labels};
pub use image::{
    ClsMarker, HeatCell, ImageEdge, ImageNode, ImageView, PatchArrow, image_view, patch_token,
};
pub use matrix::{CellInfo, MatrixCell, MatrixView, matrix_view};
pub use sentence::{
    HideTokens, SentenceEdge, SentenceOptions, SentenceToken, SentenceView,
    aggregate_sentence_view, renormalize_hidden, sentence_view,
};
pub use signature::{HeadLabel, HeadSignature, head_signature, head_signatures, label_of};
pub use similarity::{
    HeadSimilarity, classical_mds, head_divergence, head_groups, head_similarity, jensen_shannon,
};
pub use single::{
    AttentionLine, HeadNav, SelectedPoint, SinglePoint, SingleView, head_nav, single_view,
    top_attended,
};
pub use state::{LabelStyle, Search, SearchMode, Selection, ViewState, display_text};
pub use trust::{TrustInfo, TrustLevel, trust_info};

#[cfg(test)]
mod tests;
