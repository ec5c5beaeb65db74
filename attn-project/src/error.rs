//! The crate's error type.

/// Everything that can go wrong in attn-project. Each variant names the offending parameter or input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProjectError {
    /// A hyperparameter is out of its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// Parameter name as in the builder (e.g. `perplexity`).
        name: &'static str,
        /// Why it is invalid, with the value.
        reason: String,
    },
    /// The input data cannot be projected.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The fit's [`crate::Interrupt`] was set before it finished.
    #[error("interrupted before the fit finished")]
    Interrupted,
}
