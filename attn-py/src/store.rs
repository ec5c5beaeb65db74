//! Reading a dataset's heads as NumPy arrays (attn-store), for what pyarrow alone cannot give:
//! grouped-query keys put back beside their query heads and normalized keys recomputed bit for bit
//! as the normalizer made them, and attention as dense per-sequence matrices.

use std::path::Path;

use attn_store::Dataset;
use attn_types::{HeadId, ProjectionMethod};
use numpy::PyArray2;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::project::to_numpy;
use crate::{AttnvizError, error};

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_head, m)?)?;
    m.add_function(wrap_pyfunction!(read_attention, m)?)?;
    m.add_function(wrap_pyfunction!(read_projection, m)?)?;
    Ok(())
}

fn open(path: &Path) -> PyResult<Dataset> {
    Dataset::open(path).map_err(|e| error(&e))
}

/// `read_head(path, layer, head)` -> dict: `queries`, `keys` (raw, `n x d` float32) and, when the
/// head was normalized, `queries_normalized`, `keys_normalized`, `key_translation`, `scale`.
#[pyfunction]
fn read_head<'py>(
    py: Python<'py>,
    path: &str,
    layer: u16,
    head: u16,
) -> PyResult<Bound<'py, PyDict>> {
    let dataset = open(Path::new(path))?;
    let stored = py
        .detach(|| dataset.read_head(HeadId { layer, head }))
        .map_err(|e| error(&e))?;
    let out = PyDict::new(py);
    let (_, queries, keys) = stored.raw.into_parts();
    out.set_item("queries", to_numpy(py, queries)?)?;
    out.set_item("keys", to_numpy(py, keys)?)?;
    if let Some(normalized) = stored.normalized {
        let (_, queries, keys) = normalized.vectors.into_parts();
        out.set_item("queries_normalized", to_numpy(py, queries)?)?;
        out.set_item("keys_normalized", to_numpy(py, keys)?)?;
        out.set_item("key_translation", normalized.params.key_translation)?;
        out.set_item("scale", normalized.params.scale)?;
    }
    Ok(out)
}

/// `read_attention(path, layer, head)` -> one `len x len` float32 matrix per sequence, in token
/// order (empty when the head has no stored attention).
#[pyfunction]
fn read_attention<'py>(
    py: Python<'py>,
    path: &str,
    layer: u16,
    head: u16,
) -> PyResult<Vec<Bound<'py, PyArray2<f32>>>> {
    let dataset = open(Path::new(path))?;
    let head = HeadId { layer, head };
    if !dataset.has_attention(head) {
        return Ok(Vec::new());
    }
    let attention = py
        .detach(|| dataset.read_attention(head))
        .map_err(|e| error(&e))?;
    attention
        .into_iter()
        .map(|a| to_numpy(py, a.weights))
        .collect()
}

/// `read_projection(path, layer, head, method, dims)` -> `(coords, record_json)`: the `2n x dims`
/// layout (queries, then keys) and its spec, quality, fidelity and ceiling.
#[pyfunction]
fn read_projection<'py>(
    py: Python<'py>,
    path: &str,
    layer: u16,
    head: u16,
    method: &str,
    dims: u8,
) -> PyResult<(Bound<'py, PyArray2<f32>>, String)> {
    let method: ProjectionMethod = method
        .parse()
        .map_err(|e: attn_types::TypesError| AttnvizError::new_err(format!("method: {e}")))?;
    let dataset = open(Path::new(path))?;
    let p = py
        .detach(|| dataset.read_projection(HeadId { layer, head }, method, dims))
        .map_err(|e| error(&e))?;
    let record = serde_json::json!({
        "spec": p.spec,
        "objective": p.objective,
        "quality": p.quality,
        "fidelity": p.fidelity,
        "ceiling": p.ceiling,
    });
    Ok((to_numpy(py, p.coords)?, record.to_string()))
}
