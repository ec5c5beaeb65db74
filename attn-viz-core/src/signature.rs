//! Head signatures: a few numbers that describe a head's attention, and a short label.

use attn_types::HeadId;
use serde::{Deserialize, Serialize};

use crate::data::{HeadData, ModelData};
use crate::error::VizError;

/// A share at or above this makes a positional label (previous / next / self / first / special).
pub const SHARE_THRESHOLD: f32 = 0.5;
/// Mean attention distance (in positions) at or below this makes a head "local".
pub const LOCAL_DISTANCE: f32 = 2.0;
/// Normalized mean row entropy at or above this makes a head "broad".
pub const BROAD_ENTROPY: f32 = 0.7;

/// The automatic label of a head. Rules, first match wins (shares are means over query tokens):
///
/// 1. `previous token`: previous-token share >= 0.5 ([`SHARE_THRESHOLD`])
/// 2. `next token`: next-token share >= 0.5
/// 3. `self`: self share >= 0.5
/// 4. `attends to first`: share to position 0 >= 0.5
/// 5. `attends to special`: share to special tokens >= 0.5
/// 6. `local`: mean attention distance <= 2 positions ([`LOCAL_DISTANCE`])
/// 7. `broad`: mean normalized row entropy >= 0.7 ([`BROAD_ENTROPY`])
/// 8. `mixed`: none of the above
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadLabel {
    /// Attends to the previous token.
    PreviousToken,
    /// Attends to the next token.
    NextToken,
    /// Attends to itself.
    SelfAttention,
    /// Attends to the first token of the sequence.
    AttendsToFirst,
    /// Attends to special tokens (`[CLS]`, `[SEP]`, ...).
    AttendsToSpecial,
    /// Attends to nearby positions.
    Local,
    /// Spreads attention widely.
    Broad,
    /// No simple pattern.
    Mixed,
}

impl HeadLabel {
    /// The short human-readable label.
    pub fn as_str(self) -> &'static str {
        match self {
            HeadLabel::PreviousToken => "previous token",
            HeadLabel::NextToken => "next token",
            HeadLabel::SelfAttention => "self",
            HeadLabel::AttendsToFirst => "attends to first",
            HeadLabel::AttendsToSpecial => "attends to special",
            HeadLabel::Local => "local",
            HeadLabel::Broad => "broad",
            HeadLabel::Mixed => "mixed",
        }
    }
}

impl std::fmt::Display for HeadLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-head attention statistics, each a mean over query tokens of all sequences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadSignature {
    /// The head.
    pub head: HeadId,
    /// Mean attention to position 0.
    pub first_token: f32,
    /// Mean total attention to special tokens.
    pub special: f32,
    /// Mean attention distance `sum_k a[q,k] |q - k|`, in positions.
    pub mean_distance: f32,
    /// Mean `a[q,q]`.
    pub self_share: f32,
    /// Mean `a[q,q-1]` over queries with a previous token.
    pub previous_share: f32,
    /// Mean `a[q,q+1]` over queries with a next token.
    pub next_share: f32,
    /// Mean row entropy divided by `ln(len)` (sequences of length >= 2), in `[0, 1]`.
    pub entropy: f32,
    /// The label from the rules of [`HeadLabel`].
    pub label: HeadLabel,
}

/// The signature of one head; needs its attention.
pub fn head_signature(model: &ModelData<'_>, head: HeadId) -> Result<HeadSignature, VizError> {
    signature_of(model, model.head(head)?)
}

/// Signatures of every head that has attention, in the data's head order.
pub fn head_signatures(model: &ModelData<'_>) -> Result<Vec<HeadSignature>, VizError> {
    model
        .heads()
        .iter()
        .filter(|h| h.attention.is_some())
        .map(|h| signature_of(model, h))
        .collect()
}

pub(crate) fn signature_of(
    model: &ModelData<'_>,
    h: &HeadData<'_>,
) -> Result<HeadSignature, VizError> {
    let attention = h.attention_or_err()?;
    let tokens = &model.tokens().tokens;
    // f64 sums: a corpus has tens of thousands of rows.
    let (mut first, mut special, mut dist, mut selfs) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let (mut prev, mut prev_n, mut next, mut next_n) = (0.0f64, 0usize, 0.0f64, 0usize);
    let (mut ent, mut ent_n, mut rows) = (0.0f64, 0usize, 0usize);
    for (span, att) in model.spans().iter().zip(attention) {
        let len = span.len;
        let seq_tokens = &tokens[span.range()];
        for q in 0..len {
            let row = att.weights.row(q);
            rows += 1;
            first += f64::from(row[0]);
            let mut h_row = 0.0f64;
            for (k, &a) in row.iter().enumerate() {
                let a = f64::from(a);
                if seq_tokens[k].is_special {
                    special += a;
                }
                dist += a * q.abs_diff(k) as f64;
                if a > 0.0 {
                    h_row -= a * a.ln();
                }
            }
            selfs += f64::from(row[q]);
            if q >= 1 {
                prev += f64::from(row[q - 1]);
                prev_n += 1;
            }
            if q + 1 < len {
                next += f64::from(row[q + 1]);
                next_n += 1;
            }
            if len >= 2 {
                ent += h_row / (len as f64).ln();
                ent_n += 1;
            }
        }
    }
    let mean = |s: f64, n: usize| if n == 0 { 0.0 } else { (s / n as f64) as f32 };
    let mut sig = HeadSignature {
        head: h.head,
        first_token: mean(first, rows),
        special: mean(special, rows),
        mean_distance: mean(dist, rows),
        self_share: mean(selfs, rows),
        previous_share: mean(prev, prev_n),
        next_share: mean(next, next_n),
        entropy: mean(ent, ent_n),
        label: HeadLabel::Mixed,
    };
    sig.label = label_of(&sig);
    Ok(sig)
}

/// Applies the [`HeadLabel`] rules to a signature's numbers.
pub fn label_of(s: &HeadSignature) -> HeadLabel {
    if s.previous_share >= SHARE_THRESHOLD {
        HeadLabel::PreviousToken
    } else if s.next_share >= SHARE_THRESHOLD {
        HeadLabel::NextToken
    } else if s.self_share >= SHARE_THRESHOLD {
        HeadLabel::SelfAttention
    } else if s.first_token >= SHARE_THRESHOLD {
        HeadLabel::AttendsToFirst
    } else if s.special >= SHARE_THRESHOLD {
        HeadLabel::AttendsToSpecial
    } else if s.mean_distance <= LOCAL_DISTANCE {
        HeadLabel::Local
    } else if s.entropy >= BROAD_ENTROPY {
        HeadLabel::Broad
    } else {
        HeadLabel::Mixed
    }
}
