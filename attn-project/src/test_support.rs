//! Token tables and attention matrices for the unit tests of several modules.

use attn_types::{Matrix, SequenceAttention, TokenTable};

/// A text token table with sequences of the given lengths, numbered from `first_seq_id`.
pub(crate) fn token_table(first_seq_id: u32, lens: &[usize]) -> TokenTable {
    let mut table = TokenTable::placeholder(lens);
    for t in &mut table.tokens {
        t.seq_id += first_seq_id;
    }
    table
}

/// One sequence's attention from its rows.
pub(crate) fn att(seq_id: u32, rows: &[Vec<f32>]) -> SequenceAttention {
    SequenceAttention {
        seq_id,
        weights: Matrix::from_rows(rows).unwrap(),
    }
}
