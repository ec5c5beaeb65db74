#![doc = include_str!("../README.md")]

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of this crate, recorded in dataset provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Version of the on-disk and serialized data model. Readers refuse data from a newer version.
///
/// Version 2 stores the keys of a grouped-query model once per key head (beside the query heads'
/// files, which then hold queries only); version 1 stored them with every query head. Every other
/// dataset is the same in both, and readers take either.
pub const DATA_MODEL_VERSION: u32 = 2;

/// Errors raised when constructing the shared types from inconsistent parts.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TypesError {
    /// A matrix's data length does not equal `rows * cols`.
    #[error("matrix `{name}`: {len} values cannot form {rows} x {cols}")]
    MatrixShape {
        /// What the matrix is (e.g. `queries`).
        name: String,
        /// Requested rows.
        rows: usize,
        /// Requested columns.
        cols: usize,
        /// Number of values given.
        len: usize,
    },
    /// Two parts that must agree on a size do not.
    #[error("{what}: expected {expected}, found {found}")]
    Mismatch {
        /// What disagrees (e.g. `keys rows vs token count`).
        what: String,
        /// The size required.
        expected: usize,
        /// The size found.
        found: usize,
    },
    /// A name of a vocabulary type (head, metric, projection method) could not be parsed.
    #[error("`{input}` is not a valid {what}; expected {expected}")]
    Parse {
        /// What was being parsed (`head`, `metric`, `projection method`).
        what: &'static str,
        /// The text given.
        input: String,
        /// The accepted forms.
        expected: &'static str,
    },
}

/// A head of a model: `(layer, head)`, both zero-based. Orders by layer, then head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeadId {
    /// Zero-based layer index (0 = closest to the input).
    pub layer: u16,
    /// Zero-based head index within the layer.
    pub head: u16,
}

impl HeadId {
    /// Creates a head id.
    pub const fn new(layer: u16, head: u16) -> Self {
        Self { layer, head }
    }

    /// Every head of a `layers x heads` model, in layer-major order.
    pub fn all(layers: u16, heads: u16) -> impl Iterator<Item = HeadId> {
        (0..layers).flat_map(move |l| (0..heads).map(move |h| HeadId::new(l, h)))
    }
}

impl fmt::Display for HeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}H{}", self.layer, self.head)
    }
}

/// Parses `L<layer>H<head>` (as [`Display`](fmt::Display) writes it, any case, zero-padded or not,
/// e.g. `L3H7`, `l03h07`) or `<layer>:<head>`.
///
/// ```
/// use attn_types::HeadId;
/// assert_eq!("L3H7".parse::<HeadId>().unwrap(), HeadId::new(3, 7));
/// assert_eq!("03:07".parse::<HeadId>().unwrap(), HeadId::new(3, 7));
/// assert!("L3".parse::<HeadId>().is_err());
/// ```
impl std::str::FromStr for HeadId {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, TypesError> {
        let t = s.trim().to_ascii_uppercase();
        let (l, h) = match t.strip_prefix('L') {
            Some(rest) => rest.split_once('H'),
            None => t.split_once(':'),
        }
        .unwrap_or(("", ""));
        let number = |v: &str| {
            (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u16>().ok())
                .flatten()
        };
        match (number(l), number(h)) {
            (Some(l), Some(h)) => Ok(HeadId::new(l, h)),
            _ => Err(TypesError::Parse {
                what: "head",
                input: s.to_string(),
                expected: "L<layer>H<head> (e.g. L0H3) or <layer>:<head>",
            }),
        }
    }
}

/// Dense row-major `f32` matrix: the one numeric container passed between crates.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// Wraps `data` (row-major) as `rows x cols`; fails if the length does not match.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, TypesError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(TypesError::MatrixShape {
                name: "matrix".into(),
                rows,
                cols,
                len: data.len(),
            });
        }
        Ok(Self { rows, cols, data })
    }

    /// A `rows x cols` matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Builds a matrix from equally long rows; fails on a ragged row.
    pub fn from_rows<R: AsRef<[f32]>>(rows: &[R]) -> Result<Self, TypesError> {
        let cols = rows.first().map_or(0, |r| r.as_ref().len());
        let mut data = Vec::with_capacity(rows.len() * cols);
        for r in rows {
            let r = r.as_ref();
            if r.len() != cols {
                return Err(TypesError::Mismatch {
                    what: "row length".into(),
                    expected: cols,
                    found: r.len(),
                });
            }
            data.extend_from_slice(r);
        }
        Ok(Self {
            rows: rows.len(),
            cols,
            data,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// True when the matrix has no rows or no columns.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i` as a slice. Panics if `i >= rows` (an indexing bug, not bad input).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Row `i` as a mutable slice.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Iterator over rows.
    pub fn iter_rows(&self) -> impl ExactSizeIterator<Item = &[f32]> + '_ {
        // `max(1)` keeps chunks_exact valid for zero-column matrices (which then have no data).
        self.data
            .chunks_exact(self.cols.max(1))
            .take(if self.cols == 0 { 0 } else { self.rows })
    }

    /// Element `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.cols + j]
    }

    /// The row-major values.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The row-major values, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the matrix, returning its row-major values.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Stacks `self` on top of `other` (same column count): used to form a joint query+key set.
    pub fn vstack(&self, other: &Matrix) -> Result<Matrix, TypesError> {
        if self.cols != other.cols {
            return Err(TypesError::Mismatch {
                what: "columns of stacked matrices".into(),
                expected: self.cols,
                found: other.cols,
            });
        }
        let mut data = Vec::with_capacity(self.data.len() + other.data.len());
        data.extend_from_slice(&self.data);
        data.extend_from_slice(&other.data);
        Ok(Matrix {
            rows: self.rows + other.rows,
            cols: self.cols,
            data,
        })
    }

    /// A new matrix holding the rows `start..end`.
    pub fn slice_rows(&self, start: usize, end: usize) -> Matrix {
        Matrix {
            rows: end - start,
            cols: self.cols,
            data: self.data[start * self.cols..end * self.cols].to_vec(),
        }
    }

    /// Euclidean norm of every row.
    pub fn row_norms(&self) -> Vec<f32> {
        self.iter_rows()
            .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect()
    }
}

/// Model family, which decides the attention pattern and the token conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// BERT and BERT-architecture models (MiniLM): bidirectional, `[CLS]`/`[SEP]`.
    Bert,
    /// GPT-2: causal attention.
    Gpt2,
    /// Vision Transformer: image patches plus a CLS token, bidirectional.
    Vit,
    /// Llama 2 / 3 decoders: RMSNorm, rotary positions, grouped-query attention, causal.
    Llama,
    /// Mistral: as Llama, with a sliding attention window.
    Mistral,
    /// Qwen2: as Llama, with query/key/value biases and an optional sliding window.
    Qwen2,
    /// Qwen3: as Llama, with a per-head RMSNorm of queries and keys before the rotation.
    Qwen3,
    /// Vectors imported from a model attnviz cannot load (`attnviz import`): only the attention
    /// pattern is known. Serialized as `{"imported": {"causal": bool}}`, next to the plain strings of
    /// the other variants, so datasets written before this variant existed still load.
    Imported {
        /// Whether the imported model's attention is causal (each query sees keys at or before its
        /// own position only).
        causal: bool,
    },
}

impl Architecture {
    /// Whether a query may only attend to keys at or before its own position.
    pub fn is_causal(self) -> bool {
        match self {
            Architecture::Gpt2
            | Architecture::Llama
            | Architecture::Mistral
            | Architecture::Qwen2
            | Architecture::Qwen3 => true,
            Architecture::Bert | Architecture::Vit => false,
            Architecture::Imported { causal } => causal,
        }
    }

    /// Whether the vectors were imported rather than extracted from a model attnviz loads.
    pub fn is_imported(self) -> bool {
        matches!(self, Architecture::Imported { .. })
    }

    /// Whether inputs are images (patches) rather than text.
    pub fn is_vision(self) -> bool {
        matches!(self, Architecture::Vit)
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Architecture::Bert => "bert",
            Architecture::Gpt2 => "gpt2",
            Architecture::Vit => "vit",
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Imported { causal: false } => "imported",
            Architecture::Imported { causal: true } => "imported (causal)",
        })
    }
}

/// What was loaded: identity and sizes of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// A human-readable id, e.g. the model directory name or `sentence-transformers/all-MiniLM-L6-v2`.
    pub id: String,
    /// Model family.
    pub architecture: Architecture,
    /// Number of attention layers.
    pub num_layers: u16,
    /// Heads per layer.
    pub num_heads: u16,
    /// Dimension of one head's query/key vectors.
    pub head_dim: u32,
    /// Hidden (residual stream) size.
    pub hidden_size: u32,
    /// Longest sequence the model accepts, in tokens (for ViT: patches + CLS).
    pub max_positions: u32,
    /// For ViT: the patch size in pixels and the input image size.
    pub image: Option<ImageGeometry>,
    /// The model's `config.json`, verbatim, for provenance.
    pub config: serde_json::Value,
    /// Key/value heads per layer (`num_key_value_heads`): query head `h` reads key head
    /// `h / (num_heads / kv_heads)`, as transformers' `repeat_kv`. Always set for the Llama family
    /// (which has the setting, grouped or not) and for imports whose keys have fewer heads than the
    /// queries; `None` for BERT, GPT-2 and ViT, other imports, and datasets written before this
    /// field existed: one key head per query head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<u16>,
    /// For models with rotary position embeddings: whether the stored queries and keys are the
    /// rotated vectors attention multiplies or the vectors before the rotation. `None` for models
    /// without rotary embeddings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope: Option<RopeCapture>,
}

impl ModelInfo {
    /// Every head of the model in layer-major order.
    pub fn heads(&self) -> impl Iterator<Item = HeadId> {
        HeadId::all(self.num_layers, self.num_heads)
    }

    /// Key heads per layer: `num_key_value_heads`, or `num_heads` without grouped-query attention.
    pub fn key_heads(&self) -> u16 {
        self.num_key_value_heads.unwrap_or(self.num_heads)
    }

    /// The key head that query head `head` attends with (itself without grouped-query attention).
    pub fn key_head_of(&self, head: u16) -> u16 {
        let kv = self.key_heads().max(1);
        let group = (self.num_heads / kv).max(1);
        head / group
    }
}

/// Which attention weights a capture keeps per query row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttentionKeep {
    /// Every weight.
    All,
    /// The `k` largest weights of each query row (ties broken by key position).
    TopK(usize),
    /// The weights of at least this value.
    AtLeast(f32),
    /// [`AttentionKeep::All`] for sequences of up to [`AttentionKeep::AUTO_DENSE_UP_TO`] tokens,
    /// [`AttentionKeep::TopK`] with [`AttentionKeep::AUTO_TOP_K`] beyond: sentences, BERT's 512 and
    /// GPT-2's 1,024 positions are kept exactly; a 4,096-token document keeps 64 of 4,096 keys per
    /// query (1/64 of its dense size).
    Auto,
}

impl AttentionKeep {
    /// The longest sequence [`AttentionKeep::Auto`] keeps whole.
    pub const AUTO_DENSE_UP_TO: usize = 1024;
    /// The keys per query [`AttentionKeep::Auto`] keeps in longer sequences.
    pub const AUTO_TOP_K: usize = 64;

    /// Zeroes the weights of one query row (of a sequence of `seq_len` tokens) that this policy
    /// drops.
    pub fn apply(self, row: &mut [f32], seq_len: usize) {
        let k = match self {
            AttentionKeep::All => return,
            AttentionKeep::Auto if seq_len <= Self::AUTO_DENSE_UP_TO => return,
            AttentionKeep::Auto => Self::AUTO_TOP_K,
            AttentionKeep::TopK(k) => k,
            AttentionKeep::AtLeast(min) => {
                row.iter_mut().filter(|w| **w < min).for_each(|w| *w = 0.0);
                return;
            }
        };
        let nonzero = row.iter().filter(|w| **w != 0.0).count();
        if nonzero <= k {
            return;
        }
        if k == 0 {
            row.fill(0.0);
            return;
        }
        // The k-th largest value, then keep the values above it and, of those equal to it, the
        // first by position until k are kept. (One copy of the row per call; the extraction's
        // matrix products dominate its cost.)
        let mut sorted: Vec<f32> = row.to_vec();
        let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let kth = *kth;
        let mut ties = k - row.iter().filter(|w| **w > kth).count();
        for w in row.iter_mut() {
            if *w < kth || (*w == kth && ties == 0) {
                *w = 0.0;
            } else if *w == kth {
                ties -= 1;
            }
        }
    }
}

impl fmt::Display for AttentionKeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttentionKeep::All => f.write_str("all"),
            AttentionKeep::TopK(k) => write!(f, "top:{k}"),
            AttentionKeep::AtLeast(min) => write!(f, "min:{min}"),
            AttentionKeep::Auto => f.write_str("auto"),
        }
    }
}

impl std::str::FromStr for AttentionKeep {
    type Err = TypesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TypesError::Parse {
            what: "attention policy",
            input: s.to_string(),
            expected: "all, auto, top:K (K >= 1) or min:W (0 < W <= 1)",
        };
        match s {
            "all" => Ok(AttentionKeep::All),
            "auto" => Ok(AttentionKeep::Auto),
            _ => match s.split_once(':') {
                Some(("top", k)) => match k.parse::<usize>() {
                    Ok(k) if k >= 1 => Ok(AttentionKeep::TopK(k)),
                    _ => Err(bad()),
                },
                Some(("min", w)) => match w.parse::<f32>() {
                    Ok(w) if w > 0.0 && w <= 1.0 => Ok(AttentionKeep::AtLeast(w)),
                    _ => Err(bad()),
                },
                _ => Err(bad()),
            },
        }
    }
}

/// Which queries and keys of a rotary-position model are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeCapture {
    /// After the rotation: the vectors whose dot products attention takes (the default).
    #[default]
    Post,
    /// Before the rotation (after the q/k norms of Qwen3): position-free content vectors.
    Pre,
}

impl fmt::Display for RopeCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RopeCapture::Post => "post",
            RopeCapture::Pre => "pre",
        })
    }
}

impl std::str::FromStr for RopeCapture {
    type Err = TypesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "post" => Ok(RopeCapture::Post),
            "pre" => Ok(RopeCapture::Pre),
            other => Err(TypesError::Parse {
                what: "rope capture",
                input: other.to_string(),
                expected: "post or pre",
            }),
        }
    }
}

/// Input geometry of a vision model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageGeometry {
    /// Side of the square input image in pixels.
    pub image_size: u32,
    /// Side of one square patch in pixels.
    pub patch_size: u32,
}

impl ImageGeometry {
    /// Patches per row (and per column).
    pub fn grid_side(&self) -> u32 {
        self.image_size / self.patch_size
    }
}

/// Position of an image patch in its grid (zero-based, row 0 at the top).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PatchPos {
    /// Patch row, 0 at the top.
    pub row: u16,
    /// Patch column, 0 at the left.
    pub col: u16,
}

/// Metadata of one token (a word piece, or an image patch, or a CLS token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenMeta {
    /// Which input sequence (sentence or image) the token belongs to; zero-based, dense.
    pub seq_id: u32,
    /// Zero-based position in its sequence.
    pub position: u32,
    /// Length of its sequence in tokens (padding excluded).
    pub seq_len: u32,
    /// Display text of the token (`[CLS]`, `Ġthe`, `##ing`, or `patch r,c` for images).
    pub text: String,
    /// True for tokens the tokenizer added (`[CLS]`, `[SEP]`, `<|endoftext|>`) and the ViT CLS token.
    pub is_special: bool,
    /// For image patches: where the patch sits in the grid. `None` for text and for CLS.
    pub patch: Option<PatchPos>,
    /// True for a ViT CLS token.
    pub is_cls: bool,
    /// Byte range of the token in its source text, when the tokenizer reports one.
    pub offsets: Option<(u32, u32)>,
}

impl TokenMeta {
    /// Normalized position `pos / (len - 1)` in `[0, 1]` (0 for a sequence of length 1).
    pub fn normalized_position(&self) -> f32 {
        if self.seq_len <= 1 {
            0.0
        } else {
            self.position as f32 / (self.seq_len - 1) as f32
        }
    }
}

/// The tokens of a whole corpus, in dataset order. Row `i` here is row `i` of every head's matrices.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenTable {
    /// All tokens, sequences contiguous and in position order.
    pub tokens: Vec<TokenMeta>,
}

/// The keys each query may attend to: those of its own sequence; with `causal`, only those at or
/// before its position; with a `window` (a sliding-window layer, always causal), only the last
/// `window` of those (key `j` of query `p` when `p - j < window`, as transformers masks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttendedKeys {
    /// Keys after the query are masked.
    pub causal: bool,
    /// Keys `window` or more positions back are masked.
    pub window: Option<usize>,
}

impl From<bool> for AttendedKeys {
    /// Causal or bidirectional attention, without a window.
    fn from(causal: bool) -> Self {
        AttendedKeys {
            causal,
            window: None,
        }
    }
}

impl AttendedKeys {
    /// The keys query `p` of a sequence of `len` tokens may attend to, as a position range.
    pub fn range(self, p: usize, len: usize) -> std::ops::Range<usize> {
        let end = if self.causal { p + 1 } else { len };
        let start = self.window.map_or(0, |w| (p + 1).saturating_sub(w));
        start..end
    }
}

/// One sequence's token range in a [`TokenTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceSpan {
    /// The sequence id.
    pub seq_id: u32,
    /// Index of its first token in the table.
    pub start: usize,
    /// Number of tokens.
    pub len: usize,
}

impl SequenceSpan {
    /// The token indices of this sequence.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.len
    }
}

impl TokenTable {
    /// Text sequences of the given lengths, numbered from 0, whose tokens read `t0`, `t1`, ... (no
    /// special tokens): for synthetic data and tests.
    pub fn placeholder(lens: &[usize]) -> TokenTable {
        let tokens = lens
            .iter()
            .enumerate()
            .flat_map(|(s, &len)| {
                (0..len).map(move |p| TokenMeta {
                    seq_id: s as u32,
                    position: p as u32,
                    seq_len: len as u32,
                    text: format!("t{p}"),
                    is_special: false,
                    patch: None,
                    is_cls: false,
                    offsets: None,
                })
            })
            .collect();
        TokenTable { tokens }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The contiguous token range of every sequence, in order of appearance.
    pub fn sequences(&self) -> Vec<SequenceSpan> {
        let mut spans: Vec<SequenceSpan> = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            match spans.last_mut() {
                Some(s) if s.seq_id == t.seq_id => s.len += 1,
                _ => spans.push(SequenceSpan {
                    seq_id: t.seq_id,
                    start: i,
                    len: 1,
                }),
            }
        }
        spans
    }

    /// Checks that sequences are contiguous, positions run `0..len` and `seq_len` agrees.
    pub fn validate(&self) -> Result<(), TypesError> {
        let mut seen = std::collections::HashSet::new();
        for span in self.sequences() {
            if !seen.insert(span.seq_id) {
                return Err(TypesError::Mismatch {
                    what: format!(
                        "sequence {} is not contiguous; its tokens start again at",
                        span.seq_id
                    ),
                    expected: span.start,
                    found: span.start,
                });
            }
            for (p, i) in span.range().enumerate() {
                let t = &self.tokens[i];
                if t.position as usize != p {
                    return Err(TypesError::Mismatch {
                        what: format!("position of token {i} (sequence {})", span.seq_id),
                        expected: p,
                        found: t.position as usize,
                    });
                }
                if t.seq_len as usize != span.len {
                    return Err(TypesError::Mismatch {
                        what: format!("seq_len of token {i} (sequence {})", span.seq_id),
                        expected: span.len,
                        found: t.seq_len as usize,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Which half of a joint query+key point set a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A query vector.
    Query,
    /// A key vector.
    Key,
}

/// Maps between joint point rows (`0..2n`) and `(token, role)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JointIndex {
    /// Number of tokens `n`.
    pub tokens: usize,
}

impl JointIndex {
    /// The joint row of `token` in `role`.
    pub fn row(&self, token: usize, role: Role) -> usize {
        match role {
            Role::Query => token,
            Role::Key => self.tokens + token,
        }
    }

    /// The `(token, role)` of a joint row.
    pub fn token(&self, row: usize) -> (usize, Role) {
        if row < self.tokens {
            (row, Role::Query)
        } else {
            (row - self.tokens, Role::Key)
        }
    }
}

/// Query and key vectors of one head; row `i` of each is token `i` of the [`TokenTable`].
///
/// Invariant: `queries` and `keys` have the same shape. The fields are private and every way in
/// ([`HeadVectors::new`], deserialization) checks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawHeadVectors")]
pub struct HeadVectors {
    /// Which head.
    head: HeadId,
    /// `n x d` queries (bias included, before the `1/sqrt(d)` scaling).
    queries: Matrix,
    /// `n x d` keys (bias included).
    keys: Matrix,
}

/// Unchecked serialized form of [`HeadVectors`] (same field names); converted through
/// [`HeadVectors::new`] so deserialization cannot bypass the shape check.
#[derive(Deserialize)]
struct RawHeadVectors {
    head: HeadId,
    queries: Matrix,
    keys: Matrix,
}

impl TryFrom<RawHeadVectors> for HeadVectors {
    type Error = TypesError;

    fn try_from(raw: RawHeadVectors) -> Result<Self, Self::Error> {
        HeadVectors::new(raw.head, raw.queries, raw.keys)
    }
}

impl HeadVectors {
    /// Builds and checks that queries and keys have the same shape.
    pub fn new(head: HeadId, queries: Matrix, keys: Matrix) -> Result<Self, TypesError> {
        if queries.rows() != keys.rows() {
            return Err(TypesError::Mismatch {
                what: format!("{head}: key rows vs query rows"),
                expected: queries.rows(),
                found: keys.rows(),
            });
        }
        if queries.cols() != keys.cols() {
            return Err(TypesError::Mismatch {
                what: format!("{head}: key dim vs query dim"),
                expected: queries.cols(),
                found: keys.cols(),
            });
        }
        Ok(Self {
            head,
            queries,
            keys,
        })
    }

    /// Which head.
    pub fn head(&self) -> HeadId {
        self.head
    }

    /// `n x d` queries (bias included, before the `1/sqrt(d)` scaling).
    pub fn queries(&self) -> &Matrix {
        &self.queries
    }

    /// `n x d` keys (bias included).
    pub fn keys(&self) -> &Matrix {
        &self.keys
    }

    /// Takes the head, queries and keys apart.
    pub fn into_parts(self) -> (HeadId, Matrix, Matrix) {
        (self.head, self.queries, self.keys)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.queries.rows()
    }

    /// True when the head has no tokens.
    pub fn is_empty(&self) -> bool {
        self.queries.rows() == 0
    }

    /// Head dimension.
    pub fn dim(&self) -> usize {
        self.queries.cols()
    }

    /// The `2n x d` joint point set: queries then keys.
    pub fn joint(&self) -> Matrix {
        // Queries and keys have the same shape (checked by `new`, the only way in), so the
        // concatenation is exactly `2n x d`; no fallible path.
        let mut data = Vec::with_capacity(self.queries.data.len() + self.keys.data.len());
        data.extend_from_slice(&self.queries.data);
        data.extend_from_slice(&self.keys.data);
        Matrix {
            rows: self.queries.rows + self.keys.rows,
            cols: self.queries.cols,
            data,
        }
    }
}

/// The attention probabilities of one head on one sequence: `len x len`, row = query, column = key.
/// Rows sum to 1 (over the keys the query may attend to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceAttention {
    /// The sequence id.
    pub seq_id: u32,
    /// `len x len` probabilities.
    pub weights: Matrix,
}

impl SequenceAttention {
    /// Sequence length.
    pub fn len(&self) -> usize {
        self.weights.rows()
    }

    /// True for an empty sequence.
    pub fn is_empty(&self) -> bool {
        self.weights.rows() == 0
    }

    /// Attention of query position `q` to key position `k`.
    pub fn get(&self, q: usize, k: usize) -> f32 {
        self.weights.get(q, k)
    }
}

/// Everything captured for one head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadCapture {
    /// Queries and keys, one row per token.
    pub vectors: HeadVectors,
    /// One attention matrix per sequence, in the token table's sequence order.
    pub attention: Vec<SequenceAttention>,
    /// `|v|` of every token's value vector, when captured.
    pub value_norms: Option<Vec<f32>>,
}

/// Output of `attn-extract`: the model, the tokens and every captured head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    /// The model.
    pub model: ModelInfo,
    /// All tokens of the corpus.
    pub tokens: TokenTable,
    /// Captured heads, layer-major.
    pub heads: Vec<HeadCapture>,
}

/// The free parameters of one head's normalization (both leave every attention value unchanged).
///
/// Applied as `q' = c * q` and `k' = (k + t) / c`, where `t` is [`Self::key_translation`] and `c`
/// [`Self::scale`]. With `t = c^2 mean(q) - mean(k)` the query and key centroids coincide after
/// scaling; every logit of a query shifts by the same `q . t`, so softmax attention is unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizationParams {
    /// Vector added to every key (`c^2 mean(q) - mean(k)` by default); empty when translation is off.
    pub key_translation: Vec<f32>,
    /// Query scale `c > 0`; keys are divided by it. 1 when scaling is off.
    pub scale: f32,
}

impl NormalizationParams {
    /// The normalized queries `c q` (in `f64`, rounded once). The one definition of the arithmetic:
    /// the normalizer and the store (which recomputes shared keys) both call it, so the two agree
    /// bit for bit. Expects a finite `c > 0`.
    pub fn normalize_queries(&self, queries: &Matrix) -> Matrix {
        let c = f64::from(self.scale);
        let data = queries
            .as_slice()
            .iter()
            .map(|&v| (f64::from(v) * c) as f32)
            .collect();
        Matrix {
            rows: queries.rows,
            cols: queries.cols,
            data,
        }
    }

    /// The normalized keys `(k + t) / c` (in `f64`, rounded once); an empty `t` means no
    /// translation. Expects a finite `c > 0` and `t` empty or of the keys' width.
    pub fn normalize_keys(&self, keys: &Matrix) -> Matrix {
        let c = f64::from(self.scale);
        let t = &self.key_translation;
        let data = keys
            .as_slice()
            .chunks_exact(keys.cols.max(1))
            .flat_map(|row| {
                row.iter().enumerate().map(move |(j, &v)| {
                    let shift = t.get(j).map_or(0.0, |&s| f64::from(s));
                    ((f64::from(v) + shift) / c) as f32
                })
            })
            .collect();
        Matrix {
            rows: keys.rows,
            cols: keys.cols,
            data,
        }
    }
}

/// Per-head diagnostics of how well distance tracks attention, before and after normalization.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct HeadDiagnostics {
    /// Spearman correlation of query-key cosine distance vs dot product, before normalization.
    pub spearman_cosine_before: f32,
    /// The same after normalization.
    pub spearman_cosine_after: f32,
    /// Spearman correlation of query-key Euclidean distance vs dot product, before normalization.
    pub spearman_euclidean_before: f32,
    /// The same after normalization.
    pub spearman_euclidean_after: f32,
    /// The distance-weighted correlation that the scale search optimizes, before normalization.
    pub weighted_corr_before: f32,
    /// The same at the chosen scale.
    pub weighted_corr_after: f32,
    /// Mean query norm minus mean key norm, before any normalization.
    pub norm_gap: f32,
    /// Number of query-key pairs the statistics were computed on.
    pub pairs: u64,
    /// Attention fidelity of the raw vectors (cosine distance), when attention was available.
    #[serde(default)]
    pub fidelity_raw: Option<Fidelity>,
    /// Attention fidelity of the normalized vectors (cosine distance), when attention was available.
    #[serde(default)]
    pub fidelity_normalized: Option<Fidelity>,
}

/// Attention fidelity of one head in one space (a layout, or the query/key vectors themselves): how
/// well nearness between a query and a key says how much the query attends to the key. `None` means
/// "n/a" (nothing to measure: no attention, or no query with 4 keys). Computed by
/// `attn_project::fidelity`, whose docs define each number.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Fidelity {
    /// Mean over the counted queries with a defined `rho_i` of the Spearman correlation between
    /// closeness (`-distance`) and attention; `None` when no query has one.
    pub fidelity: Option<f32>,
    /// Fraction of the counted queries whose most-attended key is among their 3 nearest keys;
    /// `None` when no query counted.
    pub hit_at_3: Option<f32>,
    /// The hit@3 expected by chance: the mean of `3 / keys` over the counted queries; `None` when no
    /// query counted.
    pub chance_at_3: Option<f32>,
    /// Mean Spearman correlation between closeness and raw logits over a seeded sample of queries
    /// and keys of the whole head (across sequences); `None` when there are fewer than 2 tokens or no
    /// sampled query has a defined correlation.
    pub global_fidelity: Option<f32>,
    /// Number of queries that counted (for hit@3 and chance@3).
    pub queries: u32,
    /// Number of those whose `rho_i` is defined (the ones averaged into `fidelity`).
    pub rho_queries: u32,
}

/// Output of `attn-normalize` for one head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizedHead {
    /// The normalized vectors.
    pub vectors: HeadVectors,
    /// The parameters applied.
    pub params: NormalizationParams,
    /// Correlations before/after.
    pub diagnostics: HeadDiagnostics,
}

/// Projection algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionMethod {
    /// t-distributed stochastic neighbour embedding.
    Tsne,
    /// Uniform manifold approximation and projection.
    Umap,
    /// Principal component analysis.
    Pca,
}

impl ProjectionMethod {
    /// Lower-case name (`tsne`, `umap`, `pca`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectionMethod::Tsne => "tsne",
            ProjectionMethod::Umap => "umap",
            ProjectionMethod::Pca => "pca",
        }
    }
}

impl fmt::Display for ProjectionMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `tsne` (or `t-sne`), `umap`, `pca`, in any case.
impl std::str::FromStr for ProjectionMethod {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, TypesError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tsne" | "t-sne" => Ok(ProjectionMethod::Tsne),
            "umap" => Ok(ProjectionMethod::Umap),
            "pca" => Ok(ProjectionMethod::Pca),
            _ => Err(TypesError::Parse {
                what: "projection method",
                input: s.to_string(),
                expected: "tsne, umap or pca",
            }),
        }
    }
}

/// Distance used to find neighbours in the input space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `1 - cos(a, b)`; the paper's choice for queries and keys.
    #[default]
    Cosine,
    /// `|a - b|`.
    Euclidean,
}

impl Metric {
    /// Lower-case name (`cosine`, `euclidean`).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Euclidean => "euclidean",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `cosine` or `euclidean`, in any case.
impl std::str::FromStr for Metric {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, TypesError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "euclidean" => Ok(Metric::Euclidean),
            _ => Err(TypesError::Parse {
                what: "metric",
                input: s.to_string(),
                expected: "cosine or euclidean",
            }),
        }
    }
}

/// How a projection was made: enough to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionSpec {
    /// Algorithm.
    pub method: ProjectionMethod,
    /// Output dimensions, 2 or 3.
    pub dims: u8,
    /// Input metric.
    pub metric: Metric,
    /// Random seed.
    pub seed: u64,
    /// Every other parameter by name (perplexity, iterations, n_neighbors, min_dist, ...).
    pub params: BTreeMap<String, f64>,
}

/// Quality of a projection, measured against the input space.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ProjectionQuality {
    /// Trustworthiness at `k` (1 = no false neighbours in the picture).
    pub trustworthiness: f32,
    /// Continuity at `k` (1 = no true neighbours torn apart).
    pub continuity: f32,
    /// Fraction of each point's `k` input-space neighbours that are among its `k` neighbours in the
    /// picture.
    pub knn_recall: f32,
    /// The `k` used.
    pub k: u32,
}

/// One head's projection: coordinates of the joint `2n` point set (queries, then keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadProjection {
    /// Which head.
    pub head: HeadId,
    /// How it was made.
    pub spec: ProjectionSpec,
    /// `2n x dims` coordinates.
    pub coords: Matrix,
    /// Method-specific fit statistic (KL divergence for t-SNE), when the method reports one.
    pub objective: Option<f32>,
    /// Quality metrics, when computed.
    pub quality: Option<ProjectionQuality>,
    /// Attention fidelity of the layout, when computed.
    #[serde(default)]
    pub fidelity: Option<Fidelity>,
    /// The head's ceiling in this many dimensions, when computed: the attention fidelity of a
    /// layout made to show attention alone, with no neighbours to keep (`attn_project::ceiling`),
    /// what a layout of `spec.dims` dimensions can be expected to reach on this head (an estimate,
    /// not a bound: a layout may exceed it).
    #[serde(default)]
    pub ceiling: Option<Fidelity>,
}

/// Provenance of a run: what produced a dataset.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunInfo {
    /// Where the corpus came from (a path, or `builtin:sentences`).
    pub corpus: String,
    /// Number of sequences.
    pub num_sequences: u32,
    /// Number of tokens.
    pub num_tokens: u64,
    /// Seed of the extraction (the normalization's pair subsampling), and of the projections the
    /// run made. Each projection's spec records the seed it was made with: `attnviz project --seed`
    /// makes layouts with another one and leaves this as it was.
    pub seed: u64,
    /// Free-form run parameters (normalization switches, truncation, ...).
    pub params: BTreeMap<String, String>,
    /// `crate name -> version` of the attnviz crates that wrote the data.
    pub crate_versions: BTreeMap<String, String>,
    /// Creation time, RFC 3339, UTC.
    pub created_at: String,
}

/// The metadata record of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    /// [`DATA_MODEL_VERSION`] of the writer.
    pub schema_version: u32,
    /// The model.
    pub model: ModelInfo,
    /// The run.
    pub run: RunInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_k_largest_and_breaks_ties_by_position() {
        let mut row = vec![0.1, 0.4, 0.1, 0.3, 0.1, 0.0];
        AttentionKeep::TopK(3).apply(&mut row, 600);
        assert_eq!(row, vec![0.1, 0.4, 0.0, 0.3, 0.0, 0.0]);
        // Fewer non-zero weights than k: unchanged (causal rows near the start).
        let mut row = vec![0.6, 0.4, 0.0, 0.0];
        AttentionKeep::TopK(3).apply(&mut row, 600);
        assert_eq!(row, vec![0.6, 0.4, 0.0, 0.0]);
        let mut row = vec![0.05, 0.5, 0.2, 0.25];
        AttentionKeep::AtLeast(0.2).apply(&mut row, 4);
        assert_eq!(row, vec![0.0, 0.5, 0.2, 0.25]);
    }

    #[test]
    fn auto_keeps_short_sequences_whole_and_cuts_long_ones_to_top_64() {
        let n = AttentionKeep::AUTO_DENSE_UP_TO;
        let uniform = vec![1.0 / n as f32; n];
        let mut row = uniform.clone();
        AttentionKeep::Auto.apply(&mut row, n);
        assert_eq!(row, uniform);
        let mut row: Vec<f32> = (0..n + 1).map(|i| i as f32).collect();
        AttentionKeep::Auto.apply(&mut row, n + 1);
        assert_eq!(
            row.iter().filter(|w| **w != 0.0).count(),
            AttentionKeep::AUTO_TOP_K
        );
        assert!(row[n - 63..].iter().all(|w| *w != 0.0));
    }

    #[test]
    fn attention_keep_parses_and_prints() {
        for s in ["all", "auto", "top:64", "min:0.01"] {
            assert_eq!(s.parse::<AttentionKeep>().unwrap().to_string(), s);
        }
        for bad in ["top:0", "top:x", "min:0", "min:2", "some", "top"] {
            let err = bad.parse::<AttentionKeep>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    fn tok(seq: u32, pos: u32, len: u32) -> TokenMeta {
        TokenMeta {
            seq_id: seq,
            position: pos,
            seq_len: len,
            text: format!("t{pos}"),
            is_special: false,
            patch: None,
            is_cls: false,
            offsets: None,
        }
    }

    #[test]
    fn matrix_rejects_wrong_length() {
        assert!(Matrix::from_vec(2, 3, vec![0.0; 5]).is_err());
        let m = Matrix::from_vec(2, 3, (0..6).map(|v| v as f32).collect()).unwrap();
        assert_eq!(m.row(1), &[3.0, 4.0, 5.0]);
        assert_eq!(m.iter_rows().count(), 2);
    }

    #[test]
    fn joint_index_round_trips() {
        let j = JointIndex { tokens: 4 };
        assert_eq!(j.row(2, Role::Key), 6);
        assert_eq!(j.token(6), (2, Role::Key));
        assert_eq!(j.token(3), (3, Role::Query));
    }

    #[test]
    fn token_table_sequences_and_validation() {
        let table = TokenTable {
            tokens: vec![tok(0, 0, 2), tok(0, 1, 2), tok(1, 0, 1)],
        };
        let spans = table.sequences();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].range(), 2..3);
        table.validate().unwrap();
        let bad = TokenTable {
            tokens: vec![tok(0, 0, 2), tok(0, 2, 2)],
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn head_vectors_check_shapes() {
        let q = Matrix::zeros(3, 4);
        let k = Matrix::zeros(2, 4);
        assert!(HeadVectors::new(HeadId::new(0, 0), q.clone(), k).is_err());
        let hv = HeadVectors::new(HeadId::new(0, 1), q.clone(), q).unwrap();
        assert_eq!(hv.joint().shape(), (6, 4));
    }

    #[test]
    fn head_vectors_joint_is_queries_then_keys() {
        let q = Matrix::from_rows(&[[1.0, 2.0], [3.0, 4.0]]).unwrap();
        let k = Matrix::from_rows(&[[5.0, 6.0], [7.0, 8.0]]).unwrap();
        let hv = HeadVectors::new(HeadId::new(1, 2), q.clone(), k.clone()).unwrap();
        let j = hv.joint();
        assert_eq!(j.shape(), (4, 2));
        assert_eq!(j.as_slice(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(hv.head(), HeadId::new(1, 2));
        assert_eq!(hv.queries(), &q);
        assert_eq!(hv.keys(), &k);
        assert_eq!(hv.into_parts(), (HeadId::new(1, 2), q, k));
    }

    #[test]
    fn head_vectors_zero_tokens_joint_is_0_by_d() {
        let hv =
            HeadVectors::new(HeadId::new(0, 0), Matrix::zeros(0, 5), Matrix::zeros(0, 5)).unwrap();
        assert!(hv.is_empty());
        assert_eq!(hv.dim(), 5);
        assert_eq!(hv.joint().shape(), (0, 5));
    }

    #[test]
    fn head_vectors_serde_round_trip() {
        let q = Matrix::from_rows(&[[1.0, -2.5], [0.25, 4.0], [9.0, 0.0]]).unwrap();
        let k = Matrix::from_rows(&[[0.5, 6.0], [-7.0, 8.125], [1.0, 1.0]]).unwrap();
        let hv = HeadVectors::new(HeadId::new(3, 7), q, k).unwrap();
        let json = serde_json::to_string(&hv).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let obj = value.as_object().unwrap();
        let mut fields: Vec<_> = obj.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["head", "keys", "queries"]);
        let back: HeadVectors = serde_json::from_str(&json).unwrap();
        assert_eq!(back, hv);
    }

    #[test]
    fn head_vectors_deserialize_rejects_mismatched_shapes() {
        let good =
            HeadVectors::new(HeadId::new(0, 1), Matrix::zeros(2, 3), Matrix::zeros(2, 3)).unwrap();
        let mut value = serde_json::to_value(&good).unwrap();
        // Keys with one row fewer than the queries.
        value["keys"] = serde_json::to_value(Matrix::zeros(1, 3)).unwrap();
        let err = serde_json::from_value::<HeadVectors>(value.clone()).unwrap_err();
        assert!(err.to_string().contains("key rows"), "{err}");
        // Keys with another dimension.
        value["keys"] = serde_json::to_value(Matrix::zeros(2, 4)).unwrap();
        let err = serde_json::from_value::<HeadVectors>(value).unwrap_err();
        assert!(err.to_string().contains("key dim"), "{err}");
    }

    #[test]
    fn architecture_serde_is_backward_compatible() {
        // Datasets written before `Imported` existed hold plain strings.
        let old: Architecture = serde_json::from_str("\"gpt2\"").unwrap();
        assert_eq!(old, Architecture::Gpt2);
        assert_eq!(
            serde_json::to_string(&Architecture::Bert).unwrap(),
            "\"bert\""
        );
        for causal in [false, true] {
            let a = Architecture::Imported { causal };
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("{{\"imported\":{{\"causal\":{causal}}}}}"));
            assert_eq!(serde_json::from_str::<Architecture>(&json).unwrap(), a);
            assert_eq!(a.is_causal(), causal);
            assert!(a.is_imported() && !a.is_vision());
        }
        assert_ne!(
            Architecture::Imported { causal: true }.to_string(),
            Architecture::Imported { causal: false }.to_string()
        );
    }

    #[test]
    fn serde_round_trip() {
        let spec = ProjectionSpec {
            method: ProjectionMethod::Umap,
            dims: 3,
            metric: Metric::Cosine,
            seed: 7,
            params: [("n_neighbors".to_string(), 15.0)].into_iter().collect(),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"umap\""));
        let back: ProjectionSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
}
