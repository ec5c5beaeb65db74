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

/// Fits the synthetic heads (non-causal and causal, 600 tokens) through `fit(joint, edges, lambda)`
/// without the per-query term and with `lambda`, and asserts that the term raises hit@3 and
/// fidelity by more than the margins, records `lambda`, and costs under 0.02 of trustworthiness.
pub(crate) fn assert_the_term_orders_keys(
    fit: impl Fn(&Matrix, &crate::AttentionEdges, f32) -> crate::Embedding,
    lambda: f32,
    margin_hit: f32,
    margin_fid: f32,
) {
    for (causal, seed) in [(false, 11), (true, 12)] {
        let h = crate::attention::synthetic::head(600, causal, seed);
        let joint = h.joint();
        let edges = crate::AttentionEdges::from_attention(&h.tokens, &h.attention, causal)
            .unwrap_or_else(|e| panic!("{e}"));
        let scores = |lambda: f32| {
            let emb = fit(&joint, &edges, lambda);
            assert_eq!(emb.spec.params["attention_kl"], lambda as f64);
            let scores = layout_scores(&h, &emb.coords, causal);
            eprintln!("causal {causal}, lambda {lambda}: (hit@3, fidelity, trust) {scores:?}");
            scores
        };
        let (hit0, fid0, trust0) = scores(0.0);
        let (hit, fid, trust) = scores(lambda);
        assert!(hit > hit0 + margin_hit, "causal {causal}: hit@3 {hit0} -> {hit}");
        assert!(fid > fid0 + margin_fid, "causal {causal}: fidelity {fid0} -> {fid}");
        assert!(trust > trust0 - 0.02, "causal {causal}: trust {trust0} -> {trust}");
    }
}
