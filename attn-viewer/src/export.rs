//! The viewer as one self-contained HTML file. The page, its script and style are inlined, and the
//! answers of [`Api`] for the views a reader opens without a server are embedded (the same bytes the
//! server would send). What needs a live query (search, selecting a point, labels) is left to the
//! server, and the page says so.

use std::collections::BTreeSet;
use std::path::Path;

use attn_store::Dataset;
use attn_types::{HeadId, ProjectionMethod};
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::api::{Api, Params, cache_key, encodings};
use crate::{APP_JS, INDEX_HTML, STYLE_CSS, ViewerError};

/// What an export contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// The projections to include (`None`: t-SNE 2D, else UMAP 2D, else PCA 2D, else the first one).
    pub projections: Option<Vec<(ProjectionMethod, u8)>>,
    /// Sentence and Image views for this many sequences of each head (the first ones).
    pub sequences: usize,
}

impl Default for ExportOptions {
    /// One projection (see [`ExportOptions::projections`]) and 5 sequences.
    fn default() -> Self {
        ExportOptions {
            projections: None,
            sequences: 5,
        }
    }
}

/// Summary of a written export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Embedded answers.
    pub responses: usize,
    /// File size in bytes.
    pub bytes: u64,
}

/// Writes the viewer of the dataset in `dir` as one self-contained HTML file `out` (atomically: a
/// temporary file, then rename). Every embedded view is computed like the server's answer; the first
/// that fails stops the export ([`ViewerError::Embed`], naming the view). A projection in
/// `options.projections` that the dataset lacks is [`ViewerError::MissingProjection`].
pub fn export_html(
    dir: &Path,
    out: &Path,
    options: &ExportOptions,
) -> Result<ExportSummary, ViewerError> {
    let dataset = Dataset::open(dir).map_err(|source| ViewerError::Open {
        dataset: dir.to_path_buf(),
        source: Box::new(source),
    })?;
    let api = Api::with_dataset(dir.to_path_buf(), Ok(dataset.clone()));
    let mut responses = Map::new();
    let mut parts = Parts::default();
    let mut add = |endpoint: &str, params: Params| -> Result<(), ViewerError> {
        let key = cache_key(endpoint, &params);
        let embed_error = |e: ViewerError| ViewerError::Embed {
            dataset: dir.to_path_buf(),
            request: key.clone(),
            source: Box::new(e),
        };
        let reply = api
            .answer(&dataset, endpoint, &params)
            .map_err(embed_error)?;
        let entry = if reply.content_type == "application/json" {
            json!({ "json": serde_json::from_slice::<Value>(&reply.body).map_err(|e| embed_error(ViewerError::encode(e)))? })
        } else if let Some(pieces) = frame_pieces(&reply.body) {
            // A binary frame: its header and each buffer are stored once in `parts` and named by
            // index, so the positions that every color encoding's Matrix View repeats are not.
            let ids: Vec<usize> = pieces.into_iter().map(|p| parts.id(p)).collect();
            json!({ "parts": ids, "type": reply.content_type })
        } else {
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(&reply.body), "type": reply.content_type })
        };
        responses.insert(key, entry);
        Ok(())
    };
    let p = |pairs: &[(&str, String)]| -> Params {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect()
    };

    add("meta", Params::new())?;
    add("tokens", Params::new())?;
    let heads = dataset.heads()?;
    let available: BTreeSet<(ProjectionMethod, u8)> =
        heads.iter().flat_map(|&h| dataset.projections(h)).collect();
    let chosen: Vec<(ProjectionMethod, u8)> = match &options.projections {
        // One projection keeps the file small: t-SNE 2D when there is one (what the page opens).
        None => [
            (ProjectionMethod::Tsne, 2),
            (ProjectionMethod::Umap, 2),
            (ProjectionMethod::Pca, 2),
        ]
        .into_iter()
        .find(|p| available.contains(p))
        .or_else(|| available.iter().next().copied())
        .into_iter()
        .collect(),
        Some(list) => {
            if let Some(&(method, dims)) = list.iter().find(|pd| !available.contains(pd)) {
                return Err(ViewerError::MissingProjection { method, dims });
            }
            list.clone()
        }
    };
    if chosen.is_empty() {
        return Err(ViewerError::NothingToExport {
            dataset: dir.to_path_buf(),
        });
    }
    let vision = dataset.meta().model.architecture.is_vision();
    let encodings = encodings(vision);
    let with_attention = heads.iter().any(|&h| dataset.has_attention(h));
    let seqs: Vec<u32> = dataset
        .read_tokens()?
        .sequences()
        .iter()
        .map(|s| s.seq_id)
        .take(options.sequences)
        .collect();
    for &(method, dims) in &chosen {
        let md = [("method", method.to_string()), ("dims", dims.to_string())];
        for e in &encodings {
            add(
                "matrix",
                p(&[md[0].clone(), md[1].clone(), ("encoding", (*e).to_string())]),
            )?;
        }
        if with_attention {
            add("similarity", p(&md))?;
        }
        for &head in heads
            .iter()
            .filter(|&&h| dataset.has_projection(h, method, dims))
        {
            embed_head(
                &mut add,
                &p,
                &md,
                head,
                dataset.has_attention(head),
                &seqs,
                vision,
            )?;
        }
    }
    if vision {
        for &seq in &seqs {
            add("picture", p(&[("seq", seq.to_string())]))?;
        }
    }
    let count = responses.len();
    let embed = json!({ "responses": responses, "parts": parts.encoded })
        .to_string()
        .replace("</", "<\\/");
    let html = page(&embed);
    attn_store::write_file_atomically(out, html.as_bytes()).map_err(|source| {
        ViewerError::Write {
            path: out.to_path_buf(),
            source: Box::new(source),
        }
    })?;
    Ok(ExportSummary {
        responses: count,
        bytes: html.len() as u64,
    })
}

/// The distinct byte strings of the embedded frames, base64-encoded, in order of first use.
#[derive(Default)]
struct Parts {
    encoded: Vec<String>,
    index: std::collections::HashMap<Vec<u8>, usize>,
}

impl Parts {
    /// The index of `bytes`, stored on first use.
    fn id(&mut self, bytes: &[u8]) -> usize {
        if let Some(&id) = self.index.get(bytes) {
            return id;
        }
        let id = self.encoded.len();
        self.encoded
            .push(base64::engine::general_purpose::STANDARD.encode(bytes));
        self.index.insert(bytes.to_vec(), id);
        id
    }
}

/// A binary frame of the API cut into its prefix (magic, header length, header, padding) and its
/// buffers (each with its padding), whose concatenation is the frame; `None` when `body` is not a
/// well-formed frame (it is then embedded whole).
fn frame_pieces(body: &[u8]) -> Option<Vec<&[u8]>> {
    if body.get(..4)? != crate::FRAME_MAGIC {
        return None;
    }
    let header_len = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?) as usize;
    let header: Value = serde_json::from_slice(body.get(8..8 + header_len)?).ok()?;
    let data = (8 + header_len).div_ceil(4) * 4;
    let mut offsets: Vec<usize> = header["buffers"]
        .as_object()?
        .values()
        .map(|v| v[0].as_u64().map(|o| data + o as usize))
        .collect::<Option<_>>()?;
    offsets.sort_unstable();
    offsets.push(body.len());
    let mut pieces = vec![body.get(..data)?];
    for pair in offsets.windows(2) {
        pieces.push(body.get(pair[0]..pair[1])?);
    }
    Some(pieces)
}

/// The views of one head: its Single View, and with attention its Sentence (or Image) Views.
fn embed_head(
    add: &mut impl FnMut(&str, Params) -> Result<(), ViewerError>,
    p: &impl Fn(&[(&str, String)]) -> Params,
    md: &[(&str, String); 2],
    head: HeadId,
    has_attention: bool,
    seqs: &[u32],
    vision: bool,
) -> Result<(), ViewerError> {
    let h = ("head", head.to_string());
    add(
        "single",
        p(&[
            md[0].clone(),
            md[1].clone(),
            h.clone(),
            ("encoding", "query_key".into()),
        ]),
    )?;
    if !has_attention {
        return Ok(());
    }
    for &seq in seqs {
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
            let mut params = p(&[
                md[0].clone(),
                md[1].clone(),
                h.clone(),
                ("aggregate", "1".into()),
            ]);
            if hide {
                params.insert("hide_special".into(), "1".into());
            }
            add("sentence", params)?;
        }
    }
    Ok(())
}

const STYLE_LINK: &str = r#"<link rel="stylesheet" href="style.css">"#;
const SCRIPT_TAG: &str = r#"<script src="app.js"></script>"#;
const EMBED_MARK: &str = "<!--attnviz:embed-->";

/// The viewer page with its style, script and `embed` (JSON, `</` escaped) inlined. The markers it
/// replaces are checked by this module's tests.
fn page(embed: &str) -> String {
    INDEX_HTML
        .replace(STYLE_LINK, &format!("<style>\n{STYLE_CSS}\n</style>"))
        .replace(
            EMBED_MARK,
            &format!(r#"<script id="attnviz-embed" type="application/json">{embed}</script>"#),
        )
        .replace(SCRIPT_TAG, &format!("<script>\n{APP_JS}\n</script>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::sample;

    #[test]
    fn the_page_has_the_markers_and_no_closing_tags_in_its_assets() {
        for marker in [STYLE_LINK, SCRIPT_TAG, EMBED_MARK] {
            assert_eq!(INDEX_HTML.matches(marker).count(), 1, "{marker}");
        }
        assert!(!APP_JS.contains("</script") && !STYLE_CSS.contains("</style"));
    }

    /// The embedded document of an exported page.
    fn embed(html: &str) -> Value {
        let open = r#"<script id="attnviz-embed" type="application/json">"#;
        let start = html.find(open).expect("embed script") + open.len();
        let len = html[start..].find("</script>").expect("end of embed");
        serde_json::from_str(&html[start..start + len]).expect("embed is JSON")
    }

    /// The embedded responses of an exported page.
    fn embedded(html: &str) -> Map<String, Value> {
        embed(html)["responses"]
            .as_object()
            .expect("responses")
            .clone()
    }

    /// The bytes of a binary response of `embed`, put together from its parts as the page does.
    fn body(embed: &Value, key: &str) -> Vec<u8> {
        let decode = |b64: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_str().unwrap())
                .unwrap()
        };
        let entry = &embed["responses"][key];
        match entry["parts"].as_array() {
            Some(ids) => ids
                .iter()
                .flat_map(|id| decode(&embed["parts"][id.as_u64().unwrap() as usize]))
                .collect(),
            None => decode(&entry["base64"]),
        }
    }

    /// Every binary frame is embedded losslessly (the server's bytes), and the Matrix Views of the
    /// color encodings share their positions.
    #[test]
    fn frames_are_embedded_whole_and_share_their_buffers() {
        let (tmp, dir) = sample();
        let out = tmp.path().join("viewer.html");
        export_html(&dir, &out, &ExportOptions::default()).unwrap();
        let doc = embed(&std::fs::read_to_string(&out).unwrap());
        let dataset = Dataset::open(&dir).unwrap();
        let api = Api::with_dataset(dir.clone(), Ok(dataset.clone()));
        let mut compared = 0;
        for (key, entry) in doc["responses"].as_object().unwrap() {
            if entry["type"] != "application/octet-stream" {
                continue;
            }
            let (endpoint, query) = key.split_once('?').unwrap();
            let params: Params = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect();
            let reply = api.answer(&dataset, endpoint, &params).unwrap();
            assert_eq!(body(&doc, key), reply.body, "{key}");
            compared += 1;
        }
        assert!(compared >= 4 + 4, "{compared} frames");
        let positions: BTreeSet<u64> = doc["responses"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("matrix?"))
            .map(|(_, e)| e["parts"][1].as_u64().unwrap())
            .collect();
        assert_eq!(
            positions.len(),
            1,
            "one positions buffer for every encoding"
        );
    }

    #[test]
    fn export_writes_one_self_contained_file() {
        let (tmp, dir) = sample();
        let out = tmp.path().join("viewer.html");
        let summary = export_html(
            &dir,
            &out,
            &ExportOptions {
                projections: None,
                sequences: 2,
            },
        )
        .unwrap();
        let html = std::fs::read_to_string(&out).unwrap();
        assert_eq!(summary.bytes, html.len() as u64);
        // The assets are inlined, not linked.
        assert!(
            !html.contains(STYLE_LINK) && !html.contains(SCRIPT_TAG) && !html.contains(EMBED_MARK)
        );
        assert!(html.contains(STYLE_CSS.trim()) && html.contains(APP_JS.trim()));
        let responses = embedded(&html);
        assert_eq!(responses.len(), summary.responses);
        assert_eq!(responses["meta?"]["json"]["model"]["id"], "sample");
        assert_eq!(
            responses["tokens?"]["json"]["text"]
                .as_array()
                .unwrap()
                .len(),
            12
        );
        // Default: t-SNE 2D only, every encoding's Matrix View, every head's Single View.
        assert_eq!(
            responses
                .keys()
                .filter(|k| k.starts_with("matrix?"))
                .count(),
            4
        );
        assert!(responses.keys().all(|k| !k.contains("method=pca")));
        let key = "single?dims=2&encoding=query_key&head=L1H0&method=tsne";
        assert_eq!(responses[key]["type"], "application/octet-stream");
        let frame = body(&embed(&html), key);
        assert_eq!(&frame[..4], crate::FRAME_MAGIC);
        // Sentences for 2 sequences and the aggregate, shown and hidden special tokens, per head.
        assert_eq!(
            responses
                .keys()
                .filter(|k| k.starts_with("sentence?"))
                .count(),
            4 * (2 + 1) * 2
        );
        assert!(
            responses.contains_key("sentence?dims=2&head=L0H1&hide_special=1&method=tsne&seq=1")
        );
        assert!(responses.contains_key("similarity?dims=2&method=tsne"));
        // Nothing else is left in the output folder (the write was atomic).
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn export_of_chosen_projections_and_errors() {
        let (tmp, dir) = sample();
        let out = tmp.path().join("v.html");
        let options = ExportOptions {
            projections: Some(vec![(ProjectionMethod::Pca, 3)]),
            sequences: 0,
        };
        export_html(&dir, &out, &options).unwrap();
        let responses = embedded(&std::fs::read_to_string(&out).unwrap());
        assert!(
            responses
                .keys()
                .filter(|k| k.starts_with("matrix?"))
                .all(|k| k.contains("dims=3&") && k.contains("method=pca"))
        );
        assert_eq!(
            responses
                .keys()
                .filter(|k| k.starts_with("sentence?"))
                .count(),
            4 * 2,
            "aggregates only"
        );

        let options = ExportOptions {
            projections: Some(vec![(ProjectionMethod::Umap, 2)]),
            ..ExportOptions::default()
        };
        let e = export_html(&dir, &out, &options).unwrap_err();
        assert!(
            matches!(
                e,
                ViewerError::MissingProjection {
                    method: ProjectionMethod::Umap,
                    dims: 2
                }
            ),
            "{e}"
        );

        let e = export_html(&tmp.path().join("nope"), &out, &ExportOptions::default()).unwrap_err();
        assert!(
            matches!(e, ViewerError::Open { .. }) && e.to_string().contains("nope"),
            "{e}"
        );

        // An unwritable output names the path.
        std::fs::write(tmp.path().join("a-file"), "").unwrap();
        let bad_out = tmp.path().join("a-file").join("v.html");
        let e = export_html(&dir, &bad_out, &ExportOptions::default()).unwrap_err();
        assert!(
            matches!(e, ViewerError::Write { .. }) && e.to_string().contains("a-file/v.html"),
            "{e}"
        );

        // A view that fails names the request.
        let damaged = Dataset::open(&dir)
            .unwrap()
            .attention_path(HeadId::new(1, 1));
        std::fs::write(&damaged, b"PAR1 garbage").unwrap();
        let e = export_html(&dir, &out, &ExportOptions::default()).unwrap_err();
        let ViewerError::Embed { request, .. } = &e else {
            panic!("{e}")
        };
        assert!(request.starts_with("matrix?"), "{request}");
        let file = damaged.file_name().unwrap().to_string_lossy();
        assert!(e.to_string().contains(&*file), "{e}");
    }
}
