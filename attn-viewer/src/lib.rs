#![doc = include_str!("../README.md")]

mod api;
mod error;
mod export;
mod host;
#[cfg(feature = "server")]
mod server;

pub use api::{Api, FLAG_IN_SELECTED_SEQUENCE, FLAG_KEY, FLAG_SEARCH_MATCH, FRAME_MAGIC, Reply};
pub use error::ViewerError;
pub use export::{ExportOptions, ExportSummary, export_html};
pub use host::AllowedHosts;
#[cfg(feature = "server")]
pub use server::Viewer;

/// The viewer page, compiled into the crate; served at `/` and `/index.html`.
pub const INDEX_HTML: &str = include_str!("../assets/web/index.html");
/// The viewer's script, served at `/app.js`.
pub const APP_JS: &str = include_str!("../assets/web/app.js");
/// The viewer's style sheet, served at `/style.css`.
pub const STYLE_CSS: &str = include_str!("../assets/web/style.css");

/// The page asset served at `path` (`/`, `/index.html`, `/app.js`, `/style.css`), with its content
/// type; `None` for any other path.
///
/// ```
/// let (content_type, body) = attn_viewer::asset("/app.js").unwrap();
/// assert_eq!(content_type, "text/javascript; charset=utf-8");
/// assert_eq!(body, attn_viewer::APP_JS.as_bytes());
/// assert!(attn_viewer::asset("/secret").is_none());
/// ```
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML.as_bytes())),
        "/app.js" => Some(("text/javascript; charset=utf-8", APP_JS.as_bytes())),
        "/style.css" => Some(("text/css; charset=utf-8", STYLE_CSS.as_bytes())),
        _ => None,
    }
}

/// A sample dataset for the unit tests of every module.
#[cfg(test)]
pub(crate) mod testutil {
    use attn_store::sample::{SampleSpec, write_sample_dataset};

    /// A temporary directory holding the default sample dataset in `ds/` (2 x 2 heads, 12 tokens in
    /// 3 sentences, t-SNE 2D and PCA 3D).
    pub fn sample() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let dir = tmp.path().join("ds");
        write_sample_dataset(&dir, &SampleSpec::default()).expect("sample dataset");
        (tmp, dir)
    }
}
