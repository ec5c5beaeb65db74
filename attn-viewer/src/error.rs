//! The one error type of the crate, its HTTP status, and the message a client may see.

use std::path::{Path, PathBuf};

use attn_store::StoreError;
use attn_types::ProjectionMethod;
use attn_viz_core::VizError;
use attn_viz_core::dataset::LoadError;

/// The longest request target (path and query) answered; longer ones get 414. The viewer's own
/// requests stay far below (a search box's text, a list of hidden token positions).
pub const MAX_TARGET_BYTES: usize = 8 * 1024;

/// The longest error message sent to a client, in characters: what it echoes of the request is cut.
const MAX_CLIENT_MESSAGE_CHARS: usize = 300;

/// Everything that can go wrong answering a request, exporting a page or starting the listener.
///
/// [`Display`](std::fmt::Display) gives the full message, absolute paths included, for the local user
/// (a terminal, a log). What [`Api::handle`](crate::Api::handle) sends to a client is the same message
/// with the dataset's paths made relative to it and any other absolute path cut to its file name.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    /// The dataset could not be opened (missing directory, unreadable or invalid `meta.json`).
    #[error("cannot open dataset {}: {source}", dataset.display())]
    Open {
        /// The dataset directory as given.
        dataset: PathBuf,
        /// Why.
        source: Box<StoreError>,
    },
    /// A dataset file could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The views' input could not be loaded from the dataset.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The view model rejected the request (unknown head or sequence, token out of range, ...).
    #[error(transparent)]
    View(#[from] VizError),
    /// A request parameter is missing or invalid.
    #[error("{name}: {message}")]
    Parameter {
        /// The query parameter (`method`, `dims`, `head`, `seq`, ...).
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No such page, endpoint or dataset file.
    #[error("not found: {what}")]
    NotFound {
        /// The request path.
        what: String,
    },
    /// A request target (path and query) longer than [`MAX_TARGET_BYTES`].
    #[error(
        "the request's path and query are {bytes} bytes, more than the {MAX_TARGET_BYTES} this server reads"
    )]
    TargetTooLong {
        /// The target's length.
        bytes: usize,
    },
    /// An HTTP method other than GET or HEAD.
    #[error("only GET and HEAD are supported, not {method}")]
    MethodNotAllowed {
        /// The method of the request.
        method: String,
    },
    /// The stored input image of a sequence could not be decoded.
    #[error("the stored image of sequence {seq} is not a readable PNG: {source}")]
    Image {
        /// The sequence (image id).
        seq: u32,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// A reply could not be serialized.
    #[error("encoding the reply: {0}")]
    Encode(String),
    /// An export asked for a projection the dataset does not have.
    #[error("the dataset has no {method} {dims}D projection")]
    MissingProjection {
        /// The requested method.
        method: ProjectionMethod,
        /// The requested dimensions.
        dims: u8,
    },
    /// An export of a dataset that has no projection at all.
    #[error("{}: the dataset has no projection; run `attnviz project` first", dataset.display())]
    NothingToExport {
        /// The dataset directory.
        dataset: PathBuf,
    },
    /// One of the views an export embeds could not be computed.
    #[error("exporting {}: view `{request}`: {source}", dataset.display())]
    Embed {
        /// The dataset directory.
        dataset: PathBuf,
        /// The request of the view (`endpoint?params`).
        request: String,
        /// Why it failed.
        source: Box<ViewerError>,
    },
    /// The export could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// Why.
        source: Box<StoreError>,
    },
    /// The listener could not bind its address (feature `server`).
    #[cfg(feature = "server")]
    #[error("cannot listen on {addr}: {message}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The operating system's reason.
        message: String,
    },
}

impl ViewerError {
    /// The HTTP status of this error as a reply: 503 when the dataset cannot be opened, 404 for
    /// unknown paths, 405 for methods other than GET/HEAD, 500 for encoding failures and 400 for the
    /// rest (bad parameters and data the request cannot be answered from, as the viewer always did).
    pub fn status(&self) -> u16 {
        match self {
            ViewerError::Open { .. } => 503,
            ViewerError::NotFound { .. } => 404,
            ViewerError::MethodNotAllowed { .. } => 405,
            ViewerError::TargetTooLong { .. } => 414,
            ViewerError::Encode(_) => 500,
            _ => 400,
        }
    }

    pub(crate) fn parameter(name: &'static str, message: impl Into<String>) -> Self {
        ViewerError::Parameter {
            name,
            message: message.into(),
        }
    }

    pub(crate) fn encode(e: impl std::fmt::Display) -> Self {
        ViewerError::Encode(e.to_string())
    }

    /// The message for a client of the dataset in `dir`: no absolute path of this machine, and at
    /// most [`MAX_CLIENT_MESSAGE_CHARS`] characters (a request's own path or value is echoed cut).
    pub(crate) fn client_message(&self, dir: &Path) -> String {
        let message = match self {
            // These hold only the request's own path, which is not a file-system path.
            ViewerError::NotFound { .. } | ViewerError::MethodNotAllowed { .. } => self.to_string(),
            _ => scrub_paths(&self.to_string(), dir),
        };
        match message.char_indices().nth(MAX_CLIENT_MESSAGE_CHARS) {
            Some((cut, _)) => format!("{}…", &message[..cut]),
            None => message,
        }
    }
}

/// A short name for the dataset in messages: its directory's name.
pub(crate) fn dataset_name(dir: &Path) -> String {
    let named = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    named(dir)
        .or_else(|| dir.canonicalize().ok().as_deref().and_then(named))
        .or_else(|| std::path::absolute(dir).ok().as_deref().and_then(named))
        .unwrap_or_else(|| "dataset".to_string())
}

/// Characters after which a path may start in a message.
fn starts_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '(' | '[' | '=' | '<')
}

/// Characters that end a path in a message.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, ':' | '`' | '"' | '\'' | ')' | ']' | ',' | ';' | '>')
}

/// Rewrites `message` for a client: paths inside the dataset `dir` (as given, absolute or canonical)
/// become relative to it, the directory itself becomes its name, and any other absolute path is cut
/// to its last component.
pub(crate) fn scrub_paths(message: &str, dir: &Path) -> String {
    let name = dataset_name(dir);
    let mut prefixes: Vec<String> = Vec::new();
    for p in [
        Some(dir.to_path_buf()),
        std::path::absolute(dir).ok(),
        dir.canonicalize().ok(),
    ]
    .into_iter()
    .flatten()
    {
        let s = p.to_string_lossy();
        let s = s.trim_end_matches(['/', std::path::MAIN_SEPARATOR]);
        if !s.is_empty() && s != "." && !prefixes.iter().any(|q| q == s) {
            prefixes.push(s.to_string());
        }
    }
    prefixes.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = message.to_string();
    for prefix in &prefixes {
        out = replace_prefix(&out, prefix, &name);
    }
    cut_absolute_paths(&out)
}

/// Replaces `prefix/` by nothing and a lone `prefix` by `name`, where `prefix` starts a token.
fn replace_prefix(text: &str, prefix: &str, name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    while !rest.is_empty() {
        if prev.is_none_or(starts_token) && rest.starts_with(prefix) {
            let after = &rest[prefix.len()..];
            let next = after.chars().next();
            if next == Some('/') || next == Some(std::path::MAIN_SEPARATOR) {
                rest = &after[1..];
                prev = Some('/');
                continue;
            }
            if next.is_none_or(ends_token) {
                out.push_str(name);
                rest = after;
                prev = name.chars().last();
                continue;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        prev = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Cuts every absolute path (`/a/b/c`, `C:\a\b`) that starts a token to its last component.
fn cut_absolute_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    while !rest.is_empty() {
        let bytes = rest.as_bytes();
        let unix = bytes[0] == b'/';
        let windows = bytes.len() > 2
            && bytes[0].is_ascii_alphabetic()
            && bytes[1] == b':'
            && bytes[2] == b'\\';
        if prev.is_none_or(starts_token) && (unix || windows) {
            let skip = if windows { 2 } else { 0 };
            let len = rest[skip..]
                .find(ends_token)
                .map_or(rest.len(), |i| i + skip);
            let path = &rest[..len];
            let last = path
                .rsplit(['/', '\\'])
                .find(|c| !c.is_empty())
                .unwrap_or("");
            out.push_str(if last.is_empty() { "…" } else { last });
            prev = out.chars().last();
            rest = &rest[len..];
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        prev = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_paths_become_relative_and_others_are_cut() {
        let dir = Path::new("/data/runs/bert");
        let msg = "/data/runs/bert/heads/L0H0/vectors.parquet: not readable; `/data/runs/bert` (see /etc/x.conf)";
        assert_eq!(
            scrub_paths(msg, dir),
            "heads/L0H0/vectors.parquet: not readable; `bert` (see x.conf)"
        );
        // A path that merely shares the prefix is not the dataset.
        assert_eq!(scrub_paths("/data/runs/bertie/a.txt", dir), "a.txt");
        // Relative dataset paths also become relative to the dataset; other words are untouched.
        assert_eq!(
            scrub_paths("ds/meta.json: bad; words/ds/x", Path::new("ds")),
            "meta.json: bad; words/ds/x"
        );
        assert_eq!(
            scrub_paths("cannot open dataset /", Path::new("/x")),
            "cannot open dataset …"
        );
        assert_eq!(
            scrub_paths(r"C:\Users\me\ds\meta.json: gone", Path::new("/x")),
            "meta.json: gone"
        );
        assert_eq!(
            scrub_paths("see http://host/x and 1/2", Path::new("/x")),
            "see http://host/x and 1/2"
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(ViewerError::parameter("dims", "bad").status(), 400);
        assert_eq!(ViewerError::NotFound { what: "/x".into() }.status(), 404);
        assert_eq!(
            ViewerError::MethodNotAllowed {
                method: "POST".into()
            }
            .status(),
            405
        );
        let open = ViewerError::Open {
            dataset: "/a/b".into(),
            source: Box::new(StoreError::NotFound {
                path: "/a/b/meta.json".into(),
                what: "metadata".into(),
            }),
        };
        assert_eq!(open.status(), 503);
        assert_eq!(
            open.client_message(Path::new("/a/b")),
            "cannot open dataset b: meta.json: metadata does not exist"
        );
        assert_eq!(
            ViewerError::parameter("dims", "4 is not 2 or 3").to_string(),
            "dims: 4 is not 2 or 3"
        );
    }
}
