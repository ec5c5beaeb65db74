//! The one error type of the crate.

use std::path::{Path, PathBuf};

use attn_store::StoreError;
use attn_viz_core::VizError;
use attn_viz_core::dataset::LoadError;

use crate::Format;

/// Everything that can go wrong drawing, encoding or writing a figure. Every message names the file
/// (the figure written, or the dataset read); an error of an in-memory encoding, before any file is
/// involved, says `in-memory figure` instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// Writing the figure file failed (its directory could not be created, the disk is full...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dataset's views could not be loaded (a missing or corrupt file, no such projection).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The view could not be computed from the dataset's data.
    #[error("{}: computing the {view}: {source}", dataset.display())]
    View {
        /// The dataset directory.
        dataset: PathBuf,
        /// Which view (e.g. `Matrix View`).
        view: &'static str,
        /// The underlying error.
        source: VizError,
    },
    /// The figure is too large (or empty) for a raster image.
    #[error("{}: cannot allocate a {width}x{height} image", target(path.as_deref()))]
    CanvasSize {
        /// The file being written (`None` for an in-memory encoding).
        path: Option<PathBuf>,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The encoder failed.
    #[error("{}: cannot encode the figure as {format}: {message}", target(path.as_deref()))]
    Encode {
        /// The file being written (`None` for an in-memory encoding).
        path: Option<PathBuf>,
        /// The format asked for.
        format: Format,
        /// What the encoder reported.
        message: String,
    },
    /// The output file's extension names no supported format.
    #[error("{}: the output must end in .png or .svg", path.display())]
    UnsupportedExtension {
        /// The output file.
        path: PathBuf,
    },
}

fn target(path: Option<&Path>) -> String {
    path.map_or_else(
        || "in-memory figure".to_string(),
        |p| p.display().to_string(),
    )
}

impl RenderError {
    /// Names `path` in an error of an in-memory encoding (the file it was meant for).
    pub(crate) fn at(mut self, file: &Path) -> Self {
        if let RenderError::CanvasSize { path, .. } | RenderError::Encode { path, .. } = &mut self {
            path.get_or_insert_with(|| file.to_path_buf());
        }
        self
    }
}
