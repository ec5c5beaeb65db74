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

/// hit@3 and fidelity of a joint layout of the synthetic head `h`.
pub(crate) fn fidelity_scores(
    h: &crate::attention::synthetic::Head,
    coords: &Matrix,
    causal: bool,
) -> (f32, f32) {
    let f = crate::fidelity(
        crate::FidelitySpace::Layout(coords),
        &h.queries,
        &h.keys,
        &h.tokens,
        &h.attention,
        causal,
        0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (
        f.hit_at_3.unwrap_or_else(|| panic!("no hit@3")),
        f.fidelity.unwrap_or_else(|| panic!("no fidelity")),
    )
}

/// hit@3, fidelity and trustworthiness@10 (cosine, all points) of a joint layout of `h`.
pub(crate) fn layout_scores(
    h: &crate::attention::synthetic::Head,
    coords: &Matrix,
    causal: bool,
) -> (f32, f32, f32) {
    let (hit, fid) = fidelity_scores(h, coords, causal);
    let trust = crate::trustworthiness(&h.joint(), coords, 10, attn_types::Metric::Cosine)
        .unwrap_or_else(|e| panic!("{e}"));
    (hit, fid, trust)
}
