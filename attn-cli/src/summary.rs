//! The per-head summary table that `run`, `extract`, `project`, `import` and `info` print.

use attn_pipeline::{HeadSummary, RunSummary};

/// A column of the table: its header and how to read its value from a head's row.
type Column<'a> = (String, Box<dyn Fn(&HeadSummary) -> Option<f32> + 'a>);

/// What an empty cell says: fidelity that could not be measured (no attention, no query with 4
/// keys) is "n/a"; other missing numbers (no normalization, no quality pass) are "-".
fn missing(column: &str) -> &'static str {
    if column.starts_with("fid") || column.starts_with("hit3") {
        "n/a"
    } else {
        "-"
    }
}

/// Prints the per-head table (normalization diagnostics; the input spaces' attention fidelity; per
/// projection trustworthiness@10, attention fidelity and hit@3), the means, and the totals.
pub fn print_summary(s: &RunSummary) {
    let fmt =
        |v: Option<f32>, column: &str| v.map_or(missing(column).to_string(), |v| format!("{v:.3}"));
    let mut keys: Vec<&String> = s
        .per_head
        .iter()
        .flat_map(|h| h.trustworthiness.keys().chain(h.fidelity.keys()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut columns: Vec<Column<'_>> = vec![
        (
            "rho_cos".into(),
            Box::new(|h: &HeadSummary| h.spearman_cosine_before),
        ),
        (
            "rho_norm".into(),
            Box::new(|h: &HeadSummary| h.spearman_cosine_after),
        ),
        ("scale".into(), Box::new(|h: &HeadSummary| h.scale)),
        ("qk_gap".into(), Box::new(|h: &HeadSummary| h.norm_gap)),
    ];
    if s.per_head.iter().any(|h| h.fidelity_raw.is_some()) {
        columns.push((
            "fid raw".into(),
            Box::new(|h: &HeadSummary| h.fidelity_raw.and_then(|f| f.fidelity)),
        ));
        columns.push((
            "fid norm".into(),
            Box::new(|h: &HeadSummary| h.fidelity_normalized.and_then(|f| f.fidelity)),
        ));
    }
    for k in keys {
        columns.push((
            format!("T@10 {k}"),
            Box::new(move |h: &HeadSummary| h.trustworthiness.get(k).copied()),
        ));
        columns.push((
            format!("fid {k}"),
            Box::new(move |h: &HeadSummary| h.fidelity.get(k).and_then(|f| f.fidelity)),
        ));
        columns.push((
            format!("hit3 {k}"),
            Box::new(move |h: &HeadSummary| h.fidelity.get(k).and_then(|f| f.hit_at_3)),
        ));
    }
    let width = |name: &str| name.len().max(6);
    let mut header = format!("{:<8}", "head");
    for (name, _) in &columns {
        header.push_str(&format!(" {:>w$}", name, w = width(name)));
    }
    outln!("{header}");
    for h in &s.per_head {
        let mut line = format!("{:<8}", h.head);
        for (name, value) in &columns {
            line.push_str(&format!(" {:>w$}", fmt(value(h), name), w = width(name)));
        }
        outln!("{line}");
    }
    let mut line = format!("{:<8}", "mean");
    for (name, value) in &columns {
        let v: Vec<f32> = s
            .per_head
            .iter()
            .filter_map(value)
            .filter(|v| v.is_finite())
            .collect();
        let mean = (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32);
        line.push_str(&format!(" {:>w$}", fmt(mean, name), w = width(name)));
    }
    outln!("{line}");
    if let Some(chance) = mean_chance(s) {
        outln!(
            "hit3 = share of queries whose most-attended key is among their 3 nearest keys (chance {chance:.3})"
        );
    }
    outln!(
        "{} sequences, {} tokens, {} heads ({} extracted now), {} projections computed, {} reused, {:.1} s",
        s.sequences,
        s.tokens,
        s.heads,
        s.heads_extracted,
        s.projections_computed,
        s.projections_reused,
        s.seconds
    );
    outln!("dataset: {}", s.dataset.display());
    for f in &s.figures {
        outln!("figure:  {}", f.display());
    }
    if s.interrupted {
        outln!("interrupted: finished heads are on disk; run the same command again to resume");
    }
}

/// Mean hit@3 expected by chance over every head's first stored projection.
fn mean_chance(s: &RunSummary) -> Option<f32> {
    let v: Vec<f32> = s
        .per_head
        .iter()
        .filter_map(|h| h.fidelity.values().next().and_then(|f| f.chance_at_3))
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
}
