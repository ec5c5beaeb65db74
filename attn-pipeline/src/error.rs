//! The crate's one error type, and the helpers that attach what was being done to an error.

use crate::corpus::CorpusError;

/// Everything that can go wrong in the pipeline. Messages name the file, flag, tensor or field at
/// fault; [`PipelineError::Context`] adds what was being done (printed before its cause).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the corpus failed.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    /// The model could not be loaded or run.
    #[error(transparent)]
    Extract(#[from] attn_extract::ExtractError),
    /// Normalization failed.
    #[error(transparent)]
    Normalize(#[from] attn_normalize::NormalizeError),
    /// A projection failed.
    #[error(transparent)]
    Project(#[from] attn_project::ProjectError),
    /// The dataset could not be read or written.
    #[error(transparent)]
    Store(#[from] attn_store::StoreError),
    /// Inconsistent shapes or an unparsable name.
    #[error(transparent)]
    Types(#[from] attn_types::TypesError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A JSON document could not be parsed or written.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// An image could not be encoded or decoded.
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// Bad input: the message names the file, flag or field and what is wrong with it.
    #[error("{0}")]
    Input(String),
    /// What was being done when `source` happened.
    #[error("{context}")]
    Context {
        /// What was being done (e.g. `normalizing head L0H3`).
        context: String,
        /// The cause.
        #[source]
        source: Box<PipelineError>,
    },
}

impl PipelineError {
    /// The innermost error, below every [`PipelineError::Context`].
    pub fn root(&self) -> &PipelineError {
        match self {
            PipelineError::Context { source, .. } => source.root(),
            other => other,
        }
    }
}

/// An error and its causes on one line, outermost first, separated by `: `; a cause whose message
/// the line already holds (many errors print their source themselves) is not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let message = e.to_string();
        if !line.contains(&message) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&message);
        }
        next = e.source();
    }
    line.replace('\n', " ")
}

/// Result of the pipeline's functions.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Adds what was being done to an error, as [`PipelineError::Context`].
pub trait Context<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// Wraps the error with a lazily built context.
    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<PipelineError>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            context: context().into(),
            source: Box::new(e.into()),
        })
    }
}

/// A [`PipelineError::Input`] from a format string.
macro_rules! input {
    ($($arg:tt)*) => {
        $crate::error::PipelineError::Input(format!($($arg)*))
    };
}

/// Returns a [`PipelineError::Input`] from a format string.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::PipelineError::Input(format!($($arg)*)))
    };
}

pub(crate) use {bail, input};
