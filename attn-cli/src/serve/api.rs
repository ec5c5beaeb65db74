//! The viewer's API: every answer is a view computed by attn-viz-core from the dataset, serialized as
//! JSON (the Matrix View, which holds every point of every head, as a compact binary frame). The HTTP
//! server and the HTML export share this one entry point, [`Api::handle`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use attn_store::Dataset;
use attn_types::{HeadId, ProjectionMethod, Role, TokenTable};
use attn_viz_core::{
    ColorEncoding, HideTokens, MatrixView, Rgba, Search, SearchMode, Selection, SentenceOptions,
    ViewState, display_text,
};
use serde_json::{Value, json};

use crate::render::{HeadTables, ViewData};
use crate::select::parse_head;

/// Query parameters of one request, sorted by name (the order of the HTML export's cache keys).
pub type Params = BTreeMap<String, String>;

/// One answer: HTTP status, content type and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// MIME type of `body`.
    pub content_type: &'static str,
    /// The bytes.
    pub body: Vec<u8>,
}

impl Reply {
    fn json(value: &Value) -> Reply {
        Reply { status: 200, content_type: "application/json", body: value.to_string().into_bytes() }
    }

    fn error(status: u16, message: &str) -> Reply {
        let body = json!({ "error": message }).to_string().into_bytes();
        Reply { status, content_type: "application/json", body }
    }

    /// 404 with a one-line JSON message.
    pub fn not_found(what: &str) -> Reply {
        Reply::error(404, &format!("not found: {what}"))
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

/// A dataset opened for viewing. A dataset that cannot be opened still gives an `Api`: every request
/// then answers with the reason, so the page can say what is wrong instead of the server failing.
pub struct Api {
    dir: PathBuf,
    dataset: Result<Dataset, String>,
    shared: Mutex<Option<Arc<Shared>>>,
    loaded: Mutex<HashMap<(ProjectionMethod, u8), Arc<Loaded>>>,
}

/// Magic bytes that open a binary frame ([`encode_matrix`], [`encode_single`]).
pub const FRAME_MAGIC: &[u8; 4] = b"AVF1";

impl Api {
    /// Opens `dir`; failures are kept and reported by every request.
    pub fn open(dir: &Path) -> Api {
        let dataset = Dataset::open(dir).map_err(|e| format!("{e:#}"));
        Api { dir: dir.to_path_buf(), dataset, shared: Mutex::new(None), loaded: Mutex::new(HashMap::new()) }
    }

    /// The dataset, or why it could not be opened.
    pub fn dataset(&self) -> Result<&Dataset, &str> {
        self.dataset.as_ref().map_err(String::as_str)
    }

    /// The dataset directory as given.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Answers `/api/<endpoint>?<params>`.
    pub fn handle(&self, endpoint: &str, params: &Params) -> Reply {
        let dataset = match &self.dataset {
            Ok(d) => d,
            Err(e) => return Reply::error(503, &format!("cannot open dataset {}: {e}", self.dir.display())),
        };
        let result = match endpoint {
            "meta" => self.meta(dataset).map(|v| Reply::json(&v)),
            "tokens" => tokens(dataset).map(|v| Reply::json(&v)),
            "matrix" | "single" | "sentence" | "image" | "similarity" => self.view(dataset, endpoint, params),
            "picture" => picture(dataset, params),
            other => return Reply::not_found(&format!("/api/{other}")),
        };
        result.unwrap_or_else(|e| Reply::error(400, &format!("{e:#}")))
    }

    fn load(&self, dataset: &Dataset, method: ProjectionMethod, dims: u8) -> Result<Arc<Loaded>> {
        let mut cache = self.loaded.lock().map_err(|_| anyhow!("a previous request failed while loading"))?;
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
        let mut shared = self.shared.lock().map_err(|_| anyhow!("a previous request failed while loading"))?;
        if let Some(s) = &*shared {
            return Ok(Arc::clone(s));
        }
        let tables = Arc::new(HeadTables::load(dataset, None)?);
        let patch_colors = patch_colors(dataset, &tables)?;
        let s = Arc::new(Shared { tables, patch_colors });
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
        let mut encodings = vec!["query_key", "normalized_position", "discrete_position", "norm"];
        if vision {
            encodings.extend(["patch_row", "patch_column", "original_patch"]);
        }
        let sequences: Vec<Value> = tokens
            .sequences()
            .iter()
            .map(|s| json!({ "seq_id": s.seq_id, "start": s.start, "len": s.len, "preview": preview(&tokens, s.start, s.len, vision) }))
            .collect();
        let name = self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(json!({
            "dataset": name,
            "version": attn_types::VERSION,
            "model": {
                "id": model.id,
                "architecture": model.architecture,
                "num_layers": model.num_layers,
                "num_heads": model.num_heads,
                "head_dim": model.head_dim,
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
        let state = || view_state(params, method, dims);
        let binary = |body: Vec<u8>| Reply { status: 200, content_type: "application/octet-stream", body };
        Ok(match endpoint {
            "matrix" => binary(encode_matrix(attn_viz_core::matrix_view(&model, &state()?)?)?),
            "single" => binary(encode_single(attn_viz_core::single_view(&model, &state()?)?)?),
            "sentence" => Reply::json(&serde_json::to_value(sentence(&loaded, &model, params)?)?),
            "image" => {
                let seq = number(params, "seq")?.context("seq: missing (an image id)")?;
                let mut state = state()?;
                if state.selected.is_none() {
                    let side = loaded.data.model.image.map_or(0, |g| g.grid_side()) as u16;
                    let token = patch_token(&loaded.data.tokens, seq, side / 2, side / 2)
                        .with_context(|| format!("seq: no image {seq} in the dataset"))?;
                    state.selected = Some(Selection { token, role: Role::Query });
                }
                Reply::json(&serde_json::to_value(attn_viz_core::image_view(&model, &state, seq)?)?)
            }
            "similarity" => Reply::json(&serde_json::to_value(attn_viz_core::head_similarity(&model)?)?),
            other => Reply::not_found(&format!("/api/{other}")),
        })
    }
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
        opts.hide = HideTokens::for_architecture(loaded.data.model.architecture);
    }
    if let Some(list) = params.get("hidden").filter(|s| !s.is_empty()) {
        opts.hide.positions = list
            .split(',')
            .map(|p| p.trim().parse::<u32>().map_err(|_| anyhow!("hidden: `{p}` is not a token position")))
            .collect::<Result<_>>()?;
    }
    opts.focus = number(params, "focus")?;
    Ok(if flag(params, "aggregate") {
        attn_viz_core::aggregate_sentence_view(model, head, &opts)?
    } else {
        let seq = number(params, "seq")?.context("seq: missing (a sequence id)")?;
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
    let seq: u32 = number(params, "seq")?.context("seq: missing (an image id)")?;
    let path = crate::pipeline::image_path(dataset, seq);
    let body = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Reply { status: 200, content_type: "image/png", body })
}

/// Mean pixel color of every token's patch (vision datasets with stored images), for the
/// `original_patch` encoding; `None` for text.
fn patch_colors(dataset: &Dataset, data: &HeadTables) -> Result<Option<Vec<Rgba>>> {
    let Some(geometry) = data.model.image else { return Ok(None) };
    let p = geometry.patch_size;
    let mut images: HashMap<u32, image::RgbImage> = HashMap::new();
    let mut colors = Vec::with_capacity(data.tokens.len());
    for t in &data.tokens.tokens {
        let Some(patch) = t.patch else {
            colors.push(attn_viz_core::NEUTRAL_COLOR);
            continue;
        };
        let img = match images.entry(t.seq_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                if !crate::pipeline::image_path(dataset, t.seq_id).is_file() {
                    return Ok(None);
                }
                e.insert(crate::pipeline::stored_image(dataset, t.seq_id)?)
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
    for t in tokens.tokens[start..start + len].iter().filter(|t| !t.is_special) {
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
        out.extend_from_slice(&u32::try_from(header.len())?.to_le_bytes());
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
    values.flat_map(|v| ((v.clamp(0.0, 1.0) * 65535.0).round() as u16).to_le_bytes()).collect()
}

/// The Matrix View as a [`Frame`]: the view without its point arrays (each cell gets `offset` and
/// `count` into them), buffers `positions` (`u16 x 3` per point, fixed point) and `colors` (`u8 x 4`).
pub fn encode_matrix(mut view: MatrixView) -> Result<Vec<u8>> {
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
        let mut v = serde_json::to_value(&*cell)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("offset".into(), json!(offset));
            o.insert("count".into(), json!(count));
        }
        cells.push(v);
        offset += count;
    }
    view.cells.clear();
    let mut header = serde_json::to_value(&view)?;
    if let Some(o) = header.as_object_mut() {
        o.insert("cells".into(), Value::Array(cells));
        o.insert("points".into(), json!(total));
    }
    Frame { header, buffers: vec![("positions", positions), ("colors", colors)] }.encode()
}

/// Flag bits of a Single View point in its `flags` buffer.
pub const FLAG_SEARCH_MATCH: u8 = 1;
/// The point belongs to the selected point's sequence.
pub const FLAG_IN_SELECTED_SEQUENCE: u8 = 2;
/// The point is a key (otherwise a query).
pub const FLAG_KEY: u8 = 4;

/// The Single View as a [`Frame`]: the view without `points`, buffers `positions` (`u16 x 3`, fixed point),
/// `colors` (`u8 x 4`), `sizes` (`f32`), `tokens` (`u32`) and `flags` (`u8`, the `FLAG_*` bits).
pub fn encode_single(mut view: attn_viz_core::SingleView) -> Result<Vec<u8>> {
    let points = std::mem::take(&mut view.points);
    let mut header = serde_json::to_value(&view)?;
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
        ("positions", position_bytes(points.iter().flat_map(|p| p.position))),
        ("colors", points.iter().flat_map(|p| p.color.0).collect()),
        ("sizes", f32_bytes(points.iter().map(|p| p.size))),
        ("tokens", points.iter().flat_map(|p| p.token.to_le_bytes()).collect()),
        ("flags", flags),
    ];
    Frame { header, buffers }.encode()
}

/// The token of image `seq`'s patch at `row`, `col`.
pub fn patch_token(tokens: &TokenTable, seq: u32, row: u16, col: u16) -> Option<usize> {
    tokens
        .tokens
        .iter()
        .position(|t| t.seq_id == seq && t.patch.is_some_and(|p| p.row == row && p.col == col))
}

fn flag(params: &Params, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "1" || v == "true")
}

fn number<T: std::str::FromStr>(params: &Params, name: &str) -> Result<Option<T>> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<T>().map_err(|_| anyhow!("{name}: `{v}` is not a valid number")))
        .transpose()
}

fn head_param(params: &Params) -> Result<HeadId> {
    let h = params.get("head").context("head: missing (e.g. L0H0)")?;
    parse_head(h).map_err(|e| anyhow!("head: {e}"))
}

fn method_dims(params: &Params) -> Result<(ProjectionMethod, u8)> {
    let method = params.get("method").context("method: missing (tsne, umap or pca)")?;
    let method: ProjectionMethod = method.parse().map_err(|e: String| anyhow!("method: {e}"))?;
    let dims = number(params, "dims")?.unwrap_or(2u8);
    if !matches!(dims, 2 | 3) {
        bail!("dims: {dims} is not 2 or 3");
    }
    Ok((method, dims))
}

/// The view state of a request: `encoding`, `search` (+ `mode=exact`), `head`, the selected `token`
/// with its `role`, `labels`, `size_by_norm`.
fn view_state(params: &Params, method: ProjectionMethod, dims: u8) -> Result<ViewState> {
    let mut state = ViewState { method: Some(method), dims, ..ViewState::default() };
    if let Some(e) = params.get("encoding") {
        state.encoding = serde_json::from_value::<ColorEncoding>(Value::String(e.clone()))
            .map_err(|_| anyhow!("encoding: `{e}` is not a color encoding"))?;
    }
    if let Some(text) = params.get("search").filter(|s| !s.is_empty()) {
        let mode = match params.get("mode").map(String::as_str) {
            Some("exact") => SearchMode::Exact,
            None | Some("substring") => SearchMode::Substring,
            Some(other) => bail!("mode: `{other}` is not exact or substring"),
        };
        state.search = Some(Search { text: text.clone(), mode });
    }
    if params.contains_key("head") {
        state.head = head_param(params)?;
    }
    if let Some(token) = number::<usize>(params, "token")? {
        let role = match params.get("role").map(String::as_str) {
            None | Some("query") => Role::Query,
            Some("key") => Role::Key,
            Some(other) => bail!("role: `{other}` is not query or key"),
        };
        state.selected = Some(Selection { token, role });
    }
    state.show_labels = flag(params, "labels");
    state.size_by_norm = flag(params, "size_by_norm");
    Ok(state)
}

/// Splits `a=1&b=x%20y` into sorted parameters (percent-decoded, `+` as space).
pub fn parse_query(query: &str) -> Params {
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
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
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
pub fn cache_key(endpoint: &str, params: &Params) -> String {
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v))).collect();
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
pub fn dataset_file(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = percent_decode(rel);
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return None;
    }
    let rel_path = Path::new(&rel);
    if !rel_path.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let root = dir.canonicalize().ok()?;
    let full = root.join(rel_path).canonicalize().ok()?;
    (full.starts_with(&root) && full.is_file()).then_some(full)
}
