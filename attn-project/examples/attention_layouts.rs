//! Measures attention-aware layouts: for each attention weight `w`, fits t-SNE and UMAP on one
//! shared kNN graph with the head's attention edges mixed in, and prints per fit the attention
//! fidelity, hit@3 (and its chance level), global fidelity ([`attn_project::fidelity`]),
//! trustworthiness@10 ([`attn_project::quality_sampled`], 1,000 queries) and the fit's seconds
//! (the shared kNN graph excluded, printed once per head).
//!
//! ```sh
//! # synthetic heads (non-causal and causal, ~5,000 tokens each):
//! cargo run --release -p attn-project --example attention_layouts
//! # options: --tokens N --seed S --weights 0,0.05,0.1 --methods tsne,umap --dims 2
//! #          --min-weight X (edge threshold, default attn_project::ATTENTION_MIN_WEIGHT)
//! #          --gamma G (AttentionEdges::sharpened, default 1 = none)
//! #          --causal / --non-causal (synthetic: only one of them)
//! #          --layout-seed S (projection seed, default --seed; the data seed stays --seed)
//! #          --random-init (t-SNE: random instead of PCA init, so that the layout seed matters)
//! #          --by-top-weight (also print hit@3 by the query's top attention weight)
//! #          --repeat R (time every fit R times, round-robin, and report the fastest)
//! #          --sink X (synthetic: share of the first token's key in every query, default 0.15;
//! #                    0.6 makes it an attention sink for about a third of the queries)
//! # a real head, from .npy files (f32 or f64 `n x d` queries and keys as captured, i.e. before
//! # normalization; sequence lengths as any integer dtype, in token order; attention is recomputed
//! # as softmax(q k^T / sqrt(d)) per sequence, keys translated as attn-normalize does):
//! cargo run --release -p attn-project --example attention_layouts -- \
//!     --npy queries.npy keys.npy seq_lens.npy [--causal]
//! ```

#[path = "../src/attention/synthetic.rs"]
mod synthetic;

use std::time::Instant;

use attn_project::{
    ATTENTION_MIN_WEIGHT, AttentionEdges, Fidelity, FidelitySpace, Projector, Tsne, TsneInit, Umap,
    fidelity, knn, quality_sampled,
};
use attn_types::{Matrix, Metric, TokenMeta, TokenTable};

struct Args {
    tokens: usize,
    seed: u64,
    weights: Vec<f32>,
    methods: Vec<String>,
    dims: u8,
    min_weight: f32,
    gamma: f32,
    causal: Vec<bool>,
    npy: Option<[String; 3]>,
    layout_seed: Option<u64>,
    random_init: bool,
    by_top_weight: bool,
    sink: f32,
    repeat: usize,
}

fn parse() -> Args {
    let mut a = Args {
        tokens: 5_000,
        seed: 0,
        weights: vec![0.0, 0.02, 0.05, 0.1, 0.2, 0.3],
        methods: vec!["tsne".into(), "umap".into()],
        dims: 2,
        min_weight: ATTENTION_MIN_WEIGHT,
        gamma: 1.0,
        causal: vec![false, true],
        npy: None,
        layout_seed: None,
        random_init: false,
        by_top_weight: false,
        sink: 0.15,
        repeat: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let value = |i: usize| -> &str {
        args.get(i + 1)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{} needs a value", args[i]))
    };
    let num = |s: &str| -> f64 { s.parse().unwrap_or_else(|e| panic!("{s}: {e}")) };
    while i < args.len() {
        match args[i].as_str() {
            "--tokens" => a.tokens = num(value(i)) as usize,
            "--seed" => a.seed = num(value(i)) as u64,
            "--weights" => a.weights = value(i).split(',').map(|s| num(s) as f32).collect(),
            "--methods" => a.methods = value(i).split(',').map(String::from).collect(),
            "--dims" => a.dims = num(value(i)) as u8,
            "--min-weight" => a.min_weight = num(value(i)) as f32,
            "--gamma" => a.gamma = num(value(i)) as f32,
            "--sink" => a.sink = num(value(i)) as f32,
            "--repeat" => a.repeat = (num(value(i)) as usize).max(1),
            "--layout-seed" => a.layout_seed = Some(num(value(i)) as u64),
            "--random-init" => {
                a.random_init = true;
                i -= 1;
            }
            "--by-top-weight" => {
                a.by_top_weight = true;
                i -= 1;
            }
            "--causal" => {
                a.causal = vec![true];
                i -= 1;
            }
            "--non-causal" => {
                a.causal = vec![false];
                i -= 1;
            }
            "--npy" => {
                let f = |o: usize| {
                    args.get(i + o)
                        .cloned()
                        .unwrap_or_else(|| panic!("--npy needs 3 files"))
                };
                a.npy = Some([f(1), f(2), f(3)]);
                i += 2;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// A tiny `.npy` reader: little-endian `f4`/`f8`/`i4`/`i8`/`u4`/`u8`/`i2`/`u2`, C order, as `f64`
/// values and the shape.
fn read_npy(path: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(bytes.starts_with(b"\x93NUMPY"), "{path}: not a .npy file");
    let (hlen, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = String::from_utf8_lossy(&bytes[start..start + hlen]).to_string();
    let field = |key: &str| -> String {
        let at = header
            .find(key)
            .unwrap_or_else(|| panic!("{path}: no {key} in {header}"));
        header[at + key.len()..]
            .trim_start_matches([':', ' ', '\''])
            .to_string()
    };
    assert!(
        field("'fortran_order'").starts_with("False"),
        "{path}: Fortran order is not supported"
    );
    let descr = field("'descr'");
    let descr = &descr[..3];
    let shape_s = field("'shape'");
    let shape: Vec<usize> = shape_s[1..shape_s.find(')').unwrap_or(1)]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{path}: shape {s}: {e}"))
        })
        .collect();
    let data = &bytes[start + hlen..];
    let count: usize = shape.iter().product();
    let values: Vec<f64> = match descr {
        "<f4" => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        "<f8" => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect(),
        "<i4" => data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        "<u4" => data
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        "<i8" => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64)
            .collect(),
        "<u8" => data
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64)
            .collect(),
        "<i2" => data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f64)
            .collect(),
        "<u2" => data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as f64)
            .collect(),
        other => panic!("{path}: dtype {other} not supported"),
    };
    assert!(values.len() >= count, "{path}: truncated");
    (shape, values[..count].to_vec())
}

fn npy_matrix(path: &str) -> Matrix {
    let (shape, v) = read_npy(path);
    assert_eq!(
        shape.len(),
        2,
        "{path}: expected a 2-D array, shape {shape:?}"
    );
    Matrix::from_vec(
        shape[0],
        shape[1],
        v.into_iter().map(|x| x as f32).collect(),
    )
    .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn npy_head(files: &[String; 3], causal: bool) -> synthetic::Head {
    let queries = npy_matrix(&files[0]);
    let keys = npy_matrix(&files[1]);
    let (_, lens) = read_npy(&files[2]);
    let mut tokens = Vec::new();
    for (s, &len) in lens.iter().enumerate() {
        for p in 0..len as usize {
            tokens.push(TokenMeta {
                seq_id: s as u32,
                position: p as u32,
                seq_len: len as u32,
                text: String::new(),
                is_special: false,
                patch: None,
                is_cls: false,
                offsets: None,
            });
        }
    }
    assert_eq!(
        tokens.len(),
        queries.rows(),
        "sequence lengths do not add up to the rows"
    );
    let tokens = TokenTable { tokens };
    let attention = synthetic::softmax_attention(&queries, &keys, &tokens, causal);
    let keys_centred = synthetic::translate_keys(&queries, &keys);
    synthetic::Head {
        queries,
        keys,
        keys_centred,
        tokens,
        attention,
    }
}

fn fmt(v: Option<f32>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.3}"))
}

fn row(name: &str, method: &str, w: &str, f: &Fidelity, trust: Option<f32>, secs: Option<f64>) {
    println!(
        "| {name} | {method} | {w} | {} | {} | {} | {} | {} | {} |",
        fmt(f.fidelity),
        fmt(f.hit_at_3),
        fmt(f.chance_at_3),
        fmt(f.global_fidelity),
        fmt(trust),
        secs.map_or("".into(), |s| format!("{s:.2}")),
    );
}

fn main() {
    let args = parse();
    println!(
        "threads: {}, edge threshold {}, sharpening gamma {}",
        rayon::current_num_threads(),
        args.min_weight,
        args.gamma
    );
    println!();
    println!("| head | method | w | fidelity | hit@3 | chance@3 | global | trust@10 | seconds |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &causal in &args.causal {
        let head = match &args.npy {
            Some(files) => npy_head(files, causal),
            None => synthetic::head_with_sink(args.tokens, causal, args.seed, args.sink),
        };
        let n = head.tokens.len();
        let name = format!(
            "{} {}{}",
            if args.npy.is_some() {
                "npy"
            } else {
                "synthetic"
            },
            n,
            if causal { " causal" } else { "" }
        );
        stats(&name, &head, causal);
        let seed = args.layout_seed.unwrap_or(args.seed);
        let joint = head.joint();
        let edges = AttentionEdges::from_attention_with_min_weight(
            &head.tokens,
            &head.attention,
            causal,
            args.min_weight,
        )
        .and_then(|e| e.sharpened(args.gamma))
        .unwrap_or_else(|e| panic!("{e}"));
        let all_edges: usize = head
            .attention
            .iter()
            .map(|a| {
                let l = a.len();
                if causal { l * (l + 1) / 2 } else { l * l }
            })
            .sum();
        eprintln!(
            "{name}: {} of {all_edges} attention edges kept",
            edges.len()
        );
        let measure = |coords: Option<&Matrix>| -> Fidelity {
            let space = match coords {
                Some(c) => FidelitySpace::Layout(c),
                None => FidelitySpace::Cosine {
                    queries: &head.queries,
                    keys: &head.keys_centred,
                },
            };
            fidelity(
                space,
                &head.queries,
                &head.keys,
                &head.tokens,
                &head.attention,
                causal,
                0,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        row(&name, "input (cosine)", "", &measure(None), None, None);
        let projectors: Vec<(String, f32, Projector)> = args
            .methods
            .iter()
            .flat_map(|m| args.weights.iter().map(move |&w| (m.clone(), w)))
            .map(|(m, w)| {
                let p = match m.as_str() {
                    "tsne" => Projector::Tsne(
                        Tsne::params()
                            .dims(args.dims)
                            .seed(seed)
                            .init(if args.random_init {
                                TsneInit::Random
                            } else {
                                TsneInit::Pca
                            })
                            .attention_weight(w)
                            .check()
                            .unwrap_or_else(|e| panic!("{e}")),
                    ),
                    "umap" => Projector::Umap(
                        Umap::params()
                            .dims(args.dims)
                            .seed(seed)
                            .attention_weight(w)
                            .check()
                            .unwrap_or_else(|e| panic!("{e}")),
                    ),
                    other => panic!("unknown method {other}"),
                };
                (m, w, p)
            })
            .collect();
        // One kNN graph per head, as many neighbours as the hungriest method needs.
        let k = projectors
            .iter()
            .filter_map(|(_, _, p)| p.neighbors_for(joint.rows()))
            .max()
            .unwrap_or(1);
        let t = Instant::now();
        let graph = knn(&joint, k, Metric::Cosine, seed).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{name}: kNN graph (k = {k}) {:.2} s",
            t.elapsed().as_secs_f64()
        );
        // With --repeat R every fit runs R times, round-robin over the projectors (so that load
        // from other processes hits all alike), and the fastest time is kept.
        let mut secs = vec![f64::INFINITY; projectors.len()];
        let mut fits = Vec::new();
        for _ in 0..args.repeat {
            fits.clear();
            for ((_, _, p), best) in projectors.iter().zip(secs.iter_mut()) {
                let t = Instant::now();
                let emb = p
                    .fit_knn_with_attention(&joint, &graph, &edges)
                    .unwrap_or_else(|e| panic!("{e}"));
                *best = best.min(t.elapsed().as_secs_f64());
                fits.push(emb);
            }
        }
        for (((m, w, _), emb), &secs) in projectors.iter().zip(&fits).zip(&secs) {
            let trust = quality_sampled(&joint, &emb.coords, 10, Metric::Cosine, 1000)
                .unwrap_or_else(|e| panic!("{e}"))
                .trustworthiness;
            if args.by_top_weight {
                by_top_weight(&format!("{name} {m} {w}"), &head, &emb.coords, causal);
            }
            let f = measure(Some(&emb.coords));
            row(&name, m, &format!("{w}"), &f, Some(trust), Some(secs));
        }
    }
}

/// Prints how peaked the attention is: the mean top weight, and how often the top key is the
/// first token or the previous one.
fn stats(name: &str, head: &synthetic::Head, causal: bool) {
    let (mut top, mut first, mut cnt, mut top_prev) = (0f64, 0usize, 0usize, 0usize);
    for a in &head.attention {
        for p in 0..a.len() {
            let m = if causal { p + 1 } else { a.len() };
            let row = &a.weights.row(p)[..m];
            let (mut b, mut bw) = (0, 0f32);
            for (j, &w) in row.iter().enumerate() {
                if w > bw {
                    b = j;
                    bw = w;
                }
            }
            top += bw as f64;
            first += usize::from(b == 0);
            top_prev += usize::from(p > 0 && b + 1 == p);
            cnt += 1;
        }
    }
    eprintln!(
        "{name}: mean top attention weight {:.3}, top = first token {:.3}, top = previous {:.3}",
        top / cnt as f64,
        first as f64 / cnt as f64,
        top_prev as f64 / cnt as f64
    );
}

/// Prints hit@3 by the query's top attention weight (`--by-top-weight`), as `fidelity` counts it.
fn by_top_weight(name: &str, head: &synthetic::Head, coords: &Matrix, causal: bool) {
    let n = head.tokens.len();
    let mut bins = [(0usize, 0usize); 5];
    let mut start = 0;
    for a in &head.attention {
        let len = a.len();
        for p in 0..len {
            let m = if causal { p + 1 } else { len };
            if m < 4 {
                continue;
            }
            let row = &a.weights.row(p)[..m];
            let mut best = 0;
            for j in 1..m {
                if row[j] > row[best] {
                    best = j;
                }
            }
            let qi = coords.row(start + p);
            let d = |j: usize| -> f32 {
                let k = coords.row(n + start + j);
                qi.iter().zip(k).map(|(a, b)| (a - b) * (a - b)).sum()
            };
            let db = d(best);
            let nearer = (0..m)
                .filter(|&j| d(j) < db || (d(j) == db && j < best))
                .count();
            let b = ((row[best] * 5.0) as usize).min(4);
            bins[b].0 += 1;
            bins[b].1 += usize::from(nearer < 3);
        }
        start += len;
    }
    let s: Vec<String> = bins
        .iter()
        .enumerate()
        .map(|(b, (c, h))| {
            format!(
                "top {:.1}-{:.1}: {} q, hit {:.2}",
                b as f32 / 5.0,
                (b + 1) as f32 / 5.0,
                c,
                *h as f32 / (*c).max(1) as f32
            )
        })
        .collect();
    eprintln!("{name}: {}", s.join("; "));
}
