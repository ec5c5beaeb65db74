//! How far a head's picture can be trusted.

use attn_types::Metric;
use serde::{Deserialize, Serialize};

use crate::data::HeadData;

/// A distance / dot-product Spearman correlation at or below `-CORR_HIGH` counts as high trust.
pub const CORR_HIGH: f32 = 0.8;
/// A correlation above `-CORR_MEDIUM` (weaker than -0.5) counts as low trust.
pub const CORR_MEDIUM: f32 = 0.5;
/// Trustworthiness at or above this counts as high trust.
pub const TRUSTWORTHINESS_HIGH: f32 = 0.9;
/// Trustworthiness below this counts as low trust.
pub const TRUSTWORTHINESS_MEDIUM: f32 = 0.75;

/// A coarse verdict on a head's picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustLevel {
    /// Neither signal is weak.
    High,
    /// One signal is middling, none weak.
    Medium,
    /// A signal is weak: distances in the picture say little about attention.
    Low,
    /// No diagnostics and no projection quality were given.
    Unknown,
}

/// The trust signals of one head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrustInfo {
    /// Spearman correlation, after normalization, between query-key distance (in the projection's input
    /// metric) and dot product; strongly negative is good (near pairs attend).
    pub distance_correlation: Option<f32>,
    /// The metric the correlation was taken with (the projection's).
    pub metric: Metric,
    /// Trustworthiness of the projection (1 = no false neighbours in the picture).
    pub trustworthiness: Option<f32>,
    /// Continuity of the projection.
    pub continuity: Option<f32>,
    /// The verdict.
    pub level: TrustLevel,
}

/// Trust of one head.
///
/// Each available signal gets a level: correlation `c` is high when `c <= -0.8` ([`CORR_HIGH`]), medium
/// when `-0.8 < c <= -0.5`, low otherwise; trustworthiness `t` is high when `t >= 0.9`
/// ([`TRUSTWORTHINESS_HIGH`]), medium when `0.75 <= t < 0.9`, low below. The head's level is the worst
/// of the available signals, [`TrustLevel::Unknown`] when none is.
pub fn trust_info(head: &HeadData<'_>) -> TrustInfo {
    let metric = head.projection.spec.metric;
    let distance_correlation = head.diagnostics.map(|d| match metric {
        Metric::Cosine => d.spearman_cosine_after,
        Metric::Euclidean => d.spearman_euclidean_after,
    });
    let quality = head.projection.quality;
    let trustworthiness = quality.map(|q| q.trustworthiness);
    let continuity = quality.map(|q| q.continuity);
    let corr_level = distance_correlation.map(|c| {
        if c <= -CORR_HIGH {
            TrustLevel::High
        } else if c <= -CORR_MEDIUM {
            TrustLevel::Medium
        } else {
            TrustLevel::Low
        }
    });
    let tw_level = trustworthiness.map(|t| {
        if t >= TRUSTWORTHINESS_HIGH {
            TrustLevel::High
        } else if t >= TRUSTWORTHINESS_MEDIUM {
            TrustLevel::Medium
        } else {
            TrustLevel::Low
        }
    });
    // Ord puts High < Medium < Low, so the worst is the max.
    let level = corr_level
        .into_iter()
        .chain(tw_level)
        .max()
        .unwrap_or(TrustLevel::Unknown);
    TrustInfo {
        distance_correlation,
        metric,
        trustworthiness,
        continuity,
        level,
    }
}
