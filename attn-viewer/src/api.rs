//! The viewer's API: every answer is a view computed by attn-viz-core from the dataset, serialized as
//! JSON (the Matrix and Single Views, which hold a point per token and role, as a compact binary
//! frame). The listener, another server and the HTML export share this one entry point.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use attn_store::Dataset;
use attn_types::{HeadId, ProjectionMethod, Role, TokenTable};
use attn_viz_core::dataset::{HeadTables, ViewData};
use attn_viz_core::{
    ColorEncoding, HideTokens, MatrixView, Rgba, Search, SearchMode, Selection, SentenceOptions,
    ViewState, display_text, patch_token,
};
use serde_json::{Value, json};

use crate::error::{ViewerError, dataset_name};

type Result<T, E = ViewerError> = std::result::Result<T, E>;

/// Query parameters of one request, sorted by name (the order of the HTML export's cache keys).
pub(crate) type Params = BTreeMap<String, String>;

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
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("dir", &self.dir)
            .field("dataset", &self.dataset.as_ref().map(|_| ()))
            .finish()
    }
}

/// Magic bytes that open a binary frame (`/api/matrix`, `/api/single`): then a little-endian `u32`
/// header length, a JSON header whose `buffers` maps each buffer's name to `[offset, bytes]` (offsets
/// from the end of the header padded to 4 bytes), then the buffers, each padded to 4 bytes.
pub const FRAME_MAGIC: &[u8; 4] = b"AVF1";

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
            match dataset_file(&self.dir, rel).map(std::fs::read) {
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

    fn load(&self, dataset: &Dataset, method: ProjectionMethod, dims: u8) -> Result<Arc<Loaded>> {
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

/// A binary answer: `AVF1`, a little-endian `u32` header length, a JSON header, then the named
/// buffers, each starting at a multiple of 4 bytes. The header gets `buffers: { name: [offset, bytes] }`
/// with offsets counted from the end of the (padded) header. Views with one entry per point use it, so
/// that 144 heads x 20k points load in a browser without parsing millions of JSON numbers.
struct Frame {
    header: Value,
    buffers: Vec<(&'static str, Vec<u8>)>,
}

impl Frame {
    fn encode(mut self) -> Result<Vec<u8>> {
        let mut table = serde_json::Map::new();
        let mut offset = 0usize;
        for (name, data) in &self.buffers {
            table.insert((*name).into(), json!([offset, data.len()]));
            offset += data.len().div_ceil(4) * 4;
        }
        if let Some(o) = self.header.as_object_mut() {
            o.insert("buffers".into(), Value::Object(table));
        }
        let header = self.header.to_string().into_bytes();
        let mut out = Vec::with_capacity(8 + header.len() + 3 + offset);
        out.extend_from_slice(FRAME_MAGIC);
        out.extend_from_slice(
            &u32::try_from(header.len())
                .map_err(ViewerError::encode)?
                .to_le_bytes(),
        );
        out.extend_from_slice(&header);
        pad4(&mut out);
        for (_, data) in &self.buffers {
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        Ok(out)
    }
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(4) * 4, 0);
}

fn f32_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(f32::to_le_bytes).collect()
}

/// View positions (always in `[0, 1]`) as `u16` fixed point, 1/65535 of a view: half the bytes of
/// f32 and far finer than any screen; WebGL reads them as normalized attributes directly.
fn position_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values
        .flat_map(|v| ((v.clamp(0.0, 1.0) * 65535.0).round() as u16).to_le_bytes())
        .collect()
}

/// The Matrix View as a [`Frame`]: the view without its point arrays (each cell gets `offset` and
/// `count` into them), buffers `positions` (`u16 x 3` per point, fixed point) and `colors` (`u8 x 4`).
fn encode_matrix(mut view: MatrixView) -> Result<Vec<u8>> {
    let total: usize = view.cells.iter().map(|c| c.positions.len()).sum();
    let mut positions = Vec::with_capacity(total * 6);
    let mut colors = Vec::with_capacity(total * 4);
    let mut cells = Vec::with_capacity(view.cells.len());
    let mut offset = 0usize;
    for cell in &mut view.cells {
        let count = cell.positions.len();
        positions.extend(position_bytes(cell.positions.drain(..).flatten()));
        colors.extend(cell.colors.drain(..).flat_map(|c| c.0));
        cell.patches.clear();
        let mut v = serde_json::to_value(&*cell).map_err(ViewerError::encode)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("offset".into(), json!(offset));
            o.insert("count".into(), json!(count));
        }
        cells.push(v);
        offset += count;
    }
    view.cells.clear();
    let mut header = serde_json::to_value(&view).map_err(ViewerError::encode)?;
    if let Some(o) = header.as_object_mut() {
        o.insert("cells".into(), Value::Array(cells));
        o.insert("points".into(), json!(total));
    }
    Frame {
        header,
        buffers: vec![("positions", positions), ("colors", colors)],
    }
    .encode()
}

/// Flag bit of a Single View point in its `flags` buffer: the point matches the search.
pub const FLAG_SEARCH_MATCH: u8 = 1;
/// The point belongs to the selected point's sequence.
pub const FLAG_IN_SELECTED_SEQUENCE: u8 = 2;
/// The point is a key (otherwise a query).
pub const FLAG_KEY: u8 = 4;

/// The Single View as a [`Frame`]: the view without `points`, buffers `positions` (`u16 x 3`, fixed point),
/// `colors` (`u8 x 4`), `sizes` (`f32`), `tokens` (`u32`) and `flags` (`u8`, the `FLAG_*` bits).
fn encode_single(mut view: attn_viz_core::SingleView) -> Result<Vec<u8>> {
    let points = std::mem::take(&mut view.points);
    let mut header = serde_json::to_value(&view).map_err(ViewerError::encode)?;
    if let Some(o) = header.as_object_mut() {
        o.insert("count".into(), json!(points.len()));
    }
    let flags = points
        .iter()
        .map(|p| {
            let bit = |on: bool, flag: u8| if on { flag } else { 0 };
            bit(p.search_match, FLAG_SEARCH_MATCH)
                | bit(p.in_selected_sequence, FLAG_IN_SELECTED_SEQUENCE)
                | bit(p.role == Role::Key, FLAG_KEY)
        })
        .collect();
    let buffers = vec![
        (
            "positions",
            position_bytes(points.iter().flat_map(|p| p.position)),
        ),
        ("colors", points.iter().flat_map(|p| p.color.0).collect()),
        ("sizes", f32_bytes(points.iter().map(|p| p.size))),
        (
            "tokens",
            points.iter().flat_map(|p| p.token.to_le_bytes()).collect(),
        ),
        ("flags", flags),
    ];
    Frame { header, buffers }.encode()
}

fn flag(params: &Params, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "1" || v == "true")
}

fn number<T: std::str::FromStr>(params: &Params, name: &'static str) -> Result<Option<T>> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| ViewerError::parameter(name, format!("`{v}` is not a valid number")))
        })
        .transpose()
}

fn head_param(params: &Params) -> Result<HeadId> {
    let h = params
        .get("head")
        .ok_or_else(|| ViewerError::parameter("head", "missing (e.g. L0H0)"))?;
    h.parse::<HeadId>()
        .map_err(|e| ViewerError::parameter("head", e.to_string()))
}

fn method_dims(params: &Params) -> Result<(ProjectionMethod, u8)> {
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
fn view_state(
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

/// Resolves `/files/<rel>` inside the dataset directory: only plain relative paths to regular files
/// that stay inside the directory (no `..`, no absolute paths, no symlink leaving it).
pub(crate) fn dataset_file(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = percent_decode(rel);
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return None;
    }
    let rel_path = Path::new(&rel);
    if !rel_path
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let root = dir.canonicalize().ok()?;
    let full = root.join(rel_path).canonicalize().ok()?;
    (full.starts_with(&root) && full.is_file()).then_some(full)
}

/// The content type of a dataset file served under `/files/`.
fn content_type_of(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::sample;

    fn get(api: &Api, target: &str) -> Reply {
        api.handle("GET", target)
    }

    fn json_of(reply: &Reply) -> Value {
        assert_eq!(reply.content_type, "application/json");
        serde_json::from_slice(&reply.body).expect("a JSON body")
    }

    /// The error message of a reply with `status`.
    fn error_of(reply: &Reply, status: u16) -> String {
        assert_eq!(
            reply.status,
            status,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        json_of(reply)["error"]
            .as_str()
            .expect("an error message")
            .to_string()
    }

    /// A decoded binary frame: its header and named buffers.
    fn frame(reply: &Reply) -> (Value, BTreeMap<String, Vec<u8>>) {
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.content_type, "application/octet-stream");
        let b = &reply.body;
        assert_eq!(&b[..4], FRAME_MAGIC);
        let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&b[8..8 + len]).unwrap();
        let data = &b[(8 + len).div_ceil(4) * 4..];
        let buffers = header["buffers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, at)| {
                let (offset, bytes) = (
                    at[0].as_u64().unwrap() as usize,
                    at[1].as_u64().unwrap() as usize,
                );
                assert_eq!(offset % 4, 0);
                (name.clone(), data[offset..offset + bytes].to_vec())
            })
            .collect();
        (header, buffers)
    }

    /// No absolute path of this machine in a client-facing body.
    fn assert_no_absolute_path(body: &[u8], tmp: &Path) {
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains(&*tmp.to_string_lossy()), "{text}");
        if let Ok(canonical) = tmp.canonicalize() {
            assert!(!text.contains(&*canonical.to_string_lossy()), "{text}");
        }
        for word in text.split(|c: char| c.is_whitespace() || "\"'`(:".contains(c)) {
            assert!(
                !word.starts_with('/') || word.starts_with("/api/"),
                "`{word}` in {text}"
            );
        }
    }

    #[test]
    fn meta_describes_the_dataset() {
        let (_tmp, dir) = sample();
        let api = Api::open(&dir);
        let meta = json_of(&get(&api, "/api/meta"));
        assert_eq!(meta["dataset"], "ds");
        assert_eq!(meta["model"]["id"], "sample");
        assert_eq!(meta["model"]["architecture"], "bert");
        assert_eq!(meta["num_tokens"], 12);
        assert_eq!(meta["heads"].as_array().unwrap().len(), 4);
        assert_eq!(meta["heads_with_attention"], 4);
        assert_eq!(meta["sequences"].as_array().unwrap().len(), 3);
        assert_eq!(meta["sequences"][1]["preview"], "w1_1 w1_2");
        assert_eq!(
            meta["projections"],
            json!([{ "method": "pca", "dims": 3, "heads": 4 }, { "method": "tsne", "dims": 2, "heads": 4 }])
        );
        assert_eq!(
            meta["encodings"].as_array().unwrap().len(),
            4,
            "text: no patch encodings"
        );
        assert_eq!(meta["vision"], false);
    }

    #[test]
    fn tokens_are_column_wise() {
        let (_tmp, dir) = sample();
        let t = json_of(&get(&Api::open(&dir), "/api/tokens"));
        assert_eq!(t["text"].as_array().unwrap().len(), 12);
        assert_eq!(t["text"][0], "[CLS]");
        assert_eq!(t["text"][6], "w1_1");
        assert_eq!(t["seq"][6], 1);
        assert_eq!(t["pos"][6], 1);
        assert_eq!(t["special"][5], true);
        assert_eq!(t["patch"][0], Value::Null);
    }

    #[test]
    fn matrix_frame_holds_two_points_per_token_per_head() {
        let (_tmp, dir) = sample();
        let api = Api::open(&dir);
        for (target, dims) in [
            ("/api/matrix?method=tsne&dims=2", 2),
            ("/api/matrix?method=pca&dims=3&encoding=norm", 3),
        ] {
            let (header, buffers) = frame(&get(&api, target));
            let cells = header["cells"].as_array().unwrap();
            assert_eq!(cells.len(), 4);
            assert_eq!(header["dims"], dims);
            let mut offset = 0;
            for cell in cells {
                assert_eq!(
                    cell["count"],
                    2 * 12,
                    "{target}: a query and a key point per token"
                );
                assert_eq!(cell["offset"], offset);
                offset += 24;
            }
            assert_eq!(header["points"], 4 * 24);
            assert_eq!(
                buffers["positions"].len(),
                4 * 24 * 3 * 2,
                "u16 x 3 per point"
            );
            assert_eq!(buffers["colors"].len(), 4 * 24 * 4, "RGBA per point");
        }
        // A search counts its matches.
        let (header, _) = frame(&get(
            &api,
            "/api/matrix?method=tsne&search=w1_&mode=substring",
        ));
        assert_eq!(header["matched_tokens"], 2, "w1_1 and w1_2");
    }

    #[test]
    fn single_frame_has_every_point_with_flags() {
        let (_tmp, dir) = sample();
        let api = Api::open(&dir);
        let (header, buffers) = frame(&get(
            &api,
            "/api/single?method=tsne&dims=2&head=L1H0&token=6&role=key",
        ));
        assert_eq!(header["count"], 24);
        assert_eq!(header["head"], json!({ "layer": 1, "head": 0 }));
        assert_eq!(buffers["sizes"].len(), 24 * 4);
        assert_eq!(buffers["tokens"].len(), 24 * 4);
        let flags = &buffers["flags"];
        assert_eq!(flags.iter().filter(|f| *f & FLAG_KEY != 0).count(), 12);
        // Token 6 is in sequence 1 (3 tokens): its queries and keys are flagged.
        assert_eq!(
            flags
                .iter()
                .filter(|f| *f & FLAG_IN_SELECTED_SEQUENCE != 0)
                .count(),
            6
        );
        assert_eq!(header["selected"]["role"], "key");
    }

    #[test]
    fn sentence_views() {
        let (_tmp, dir) = sample();
        let api = Api::open(&dir);
        let v = json_of(&get(&api, "/api/sentence?method=tsne&head=L0H1&seq=0"));
        assert_eq!(v["seq_id"], 0);
        assert_eq!(v["tokens"].as_array().unwrap().len(), 5);
        assert!(!v["edges"].as_array().unwrap().is_empty());
        let agg = json_of(&get(
            &api,
            "/api/sentence?method=tsne&head=L0H1&aggregate=1&hide_special=1",
        ));
        assert_eq!(agg["seq_id"], Value::Null);
        let hidden = json_of(&get(
            &api,
            "/api/sentence?method=tsne&head=L0H1&seq=0&hidden=1%2C2",
        ));
        assert_ne!(
            hidden["edges"], v["edges"],
            "hidden tokens change the edges"
        );
        let sim = json_of(&get(&api, "/api/similarity?method=tsne"));
        assert!(sim.is_object());
    }

    #[test]
    fn bad_parameters_are_400_naming_the_parameter() {
        let (tmp, dir) = sample();
        let api = Api::open(&dir);
        for (target, name) in [
            ("/api/matrix", "method"),
            ("/api/matrix?method=nope", "method"),
            ("/api/matrix?method=tsne&dims=4", "dims"),
            ("/api/matrix?method=tsne&dims=two", "dims"),
            ("/api/matrix?method=tsne&encoding=plaid", "encoding"),
            ("/api/matrix?method=tsne&search=a&mode=fuzzy", "mode"),
            (
                "/api/single?method=tsne&head=L0H0&token=1&role=both",
                "role",
            ),
            ("/api/single?method=tsne&head=layer0", "head"),
            ("/api/sentence?method=tsne", "head"),
            ("/api/sentence?method=tsne&head=L0H0", "seq"),
            (
                "/api/sentence?method=tsne&head=L0H0&seq=0&hidden=x",
                "hidden",
            ),
            ("/api/picture", "seq"),
        ] {
            let message = error_of(&get(&api, target), 400);
            assert!(
                message.starts_with(&format!("{name}: ")),
                "{target}: {message}"
            );
            assert_no_absolute_path(message.as_bytes(), tmp.path());
        }
    }

    #[test]
    fn unknown_heads_sequences_and_projections_are_400() {
        let (tmp, dir) = sample();
        let api = Api::open(&dir);
        let message = error_of(&get(&api, "/api/single?method=tsne&dims=2&head=L9H9"), 400);
        assert!(message.contains("L9H9"), "{message}");
        let message = error_of(
            &get(&api, "/api/sentence?method=tsne&head=L0H0&seq=99"),
            400,
        );
        assert!(message.contains("99"), "{message}");
        let message = error_of(&get(&api, "/api/matrix?method=umap"), 400);
        assert!(
            message.contains("umap") && message.contains("ds"),
            "{message}"
        );
        assert_no_absolute_path(message.as_bytes(), tmp.path());
    }

    #[test]
    fn page_paths_methods_and_unknown_paths() {
        let (_tmp, dir) = sample();
        let api = Api::open(&dir);
        let page = get(&api, "/");
        assert_eq!(
            (page.status, page.content_type),
            (200, "text/html; charset=utf-8")
        );
        assert_eq!(page.body, crate::INDEX_HTML.as_bytes());
        assert_eq!(
            get(&api, "/style.css?v=1").body,
            crate::STYLE_CSS.as_bytes()
        );
        assert_eq!(api.handle("HEAD", "/app.js").status, 200);
        let post = api.handle("POST", "/api/meta");
        assert_eq!(post.status, 405);
        assert!(post.content_type.starts_with("text/plain"));
        assert_eq!(
            error_of(&get(&api, "/api/unknown"), 404),
            "not found: /api/unknown"
        );
        assert_eq!(get(&api, "/nothing").status, 404);
        let files = get(&api, "/files/meta.json");
        assert_eq!(
            (files.status, files.content_type),
            (200, "application/json")
        );
        assert_eq!(files.body, std::fs::read(dir.join("meta.json")).unwrap());
        assert_eq!(
            files.headers(),
            [
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff")
            ]
        );
    }

    #[test]
    fn errors_show_no_absolute_path() {
        let (tmp, dir) = sample();
        let api = Api::open(&dir);
        // Views load before the damage; the token table goes afterwards.
        assert_eq!(get(&api, "/api/meta").status, 200);
        std::fs::remove_file(dir.join("tokens.parquet")).unwrap();
        let reply = get(&api, "/api/meta");
        let message = error_of(&reply, 400);
        assert!(
            message.starts_with("tokens.parquet: "),
            "named relative to the dataset: {message}"
        );
        assert_no_absolute_path(&reply.body, tmp.path());
        assert_eq!(
            get(&api, "/api/tokens").status,
            400,
            "still answering after a failed request"
        );
        let reply = get(&api, "/api/picture?seq=0");
        let message = error_of(&reply, 400);
        assert!(
            message.contains("images") && message.contains("00000.png"),
            "{message}"
        );
        assert_no_absolute_path(&reply.body, tmp.path());

        // The same through a relative path, and a dataset that cannot be opened at all.
        let missing = Api::open(tmp.path().join("gone"));
        let reply = get(&missing, "/api/meta");
        let message = error_of(&reply, 503);
        assert!(
            message.starts_with("cannot open dataset gone: meta.json: "),
            "{message}"
        );
        assert_no_absolute_path(&reply.body, tmp.path());
        assert!(matches!(missing.dataset(), Err(ViewerError::Open { .. })));
        assert!(
            missing
                .dataset()
                .unwrap_err()
                .to_string()
                .contains(&*tmp.path().to_string_lossy()),
            "local message is full"
        );
        assert_eq!(get(&missing, "/").status, 200, "the page is still served");
    }

    #[test]
    fn dataset_files_stay_inside_the_dataset() {
        let (tmp, dir) = sample();
        std::fs::write(tmp.path().join("secret.txt"), "not yours").unwrap();
        let api = Api::open(&dir);
        for target in [
            "/files/../secret.txt",
            "/files/%2e%2e/secret.txt",
            "/files/heads/../../secret.txt",
            "/files/heads/%2E%2E/%2E%2E/secret.txt",
            "/files//etc/passwd",
            "/files/%2Fetc%2Fpasswd",
            "/files/..%5Csecret.txt",
            "/files/meta.json%00",
            "/../secret.txt",
            "/files/",
            "/files/heads",
            "/app.js/../../secret.txt",
        ] {
            let reply = get(&api, target);
            assert_eq!(reply.status, 404, "{target}");
            assert!(!String::from_utf8_lossy(&reply.body).contains("not yours"));
        }
        assert!(dataset_file(&dir, "meta.json").is_some());
        assert!(dataset_file(&dir, "heads/L0H0/../../meta.json").is_none());
        assert!(
            dataset_file(&dir, "heads").is_none(),
            "directories are not files"
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_dataset_are_not_followed() {
        let (tmp, dir) = sample();
        std::fs::write(tmp.path().join("secret.txt"), "not yours").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret.txt"), dir.join("link.txt")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), dir.join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.join("meta.json"), dir.join("inside.json")).unwrap();
        let api = Api::open(&dir);
        for target in ["/files/link.txt", "/files/outside/secret.txt"] {
            let reply = get(&api, target);
            assert_eq!(reply.status, 404, "{target}");
            assert!(!String::from_utf8_lossy(&reply.body).contains("not yours"));
        }
        assert!(dataset_file(&dir, "link.txt").is_none());
        assert_eq!(
            get(&api, "/files/inside.json").status,
            200,
            "a link within the dataset is fine"
        );
    }

    #[test]
    fn query_parsing_and_cache_keys() {
        let p = parse_query("b=x%20y+z&a=%2e%2E&flag&=v&c=%zz");
        assert_eq!(p["a"], "..");
        assert_eq!(p["b"], "x y z");
        assert_eq!(p["flag"], "");
        assert_eq!(p["c"], "%zz");
        assert_eq!(
            cache_key("sentence", &p),
            "sentence?=v&a=..&b=x%20y%20z&c=%25zz&flag="
        );
    }
}
