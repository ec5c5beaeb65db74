//! The one error type of the crate.

use attn_types::HeadId;

/// Everything that can go wrong when building a view. Each variant names the offending head, field or
/// parameter so that a renderer can show the message as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VizError {
    /// A head's input has the wrong size (e.g. projection rows vs `2 x tokens`).
    #[error("{head}: `{field}` has {found}, expected {expected}")]
    Shape {
        /// The head.
        head: HeadId,
        /// Which input (`projection.coords`, `attention`, `norms.queries`, ...).
        field: &'static str,
        /// The size required.
        expected: usize,
        /// The size found.
        found: usize,
    },
    /// A head's input disagrees with the view (wrong method, dims, head id, sequence id).
    #[error("{head}: `{field}` is {found}, expected {expected}")]
    Mismatch {
        /// The head.
        head: HeadId,
        /// Which field.
        field: &'static str,
        /// What the view requires.
        expected: String,
        /// What the data holds.
        found: String,
    },
    /// A view needs data that this head was not given.
    #[error("{head}: `{field}` is required by this view but was not provided")]
    Missing {
        /// The head.
        head: HeadId,
        /// The missing input (`attention`, `norms`, `patch`...).
        field: &'static str,
    },
    /// The requested head is not in the data.
    #[error("head {head} is not in the data")]
    UnknownHead {
        /// The head asked for.
        head: HeadId,
    },
    /// The same head appears twice in the data.
    #[error("head {head} is given twice")]
    DuplicateHead {
        /// The repeated head.
        head: HeadId,
    },
    /// The requested sequence is not in the token table.
    #[error("sequence {seq_id} is not in the token table")]
    UnknownSequence {
        /// The sequence asked for.
        seq_id: u32,
    },
    /// A token index outside the token table.
    #[error("token {token} is out of range (the table has {len} tokens)")]
    TokenOutOfRange {
        /// The index given.
        token: usize,
        /// Number of tokens.
        len: usize,
    },
    /// A coordinate is NaN or infinite.
    #[error("{head}: projection row {row} has a non-finite coordinate")]
    NonFinite {
        /// The head.
        head: HeadId,
        /// The joint row.
        row: usize,
    },
    /// A view parameter is out of its domain.
    #[error("parameter `{name}`: {reason}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// The token table is inconsistent (positions, sequence lengths).
    #[error("token table: {0}")]
    Tokens(String),
}
