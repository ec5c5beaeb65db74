//! The crate's error type.

use attn_types::HeadId;

/// Everything that can go wrong while normalizing a head.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NormalizeError {
    /// The head has no tokens (or zero-dimensional vectors).
    #[error("head {head}: no query/key vectors to normalize ({rows} rows x {cols} dims)")]
    EmptyHead {
        /// The offending head.
        head: HeadId,
        /// Number of rows found.
        rows: usize,
        /// Number of columns found.
        cols: usize,
    },
    /// A query or key value is NaN or infinite.
    #[error("head {head}: {matrix} row {row} holds a non-finite value ({value})")]
    NonFinite {
        /// The offending head.
        head: HeadId,
        /// `queries` or `keys`.
        matrix: &'static str,
        /// Row (token index) of the first bad value.
        row: usize,
        /// The bad value.
        value: f32,
    },
    /// Two sizes that must agree do not (queries vs keys vs tokens vs translation).
    #[error("head {head}: {what}: expected {expected}, found {found}")]
    DimMismatch {
        /// The offending head.
        head: HeadId,
        /// What disagrees, e.g. `key rows vs query rows`.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size found.
        found: usize,
    },
    /// No query in any sequence can attend to two or more keys, so there is nothing to correlate
    /// (e.g. every sequence has length 1).
    #[error(
        "head {head}: no informative query-key pairs among {tokens} tokens in {sequences} sequences \
         (every query sees fewer than 2 keys; sequences of length 1?)"
    )]
    NoPairs {
        /// The offending head.
        head: HeadId,
        /// Number of tokens.
        tokens: usize,
        /// Number of sequences.
        sequences: usize,
    },
    /// A parameter is out of its valid range.
    #[error("invalid parameter `{param}`: {reason}")]
    InvalidParam {
        /// Parameter name, as its setter is named.
        param: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}
