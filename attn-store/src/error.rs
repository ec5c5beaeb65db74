//! The one error type of the crate.

use std::path::PathBuf;

/// Linux's `errno` for "no space left on device".
const ENOSPC: i32 = 28;
/// Linux's `errno` for "disk quota exceeded" (the usual full disk of shared file systems).
const EDQUOT: i32 = 122;

/// Whether an I/O error is the file system's "no space left on device" or "quota exceeded".
pub(crate) fn io_is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// Everything that can go wrong reading or writing a dataset. Every variant names the file (`path`)
/// and, where there is one, the column, JSON field or metadata key involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operating-system error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file the operation needs does not exist (e.g. a head that was never written).
    #[error("{path}: {what} does not exist")]
    NotFound {
        /// The missing file.
        path: PathBuf,
        /// What it would have held (e.g. `vectors of head L0H1`).
        what: String,
    },
    /// The file system has no space left: `path` (the file being written) was not written; files
    /// written before it are complete and kept.
    #[error(
        "{path}: the disk is full (no space left on the device, or the quota is used up); the file was not written"
    )]
    DiskFull {
        /// The file that could not be written.
        path: PathBuf,
    },
    /// The Parquet writer failed.
    #[error("{path}: writing the Parquet file failed: {source}")]
    ParquetWrite {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// The Parquet reader failed: a truncated or corrupt file, most often.
    #[error("{path}: not a readable Parquet file ({source})")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// Building an Arrow array or batch failed.
    #[error("{path}: Arrow error in `{field}`: {source}")]
    Arrow {
        /// The file being written.
        path: PathBuf,
        /// The column being built.
        field: String,
        /// The underlying error.
        source: arrow_schema::ArrowError,
    },
    /// A required column is absent from a Parquet file.
    #[error("{path}: column `{column}` is missing")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column's name.
        column: String,
    },
    /// A requested column is absent; `available` lists the file's columns.
    #[error("{path}: no column `{column}` (columns: {available})")]
    NoSuchColumn {
        /// The file.
        path: PathBuf,
        /// The column's name.
        column: String,
        /// Comma-separated names of the columns that do exist.
        available: String,
    },
    /// A column has an unexpected Arrow type.
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column's name.
        column: String,
        /// The type(s) accepted.
        expected: String,
        /// The type found.
        found: String,
    },
    /// A value is out of range or inconsistent (a null where none is allowed, a ragged vector,
    /// a shape that disagrees with another), on reading or on writing.
    #[error("{path}: `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The column, JSON field or metadata key.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// JSON (meta.json or a Parquet key-value metadata entry) that does not parse or lacks a field.
    #[error("{path}: JSON `{field}`: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON document or field (e.g. `meta.json`, `attnviz.projection.spec`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The data was written by a newer data model than this reader knows.
    #[error(
        "{path}: schema_version {found} is newer than the supported version {supported}; upgrade attnviz"
    )]
    FutureVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// [`attn_types::DATA_MODEL_VERSION`].
        supported: u32,
    },
    /// `Dataset::create` found an existing dataset made for a different model.
    #[error(
        "{path}: existing dataset differs in `{field}`: it has {existing}, this run has {requested}"
    )]
    Incompatible {
        /// The existing `meta.json`.
        path: PathBuf,
        /// The field that differs (e.g. `model.id`).
        field: String,
        /// The value on disk.
        existing: String,
        /// The value of this run.
        requested: String,
    },
    /// A `.npy` file whose preamble or header dictionary cannot be parsed.
    #[error("{path}: not a readable .npy file: {message}")]
    NpyHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A `.npy` file of an element type other than little-endian float16/32/64.
    #[error(
        "{path}: dtype `{dtype}` is not supported; expected little-endian float32 (`<f4`), float16 (`<f2`) or float64 (`<f8`), e.g. `np.save(path, a.astype(np.float32))`"
    )]
    NpyDtype {
        /// The file.
        path: PathBuf,
        /// The header's `descr`.
        dtype: String,
    },
    /// A `.npy` file stored in Fortran (column-major) order.
    #[error(
        "{path}: the array is in Fortran order; save it in C order (`np.save(path, np.ascontiguousarray(a))`)"
    )]
    NpyFortranOrder {
        /// The file.
        path: PathBuf,
    },
    /// A `.npy` file whose data size disagrees with its header's shape (truncated, most often).
    #[error(
        "{path}: shape {shape:?} of {dtype} needs {expected} data bytes, the file holds {found} (truncated or corrupt)"
    )]
    NpySize {
        /// The file.
        path: PathBuf,
        /// The header's shape.
        shape: Vec<usize>,
        /// The header's element type.
        dtype: &'static str,
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes after the header.
        found: u64,
    },
}

impl StoreError {
    /// Whether the operating system reported a full disk (ENOSPC) anywhere in this error's causes.
    pub fn is_disk_full(&self) -> bool {
        if matches!(self, StoreError::DiskFull { .. }) {
            return true;
        }
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io_is_disk_full(io)
            {
                return true;
            }
            next = e.source();
        }
        false
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StoreError::Invalid {
            path: path.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn json(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StoreError::Json {
            path: path.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}
