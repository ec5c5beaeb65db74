//! End-to-end: nothing stale is trusted and nothing finished is lost (issue 23). A model changed
//! under the same folder name, a projection replaced while the viewer runs, a forced re-projection
//! that fails half-way, resource limits and one-line usage errors.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a panic is the failure report

use std::path::{Path, PathBuf};

use attnviz_tests::{attnviz_fails, attnviz_ok, fixture_model, write_corpus};

const SENTENCES: &[&str] = &[
    "the cat sat on the mat",
    "a dog ran to the park and back",
    "hello world",
    "the quick brown fox jumps over the lazy dog",
];

/// A copy of the fixture model `name` at `dir/<folder>/model` (the same folder name for every copy).
fn copy_model(name: &str, dir: &Path, folder: &str) -> PathBuf {
    let to = dir.join(folder).join("model");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(fixture_model(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}

/// Changes one byte of the last tensor's data in `model/model.safetensors`: the header and size stay
/// as they were, as when weights are scaled in place.
fn change_a_weight(model: &Path) {
    let path = model.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `attnviz run` of `model` on `corpus` laying out one head (L0H0) with PCA, no figures, into `out`
/// (the default --out when `None`), with `extra` flags.
fn one_head_run(model: &Path, corpus: &str, out: Option<&str>, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "run",
        "--model",
        s(model),
        "--corpus",
        corpus,
        "--layers",
        "0",
        "--heads",
        "0",
        "--methods",
        "pca",
        "--no-render",
        "--quiet",
    ];
    if let Some(out) = out {
        args.extend_from_slice(&["--out", out]);
    }
    args.extend_from_slice(extra);
    args.into_iter().map(String::from).collect()
}

/// A model whose weights changed under the same folder name is refused on resume, naming --model
/// and the file that differs; two models sharing a folder name collide in the default --out and are
/// refused, saying to use --out; an identical copy elsewhere is the same model; a dataset made
/// before the record existed is refused.
#[test]
fn a_model_is_known_by_its_files_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path(), SENTENCES);
    let first = copy_model("bert_tiny", tmp.path(), "m1");
    let second = copy_model("bert_tiny", tmp.path(), "m2");
    change_a_weight(&second);
    let run = |model: &Path, out: Option<&str>| one_head_run(model, s(&corpus), out, &[]);

    attnviz_ok(tmp.path(), &refs(&run(&first, Some("ds"))));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("ds/meta.json")).unwrap())
            .unwrap();
    let params = meta["run"]["params"].as_object().unwrap();
    for file in ["model.safetensors", "config.json", "vocab.txt"] {
        let recorded = params[&format!("model_file:{file}")].as_str().unwrap();
        assert!(recorded.contains(" bytes, xxh3:"), "{file}: {recorded}");
    }

    // The same weights in another folder are the same model: resumed.
    let copy = copy_model("bert_tiny", tmp.path(), "elsewhere");
    attnviz_ok(tmp.path(), &refs(&run(&copy, Some("ds"))));
    // Changed weights (same header, same size, same config.json): refused, naming the flag and file.
    let err = attnviz_fails(
        tmp.path(),
        &refs(&run(&second, Some("ds"))),
        &["--model", "model.safetensors:", "there", "new --out"],
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // The default --out is attnviz-data/<folder name>: both models' folders are named `model`.
    attnviz_ok(tmp.path(), &refs(&run(&first, None)));
    assert!(tmp.path().join("attnviz-data/model/meta.json").is_file());
    attnviz_fails(
        tmp.path(),
        &refs(&run(&second, None)),
        &["--model", "--out"],
    );

    // A dataset made before the model's files were recorded cannot tell its model from another.
    let path = tmp.path().join("ds/meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let params = meta["run"]["params"].as_object_mut().unwrap();
    let before = params.len();
    params.retain(|k, _| !k.starts_with("model_file:"));
    assert!(params.len() < before);
    std::fs::write(&path, meta.to_string()).unwrap();
    attnviz_fails(
        tmp.path(),
        &refs(&run(&first, Some("ds"))),
        &["--model", "did not record the model's files", "new --out"],
    );
}

/// `args` as the `&str`s `attnviz_ok` takes.
fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `attnviz run` of bert_tiny on SENTENCES (written to `dir/corpus.txt`) into `dir/<out>`, layer 0
/// (4 heads), no figures, with `extra` flags.
fn bert_run(dir: &Path, out: &str, extra: &[&str]) -> Vec<String> {
    let corpus = write_corpus(dir, SENTENCES);
    let model = fixture_model("bert_tiny");
    let mut args: Vec<String> = [
        "run",
        "--model",
        s(&model),
        "--corpus",
        s(&corpus),
        "--out",
        out,
        "--layers",
        "0",
        "--no-render",
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn json_of(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

const LAYER0: [attn_types::HeadId; 4] = [
    attn_types::HeadId::new(0, 0),
    attn_types::HeadId::new(0, 1),
    attn_types::HeadId::new(0, 2),
    attn_types::HeadId::new(0, 3),
];

/// `project --force` never removes a projection before its successor is whole: a forced
/// re-projection that fails on one corrupt head leaves every head's projection in place, and one
/// killed half-way leaves every head with a whole projection (the old one or the new).
#[test]
fn forced_reprojection_loses_nothing() {
    use attn_types::ProjectionMethod::Tsne;
    let tmp = tempfile::tempdir().unwrap();
    attnviz_ok(
        tmp.path(),
        &refs(&bert_run(tmp.path(), "ds", &["--methods", "tsne"])),
    );
    let ds_dir = tmp.path().join("ds");
    let ds = attn_store::Dataset::open(&ds_dir).unwrap();
    let before: Vec<Vec<u8>> = LAYER0
        .iter()
        .map(|&h| std::fs::read(ds.projection_path(h, Tsne, 2)).unwrap())
        .collect();

    // A forced re-projection of ten million iterations (minutes per head), 1.5 s into its work.
    let start_long_projection = || {
        let child = std::process::Command::new(attnviz_tests::attnviz_bin())
            .args([
                "project",
                "ds",
                "--methods",
                "tsne",
                "--force",
                "--tsne-iterations",
                "10000000",
                "--quiet",
            ])
            .current_dir(tmp.path())
            .env("RAYON_NUM_THREADS", "2")
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        child
    };
    // Killed while it recomputes.
    let mut child = start_long_projection();
    child.kill().unwrap();
    child.wait().unwrap();
    for &h in &LAYER0 {
        let p = ds
            .read_projection(h, Tsne, 2)
            .unwrap_or_else(|e| panic!("{h} after kill -9: {e}"));
        assert_eq!(
            p.spec.params["iterations"], 750.0,
            "{h}: the old projection"
        );
    }

    // Ctrl-C while it recomputes: the fits in progress stop within one of their iterations (before,
    // each ran its ten million to the end: minutes), the command exits 130 at once, and every head
    // keeps its old projection, nothing half-written beside it.
    let mut child = start_long_projection();
    let sent = std::time::Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    eprintln!("project stopped {took:?} after Ctrl-C");
    assert_eq!(status.code(), Some(130), "interrupted");
    // Measured 5 ms (321 s before the fits looked at the flag); 5 s leaves room for a loaded machine.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    for &h in &LAYER0 {
        let p = ds.read_projection(h, Tsne, 2).unwrap();
        assert_eq!(
            p.spec.params["iterations"], 750.0,
            "{h}: the old projection"
        );
        let dir = ds.projection_path(h, Tsne, 2);
        let dir = dir.parent().unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                !name.to_string_lossy().ends_with(".tmp"),
                "{h}: {name:?} left behind"
            );
        }
    }

    // One head's vectors corrupt: the forced run fails, and no head loses its projection.
    let broken = ds.vectors_path(LAYER0[1]);
    std::fs::write(&broken, b"not parquet").unwrap();
    let out = attnviz_tests::attnviz(
        tmp.path(),
        &[
            "project",
            "ds",
            "--methods",
            "tsne",
            "--force",
            "--seed",
            "3",
            "--quiet",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, &h) in LAYER0.iter().enumerate() {
        let path = ds.projection_path(h, Tsne, 2);
        assert!(path.is_file(), "{h}: projection removed");
        let p = ds.read_projection(h, Tsne, 2).unwrap();
        if h == LAYER0[1] {
            assert_eq!(
                std::fs::read(&path).unwrap(),
                before[i],
                "{h}: kept as it was"
            );
        } else {
            assert!(matches!(p.spec.seed, 0 | 3), "{h}: seed {}", p.spec.seed);
        }
    }
}

/// What made each projection is said per projection: after `project --seed 5`, `info` gives seed 5
/// for the re-made layouts and calls the run's seed the extraction's.
#[test]
fn info_says_the_seed_of_each_projection() {
    let tmp = tempfile::tempdir().unwrap();
    attnviz_ok(
        tmp.path(),
        &refs(&bert_run(tmp.path(), "ds", &["--methods", "umap,pca"])),
    );
    attnviz_ok(
        tmp.path(),
        &[
            "project",
            "ds",
            "--methods",
            "umap",
            "--seed",
            "5",
            "--quiet",
        ],
    );
    let info = json_of(&attnviz_ok(tmp.path(), &["info", "ds", "--json"]));
    assert_eq!(info["projection_seeds"]["umap_2d"], serde_json::json!([5]));
    assert_eq!(info["projection_seeds"]["pca_2d"], serde_json::json!([0]));
    assert_eq!(info["meta"]["run"]["seed"], 0);
    let text = attnviz_ok(tmp.path(), &["info", "ds"]);
    assert!(text.contains("umap_2d (4, seed 5)"), "{text}");
    assert!(text.contains("extraction seed 0"), "{text}");
    assert!(
        !text.contains("model_file:"),
        "digests are for resuming, not for reading: {text}"
    );
    assert!(
        !text.contains(", seed 0,") && !text.contains("settings: seed"),
        "{text}"
    );
}

/// Quality numbers stored beside a projection belong to the settings of its spec: another metric
/// recomputes PCA's trustworthiness rather than keeping the one computed under cosine.
#[test]
fn another_metric_recomputes_what_it_changes() {
    use attn_types::ProjectionMethod::Pca;
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &str, extra: &[&str]| {
        let mut flags = vec!["--methods", "pca", "--json"];
        flags.extend_from_slice(extra);
        json_of(&attnviz_ok(
            tmp.path(),
            &refs(&bert_run(tmp.path(), out, &flags)),
        ))
    };
    assert_eq!(run("ds", &[])["projections_computed"], 4);
    assert_eq!(
        run("ds", &[])["projections_reused"],
        4,
        "the same settings reuse"
    );
    let euclid = run("ds", &["--metric", "euclidean"]);
    assert_eq!(euclid["projections_computed"], 4, "{euclid}");
    run("fresh", &["--metric", "euclidean"]);
    let (ds, fresh) = (
        attn_store::Dataset::open(tmp.path().join("ds")).unwrap(),
        attn_store::Dataset::open(tmp.path().join("fresh")).unwrap(),
    );
    for &h in &LAYER0 {
        let (a, b) = (
            ds.read_projection(h, Pca, 2).unwrap(),
            fresh.read_projection(h, Pca, 2).unwrap(),
        );
        assert_eq!(a.spec.params["quality_metric_cosine"], 0.0);
        assert_eq!(
            a.quality, b.quality,
            "{h}: the quality of a fresh euclidean run"
        );
        assert_eq!(a.fidelity, b.fidelity, "{h}");
    }
}

/// A corpus is known by its contents: the same file named another way, from another directory, or
/// an identical copy resume the dataset; a copy with other contents is refused.
#[test]
fn a_corpus_is_known_by_its_contents() {
    let tmp = tempfile::tempdir().unwrap();
    write_corpus(tmp.path(), SENTENCES);
    let model = fixture_model("bert_tiny");
    let run = |cwd: &Path, corpus: &str, out: &str| {
        attnviz_ok(
            cwd,
            &refs(&one_head_run(&model, corpus, Some(out), &["--json"])),
        )
    };
    let first = json_of(&run(tmp.path(), "corpus.txt", "ds"));
    assert_eq!(first["heads_extracted"], 1);
    let sub = tmp.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(tmp.path().join("corpus.txt"), sub.join("copy.txt")).unwrap();
    let absolute = tmp.path().join("corpus.txt");
    for (cwd, corpus, out) in [
        (tmp.path(), "./corpus.txt", "ds"),
        (tmp.path(), s(&absolute), "ds"),
        (sub.as_path(), "../corpus.txt", "../ds"),
        (tmp.path(), "sub/copy.txt", "ds"),
    ] {
        let again = json_of(&run(cwd, corpus, out));
        assert_eq!(
            again["heads_extracted"],
            0,
            "{corpus} from {}",
            cwd.display()
        );
        assert_eq!(again["projections_reused"], 1);
    }
    std::fs::write(sub.join("copy.txt"), "another corpus\naltogether\n").unwrap();
    attnviz_fails(
        tmp.path(),
        &refs(&one_head_run(&model, "sub/copy.txt", Some("ds"), &[])),
        &["new --out"],
    );
}

/// Usage errors are one line naming the flag, exit 2; limits are checked up front; settings clamped
/// to what the data allows are warned about and recorded; `--methods pca,pca` runs PCA once; a
/// shard beyond the heads has nothing to do.
#[test]
fn usage_errors_limits_and_clamps() {
    let tmp = tempfile::tempdir().unwrap();
    let one_line = |args: &[&str], needles: &[&str]| {
        let err = attnviz_fails(tmp.path(), args, needles);
        assert_eq!(err.trim_end().lines().count(), 1, "attnviz {args:?}: {err}");
    };
    // clap's own errors.
    one_line(&["run", "--perplexity", "abc"], &["--perplexity"]);
    one_line(&["run", "--bogus"], &["--bogus"]);
    one_line(
        &["run", "--perplexit", "5"],
        &["--perplexit", "tip:", "'--perplexity'"],
    );
    one_line(&["import", "--queries", "q.npy"], &["--tokens"]);
    one_line(&["project"], &["DATASET"]);
    // Resource limits.
    one_line(
        &["--threads", "100000", "info", "ds"],
        &["--threads 100000"],
    );
    one_line(&["--threads", "0", "info", "ds"], &["--threads 0"]);
    // A negative number is a value, checked as one.
    one_line(
        &[
            "import",
            "--queries",
            "q.npy",
            "--keys",
            "k.npy",
            "--tokens",
            "t.jsonl",
            "--out",
            "x",
            "--softmax-scale",
            "-1",
        ],
        &["--softmax-scale -1", "positive"],
    );
    // --out that cannot be a directory, said in words.
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), tmp.path().join("dangling")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("loop"), tmp.path().join("loop")).unwrap();
    for (out, needle) in [
        ("dangling", "symbolic link"),
        ("loop", "symbolic link"),
        ("/dev/null", "not a directory"),
    ] {
        let args = bert_run(tmp.path(), out, &["--methods", "pca"]);
        let err = attnviz_fails(tmp.path(), &refs(&args), &["--out", needle]);
        assert!(!err.contains("File exists"), "{err}");
    }

    // --methods pca,pca: once; perplexity and neighbours beyond the points: clamped, warned, recorded.
    let args = bert_run(
        tmp.path(),
        "ds",
        &[
            "--heads",
            "0",
            "--methods",
            "pca,pca,tsne,umap",
            "--perplexity",
            "5000",
            "--n-neighbors",
            "100000",
            "--json",
        ],
    );
    let out = attnviz_tests::attnviz(tmp.path(), &refs(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let summary = json_of(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(summary["projections_computed"], 3, "{summary}");
    assert!(stderr.contains("warning: --perplexity 5000"), "{stderr}");
    assert!(stderr.contains("warning: --n-neighbors 100000"), "{stderr}");
    let ds = attn_store::Dataset::open(tmp.path().join("ds")).unwrap();
    let h = attn_types::HeadId::new(0, 0);
    let tsne = ds
        .read_projection(h, attn_types::ProjectionMethod::Tsne, 2)
        .unwrap();
    let points = tsne.coords.rows() as f64;
    assert_eq!(tsne.spec.params["perplexity_requested"], 5000.0);
    assert!(tsne.spec.params["perplexity"] <= (points - 1.0) / 3.0);
    let umap = ds
        .read_projection(h, attn_types::ProjectionMethod::Umap, 2)
        .unwrap();
    assert_eq!(umap.spec.params["n_neighbors_requested"], 100000.0);
    assert_eq!(umap.spec.params["n_neighbors"], points - 1.0);

    // A shard beyond the selection's heads: success, nothing to do, nothing written (no figure
    // drawn either: `extract` and a `run` that renders).
    let mut args = bert_run(tmp.path(), "shard", &["--heads", "0,1", "--shard", "5/10"]);
    for command in ["extract", "run"] {
        args[0] = command.to_string();
        args.retain(|a| a != "--no-render");
        let said = attnviz_ok(tmp.path(), &refs(&args));
        assert!(said.contains("nothing to do"), "{command}: {said}");
        assert!(!tmp.path().join("shard").exists());
    }
}
