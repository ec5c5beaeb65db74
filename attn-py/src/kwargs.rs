//! Keyword arguments handed over as a dict, read one by one with their Python types checked; a
//! name left over is a `TypeError`, as Python's own calls do.

use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The keyword arguments of one call (`call` names it in messages). `None` values count as absent.
pub(crate) struct Kwargs<'py> {
    pub(crate) call: &'static str,
    pub(crate) dict: Option<Bound<'py, PyDict>>,
}

impl<'py> Kwargs<'py> {
    /// A copy of `dict` (the caller's stays as it was).
    pub(crate) fn new(call: &'static str, dict: Option<&Bound<'py, PyDict>>) -> PyResult<Self> {
        Ok(Kwargs {
            call,
            dict: dict.map(|d| d.copy()).transpose()?,
        })
    }

    fn take(&self, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(dict) = &self.dict else {
            return Ok(None);
        };
        let value = dict.get_item(name)?;
        if value.is_some() {
            dict.del_item(name)?;
        }
        Ok(value.filter(|v| !v.is_none()))
    }

    fn typed<T>(
        &self,
        name: &str,
        what: &str,
        extract: impl Fn(&Bound<'py, PyAny>) -> PyResult<T>,
    ) -> PyResult<Option<T>> {
        self.take(name)?
            .map(|v| extract(&v).map_err(|_| self.wrong(name, what)))
            .transpose()
    }

    pub(crate) fn f32(&self, name: &str) -> PyResult<Option<f32>> {
        self.typed(name, "a number", |v| v.extract::<f32>())
    }

    pub(crate) fn f64(&self, name: &str) -> PyResult<Option<f64>> {
        self.typed(name, "a number", |v| v.extract::<f64>())
    }

    pub(crate) fn usize(&self, name: &str) -> PyResult<Option<usize>> {
        self.typed(name, "a non-negative integer", |v| v.extract::<usize>())
    }

    pub(crate) fn u64(&self, name: &str) -> PyResult<Option<u64>> {
        self.typed(name, "a non-negative integer", |v| v.extract::<u64>())
    }

    pub(crate) fn bool(&self, name: &str) -> PyResult<Option<bool>> {
        self.typed(name, "True or False", |v| v.extract::<bool>())
    }

    pub(crate) fn string(&self, name: &str) -> PyResult<Option<String>> {
        self.typed(name, "a string", |v| v.extract::<String>())
    }

    pub(crate) fn path(&self, name: &str) -> PyResult<Option<PathBuf>> {
        self.typed(name, "a path", |v| v.extract::<PathBuf>())
    }

    pub(crate) fn strings(&self, name: &str) -> PyResult<Option<Vec<String>>> {
        self.typed(name, "a list of strings", |v| v.extract::<Vec<String>>())
    }

    pub(crate) fn indices(&self, name: &str) -> PyResult<Option<Vec<u16>>> {
        self.typed(name, "a list of indices (0-65535)", |v| {
            v.extract::<Vec<u16>>()
        })
    }

    pub(crate) fn wrong(&self, name: &str, what: &str) -> PyErr {
        PyTypeError::new_err(format!("{}: `{name}` must be {what}", self.call))
    }

    /// Fails on any argument not taken.
    pub(crate) fn finish(self, known: &[&str]) -> PyResult<()> {
        if let Some(dict) = self.dict
            && let Some((key, _)) = dict.iter().next()
        {
            let known = match known {
                [] => "it takes none".to_string(),
                _ => format!("known: {}", known.join(", ")),
            };
            return Err(PyTypeError::new_err(format!(
                "{}: unknown parameter `{key}` ({known})",
                self.call
            )));
        }
        Ok(())
    }
}
