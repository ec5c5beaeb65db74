//! The per-head summary table that `run`, `extract`, `project`, `import` and `info` print.

use attn_pipeline::{DatasetInfo, HeadSummary, RunSummary};

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

/// Prints the per-head table and the totals of what a command did.
pub fn print_summary(s: &RunSummary) {
    print_table(s);
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

/// Prints what a dataset is (model, corpus, settings, how complete), then its per-head table.
pub fn print_info(info: &DatasetInfo) {
    let (model, run) = (&info.meta.model, &info.meta.run);
    let s = &info.summary;
    let version = run
        .crate_versions
        .get("attn-pipeline")
        .map_or(String::new(), |v| format!(", attnviz {v}"));
    outln!(
        "dataset:  {} (data model {}, created {}{version})",
        s.dataset.display(),
        info.meta.schema_version,
        run.created_at
    );
    let key_heads = model
        .num_key_value_heads
        .filter(|&kv| kv != model.num_heads)
        .map_or(String::new(), |kv| format!(" ({kv} key heads)"));
    let rope = match model.rope {
        Some(attn_types::RopeCapture::Post) => "; q/k after the rotary embedding",
        Some(attn_types::RopeCapture::Pre) => "; q/k before the rotary embedding (--rope pre)",
        None => "",
    };
    outln!(
        "model:    {} ({}, {} layers x {} heads{key_heads}, head dim {}{rope})",
        model.id,
        model.architecture,
        model.num_layers,
        model.num_heads,
        model.head_dim
    );
    outln!(
        "corpus:   {}: {} sequences, {} tokens",
        run.corpus,
        s.sequences,
        s.tokens
    );
    let settings: Vec<String> = run
        .params
        .iter()
        // Digests identify inputs for resuming; they say nothing to a reader.
        .filter(|(k, _)| {
            !k.starts_with(attn_pipeline::import::INPUT_FILE)
                && !k.starts_with(attn_pipeline::MODEL_FILE)
                && *k != "corpus_digest"
        })
        .map(|(k, v)| format!("{k} {v}"))
        .chain([format!("extraction seed {}", run.seed)])
        .collect();
    outln!("settings: {}", settings.join(", "));
    let projections: Vec<String> = info
        .projections
        .iter()
        .map(|(k, n)| {
            // What made each layout: its spec's seed, not the run's (`project --seed`).
            let seeds = info.projection_seeds.get(k).map_or(String::new(), |s| {
                let list: Vec<String> = s.iter().map(u64::to_string).collect();
                format!(", seed {}", list.join("/"))
            });
            format!("{k} ({n}{seeds})")
        })
        .collect();
    outln!(
        "heads:    {} of the model's {} stored{}; projections: {}",
        s.heads,
        info.model_heads,
        if s.heads < info.model_heads {
            " (a selection, an interrupted run, or shards not all done)"
        } else {
            ""
        },
        if projections.is_empty() {
            "none".to_string()
        } else {
            projections.join(", ")
        }
    );
    if !info.heads_lacking_keys.is_empty() {
        let names: Vec<String> = info
            .heads_lacking_keys
            .iter()
            .map(|h| h.to_string())
            .collect();
        outln!(
            "missing:  {} heads lack their key head's file in key_heads/ and are left out ({}); run the same command again to extract them anew",
            names.len(),
            names.join(", ")
        );
    }
    if !s.per_head.is_empty() {
        outln!();
        print_table(s);
    }
}

/// Prints the per-head table (normalization diagnostics; the input spaces' attention fidelity; per
/// projection trustworthiness@10, attention fidelity and hit@3) and the means.
fn print_table(s: &RunSummary) {
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
    for &k in &keys {
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
    let mut ceilings: Vec<&String> = s.per_head.iter().flat_map(|h| h.ceiling.keys()).collect();
    ceilings.sort();
    ceilings.dedup();
    for &d in &ceilings {
        columns.push((
            format!("fid ceil{d}"),
            Box::new(move |h: &HeadSummary| h.ceiling.get(d).and_then(|f| f.fidelity)),
        ));
        columns.push((
            format!("hit3 ceil{d}"),
            Box::new(move |h: &HeadSummary| h.ceiling.get(d).and_then(|f| f.hit_at_3)),
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
    if !ceilings.is_empty() {
        let shares: Vec<String> = keys
            .iter()
            .filter_map(|k| Some(format!("{k} {:.2}", ceiling_share(s, k)?)))
            .collect();
        outln!(
            "ceil = a layout with that many dimensions made to show the head's attention alone; share of its hit3 reached (mean over heads): {}",
            shares.join(", ")
        );
    }
}

/// The mean over heads of a projection's hit@3 divided by its head's ceiling hit@3 (of the same
/// dimension count), for `key` = `<method>_<dims>d`.
fn ceiling_share(s: &RunSummary, key: &str) -> Option<f32> {
    let dims = key.rsplit('_').next()?;
    let v: Vec<f32> = s
        .per_head
        .iter()
        .filter_map(|h| {
            let hit = h.fidelity.get(key)?.hit_at_3?;
            let ceiling = h.ceiling.get(dims)?.hit_at_3?;
            (ceiling > 0.0).then(|| hit / ceiling)
        })
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
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
