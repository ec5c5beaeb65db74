//! A small reader (and `f32` writer) of NumPy `.npy` files, for importing query/key vectors computed
//! elsewhere without a heavy dependency.
//!
//! Supported: format versions 1.0, 2.0 and 3.0 (header length as `u16` or `u32`, latin-1 or UTF-8
//! header), C order, little-endian `float16` (`<f2`), `float32` (`<f4`) and `float64` (`<f8`); all are
//! returned as `f32` (`float64` rounded to nearest). Everything else (Fortran order, big-endian or
//! integer dtypes, object arrays, structured dtypes, a file shorter or longer than its shape) is a
//! [`StoreError`] naming the file.
//!
//! Reads are by element range ([`NpyFile::read_f32`]), so one head's slab of a `[layers, heads, n, d]`
//! array is read without loading the rest; `&self` reads open the file anew, so threads may share a
//! [`NpyFile`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::pq::write_file_atomically;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element type of a supported `.npy` file (always little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NpyDtype {
    /// IEEE half precision, `<f2`.
    F16,
    /// IEEE single precision, `<f4`.
    F32,
    /// IEEE double precision, `<f8`.
    F64,
}

impl NpyDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NpyDtype::F16 => 2,
            NpyDtype::F32 => 4,
            NpyDtype::F64 => 8,
        }
    }

    /// The NumPy `descr` string (`<f2`, `<f4`, `<f8`).
    pub fn descr(self) -> &'static str {
        match self {
            NpyDtype::F16 => "<f2",
            NpyDtype::F32 => "<f4",
            NpyDtype::F64 => "<f8",
        }
    }

    /// NumPy's name of the type (`float16`, `float32`, `float64`).
    pub fn name(self) -> &'static str {
        match self {
            NpyDtype::F16 => "float16",
            NpyDtype::F32 => "float32",
            NpyDtype::F64 => "float64",
        }
    }
}

/// The parsed header of a `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Format version `(major, minor)`: `(1, 0)`, `(2, 0)` or `(3, 0)`.
    pub version: (u8, u8),
    /// Element type.
    pub dtype: NpyDtype,
    /// Array shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: u64,
}

impl NpyHeader {
    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of data the shape requires (`None` on overflow).
    fn data_bytes(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.dtype.size() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            })
    }
}

/// An opened, validated `.npy` file: the header is parsed and the file size checked against the
/// shape; the data is read on demand.
#[derive(Debug, Clone)]
pub struct NpyFile {
    path: PathBuf,
    header: NpyHeader,
}

impl NpyFile {
    /// Opens `path`, parses and validates its header, and checks that the file holds exactly the data
    /// the shape requires.
    pub fn open(path: impl AsRef<Path>) -> Result<NpyFile, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound {
                    path: path.clone(),
                    what: "the .npy file".into(),
                }
            } else {
                StoreError::io(&path, e)
            }
        })?;
        let file_len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        let header = read_header(&mut file, &path)?;
        let needed = header.data_bytes().ok_or_else(|| StoreError::NpyHeader {
            path: path.clone(),
            message: format!("shape {:?} is too large", header.shape),
        })?;
        let found = file_len.saturating_sub(header.data_offset);
        if found != needed {
            return Err(StoreError::NpySize {
                path,
                shape: header.shape.clone(),
                dtype: header.dtype.name(),
                expected: needed,
                found,
            });
        }
        Ok(NpyFile { path, header })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header.
    pub fn header(&self) -> &NpyHeader {
        &self.header
    }

    /// The array shape.
    pub fn shape(&self) -> &[usize] {
        &self.header.shape
    }

    /// The element type on disk.
    pub fn dtype(&self) -> NpyDtype {
        self.header.dtype
    }

    /// Reads `count` elements starting at element `start` (in C order), converted to `f32`.
    pub fn read_f32(&self, start: usize, count: usize) -> Result<Vec<f32>, StoreError> {
        let end = start.checked_add(count);
        if end.is_none_or(|e| e > self.header.len()) {
            return Err(StoreError::invalid(
                &self.path,
                "shape",
                format!(
                    "elements {start}..{} are outside the array of {} elements",
                    start.saturating_add(count),
                    self.header.len()
                ),
            ));
        }
        let size = self.header.dtype.size();
        let mut file = File::open(&self.path).map_err(|e| StoreError::io(&self.path, e))?;
        file.seek(SeekFrom::Start(
            self.header.data_offset + (start * size) as u64,
        ))
        .map_err(|e| StoreError::io(&self.path, e))?;
        let mut bytes = vec![0u8; count * size];
        file.read_exact(&mut bytes)
            .map_err(|e| StoreError::io(&self.path, e))?;
        Ok(decode(&bytes, self.header.dtype))
    }

    /// Reads the whole array as `f32`.
    pub fn read_all_f32(&self) -> Result<Vec<f32>, StoreError> {
        self.read_f32(0, self.header.len())
    }
}

/// Reads a whole `.npy` file: its shape and its values as `f32` (C order).
pub fn read_npy(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<f32>), StoreError> {
    let f = NpyFile::open(path)?;
    let data = f.read_all_f32()?;
    Ok((f.header.shape, data))
}

/// Writes `data` (C order) as a little-endian `float32` `.npy` file of `shape` (format 1.0, or 2.0
/// when the header needs more than 65,535 bytes), atomically (temporary file + rename).
pub fn write_npy(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<(), StoreError> {
    let path = path.as_ref();
    let len: usize = shape.iter().product();
    if len != data.len() {
        return Err(StoreError::invalid(
            path,
            "shape",
            format!("{shape:?} holds {len} values, {} were given", data.len()),
        ));
    }
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // The header (magic, version, length, dict, padding, '\n') is padded to a multiple of 64 bytes.
    let padded = |prefix: usize| (prefix + dict.len() + 1).div_ceil(64) * 64;
    let v1 = padded(10) - 10 <= usize::from(u16::MAX);
    let prefix = if v1 { 10 } else { 12 };
    let total = padded(prefix);
    let header_len = total - prefix;
    let mut bytes = Vec::with_capacity(total + data.len() * 4);
    bytes.extend_from_slice(MAGIC);
    if v1 {
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&[2, 0]);
        bytes.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    bytes.extend_from_slice(dict.as_bytes());
    bytes.resize(total - 1, b' ');
    bytes.push(b'\n');
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_file_atomically(path, &bytes)
}

fn header_error(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::NpyHeader {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_header(file: &mut File, path: &Path) -> Result<NpyHeader, StoreError> {
    let mut pre = [0u8; 8];
    file.read_exact(&mut pre)
        .map_err(|_| header_error(path, "shorter than the 8-byte .npy preamble"))?;
    if &pre[..6] != MAGIC {
        return Err(header_error(
            path,
            "no .npy magic string (\\x93NUMPY) at the start",
        ));
    }
    let version = (pre[6], pre[7]);
    let len_bytes = match version.0 {
        1 => 2,
        2 | 3 => 4,
        v => {
            return Err(header_error(
                path,
                format!(
                    "format version {v}.{} is not supported (1.0, 2.0, 3.0 are)",
                    version.1
                ),
            ));
        }
    };
    let mut len_buf = [0u8; 4];
    file.read_exact(&mut len_buf[..len_bytes])
        .map_err(|_| header_error(path, "truncated in the header length"))?;
    let header_len = u32::from_le_bytes(len_buf) as usize;
    let mut raw = vec![0u8; header_len];
    file.read_exact(&mut raw)
        .map_err(|_| header_error(path, format!("truncated in the {header_len}-byte header")))?;
    // Versions 1 and 2 are latin-1, version 3 UTF-8.
    let text: String = if version.0 == 3 {
        String::from_utf8(raw).map_err(|_| header_error(path, "header is not UTF-8"))?
    } else {
        raw.iter().map(|&b| char::from(b)).collect()
    };
    let data_offset = (6 + 2 + len_bytes + header_len) as u64;
    let dict = parse_dict(&text).map_err(|m| header_error(path, m))?;
    let get = |key: &str| {
        dict.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| header_error(path, format!("header has no `{key}` entry")))
    };
    let descr = match get("descr")? {
        Lit::Str(s) => s.clone(),
        other => {
            return Err(StoreError::NpyDtype {
                path: path.to_path_buf(),
                dtype: format!("{other:?} (a structured dtype)"),
            });
        }
    };
    let dtype = match descr.as_str() {
        "<f2" => NpyDtype::F16,
        "<f4" => NpyDtype::F32,
        "<f8" => NpyDtype::F64,
        _ => {
            return Err(StoreError::NpyDtype {
                path: path.to_path_buf(),
                dtype: descr,
            });
        }
    };
    match get("fortran_order")? {
        Lit::Bool(false) => {}
        Lit::Bool(true) => {
            return Err(StoreError::NpyFortranOrder {
                path: path.to_path_buf(),
            });
        }
        other => {
            return Err(header_error(
                path,
                format!("`fortran_order` is {other:?}, not a bool"),
            ));
        }
    }
    let shape = match get("shape")? {
        Lit::Seq(items) => items
            .iter()
            .map(|i| match i {
                Lit::Int(v) => usize::try_from(*v).map_err(|_| ()),
                _ => Err(()),
            })
            .collect::<Result<Vec<usize>, ()>>()
            .map_err(|()| {
                header_error(path, format!("`shape` {items:?} is not a tuple of sizes"))
            })?,
        other => {
            return Err(header_error(
                path,
                format!("`shape` is {other:?}, not a tuple"),
            ));
        }
    };
    Ok(NpyHeader {
        version,
        dtype,
        shape,
        data_offset,
    })
}

/// A Python literal of the header dictionary.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Int(i64),
    Seq(Vec<Lit>),
    None,
}

/// Parses the header: a Python dict literal with string keys.
fn parse_dict(text: &str) -> Result<Vec<(String, Lit)>, String> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    p.skip_ws();
    p.expect('{')?;
    let mut out = Vec::new();
    loop {
        p.skip_ws();
        if p.eat('}') {
            break;
        }
        let key = match p.value()? {
            Lit::Str(s) => s,
            other => return Err(format!("dictionary key {other:?} is not a string")),
        };
        p.skip_ws();
        p.expect(':')?;
        let value = p.value()?;
        out.push((key, value));
        p.skip_ws();
        if p.eat('}') {
            break;
        }
        p.expect(',')?;
    }
    p.skip_ws();
    if p.pos != p.chars.len() {
        return Err(format!(
            "unexpected text after the dictionary at character {}",
            p.pos
        ));
    }
    Ok(out)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(match self.peek() {
                Some(f) => format!("expected `{c}` at character {}, found `{f}`", self.pos),
                None => format!("expected `{c}`, found the end of the header"),
            })
        }
    }

    fn value(&mut self) -> Result<Lit, String> {
        self.skip_ws();
        match self.peek() {
            Some(q @ ('\'' | '"')) => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.peek() {
                        None => return Err("unterminated string in the header".into()),
                        Some(c) if c == q => {
                            self.pos += 1;
                            break;
                        }
                        Some('\\') => {
                            self.pos += 1;
                            if let Some(c) = self.peek() {
                                s.push(c);
                                self.pos += 1;
                            }
                        }
                        Some(c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
                Ok(Lit::Str(s))
            }
            Some(open @ ('(' | '[')) => {
                self.pos += 1;
                let close = if open == '(' { ')' } else { ']' };
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    if self.eat(close) {
                        break;
                    }
                    items.push(self.value()?);
                    self.skip_ws();
                    if self.eat(close) {
                        break;
                    }
                    self.expect(',')?;
                }
                Ok(Lit::Seq(items))
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                // Python 2 era headers may write long integers as `3L`.
                let text: String = self.chars[start..self.pos].iter().collect();
                self.eat('L');
                text.parse()
                    .map(Lit::Int)
                    .map_err(|_| format!("`{text}` is not an integer"))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                match word.as_str() {
                    "True" => Ok(Lit::Bool(true)),
                    "False" => Ok(Lit::Bool(false)),
                    "None" => Ok(Lit::None),
                    _ => Err(format!("unexpected `{word}` in the header")),
                }
            }
            Some(c) => Err(format!(
                "unexpected `{c}` at character {} of the header",
                self.pos
            )),
            None => Err("the header ends inside a value".into()),
        }
    }
}

/// Little-endian bytes of `dtype` to `f32`.
fn decode(bytes: &[u8], dtype: NpyDtype) -> Vec<f32> {
    match dtype {
        NpyDtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        NpyDtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        NpyDtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
    }
}

/// IEEE 754 binary16 to binary32 (exact: every half is a float), subnormals, infinities and NaN
/// included.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m * 2^-24, normalized for f32.
            let shift = m.leading_zeros() - 21; // leading zeros within the 10-bit field, plus one
            let m = (m << shift) & 0x3ff;
            let e = 127 - 15 + 1 - shift;
            sign | (e << 23) | (m << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.npy` file with any header dict, version and payload.
    fn npy(dict: &str, version: u8, payload: &[u8]) -> Vec<u8> {
        let prefix = if version == 1 { 10 } else { 12 };
        let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[version, 0]);
        if version == 1 {
            b.extend_from_slice(&((total - prefix) as u16).to_le_bytes());
        } else {
            b.extend_from_slice(&((total - prefix) as u32).to_le_bytes());
        }
        b.extend_from_slice(dict.as_bytes());
        b.resize(total - 1, b' ');
        b.push(b'\n');
        b.extend_from_slice(payload);
        b
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    #[test]
    fn reads_v1_float32_and_element_ranges() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let values: Vec<f32> = (0..24).map(|v| v as f32 * 0.5).collect();
        let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = write(
            tmp.path(),
            "a.npy",
            &npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }",
                1,
                &payload,
            ),
        );
        let f = NpyFile::open(&p).expect("opens");
        assert_eq!(f.header().version, (1, 0));
        assert_eq!(f.shape(), &[2, 3, 4]);
        assert_eq!(f.dtype(), NpyDtype::F32);
        assert_eq!(f.header().data_offset % 64, 0);
        assert_eq!(f.read_all_f32().expect("reads"), values);
        assert_eq!(f.read_f32(12, 4).expect("reads"), &values[12..16]);
        assert!(f.read_f32(22, 4).is_err());
    }

    #[test]
    fn reads_v2_and_v3_headers_and_odd_spellings() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let payload: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        for (v, dict) in [
            (
                2,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            ),
            (
                3,
                "{\"shape\": (2,), \"fortran_order\": False, \"descr\": \"<f4\"}",
            ),
            (1, "{'descr':'<f4','fortran_order':False,'shape':(1L, 2L)}"),
        ] {
            let p = write(tmp.path(), "v.npy", &npy(dict, v, &payload));
            let (shape, data) = read_npy(&p).expect(dict);
            assert_eq!(shape.iter().product::<usize>(), 2);
            assert_eq!(data, vec![1.5, -2.0]);
        }
    }

    #[test]
    fn converts_float16_and_float64() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // 1.0, -2.5, 65504 (max half), smallest subnormal 2^-24, +inf, 0.333 (nearest half).
        let halves: [u16; 6] = [0x3c00, 0xc100, 0x7bff, 0x0001, 0x7c00, 0x3555];
        let payload: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        let p = write(
            tmp.path(),
            "h.npy",
            &npy(
                "{'descr': '<f2', 'fortran_order': False, 'shape': (6,), }",
                1,
                &payload,
            ),
        );
        let (_, data) = read_npy(&p).expect("reads f16");
        assert_eq!(
            &data[..5],
            &[1.0, -2.5, 65504.0, 2f32.powi(-24), f32::INFINITY]
        );
        assert!((data[5] - 0.333).abs() < 1e-3);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x0200), 2f32.powi(-15)); // a larger subnormal
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14)); // smallest normal

        let doubles = [0.1f64, -1e10, 3.0];
        let payload: Vec<u8> = doubles.iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = write(
            tmp.path(),
            "d.npy",
            &npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                1,
                &payload,
            ),
        );
        let f = NpyFile::open(&p).expect("opens f64");
        assert_eq!(f.dtype(), NpyDtype::F64);
        assert_eq!(f.read_all_f32().expect("reads"), vec![0.1f32, -1e10, 3.0]);
    }

    #[test]
    fn rejects_fortran_order_other_dtypes_and_bad_sizes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let payload = vec![0u8; 16];
        let p = write(
            tmp.path(),
            "f.npy",
            &npy(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                1,
                &payload,
            ),
        );
        let e = NpyFile::open(&p).expect_err("fortran order");
        assert!(matches!(e, StoreError::NpyFortranOrder { .. }), "{e}");
        assert!(
            e.to_string().contains("f.npy") && e.to_string().contains("Fortran"),
            "{e}"
        );

        for descr in ["<i4", ">f4", "|u1", "<c8", "O"] {
            let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (4,), }}");
            let p = write(tmp.path(), "t.npy", &npy(&dict, 1, &payload));
            let e = NpyFile::open(&p).expect_err(descr);
            assert!(matches!(e, StoreError::NpyDtype { .. }), "{descr}: {e}");
            assert!(
                e.to_string().contains("t.npy") && e.to_string().contains(descr),
                "{e}"
            );
        }
        let p = write(
            tmp.path(),
            "s.npy",
            &npy(
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }",
                1,
                &payload,
            ),
        );
        assert!(matches!(
            NpyFile::open(&p),
            Err(StoreError::NpyDtype { .. })
        ));

        // Truncated data: 3 x 2 float32 need 24 bytes.
        let p = write(
            tmp.path(),
            "short.npy",
            &npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }",
                1,
                &payload,
            ),
        );
        let e = NpyFile::open(&p).expect_err("truncated");
        assert!(
            matches!(
                e,
                StoreError::NpySize {
                    expected: 24,
                    found: 16,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("short.npy"), "{e}");

        // A truncated header, no magic, an unknown version.
        let good = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
            1,
            &payload,
        );
        let p = write(tmp.path(), "cut.npy", &good[..30]);
        assert!(matches!(
            NpyFile::open(&p),
            Err(StoreError::NpyHeader { .. })
        ));
        let p = write(tmp.path(), "txt.npy", b"hello world, not numpy");
        assert!(matches!(
            NpyFile::open(&p),
            Err(StoreError::NpyHeader { .. })
        ));
        let mut v9 = good.clone();
        v9[6] = 9;
        let p = write(tmp.path(), "v9.npy", &v9);
        let e = NpyFile::open(&p).expect_err("version 9");
        assert!(e.to_string().contains("version 9"), "{e}");
        let e = NpyFile::open(tmp.path().join("missing.npy")).expect_err("missing");
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    }

    #[test]
    fn write_npy_round_trips() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("w.npy");
        let data: Vec<f32> = (0..30).map(|v| (v as f32).sin()).collect();
        write_npy(&p, &[2, 3, 5], &data).expect("writes");
        let f = NpyFile::open(&p).expect("opens");
        assert_eq!(f.header().data_offset % 64, 0);
        assert_eq!(f.shape(), &[2, 3, 5]);
        assert_eq!(f.read_all_f32().expect("reads"), data);
        write_npy(&p, &[7], &data[..7]).expect("1-D");
        assert_eq!(read_npy(&p).expect("reads").0, vec![7]);
        assert!(write_npy(&p, &[2, 2], &data).is_err());
    }
}
