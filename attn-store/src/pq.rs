//! Low-level Parquet plumbing: atomic writing, and reading a whole file with typed, checked column
//! access (every failure names the file and the column).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt16Type, UInt32Type};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, FixedSizeListArray, Float32Array,
    GenericListArray, LargeListArray, LargeStringArray, ListArray, OffsetSizeTrait, PrimitiveArray,
    RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, SchemaRef};
use attn_types::DATA_MODEL_VERSION;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::StoreError;

/// Key-value metadata key holding the data model version in every Parquet file written here.
pub const KV_SCHEMA_VERSION: &str = "attnviz.schema_version";

/// Distinguishes temporary files of concurrent writes within one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary path next to `path` (same directory, so the final rename stays on one filesystem and is
/// atomic), unique across processes (pid) and threads (counter). The leading dot hides it from
/// directory listings of completed artifacts.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Writes `path` through a temporary file + fsync + rename, so readers and resumed runs see either
/// the old file, or no file, or the complete new one — never a truncated one.
pub(crate) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(File, &Path) -> Result<File, StoreError>,
) -> Result<(), StoreError> {
    let tmp = temp_path(path);
    let result = (|| {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        }
        let file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        let file = fill(file, &tmp)?;
        // Without the fsync a crash after the rename could leave a complete name over empty data.
        file.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
    })();
    if result.is_err() {
        // Best effort: a leftover temporary file is harmless (hidden, never read), only untidy.
        let _ = std::fs::remove_file(&tmp);
    }
    // A full disk is said once, naming the file meant, not the temporary one or each layer's wrapping.
    result.map_err(|e| match e {
        e if e.is_disk_full() => StoreError::DiskFull {
            path: path.to_path_buf(),
        },
        // Named by the file meant, not its temporary one.
        StoreError::ParquetWrite { source, .. } => StoreError::ParquetWrite {
            path: path.to_path_buf(),
            source,
        },
        e => e,
    })
}

/// Writes `bytes` to `path` atomically: a uniquely named temporary file in the same folder, fsync,
/// rename. Readers and resumed runs see the old file, no file or the whole new one, never a part.
/// This is the one atomic writer of attnviz (Parquet files, `meta.json`, images, figures, exports).
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic(path, |mut f, tmp| {
        f.write_all(bytes).map_err(|e| StoreError::io(tmp, e))?;
        Ok(f)
    })
}

/// Writes one record batch as a snappy-compressed Parquet file, atomically, with `kv` (plus the schema
/// version) as file key-value metadata.
pub(crate) fn write_parquet(
    path: &Path,
    batch: &RecordBatch,
    kv: Vec<(String, String)>,
) -> Result<(), StoreError> {
    let mut entries = vec![KeyValue::new(
        KV_SCHEMA_VERSION.to_string(),
        DATA_MODEL_VERSION.to_string(),
    )];
    entries.extend(kv.into_iter().map(|(k, v)| KeyValue::new(k, v)));
    // The same entries in the Arrow schema that the writer embeds (`ARROW:schema`): readers that
    // rebuild the table's schema from it (pyarrow, polars) show only its metadata.
    let mut schema_metadata = batch.schema().metadata().clone();
    for e in &entries {
        schema_metadata.insert(e.key.clone(), e.value.clone().unwrap_or_default());
    }
    let schema = Arc::new(
        batch
            .schema()
            .as_ref()
            .clone()
            .with_metadata(schema_metadata),
    );
    let batch = batch
        .clone()
        .with_schema(schema)
        .map_err(|source| StoreError::Arrow {
            path: path.to_path_buf(),
            field: "schema metadata".into(),
            source,
        })?;
    let batch = &batch;
    // Dictionary encoding only for the top-level string columns (token text, ids): the float
    // vectors, coordinates and attention weights are nearly all distinct, so interning them cost a
    // fifth of an extraction's time before the writer fell back to plain encoding anyway.
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(entries))
        .set_dictionary_enabled(false);
    for field in batch.schema().fields() {
        if matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
            props =
                props.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
        }
    }
    let props = props.build();
    write_atomic(path, |file, tmp| {
        let disk_full = Arc::new(AtomicBool::new(false));
        let perr = |source| {
            if disk_full.load(Ordering::Relaxed) {
                StoreError::DiskFull {
                    path: tmp.to_path_buf(),
                }
            } else {
                StoreError::ParquetWrite {
                    path: tmp.to_path_buf(),
                    source,
                }
            }
        };
        let sink = FullDiskAware {
            file,
            disk_full: Arc::clone(&disk_full),
        };
        let mut writer = ArrowWriter::try_new(sink, batch.schema(), Some(props)).map_err(perr)?;
        writer.write(batch).map_err(perr)?;
        writer.into_inner().map(|sink| sink.file).map_err(perr)
    })
}

/// A file that remembers whether a write failed for want of space: the Parquet writer reports some
/// I/O errors only as text, from which a full disk could not be told apart.
struct FullDiskAware {
    file: File,
    disk_full: Arc<AtomicBool>,
}

impl Write for FullDiskAware {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf).inspect_err(|e| self.note(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush().inspect_err(|e| self.note(e))
    }
}

impl FullDiskAware {
    fn note(&self, e: &std::io::Error) {
        if crate::error::io_is_disk_full(e) {
            self.disk_full.store(true, Ordering::Relaxed);
        }
    }
}

/// Builds a record batch, mapping an Arrow error to one naming the file.
pub(crate) fn batch(
    path: &Path,
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
) -> Result<RecordBatch, StoreError> {
    RecordBatch::try_new(schema, columns).map_err(|source| StoreError::Arrow {
        path: path.to_path_buf(),
        field: "record batch".into(),
        source,
    })
}

/// A `FixedSizeList<Float32, d>` column holding the rows of a row-major `n x d` slice.
pub(crate) fn vector_array(
    path: &Path,
    column: &str,
    d: usize,
    n: usize,
    values: &[f32],
) -> Result<ArrayRef, StoreError> {
    let aerr = |source| StoreError::Arrow {
        path: path.to_path_buf(),
        field: column.to_string(),
        source,
    };
    let size = i32::try_from(d)
        .map_err(|_| StoreError::invalid(path, column, format!("dimension {d} is too large")))?;
    let child = Arc::new(Float32Array::from(values.to_vec())) as ArrayRef;
    let arr = FixedSizeListArray::try_new_with_length(item_field(), size, child, None, n)
        .map_err(aerr)?;
    Ok(Arc::new(arr))
}

/// The child field of every vector column (named `item`, as pyarrow names list children).
pub(crate) fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

/// The Arrow type of a vector column of dimension `d`.
pub(crate) fn vector_type(d: i32) -> DataType {
    DataType::FixedSizeList(item_field(), d)
}

/// A Parquet file read into memory, whole or some of its columns, with typed and checked column
/// access: every failure names the file and the column. This is the one Parquet reader of attnviz:
/// the dataset's own files, corpora and imported token tables are all read through it.
#[derive(Debug)]
pub struct ParquetTable {
    pub(crate) path: PathBuf,
    pub(crate) schema: SchemaRef,
    /// Every column the file has, whether read or not.
    pub(crate) file_columns: Vec<String>,
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) kv: HashMap<String, String>,
    pub(crate) rows: usize,
}

/// Number of rows of a Parquet file, read from its footer only.
pub fn parquet_num_rows(path: &Path) -> Result<usize, StoreError> {
    let file = open_parquet(path)?;
    let reader = parquet::file::reader::SerializedFileReader::new(file).map_err(|source| {
        StoreError::Parquet {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let rows = parquet::file::reader::FileReader::metadata(&reader)
        .file_metadata()
        .num_rows();
    usize::try_from(rows).map_err(|_| StoreError::invalid(path, "num_rows", format!("{rows} rows")))
}

fn open_parquet(path: &Path) -> Result<File, StoreError> {
    File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound {
                path: path.to_path_buf(),
                what: "the Parquet file".into(),
            }
        } else {
            StoreError::io(path, e)
        }
    })
}

impl ParquetTable {
    /// Reads a whole Parquet file, checking its schema version.
    pub fn read(path: impl AsRef<Path>) -> Result<ParquetTable, StoreError> {
        read_parquet(path.as_ref(), None)
    }

    /// Reads only the named columns (the others may be large, e.g. embeddings beside a text
    /// column); a name the file lacks is a [`StoreError::MissingColumn`] listing what it has.
    pub fn read_columns(
        path: impl AsRef<Path>,
        columns: &[&str],
    ) -> Result<ParquetTable, StoreError> {
        read_parquet(path.as_ref(), Some(columns))
    }

    /// Whether the file has a column `name` (read or not).
    pub(crate) fn has_file_column(&self, name: &str) -> bool {
        self.file_columns.iter().any(|c| c == name)
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// The file this table was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a Parquet file (all columns, or `columns`), checking its schema version.
fn read_parquet(path: &Path, columns: Option<&[&str]>) -> Result<ParquetTable, StoreError> {
    let file = open_parquet(path)?;
    let perr = |source| StoreError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
    let kv: HashMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e.value.as_ref().map(|v| (e.key.clone(), v.clone())))
                .collect()
        })
        .unwrap_or_default();
    if let Some(v) = kv.get(KV_SCHEMA_VERSION) {
        let found: u32 = v.trim().parse().map_err(|_| {
            StoreError::invalid(
                path,
                KV_SCHEMA_VERSION,
                format!("`{v}` is not a version number"),
            )
        })?;
        if found > DATA_MODEL_VERSION {
            return Err(StoreError::FutureVersion {
                path: path.to_path_buf(),
                found,
                supported: DATA_MODEL_VERSION,
            });
        }
    }
    let file_columns: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let builder = match columns {
        None => builder,
        Some(columns) => {
            let schema = builder.schema().clone();
            let mut indices = Vec::with_capacity(columns.len());
            for column in columns {
                let Some((index, _)) = schema.column_with_name(column) else {
                    let available: Vec<&str> =
                        schema.fields().iter().map(|f| f.name().as_str()).collect();
                    return Err(StoreError::NoSuchColumn {
                        path: path.to_path_buf(),
                        column: column.to_string(),
                        available: available.join(", "),
                    });
                };
                indices.push(index);
            }
            let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
            builder.with_projection(mask)
        }
    };
    let schema = builder.schema().clone();
    let schema = match columns {
        None => schema,
        // The projected batches carry only the selected columns.
        Some(columns) => Arc::new(
            schema
                .project(
                    &columns
                        .iter()
                        .filter_map(|c| schema.index_of(c).ok())
                        .collect::<Vec<_>>(),
                )
                .map_err(|source| StoreError::Arrow {
                    path: path.to_path_buf(),
                    field: "schema".into(),
                    source,
                })?,
        ),
    };
    let reader = builder.build().map_err(perr)?;
    let mut batches = Vec::new();
    let mut rows = 0;
    for b in reader {
        // Corrupt page data surfaces here rather than at open time.
        let b = b.map_err(|source| StoreError::Arrow {
            path: path.to_path_buf(),
            field: "data pages".into(),
            source,
        })?;
        rows += b.num_rows();
        batches.push(b);
    }
    Ok(ParquetTable {
        path: path.to_path_buf(),
        schema,
        file_columns,
        batches,
        kv,
        rows,
    })
}

impl ParquetTable {
    /// Whether the file has a column of this name.
    pub fn has(&self, column: &str) -> bool {
        self.schema.field_with_name(column).is_ok()
    }

    /// The column's Arrow type, or a `MissingColumn` error.
    fn data_type(&self, column: &str) -> Result<&DataType, StoreError> {
        self.schema
            .field_with_name(column)
            .map(|f| f.data_type())
            .map_err(|_| StoreError::MissingColumn {
                path: self.path.clone(),
                column: column.to_string(),
            })
    }

    fn type_error(&self, column: &str, expected: &str, found: &DataType) -> StoreError {
        StoreError::ColumnType {
            path: self.path.clone(),
            column: column.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    /// The column's array in one batch.
    fn batch_column<'a>(
        &self,
        b: &'a RecordBatch,
        column: &str,
    ) -> Result<&'a ArrayRef, StoreError> {
        b.column_by_name(column)
            .ok_or_else(|| StoreError::MissingColumn {
                path: self.path.clone(),
                column: column.to_string(),
            })
    }

    /// The column's array in every batch, downcast to `T`.
    fn arrays<T: Array + 'static>(
        &self,
        column: &str,
        expected: &str,
    ) -> Result<Vec<&T>, StoreError> {
        let mut out = Vec::with_capacity(self.batches.len());
        for b in &self.batches {
            let col = self.batch_column(b, column)?;
            let arr = col
                .as_any()
                .downcast_ref::<T>()
                .ok_or_else(|| self.type_error(column, expected, col.data_type()))?;
            out.push(arr);
        }
        Ok(out)
    }

    /// The child values and row boundaries of each batch's list array, refusing null rows.
    fn list_parts<'a, O: OffsetSizeTrait>(
        &self,
        arrays: Vec<&'a GenericListArray<O>>,
        column: &str,
    ) -> Result<Vec<(&'a ArrayRef, Vec<usize>)>, StoreError> {
        arrays
            .into_iter()
            .map(|a| {
                if a.null_count() > 0 {
                    return Err(self.null_error(column));
                }
                let offsets = a.value_offsets().iter().map(|o| o.as_usize()).collect();
                Ok((a.values(), offsets))
            })
            .collect()
    }

    fn null_error(&self, column: &str) -> StoreError {
        StoreError::invalid(
            &self.path,
            column,
            "null value in a column that may not be null",
        )
    }

    /// A non-nullable primitive column of exactly type `P`.
    fn primitive<P: ArrowPrimitiveType>(&self, column: &str) -> Result<Vec<P::Native>, StoreError> {
        let dt = self.data_type(column)?;
        if *dt != P::DATA_TYPE {
            return Err(self.type_error(column, &P::DATA_TYPE.to_string(), dt));
        }
        let mut out = Vec::with_capacity(self.rows);
        for a in self.arrays::<PrimitiveArray<P>>(column, &P::DATA_TYPE.to_string())? {
            if a.null_count() > 0 {
                return Err(self.null_error(column));
            }
            out.extend_from_slice(a.values());
        }
        Ok(out)
    }

    /// A nullable primitive column of exactly type `P`; `None` when the column is absent.
    fn primitive_opt<P: ArrowPrimitiveType>(
        &self,
        column: &str,
    ) -> Result<Option<Vec<Option<P::Native>>>, StoreError> {
        if !self.has(column) {
            return Ok(None);
        }
        let dt = self.data_type(column)?;
        if *dt != P::DATA_TYPE {
            return Err(self.type_error(column, &P::DATA_TYPE.to_string(), dt));
        }
        let mut out = Vec::with_capacity(self.rows);
        for a in self.arrays::<PrimitiveArray<P>>(column, &P::DATA_TYPE.to_string())? {
            out.extend(a.iter());
        }
        Ok(Some(out))
    }

    /// A required `uint32` column.
    pub fn u32(&self, column: &str) -> Result<Vec<u32>, StoreError> {
        self.primitive::<UInt32Type>(column)
    }

    /// A required `float32` column.
    pub fn f32(&self, column: &str) -> Result<Vec<f32>, StoreError> {
        self.primitive::<Float32Type>(column)
    }

    /// An optional, nullable `uint32` column.
    pub fn u32_opt(&self, column: &str) -> Result<Option<Vec<Option<u32>>>, StoreError> {
        self.primitive_opt::<UInt32Type>(column)
    }

    /// An optional, nullable `uint16` column.
    pub fn u16_opt(&self, column: &str) -> Result<Option<Vec<Option<u16>>>, StoreError> {
        self.primitive_opt::<UInt16Type>(column)
    }

    /// An optional, nullable `float32` column.
    pub fn f32_opt(&self, column: &str) -> Result<Option<Vec<Option<f32>>>, StoreError> {
        self.primitive_opt::<Float32Type>(column)
    }

    /// A required `bool` column.
    pub fn bool(&self, column: &str) -> Result<Vec<bool>, StoreError> {
        let dt = self.data_type(column)?;
        if *dt != DataType::Boolean {
            return Err(self.type_error(column, "Boolean", dt));
        }
        let mut out = Vec::with_capacity(self.rows);
        for a in self.arrays::<BooleanArray>(column, "Boolean")? {
            if a.null_count() > 0 {
                return Err(self.null_error(column));
            }
            out.extend(a.values().iter());
        }
        Ok(out)
    }

    /// A required string column (`Utf8` or `LargeUtf8`).
    pub fn strings(&self, column: &str) -> Result<Vec<String>, StoreError> {
        let dt = self.data_type(column)?.clone();
        let mut out = Vec::with_capacity(self.rows);
        match dt {
            DataType::Utf8 => {
                for a in self.arrays::<StringArray>(column, "Utf8")? {
                    for v in a.iter() {
                        out.push(v.ok_or_else(|| self.null_error(column))?.to_string());
                    }
                }
            }
            DataType::LargeUtf8 => {
                for a in self.arrays::<LargeStringArray>(column, "LargeUtf8")? {
                    for v in a.iter() {
                        out.push(v.ok_or_else(|| self.null_error(column))?.to_string());
                    }
                }
            }
            other => return Err(self.type_error(column, "Utf8 or LargeUtf8", &other)),
        }
        Ok(out)
    }

    /// A vector column: `FixedSizeList<Float32, d>` (what this crate writes) or `List<Float32>` /
    /// `LargeList<Float32>` with every row of the same length (what other tools often write).
    /// Returns `(d, row-major values)`.
    pub fn vectors(&self, column: &str) -> Result<(usize, Vec<f32>), StoreError> {
        const EXPECTED: &str = "FixedSizeList<Float32>, List<Float32> or LargeList<Float32>";
        let dt = self.data_type(column)?.clone();
        let check_child = |child: &DataType| {
            if *child == DataType::Float32 {
                Ok(())
            } else {
                Err(self.type_error(column, EXPECTED, &dt))
            }
        };
        let mut values = Vec::new();
        let child_values = |child: &ArrayRef| -> Result<Float32Array, StoreError> {
            let f = child
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| self.type_error(column, EXPECTED, &dt))?;
            Ok(f.clone())
        };
        match &dt {
            DataType::FixedSizeList(f, size) => {
                check_child(f.data_type())?;
                let d = usize::try_from(*size)
                    .map_err(|_| StoreError::invalid(&self.path, column, "negative list size"))?;
                for a in self.arrays::<FixedSizeListArray>(column, EXPECTED)? {
                    if a.null_count() > 0 {
                        return Err(self.null_error(column));
                    }
                    if a.is_empty() {
                        continue;
                    }
                    let child = child_values(a.values())?;
                    let start = a.value_offset_at(0);
                    let end = start + a.len() * d;
                    let slice = child.slice(start, end - start);
                    if slice.null_count() > 0 {
                        return Err(self.null_error(column));
                    }
                    values.extend_from_slice(slice.values());
                }
                Ok((d, values))
            }
            DataType::List(f) | DataType::LargeList(f) => {
                check_child(f.data_type())?;
                let mut d: Option<usize> = None;
                let mut push_row = |row: usize, child: &Float32Array, s: usize, e: usize| {
                    let len = e - s;
                    match d {
                        None => d = Some(len),
                        Some(d0) if d0 != len => {
                            return Err(StoreError::invalid(
                                &self.path,
                                column,
                                format!("row {row} has {len} values, earlier rows have {d0}"),
                            ));
                        }
                        Some(_) => {}
                    }
                    let slice = child.slice(s, len);
                    if slice.null_count() > 0 {
                        return Err(self.null_error(column));
                    }
                    values.extend_from_slice(slice.values());
                    Ok(())
                };
                // Both offset widths as (child values, row boundaries); the boundaries are few next
                // to the values.
                let parts = if matches!(dt, DataType::List(_)) {
                    self.list_parts(self.arrays::<ListArray>(column, EXPECTED)?, column)?
                } else {
                    self.list_parts(self.arrays::<LargeListArray>(column, EXPECTED)?, column)?
                };
                let mut row = 0;
                for (child, offsets) in parts {
                    let child = child_values(child)?;
                    for w in offsets.windows(2) {
                        push_row(row, &child, w[0], w[1])?;
                        row += 1;
                    }
                }
                Ok((d.unwrap_or(0), values))
            }
            other => Err(self.type_error(column, EXPECTED, other)),
        }
    }

    /// A string column of any Arrow string type (`Utf8`, `LargeUtf8`, `Utf8View`), nulls kept as
    /// `None` (what other tools write: corpora and token tables).
    pub fn strings_nullable(&self, column: &str) -> Result<Vec<Option<String>>, StoreError> {
        const EXPECTED: &str = "a string type (Utf8, LargeUtf8 or Utf8View)";
        let dt = self.data_type(column)?.clone();
        let mut out = Vec::with_capacity(self.rows);
        for b in &self.batches {
            let a = self.batch_column(b, column)?;
            let owned = |v: Option<&str>| v.map(str::to_string);
            if let Some(s) = a.as_string_opt::<i32>() {
                out.extend(s.iter().map(owned));
            } else if let Some(s) = a.as_string_opt::<i64>() {
                out.extend(s.iter().map(owned));
            } else if let Some(s) = a.as_string_view_opt() {
                out.extend(s.iter().map(owned));
            } else {
                return Err(self.type_error(column, EXPECTED, &dt));
            }
        }
        Ok(out)
    }

    /// A required integer column of any Arrow integer type whose values all fit in `u32` (token
    /// tables written by other tools use int64 as often as uint32).
    pub fn u32_any(&self, column: &str) -> Result<Vec<u32>, StoreError> {
        use arrow_array::types::{
            Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt64Type,
        };
        let dt = self.data_type(column)?.clone();
        let mut out = Vec::with_capacity(self.rows);
        for b in &self.batches {
            let a = self.batch_column(b, column)?;
            let start = out.len();
            let bad = |row: usize| {
                StoreError::invalid(
                    &self.path,
                    column,
                    format!("row {row} is null or outside 0..2^32"),
                )
            };
            macro_rules! take {
                ($t:ty) => {
                    if let Some(p) = a.as_primitive_opt::<$t>() {
                        for (i, v) in p.iter().enumerate() {
                            let v = v.and_then(|v| u32::try_from(v).ok());
                            out.push(v.ok_or_else(|| bad(start + i))?);
                        }
                        continue;
                    }
                };
            }
            take!(UInt32Type);
            take!(Int64Type);
            take!(Int32Type);
            take!(UInt64Type);
            take!(UInt16Type);
            take!(Int16Type);
            take!(UInt8Type);
            take!(Int8Type);
            return Err(self.type_error(column, "an integer type", &dt));
        }
        Ok(out)
    }

    /// An optional, nullable `bool` column (`None` when absent; nulls read as `false`).
    pub fn bool_or_false(&self, column: &str) -> Result<Option<Vec<bool>>, StoreError> {
        if !self.has(column) {
            return Ok(None);
        }
        let dt = self.data_type(column)?;
        if *dt != DataType::Boolean {
            return Err(self.type_error(column, "Boolean", dt));
        }
        let mut out = Vec::with_capacity(self.rows);
        for a in self.arrays::<BooleanArray>(column, "Boolean")? {
            out.extend(a.iter().map(|v| v.unwrap_or(false)));
        }
        Ok(Some(out))
    }

    /// The key-value metadata entry `key`, if present.
    pub fn kv(&self, key: &str) -> Option<&str> {
        self.kv.get(key).map(String::as_str)
    }

    /// The key-value metadata entry `key` parsed as JSON, if present.
    pub fn kv_json(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        match self.kv(key) {
            None => Ok(None),
            Some(s) => serde_json::from_str(s)
                .map(Some)
                .map_err(|e| StoreError::json(&self.path, key, e.to_string())),
        }
    }

    /// Checks that a `token_index` column, when present, numbers the rows `0..n` in order.
    pub fn check_token_index(&self) -> Result<(), StoreError> {
        if !self.has("token_index") {
            return Ok(());
        }
        for (row, t) in self.u32("token_index")?.into_iter().enumerate() {
            if t as usize != row {
                return Err(StoreError::invalid(
                    &self.path,
                    "token_index",
                    format!("row {row} has token_index {t}; rows must be in token order 0..n"),
                ));
            }
        }
        Ok(())
    }
}
