//! Input corpora: the built-in sentence set, user text files (`.txt`, `.jsonl`, `.parquet`)
//! and folders of images (`.png`, `.jpg`, `.jpeg`).
//!
//! Every reader returns sequences in file order, skips blank sequences, honours an optional
//! `limit` (the first `limit` sequences that survive filtering), and fails with a
//! [`CorpusError`] that names the offending file and, where there is one, its line or column.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use attn_store::{ParquetTable, StoreError};

/// The built-in corpus: 320 original English sentences, one per line, used when no corpus is given.
pub const BUILTIN_SENTENCES: &str = include_str!("../data/sentences.txt");

/// The built-in sentences as owned strings, in file order (blank lines, if any, dropped).
pub fn builtin_sentences() -> Vec<String> {
    BUILTIN_SENTENCES
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect()
}

/// What a corpus yields: text sequences for a language model or images for a vision model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CorpusKind {
    /// Text sequences (`.txt`, `.jsonl`, `.parquet`).
    Text,
    /// Images (a directory of `.png` / `.jpg` / `.jpeg` files).
    Images,
}

impl fmt::Display for CorpusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CorpusKind::Text => "text",
            CorpusKind::Images => "images",
        })
    }
}

/// A corpus location together with its format, as detected from the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorpusSource {
    /// A `.txt` file: one sequence per line; blank lines are skipped, `#` is not special.
    Lines(PathBuf),
    /// A `.jsonl` file: one JSON object per line, the sequence in a string field.
    Jsonl(PathBuf),
    /// A `.parquet` file: the sequences in a `utf8` / `large_utf8` column.
    Parquet(PathBuf),
    /// A directory of `.png` / `.jpg` / `.jpeg` images, read in file-name order.
    ImageFolder(PathBuf),
}

impl CorpusSource {
    /// Detects the format of `path`: a directory is an image folder, a file goes by its
    /// (case-insensitive) extension.
    ///
    /// # Errors
    /// [`CorpusError::NotFound`] if `path` does not exist, [`CorpusError::UnknownExtension`] for a
    /// file that is not `.txt`, `.jsonl` or `.parquet`, [`CorpusError::Io`] if it cannot be inspected.
    pub fn from_path(path: &Path) -> Result<Self, CorpusError> {
        let meta = fs::metadata(path).map_err(|source| io_error(path, source))?;
        if meta.is_dir() {
            return Ok(CorpusSource::ImageFolder(path.to_path_buf()));
        }
        match lowercase_extension(path).as_deref() {
            Some("txt") => Ok(CorpusSource::Lines(path.to_path_buf())),
            Some("jsonl") => Ok(CorpusSource::Jsonl(path.to_path_buf())),
            Some("parquet") => Ok(CorpusSource::Parquet(path.to_path_buf())),
            _ => Err(CorpusError::UnknownExtension {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Whether this source yields text or images.
    pub fn kind(&self) -> CorpusKind {
        match self {
            CorpusSource::Lines(_) | CorpusSource::Jsonl(_) | CorpusSource::Parquet(_) => {
                CorpusKind::Text
            }
            CorpusSource::ImageFolder(_) => CorpusKind::Images,
        }
    }
}

/// Everything that can go wrong while locating or reading a corpus.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// The corpus path does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A file whose extension is not one of the supported corpus formats.
    #[error(
        "{}: unknown corpus format (expected a .txt, .jsonl or .parquet file, or a directory of images)",
        path.display()
    )]
    UnknownExtension {
        /// The file with the unsupported extension.
        path: PathBuf,
    },
    /// The path holds a different kind of corpus than the caller asked for.
    #[error("{}: is a {found} corpus, but a {expected} corpus was expected", path.display())]
    WrongKind {
        /// The corpus path.
        path: PathBuf,
        /// The kind the caller needed.
        expected: CorpusKind,
        /// The kind the path actually holds.
        found: CorpusKind,
    },
    /// `limit` was `Some(0)`, which would select nothing.
    #[error("{}: a corpus limit of 0 selects no sequences", path.display())]
    ZeroLimit {
        /// The corpus path.
        path: PathBuf,
    },
    /// No sequences (or images) remained after skipping blanks, nulls and hidden files.
    #[error("{}: the corpus is empty (no non-blank sequences or images)", path.display())]
    Empty {
        /// The empty corpus.
        path: PathBuf,
    },
    /// A line of a `.txt` or `.jsonl` file is not valid UTF-8.
    #[error("{}:{line}: invalid UTF-8", path.display())]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A line of a `.jsonl` file is not valid JSON.
    #[error("{}:{line}: invalid JSON: {source}", path.display())]
    BadJson {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A line of a `.jsonl` file is valid JSON but not an object.
    #[error("{}:{line}: expected a JSON object, found {found}", path.display())]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The JSON type found instead (e.g. "array").
        found: &'static str,
    },
    /// A `.jsonl` object lacks the text field.
    #[error("{}:{line}: missing field \"{field}\"", path.display())]
    MissingField {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field that was looked for.
        field: String,
    },
    /// A `.jsonl` object's text field is not a string.
    #[error("{}:{line}: field \"{field}\" is a {found}, not a string", path.display())]
    FieldNotString {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The text field.
        field: String,
        /// The JSON type found instead (e.g. "number").
        found: &'static str,
    },
    /// A `.parquet` corpus could not be read: not Parquet, no such column, not a string column.
    #[error(transparent)]
    Parquet(#[from] StoreError),
    /// An image folder contains a regular file that is not `.png`, `.jpg` or `.jpeg`.
    #[error("{}: not an image (expected .png, .jpg or .jpeg)", path.display())]
    NotAnImage {
        /// The offending file.
        path: PathBuf,
    },
    /// An image file could not be decoded.
    #[error("{}: cannot decode image: {source}", path.display())]
    Decode {
        /// The offending file.
        path: PathBuf,
        /// The decoder's complaint.
        source: image::ImageError,
    },
    /// Any other I/O failure.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Detects whether `path` is a text corpus or an image folder.
///
/// # Errors
/// As [`CorpusSource::from_path`].
pub fn detect(path: &Path) -> Result<CorpusKind, CorpusError> {
    CorpusSource::from_path(path).map(|source| source.kind())
}

/// Loads the text sequences of a `.txt`, `.jsonl` or `.parquet` corpus.
///
/// `field` names the JSON field or Parquet column holding the text (conventionally `"text"`;
/// ignored for `.txt`). `.txt` lines are trimmed; JSON and Parquet strings are kept verbatim.
/// Blank sequences and Parquet nulls are skipped; with `limit`, reading stops after that many
/// sequences, so problems further down the file go unreported.
///
/// # Errors
/// Any [`CorpusError`] variant that concerns text: missing path, unknown extension, an image
/// folder ([`CorpusError::WrongKind`]), `Some(0)` limit, invalid UTF-8 or JSON (with line),
/// missing or mistyped field or column, and an empty result.
pub fn load_text_corpus(
    path: &Path,
    field: &str,
    limit: Option<usize>,
) -> Result<Vec<String>, CorpusError> {
    let source = CorpusSource::from_path(path)?;
    check_limit(path, limit)?;
    let max = limit.unwrap_or(usize::MAX);
    let sequences = match source {
        CorpusSource::Lines(_) => read_lines(path, max)?,
        CorpusSource::Jsonl(_) => read_jsonl(path, field, max)?,
        CorpusSource::Parquet(_) => read_parquet(path, field, max)?,
        CorpusSource::ImageFolder(_) => {
            return Err(CorpusError::WrongKind {
                path: path.to_path_buf(),
                expected: CorpusKind::Text,
                found: CorpusKind::Images,
            });
        }
    };
    non_empty(path, sequences)
}

/// Loads the images of a folder as RGB (alpha dropped, grayscale expanded), paired with their
/// file names, sorted by file name.
///
/// Hidden entries (names starting with `.`) and subdirectories are ignored; every other entry
/// must be a `.png`, `.jpg` or `.jpeg` file (case-insensitive), checked before any decoding.
/// The format is sniffed from the content, so a mislabelled PNG/JPEG still loads. With `limit`,
/// only the first `limit` images are decoded.
///
/// # Errors
/// Missing path, a file rather than a directory ([`CorpusError::WrongKind`] or
/// [`CorpusError::UnknownExtension`]), `Some(0)` limit, a non-image file (naming it), an
/// undecodable image (naming it), an empty folder, or an I/O failure.
pub fn load_image_folder(
    path: &Path,
    limit: Option<usize>,
) -> Result<Vec<(String, image::RgbImage)>, CorpusError> {
    let source = CorpusSource::from_path(path)?;
    if source.kind() != CorpusKind::Images {
        return Err(CorpusError::WrongKind {
            path: path.to_path_buf(),
            expected: CorpusKind::Images,
            found: source.kind(),
        });
    }
    check_limit(path, limit)?;

    let mut files = Vec::new();
    for entry in fs::read_dir(path).map_err(|source| io_error(path, source))? {
        let entry = entry.map_err(|source| io_error(path, source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let file = entry.path();
        // fs::metadata follows symlinks, so a link to an image counts as an image.
        let meta = fs::metadata(&file).map_err(|source| io_error(&file, source))?;
        if !meta.is_file() {
            continue;
        }
        match lowercase_extension(&file).as_deref() {
            Some("png" | "jpg" | "jpeg") => files.push((name, file)),
            _ => return Err(CorpusError::NotAnImage { path: file }),
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.truncate(limit.unwrap_or(usize::MAX));

    let mut images = Vec::with_capacity(files.len());
    for (name, file) in files {
        let image = decode_image(&file)?;
        images.push((name, image));
    }
    non_empty(path, images)
}

/// Decodes one image file to 8-bit RGB.
fn decode_image(file: &Path) -> Result<image::RgbImage, CorpusError> {
    let reader = image::ImageReader::open(file)
        .map_err(|source| io_error(file, source))?
        .with_guessed_format()
        .map_err(|source| io_error(file, source))?;
    let decoded = reader.decode().map_err(|source| CorpusError::Decode {
        path: file.to_path_buf(),
        source,
    })?;
    Ok(decoded.into_rgb8())
}

/// Reads a `.txt` corpus: one trimmed sequence per non-blank line.
fn read_lines(path: &Path, max: usize) -> Result<Vec<String>, CorpusError> {
    collect_lines(path, max, |_, line| {
        let line = line.trim();
        Ok((!line.is_empty()).then(|| line.to_string()))
    })
}

/// Reads a `.jsonl` corpus: the string `field` of the object on each non-blank line.
fn read_jsonl(path: &Path, field: &str, max: usize) -> Result<Vec<String>, CorpusError> {
    collect_lines(path, max, |line_no, line| {
        if line.trim().is_empty() {
            return Ok(None);
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|source| CorpusError::BadJson {
                path: path.to_path_buf(),
                line: line_no,
                source,
            })?;
        let object = value.as_object().ok_or_else(|| CorpusError::NotAnObject {
            path: path.to_path_buf(),
            line: line_no,
            found: json_type(&value),
        })?;
        let text = object.get(field).ok_or_else(|| CorpusError::MissingField {
            path: path.to_path_buf(),
            line: line_no,
            field: field.to_string(),
        })?;
        let text = text.as_str().ok_or_else(|| CorpusError::FieldNotString {
            path: path.to_path_buf(),
            line: line_no,
            field: field.to_string(),
            found: json_type(text),
        })?;
        Ok((!text.trim().is_empty()).then(|| text.to_string()))
    })
}

/// Streams the lines of `path` through `parse` (1-based line number, line without `\n` / `\r\n`
/// and without a leading BOM) and collects what it keeps, stopping once `max` are kept.
fn collect_lines(
    path: &Path,
    max: usize,
    mut parse: impl FnMut(usize, &str) -> Result<Option<String>, CorpusError>,
) -> Result<Vec<String>, CorpusError> {
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    // Line by line rather than read_to_string, so invalid UTF-8 is reported with its line.
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0;
    let mut out = Vec::new();
    while out.len() < max {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| io_error(path, source))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        let mut bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if line_no == 1 {
            // Editors on Windows often prepend a BOM, which serde_json would reject.
            bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        }
        let line = std::str::from_utf8(bytes).map_err(|_| CorpusError::InvalidUtf8 {
            path: path.to_path_buf(),
            line: line_no,
        })?;
        out.extend(parse(line_no, line)?);
    }
    Ok(out)
}

/// Reads the string column `column` of a `.parquet` corpus (only that column is decoded: the others
/// may be large, e.g. embeddings), skipping nulls and blanks.
fn read_parquet(path: &Path, column: &str, max: usize) -> Result<Vec<String>, CorpusError> {
    let table = ParquetTable::read_columns(path, &[column])?;
    let mut out: Vec<String> = table
        .strings_nullable(column)?
        .into_iter()
        .flatten()
        .filter(|text| !text.trim().is_empty())
        .collect();
    out.truncate(max);
    Ok(out)
}

/// Rejects `Some(0)`, which would otherwise surface as a confusing "empty corpus" error.
fn check_limit(path: &Path, limit: Option<usize>) -> Result<(), CorpusError> {
    if limit == Some(0) {
        return Err(CorpusError::ZeroLimit {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Turns an empty result into [`CorpusError::Empty`].
fn non_empty<T>(path: &Path, items: Vec<T>) -> Result<Vec<T>, CorpusError> {
    if items.is_empty() {
        return Err(CorpusError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(items)
}

/// Maps an I/O error on `path`, singling out "not found" so the message is plain.
fn io_error(path: &Path, source: io::Error) -> CorpusError {
    if source.kind() == io::ErrorKind::NotFound {
        CorpusError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        CorpusError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The extension of `path`, lower-cased, if it has a UTF-8 one.
fn lowercase_extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|ext| ext.to_str())
        .map(str::to_ascii_lowercase)
}

/// The JSON type name of `value`, for error messages.
fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use arrow_array::{ArrayRef, Int64Array, LargeStringArray, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;

    /// A scratch directory unique to this process and call, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("attnviz-corpus-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, bytes).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer =
            ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    fn png(dir: &Path, name: &str, width: u32, color: [u8; 3]) {
        image::RgbImage::from_pixel(width, 2, image::Rgb(color))
            .save(dir.join(name))
            .unwrap();
    }

    #[test]
    fn builtin_corpus_is_well_formed() {
        let sentences = builtin_sentences();
        assert_eq!(sentences.len(), 320);
        assert_eq!(BUILTIN_SENTENCES.lines().count(), 320, "no blank lines");
        let mut words = 0;
        for s in &sentences {
            let n = s.split_whitespace().count();
            assert!((8..=25).contains(&n), "{n} words: {s}");
            assert!(s.len() <= 200, "too long: {s}");
            words += n;
        }
        let unique: HashSet<_> = sentences.iter().collect();
        assert_eq!(unique.len(), sentences.len(), "duplicate sentences");
        assert!((3_800..=5_000).contains(&words), "{words} words");
        assert!(sentences.iter().any(|s| s.contains("trophy")));
    }

    #[test]
    fn detects_formats() {
        let dir = Scratch::new("detect");
        let txt = dir.file("a.TXT", b"x\n");
        let jsonl = dir.file("a.jsonl", b"{}\n");
        let parquet = dir.file("a.parquet", b"");
        assert_eq!(
            CorpusSource::from_path(&txt).unwrap(),
            CorpusSource::Lines(txt.clone())
        );
        assert_eq!(
            CorpusSource::from_path(&jsonl).unwrap(),
            CorpusSource::Jsonl(jsonl.clone())
        );
        assert_eq!(
            CorpusSource::from_path(&parquet).unwrap(),
            CorpusSource::Parquet(parquet.clone())
        );
        assert_eq!(
            CorpusSource::from_path(&dir.0).unwrap(),
            CorpusSource::ImageFolder(dir.0.clone())
        );
        assert_eq!(detect(&txt).unwrap(), CorpusKind::Text);
        assert_eq!(detect(&parquet).unwrap(), CorpusKind::Text);
        assert_eq!(detect(&dir.0).unwrap(), CorpusKind::Images);
    }

    #[test]
    fn missing_path_and_unknown_extension() {
        let dir = Scratch::new("missing");
        let missing = dir.0.join("nope.txt");
        let err = detect(&missing).unwrap_err();
        assert!(matches!(err, CorpusError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.txt"));
        let err = load_text_corpus(&missing, "text", None).unwrap_err();
        assert!(matches!(err, CorpusError::NotFound { .. }), "{err:?}");

        let csv = dir.file("data.csv", b"a,b\n");
        let err = detect(&csv).unwrap_err();
        assert!(
            matches!(err, CorpusError::UnknownExtension { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("data.csv"));
        let noext = dir.file("README", b"hi\n");
        assert!(matches!(
            detect(&noext),
            Err(CorpusError::UnknownExtension { .. })
        ));
    }

    #[test]
    fn reads_txt_lines() {
        let dir = Scratch::new("txt");
        let path = dir.file(
            "c.txt",
            "\u{feff}First line.\r\n\n   \n# not a comment\n  padded  \nlast without newline"
                .as_bytes(),
        );
        let got = load_text_corpus(&path, "ignored", None).unwrap();
        assert_eq!(
            got,
            [
                "First line.",
                "# not a comment",
                "padded",
                "last without newline"
            ]
        );
        let got = load_text_corpus(&path, "text", Some(2)).unwrap();
        assert_eq!(got, ["First line.", "# not a comment"]);
        let got = load_text_corpus(&path, "text", Some(100)).unwrap();
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn txt_errors() {
        let dir = Scratch::new("txterr");
        let bad = dir.file("bad.txt", b"ok\n\nfine\nbro\xffken\n");
        let err = load_text_corpus(&bad, "text", None).unwrap_err();
        assert!(
            matches!(err, CorpusError::InvalidUtf8 { line: 4, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("bad.txt:4"), "{err}");
        // Reading stops at the limit, so the bad line is never reached.
        assert_eq!(
            load_text_corpus(&bad, "text", Some(2)).unwrap(),
            ["ok", "fine"]
        );

        let blank = dir.file("blank.txt", b"\n  \n\r\n");
        let err = load_text_corpus(&blank, "text", None).unwrap_err();
        assert!(matches!(err, CorpusError::Empty { .. }), "{err:?}");
        assert!(err.to_string().contains("blank.txt"));
        let empty = dir.file("empty.txt", b"");
        assert!(matches!(
            load_text_corpus(&empty, "text", None),
            Err(CorpusError::Empty { .. })
        ));

        let err = load_text_corpus(&bad, "text", Some(0)).unwrap_err();
        assert!(matches!(err, CorpusError::ZeroLimit { .. }), "{err:?}");
        let err = load_text_corpus(&dir.0, "text", None).unwrap_err();
        assert!(
            matches!(
                err,
                CorpusError::WrongKind {
                    expected: CorpusKind::Text,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn reads_jsonl() {
        let dir = Scratch::new("jsonl");
        let path = dir.file(
            "c.jsonl",
            b"{\"text\": \"  Hello there \", \"id\": 1}\n\n{\"text\": \"\", \"id\": 2}\r\n{\"text\": \"Second\"}\n",
        );
        assert_eq!(
            load_text_corpus(&path, "text", None).unwrap(),
            ["  Hello there ", "Second"]
        );
        assert_eq!(
            load_text_corpus(&path, "text", Some(1)).unwrap(),
            ["  Hello there "]
        );
        let custom = dir.file("s.jsonl", b"{\"sentence\": \"A b c\"}\n");
        assert_eq!(
            load_text_corpus(&custom, "sentence", None).unwrap(),
            ["A b c"]
        );
    }

    #[test]
    fn jsonl_errors() {
        let dir = Scratch::new("jsonlerr");
        let bad = dir.file("bad.jsonl", b"{\"text\": \"ok\"}\n{\"text\": oops}\n");
        let err = load_text_corpus(&bad, "text", None).unwrap_err();
        assert!(
            matches!(err, CorpusError::BadJson { line: 2, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}:2: invalid JSON", bad.display())),
            "{err}"
        );

        let missing = dir.file(
            "missing.jsonl",
            b"{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n",
        );
        let err = load_text_corpus(&missing, "text", None).unwrap_err();
        assert!(
            matches!(err, CorpusError::MissingField { line: 3, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("missing.jsonl:3") && msg.contains("\"text\""),
            "{msg}"
        );

        let typed = dir.file("typed.jsonl", b"{\"text\": 42}\n");
        let err = load_text_corpus(&typed, "text", None).unwrap_err();
        assert!(
            matches!(
                err,
                CorpusError::FieldNotString {
                    line: 1,
                    found: "number",
                    ..
                }
            ),
            "{err:?}"
        );

        let array = dir.file("array.jsonl", b"[\"text\"]\n");
        let err = load_text_corpus(&array, "text", None).unwrap_err();
        assert!(
            matches!(
                err,
                CorpusError::NotAnObject {
                    line: 1,
                    found: "array",
                    ..
                }
            ),
            "{err:?}"
        );

        let utf8 = dir.file("utf8.jsonl", b"{\"text\": \"\xc3\x28\"}\n");
        let err = load_text_corpus(&utf8, "text", None).unwrap_err();
        assert!(
            matches!(err, CorpusError::InvalidUtf8 { line: 1, .. }),
            "{err:?}"
        );

        let blanks = dir.file("blanks.jsonl", b"{\"text\": \"  \"}\n\n");
        assert!(matches!(
            load_text_corpus(&blanks, "text", None),
            Err(CorpusError::Empty { .. })
        ));
    }

    #[test]
    fn reads_parquet() {
        let dir = Scratch::new("parquet");
        let path = dir.0.join("c.parquet");
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("one two"),
            None,
            Some(" "),
            Some("three"),
        ]));
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3, 4]));
        write_parquet(&path, vec![("id", ids), ("text", text)]);
        assert_eq!(
            load_text_corpus(&path, "text", None).unwrap(),
            ["one two", "three"]
        );
        assert_eq!(
            load_text_corpus(&path, "text", Some(1)).unwrap(),
            ["one two"]
        );

        let large = dir.0.join("large.parquet");
        let body: ArrayRef = Arc::new(LargeStringArray::from(vec!["alpha", "beta"]));
        write_parquet(&large, vec![("body", body)]);
        assert_eq!(
            load_text_corpus(&large, "body", None).unwrap(),
            ["alpha", "beta"]
        );
    }

    #[test]
    fn parquet_errors() {
        let dir = Scratch::new("parqueterr");
        let path = dir.0.join("c.parquet");
        let text: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        write_parquet(&path, vec![("id", ids), ("text", text)]);

        let err = load_text_corpus(&path, "sentence", None).unwrap_err();
        assert!(
            matches!(err, CorpusError::Parquet(StoreError::NoSuchColumn { .. })),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("c.parquet") && msg.contains("`sentence`") && msg.contains("id, text"),
            "{msg}"
        );

        let err = load_text_corpus(&path, "id", None).unwrap_err();
        assert!(
            matches!(
                err,
                CorpusError::Parquet(StoreError::ColumnType { ref found, .. }) if found == "Int64"
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("`id`"));

        let nulls = dir.0.join("nulls.parquet");
        let text: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>, Some("")]));
        write_parquet(&nulls, vec![("text", text)]);
        assert!(matches!(
            load_text_corpus(&nulls, "text", None),
            Err(CorpusError::Empty { .. })
        ));

        let garbage = dir.file("garbage.parquet", b"definitely not parquet");
        let err = load_text_corpus(&garbage, "text", None).unwrap_err();
        assert!(
            matches!(err, CorpusError::Parquet(StoreError::Parquet { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("garbage.parquet"));
    }

    #[test]
    fn reads_image_folder() {
        let dir = Scratch::new("images");
        png(&dir.0, "b.png", 3, [0, 255, 0]);
        png(&dir.0, "a.png", 2, [255, 0, 0]);
        image::RgbImage::from_pixel(4, 4, image::Rgb([0, 0, 255]))
            .save(dir.0.join("c.JPG"))
            .unwrap();
        // A grayscale+alpha PNG is converted to RGB.
        image::GrayAlphaImage::from_pixel(1, 1, image::LumaA([7, 0]))
            .save(dir.0.join("d.jpeg.png"))
            .unwrap();
        dir.file(".DS_Store", b"junk");
        fs::create_dir(dir.0.join("thumbs")).unwrap();

        let images = load_image_folder(&dir.0, None).unwrap();
        let names: Vec<_> = images.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.png", "b.png", "c.JPG", "d.jpeg.png"]);
        assert_eq!(images[0].1.dimensions(), (2, 2));
        assert_eq!(images[0].1.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(images[1].1.get_pixel(2, 1).0, [0, 255, 0]);
        assert_eq!(images[2].1.dimensions(), (4, 4));
        let blue = images[2].1.get_pixel(1, 1).0;
        assert!(blue[2] > 200 && blue[0] < 50, "{blue:?}");
        assert_eq!(images[3].1.get_pixel(0, 0).0, [7, 7, 7]);

        let first = load_image_folder(&dir.0, Some(1)).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, "a.png");
    }

    #[test]
    fn image_folder_errors() {
        let dir = Scratch::new("imgerr");
        png(&dir.0, "a.png", 1, [1, 2, 3]);
        let notes = dir.file("notes.txt", b"hello");
        let err = load_image_folder(&dir.0, None).unwrap_err();
        assert!(
            matches!(&err, CorpusError::NotAnImage { path } if *path == notes),
            "{err:?}"
        );
        assert!(err.to_string().contains("notes.txt"));
        fs::remove_file(&notes).unwrap();

        dir.file("broken.png", b"not really a png");
        let err = load_image_folder(&dir.0, None).unwrap_err();
        assert!(matches!(err, CorpusError::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains("broken.png"), "{err}");
        // Only the first image is decoded under a limit, so the broken one is not reached.
        assert_eq!(load_image_folder(&dir.0, Some(1)).unwrap().len(), 1);
        assert!(matches!(
            load_image_folder(&dir.0, Some(0)),
            Err(CorpusError::ZeroLimit { .. })
        ));

        let empty = Scratch::new("imgempty");
        empty.file(".hidden.png", b"x");
        let err = load_image_folder(&empty.0, None).unwrap_err();
        assert!(matches!(err, CorpusError::Empty { .. }), "{err:?}");

        let txt = dir.file("c.txt", b"x\n");
        fs::remove_file(dir.0.join("broken.png")).unwrap();
        let err = load_image_folder(&txt, None).unwrap_err();
        assert!(
            matches!(
                err,
                CorpusError::WrongKind {
                    expected: CorpusKind::Images,
                    found: CorpusKind::Text,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = load_image_folder(&dir.0.join("gone"), None).unwrap_err();
        assert!(matches!(err, CorpusError::NotFound { .. }), "{err:?}");
    }
}
