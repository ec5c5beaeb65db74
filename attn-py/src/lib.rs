//! `attnviz._attnviz`: the native module of the Python package `attnviz`, a thin layer over the
//! library crates (attn-project, attn-pipeline, attn-store, attn-viewer) and the command line
//! (attn-cli). The Python package (`attn-py/python/attnviz`) gives it its documented interface;
//! nothing here is meant to be called directly.
//!
//! Conventions: arrays come in as NumPy `float32` (one copy into the library's row-major
//! [`attn_types::Matrix`] where a call needs it) and go out without a copy (the result's buffer
//! becomes the array's); long calls release the GIL and run on a worker thread ([`control`]) so
//! that Ctrl-C and progress callbacks work; every library error is an [`AttnvizError`] carrying
//! the same one line the command line prints.

mod control;
mod kwargs;
mod pipeline;
mod project;
mod store;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(
    _attnviz,
    AttnvizError,
    PyValueError,
    "An attnviz call failed; the message names the file, argument, tensor or field at fault."
);

/// A library error as [`AttnvizError`], with its chain of causes on one line.
pub(crate) fn error(e: &(dyn std::error::Error + 'static)) -> PyErr {
    AttnvizError::new_err(attn_pipeline::error_chain(e))
}

/// Runs the `attnviz` command line with `argv` (program name first) and returns its exit code.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<std::ffi::OsString>) -> u8 {
    // The command installs its own Ctrl-C handler and prints its own progress: it owns the process
    // (the `attnviz` console script, `attnviz.cli`).
    py.detach(|| attn_cli::main_from(argv))
}

#[pymodule]
fn _attnviz(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("AttnvizError", m.py().get_type::<AttnvizError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    project::register(m)?;
    pipeline::register(m)?;
    store::register(m)?;
    Ok(())
}
