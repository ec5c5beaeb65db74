//! The token table of an import (`--tokens`, JSONL or Parquet).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use attn_store::ParquetTable;
use attn_types::{TokenMeta, TokenTable};

use crate::error::{Context, Result, bail, input};

/// One token row as given by the user.
pub(super) struct TokenRow {
    seq_id: u32,
    position: u32,
    text: String,
    is_special: bool,
}

/// Reads `--tokens`: JSONL (one object per line) or Parquet, with `seq_id`, `position`, `text` and
/// optionally `is_special`; checks that sequences are contiguous and positions run `0..len`.
pub fn read_tokens(path: &Path) -> Result<TokenTable> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if !path.is_file() {
        bail!("--tokens {}: no such file", path.display());
    }
    let rows = match ext.as_str() {
        "jsonl" | "ndjson" => read_token_jsonl(path)?,
        "parquet" => read_token_parquet(path)?,
        _ => bail!(
            "--tokens {}: expected a .jsonl or .parquet file",
            path.display()
        ),
    };
    if rows.is_empty() {
        bail!("--tokens {}: no tokens", path.display());
    }
    // Rows are 1-based lines (JSONL) or 0-based rows (Parquet) in messages.
    let row_name = |i: usize| {
        if ext == "parquet" {
            format!("row {i}")
        } else {
            format!("line {}", i + 1)
        }
    };
    let mut seen = HashSet::new();
    let mut lens: Vec<(usize, usize)> = Vec::new(); // (start, len) of every sequence
    for (i, r) in rows.iter().enumerate() {
        let continues = i > 0 && rows[i - 1].seq_id == r.seq_id;
        if !continues {
            if !seen.insert(r.seq_id) {
                bail!(
                    "--tokens {}: `seq_id` {} at {} is not contiguous: its tokens appeared before (sequences must not be interleaved)",
                    path.display(),
                    r.seq_id,
                    row_name(i)
                );
            }
            lens.push((i, 0));
        }
        let (start, len) = lens
            .last_mut()
            .map(|s| (s.0, &mut s.1))
            .ok_or_else(|| input!("no sequence"))?;
        if r.position as usize != i - start {
            bail!(
                "--tokens {}: `position` at {} is {}, expected {} (positions must run 0..len-1 within sequence {}, in order)",
                path.display(),
                row_name(i),
                r.position,
                i - start,
                r.seq_id
            );
        }
        *len += 1;
    }
    let mut tokens = Vec::with_capacity(rows.len());
    for (start, len) in lens {
        for r in &rows[start..start + len] {
            tokens.push(TokenMeta {
                seq_id: r.seq_id,
                position: r.position,
                seq_len: u32::try_from(len).map_err(|_| {
                    input!("--tokens {}: a sequence of {len} tokens", path.display())
                })?,
                text: r.text.clone(),
                is_special: r.is_special,
                patch: None,
                is_cls: false,
                offsets: None,
            });
        }
    }
    let table = TokenTable { tokens };
    table
        .validate()
        .with_context(|| format!("--tokens {}", path.display()))?;
    Ok(table)
}

pub(super) fn read_token_jsonl(path: &Path) -> Result<Vec<TokenRow>> {
    let file = File::open(path).with_context(|| format!("--tokens {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let line = line.with_context(|| format!("--tokens {}: line {line_no}", path.display()))?;
        let line = line.trim_start_matches('\u{feff}');
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("--tokens {}: line {line_no}", path.display());
        let value: serde_json::Value = serde_json::from_str(line).with_context(at)?;
        let obj = value
            .as_object()
            .ok_or_else(|| input!("{}: not a JSON object", at()))?;
        let uint = |field: &str| -> Result<u32> {
            let v = obj
                .get(field)
                .ok_or_else(|| input!("{}: field `{field}` is missing", at()))?;
            v.as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    input!(
                        "{}: field `{field}` is {v}, not an integer in 0..2^32",
                        at()
                    )
                })
        };
        let text = match obj.get("text") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => bail!("{}: field `text` is {v}, not a string", at()),
            None => bail!("{}: field `text` is missing", at()),
        };
        let is_special = match obj.get("is_special") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(v) => bail!("{}: field `is_special` is {v}, not a bool", at()),
        };
        rows.push(TokenRow {
            seq_id: uint("seq_id")?,
            position: uint("position")?,
            text,
            is_special,
        });
    }
    Ok(rows)
}

pub(super) fn read_token_parquet(path: &Path) -> Result<Vec<TokenRow>> {
    let at = || "--tokens";
    let table = ParquetTable::read(path).with_context(at)?;
    let seq = table.u32_any("seq_id").with_context(at)?;
    let pos = table.u32_any("position").with_context(at)?;
    let text = table.strings_nullable("text").with_context(at)?;
    let special = table
        .bool_or_false("is_special")
        .with_context(at)?
        .unwrap_or_else(|| vec![false; seq.len()]);
    let mut rows = Vec::with_capacity(seq.len());
    for (i, text) in text.into_iter().enumerate() {
        let text = text
            .ok_or_else(|| input!("--tokens {}: column `text` row {i} is null", path.display()))?;
        rows.push(TokenRow {
            seq_id: seq[i],
            position: pos[i],
            text,
            is_special: special[i],
        });
    }
    Ok(rows)
}
