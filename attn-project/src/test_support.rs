//! Token tables and attention matrices for the unit tests of several modules.

use attn_types::{Matrix, SequenceAttention, TokenMeta, TokenTable};

/// A text token table with sequences of the given lengths, numbered from `first_seq_id`.
pub(crate) fn token_table(first_seq_id: u32, lens: &[usize]) -> TokenTable {
    let mut tokens = Vec::new();
    for (s, &len) in lens.iter().enumerate() {
        for p in 0..len {
            tokens.push(TokenMeta {
                seq_id: first_seq_id + s as u32,
                position: p as u32,
                seq_len: len as u32,
                text: format!("t{p}"),
                is_special: false,
                patch: None,
                is_cls: false,
                offsets: None,
            });
        }
    }
    TokenTable { tokens }
}

/// One sequence's attention from its rows.
pub(crate) fn att(seq_id: u32, rows: &[Vec<f32>]) -> SequenceAttention {
    SequenceAttention {
        seq_id,
        weights: Matrix::from_rows(rows).unwrap(),
    }
}
