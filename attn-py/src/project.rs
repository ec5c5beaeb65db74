//! The benchmarking entry points: one point set in, coordinates or scores out (attn-project).

use std::sync::Arc;

use attn_project::{
    AttendedKeys, AttentionCeiling, AttentionEdges, Interrupt, Pca, ProjectError, Projector,
    Repulsion, Tsne, TsneInit, Umap, UmapInit,
};
use attn_types::{Matrix, Metric, ProjectionMethod, SequenceAttention, TokenMeta, TokenTable};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::control::run_detached;
use crate::kwargs::Kwargs;
use crate::{AttnvizError, error};

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(project, m)?)?;
    m.add_function(wrap_pyfunction!(fidelity, m)?)?;
    m.add_function(wrap_pyfunction!(quality, m)?)?;
    m.add_function(wrap_pyfunction!(ceiling, m)?)?;
    Ok(())
}

/// A `float32` array as a row-major [`Matrix`] (the one copy the library's input type needs).
pub(crate) fn to_matrix(name: &str, a: &PyReadonlyArray2<'_, f32>) -> PyResult<Matrix> {
    let view = a.as_array();
    let (rows, cols) = view.dim();
    let data: Vec<f32> = match view.as_slice() {
        Some(slice) => slice.to_vec(),
        None => view.iter().copied().collect(),
    };
    Matrix::from_vec(rows, cols, data).map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
}

/// A [`Matrix`] as a NumPy array that owns the matrix's buffer (no copy).
pub(crate) fn to_numpy<'py>(py: Python<'py>, m: Matrix) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (rows, cols) = (m.rows(), m.cols());
    PyArray1::from_vec(py, m.into_vec()).reshape([rows, cols])
}

const TSNE_PARAMS: &[&str] = &[
    "perplexity",
    "iterations",
    "early_exaggeration",
    "exaggeration_iterations",
    "learning_rate",
    "theta",
    "repulsion",
    "init",
    "attention_weight",
    "attention_kl",
];
const UMAP_PARAMS: &[&str] = &[
    "n_neighbors",
    "min_dist",
    "spread",
    "n_epochs",
    "learning_rate",
    "negative_sample_rate",
    "repulsion_strength",
    "init",
    "attention_weight",
    "attention_kl",
];

fn choice<T: Copy>(method: &str, name: &str, value: &str, options: &[(&str, T)]) -> PyResult<T> {
    options
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(value))
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            PyValueError::new_err(format!(
                "{method}: `{name}` is `{value}`; expected one of {}",
                names.join(", ")
            ))
        })
}

/// The projector of `method` with the library's defaults, overridden by `params`; with attention,
/// the attention share and per-query term default to the pipeline's (attnviz's layouts).
fn build_projector(
    method: ProjectionMethod,
    dims: u8,
    seed: u64,
    metric: Metric,
    params: Option<Bound<'_, PyDict>>,
    with_attention: bool,
) -> PyResult<Projector> {
    let settings = attn_pipeline::ProjectionSettings::attnviz(vec![method], vec![dims]);
    let call = match method {
        ProjectionMethod::Tsne => "tsne",
        ProjectionMethod::Umap => "umap",
        ProjectionMethod::Pca => "pca",
    };
    let p = Kwargs::new(call, params.as_ref())?;
    let projector = match method {
        ProjectionMethod::Tsne => {
            let mut b = Tsne::params().dims(dims).seed(seed).metric(metric);
            if with_attention {
                b = b
                    .attention_weight(settings.tsne_attention_weight)
                    .attention_kl(settings.tsne_attention_kl);
            }
            if let Some(v) = p.f32("perplexity")? {
                b = b.perplexity(v);
            }
            if let Some(v) = p.usize("iterations")? {
                b = b.iterations(v);
            }
            if let Some(v) = p.f32("early_exaggeration")? {
                b = b.early_exaggeration(v);
            }
            if let Some(v) = p.usize("exaggeration_iterations")? {
                b = b.exaggeration_iterations(v);
            }
            if let Some(v) = p.f32("learning_rate")? {
                b = b.learning_rate(Some(v));
            }
            if let Some(v) = p.f32("theta")? {
                b = b.theta(v);
            }
            if let Some(v) = p.string("repulsion")? {
                b = b.repulsion(choice(
                    "tsne",
                    "repulsion",
                    &v,
                    &[
                        ("auto", Repulsion::Auto),
                        ("exact", Repulsion::Exact),
                        ("barnes_hut", Repulsion::BarnesHut),
                        ("fft", Repulsion::Fft),
                    ],
                )?);
            }
            if let Some(v) = p.string("init")? {
                b = b.init(choice(
                    "tsne",
                    "init",
                    &v,
                    &[("pca", TsneInit::Pca), ("random", TsneInit::Random)],
                )?);
            }
            if let Some(v) = p.f32("attention_weight")? {
                b = b.attention_weight(v);
            }
            if let Some(v) = p.f32("attention_kl")? {
                b = b.attention_kl(v);
            }
            p.finish(TSNE_PARAMS)?;
            Projector::Tsne(b.check().map_err(|e| error(&e))?)
        }
        ProjectionMethod::Umap => {
            let mut b = Umap::params().dims(dims).seed(seed).metric(metric);
            if with_attention {
                b = b
                    .attention_weight(settings.umap_attention_weight)
                    .attention_kl(settings.umap_attention_kl);
            }
            if let Some(v) = p.usize("n_neighbors")? {
                b = b.n_neighbors(v);
            }
            if let Some(v) = p.f32("min_dist")? {
                b = b.min_dist(v);
            }
            if let Some(v) = p.f32("spread")? {
                b = b.spread(v);
            }
            if let Some(v) = p.usize("n_epochs")? {
                b = b.n_epochs(Some(v));
            }
            if let Some(v) = p.f32("learning_rate")? {
                b = b.learning_rate(v);
            }
            if let Some(v) = p.f32("negative_sample_rate")? {
                b = b.negative_sample_rate(v);
            }
            if let Some(v) = p.f32("repulsion_strength")? {
                b = b.repulsion_strength(v);
            }
            if let Some(v) = p.string("init")? {
                b = b.init(choice(
                    "umap",
                    "init",
                    &v,
                    &[
                        ("pca", UmapInit::Pca),
                        ("spectral", UmapInit::Spectral),
                        ("random", UmapInit::Random),
                    ],
                )?);
            }
            if let Some(v) = p.f32("attention_weight")? {
                b = b.attention_weight(v);
            }
            if let Some(v) = p.f32("attention_kl")? {
                b = b.attention_kl(v);
            }
            p.finish(UMAP_PARAMS)?;
            Projector::Umap(b.check().map_err(|e| error(&e))?)
        }
        ProjectionMethod::Pca => {
            p.finish(&[])?;
            Projector::Pca(
                Pca::params()
                    .dims(dims)
                    .metric(metric)
                    .check()
                    .map_err(|e| error(&e))?,
            )
        }
    };
    Ok(projector)
}

/// One head's attention as the library's inputs: a token table with one sequence per matrix (in
/// order) and the matrices.
fn attention_inputs(
    attention: &[PyReadonlyArray2<'_, f32>],
) -> PyResult<(TokenTable, Vec<SequenceAttention>)> {
    let mut tokens = Vec::new();
    let mut sequences = Vec::with_capacity(attention.len());
    for (i, a) in attention.iter().enumerate() {
        let (rows, cols) = (a.shape()[0], a.shape()[1]);
        if rows != cols || rows == 0 {
            return Err(PyValueError::new_err(format!(
                "attention[{i}]: expected a square len x len matrix, got {rows} x {cols}"
            )));
        }
        let seq_id =
            u32::try_from(i).map_err(|_| PyValueError::new_err("attention: too many sequences"))?;
        let seq_len = u32::try_from(rows)
            .map_err(|_| PyValueError::new_err(format!("attention[{i}]: too long")))?;
        for position in 0..seq_len {
            tokens.push(TokenMeta {
                seq_id,
                position,
                seq_len,
                text: String::new(),
                is_special: false,
                patch: None,
                is_cls: false,
                offsets: None,
            });
        }
        sequences.push(SequenceAttention {
            seq_id,
            weights: to_matrix(&format!("attention[{i}]"), a)?,
        });
    }
    Ok((TokenTable { tokens }, sequences))
}

fn attended(causal: bool, window: Option<usize>) -> AttendedKeys {
    AttendedKeys { causal, window }
}

fn edges_for(
    rows: usize,
    attention: &[PyReadonlyArray2<'_, f32>],
    keys: AttendedKeys,
) -> PyResult<(TokenTable, Vec<SequenceAttention>, AttentionEdges)> {
    let (tokens, sequences) = attention_inputs(attention)?;
    if rows != 2 * tokens.len() {
        return Err(AttnvizError::new_err(format!(
            "attention: the matrices hold {} tokens, so the points must be {} rows (queries, then keys), got {rows}",
            tokens.len(),
            2 * tokens.len()
        )));
    }
    let edges = AttentionEdges::from_attention(&tokens, &sequences, keys).map_err(|e| error(&e))?;
    Ok((tokens, sequences, edges))
}

/// What `project` hands back: coordinates, objective, spec as JSON, the fit's seconds.
type Projected<'py> = (Bound<'py, PyArray2<f32>>, Option<f32>, String, f64);

/// `project(x, method, dims, seed, metric, params, attention, causal, window)` ->
/// `(coords, objective, spec_json, fit_seconds)`: `fit_seconds` is the library's fit alone, so that
/// the bindings' own cost can be measured against it.
#[pyfunction]
#[pyo3(signature = (x, method, dims, seed, metric, params=None, attention=None, causal=false, window=None))]
#[allow(clippy::too_many_arguments)] // Python's keywords, one per argument
fn project<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    method: &str,
    dims: u8,
    seed: u64,
    metric: &str,
    params: Option<Bound<'py, PyDict>>,
    attention: Option<Vec<PyReadonlyArray2<'py, f32>>>,
    causal: bool,
    window: Option<usize>,
) -> PyResult<Projected<'py>> {
    let method: ProjectionMethod = method
        .parse()
        .map_err(|e: attn_types::TypesError| PyValueError::new_err(format!("method: {e}")))?;
    let metric: Metric = metric
        .parse()
        .map_err(|e: attn_types::TypesError| PyValueError::new_err(format!("metric: {e}")))?;
    let projector = build_projector(method, dims, seed, metric, params, attention.is_some())?;
    let data = to_matrix("x", &x)?;
    let edges = match &attention {
        Some(a) => Some(edges_for(data.rows(), a, attended(causal, window))?.2),
        None => None,
    };
    let fit_timed = |projector: &Projector| {
        let start = std::time::Instant::now();
        let fit = match &edges {
            Some(edges) => projector.fit_with_attention(&data, edges),
            None => projector.fit(&data),
        }?;
        Ok::<_, ProjectError>((fit, start.elapsed().as_secs_f64()))
    };
    let (fit, seconds) = match projector {
        // One pass of milliseconds, nothing to interrupt: on this thread, without the GIL (a worker
        // thread cost 5% of a 4 ms PCA of 10,000 points).
        Projector::Pca(_) => py.detach(|| fit_timed(&projector)).map_err(|e| error(&e))?,
        _ => run_detached(py, None, move |cancel, _progress| {
            fit_timed(&projector.with_interrupt(Interrupt::new(Arc::clone(cancel))))
        })?,
    };
    let spec =
        serde_json::to_string(&fit.spec).map_err(|e| AttnvizError::new_err(e.to_string()))?;
    Ok((to_numpy(py, fit.coords)?, fit.objective, spec, seconds))
}

/// `fidelity(layout, queries, keys, attention, causal, window, seed)` -> dict.
#[pyfunction]
#[pyo3(signature = (layout, queries, keys, attention, causal=false, window=None, seed=0))]
#[allow(clippy::too_many_arguments)] // Python's keywords, one per argument
fn fidelity<'py>(
    py: Python<'py>,
    layout: PyReadonlyArray2<'py, f32>,
    queries: PyReadonlyArray2<'py, f32>,
    keys: PyReadonlyArray2<'py, f32>,
    attention: Vec<PyReadonlyArray2<'py, f32>>,
    causal: bool,
    window: Option<usize>,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let (tokens, sequences) = attention_inputs(&attention)?;
    let layout = to_matrix("layout", &layout)?;
    let queries = to_matrix("queries", &queries)?;
    let keys = to_matrix("keys", &keys)?;
    let f = run_detached(py, None, |_, _| {
        attn_project::fidelity(
            attn_project::FidelitySpace::Layout(&layout),
            &queries,
            &keys,
            &tokens,
            &sequences,
            attended(causal, window),
            seed,
        )
    })?;
    let out = PyDict::new(py);
    out.set_item("fidelity", f.fidelity)?;
    out.set_item("hit_at_3", f.hit_at_3)?;
    out.set_item("chance_at_3", f.chance_at_3)?;
    out.set_item("global_fidelity", f.global_fidelity)?;
    out.set_item("queries", f.queries)?;
    Ok(out)
}

/// `quality(x, y, k, metric)` -> dict of trustworthiness, continuity and kNN recall at `k`.
#[pyfunction]
fn quality<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    y: PyReadonlyArray2<'py, f32>,
    k: usize,
    metric: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let metric: Metric = metric
        .parse()
        .map_err(|e: attn_types::TypesError| PyValueError::new_err(format!("metric: {e}")))?;
    let (x, y) = (to_matrix("x", &x)?, to_matrix("y", &y)?);
    let q = run_detached(py, None, |_, _| attn_project::quality(&x, &y, k, metric))?;
    let out = PyDict::new(py);
    out.set_item("trustworthiness", q.trustworthiness)?;
    out.set_item("continuity", q.continuity)?;
    out.set_item("knn_recall", q.knn_recall)?;
    out.set_item("k", q.k)?;
    Ok(out)
}

/// `ceiling(attention, dims, seed, causal, window)` -> `(coords, attention_kl)`: the layout that
/// shows attention best, made from the attention alone.
#[pyfunction]
#[pyo3(signature = (attention, dims=2, seed=0, causal=false, window=None))]
fn ceiling<'py>(
    py: Python<'py>,
    attention: Vec<PyReadonlyArray2<'py, f32>>,
    dims: u8,
    seed: u64,
    causal: bool,
    window: Option<usize>,
) -> PyResult<(Bound<'py, PyArray2<f32>>, Option<f64>)> {
    let (tokens, sequences) = attention_inputs(&attention)?;
    let edges = AttentionEdges::from_attention(&tokens, &sequences, attended(causal, window))
        .map_err(|e| error(&e))?;
    let params = AttentionCeiling::params().dims(dims).seed(seed);
    // Checked before the work, so that a bad argument is not reported after it.
    params.clone().check().map_err(|e| error(&e))?;
    let c = run_detached(py, None, |cancel, _| {
        let params = params
            .interrupt(Interrupt::new(Arc::clone(cancel)))
            .check()?;
        params.fit(&edges)
    })?;
    Ok((to_numpy(py, c.coords)?, c.attention_kl))
}
