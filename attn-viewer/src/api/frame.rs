//! The binary frames of the views with a point per token and role (`/api/matrix`, `/api/single`).

use attn_types::Role;
use attn_viz_core::MatrixView;
use serde_json::{Value, json};

use super::Result;
use crate::error::ViewerError;

/// Magic bytes that open a binary frame (`/api/matrix`, `/api/single`): then a little-endian `u32`
/// header length, a JSON header whose `buffers` maps each buffer's name to `[offset, bytes]` (offsets
/// from the end of the header padded to 4 bytes), then the buffers, each padded to 4 bytes.
pub const FRAME_MAGIC: &[u8; 4] = b"AVF1";

/// A binary answer: `AVF1`, a little-endian `u32` header length, a JSON header, then the named
/// buffers, each starting at a multiple of 4 bytes. The header gets `buffers: { name: [offset, bytes] }`
/// with offsets counted from the end of the (padded) header. Views with one entry per point use it, so
/// that 144 heads x 20k points load in a browser without parsing millions of JSON numbers.
struct Frame {
    header: Value,
    buffers: Vec<(&'static str, Vec<u8>)>,
}

impl Frame {
    fn encode(mut self) -> Result<Vec<u8>> {
        let mut table = serde_json::Map::new();
        let mut offset = 0usize;
        for (name, data) in &self.buffers {
            table.insert((*name).into(), json!([offset, data.len()]));
            offset += data.len().div_ceil(4) * 4;
        }
        if let Some(o) = self.header.as_object_mut() {
            o.insert("buffers".into(), Value::Object(table));
        }
        let header = self.header.to_string().into_bytes();
        let mut out = Vec::with_capacity(8 + header.len() + 3 + offset);
        out.extend_from_slice(FRAME_MAGIC);
        out.extend_from_slice(
            &u32::try_from(header.len())
                .map_err(ViewerError::encode)?
                .to_le_bytes(),
        );
        out.extend_from_slice(&header);
        pad4(&mut out);
        for (_, data) in &self.buffers {
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        Ok(out)
    }
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(4) * 4, 0);
}

fn f32_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(f32::to_le_bytes).collect()
}

/// View positions (always in `[0, 1]`) as `u16` fixed point, 1/65535 of a view: half the bytes of
/// f32 and far finer than any screen; WebGL reads them as normalized attributes directly.
fn position_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values
        .flat_map(|v| ((v.clamp(0.0, 1.0) * 65535.0).round() as u16).to_le_bytes())
        .collect()
}

/// The Matrix View as a [`Frame`]: the view without its point arrays (each cell gets `offset` and
/// `count` into them), buffers `positions` (`u16 x 3` per point, fixed point) and `colors` (`u8 x 4`).
pub(super) fn encode_matrix(mut view: MatrixView) -> Result<Vec<u8>> {
    let total: usize = view.cells.iter().map(|c| c.positions.len()).sum();
    let mut positions = Vec::with_capacity(total * 6);
    let mut colors = Vec::with_capacity(total * 4);
    let mut cells = Vec::with_capacity(view.cells.len());
    let mut offset = 0usize;
    for cell in &mut view.cells {
        let count = cell.positions.len();
        positions.extend(position_bytes(cell.positions.drain(..).flatten()));
        colors.extend(cell.colors.drain(..).flat_map(|c| c.0));
        cell.patches.clear();
        let mut v = serde_json::to_value(&*cell).map_err(ViewerError::encode)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("offset".into(), json!(offset));
            o.insert("count".into(), json!(count));
        }
        cells.push(v);
        offset += count;
    }
    view.cells.clear();
    let mut header = serde_json::to_value(&view).map_err(ViewerError::encode)?;
    if let Some(o) = header.as_object_mut() {
        o.insert("cells".into(), Value::Array(cells));
        o.insert("points".into(), json!(total));
    }
    Frame {
        header,
        buffers: vec![("positions", positions), ("colors", colors)],
    }
    .encode()
}

/// Flag bit of a Single View point in its `flags` buffer: the point matches the search.
pub const FLAG_SEARCH_MATCH: u8 = 1;
/// The point belongs to the selected point's sequence.
pub const FLAG_IN_SELECTED_SEQUENCE: u8 = 2;
/// The point is a key (otherwise a query).
pub const FLAG_KEY: u8 = 4;

/// The Single View as a [`Frame`]: the view without `points`, buffers `positions` (`u16 x 3`, fixed point),
/// `colors` (`u8 x 4`), `sizes` (`f32`), `tokens` (`u32`) and `flags` (`u8`, the `FLAG_*` bits).
pub(super) fn encode_single(mut view: attn_viz_core::SingleView) -> Result<Vec<u8>> {
    let points = std::mem::take(&mut view.points);
    let mut header = serde_json::to_value(&view).map_err(ViewerError::encode)?;
    if let Some(o) = header.as_object_mut() {
        o.insert("count".into(), json!(points.len()));
    }
    let flags = points
        .iter()
        .map(|p| {
            let bit = |on: bool, flag: u8| if on { flag } else { 0 };
            bit(p.search_match, FLAG_SEARCH_MATCH)
                | bit(p.in_selected_sequence, FLAG_IN_SELECTED_SEQUENCE)
                | bit(p.role == Role::Key, FLAG_KEY)
        })
        .collect();
    let buffers = vec![
        (
            "positions",
            position_bytes(points.iter().flat_map(|p| p.position)),
        ),
        ("colors", points.iter().flat_map(|p| p.color.0).collect()),
        ("sizes", f32_bytes(points.iter().map(|p| p.size))),
        (
            "tokens",
            points.iter().flat_map(|p| p.token.to_le_bytes()).collect(),
        ),
        ("flags", flags),
    ];
    Frame { header, buffers }.encode()
}
