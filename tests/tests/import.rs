//! End-to-end: `attnviz import` (bring your own vectors) from .npy files and from per-head Parquet
//! files, then `project`, `render` and `info` on the imported dataset; bad inputs exit 2 naming the
//! file and leave no dataset behind.

use std::path::{Path, PathBuf};

use attn_store::Dataset;
use attn_types::{Architecture, HeadId, HeadVectors, Matrix, ProjectionMethod};
use attnviz_tests::{
    InputRanks, attnviz_fails, attnviz_ok, check_trustworthiness, mtimes, png_size,
    remove_run_param,
};

const LAYERS: usize = 2;
const HEADS: usize = 2;
const D: usize = 8;
/// Four sequences of these lengths: n = 22 tokens.
const LENS: [usize; 4] = [5, 7, 4, 6];

fn n_tokens() -> usize {
    LENS.iter().sum()
}

/// Deterministic pseudo-random values in [-1.5, 1.5) (a 64-bit LCG), exactly representable in f32.
fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 3.0 - 1.5
        })
        .collect()
}

/// Writes a .npy file (format 1.0) with any dtype string and payload.
fn write_npy_raw(path: &Path, descr: &str, fortran: bool, shape: &[usize], payload: &[u8]) {
    let dims = shape.iter().map(|d| format!("{d},")).collect::<String>();
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({dims}), }}",
        if fortran { "True" } else { "False" }
    );
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    b.extend_from_slice(dict.as_bytes());
    b.resize(total - 1, b' ');
    b.push(b'\n');
    b.extend_from_slice(payload);
    std::fs::write(path, b).expect("write npy");
}

fn write_f32(path: &Path, shape: &[usize], data: &[f32]) {
    let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy_raw(path, "<f4", false, shape, &payload);
}

fn write_f64(path: &Path, shape: &[usize], data: &[f32]) {
    let payload: Vec<u8> = data
        .iter()
        .flat_map(|v| f64::from(*v).to_le_bytes())
        .collect();
    write_npy_raw(path, "<f8", false, shape, &payload);
}

fn write_tokens(path: &Path, lens: &[usize]) {
    let mut s = String::new();
    for (seq, &len) in lens.iter().enumerate() {
        for p in 0..len {
            let special = p == 0;
            s.push_str(&format!(
                "{{\"seq_id\": {}, \"position\": {p}, \"text\": \"w{seq}_{p}\", \"is_special\": {special}}}\n",
                seq * 10
            ));
        }
    }
    std::fs::write(path, s).expect("write tokens");
}

/// The toy inputs: q.npy (float32), k.npy (float64), tokens.jsonl. Returns (queries, keys) values.
struct Toy {
    q: PathBuf,
    k: PathBuf,
    tokens: PathBuf,
    qv: Vec<f32>,
    kv: Vec<f32>,
}

fn toy(dir: &Path) -> Toy {
    let shape = [LAYERS, HEADS, n_tokens(), D];
    let len = shape.iter().product();
    let (qv, kv) = (values(1, len), values(2, len));
    let toy = Toy {
        q: dir.join("q.npy"),
        k: dir.join("k.npy"),
        tokens: dir.join("tokens.jsonl"),
        qv,
        kv,
    };
    write_f32(&toy.q, &shape, &toy.qv);
    write_f64(&toy.k, &shape, &toy.kv);
    write_tokens(&toy.tokens, &LENS);
    toy
}

/// `attnviz import` of the toy's arrays, causal, quiet: add `--out` and what a test varies.
fn causal_import(toy: &Toy) -> [&str; 9] {
    [
        "import",
        "--queries",
        s(&toy.q),
        "--keys",
        s(&toy.k),
        "--tokens",
        s(&toy.tokens),
        "--causal",
        "--quiet",
    ]
}

/// Input-space ranks of a projection's input under cosine distance: the head's raw joint when the
/// projection's spec says it laid out the raw vectors (the attnviz default), else its normalized one
/// (raw if not normalized).
fn input_ranks(ds: &Dataset, h: HeadId, p: &attn_types::HeadProjection) -> InputRanks {
    let head = ds.read_head(h).expect("head reads");
    let raw = p.spec.params.get("vectors_raw") == Some(&1.0);
    let vectors = if raw {
        head.raw
    } else {
        head.normalized.map_or(head.raw, |n| n.vectors)
    };
    let joint = vectors.joint();
    InputRanks::new(joint.as_slice(), joint.cols(), true)
}

/// Smallest trustworthiness (k = 10) of a toy head's 2D layout (44 uniform random points in 8
/// dimensions), per method. Measured minimum over the 4 heads: PCA 0.780, t-SNE 0.793; shuffled
/// (random) layouts reach at most 0.581.
fn min_trustworthiness(method: ProjectionMethod) -> f64 {
    match method {
        ProjectionMethod::Tsne | ProjectionMethod::Umap | ProjectionMethod::Pca => 0.70,
    }
}

/// Smallest trustworthiness (k = 8) of the 18-point head's layouts, any method, 2D or 3D. Measured
/// minimum 0.784 (t-SNE 2D); shuffled (random) layouts reach at most 0.578.
const TINY_MIN_TRUSTWORTHINESS: f64 = 0.70;

fn slab(v: &[f32], head: HeadId) -> &[f32] {
    let size = n_tokens() * D;
    let start = (usize::from(head.layer) * HEADS + usize::from(head.head)) * size;
    &v[start..start + size]
}

/// `base` followed by `extra`.
fn joined<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).copied().collect()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// softmax(q.k/sqrt(d)) over the visible keys, computed independently of attnviz.
fn expected_attention(
    q: &[f32],
    k: &[f32],
    start: usize,
    len: usize,
    causal: bool,
    scale: f64,
) -> Vec<Vec<f64>> {
    expected_windowed_attention(q, k, start, len, causal, None, scale)
}

/// [`expected_attention`] where keys `window` or more positions back are masked too.
fn expected_windowed_attention(
    q: &[f32],
    k: &[f32],
    start: usize,
    len: usize,
    causal: bool,
    window: Option<usize>,
    scale: f64,
) -> Vec<Vec<f64>> {
    (0..len)
        .map(|i| {
            let visible = if causal { i + 1 } else { len };
            let first = window.map_or(0, |w| (i + 1).saturating_sub(w));
            let logits: Vec<f64> = (0..visible)
                .map(|j| {
                    let dot: f64 = (0..D)
                        .map(|c| {
                            f64::from(q[(start + i) * D + c]) * f64::from(k[(start + j) * D + c])
                        })
                        .sum();
                    dot * scale
                })
                .collect();
            let m = logits[first..]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = logits[first..].iter().map(|l| (l - m).exp()).sum();
            (0..len)
                .map(|j| {
                    if (first..visible).contains(&j) {
                        (logits[j] - m).exp() / z
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn npy_import_then_project_render_info() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let toy = toy(tmp.path());
    let args = [
        "import",
        "--queries",
        s(&toy.q),
        "--keys",
        s(&toy.k),
        "--tokens",
        s(&toy.tokens),
        "--causal",
        "--model-id",
        "toy-llm",
        "--out",
        "ds",
        "--quiet",
        "--json",
    ];
    let summary: serde_json::Value =
        serde_json::from_str(&attnviz_ok(tmp.path(), &args)).expect("json summary");
    assert_eq!(summary["heads"], 4, "{summary}");
    assert_eq!(summary["heads_extracted"], 4, "{summary}");
    assert_eq!(summary["tokens"], 22, "{summary}");

    let dir = tmp.path().join("ds");
    let ds = Dataset::open(&dir).expect("dataset opens");
    let model = &ds.meta().model;
    assert_eq!(model.id, "toy-llm");
    assert_eq!(model.architecture, Architecture::Imported { causal: true });
    assert_eq!(
        (model.num_layers, model.num_heads, model.head_dim),
        (2, 2, 8)
    );
    assert_eq!(model.max_positions, 7);
    assert_eq!(
        model.config["attnviz_import"]["source"]["keys"]["dtype"],
        "float64"
    );
    let tokens = ds.read_tokens().expect("tokens");
    assert_eq!(tokens.len(), 22);
    assert_eq!(
        tokens
            .sequences()
            .iter()
            .map(|s| s.seq_id)
            .collect::<Vec<_>>(),
        vec![0, 10, 20, 30]
    );
    assert!(tokens.tokens[5].is_special && !tokens.tokens[6].is_special);
    assert_eq!(tokens.tokens[6].text, "w1_1");
    assert_eq!(
        ds.heads().expect("heads"),
        HeadId::all(2, 2).collect::<Vec<_>>()
    );
    for h in HeadId::all(2, 2) {
        let stored = ds.read_head(h).expect("head reads");
        assert_eq!(
            stored.raw.queries().as_slice(),
            slab(&toy.qv, h),
            "{h} queries"
        );
        assert_eq!(
            stored.raw.keys().as_slice(),
            slab(&toy.kv, h),
            "{h} keys (float64 input)"
        );
        let norm = stored.normalized.expect("normalized like extract");
        assert!(norm.params.scale > 0.0 && !norm.params.key_translation.is_empty());
        let att = ds.read_attention(h).expect("attention");
        assert_eq!(att.len(), 4);
        let mut start = 0;
        for (a, &len) in att.iter().zip(&LENS) {
            let want = expected_attention(
                slab(&toy.qv, h),
                slab(&toy.kv, h),
                start,
                len,
                true,
                1.0 / (D as f64).sqrt(),
            );
            assert_eq!(a.len(), len);
            for (i, want_row) in want.iter().enumerate() {
                let sum: f32 = a.weights.row(i).iter().sum();
                assert!(
                    (sum - 1.0).abs() < 1e-5,
                    "{h} seq {} row {i} sums to {sum}",
                    a.seq_id
                );
                for (j, w) in want_row.iter().enumerate() {
                    if j > i {
                        assert_eq!(a.get(i, j), 0.0, "{h}: causal mask at {i},{j}");
                    }
                    assert!((f64::from(a.get(i, j)) - w).abs() < 1e-5, "{h} {i},{j}");
                }
            }
            start += len;
        }
    }

    // The other commands work on it.
    let ds_s = s(&dir);
    attnviz_ok(
        tmp.path(),
        &[
            "project",
            ds_s,
            "--methods",
            "pca,tsne",
            "--perplexity",
            "5",
            "--quiet",
        ],
    );
    for h in HeadId::all(2, 2) {
        for m in [ProjectionMethod::Pca, ProjectionMethod::Tsne] {
            let p = ds.read_projection(h, m, 2).expect("projection");
            let ranks = input_ranks(&ds, h, &p);
            assert_eq!(p.coords.shape(), (44, 2));
            let q = p.quality.expect("quality computed");
            assert_eq!(q.k, 10, "{h} {m}");
            check_trustworthiness(
                &ranks,
                p.coords.as_slice(),
                2,
                q.trustworthiness,
                10,
                min_trustworthiness(m),
                &format!("{h} {m}"),
            );
        }
    }
    let png = tmp.path().join("matrix.png");
    attnviz_ok(
        tmp.path(),
        &[
            "render",
            ds_s,
            "--view",
            "matrix",
            "--method",
            "tsne",
            "-o",
            s(&png),
        ],
    );
    let (w, hgt) = png_size(&png);
    assert!(w > 300 && hgt > 200, "matrix figure {w}x{hgt}");
    let sentence = tmp.path().join("sentence.png");
    attnviz_ok(
        tmp.path(),
        &[
            "render",
            ds_s,
            "--view",
            "sentence",
            "--method",
            "pca",
            "--head",
            "L1H0",
            "--seq",
            "10",
            "--hide-special",
            "-o",
            s(&sentence),
        ],
    );
    assert!(png_size(&sentence).0 > 100);
    let info: serde_json::Value =
        serde_json::from_str(&attnviz_ok(tmp.path(), &["info", ds_s, "--json"]))
            .expect("info json");
    assert_eq!(info["per_head"].as_array().map(Vec::len), Some(4));
    assert_eq!(info["model"], "toy-llm");

    // The same command again resumes: nothing is rewritten.
    let before = mtimes(&dir);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again: serde_json::Value =
        serde_json::from_str(&attnviz_ok(tmp.path(), &args)).expect("json");
    assert_eq!(again["heads_extracted"], 0, "{again}");
    assert_eq!(mtimes(&dir), before, "a resumed import rewrote files");

    // Given attention (from the dataset just written) round-trips through --attention, non-causal
    // raw import: vectors stored without normalization.
    let width = 7;
    let mut given = vec![0f32; LAYERS * HEADS * n_tokens() * width];
    for h in HeadId::all(2, 2) {
        let base = (usize::from(h.layer) * HEADS + usize::from(h.head)) * n_tokens() * width;
        let mut row = 0;
        for a in ds.read_attention(h).expect("attention") {
            for i in 0..a.len() {
                given[base + row * width..base + row * width + a.len()]
                    .copy_from_slice(a.weights.row(i));
                row += 1;
            }
        }
    }
    let att = tmp.path().join("att.npy");
    write_f32(&att, &[LAYERS, HEADS, n_tokens(), width], &given);
    attnviz_ok(
        tmp.path(),
        &[
            "import",
            "--queries",
            s(&toy.q),
            "--keys",
            s(&toy.k),
            "--tokens",
            s(&toy.tokens),
            "--attention",
            s(&att),
            "--causal",
            "--no-normalize",
            "--out",
            "given",
            "--quiet",
        ],
    );
    let g = Dataset::open(tmp.path().join("given")).expect("opens");
    assert_eq!(
        g.meta().model.id,
        "given",
        "default model id is the folder name"
    );
    for h in HeadId::all(2, 2) {
        assert_eq!(
            g.read_attention(h).expect("att"),
            ds.read_attention(h).expect("att"),
            "{h}"
        );
        let stored = g.read_head(h).expect("head");
        let norm = stored
            .normalized
            .expect("identity normalization stored, as extract --no-normalize");
        assert_eq!(norm.params.scale, 1.0);
        assert!(norm.params.key_translation.is_empty());
    }
}

#[test]
fn grouped_query_keys_and_softmax_scale() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let toy = toy(tmp.path());
    // One key head per layer serves both query heads (multi-query attention).
    let n = n_tokens();
    let kv = values(9, LAYERS * n * D);
    let k1 = tmp.path().join("k1.npy");
    write_f32(&k1, &[LAYERS, 1, n, D], &kv);
    attnviz_ok(
        tmp.path(),
        &[
            "import",
            "--queries",
            s(&toy.q),
            "--keys",
            s(&k1),
            "--tokens",
            s(&toy.tokens),
            "--softmax-scale",
            "1",
            "--out",
            "mqa",
            "--quiet",
        ],
    );
    let ds = Dataset::open(tmp.path().join("mqa")).expect("opens");
    assert_eq!(ds.meta().model.num_heads, 2);
    // The grouping is recorded as `extract` records a grouped-query model's.
    assert_eq!(ds.meta().model.num_key_value_heads, Some(1));
    for h in HeadId::all(2, 2) {
        let stored = ds.read_head(h).expect("head");
        let layer_keys = &kv[usize::from(h.layer) * n * D..(usize::from(h.layer) + 1) * n * D];
        assert_eq!(
            stored.raw.keys().as_slice(),
            layer_keys,
            "{h} uses its layer's key head"
        );
        assert_eq!(stored.raw.queries().as_slice(), slab(&toy.qv, h));
        let a = &ds.read_attention(h).expect("attention")[0];
        let want = expected_attention(slab(&toy.qv, h), layer_keys, 0, LENS[0], false, 1.0);
        for (i, row) in want.iter().enumerate() {
            for (j, w) in row.iter().enumerate() {
                assert!(
                    (f64::from(a.get(i, j)) - w).abs() < 1e-5,
                    "{h} {i},{j}: scale 1"
                );
            }
        }
    }
    // Key heads that do not divide the query heads are an error.
    let k3 = tmp.path().join("k3.npy");
    write_f32(&k3, &[LAYERS, 3, n, D], &values(9, LAYERS * 3 * n * D));
    attnviz_fails(
        tmp.path(),
        &[
            "import",
            "--queries",
            s(&toy.q),
            "--keys",
            s(&k3),
            "--tokens",
            s(&toy.tokens),
            "--out",
            "bad",
        ],
        &["k3.npy", "grouped-query"],
    );
    assert!(!tmp.path().join("bad").exists());
}

#[test]
fn parquet_folder_import_without_attention_is_bidirectional() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let toy = toy(tmp.path());
    let heads_dir = tmp.path().join("vectors");
    std::fs::create_dir(&heads_dir).expect("mkdir");
    let n = n_tokens();
    // One head as `L0H1.parquet`, one in the store's layout `L01H00/vectors.parquet`.
    let layout = [
        (HeadId::new(0, 1), heads_dir.join("L0H1.parquet")),
        (HeadId::new(1, 0), heads_dir.join("L01H00/vectors.parquet")),
    ];
    for (h, path) in &layout {
        let q = Matrix::from_vec(n, D, slab(&toy.qv, *h).to_vec()).expect("q");
        let k = Matrix::from_vec(n, D, slab(&toy.kv, *h).to_vec()).expect("k");
        attn_store::write_vectors_file(path, &HeadVectors::new(*h, q, k).expect("head"), None)
            .expect("write");
    }
    attnviz_ok(
        tmp.path(),
        &[
            "import",
            "--vectors",
            s(&heads_dir),
            "--tokens",
            s(&toy.tokens),
            "--no-attention",
            "--out",
            "pq",
            "--quiet",
        ],
    );
    let ds = Dataset::open(tmp.path().join("pq")).expect("opens");
    assert_eq!(
        ds.meta().model.architecture,
        Architecture::Imported { causal: false }
    );
    assert_eq!(
        (ds.meta().model.num_layers, ds.meta().model.num_heads),
        (2, 2)
    );
    assert_eq!(
        ds.heads().expect("heads"),
        vec![HeadId::new(0, 1), HeadId::new(1, 0)]
    );
    for (h, _) in &layout {
        assert_eq!(
            ds.read_head(*h).expect("head").raw.keys().as_slice(),
            slab(&toy.kv, *h)
        );
        assert!(!ds.has_attention(*h));
    }
    attnviz_ok(
        tmp.path(),
        &["project", "pq", "--methods", "pca", "--quiet"],
    );
    let png = tmp.path().join("m.png");
    attnviz_ok(
        tmp.path(),
        &["render", "pq", "--method", "pca", "-o", s(&png)],
    );
    assert!(png_size(&png).0 > 300);

    // Bidirectional computed attention: every key visible.
    attnviz_ok(
        tmp.path(),
        &[
            "import",
            "--vectors",
            s(&heads_dir),
            "--tokens",
            s(&toy.tokens),
            "--out",
            "bi",
            "--quiet",
        ],
    );
    let bi = Dataset::open(tmp.path().join("bi")).expect("opens");
    let a = &bi.read_attention(HeadId::new(0, 1)).expect("attention")[1];
    assert!((0..a.len()).all(|i| (0..a.len()).all(|j| a.get(i, j) > 0.0)));
}

#[test]
fn bad_input_exits_2_naming_the_file_and_leaves_no_dataset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let toy = toy(tmp.path());
    let n = n_tokens();
    let (q, k, t) = (s(&toy.q), s(&toy.k), s(&toy.tokens));
    let fails = |args: &[&str], needles: &[&str]| {
        let mut full = vec!["import"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--out", "ds"]);
        let stderr = attnviz_fails(tmp.path(), &full, needles);
        eprintln!("{}", stderr.trim_end());
        assert!(
            !tmp.path().join("ds").exists(),
            "{args:?} left a dataset behind"
        );
    };

    // Shape mismatch between Q and K.
    let k_short = tmp.path().join("k_short.npy");
    write_f32(
        &k_short,
        &[LAYERS, HEADS, n - 1, D],
        &values(3, LAYERS * HEADS * (n - 1) * D),
    );
    fails(
        &["--queries", q, "--keys", s(&k_short), "--tokens", t],
        &["k_short.npy", "q.npy", "shape"],
    );
    // Token count mismatch.
    let few = tmp.path().join("few.jsonl");
    write_tokens(&few, &[5, 7, 4]);
    fails(
        &["--queries", q, "--keys", k, "--tokens", s(&few)],
        &["few.jsonl", "16 tokens", "22"],
    );
    // Wrong dtype.
    let ints = tmp.path().join("ints.npy");
    write_npy_raw(
        &ints,
        "<i4",
        false,
        &[LAYERS, HEADS, n, D],
        &vec![0u8; LAYERS * HEADS * n * D * 4],
    );
    fails(
        &["--queries", s(&ints), "--keys", k, "--tokens", t],
        &["ints.npy", "<i4"],
    );
    // Fortran order.
    let fortran = tmp.path().join("fortran.npy");
    write_npy_raw(
        &fortran,
        "<f4",
        true,
        &[LAYERS, HEADS, n, D],
        &vec![0u8; LAYERS * HEADS * n * D * 4],
    );
    fails(
        &["--queries", q, "--keys", s(&fortran), "--tokens", t],
        &["fortran.npy", "Fortran"],
    );
    // Truncated data.
    let cut = tmp.path().join("cut.npy");
    write_npy_raw(&cut, "<f4", false, &[LAYERS, HEADS, n, D], &[0u8; 100]);
    fails(
        &["--queries", s(&cut), "--keys", k, "--tokens", t],
        &["cut.npy", "truncated"],
    );
    // Missing files.
    fails(
        &["--queries", "nope.npy", "--keys", k, "--tokens", t],
        &["nope.npy", "--queries"],
    );
    fails(
        &["--queries", q, "--keys", k, "--tokens", "nope.jsonl"],
        &["nope.jsonl", "--tokens"],
    );
    fails(&["--vectors", "no_dir", "--tokens", t], &["no_dir"]);
    // Flags: --queries without --keys.
    fails(&["--queries", q, "--tokens", t], &["--keys"]);
    // Positions that do not run 0..len-1, and an interleaved sequence.
    let bad_pos = tmp.path().join("bad_pos.jsonl");
    let text = std::fs::read_to_string(&toy.tokens)
        .expect("tokens")
        .replacen("\"position\": 2", "\"position\": 3", 1);
    std::fs::write(&bad_pos, text).expect("write");
    fails(
        &["--queries", q, "--keys", k, "--tokens", s(&bad_pos)],
        &["bad_pos.jsonl", "position", "line 3"],
    );
    let no_text = tmp.path().join("no_text.jsonl");
    let text = std::fs::read_to_string(&toy.tokens)
        .expect("tokens")
        .replacen("\"text\"", "\"txt\"", 1);
    std::fs::write(&no_text, text).expect("write");
    fails(
        &["--queries", q, "--keys", k, "--tokens", s(&no_text)],
        &["no_text.jsonl", "`text`", "line 1"],
    );
    // A NaN in the last head: found only while importing; the fresh dataset is removed.
    let mut qv = toy.qv.clone();
    let last = qv.len() - 3;
    qv[last] = f32::NAN;
    let nan = tmp.path().join("nan.npy");
    write_f32(&nan, &[LAYERS, HEADS, n, D], &qv);
    fails(
        &["--queries", s(&nan), "--keys", k, "--tokens", t],
        &["nan.npy", "L1H1", "non-finite"],
    );
    // Attention rows that are not probabilities.
    let att = tmp.path().join("logits.npy");
    write_f32(
        &att,
        &[LAYERS, HEADS, n, 7],
        &values(4, LAYERS * HEADS * n * 7),
    );
    fails(
        &[
            "--queries",
            q,
            "--keys",
            k,
            "--tokens",
            t,
            "--attention",
            s(&att),
        ],
        &["logits.npy"],
    );
}

/// Vectors that `extract` wrote, exported and imported again, give back what `extract` stored: the
/// same normalization (the shared code path) and, for these standard-attention models, the same
/// attention computed from Q and K (bidirectional BERT, causal GPT-2).
#[test]
fn importing_extracted_vectors_reproduces_extract() {
    let sentences = [
        "the cat sat on the mat",
        "a dog ran to the park and back",
        "hello world",
        "we will go home after the rain",
    ];
    // llama_tiny: grouped-query (6 query heads, 2 key heads), exported with its key heads only.
    for (fixture, causal) in [
        ("bert_tiny", false),
        ("gpt2_tiny", true),
        ("llama_tiny", true),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let corpus = attnviz_tests::write_corpus(tmp.path(), &sentences);
        let model = attnviz_tests::fixture_model(fixture);
        attnviz_ok(
            tmp.path(),
            &[
                "extract",
                "--model",
                s(&model),
                "--corpus",
                s(&corpus),
                "--out",
                "ext",
                "--quiet",
            ],
        );
        let ext = Dataset::open(tmp.path().join("ext")).expect("extracted dataset");
        let info = ext.meta().model.clone();
        let tokens = ext.read_tokens().expect("tokens");
        let (layers, heads, n, d) = (
            info.num_layers,
            info.num_heads,
            tokens.len(),
            info.head_dim as usize,
        );

        // Export: q as [layers, heads, n, d] and k as [layers, key heads, n, d] .npy, the tokens
        // as JSONL.
        let (mut q, mut k) = (Vec::new(), Vec::new());
        for h in HeadId::all(layers, heads) {
            let raw = ext.read_head(h).expect("head").raw;
            q.extend_from_slice(raw.queries().as_slice());
            if h.head == 0 || info.key_head_of(h.head) != info.key_head_of(h.head - 1) {
                k.extend_from_slice(raw.keys().as_slice());
            }
        }
        let shape = [usize::from(layers), usize::from(heads), n, d];
        let key_shape = [usize::from(layers), usize::from(info.key_heads()), n, d];
        attn_store::write_npy(tmp.path().join("q.npy"), &shape, &q).expect("q.npy");
        attn_store::write_npy(tmp.path().join("k.npy"), &key_shape, &k).expect("k.npy");
        let lines: String = tokens
            .tokens
            .iter()
            .map(|t| {
                serde_json::json!({"seq_id": t.seq_id, "position": t.position, "text": t.text, "is_special": t.is_special})
                    .to_string()
                    + "\n"
            })
            .collect();
        std::fs::write(tmp.path().join("tokens.jsonl"), lines).expect("tokens.jsonl");

        let mut args = vec![
            "import",
            "--queries",
            "q.npy",
            "--keys",
            "k.npy",
            "--tokens",
            "tokens.jsonl",
            "--out",
            "imp",
            "--quiet",
        ];
        if causal {
            args.push("--causal");
        }
        attnviz_ok(tmp.path(), &args);
        // The store's own head layout works as a --vectors folder too.
        let heads_dir = tmp.path().join("ext/heads");
        let mut args = vec![
            "import",
            "--vectors",
            s(&heads_dir),
            "--tokens",
            "tokens.jsonl",
            "--out",
            "imp_pq",
            "--quiet",
        ];
        if causal {
            args.push("--causal");
        }
        attnviz_ok(tmp.path(), &args);

        let key_files = |ds: &str| -> Vec<String> {
            match std::fs::read_dir(tmp.path().join(ds).join(attn_store::KEY_HEADS_DIR)) {
                Ok(entries) => {
                    let mut names: Vec<String> = entries
                        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
                        .collect();
                    names.sort();
                    names
                }
                Err(_) => Vec::new(),
            }
        };
        // Grouped-query keys are stored once per key head, by extract as by import.
        assert_eq!(
            key_files("ext").len(),
            if info.key_heads() < heads {
                usize::from(layers * info.key_heads())
            } else {
                0
            },
            "{fixture}"
        );
        for dir in ["imp", "imp_pq"] {
            let imp = Dataset::open(tmp.path().join(dir)).expect("imported dataset");
            assert_eq!(imp.meta().model.architecture.is_causal(), causal);
            assert_eq!(
                imp.meta().model.key_heads(),
                info.key_heads(),
                "{fixture} {dir}"
            );
            assert_eq!(key_files(dir), key_files("ext"), "{fixture} {dir}");
            let imported_tokens = imp.read_tokens().expect("tokens");
            assert_eq!(imported_tokens.sequences(), tokens.sequences());
            for h in HeadId::all(layers, heads) {
                let (a, b) = (
                    ext.read_head(h).expect("ext"),
                    imp.read_head(h).expect("imp"),
                );
                assert_eq!(a.raw, b.raw, "{fixture} {dir} {h}: raw vectors");
                assert_eq!(
                    a.normalized, b.normalized,
                    "{fixture} {dir} {h}: normalization as extract's"
                );
                let (aa, ba) = (
                    ext.read_attention(h).expect("ext att"),
                    imp.read_attention(h).expect("imp att"),
                );
                assert_eq!(aa.len(), ba.len());
                for (x, y) in aa.iter().zip(&ba) {
                    assert_eq!(x.seq_id, y.seq_id);
                    // A NaN difference is kept (and fails the bound): `f32::max` would drop it.
                    let diff = x
                        .weights
                        .as_slice()
                        .iter()
                        .zip(y.weights.as_slice())
                        .map(|(u, v)| (u - v).abs())
                        .fold(0f32, |m, e| if e > m || e.is_nan() { e } else { m });
                    assert!(
                        diff < 2e-5,
                        "{fixture} {dir} {h} seq {}: attention differs by {diff}",
                        x.seq_id
                    );
                }
            }
        }
    }
}

#[test]
fn layer_selection_and_shards_fill_one_dataset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let toy = toy(tmp.path());
    let base = causal_import(&toy);
    attnviz_ok(tmp.path(), &[&base[..], &["--out", "whole"]].concat());
    attnviz_ok(
        tmp.path(),
        &[&base[..], &["--out", "l1", "--layers", "1"]].concat(),
    );
    let l1 = Dataset::open(tmp.path().join("l1")).expect("opens");
    assert_eq!(
        l1.heads().expect("heads"),
        vec![HeadId::new(1, 0), HeadId::new(1, 1)]
    );
    assert_eq!(l1.meta().model.num_layers, 2, "the model keeps its size");
    attnviz_ok(
        tmp.path(),
        &[&base[..], &["--out", "sharded", "--shard", "0/2"]].concat(),
    );
    assert_eq!(
        Dataset::open(tmp.path().join("sharded"))
            .expect("opens")
            .heads()
            .expect("heads")
            .len(),
        2
    );
    attnviz_ok(
        tmp.path(),
        &[&base[..], &["--out", "sharded", "--shard", "1/2"]].concat(),
    );
    let (whole, sharded) = (
        Dataset::open(tmp.path().join("whole")).expect("opens"),
        Dataset::open(tmp.path().join("sharded")).expect("opens"),
    );
    assert_eq!(
        whole.heads().expect("heads"),
        sharded.heads().expect("heads")
    );
    for h in whole.heads().expect("heads") {
        assert_eq!(
            whole.read_head(h).expect("head"),
            sharded.read_head(h).expect("head"),
            "{h}"
        );
        assert_eq!(
            whole.read_attention(h).expect("att"),
            sharded.read_attention(h).expect("att"),
            "{h}"
        );
    }
    attnviz_fails(
        tmp.path(),
        &[&base[..], &["--out", "bad", "--layers", "2"]].concat(),
        &["--layers"],
    );
    assert!(!tmp.path().join("bad").exists());
    // A shard beyond the input's 4 heads (a job array with more tasks than heads): nothing to do.
    let said = attnviz_ok(
        tmp.path(),
        &[&base[..], &["--out", "beyond", "--shard", "5/10"]].concat(),
    );
    assert!(said.contains("nothing to do"), "{said}");
    assert!(!tmp.path().join("beyond").exists());
}

/// Arrays holding some layers of a model (a capture of layers 3 and 7) keep the model's layer
/// numbers: heads, attention, `--layers` and `--window-layers` all speak of layers 3 and 7.
#[test]
fn layer_ids_keep_the_model_numbering() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let toy = toy(tmp.path());
    let base = causal_import(&toy);
    attnviz_ok(tmp.path(), &[&base[..], &["--out", "whole"]].concat());
    attnviz_ok(
        tmp.path(),
        &[
            &base[..],
            &[
                "--out",
                "ids",
                "--layer-ids",
                "3,7",
                "--window",
                "3",
                "--window-layers",
                "7",
            ],
        ]
        .concat(),
    );
    let (whole, ids) = (
        Dataset::open(tmp.path().join("whole")).expect("opens"),
        Dataset::open(tmp.path().join("ids")).expect("opens"),
    );
    assert_eq!(
        ids.heads().expect("heads"),
        vec![
            HeadId::new(3, 0),
            HeadId::new(3, 1),
            HeadId::new(7, 0),
            HeadId::new(7, 1)
        ]
    );
    assert_eq!(
        ids.meta().model.num_layers,
        8,
        "the model has at least layers 0..=7"
    );
    for (array_layer, model_layer) in [(0, 3), (1, 7)] {
        for h in 0..HEADS as u16 {
            let (a, b) = (HeadId::new(array_layer, h), HeadId::new(model_layer, h));
            assert_eq!(
                whole.read_head(a).expect("head").raw.queries(),
                ids.read_head(b).expect("head").raw.queries(),
                "{b}"
            );
            let (wa, ia) = (
                whole.read_attention(a).expect("att"),
                ids.read_attention(b).expect("att"),
            );
            if model_layer == 3 {
                assert_eq!(wa, ia, "{b}: no window on layer 3");
            } else {
                // The window of 3 masks keys 3 or more positions back on layer 7 only.
                let last = ia.last().expect("a sequence");
                let n = last.weights.rows();
                assert_eq!(last.weights.get(n - 1, 0), 0.0, "{b}");
                assert_ne!(wa, ia, "{b}");
            }
        }
    }
    attnviz_ok(
        tmp.path(),
        &[
            &base[..],
            &["--out", "only7", "--layer-ids", "3,7", "--layers", "7"],
        ]
        .concat(),
    );
    assert_eq!(
        Dataset::open(tmp.path().join("only7"))
            .expect("opens")
            .heads()
            .expect("heads"),
        vec![HeadId::new(7, 0), HeadId::new(7, 1)]
    );
    attnviz_fails(
        tmp.path(),
        &[&base[..], &["--out", "bad", "--layer-ids", "3"]].concat(),
        &["--layer-ids", "1 ids for the 2 layers"],
    );
    assert!(!tmp.path().join("bad").exists());
    // The ids are the arrays' layers in order: a list out of order is refused, not sorted.
    attnviz_fails(
        tmp.path(),
        &[&base[..], &["--out", "bad", "--layer-ids", "7,3"]].concat(),
        &["--layer-ids", "strictly increasing"],
    );
    assert!(!tmp.path().join("bad").exists());
    // The model's own size, when given, is what the dataset records.
    attnviz_ok(
        tmp.path(),
        &[
            &base[..],
            &[
                "--out",
                "sized",
                "--layer-ids",
                "3,7",
                "--model-layers",
                "12",
            ],
        ]
        .concat(),
    );
    let sized = Dataset::open(tmp.path().join("sized")).expect("opens");
    assert_eq!(sized.meta().model.num_layers, 12);
    attnviz_fails(
        tmp.path(),
        &[
            &base[..],
            &["--out", "bad", "--layer-ids", "3,7", "--model-layers", "5"],
        ]
        .concat(),
        &["--model-layers 5", "layer 7"],
    );
    assert!(!tmp.path().join("bad").exists());
}

#[test]
fn tiny_heads_project_with_every_method_and_a_smaller_trust_k() {
    // 9 tokens = 18 joint points: trustworthiness needs k < n / 2, so k drops from 10 to 8.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (q, k, tokens) = (
        tmp.path().join("q.npy"),
        tmp.path().join("k.npy"),
        tmp.path().join("t.jsonl"),
    );
    write_f32(&q, &[9, D], &values(7, 9 * D));
    write_f32(&k, &[9, D], &values(8, 9 * D));
    write_tokens(&tokens, &[4, 5]);
    attnviz_ok(
        tmp.path(),
        &[
            "import",
            "--queries",
            s(&q),
            "--keys",
            s(&k),
            "--tokens",
            s(&tokens),
            "--out",
            "ds",
            "--quiet",
        ],
    );
    attnviz_ok(
        tmp.path(),
        &[
            "project",
            "ds",
            "--methods",
            "pca,tsne,umap",
            "--dims",
            "2,3",
            "--quiet",
        ],
    );
    let ds = Dataset::open(tmp.path().join("ds")).expect("dataset opens");
    for m in [
        ProjectionMethod::Pca,
        ProjectionMethod::Tsne,
        ProjectionMethod::Umap,
    ] {
        for dims in [2, 3] {
            let p = ds
                .read_projection(HeadId::new(0, 0), m, dims)
                .expect("projection");
            assert_eq!(p.coords.shape(), (18, usize::from(dims)));
            let ranks = input_ranks(&ds, HeadId::new(0, 0), &p);
            let quality = p.quality.expect("trustworthiness is estimated");
            assert_eq!(quality.k, 8, "{m} {dims}D");
            check_trustworthiness(
                &ranks,
                p.coords.as_slice(),
                usize::from(dims),
                quality.trustworthiness,
                8,
                TINY_MIN_TRUSTWORTHINESS,
                &format!("tiny {m} {dims}D"),
            );
        }
    }
}

#[test]
fn a_reimport_with_other_settings_or_inputs_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let toy = toy(tmp.path());
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import",
            "--queries",
            s(&toy.q),
            "--keys",
            s(&toy.k),
            "--tokens",
            s(&toy.tokens),
            "--out",
            "ds",
            "--quiet",
            "--json",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    fn argv(a: &[String]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    attnviz_ok(tmp.path(), &argv(&import(&[])));
    // The same import resumes (nothing to do).
    let again: serde_json::Value =
        serde_json::from_str(&attnviz_ok(tmp.path(), &argv(&import(&[])))).expect("json");
    assert_eq!(again["heads_extracted"], 0, "{again}");
    // Other settings are refused, naming them, and change nothing.
    let before = attnviz_tests::mtimes(&tmp.path().join("ds"));
    attnviz_fails(
        tmp.path(),
        &argv(&import(&["--no-normalize"])),
        &["--no-normalize", "new --out"],
    );
    attnviz_fails(
        tmp.path(),
        &argv(&import(&["--seed", "5"])),
        &["--seed", "new --out"],
    );
    // A keys file rewritten in place (same name, shape and type, other values).
    let mut other = toy.kv.clone();
    other[0] += 1.0;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let n = n_tokens();
    write_f64(&toy.k, &[LAYERS, HEADS, n, D], &other);
    attnviz_fails(
        tmp.path(),
        &argv(&import(&[])),
        &["input file", "k.npy", "new --out"],
    );
    assert_eq!(attnviz_tests::mtimes(&tmp.path().join("ds")), before);
}

/// `--window` (Mistral/Qwen2 sliding-window layers): computed attention is masked to the window on
/// the layers it names, recorded as transformers records it, checked in given attention, and part
/// of the settings a resumed import must match.
#[test]
fn a_sliding_window_masks_computed_attention_and_is_checked_in_given_attention() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let toy = toy(tmp.path());
    let base = [
        "import",
        "--queries",
        s(&toy.q),
        "--keys",
        s(&toy.k),
        "--tokens",
        s(&toy.tokens),
    ];
    let att = tmp.path().join("att.npy");
    attnviz_ok(
        tmp.path(),
        &joined(
            &base,
            &[
                "--causal",
                "--window",
                "3",
                "--window-layers",
                "1",
                "--out",
                "win",
                "--quiet",
            ],
        ),
    );
    let ds = Dataset::open(tmp.path().join("win")).expect("opens");
    let config = &ds.meta().model.config;
    assert_eq!(config["sliding_window"], 3);
    assert_eq!(
        config["layer_types"],
        serde_json::json!(["full_attention", "sliding_attention"])
    );
    let mut masked = 0;
    for h in HeadId::all(2, 2) {
        let window = (h.layer == 1).then_some(3);
        let mut start = 0;
        for (a, &len) in ds.read_attention(h).expect("attention").iter().zip(&LENS) {
            let want = expected_windowed_attention(
                slab(&toy.qv, h),
                slab(&toy.kv, h),
                start,
                len,
                true,
                window,
                1.0 / (D as f64).sqrt(),
            );
            for (i, row) in want.iter().enumerate() {
                for (j, w) in row.iter().enumerate() {
                    assert!(
                        (f64::from(a.get(i, j)) - w).abs() < 1e-5,
                        "{h} seq at {start}, {i},{j}: {} vs {w}",
                        a.get(i, j)
                    );
                    if window.is_some() && j < i && i - j >= 3 {
                        assert_eq!(a.get(i, j), 0.0);
                        masked += 1;
                    }
                }
            }
            start += len;
        }
    }
    assert!(
        masked > 0,
        "the window masked no key: the test would not see it"
    );

    // The dataset records that its normalization and fidelity left the masked keys out; one
    // without the record (made before) is neither resumed nor projected again.
    assert!(ds.meta().run.params.contains_key("window_aware"));
    let recorded = remove_run_param(&tmp.path().join("win"), "window_aware");
    let window_args = [
        "--causal",
        "--window",
        "3",
        "--window-layers",
        "1",
        "--out",
        "win",
    ];
    attnviz_fails(
        tmp.path(),
        &joined(&base, &window_args),
        &["earlier attnviz", "sliding window", "new --out"],
    );
    attnviz_fails(
        tmp.path(),
        &["project", "win", "--methods", "pca"],
        &["earlier attnviz", "sliding window", "new --out"],
    );
    std::fs::write(tmp.path().join("win").join("meta.json"), recorded).unwrap();

    // Given attention that attends beyond the window is refused, naming the flag and the weight.
    let width = 7;
    let mut given = vec![0f32; LAYERS * HEADS * n_tokens() * width];
    for h in HeadId::all(2, 2) {
        let slot = (usize::from(h.layer) * HEADS + usize::from(h.head)) * n_tokens() * width;
        let mut start = 0;
        for &len in &LENS {
            let rows = expected_attention(
                slab(&toy.qv, h),
                slab(&toy.kv, h),
                start,
                len,
                true,
                1.0 / (D as f64).sqrt(),
            );
            for (i, row) in rows.iter().enumerate() {
                for (j, w) in row.iter().enumerate() {
                    given[slot + (start + i) * width + j] = *w as f32;
                }
            }
            start += len;
        }
    }
    write_f32(&att, &[LAYERS, HEADS, n_tokens(), width], &given);
    attnviz_fails(
        tmp.path(),
        &joined(
            &base,
            &[
                "--attention",
                s(&att),
                "--causal",
                "--window",
                "3",
                "--out",
                "given",
            ],
        ),
        &["att.npy", "--window 3", "positions back"],
    );
    assert!(!tmp.path().join("given").exists());
    // Full causal attention is what it is without the window.
    attnviz_ok(
        tmp.path(),
        &joined(
            &base,
            &[
                "--attention",
                s(&att),
                "--causal",
                "--out",
                "given",
                "--quiet",
            ],
        ),
    );

    // The flags are checked before anything is written.
    attnviz_fails(
        tmp.path(),
        &joined(&base, &["--window", "3", "--out", "bad"]),
        &["--window 3 needs --causal"],
    );
    attnviz_fails(
        tmp.path(),
        &joined(
            &base,
            &[
                "--causal",
                "--window",
                "3",
                "--window-layers",
                "5",
                "--out",
                "bad",
            ],
        ),
        &["--window-layers", "layer 5"],
    );
    attnviz_fails(
        tmp.path(),
        &joined(&base, &["--causal", "--window", "0", "--out", "bad"]),
        &["--window 0"],
    );
    assert!(!tmp.path().join("bad").exists());

    // A window on every layer is one setting however it is asked for.
    attnviz_ok(
        tmp.path(),
        &joined(
            &base,
            &[
                "--causal",
                "--window",
                "3",
                "--window-layers",
                "0,1",
                "--out",
                "all",
                "--quiet",
            ],
        ),
    );
    let again: serde_json::Value = serde_json::from_str(&attnviz_ok(
        tmp.path(),
        &joined(
            &base,
            &[
                "--causal", "--window", "3", "--out", "all", "--quiet", "--json",
            ],
        ),
    ))
    .expect("json");
    assert_eq!(again["heads_extracted"], 0, "{again}");

    // Another window is another setting: a resumed import refuses it.
    attnviz_fails(
        tmp.path(),
        &joined(
            &base,
            &[
                "--causal",
                "--window",
                "2",
                "--window-layers",
                "1",
                "--out",
                "win",
            ],
        ),
        &["--window = 3", "asks for 2"],
    );
}
