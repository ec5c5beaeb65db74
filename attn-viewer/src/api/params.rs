//! Query parameters: parsing, the view state they ask for, and the canonical cache key of a request.

use std::collections::BTreeMap;

use attn_types::{HeadId, ProjectionMethod, Role};
use attn_viz_core::{ColorEncoding, Search, SearchMode, Selection, ViewState};
use serde_json::Value;

use super::{Result, encodings};
use crate::error::ViewerError;

/// Query parameters of one request, sorted by name (the order of the HTML export's cache keys).
pub(crate) type Params = BTreeMap<String, String>;

pub(super) fn flag(params: &Params, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "1" || v == "true")
}

pub(super) fn number<T: std::str::FromStr>(
    params: &Params,
    name: &'static str,
) -> Result<Option<T>> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| ViewerError::parameter(name, format!("`{v}` is not a valid number")))
        })
        .transpose()
}

pub(super) fn head_param(params: &Params) -> Result<HeadId> {
    let h = params
        .get("head")
        .ok_or_else(|| ViewerError::parameter("head", "missing (e.g. L0H0)"))?;
    h.parse::<HeadId>()
        .map_err(|e| ViewerError::parameter("head", e.to_string()))
}

pub(super) fn method_dims(params: &Params) -> Result<(ProjectionMethod, u8)> {
    let method = params
        .get("method")
        .ok_or_else(|| ViewerError::parameter("method", "missing (tsne, umap or pca)"))?;
    let method: ProjectionMethod = method
        .parse()
        .map_err(|e: attn_types::TypesError| ViewerError::parameter("method", e.to_string()))?;
    let dims = number(params, "dims")?.unwrap_or(2u8);
    if !matches!(dims, 2 | 3) {
        return Err(ViewerError::parameter(
            "dims",
            format!("{dims} is not 2 or 3"),
        ));
    }
    Ok((method, dims))
}

/// The view state of a request: `encoding`, `search` (+ `mode=exact`), `head`, the selected `token`
/// with its `role`, `labels`, `size_by_norm`.
pub(super) fn view_state(
    params: &Params,
    method: ProjectionMethod,
    dims: u8,
    vision: bool,
) -> Result<ViewState> {
    let mut state = ViewState {
        method: Some(method),
        dims,
        ..ViewState::default()
    };
    if let Some(e) = params.get("encoding") {
        state.encoding = serde_json::from_value::<ColorEncoding>(Value::String(e.clone()))
            .map_err(|_| {
                ViewerError::parameter(
                    "encoding",
                    format!(
                        "`{e}` is not a color encoding ({})",
                        encodings(vision).join(", ")
                    ),
                )
            })?;
    }
    if let Some(text) = params.get("search").filter(|s| !s.is_empty()) {
        let mode = match params.get("mode").map(String::as_str) {
            Some("exact") => SearchMode::Exact,
            None | Some("substring") => SearchMode::Substring,
            Some(other) => {
                return Err(ViewerError::parameter(
                    "mode",
                    format!("`{other}` is not exact or substring"),
                ));
            }
        };
        state.search = Some(Search {
            text: text.clone(),
            mode,
        });
    }
    if params.contains_key("head") {
        state.head = head_param(params)?;
    }
    if let Some(token) = number::<usize>(params, "token")? {
        let role = match params.get("role").map(String::as_str) {
            None | Some("query") => Role::Query,
            Some("key") => Role::Key,
            Some(other) => {
                return Err(ViewerError::parameter(
                    "role",
                    format!("`{other}` is not query or key"),
                ));
            }
        };
        state.selected = Some(Selection { token, role });
    }
    state.show_labels = flag(params, "labels");
    state.size_by_norm = flag(params, "size_by_norm");
    Ok(state)
}

/// Splits `a=1&b=x%20y` into sorted parameters (percent-decoded, `+` as space).
pub(crate) fn parse_query(query: &str) -> Params {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decodes a URL component (`+` as space); invalid escapes stay as written.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical form of a request (`endpoint?k=v&...`, names sorted, values escaped like
/// JavaScript's `encodeURIComponent`): the key of a response in an exported page.
pub(crate) fn cache_key(endpoint: &str, params: &Params) -> String {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect();
    format!("{endpoint}?{}", query.join("&"))
}

fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
