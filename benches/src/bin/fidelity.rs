//! Attention fidelity of every layout setting, side by side: does nearness in the picture mean
//! attention? For each model, the heads are extracted once (through attn-pipeline, into
//! `OUT/data/<model>`), then laid out with every setting below; per setting the table gives the mean
//! over the heads of fidelity (per-query Spearman of closeness vs attention), hit@3 (the most-attended
//! key among the query's 3 nearest keys; chance beside it), global fidelity (closeness vs logits
//! across sequences), trustworthiness@10 and seconds per layout. The input spaces (cosine distance
//! of the raw and of the normalized vectors) come first: what the normalization and the projection
//! each lose.
//!
//! ```text
//! cargo run -p attnviz-benches --bin fidelity -- --model <MiniLM dir> --model <gpt2 fixture> ...
//! ```
//!
//! Options: `--model [NAME=]DIR` (repeatable; `attnviz fetch-model --print-dir` prints MiniLM's), `--heads
//! N` (heads per layer, evenly spaced: 3 gives 0, 4, 8 of 12; default 3), `--max-sequences N`,
//! `--weights 0.05,0.1,0.2` (attention shares tried), `--tsne-kl 0.1,0.3,1` and `--umap-kl 1,3,10`
//! (weights of the per-query attention term tried, alone and with attnviz's share 0.1), `--kl-only`
//! (only those rows), `--out DIR` (default
//! `target/fidelity-bench`), `--results DIR` (where `fidelity-<date>.{md,json}` go; default
//! `benches/results`), `--plot-from FILE.json` (only redraw the trade-off plots of a results file).
//! Settings: `paper` = the research code (`technique.md` §3: normalized
//! vectors, t-SNE perplexity 50 x 300 iterations, UMAP random init); `attnviz 0.1` = the
//! defaults before attention-aware layouts (normalized, perplexity 30 x 750, UMAP PCA init); then
//! raw vectors, and each attention share on raw and normalized vectors (attnviz's defaults now:
//! raw + 0.1).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use attn_pipeline::{
    AttentionKeep, Control, CorpusInput, HeadLayoutInput, LayoutVectors, ProjectionSettings,
    RunPlan, layout_head,
};
use attn_store::Dataset;
use attn_types::{Fidelity, HeadId, ProjectionMethod};
use attnviz_benches::{machine_record, write_results};

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    /// `DIR` or `NAME=DIR`.
    models: Vec<String>,
    heads_per_layer: u16,
    max_sequences: Option<usize>,
    weights: Vec<f32>,
    tsne_kl: Vec<f32>,
    umap_kl: Vec<f32>,
    kl_only: bool,
    out: PathBuf,
    results: PathBuf,
    plot_from: Option<PathBuf>,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        models: Vec::new(),
        heads_per_layer: 3,
        max_sequences: None,
        weights: vec![0.05, 0.1, 0.2, 0.3],
        tsne_kl: vec![0.1, 0.3, 1.0],
        umap_kl: vec![1.0, 3.0, 10.0],
        kl_only: false,
        out: PathBuf::from("target/fidelity-bench"),
        results: PathBuf::from("benches/results"),
        plot_from: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.models.push(value()?),
            "--heads" => {
                a.heads_per_layer = value()?.parse().map_err(|e| format!("--heads: {e}"))?
            }
            "--max-sequences" => {
                a.max_sequences = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--max-sequences: {e}"))?,
                )
            }
            "--weights" => a.weights = list(&flag, &value()?)?,
            "--tsne-kl" => a.tsne_kl = list(&flag, &value()?)?,
            "--umap-kl" => a.umap_kl = list(&flag, &value()?)?,
            "--kl-only" => a.kl_only = true,
            "--out" => a.out = PathBuf::from(value()?),
            "--results" => a.results = PathBuf::from(value()?),
            "--plot-from" => a.plot_from = Some(PathBuf::from(value()?)),
            other => {
                return Err(format!(
                    "unknown option {other} (see the top of benches/src/bin/fidelity.rs)"
                )
                .into());
            }
        }
    }
    if a.models.is_empty() && a.plot_from.is_none() {
        return Err("pass --model DIR at least once".into());
    }
    Ok(a)
}

/// A comma-separated list of numbers given to `flag`.
fn list(flag: &str, value: &str) -> Res<Vec<f32>> {
    value
        .split(',')
        .filter(|w| !w.trim().is_empty())
        .map(|w| {
            w.trim()
                .parse::<f32>()
                .map_err(|e| format!("{flag} `{w}`: {e}").into())
        })
        .collect()
}

/// One row of the table: a layout setting.
struct Setting {
    name: String,
    method: ProjectionMethod,
    settings: ProjectionSettings,
    /// `(series, parameter)` when the row is a point of a trade-off curve.
    curve: Option<(Series, f32)>,
}

/// A trade-off curve of the plot: the attention share `w` on normalized or raw vectors, or the
/// per-query term's weight `lambda` on raw vectors at attnviz's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Series {
    Normalized,
    Raw,
    RawKl,
}

impl Series {
    fn of(vectors: LayoutVectors) -> Self {
        match vectors {
            LayoutVectors::Normalized => Series::Normalized,
            LayoutVectors::Raw => Series::Raw,
        }
    }
    fn color(self) -> &'static str {
        match self {
            Series::Normalized => "#1b7837",
            Series::Raw => "#762a83",
            Series::RawKl => "#e66101",
        }
    }
}

fn settings_to_try(args: &Args) -> Vec<Setting> {
    let methods = vec![ProjectionMethod::Tsne, ProjectionMethod::Umap];
    // The defaults before attention-aware layouts: normalized vectors, no attention edges, no
    // per-query term; the ceiling is computed once per head, apart from the rows.
    let plain = ProjectionSettings {
        tsne_attention_weight: 0.0,
        umap_attention_weight: 0.0,
        tsne_attention_kl: 0.0,
        umap_attention_kl: 0.0,
        ceiling: false,
        vectors: LayoutVectors::Normalized,
        ..ProjectionSettings::attnviz(methods.clone(), vec![2])
    };
    let weighted = |w: f32, vectors| ProjectionSettings {
        tsne_attention_weight: w,
        umap_attention_weight: w,
        vectors,
        ..plain.clone()
    };
    let mut out = Vec::new();
    for method in [ProjectionMethod::Tsne, ProjectionMethod::Umap] {
        let m = method.as_str();
        let mut push = |name: String, settings: ProjectionSettings, curve| {
            out.push(Setting {
                name,
                method,
                settings,
                curve,
            })
        };
        push(
            format!("{m} paper"),
            ProjectionSettings::paper(methods.clone(), vec![2]),
            None,
        );
        push(
            format!("{m} attnviz 0.1 (normalized)"),
            plain.clone(),
            Some((Series::Normalized, 0.0)),
        );
        push(
            format!("{m} raw"),
            ProjectionSettings {
                vectors: LayoutVectors::Raw,
                ..plain.clone()
            },
            Some((Series::Raw, 0.0)),
        );
        for &w in &args.weights {
            for vectors in [LayoutVectors::Raw, LayoutVectors::Normalized] {
                let v = if vectors == LayoutVectors::Raw {
                    "raw"
                } else {
                    "normalized"
                };
                push(
                    format!("{m} {v} + attention {w}"),
                    weighted(w, vectors),
                    Some((Series::of(vectors), w)),
                );
            }
        }
        // The per-query attention term on raw vectors: alone, and with attnviz's attention share.
        let lambdas = match method {
            ProjectionMethod::Tsne => &args.tsne_kl,
            _ => &args.umap_kl,
        };
        let attnviz = ProjectionSettings::attnviz(Vec::new(), vec![2]);
        let default_share = match method {
            ProjectionMethod::Tsne => attnviz.tsne_attention_weight,
            _ => attnviz.umap_attention_weight,
        };
        for &lambda in lambdas {
            for w in [0.0, default_share] {
                let name = if w == 0.0 {
                    format!("{m} raw + kl {lambda}")
                } else {
                    format!("{m} raw + attention {w} + kl {lambda}")
                };
                push(
                    name,
                    ProjectionSettings {
                        tsne_attention_kl: lambda,
                        umap_attention_kl: lambda,
                        ..weighted(w, LayoutVectors::Raw)
                    },
                    (w > 0.0).then_some((Series::RawKl, lambda)),
                );
            }
        }
    }
    out.push(Setting {
        name: "pca normalized".into(),
        method: ProjectionMethod::Pca,
        settings: plain.clone(),
        curve: None,
    });
    out.push(Setting {
        name: "pca raw".into(),
        method: ProjectionMethod::Pca,
        settings: ProjectionSettings {
            vectors: LayoutVectors::Raw,
            ..plain
        },
        curve: None,
    });
    out
}

/// Means over heads of one row's numbers.
#[derive(Default, Clone)]
struct Row {
    fidelity: Vec<f32>,
    hit: Vec<f32>,
    chance: Vec<f32>,
    global: Vec<f32>,
    trust: Vec<f32>,
    seconds: Vec<f32>,
    /// Per head, hit@3 over the head's 2-D ceiling hit@3.
    ceiling_share: Vec<f32>,
}

impl Row {
    fn add(&mut self, f: &Fidelity, trust: Option<f32>, seconds: f64, ceiling: Option<&Fidelity>) {
        self.fidelity.extend(f.fidelity);
        self.hit.extend(f.hit_at_3);
        self.chance.extend(f.chance_at_3);
        self.global.extend(f.global_fidelity);
        self.trust.extend(trust);
        self.seconds.push(seconds as f32);
        if let (Some(hit), Some(top)) = (f.hit_at_3, ceiling.and_then(|c| c.hit_at_3))
            && top > 0.0
        {
            self.ceiling_share.push(hit / top);
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "fidelity": mean(&self.fidelity), "hit_at_3": mean(&self.hit), "chance_at_3": mean(&self.chance),
            "global_fidelity": mean(&self.global), "trustworthiness_10": mean(&self.trust),
            "seconds": mean(&self.seconds), "heads": self.seconds.len(),
            "share_of_ceiling_hit_at_3": mean(&self.ceiling_share),
        })
    }
}

fn mean(v: &[f32]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64)
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3}"))
}

/// Extracts (or resumes) the heads of `model` into `dir`, without projections.
fn extract(
    model: &Path,
    dir: &Path,
    heads_per_layer: u16,
    max_sequences: Option<usize>,
) -> Res<Dataset> {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json"))?)?;
    let heads = ["num_attention_heads", "n_head"]
        .iter()
        .find_map(|k| config[k].as_u64())
        .ok_or("config.json: no head count")? as u16;
    let step = (heads / heads_per_layer.max(1)).max(1);
    let plan = RunPlan {
        model_dir: model.to_path_buf(),
        model_id: None,
        corpus: CorpusInput::Builtin,
        text_field: "text".into(),
        max_sequences,
        out: dir.to_path_buf(),
        backend: "flex".into(),
        batch_size: 16,
        truncate: true,
        rope: Default::default(),
        attention_keep: AttentionKeep::Auto,
        attention_memory: RunPlan::DEFAULT_ATTENTION_MEMORY,
        normalize: true,
        layers: None,
        heads: Some(
            (0..heads)
                .step_by(usize::from(step))
                .take(usize::from(heads_per_layer))
                .collect(),
        ),
        shard: None,
        projection: ProjectionSettings::attnviz(Vec::new(), vec![2]),
    };
    let cancel = AtomicBool::new(false);
    attn_pipeline::run(&plan, Control::new(&cancel, &|_| {}))?;
    Ok(Dataset::open(dir)?)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fidelity: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Res<()> {
    let args = parse_args()?;
    if let Some(path) = &args.plot_from {
        // Redraws the trade-off plots of an earlier results file, next to it.
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for (model, rows) in json["results"].as_object().ok_or("no `results` object")? {
            let rows = rows
                .as_object()
                .ok_or("a model's results are not an object")?;
            let svg = dir.join(format!("fidelity-tradeoff-{model}.svg"));
            std::fs::write(&svg, tradeoff_svg(model, &curve_points_of_json(rows)))?;
            eprintln!("plot: {}", svg.display());
        }
        return Ok(());
    }
    let mut settings = settings_to_try(&args);
    if args.kl_only {
        settings.retain(|s| s.name.contains(" kl "));
    }
    let mut report = serde_json::Map::new();
    let mut md = String::new();
    for model in &args.models {
        let (name, model) = match model.split_once('=') {
            Some((name, dir)) => (name.to_string(), PathBuf::from(dir)),
            None => {
                let dir = PathBuf::from(model);
                (
                    dir.file_name()
                        .map_or("model".into(), |n| n.to_string_lossy().into_owned()),
                    dir,
                )
            }
        };
        let model = model.as_path();
        let dataset = extract(
            model,
            &args.out.join("data").join(&name),
            args.heads_per_layer,
            args.max_sequences,
        )?;
        let tokens = dataset.read_tokens()?;
        let causal = dataset.meta().model.architecture.is_causal();
        let keys = attn_pipeline::attended_keys(&dataset.meta().model)?;
        let heads: Vec<HeadId> = dataset.heads()?;
        let mut rows: BTreeMap<usize, Row> = BTreeMap::new();
        let (mut input_raw, mut input_norm) = (Row::default(), Row::default());
        let mut ceiling_row = Row::default();
        for (h, &head) in heads.iter().enumerate() {
            eprintln!("{name}: head {head} ({}/{})", h + 1, heads.len());
            let input = HeadLayoutInput::read(&dataset, head)?;
            if let Some((_, d)) = dataset.read_head_normalization(head)? {
                if let Some(f) = d.fidelity_raw {
                    input_raw.add(&f, None, 0.0, None)
                }
                if let Some(f) = d.fidelity_normalized {
                    input_norm.add(&f, None, 0.0, None)
                }
            }
            // The head's 2-D ceiling, once (every row's layouts compute the same one).
            let ceiling = match attn_project::AttentionEdges::from_attention(
                &tokens,
                &input.attention,
                keys(head),
            ) {
                Ok(edges) if !edges.is_empty() => {
                    let start = std::time::Instant::now();
                    let c = attn_pipeline::head_ceiling(
                        &input,
                        &tokens,
                        keys(head),
                        &edges,
                        2,
                        0,
                        Default::default(),
                    )?;
                    if let Some(c) = &c {
                        ceiling_row.add(c, None, start.elapsed().as_secs_f64(), None);
                    }
                    c
                }
                _ => None,
            };
            for (i, s) in settings.iter().enumerate() {
                let projector = attn_pipeline::projector(&s.settings, s.method, 2)?;
                let row = rows.entry(i).or_default();
                layout_head(
                    &input,
                    &tokens,
                    keys(head),
                    &[&projector],
                    &s.settings,
                    &|| false,
                    &mut |p, seconds| {
                        let f = p.fidelity.unwrap_or_default();
                        row.add(
                            &f,
                            p.quality.map(|q| q.trustworthiness),
                            seconds,
                            ceiling.as_ref(),
                        );
                        Ok(())
                    },
                )?;
            }
        }
        let n_tokens = tokens.len();
        md.push_str(&format!(
            "\n### {name} ({} heads, {n_tokens} tokens per head, {})\n\n| setting | fidelity | hit@3 | chance | global fidelity | trust@10 | s / layout | share of the 2-D ceiling's hit@3 |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
            heads.len(),
            if causal { "causal" } else { "bidirectional" }
        ));
        let mut model_json = serde_json::Map::new();
        for (label, row) in [
            ("input: raw vectors, cosine", &input_raw),
            ("input: normalized vectors, cosine", &input_norm),
        ] {
            md.push_str(&format!(
                "| {label} | {} | {} | {} | {} | - | - | - |\n",
                fmt(mean(&row.fidelity)),
                fmt(mean(&row.hit)),
                fmt(mean(&row.chance)),
                fmt(mean(&row.global))
            ));
            model_json.insert(label.into(), row.json());
        }
        let label = "2-D ceiling (attention term alone)";
        md.push_str(&format!(
            "| {label} | {} | {} | {} | {} | - | {} | 1 |\n",
            fmt(mean(&ceiling_row.fidelity)),
            fmt(mean(&ceiling_row.hit)),
            fmt(mean(&ceiling_row.chance)),
            fmt(mean(&ceiling_row.global)),
            fmt(mean(&ceiling_row.seconds))
        ));
        model_json.insert(label.into(), ceiling_row.json());
        for (i, row) in &rows {
            let s = &settings[*i];
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                s.name,
                fmt(mean(&row.fidelity)),
                fmt(mean(&row.hit)),
                fmt(mean(&row.chance)),
                fmt(mean(&row.global)),
                fmt(mean(&row.trust)),
                fmt(mean(&row.seconds)),
                fmt(mean(&row.ceiling_share))
            ));
            model_json.insert(s.name.clone(), row.json());
        }
        let svg_name = format!("fidelity-tradeoff-{name}.svg");
        std::fs::create_dir_all(&args.results)?;
        std::fs::write(
            args.results.join(&svg_name),
            tradeoff_svg(&name, &curve_points(&settings, &rows)),
        )?;
        md.push_str(&format!("\n![{name}: hit@3 and fidelity against trustworthiness as the attention share grows]({svg_name})\n"));
        report.insert(name, serde_json::Value::Object(model_json));
    }
    println!("{md}");
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let json =
        serde_json::json!({ "machine": machine_record(), "command": command, "results": report });
    let label = format!(
        "fidelity-{}",
        report.keys().cloned().collect::<Vec<_>>().join("-")
    );
    let (md_path, _) = write_results(&args.results, &label, &md, &json)?;
    eprintln!("results: {}", md_path.display());
    Ok(())
}

/// The trade-off as a plot: per method, hit@3 (filled) and fidelity (hollow) against
/// trustworthiness@10 as the attention share `w` grows, for raw and normalized vectors.
/// One point of a trade-off curve: method, series, its parameter, trust@10, hit@3, fidelity.
type CurvePoint = (ProjectionMethod, Series, f32, f64, f64, f64);

/// The per-query term's curve starts (lambda 0) at the raw vectors' point of attnviz's share.
fn with_kl_origins(mut points: Vec<CurvePoint>) -> Vec<CurvePoint> {
    let attnviz = ProjectionSettings::attnviz(Vec::new(), vec![2]);
    let share = |method| match method {
        ProjectionMethod::Tsne => attnviz.tsne_attention_weight,
        _ => attnviz.umap_attention_weight,
    };
    let origins: Vec<CurvePoint> = points
        .iter()
        .filter(|p| p.1 == Series::Raw && p.2 == share(p.0))
        .filter(|p| points.iter().any(|q| q.0 == p.0 && q.1 == Series::RawKl))
        .map(|p| (p.0, Series::RawKl, 0.0, p.3, p.4, p.5))
        .collect();
    points.extend(origins);
    points
}

/// The curve points of a run's rows.
fn curve_points(settings: &[Setting], rows: &BTreeMap<usize, Row>) -> Vec<CurvePoint> {
    let points = settings
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let (v, w) = s.curve?;
            let r = rows.get(&i)?;
            Some((
                s.method,
                v,
                w,
                mean(&r.trust)?,
                mean(&r.hit)?,
                mean(&r.fidelity)?,
            ))
        })
        .collect();
    with_kl_origins(points)
}

/// The curve points of a results file written by this program (`--plot-from`): rows named
/// `<method> raw`, `<method> attnviz 0.1 (normalized)` (share 0), `<method> <vectors> + attention
/// <w>` and `<method> raw + attention <w> + kl <lambda>`.
fn curve_points_of_json(rows: &serde_json::Map<String, serde_json::Value>) -> Vec<CurvePoint> {
    let points = rows
        .iter()
        .filter_map(|(name, r)| {
            let (method, rest) = name.split_once(' ')?;
            let method: ProjectionMethod = method.parse().ok()?;
            let (vectors, w) = match rest {
                "raw" => (Series::Raw, 0.0),
                "attnviz 0.1 (normalized)" => (Series::Normalized, 0.0),
                _ => {
                    let (v, w) = rest.split_once(" + attention ")?;
                    match (v, w.split_once(" + kl ")) {
                        ("raw", Some((_, lambda))) => (Series::RawKl, lambda.parse().ok()?),
                        ("raw", None) => (Series::Raw, w.parse().ok()?),
                        (_, None) => (Series::Normalized, w.parse().ok()?),
                        _ => return None,
                    }
                }
            };
            Some((
                method,
                vectors,
                w,
                r["trustworthiness_10"].as_f64()?,
                r["hit_at_3"].as_f64()?,
                r["fidelity"].as_f64()?,
            ))
        })
        .collect();
    with_kl_origins(points)
}

fn tradeoff_svg(model: &str, all: &[CurvePoint]) -> String {
    let (w, h, pad) = (760.0, 370.0, 50.0);
    let panel = (w - 3.0 * pad) / 2.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{pad}\" y=\"16\" font-size=\"12\">{model}: hit@3 (filled) and fidelity (hollow) against trustworthiness@10</text><text x=\"{pad}\" y=\"30\">attention share w (green: normalized vectors, purple: raw); the per-query term's lambda at w = 0.1 (orange)</text>"
    );
    for (p, method) in [ProjectionMethod::Tsne, ProjectionMethod::Umap]
        .into_iter()
        .enumerate()
    {
        let points: Vec<(Series, f32, f64, f64, f64)> = all
            .iter()
            .filter(|p| p.0 == method)
            .map(|p| (p.1, p.2, p.3, p.4, p.5))
            .collect();
        if points.is_empty() {
            continue;
        }
        let (tmin, tmax) = points
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.2), b.max(p.2)));
        let (tmin, tmax) = (tmin - 0.002, tmax + 0.002);
        let x0 = pad + p as f64 * (panel + pad);
        let (y0, y1) = (h - pad, 50.0);
        let x = |t: f64| x0 + (t - tmin) / (tmax - tmin) * panel;
        let y = |v: f64| y0 - v.clamp(0.0, 1.0) * (y0 - y1);
        out.push_str(&format!(
            "<rect x=\"{x0}\" y=\"{y1}\" width=\"{panel}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/><text x=\"{}\" y=\"{}\">{}</text><text x=\"{x0}\" y=\"{}\">trust {tmin:.3}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{tmax:.3}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">1</text><text x=\"{}\" y=\"{y0}\" text-anchor=\"end\">0</text>",
            y0 - y1, x0 + 4.0, y1 + 14.0, method.as_str(), y0 + 16.0, x0 + panel, y0 + 16.0, x0 - 4.0, y1 + 4.0, x0 - 4.0
        ));
        for vectors in [Series::Normalized, Series::Raw, Series::RawKl] {
            let color = vectors.color();
            let mut curve: Vec<_> = points.iter().filter(|q| q.0 == vectors).collect();
            curve.sort_by(|a, b| a.1.total_cmp(&b.1));
            for (value, fill) in [(3usize, color), (4, "white")] {
                let path: Vec<String> = curve
                    .iter()
                    .map(|q| format!("{:.1},{:.1}", x(q.2), y(if value == 3 { q.3 } else { q.4 })))
                    .collect();
                out.push_str(&format!(
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\"/>",
                    path.join(" ")
                ));
                for q in &curve {
                    let v = if value == 3 { q.3 } else { q.4 };
                    out.push_str(&format!(
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{fill}\" stroke=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\" font-size=\"9\">{}</text>",
                        x(q.2), y(v), x(q.2) + 5.0, y(v) - 4.0, q.1
                    ));
                }
            }
        }
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" fill=\"#1b7837\">normalized vectors</text><text x=\"{}\" y=\"{}\" fill=\"#762a83\">raw vectors</text>",
            x0 + 4.0, y0 - 20.0, x0 + 4.0, y0 - 6.0
        ));
    }
    out.push_str("</svg>\n");
    out
}
