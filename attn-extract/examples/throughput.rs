//! Extraction throughput (tokens/s) on a BERT-family model, e.g. all-MiniLM-L6-v2.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run -p attn-extract --example throughput -- \
//!     <model dir> [sentences=300] [batch=16] [device=flex] [repeats=5]
//! ```
//! `scripts/torch_throughput.py` runs the same corpus (same generator) through PyTorch. Each
//! setting runs `repeats` times and the median and best are printed: on a shared machine single runs
//! vary by 2x.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use attn_extract::{Corpus, ExtractOptions, LoadedModel, device_from_name};

const WORDS: &[&str] = &[
    "the",
    "a",
    "model",
    "attention",
    "head",
    "query",
    "key",
    "value",
    "token",
    "sentence",
    "cat",
    "dog",
    "runs",
    "jumps",
    "over",
    "under",
    "quickly",
    "slowly",
    "red",
    "blue",
    "green",
    "small",
    "large",
    "and",
    "or",
    "but",
    "because",
    "when",
    "while",
    "house",
    "tree",
    "river",
    "mountain",
    "city",
    "book",
    "reads",
    "writes",
    "sees",
    "finds",
    "loses",
    "happy",
    "sad",
    "bright",
    "dark",
    "old",
    "new",
    "in",
    "on",
    "at",
    "with",
    "from",
    "into",
    "language",
    "vision",
    "transformer",
    "layer",
    "picture",
    "music",
    "science",
    "history",
    "people",
    "children",
    "morning",
    "evening",
];

/// Deterministic sentences (64-bit LCG, mirrored in scripts/torch_throughput.py).
fn corpus(n: usize) -> Vec<String> {
    let mut state: u64 = 42;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let len = 8 + next() % 25;
            let mut s: Vec<&str> = (0..len).map(|_| WORDS[next() % WORDS.len()]).collect();
            s.push(".");
            s.join(" ")
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .cloned()
        .or_else(|| std::env::var("ATTNVIZ_MINILM_DIR").ok())
        .expect("usage: throughput <model dir> [sentences] [batch] [device] [repeats]");
    let n: usize = args.get(2).map_or(300, |s| s.parse().expect("sentences"));
    let batch: usize = args.get(3).map_or(16, |s| s.parse().expect("batch"));
    let device = device_from_name(args.get(4).map_or("flex", String::as_str)).expect("device");
    let repeats: usize = args.get(5).map_or(5, |s| s.parse().expect("repeats"));
    let model = LoadedModel::load(std::path::Path::new(&dir), &device).expect("load");
    let texts = corpus(n);
    let opts = ExtractOptions {
        batch_size: batch,
        ..Default::default()
    };
    // Warm-up (allocators, thread pool).
    model
        .extract(
            &Corpus::Text(texts[..batch.min(n)].to_vec()),
            &opts,
            &mut |_, _| {},
        )
        .expect("warm-up");
    let corpus = Corpus::Text(texts);
    for capture_attention in [true, false] {
        let opts = ExtractOptions {
            capture_attention,
            ..opts.clone()
        };
        let mut rates = Vec::with_capacity(repeats);
        let mut tokens = 0;
        for _ in 0..repeats.max(1) {
            let t0 = Instant::now();
            let ex = model
                .extract(&corpus, &opts, &mut |_, _| {})
                .expect("extract");
            let secs = t0.elapsed().as_secs_f64();
            tokens = ex.tokens.len();
            rates.push(tokens as f64 / secs);
        }
        rates.sort_by(f64::total_cmp);
        let all: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "{n} sentences, {tokens} tokens, batch {batch}, attention {}: median {:.0} tokens/s, \
             best {:.0} ({} runs: {})",
            if capture_attention { "on" } else { "off" },
            rates[rates.len() / 2],
            rates[rates.len() - 1],
            rates.len(),
            all.join(", ")
        );
    }
}
