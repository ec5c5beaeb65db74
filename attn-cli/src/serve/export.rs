//! `attnviz export-html`: the viewer as one self-contained HTML file. The page, its script and style
//! are inlined, and the answers of [`Api`] for the views a reader opens without a server are embedded
//! (the same bytes the server would send). What needs a live query (search, selecting a point,
//! labels) is left to `attnviz serve`, and the page says so.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use attn_types::ProjectionMethod;
use base64::Engine;
use serde_json::{Map, Value, json};

use super::api::{Api, Params, cache_key};
use super::{APP_JS, INDEX_HTML, STYLE_CSS};

/// What an export contains.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The projections to include (`None`: t-SNE 2D, else UMAP 2D, else PCA 2D, else the first one).
    pub projections: Option<Vec<(ProjectionMethod, u8)>>,
    /// Sentence and Image views for this many sequences of each head (the first ones).
    pub sequences: usize,
}

/// Summary of a written export.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    /// Embedded answers.
    pub responses: usize,
    /// File size in bytes.
    pub bytes: u64,
}

/// Writes the export of the dataset in `dir` to `out` (atomically: a temporary file, then rename).
pub fn export_html(dir: &Path, out: &Path, options: &ExportOptions) -> Result<ExportSummary> {
    let api = Api::open(dir);
    if let Err(e) = api.dataset() {
        bail!("{}: {e}", dir.display());
    }
    let mut responses = Map::new();
    let mut add = |endpoint: &str, params: Params| -> Result<()> {
        let reply = api.handle(endpoint, &params);
        let key = cache_key(endpoint, &params);
        if reply.status != 200 {
            bail!("{key}: {}", String::from_utf8_lossy(&reply.body));
        }
        let entry = if reply.content_type == "application/json" {
            json!({ "json": serde_json::from_slice::<Value>(&reply.body)? })
        } else {
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(&reply.body), "type": reply.content_type })
        };
        responses.insert(key, entry);
        Ok(())
    };
    let p = |pairs: &[(&str, String)]| -> Params { pairs.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect() };

    let meta_reply = api.handle("meta", &Params::new());
    let meta: Value = serde_json::from_slice(&meta_reply.body).context("reading the dataset summary")?;
    add("meta", Params::new())?;
    add("tokens", Params::new())?;
    let available: BTreeSet<(ProjectionMethod, u8)> = meta["projections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["method"].as_str()?.parse().ok()?, u8::try_from(p["dims"].as_u64()?).ok()?)))
        .collect();
    let chosen: Vec<(ProjectionMethod, u8)> = match &options.projections {
        // One projection keeps the file small: t-SNE 2D when there is one (what the page opens).
        None => [(ProjectionMethod::Tsne, 2), (ProjectionMethod::Umap, 2), (ProjectionMethod::Pca, 2)]
            .into_iter()
            .find(|p| available.contains(p))
            .or_else(|| available.iter().next().copied())
            .into_iter()
            .collect(),
        Some(list) => {
            for pd in list {
                if !available.contains(pd) {
                    bail!("--projection {}:{}: the dataset has no such projection", pd.0, pd.1);
                }
            }
            list.clone()
        }
    };
    if chosen.is_empty() {
        bail!("{}: the dataset has no projection; run `attnviz project` first", dir.display());
    }
    let encodings: Vec<String> = serde_json::from_value(meta["encodings"].clone())?;
    let heads: Vec<attn_types::HeadId> = serde_json::from_value(meta["heads"].clone())?;
    let vision = meta["vision"].as_bool().unwrap_or(false);
    let with_attention = meta["heads_with_attention"].as_u64().unwrap_or(0) > 0;
    let seqs: Vec<u32> = meta["sequences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| u32::try_from(s["seq_id"].as_u64()?).ok())
        .take(options.sequences)
        .collect();
    let api_dataset = api.dataset().map_err(|e| anyhow::anyhow!("{e}"))?;
    for &(method, dims) in &chosen {
        let md = [("method", method.to_string()), ("dims", dims.to_string())];
        for e in &encodings {
            add("matrix", p(&[md[0].clone(), md[1].clone(), ("encoding", e.clone())]))?;
        }
        if with_attention {
            add("similarity", p(&md))?;
        }
        for &head in heads.iter().filter(|&&h| api_dataset.has_projection(h, method, dims)) {
            let h = ("head", head.to_string());
            add("single", p(&[md[0].clone(), md[1].clone(), h.clone(), ("encoding", "query_key".into())]))?;
            if !api_dataset.has_attention(head) {
                continue;
            }
            for &seq in &seqs {
                let s = ("seq", seq.to_string());
                if vision {
                    add("image", p(&[md[0].clone(), md[1].clone(), h.clone(), s]))?;
                } else {
                    for hide in [false, true] {
                        let mut params = p(&[md[0].clone(), md[1].clone(), h.clone(), s.clone()]);
                        if hide {
                            params.insert("hide_special".into(), "1".into());
                        }
                        add("sentence", params)?;
                    }
                }
            }
            if !vision {
                for hide in [false, true] {
                    let mut params = p(&[md[0].clone(), md[1].clone(), h.clone(), ("aggregate", "1".into())]);
                    if hide {
                        params.insert("hide_special".into(), "1".into());
                    }
                    add("sentence", params)?;
                }
            }
        }
    }
    if vision {
        for &seq in &seqs {
            add("picture", p(&[("seq", seq.to_string())]))?;
        }
    }
    let count = responses.len();
    let embed = json!({ "responses": responses }).to_string().replace("</", "<\\/");
    let html = page(&embed)?;
    crate::render::canvas::write_atomically(out, html.as_bytes())?;
    Ok(ExportSummary { responses: count, bytes: html.len() as u64 })
}

/// The viewer page with its style, script and `embed` (JSON) inlined.
fn page(embed: &str) -> Result<String> {
    const STYLE_LINK: &str = r#"<link rel="stylesheet" href="style.css">"#;
    const SCRIPT_TAG: &str = r#"<script src="app.js"></script>"#;
    const EMBED_MARK: &str = "<!--attnviz:embed-->";
    for marker in [STYLE_LINK, SCRIPT_TAG, EMBED_MARK] {
        if !INDEX_HTML.contains(marker) {
            bail!("the viewer page lacks `{marker}` (a build defect)");
        }
    }
    if APP_JS.contains("</script") || STYLE_CSS.contains("</style") {
        bail!("the viewer's script or style contains a closing tag (a build defect)");
    }
    Ok(INDEX_HTML
        .replace(STYLE_LINK, &format!("<style>\n{STYLE_CSS}\n</style>"))
        .replace(EMBED_MARK, &format!(r#"<script id="attnviz-embed" type="application/json">{embed}</script>"#))
        .replace(SCRIPT_TAG, &format!("<script>\n{APP_JS}\n</script>")))
}
