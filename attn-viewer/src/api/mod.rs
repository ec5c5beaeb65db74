//! The viewer's API: every answer is a view computed by attn-viz-core from the dataset, serialized as
//! JSON (the Matrix and Single Views, which hold a point per token and role, as a compact binary
//! frame). The listener, another server and the HTML export share this one entry point.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use attn_store::Dataset;
use attn_types::{ProjectionMethod, Role, TokenTable};
use attn_viz_core::dataset::{HeadTables, ViewData};
use attn_viz_core::{HideTokens, Rgba, Selection, SentenceOptions, display_text, patch_token};
use serde_json::{Value, json};

use crate::error::{ViewerError, dataset_name};

mod files;
mod frame;
mod params;
#[cfg(test)]
mod tests;

use files::{content_type_of, dataset_file, served_file};
pub use frame::{FLAG_IN_SELECTED_SEQUENCE, FLAG_KEY, FLAG_SEARCH_MATCH, FRAME_MAGIC};
use frame::{encode_matrix, encode_single};
pub(crate) use params::{Params, cache_key, parse_query};
use params::{flag, head_param, method_dims, number, view_state};

type Result<T, E = ViewerError> = std::result::Result<T, E>;

/// One answer: HTTP status, content type and body. A server sends it with [`Reply::headers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// MIME type of `body`.
    pub content_type: &'static str,
    /// The bytes (a server answering `HEAD` sends none of them).
    pub body: Vec<u8>,
}

impl Reply {
    fn json(value: &Value) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    fn ok(content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body,
        }
    }

    /// An error as `{"error": message}`.
    fn error(status: u16, message: &str) -> Reply {
        let body = json!({ "error": message }).to_string().into_bytes();
        Reply {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// The response headers: `Content-Type`, plus `Cache-Control: no-store` (the dataset can change
    /// under a running server) and `X-Content-Type-Options: nosniff` (dataset files are served as
    /// they are).
    pub fn headers(&self) -> [(&'static str, &'static str); 3] {
        [
            ("Content-Type", self.content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    }
}

/// The views of one method/dims, loaded once and shared by every request that needs them.
struct Loaded {
    data: ViewData,
    shared: Arc<Shared>,
}

/// What every projection's views share: tokens, attention, norms, diagnostics, patch colors.
struct Shared {
    tables: Arc<HeadTables>,
    patch_colors: Option<Vec<Rgba>>,
}

/// A dataset opened for viewing: answers every request of the viewer page (see the crate's
/// documentation for the paths). A dataset that cannot be opened still gives an `Api`: the page is
/// served and every API request answers 503 with the reason, so the page can say what is wrong.
///
/// Views are loaded on first use and kept (one copy of the tokens and attention however many
/// projections are shown); an `Api` is `Send + Sync`, to be shared by a server's threads.
pub struct Api {
    dir: PathBuf,
    dataset: Result<Dataset>,
    shared: Mutex<Option<Arc<Shared>>>,
    loaded: Mutex<HashMap<(ProjectionMethod, u8), Arc<Loaded>>>,
    /// The [`data_stamp`] the cached views were loaded from.
    stamp: Mutex<DataStamp>,
}

/// Every data file of a dataset (tokens, heads, key heads) with its size and modification time.
type DataStamp = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

/// The [`DataStamp`] of the dataset in `dir`, temporary files left out (they come and go while a
/// process writes; a finished file is renamed into place, which changes the stamp).
fn data_stamp(dir: &Path) -> DataStamp {
    let mut stamp = Vec::new();
    let mut pending = vec![
        dir.join(attn_store::TOKENS_FILE),
        dir.join(attn_store::HEADS_DIR),
        dir.join(attn_store::KEY_HEADS_DIR),
    ];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                    !p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
                }));
            }
        } else {
            stamp.push((path, meta.len(), meta.modified().ok()));
        }
    }
    stamp.sort();
    stamp
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("dir", &self.dir)
            .field("dataset", &self.dataset.as_ref().map(|_| ()))
            .finish()
    }
}

impl Api {
    /// Opens the dataset in `dir`; a failure is kept and reported by every API request.
    pub fn open(dir: impl AsRef<Path>) -> Api {
        let dir = dir.as_ref().to_path_buf();
        let dataset = Dataset::open(&dir).map_err(|source| ViewerError::Open {
            dataset: dir.clone(),
            source: Box::new(source),
        });
        Api::with_dataset(dir, dataset)
    }

    pub(crate) fn with_dataset(dir: PathBuf, dataset: Result<Dataset>) -> Api {
        Api {
            dir,
            dataset,
            shared: Mutex::new(None),
            loaded: Mutex::new(HashMap::new()),
            stamp: Mutex::new(Vec::new()),
        }
    }

    /// The dataset, or why it could not be opened ([`ViewerError::Open`]).
    pub fn dataset(&self) -> Result<&Dataset, &ViewerError> {
        self.dataset.as_ref()
    }

    /// The dataset directory as given.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Answers one request: `method` (`GET` or `HEAD`; others get 405) and `target`, the path with
    /// its query as on the request line (`/api/single?method=tsne&head=L0H1`). Serves the page and its
    /// assets, the API under `/api/` and the dataset's own files under `/files/`; anything else is 404.
    /// Errors are JSON `{"error": message}` naming the parameter or file at fault, with no absolute
    /// path of this machine. The `Host` check is the caller's (see [`AllowedHosts`](crate::AllowedHosts)).
    pub fn handle(&self, method: &str, target: &str) -> Reply {
        if !matches!(method, "GET" | "HEAD") {
            let e = ViewerError::MethodNotAllowed {
                method: method.to_string(),
            };
            return Reply {
                status: e.status(),
                content_type: "text/plain; charset=utf-8",
                body: e.to_string().into_bytes(),
            };
        }
        if target.len() > crate::error::MAX_TARGET_BYTES {
            return self.error_reply(&ViewerError::TargetTooLong {
                bytes: target.len(),
            });
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if let Some((content_type, body)) = crate::asset(path) {
            return Reply::ok(content_type, body.to_vec());
        }
        let result = if let Some(endpoint) = path.strip_prefix("/api/") {
            match &self.dataset {
                Ok(dataset) => self.answer(dataset, endpoint, &parse_query(query)),
                Err(e) => return self.error_reply(e),
            }
        } else if let Some(rel) = path.strip_prefix("/files/") {
            match dataset_file(&self.dir, rel).map(|file| served_file(&file)) {
                Some(Ok(body)) => Ok(Reply::ok(content_type_of(rel), body)),
                _ => Err(ViewerError::NotFound {
                    what: path.to_string(),
                }),
            }
        } else {
            Err(ViewerError::NotFound {
                what: path.to_string(),
            })
        };
        result.unwrap_or_else(|e| self.error_reply(&e))
    }

    /// `e` as a JSON reply, its paths made safe for a client.
    fn error_reply(&self, e: &ViewerError) -> Reply {
        Reply::error(e.status(), &e.client_message(&self.dir))
    }

    /// Answers `/api/<endpoint>?<params>` for the opened `dataset`.
    pub(crate) fn answer(
        &self,
        dataset: &Dataset,
        endpoint: &str,
        params: &Params,
    ) -> Result<Reply> {
        match endpoint {
            "meta" => Ok(Reply::json(&self.meta(dataset)?)),
            "tokens" => Ok(Reply::json(&tokens(dataset)?)),
            "matrix" | "single" | "sentence" | "image" | "similarity" => {
                self.view(dataset, endpoint, params)
            }
            "picture" => picture(dataset, params),
            other => Err(ViewerError::NotFound {
                what: format!("/api/{other}"),
            }),
        }
    }

    /// Drops the cached views when the dataset's files changed since they were loaded (a `project`
    /// or `extract` beside a running server): a view is never drawn from replaced files.
    fn drop_stale_views(&self) {
        let now = data_stamp(&self.dir);
        let mut stamp = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
        if *stamp != now {
            self.loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = None;
            *stamp = now;
        }
    }

    fn load(&self, dataset: &Dataset, method: ProjectionMethod, dims: u8) -> Result<Arc<Loaded>> {
        self.drop_stale_views();
        // A panic while loading leaves the caches as they were (entries are inserted complete).
        let mut cache = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = cache.get(&(method, dims)) {
            return Ok(Arc::clone(l));
        }
        let shared = self.shared(dataset)?;
        let data = ViewData::with_tables(Arc::clone(&shared.tables), dataset, method, dims)?;
        let loaded = Arc::new(Loaded { data, shared });
        cache.insert((method, dims), Arc::clone(&loaded));
        Ok(loaded)
    }

    fn shared(&self, dataset: &Dataset) -> Result<Arc<Shared>> {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = &*shared {
            return Ok(Arc::clone(s));
        }
        let tables = Arc::new(HeadTables::load(dataset, None)?);
        let patch_colors = patch_colors(dataset, &tables)?;
        let s = Arc::new(Shared {
            tables,
            patch_colors,
        });
        *shared = Some(Arc::clone(&s));
        Ok(s)
    }

    fn meta(&self, dataset: &Dataset) -> Result<Value> {
        let model = &dataset.meta().model;
        let tokens = dataset.read_tokens()?;
        let heads = dataset.heads()?;
        let mut projections: BTreeMap<(String, u8), usize> = BTreeMap::new();
        let mut with_attention = 0;
        for &h in &heads {
            for (m, d) in dataset.projections(h) {
                *projections.entry((m.to_string(), d)).or_default() += 1;
            }
            with_attention += usize::from(dataset.has_attention(h));
        }
        let vision = model.architecture.is_vision();
        let encodings = encodings(vision);
        let sequences: Vec<Value> = tokens
            .sequences()
            .iter()
            .map(|s| json!({ "seq_id": s.seq_id, "start": s.start, "len": s.len, "preview": preview(&tokens, s.start, s.len, vision) }))
            .collect();
        Ok(json!({
            "dataset": dataset_name(&self.dir),
            "version": attn_types::VERSION,
            "model": {
                "id": model.id,
                "architecture": model.architecture,
                "num_layers": model.num_layers,
                "num_heads": model.num_heads,
                "head_dim": model.head_dim,
                "num_key_value_heads": model.key_heads(),
                "rope": model.rope,
                "image": model.image,
                "causal": model.architecture.is_causal(),
            },
            "num_tokens": tokens.len(),
            "sequences": sequences,
            "heads": heads,
            "heads_with_attention": with_attention,
            "projections": projections.iter().map(|((m, d), n)| json!({ "method": m, "dims": d, "heads": n })).collect::<Vec<_>>(),
            "encodings": encodings,
            "vision": vision,
        }))
    }

    /// The views: each loads (once) the heads of the requested projection and asks attn-viz-core.
    fn view(&self, dataset: &Dataset, endpoint: &str, params: &Params) -> Result<Reply> {
        let (method, dims) = method_dims(params)?;
        let loaded = self.load(dataset, method, dims)?;
        let model = model_data(&loaded)?;
        let vision = dataset.meta().model.architecture.is_vision();
        let state = || view_state(params, method, dims, vision);
        let binary = |body: Vec<u8>| Reply::ok("application/octet-stream", body);
        let json = |v: Result<Value, serde_json::Error>| {
            v.map(|v| Reply::json(&v)).map_err(ViewerError::encode)
        };
        match endpoint {
            "matrix" => Ok(binary(encode_matrix(attn_viz_core::matrix_view(
                &model,
                &state()?,
            )?)?)),
            "single" => Ok(binary(encode_single(attn_viz_core::single_view(
                &model,
                &state()?,
            )?)?)),
            "sentence" => json(serde_json::to_value(sentence(&loaded, &model, params)?)),
            "image" => {
                let seq = number(params, "seq")?
                    .ok_or_else(|| ViewerError::parameter("seq", "missing (an image id)"))?;
                let mut state = state()?;
                if state.selected.is_none() {
                    let side = loaded.data.model().image.map_or(0, |g| g.grid_side()) as u16;
                    let token = patch_token(loaded.data.tokens(), seq, side / 2, side / 2)
                        .ok_or_else(|| {
                            ViewerError::parameter("seq", format!("no image {seq} in the dataset"))
                        })?;
                    state.selected = Some(Selection {
                        token,
                        role: Role::Query,
                    });
                }
                json(serde_json::to_value(attn_viz_core::image_view(
                    &model, &state, seq,
                )?))
            }
            "similarity" => json(serde_json::to_value(attn_viz_core::head_similarity(
                &model,
            )?)),
            other => Err(ViewerError::NotFound {
                what: format!("/api/{other}"),
            }),
        }
    }
}

/// The color encodings a dataset offers (vision adds the patch encodings).
pub(crate) fn encodings(vision: bool) -> Vec<&'static str> {
    let mut encodings = vec![
        "query_key",
        "normalized_position",
        "discrete_position",
        "norm",
    ];
    if vision {
        encodings.extend(["patch_row", "patch_column", "original_patch"]);
    }
    encodings
}

/// The Sentence View of `head`, `seq` (or the aggregate), hiding `hide_special` / `hidden` tokens.
fn sentence(
    loaded: &Loaded,
    model: &attn_viz_core::ModelData<'_>,
    params: &Params,
) -> Result<attn_viz_core::SentenceView> {
    let head = head_param(params)?;
    let mut opts = SentenceOptions::default();
    if flag(params, "hide_special") {
        opts.hide = HideTokens::for_architecture(loaded.data.model().architecture);
    }
    if let Some(list) = params.get("hidden").filter(|s| !s.is_empty()) {
        opts.hide.positions = list
            .split(',')
            .map(|p| {
                p.trim().parse::<u32>().map_err(|_| {
                    ViewerError::parameter("hidden", format!("`{p}` is not a token position"))
                })
            })
            .collect::<Result<_>>()?;
    }
    opts.focus = number(params, "focus")?;
    Ok(if flag(params, "aggregate") {
        attn_viz_core::aggregate_sentence_view(model, head, &opts)?
    } else {
        let seq = number(params, "seq")?
            .ok_or_else(|| ViewerError::parameter("seq", "missing (a sequence id)"))?;
        attn_viz_core::sentence_view(model, head, seq, &opts)?
    })
}

/// Every token's display text, sequence, position, special flag and patch, column-wise (tooltips,
/// the Image View's patch picking).
fn tokens(dataset: &Dataset) -> Result<Value> {
    let table = dataset.read_tokens()?;
    let t = &table.tokens;
    Ok(json!({
        "text": t.iter().map(|t| display_text(&t.text)).collect::<Vec<_>>(),
        "seq": t.iter().map(|t| t.seq_id).collect::<Vec<_>>(),
        "pos": t.iter().map(|t| t.position).collect::<Vec<_>>(),
        "special": t.iter().map(|t| t.is_special).collect::<Vec<_>>(),
        "patch": t.iter().map(|t| t.patch.map(|p| [p.row, p.col])).collect::<Vec<_>>(),
    }))
}

fn model_data(loaded: &Loaded) -> Result<attn_viz_core::ModelData<'_>> {
    let model = loaded.data.model_data()?;
    Ok(match &loaded.shared.patch_colors {
        Some(c) => model.with_patch_colors(c)?,
        None => model,
    })
}

/// The stored input image of sequence `seq` (PNG), for the Image View.
fn picture(dataset: &Dataset, params: &Params) -> Result<Reply> {
    let seq: u32 = number(params, "seq")?
        .ok_or_else(|| ViewerError::parameter("seq", "missing (an image id)"))?;
    Ok(Reply::ok("image/png", dataset.read_image_png(seq)?))
}

/// The decoded stored image of sequence `seq`.
fn stored_image(dataset: &Dataset, seq: u32) -> Result<image::RgbImage> {
    let png = dataset.read_image_png(seq)?;
    let img = image::load_from_memory(&png).map_err(|source| ViewerError::Image { seq, source })?;
    Ok(img.to_rgb8())
}

/// Mean pixel color of every token's patch (vision datasets with stored images), for the
/// `original_patch` encoding; `None` for text.
fn patch_colors(dataset: &Dataset, data: &HeadTables) -> Result<Option<Vec<Rgba>>> {
    let Some(geometry) = data.model().image else {
        return Ok(None);
    };
    let p = geometry.patch_size;
    let mut images: HashMap<u32, image::RgbImage> = HashMap::new();
    let mut colors = Vec::with_capacity(data.tokens().len());
    for t in &data.tokens().tokens {
        let Some(patch) = t.patch else {
            colors.push(attn_viz_core::NEUTRAL_COLOR);
            continue;
        };
        let img = match images.entry(t.seq_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                if !dataset.has_image(t.seq_id) {
                    return Ok(None);
                }
                e.insert(stored_image(dataset, t.seq_id)?)
            }
        };
        let mut sum = [0u64; 3];
        let mut count = 0u64;
        for y in u32::from(patch.row) * p..(u32::from(patch.row) + 1) * p {
            for x in u32::from(patch.col) * p..(u32::from(patch.col) + 1) * p {
                if let Some(px) = img.get_pixel_checked(x, y) {
                    for (s, v) in sum.iter_mut().zip(px.0) {
                        *s += u64::from(v);
                    }
                    count += 1;
                }
            }
        }
        let mean = |s: u64| (s / count.max(1)) as u8;
        colors.push(Rgba::rgb(mean(sum[0]), mean(sum[1]), mean(sum[2])));
    }
    Ok(Some(colors))
}

/// A readable line for a sequence: its first tokens' text (word-piece markers removed).
fn preview(tokens: &TokenTable, start: usize, len: usize, vision: bool) -> String {
    if vision {
        return format!("image {}", tokens.tokens[start].seq_id);
    }
    let mut out = String::new();
    for t in tokens.tokens[start..start + len]
        .iter()
        .filter(|t| !t.is_special)
    {
        if out.len() > 90 {
            out.push('…');
            break;
        }
        if !out.is_empty() && !t.text.starts_with("##") {
            out.push(' ');
        }
        out.push_str(display_text(&t.text));
    }
    out
}
