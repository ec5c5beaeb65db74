//! End-to-end: the real `attnviz` binary on the tiny fixture models of every family.

use std::path::Path;

use attn_store::Dataset;
use attn_types::{HeadId, ProjectionMethod};
use attnviz_tests::{
    InputRanks, attnviz, attnviz_fails, attnviz_ok, check_trustworthiness, fixture_model, mtimes,
    png_size, remove_run_param, run_args, write_corpus,
};

const SENTENCES: &[&str] = &[
    "the cat sat on the mat",
    "a dog ran to the park and back",
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "she said that it was the best day",
    "we will go home after the rain",
];

/// Checks a finished dataset: every head present with vectors, attention and the projections.
fn check_dataset(dir: &Path, layers: u16, heads: u16, methods: &[ProjectionMethod], dims: u8) {
    let ds = Dataset::open(dir).expect("dataset opens");
    let tokens = ds.read_tokens().expect("tokens read");
    assert!(!tokens.is_empty());
    tokens.validate().expect("token table is consistent");
    let stored = ds.heads().expect("heads listed");
    assert_eq!(
        stored.len(),
        usize::from(layers * heads),
        "heads on disk: {stored:?}"
    );
    for h in HeadId::all(layers, heads) {
        let head = ds.read_head(h).expect("head reads");
        assert_eq!(head.raw.len(), tokens.len());
        let norm = head.normalized.expect("normalized vectors stored");
        assert!(norm.params.scale > 0.0);
        let att = ds.read_attention(h).expect("attention reads");
        assert_eq!(att.len(), tokens.sequences().len());
        for a in &att {
            for q in 0..a.len() {
                let sum: f32 = a.weights.row(q).iter().sum();
                assert!(
                    (sum - 1.0).abs() < 1e-4,
                    "{h} seq {} row {q} sums to {sum}",
                    a.seq_id
                );
            }
        }
        // Each projection's input under cosine distance: the raw or the normalized joint (queries,
        // then keys), as its spec records (the attnviz default lays out the raw vectors).
        let joint_raw = head.raw.joint();
        let joint_norm = norm.vectors.joint();
        let ranks_raw = InputRanks::new(joint_raw.as_slice(), joint_raw.cols(), true);
        let ranks_norm = InputRanks::new(joint_norm.as_slice(), joint_norm.cols(), true);
        for &m in methods {
            let p = ds.read_projection(h, m, dims).expect("projection reads");
            assert_eq!(p.coords.shape(), (2 * tokens.len(), usize::from(dims)));
            assert!(p.coords.as_slice().iter().all(|v| v.is_finite()));
            let q = p.quality.expect("quality computed");
            assert_eq!(
                q.k,
                10.min(tokens.len() as u32 - 1),
                "{h} {m}: trustworthiness k"
            );
            let raw = p.spec.params.get("vectors_raw") == Some(&1.0);
            check_trustworthiness(
                if raw { &ranks_raw } else { &ranks_norm },
                p.coords.as_slice(),
                usize::from(dims),
                q.trustworthiness,
                q.k as usize,
                min_trustworthiness(m),
                &format!("{h} {m} {dims}D"),
            );
        }
    }
}

/// Smallest trustworthiness (k = 10, or fewer tokens - 1) a layout must reach, per method, 2D and 3D.
/// Measured minimum over the heads of every fixture here (BERT n = 166, GPT-2 208, ViT-16 60, ViT-32
/// 30 points, synthetic and folder images): t-SNE 0.848, UMAP 0.846, PCA 0.782; the same layouts
/// shuffled (random) reach at most 0.612 (ViT-32, 30 points; 0.53 at n >= 166).
fn min_trustworthiness(method: ProjectionMethod) -> f64 {
    match method {
        ProjectionMethod::Tsne | ProjectionMethod::Umap => 0.75,
        ProjectionMethod::Pca => 0.70,
    }
}

#[test]
fn bert_runs_end_to_end_with_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path(), SENTENCES);
    let model = fixture_model("bert_tiny");
    let out = attnviz_ok(
        tmp.path(),
        &run_args(&model, &corpus, "ds", &["--quiet", "--json"]),
    );
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["heads"], 12);
    assert_eq!(summary["projections_computed"], 36);
    let ds = tmp.path().join("ds");
    check_dataset(
        &ds,
        3,
        4,
        &[
            ProjectionMethod::Tsne,
            ProjectionMethod::Umap,
            ProjectionMethod::Pca,
        ],
        2,
    );
    for m in ["tsne", "umap", "pca"] {
        let (w, h) = png_size(&ds.join(format!("figures/matrix_{m}_2d.png")));
        assert!(w > 600 && h > 300, "matrix figure {w}x{h}");
    }
    // Every other view renders from the same dataset.
    let ds_s = ds.to_str().unwrap();
    for (args, file) in [
        (
            vec![
                "--view",
                "single",
                "--head",
                "L1H2",
                "--select",
                "3",
                "--labels",
                "--size-by-norm",
            ],
            "single.png",
        ),
        (
            vec!["--view", "single", "--head", "L1H2", "--search", "the"],
            "single.svg",
        ),
        (
            vec![
                "--view",
                "sentence",
                "--head",
                "L2H0",
                "--seq",
                "1",
                "--hide-special",
            ],
            "sentence.svg",
        ),
        (
            vec!["--view", "sentence", "--head", "L2H0", "--aggregate"],
            "aggregate.png",
        ),
        (vec!["--view", "similarity"], "similarity.png"),
        (
            vec![
                "--view", "matrix", "--method", "umap", "--color", "discrete", "--search", "the",
            ],
            "search.png",
        ),
    ] {
        let path = tmp.path().join(file);
        let mut full = vec!["render", ds_s, "-o", path.to_str().unwrap()];
        full.extend(args);
        attnviz_ok(tmp.path(), &full);
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 1000, "{file} has only {len} bytes");
        if file.ends_with(".svg") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("<svg") && text.contains("<text"),
                "{file} is not a labelled SVG"
            );
        }
    }
    // A head the dataset does not have is named as such (not as a missing projection).
    for view in ["single", "sentence"] {
        attnviz_fails(
            tmp.path(),
            &["render", ds_s, "--view", view, "--head", "L1H6"],
            &["--head L1H6", "no such head"],
        );
    }
    // `info` reads the dataset back.
    let info: serde_json::Value =
        serde_json::from_str(&attnviz_ok(tmp.path(), &["info", ds_s, "--json"])).unwrap();
    assert_eq!(info["per_head"].as_array().unwrap().len(), 12);
    assert_eq!(info["model_heads"], 12);
    assert_eq!(info["meta"]["model"]["id"], "bert_tiny");
    assert_eq!(info["projections"]["tsne_2d"], 12);
    assert_eq!(info["meta"]["run"]["num_tokens"], info["tokens"]);
    // As a table: what the dataset is before the per-head rows.
    let text = attnviz_ok(tmp.path(), &["info", ds_s]);
    let header: Vec<&str> = text.lines().take(5).collect();
    assert!(
        header[1].starts_with("model:    bert_tiny (bert, 3 layers x 4 heads"),
        "{text}"
    );
    assert!(
        header[2].contains(&format!("{} tokens", info["tokens"])),
        "{text}"
    );
    assert!(
        header[4].contains(
            "12 of the model's 12 stored; projections: pca_2d (12, seed 0), tsne_2d (12, seed 0), umap_2d (12, seed 0)"
        ),
        "{text}"
    );
    assert!(!text.contains("extracted now"), "{text}");
}

#[test]
fn gpt2_is_causal_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path(), SENTENCES);
    let model = fixture_model("gpt2_tiny");
    attnviz_ok(
        tmp.path(),
        &run_args(
            &model,
            &corpus,
            "ds",
            &["--quiet", "--methods", "pca,tsne", "--dims", "3"],
        ),
    );
    let ds_dir = tmp.path().join("ds");
    let ds = Dataset::open(&ds_dir).unwrap();
    let cfg = &ds.meta().model;
    check_dataset(
        &ds_dir,
        cfg.num_layers,
        cfg.num_heads,
        &[ProjectionMethod::Pca, ProjectionMethod::Tsne],
        3,
    );
    // Causal: no attention above the diagonal.
    for a in ds.read_attention(HeadId::new(0, 0)).unwrap() {
        for q in 0..a.len() {
            for k in q + 1..a.len() {
                assert_eq!(a.get(q, k), 0.0);
            }
        }
    }
    assert!(png_size(&ds_dir.join("figures/matrix_tsne_3d.png")).0 > 600);
}

/// The per-query attention term and the ceiling end to end on a causal model: the term's weight
/// is recorded in every t-SNE / UMAP spec, each projection carries its head's 2-D ceiling (also in
/// `info --json`), a rerun with another weight recomputes only that method, and a bad weight is a
/// one-line error naming the flag.
#[test]
fn attention_term_and_ceiling_are_recorded_and_respected_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path(), SENTENCES);
    let model = fixture_model("gpt2_tiny");
    let base = ["--quiet", "--json", "--no-render", "--methods", "tsne,umap", "--layers", "0"];
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        serde_json::from_str(&attnviz_ok(tmp.path(), &run_args(&model, &corpus, "ds", &args)))
            .unwrap()
    };
    let first = run(&[]);
    let heads = first["heads"].as_u64().unwrap() as usize;
    assert!(heads > 0);
    assert_eq!(first["projections_computed"], 2 * heads);
    let ds_dir = tmp.path().join("ds");
    let ds = Dataset::open(&ds_dir).unwrap();
    for h in ds.heads().unwrap() {
        for m in [ProjectionMethod::Tsne, ProjectionMethod::Umap] {
            let p = ds.read_projection(h, m, 2).unwrap();
            // On by default.
            assert!(p.spec.params["attention_kl"] > 0.0, "{h} {m}");
            let ceiling = p.ceiling.unwrap_or_else(|| panic!("{h} {m}: no ceiling"));
            let (top, hit) = (ceiling.hit_at_3.unwrap(), p.fidelity.unwrap().hit_at_3.unwrap());
            assert!((0.0..=1.0).contains(&top) && (0.0..=1.0).contains(&hit), "{h} {m}");
        }
    }
    let info: serde_json::Value = serde_json::from_str(&attnviz_ok(
        tmp.path(),
        &["info", ds_dir.to_str().unwrap(), "--json"],
    ))
    .unwrap();
    assert!(info["per_head"][0]["ceiling"]["2d"]["hit_at_3"].is_number(), "{info}");
    // The same command reuses everything; another t-SNE weight recomputes t-SNE only; asking
    // for no ceiling reuses what is stored.
    assert_eq!(run(&[])["projections_reused"], 2 * heads);
    let again = run(&["--tsne-attention-kl", "0"]);
    assert_eq!(again["projections_computed"], heads);
    assert_eq!(again["projections_reused"], heads);
    let h0 = ds.heads().unwrap()[0];
    assert_eq!(ds.read_projection(h0, ProjectionMethod::Tsne, 2).unwrap().spec.params["attention_kl"], 0.0);
    assert_eq!(run(&["--tsne-attention-kl", "0", "--no-ceiling"])["projections_reused"], 2 * heads);
    attnviz_fails(
        tmp.path(),
        &run_args(&model, &corpus, "ds", &["--umap-attention-kl", "-1"]),
        &["--umap-attention-kl"],
    );
}

/// The Llama-family decoders end to end: extract (grouped-query attention, rotary embeddings,
/// sliding windows), normalize, project, render; the dataset records the grouping and the rotary
/// capture, query heads of a group share their keys, and attention respects causality and the window.
#[test]
fn decoders_run_end_to_end() {
    // (fixture, architecture, sliding window per layer)
    let cases: [(&str, &str, [Option<usize>; 3]); 4] = [
        ("llama_tiny", "llama", [None; 3]),
        ("mistral_tiny", "mistral", [Some(5); 3]),
        ("qwen2_tiny", "qwen2", [None, Some(4), Some(4)]),
        ("qwen3_tiny", "qwen3", [None; 3]),
    ];
    for (fixture, arch, windows) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = write_corpus(tmp.path(), SENTENCES);
        let model = fixture_model(fixture);
        attnviz_ok(
            tmp.path(),
            &run_args(&model, &corpus, "ds", &["--quiet", "--methods", "pca,tsne"]),
        );
        let ds_dir = tmp.path().join("ds");
        let ds = Dataset::open(&ds_dir).unwrap();
        let cfg = ds.meta().model.clone();
        assert_eq!(cfg.architecture.to_string(), arch);
        assert_eq!((cfg.num_heads, cfg.num_key_value_heads), (6, Some(2)));
        assert_eq!(cfg.rope, Some(attn_types::RopeCapture::Post));
        check_dataset(
            &ds_dir,
            cfg.num_layers,
            cfg.num_heads,
            &[ProjectionMethod::Pca, ProjectionMethod::Tsne],
            2,
        );
        for layer in 0..cfg.num_layers {
            // Query heads 0-2 read key head 0, 3-5 key head 1.
            let keys = |h: u16| {
                ds.read_head(HeadId::new(layer, h))
                    .unwrap()
                    .raw
                    .keys()
                    .clone()
            };
            assert_eq!(keys(0), keys(2), "{fixture} L{layer}");
            assert_eq!(keys(3), keys(5), "{fixture} L{layer}");
            assert_ne!(keys(0), keys(3), "{fixture} L{layer}");
            // Stored once per key head: the query heads' files name theirs and hold no keys.
            for h in 0..cfg.num_heads {
                let path = ds.vectors_path(HeadId::new(layer, h));
                assert_eq!(
                    attn_store::recorded_key_head(&path).unwrap(),
                    Some(HeadId::new(layer, h / 3)),
                    "{fixture} L{layer}H{h}"
                );
                assert!(ds.keys_path(HeadId::new(layer, h / 3)).is_file());
            }
            let window = windows[usize::from(layer)];
            let mut windowed_out = 0;
            for a in ds.read_attention(HeadId::new(layer, 1)).unwrap() {
                for q in 0..a.len() {
                    for k in 0..a.len() {
                        let outside = k > q || window.is_some_and(|w| q >= k + w);
                        if outside {
                            assert_eq!(a.get(q, k), 0.0, "{fixture} L{layer} q{q} k{k}");
                            windowed_out += usize::from(k < q);
                        }
                    }
                }
            }
            // The window is shorter than the sentences: it did cut keys off.
            assert_eq!(window.is_some(), windowed_out > 0, "{fixture} L{layer}");
        }
        for figure in ["matrix_pca_2d.png", "matrix_tsne_2d.png"] {
            assert!(
                png_size(&ds_dir.join("figures").join(figure)).0 > 600,
                "{fixture} {figure}"
            );
        }
        // A window model's dataset records that its normalization and fidelity respect the
        // window; one made before (without the record) is not resumed as if it did.
        let has_window = windows.iter().any(Option::is_some);
        assert_eq!(
            ds.meta().run.params.contains_key("window_aware"),
            has_window,
            "{fixture}"
        );
        if has_window {
            remove_run_param(&ds_dir, "window_aware");
            attnviz_fails(
                tmp.path(),
                &run_args(&model, &corpus, "ds", &["--methods", "pca,tsne"]),
                &["earlier attnviz", "sliding window", "new --out"],
            );
            // Nor are its heads projected again from that normalization.
            attnviz_fails(
                tmp.path(),
                &["project", "ds", "--methods", "pca", "--force"],
                &["earlier attnviz", "sliding window", "new --out"],
            );
        }
    }
}

#[test]
fn vit_runs_on_synthetic_and_folder_images() {
    for fixture in ["vit16_tiny", "vit32_tiny"] {
        let tmp = tempfile::tempdir().unwrap();
        let model = fixture_model(fixture);
        attnviz_ok(
            tmp.path(),
            &[
                "run",
                "--model",
                model.to_str().unwrap(),
                "--max-sequences",
                "3",
                "--out",
                "ds",
                "--quiet",
                "--methods",
                "umap,pca",
            ],
        );
        let ds_dir = tmp.path().join("ds");
        if fixture == "vit16_tiny" {
            // The same model with another resampling filter prepares other inputs: refused.
            let other = tmp.path().join("bicubic");
            std::fs::create_dir(&other).unwrap();
            for f in std::fs::read_dir(&model).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, other.join(f.file_name().unwrap())).unwrap();
            }
            let config = std::fs::read_to_string(other.join("preprocessor_config.json")).unwrap();
            let config = config.replace("\"resample\": 2", "\"resample\": 3");
            assert!(config.contains("\"resample\": 3"));
            std::fs::write(other.join("preprocessor_config.json"), config).unwrap();
            attnviz_fails(
                tmp.path(),
                &[
                    "run",
                    "--model",
                    other.to_str().unwrap(),
                    "--max-sequences",
                    "3",
                    "--out",
                    "ds",
                    "--methods",
                    "umap,pca",
                ],
                &["image preprocessing", "Bicubic"],
            );
        }
        let ds = Dataset::open(&ds_dir).unwrap();
        let cfg = ds.meta().model.clone();
        let tokens = ds.read_tokens().unwrap();
        let side = cfg.image.unwrap().grid_side() as usize;
        assert_eq!(
            tokens.len(),
            3 * (side * side + 1),
            "{fixture}: CLS + patches per image"
        );
        assert_eq!(tokens.tokens.iter().filter(|t| t.is_cls).count(), 3);
        check_dataset(
            &ds_dir,
            cfg.num_layers,
            cfg.num_heads,
            &[ProjectionMethod::Umap, ProjectionMethod::Pca],
            2,
        );
        let img = tmp.path().join("image.png");
        attnviz_ok(
            tmp.path(),
            &[
                "render",
                "ds",
                "--view",
                "image",
                "--method",
                "pca",
                "--head",
                "L1H1",
                "--seq",
                "2",
                "-o",
                img.to_str().unwrap(),
            ],
        );
        assert!(png_size(&img).0 >= 600);
        let colored = tmp.path().join("patch.png");
        attnviz_ok(
            tmp.path(),
            &[
                "render",
                "ds",
                "--method",
                "umap",
                "--color",
                "patch-row",
                "-o",
                colored.to_str().unwrap(),
            ],
        );
        assert!(png_size(&colored).0 > 600);
        // The viewer API's encoding names read too; the Matrix View is named as `run` names it
        // (not after a head it does not single out), with the encoding when it is not the
        // default, so that `run`'s figure is not replaced.
        let out = attnviz_ok(
            tmp.path(),
            &["render", "ds", "--method", "umap", "--color", "patch_row"],
        );
        assert!(
            out.contains("figures/matrix_umap_2d_patch-row.png"),
            "{out}"
        );

        // A folder of images, read in file-name order and resized to the model's input size.
        let folder = tmp.path().join("images");
        std::fs::create_dir(&folder).unwrap();
        // (file, size, dominant channel): each image is a gradient over the other two channels.
        let files = [
            ("c_blue.png", 30, 2),
            ("a_red.png", 70, 0),
            ("b_green.png", 50, 1),
        ];
        for (file, size, channel) in files {
            image::RgbImage::from_fn(size, size + 7, |x, y| {
                let mut px = [
                    (x * 120 / size) as u8,
                    (y * 120 / (size + 7)) as u8,
                    ((x + y) * 60 / size) as u8,
                ];
                px[channel] = 230;
                image::Rgb(px)
            })
            .save(folder.join(file))
            .unwrap();
        }
        attnviz_ok(
            tmp.path(),
            &run_args(
                &model,
                &folder,
                "folder_ds",
                &["--quiet", "--no-render", "--methods", "umap,pca"],
            ),
        );
        let ds_dir = tmp.path().join("folder_ds");
        let ds = Dataset::open(&ds_dir).unwrap();
        assert_eq!(
            ds.meta().run.corpus,
            folder.canonicalize().unwrap().display().to_string()
        );
        assert_eq!(ds.meta().run.num_sequences, 3);
        let tokens = ds.read_tokens().unwrap();
        assert_eq!(tokens.sequences().len(), 3);
        assert_eq!(
            tokens.len(),
            3 * (side * side + 1),
            "{fixture}: folder tokens"
        );
        check_dataset(
            &ds_dir,
            cfg.num_layers,
            cfg.num_heads,
            &[ProjectionMethod::Umap, ProjectionMethod::Pca],
            2,
        );
        // Sequence i is the i-th file by name (a_red, b_green, c_blue), stored at the input size.
        let size = cfg.image.unwrap().image_size;
        for (seq, channel) in [(0u32, 0usize), (1, 1), (2, 2)] {
            let png = ds.read_image_png(seq).unwrap();
            let img = image::load_from_memory(&png).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (size, size), "{fixture} image {seq}");
            let px = img.get_pixel(size / 2, size / 2).0;
            assert!(
                px[channel] >= 220 && (0..3).all(|c| c == channel || px[c] < 200),
                "{fixture} image {seq} is not the {channel}-dominant file: {px:?}"
            );
        }
        // The folder's vectors are not the synthetic images': the corpus was really used.
        let head = HeadId::new(1, 1);
        let synthetic = Dataset::open(tmp.path().join("ds")).unwrap();
        assert_ne!(
            ds.read_head(head).unwrap().raw.queries(),
            synthetic.read_head(head).unwrap().raw.queries()
        );
    }
}

#[test]
fn interrupted_run_resumes_without_recomputing_finished_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path(), SENTENCES);
    let model = fixture_model("bert_tiny");
    let base = [
        "run",
        "--model",
        model.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        "ds",
        "--quiet",
        "--no-render",
        "--methods",
        "tsne,pca",
    ];
    attnviz_ok(tmp.path(), &base);
    let ds = tmp.path().join("ds");
    // Simulate a crash part-way: one head never written, one head's projection missing.
    std::fs::remove_dir_all(ds.join("heads/L02H03")).unwrap();
    std::fs::remove_file(ds.join("heads/L00H01/projections/tsne_2d.parquet")).unwrap();
    let before = mtimes(&ds);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = attnviz_ok(tmp.path(), &[&base[..], &["--json"]].concat());
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["heads_extracted"], 1, "{summary}");
    assert_eq!(summary["projections_computed"], 3, "{summary}");
    let after = mtimes(&ds);
    for (path, t) in &before {
        if path.ends_with("meta.json") {
            continue;
        }
        assert_eq!(after.get(path), Some(t), "{} was rewritten", path.display());
    }
    assert!(ds.join("heads/L02H03/projections/pca_2d.parquet").is_file());
    assert!(
        ds.join("heads/L00H01/projections/tsne_2d.parquet")
            .is_file()
    );
    check_dataset(
        &ds,
        3,
        4,
        &[ProjectionMethod::Tsne, ProjectionMethod::Pca],
        2,
    );
    // Layouts stored without quality numbers (--no-quality) are made again when a run asks for
    // them, with the same coordinates; with --no-quality they are reused as they are.
    let pca = |h| {
        Dataset::open(&ds)
            .unwrap()
            .read_projection(h, ProjectionMethod::Pca, 2)
            .unwrap()
    };
    let head = HeadId::new(1, 2);
    let with_quality = pca(head);
    std::fs::remove_dir_all(&ds).unwrap();
    attnviz_ok(tmp.path(), &[&base[..], &["--no-quality"]].concat());
    assert!(pca(head).quality.is_none());
    let out = attnviz_ok(
        tmp.path(),
        &[&base[..], &["--no-quality", "--json"]].concat(),
    );
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["projections_computed"], 0, "{summary}");
    let out = attnviz_ok(tmp.path(), &[&base[..], &["--json"]].concat());
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["projections_computed"], 24, "{summary}");
    let again = pca(head);
    assert_eq!(again.coords, with_quality.coords);
    assert_eq!(again.quality, with_quality.quality);
}

#[test]
fn two_shards_equal_one_run() {
    // llama_tiny: the heads of a group (3 query heads per key head) fall into both shards, which
    // share its key file.
    for fixture in ["bert_tiny", "llama_tiny"] {
        shards_equal_one_run(fixture);
    }
}

#[allow(clippy::unwrap_used)] // a test's helper
fn shards_equal_one_run(fixture: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path(), SENTENCES);
    let model = fixture_model(fixture);
    let common = [
        "run",
        "--model",
        model.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--quiet",
        "--no-render",
        "--methods",
        "tsne,umap",
    ];
    attnviz_ok(tmp.path(), &[&common[..], &["--out", "whole"]].concat());
    attnviz_ok(
        tmp.path(),
        &[&common[..], &["--out", "sharded", "--shard", "0/2"]].concat(),
    );
    let half = Dataset::open(tmp.path().join("sharded"))
        .unwrap()
        .heads()
        .unwrap();
    let whole = Dataset::open(tmp.path().join("whole")).unwrap();
    let all = whole.heads().unwrap().len();
    assert_eq!(
        half.len(),
        all / 2,
        "shard 0/2 holds half the heads: {half:?}"
    );
    attnviz_ok(
        tmp.path(),
        &[&common[..], &["--out", "sharded", "--shard", "1/2"]].concat(),
    );
    let sharded = Dataset::open(tmp.path().join("sharded")).unwrap();
    assert_eq!(whole.heads().unwrap(), sharded.heads().unwrap());
    for h in whole.heads().unwrap() {
        // Every head reads its group's one key file in both (the shards' keys are the same bits).
        let key_head = whole.shared_key_head(h);
        assert_eq!(key_head.is_some(), fixture == "llama_tiny");
        assert_eq!(
            attn_store::recorded_key_head(sharded.vectors_path(h)).unwrap(),
            key_head,
            "{fixture} {h}"
        );
        if let Some(k) = key_head {
            assert_eq!(
                std::fs::read(whole.keys_path(k)).unwrap(),
                std::fs::read(sharded.keys_path(k)).unwrap(),
                "{fixture} {k} key file"
            );
        }
    }
    assert_eq!(whole.read_tokens().unwrap(), sharded.read_tokens().unwrap());
    for h in whole.heads().unwrap() {
        assert_eq!(
            whole.read_head(h).unwrap(),
            sharded.read_head(h).unwrap(),
            "{h} vectors"
        );
        assert_eq!(
            whole.read_attention(h).unwrap(),
            sharded.read_attention(h).unwrap(),
            "{h} attention"
        );
        for m in [ProjectionMethod::Tsne, ProjectionMethod::Umap] {
            let (a, b) = (
                whole.read_projection(h, m, 2).unwrap(),
                sharded.read_projection(h, m, 2).unwrap(),
            );
            assert_eq!(a.coords, b.coords, "{h} {m} coordinates differ");
        }
    }
    if fixture == "llama_tiny" {
        // A deleted key file is repaired by a resume: the heads of its group count as missing and
        // are extracted again, which writes the same file.
        let k = HeadId::new(1, 0);
        let before = std::fs::read(sharded.keys_path(k)).unwrap();
        std::fs::remove_file(sharded.keys_path(k)).unwrap();
        // Until then `info` leaves the group out and names it, and `render` names the file.
        let ds_s = tmp.path().join("sharded");
        let ds_s = ds_s.to_str().unwrap();
        let info: serde_json::Value =
            serde_json::from_str(&attnviz_ok(tmp.path(), &["info", ds_s, "--json"])).unwrap();
        assert_eq!(
            info["heads_lacking_keys"],
            serde_json::json!([
                {"layer": 1, "head": 0},
                {"layer": 1, "head": 1},
                {"layer": 1, "head": 2}
            ])
        );
        assert_eq!(info["heads"], 15);
        assert_eq!(info["per_head"].as_array().unwrap().len(), 15);
        assert!(
            attnviz_ok(tmp.path(), &["info", ds_s]).contains("3 heads lack their key head's file")
        );
        attnviz_fails(
            tmp.path(),
            &[
                "render", ds_s, "--view", "single", "--head", "L1H1", "--method", "tsne",
            ],
            &["--head L1H1", "L01K00.parquet", "is missing"],
        );
        let out = attnviz_ok(
            tmp.path(),
            &[&common[..], &["--out", "sharded", "--json"]].concat(),
        );
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            summary["heads_extracted"], 3,
            "the key file's group is extracted again"
        );
        assert_eq!(std::fs::read(sharded.keys_path(k)).unwrap(), before);
    }
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_no_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model("bert_tiny");
    let m = model.to_str().unwrap();
    let corpus = write_corpus(tmp.path(), SENTENCES);
    let c = corpus.to_str().unwrap();
    attnviz_fails(
        tmp.path(),
        &["run", "--model", "no/such/model", "--out", "ds"],
        &["no/such/model"],
    );
    let csv = tmp.path().join("corpus.csv");
    std::fs::write(&csv, "a,b\n").unwrap();
    attnviz_fails(
        tmp.path(),
        &[
            "run",
            "--model",
            m,
            "--corpus",
            csv.to_str().unwrap(),
            "--out",
            "ds",
        ],
        &["corpus.csv"],
    );
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    attnviz_fails(
        tmp.path(),
        &[
            "run",
            "--model",
            m,
            "--corpus",
            empty.to_str().unwrap(),
            "--out",
            "ds",
        ],
        &["empty.txt"],
    );
    attnviz_fails(
        tmp.path(),
        &["run", "--model", m, "--corpus", c, "--no-such-flag"],
        &["--no-such-flag"],
    );
    // A sequence longer than the model's 40 positions: the corpus, the sequence and the flag, in the
    // CLI's terms only.
    let long = tmp.path().join("long.txt");
    std::fs::write(
        &long,
        format!(
            "a short one
{}
",
            "word ".repeat(60)
        ),
    )
    .unwrap();
    let err = attnviz_fails(
        tmp.path(),
        &[
            "run",
            "--model",
            m,
            "--corpus",
            long.to_str().unwrap(),
            "--out",
            "ds",
        ],
        &["long.txt", "sequence 1", "maximum of 40", "--truncate"],
    );
    assert!(!err.contains("ExtractOptions"), "{err}");
    // With --truncate it runs, saying once (not per sequence) what was cut.
    let longer = tmp.path().join("longer.txt");
    std::fs::write(
        &longer,
        format!(
            "{}\na short one\n{}\n",
            "word ".repeat(60),
            "word ".repeat(50)
        ),
    )
    .unwrap();
    let out = attnviz(
        tmp.path(),
        &[
            "run",
            "--model",
            m,
            "--corpus",
            longer.to_str().unwrap(),
            "--truncate",
            "--methods",
            "pca",
            "--no-render",
            "--quiet",
            "--out",
            "cut",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("2 of 3 sequences") && warnings[0].contains("had 122 tokens"),
        "{stderr}"
    );
    std::fs::remove_dir_all(tmp.path().join("cut")).unwrap();
    attnviz_fails(
        tmp.path(),
        &[
            "run", "--model", m, "--corpus", c, "--dims", "4", "--out", "ds",
        ],
        &["--dims"],
    );
    attnviz_fails(
        tmp.path(),
        &[
            "run", "--model", m, "--corpus", c, "--layers", "7", "--out", "ds",
        ],
        &["--layers"],
    );
    // A folder that is not a model.
    attnviz_fails(
        tmp.path(),
        &[
            "run",
            "--model",
            tmp.path().to_str().unwrap(),
            "--corpus",
            c,
            "--out",
            "ds",
        ],
        &["config.json"],
    );
    // An image folder with a stray text file, for a ViT.
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]))
        .save(images.join("a.png"))
        .unwrap();
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let vit = fixture_model("vit16_tiny");
    attnviz_fails(
        tmp.path(),
        &run_args(&vit, &images, "ds", &[]),
        &["notes.txt"],
    );
    // A text corpus for an image model.
    attnviz_fails(
        tmp.path(),
        &[
            "run",
            "--model",
            vit.to_str().unwrap(),
            "--corpus",
            c,
            "--out",
            "ds",
        ],
        &["vision model"],
    );
    // Decoder checkpoints: a missing shard, an unsupported rope scaling, a bad --rope / --attention.
    let copy = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(fixture_model(name)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        dir
    };
    let mistral = copy("mistral_tiny");
    std::fs::remove_file(mistral.join("model-00002-of-00004.safetensors")).unwrap();
    let run_on = |model: &Path, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["run", "--model", model.to_str().unwrap(), "--corpus", c]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--out".to_string(), "ds".to_string()]);
        args
    };
    let args = run_on(&mistral, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    attnviz_fails(tmp.path(), &args, &["model-00002-of-00004.safetensors"]);
    let llama = copy("llama_tiny");
    let cfg_path = llama.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, cfg.replace("\"llama3\"", "\"longrope\"")).unwrap();
    let args = run_on(&llama, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    attnviz_fails(
        tmp.path(),
        &args,
        &["config.json", "rope_parameters.rope_type", "longrope"],
    );
    let qwen3 = fixture_model("qwen3_tiny");
    for (flag, value) in [("--rope", "mid"), ("--attention", "top:0")] {
        let args = run_on(&qwen3, &[flag, value]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        attnviz_fails(tmp.path(), &args, &[flag, value]);
    }
    assert!(
        !tmp.path().join("ds").exists(),
        "a failed run left a dataset behind"
    );
    // Rendering a directory that is no dataset.
    attnviz_fails(
        tmp.path(),
        &["render", tmp.path().to_str().unwrap()],
        &["meta.json"],
    );
}

/// A re-run never reuses a result made with other settings: changed projection settings recompute
/// the projections, a changed corpus selection is refused naming the flag, a bad projection flag
/// fails before any work, and a second run holding the same dataset's lock stops at once.
#[test]
fn reruns_respect_settings_and_the_dataset_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model("bert_tiny");
    let m = model.to_str().unwrap();
    let corpus = write_corpus(tmp.path(), SENTENCES);
    let c = corpus.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run", "--model", m, "--corpus", c, "--out", "ds", "--quiet", "--json",
        ];
        args.extend_from_slice(&["--methods", "pca,tsne", "--no-render"]);
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let counts = |out: &str| {
        let v: serde_json::Value = serde_json::from_str(out).expect("--json summary");
        (
            v["projections_computed"].as_u64().unwrap(),
            v["projections_reused"].as_u64().unwrap(),
        )
    };
    fn args(a: &[String]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }

    // A bad projection flag fails before the model is loaded and writes nothing.
    for bad in [
        ["--perplexity", "0"],
        ["--perplexity", "NaN"],
        ["--tsne-attention-weight", "1.5"],
    ] {
        attnviz_fails(tmp.path(), &args(&run(&bad)), &[bad[0]]);
    }
    assert!(
        !tmp.path().join("ds").exists(),
        "a rejected flag left a dataset"
    );

    let heads = 3 * 4;
    let first = attnviz_ok(tmp.path(), &args(&run(&["--perplexity", "5"])));
    assert_eq!(counts(&first), (2 * heads, 0));
    let same = attnviz_ok(tmp.path(), &args(&run(&["--perplexity", "5"])));
    assert_eq!(
        counts(&same),
        (0, 2 * heads),
        "the same settings reuse everything"
    );
    // Another perplexity: the t-SNE projections are recomputed, PCA (which it does not affect) kept.
    let other = attnviz_ok(tmp.path(), &args(&run(&["--perplexity", "6"])));
    assert_eq!(counts(&other), (heads, heads));
    let ds = Dataset::open(tmp.path().join("ds")).unwrap();
    let p = ds
        .read_projection(HeadId::new(0, 0), ProjectionMethod::Tsne, 2)
        .unwrap();
    assert_eq!(p.spec.params["perplexity_requested"], 6.0);

    // Another selection of the corpus is refused, naming the flag, and changes nothing.
    attnviz_fails(
        tmp.path(),
        &args(&run(&["--perplexity", "6", "--max-sequences", "2"])),
        &["--max-sequences", "new --out"],
    );
    // So are another seed (the normalization subsamples with it) and a corpus file edited in place.
    attnviz_fails(
        tmp.path(),
        &args(&run(&["--perplexity", "6", "--seed", "3"])),
        &["--seed", "new --out"],
    );
    let original = std::fs::read_to_string(&corpus).unwrap();
    std::fs::write(&corpus, original.replacen("the", "a", 1)).unwrap();
    attnviz_fails(
        tmp.path(),
        &args(&run(&["--perplexity", "6"])),
        &["corpus contents", "new --out"],
    );
    std::fs::write(&corpus, original).unwrap();

    // A second process on the same dataset (here: this test holding the run's lock) stops at once.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(tmp.path().join("ds").join(".lock-run"))
        .unwrap();
    lock.try_lock().unwrap();
    attnviz_fails(
        tmp.path(),
        &args(&run(&["--perplexity", "6"])),
        &["another attnviz process"],
    );
    // Nor does a shard run beside a whole run.
    attnviz_fails(
        tmp.path(),
        &args(&run(&["--perplexity", "6", "--shard", "0/2"])),
        &["another attnviz process"],
    );
    drop(lock);
    // A run that finds the dataset locked writes no metadata: the metadata of the run holding the
    // lock (still extracting, with no data yet) is not replaced.
    std::fs::create_dir(tmp.path().join("fresh")).unwrap();
    let fresh_lock = std::fs::File::create(tmp.path().join("fresh").join(".lock-run")).unwrap();
    fresh_lock.try_lock_shared().unwrap();
    let mut fresh = run(&[]);
    fresh[6] = "fresh".into();
    attnviz_fails(tmp.path(), &args(&fresh), &["another attnviz process"]);
    assert!(!tmp.path().join("fresh").join("meta.json").exists());
    drop(fresh_lock);
    let again = attnviz_ok(tmp.path(), &args(&run(&["--perplexity", "6"])));
    assert_eq!(counts(&again), (0, 2 * heads));
    // Laying out the other vectors recomputes every method, PCA included.
    let other_vectors = ["--perplexity", "6", "--vectors", "normalized"];
    let normalized = attnviz_ok(tmp.path(), &args(&run(&other_vectors)));
    assert_eq!(counts(&normalized), (2 * heads, 0));
    assert_eq!(
        counts(&attnviz_ok(tmp.path(), &args(&run(&other_vectors)))),
        (0, 2 * heads)
    );

    // UMAP: every setting it records is compared, its attention share and initial layout included.
    let project = |extra: &[&str]| {
        let mut a = vec!["project", "ds", "--methods", "umap", "--quiet", "--json"];
        a.extend_from_slice(extra);
        counts(&attnviz_ok(tmp.path(), &a))
    };
    assert_eq!(project(&[]), (heads, 0));
    assert_eq!(project(&[]), (0, heads));
    let share = ["--umap-attention-weight", "0.3"];
    assert_eq!(project(&share), (heads, 0), "another attention share");
    assert_eq!(project(&share), (0, heads));
    // The paper's preset with this run's vectors and share differs in the initial layout only.
    let paper_init = [
        "--layout",
        "paper",
        "--vectors",
        "raw",
        "--umap-attention-weight",
        "0.3",
    ];
    assert_eq!(project(&paper_init), (heads, 0), "another initial layout");
}
