//! The browser viewer: `attnviz serve` and `attnviz export-html`.
//!
//! The HTTP checks (path traversal, loopback, bad datasets) run everywhere. The browser tests drive
//! headless Chromium through `tests/browser/viewer.mjs` (playwright-core); they are `#[ignore]`d because
//! they need Debian's chromium and `npm ci` in tests/browser, which `scripts/test.sh` (the README's test
//! command, run by CI) installs before running every test with `--include-ignored`. Screenshots are
//! kept in `<target>/viewer-screenshots/`.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a panic is the failure report

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use attn_store::Dataset;
use attn_types::{
    Architecture, DATA_MODEL_VERSION, DatasetMeta, HeadId, HeadProjection, HeadVectors, Matrix,
    Metric, ModelInfo, ProjectionMethod, ProjectionSpec, RunInfo, TokenMeta, TokenTable,
};
use attnviz_tests::{attnviz_bin, attnviz_ok, fixture_model, repo_root};

const SENTENCES: &str = "the cat sat on the mat\n\
the dog ate the bone quickly\n\
a bird sang in the tree near the river\n\
they said the weather would change soon\n\
the sun is warm today and the sky is blue\n";

/// A running `attnviz serve`, stopped when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(dataset: &Path) -> Server {
        let mut child = Command::new(attnviz_bin())
            .args(["serve", dataset.to_str().unwrap(), "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("attnviz serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in `{line}`"))
            .to_string();
        Server { child, url }
    }

    fn addr(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }

    /// A raw GET (no client-side path normalization), returning status and body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr()).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bert_dataset(dir: &Path) -> PathBuf {
    fixture_dataset(dir, "bert_tiny", &["--methods", "tsne,pca"])
}

/// `attnviz run` of a fixture model on SENTENCES into `dir/ds`, with `extra` flags, no figures.
fn fixture_dataset(dir: &Path, fixture: &str, extra: &[&str]) -> PathBuf {
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, SENTENCES).unwrap();
    let model = fixture_model(fixture);
    let mut args = vec![
        "run",
        "--model",
        model.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        "ds",
        "--quiet",
        "--no-render",
    ];
    args.extend_from_slice(extra);
    attnviz_ok(dir, &args);
    dir.join("ds")
}

fn screenshots(name: &str) -> PathBuf {
    let bin = attnviz_bin();
    bin.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("viewer-screenshots")
        .join(name)
}

/// Runs the browser driver; panics with its error (and where the screenshots are) unless it succeeded.
fn browser(mode: &str, url: &str, shots: &Path, extra: &[&str]) -> serde_json::Value {
    let dir = repo_root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `bash scripts/test.sh` (it runs `npm ci` there and installs chromium)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "{chromium} is missing: `apt-get install chromium` (scripts/test.sh does)"
    );
    let out = Command::new("node")
        .current_dir(&dir)
        .arg("viewer.mjs")
        .args([mode, url, shots.to_str().unwrap()])
        .args(extra)
        .output()
        .expect("node runs (install Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| {
            panic!(
                "browser driver printed no JSON ({e}); stdout: {stdout}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(
        result["ok"],
        true,
        "browser run failed (screenshots in {}): {}",
        shots.display(),
        result["error"]
    );
    assert_eq!(
        result["pageErrors"],
        serde_json::json!([]),
        "the page logged errors"
    );
    result
}

/// The attention weight `a[q][k]` of one sequence of a head, from the stored dataset.
fn attention(ds: &Dataset, head: HeadId, seq: u32) -> Matrix {
    ds.read_attention(head)
        .unwrap()
        .into_iter()
        .find(|s| s.seq_id == seq)
        .unwrap()
        .weights
}

#[test]
fn server_serves_only_the_page_api_and_dataset_files() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = bert_dataset(tmp.path());
    std::fs::write(tmp.path().join("secret.txt"), "not yours").unwrap();
    let server = Server::start(&ds);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "binds loopback by default: {}",
        server.url
    );

    let (status, page) = server.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("<canvas id=\"matrix-canvas\""));
    assert_eq!(
        server.get("/files/meta.json").0,
        200,
        "dataset files are served"
    );
    for path in [
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/heads/../../secret.txt",
        "/files/heads/%2E%2E/%2E%2E/secret.txt",
        "/files//etc/passwd",
        "/files/%2Fetc%2Fpasswd",
        "/../secret.txt",
        "/files/",
        "/files/heads",
        "/app.js/../../secret.txt",
    ] {
        let (status, body) = server.get(path);
        assert_eq!(status, 404, "{path} must not be served: {body}");
        assert!(!body.contains("not yours"));
    }
    // API errors are JSON naming the parameter.
    let (status, body) = server.get("/api/single?method=tsne&dims=2&head=L9H9");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("L9H9"), "{body}");
    let (status, body) = server.get("/api/matrix?method=nope");
    assert_eq!(status, 400);
    assert!(body.contains("method"), "{body}");
    assert_eq!(server.get("/api/unknown").0, 404);
    // The Matrix View frame holds every head's 2n points.
    let (status, body) = server.get("/api/meta");
    assert_eq!(status, 200);
    let meta: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(meta["heads"].as_array().unwrap().len(), 12);
    assert_eq!(meta["model"]["architecture"], "bert");
}

/// A grouped-query, rotary decoder dataset is served: the page, the metadata with the grouping, and
/// the Matrix and Single views.
/// A running server never shows a replaced layout: after `project` re-made the t-SNE projections
/// with another perplexity, `/api/matrix` and `/api/single` answer from the new files (issue 23).
/// Over-long URLs get 414 and are not echoed.
#[test]
fn a_running_server_sees_replaced_projections() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = bert_dataset(tmp.path());
    let server = Server::start(&ds);
    let views = [
        "/api/matrix?method=tsne&dims=2",
        "/api/single?method=tsne&dims=2&head=L1H2",
    ];
    let before: Vec<(u16, String)> = views.iter().map(|v| server.get(v)).collect();
    assert!(before.iter().all(|(status, _)| *status == 200));
    assert!(
        views.map(|v| server.get(v)).to_vec() == before,
        "unchanged files, same views"
    );
    // Another perplexity (another seed need not move t-SNE's points: its initial layout is PCA's).
    attnviz_ok(
        tmp.path(),
        &[
            "project",
            "ds",
            "--methods",
            "tsne",
            "--perplexity",
            "5",
            "--quiet",
        ],
    );
    for (view, (_, old)) in views.iter().zip(&before) {
        let (status, new) = server.get(view);
        assert_eq!(status, 200);
        assert!(&new != old, "{view} still shows the replaced layout");
    }

    let (status, body) = server.get(&format!("/{}", "a".repeat(64 * 1024)));
    assert_eq!(status, 414);
    assert!(body.len() < 300, "{body}");
}

#[test]
fn decoder_dataset_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = fixture_dataset(
        tmp.path(),
        "llama_tiny",
        &["--methods", "pca", "--layers", "1"],
    );
    let server = Server::start(&ds);
    assert_eq!(server.get("/").0, 200);
    let (status, body) = server.get("/api/meta");
    assert_eq!(status, 200, "{body}");
    let meta: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(meta["model"]["architecture"], "llama");
    assert_eq!(meta["model"]["num_key_value_heads"], 2);
    assert_eq!(meta["model"]["rope"], "post");
    assert_eq!(meta["model"]["causal"], true);
    assert_eq!(meta["heads"].as_array().unwrap().len(), 6);
    let (status, body) = server.get("/api/matrix?method=pca&dims=2");
    assert_eq!(status, 200, "{body}");
    assert!(!body.is_empty());
    let (status, body) = server.get("/api/single?method=pca&dims=2&head=L1H4");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn missing_or_corrupt_dataset_is_reported_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dataset");
    let server = Server::start(&missing);
    let (status, body) = server.get("/api/meta");
    assert_eq!(status, 503);
    assert!(
        body.contains("cannot open dataset") && body.contains("no-such-dataset"),
        "{body}"
    );
    assert_eq!(
        server.get("/").0,
        200,
        "the page is still served, to show the error"
    );
    drop(server);

    let corrupt = tmp.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("meta.json"), "{ this is not json").unwrap();
    let server = Server::start(&corrupt);
    let (status, body) = server.get("/api/meta");
    assert_eq!(status, 503);
    assert!(body.contains("meta.json"), "{body}");
    drop(server);

    // A dataset whose token table is damaged opens, but its views answer with the file at fault.
    let ds = bert_dataset(tmp.path());
    std::fs::write(ds.join("tokens.parquet"), b"PAR1 garbage").unwrap();
    let server = Server::start(&ds);
    let (status, body) = server.get("/api/meta");
    assert_eq!(status, 400);
    assert!(body.contains("tokens.parquet"), "{body}");
    assert_eq!(
        server.get("/api/meta").0,
        400,
        "the server still answers after a failed request"
    );
}

#[test]
#[ignore = "needs chromium and tests/browser/node_modules (scripts/test.sh installs both)"]
fn browser_matrix_single_search_and_sentence_views_work() {
    let tmp = tempfile::tempdir().unwrap();
    let ds_dir = bert_dataset(tmp.path());
    let ds = Dataset::open(&ds_dir).unwrap();
    let tokens = ds.read_tokens().unwrap();
    let n = tokens.len();
    let server = Server::start(&ds_dir);
    let shots = screenshots("bert_tiny");
    let r = browser("interact", &server.url, &shots, &["the"]);
    assert_eq!(r["renderer"], "webgl");

    // Every Matrix cell drew its points.
    assert_eq!(r["cells"], 12);
    for (i, ink) in r["cell_ink"].as_array().unwrap().iter().enumerate() {
        assert!(
            ink.as_u64().unwrap() > 20,
            "cell {i} drew almost nothing ({ink} pixels)"
        );
    }
    assert_eq!(r["projections"], serde_json::json!(["pca:2", "tsne:2"]));
    for (i, ink) in r["pca_cell_ink"].as_array().unwrap().iter().enumerate() {
        assert!(
            ink.as_u64().unwrap() > 20,
            "PCA cell {i} drew almost nothing ({ink} pixels)"
        );
    }
    // The search count is what the dataset holds: every token whose text contains "the".
    let expected = tokens
        .tokens
        .iter()
        .filter(|t| {
            attn_viz_core::display_text(&t.text)
                .to_lowercase()
                .contains("the")
        })
        .count();
    assert!(expected > 5);
    assert_eq!(r["search_matched_tokens"], expected);
    assert_eq!(r["search_label"], format!("{expected} tokens match"));
    for m in r["search_points_per_cell"].as_array().unwrap() {
        assert_eq!(
            m.as_u64().unwrap() as usize,
            2 * expected,
            "a query and a key point per match"
        );
    }
    // A click on a cell opened that head.
    let head_name = r["clicked_head"].as_str().unwrap();
    assert!(
        r["single_title"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{head_name} ")),
        "{}",
        r["single_title"]
    );
    assert_eq!(r["single_points"].as_u64().unwrap() as usize, 2 * n);
    assert!(r["single_ink"].as_u64().unwrap() > 20);
    // A click on a query point selected it and drew its top-2 attention lines, with the stored weights.
    let head: HeadId = serde_json::from_value(serde_json::json!({
        "layer": head_name[1..2].parse::<u16>().unwrap(), "head": head_name[3..].parse::<u16>().unwrap()
    }))
    .unwrap();
    let token = r["picked_token"].as_u64().unwrap() as usize;
    assert_eq!(r["selected"]["token"].as_u64().unwrap() as usize, token);
    assert_eq!(r["selected"]["role"], "query");
    let meta = &tokens.tokens[token];
    let a = attention(&ds, head, meta.seq_id);
    let mut row: Vec<f32> = a.row(meta.position as usize).to_vec();
    row.sort_by(|x, y| y.total_cmp(x));
    let lines = r["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 2);
    for (line, want) in lines.iter().zip(&row) {
        let got = line["weight"].as_f64().unwrap() as f32;
        assert!(
            (got - want).abs() < 1e-5,
            "line weight {got}, attention {want}"
        );
    }
    // The Sentence View opened on that sentence with [CLS]/[SEP] hidden and every visible row
    // renormalized: w = a / (1 - hidden mass).
    let s = &r["sentence"];
    assert_eq!(s["seq"].as_str().unwrap(), meta.seq_id.to_string());
    assert_eq!(s["head"].as_str().unwrap(), head_name);
    let last = meta.seq_len - 1;
    let hidden: Vec<u64> = serde_json::from_value(s["hidden"].clone()).unwrap();
    assert_eq!(hidden, vec![0, u64::from(last)]);
    let edges = s["edges"].as_array().unwrap();
    assert!(edges.len() >= 10);
    let mut sums: BTreeMap<u64, f64> = BTreeMap::new();
    for e in edges {
        let (q, k, w) = (
            e["q"].as_u64().unwrap(),
            e["k"].as_u64().unwrap(),
            e["w"].as_f64().unwrap(),
        );
        assert!(
            q != 0 && k != 0 && q != u64::from(last) && k != u64::from(last),
            "edge to a hidden token"
        );
        let row = a.row(q as usize);
        let expected = row[k as usize] / (1.0 - row[0] - row[last as usize]);
        assert!(
            (w as f32 - expected).abs() < 1e-5,
            "edge {q}->{k}: {w} vs renormalized {expected}"
        );
        *sums.entry(q).or_default() += w;
    }
    for (q, sum) in sums {
        assert!((sum - 1.0).abs() < 1e-4, "visible row {q} sums to {sum}");
    }
    assert!(
        r["resized_single_ink"].as_u64().unwrap() > 20,
        "drawn again after a resize"
    );
    // The URL alone restores the view.
    assert_eq!(r["restored"]["title"], r["single_title"]);
    assert_eq!(r["restored"]["selected"], r["selected"]);
    assert!(
        r["hash"]
            .as_str()
            .unwrap()
            .contains(&format!("head={head_name}"))
    );
    let next = format!("L{}H{} ", head.layer, head.head + 1);
    assert!(
        r["after_arrow"].as_str().unwrap().starts_with(&next),
        "ArrowRight opens the next head: {}",
        r["after_arrow"]
    );
    assert_eq!(r["similarity_heads"], 12);
    let clicked = r["similarity_clicked"].as_str().unwrap();
    assert!(
        r["similarity_opened"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{clicked} ")),
        "a click on a head opens it"
    );
    for shot in [
        "matrix",
        "search",
        "single",
        "single_selected",
        "similarity",
    ] {
        assert!(
            shots.join(format!("{shot}.png")).is_file(),
            "screenshot {shot}"
        );
    }
}

#[test]
#[ignore = "needs chromium and tests/browser/node_modules (scripts/test.sh installs both)"]
fn browser_image_view_follows_clicks_on_patches() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model("vit16_tiny");
    attnviz_ok(
        tmp.path(),
        &[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--max-sequences",
            "2",
            "--out",
            "vds",
            "--quiet",
            "--methods",
            "pca",
            "--no-render",
        ],
    );
    let ds = Dataset::open(tmp.path().join("vds")).unwrap();
    let side = ds.meta().model.image.unwrap().grid_side() as usize;
    let tokens = ds.read_tokens().unwrap();
    let server = Server::start(&tmp.path().join("vds"));
    let r = browser("image", &server.url, &screenshots("vit16_tiny"), &[]);
    assert!(
        r["image_ink"].as_u64().unwrap() > 1000,
        "the picture is drawn"
    );
    let head = HeadId::new(1, 1);
    for (view, row, col) in [
        (&r["default_image"], side / 2, side / 2),
        (&r["clicked_image"], 0, 0),
    ] {
        assert_eq!(
            view["selected"]["patch"],
            serde_json::json!({ "row": row, "col": col })
        );
        let heat = view["heatmap"].as_array().unwrap();
        assert_eq!(heat.len(), side * side, "one heat cell per patch");
        // The heat of each patch is the selected query's attention to it, as stored.
        let seq = view["seq_id"].as_u64().unwrap() as u32;
        let token = tokens
            .tokens
            .iter()
            .find(|t| {
                t.seq_id == seq
                    && t.patch
                        .is_some_and(|p| usize::from(p.row) == row && usize::from(p.col) == col)
            })
            .unwrap();
        let a = attention(&ds, head, seq);
        for cell in heat {
            let key = tokens.tokens[cell["token"].as_u64().unwrap() as usize].position as usize;
            let want = a.row(token.position as usize)[key];
            assert!((cell["weight"].as_f64().unwrap() as f32 - want).abs() < 1e-5);
        }
    }
}

#[test]
#[ignore = "needs chromium and tests/browser/node_modules (scripts/test.sh installs both)"]
fn browser_without_webgl_draws_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = bert_dataset(tmp.path());
    let server = Server::start(&ds);
    let r = browser(
        "interact-nowebgl",
        &server.url,
        &screenshots("bert_tiny_nowebgl"),
        &["the"],
    );
    assert_eq!(r["renderer"], "canvas2d");
    assert_eq!(r["cells"], 12);
    for (i, ink) in r["cell_ink"].as_array().unwrap().iter().enumerate() {
        assert!(
            ink.as_u64().unwrap() > 20,
            "cell {i} drew almost nothing ({ink} pixels)"
        );
    }
    assert!(r["single_ink"].as_u64().unwrap() > 20);
    assert_eq!(
        r["selected"]["role"], "query",
        "points are picked the same way"
    );
}

#[test]
#[ignore = "needs chromium and tests/browser/node_modules (scripts/test.sh installs both)"]
fn browser_shows_a_clear_page_for_a_missing_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("gone"));
    let r = browser("error", &server.url, &screenshots("missing"), &[]);
    let notice = r["notice"].as_str().unwrap();
    assert!(
        notice.contains("cannot open dataset") && notice.contains("gone"),
        "{notice}"
    );
}

#[test]
#[ignore = "needs chromium and tests/browser/node_modules (scripts/test.sh installs both)"]
fn exported_html_works_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = bert_dataset(tmp.path());
    let file = tmp.path().join("viewer.html");
    attnviz_ok(
        tmp.path(),
        &[
            "export-html",
            ds.to_str().unwrap(),
            "-o",
            file.to_str().unwrap(),
            "--projection",
            "tsne:2",
            "--sequences",
            "2",
        ],
    );
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(
        html.contains("attnviz-embed") && !html.contains("src=\"app.js\""),
        "self-contained"
    );
    let url = format!("file://{}", file.display());
    let r = browser("offline", &url, &screenshots("export"), &[]);
    assert_eq!(r["cells"], 12);
    assert!(
        r["cell_ink"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_u64().unwrap() > 20)
    );
    assert_eq!(
        r["search_disabled"], true,
        "search needs the server, and says so"
    );
    assert!(r["notice"].as_str().unwrap().contains("attnviz serve"));
    let head = r["clicked_head"].as_str().unwrap();
    assert!(r["single_title"].as_str().unwrap().starts_with(head));
    assert!(r["sentence_edges"].as_u64().unwrap() > 5);
    assert_eq!(
        r["sequence_choices"], 2,
        "only the embedded sequences are offered"
    );
}

/// A synthetic dataset of `layers x heads` heads with `n` tokens each (random 2D t-SNE-like layouts; no
/// attention), written with attn-store the way the pipeline writes one.
fn synthetic_dataset(dir: &Path, layers: u16, heads: u16, n: usize) {
    let seq_len = 20usize;
    let tokens = TokenTable {
        tokens: (0..n)
            .map(|i| TokenMeta {
                seq_id: (i / seq_len) as u32,
                position: (i % seq_len) as u32,
                seq_len: seq_len.min(n - i / seq_len * seq_len) as u32,
                text: format!("w{}", i % 97),
                is_special: false,
                patch: None,
                is_cls: false,
                offsets: None,
            })
            .collect(),
    };
    let meta = DatasetMeta {
        schema_version: DATA_MODEL_VERSION,
        model: ModelInfo {
            id: "synthetic".into(),
            architecture: Architecture::Bert,
            num_layers: layers,
            num_heads: heads,
            head_dim: 4,
            hidden_size: 4 * u32::from(heads),
            max_positions: 512,
            image: None,
            config: serde_json::json!({}),
            num_key_value_heads: None,
            rope: None,
        },
        run: RunInfo {
            corpus: "synthetic".into(),
            num_sequences: n.div_ceil(seq_len) as u32,
            num_tokens: n as u64,
            seed: 0,
            params: BTreeMap::new(),
            crate_versions: BTreeMap::new(),
            created_at: "2026-11-22T00:00:00Z".into(),
        },
    };
    let ds = Dataset::create(dir, &meta).unwrap();
    ds.write_tokens(&tokens).unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut rand = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    for head in HeadId::all(layers, heads) {
        let mut m = |rows: usize, cols: usize| {
            Matrix::from_vec(rows, cols, (0..rows * cols).map(|_| rand()).collect()).unwrap()
        };
        ds.write_head(&HeadVectors::new(head, m(n, 4), m(n, 4)).unwrap(), None)
            .unwrap();
        let coords = m(2 * n, 2);
        let spec = ProjectionSpec {
            method: ProjectionMethod::Tsne,
            dims: 2,
            metric: Metric::Cosine,
            seed: 0,
            params: BTreeMap::new(),
        };
        ds.write_projection(&HeadProjection {
            head,
            spec,
            coords,
            objective: None,
            quality: None,
            fidelity: None,
            ceiling: None,
        })
        .unwrap();
    }
}

#[test]
#[ignore = "needs chromium and tests/browser/node_modules (scripts/test.sh installs both)"]
fn browser_loads_144_heads_of_10k_points() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tmp.path().join("big");
    synthetic_dataset(&ds, 12, 12, 10_000);
    let server = Server::start(&ds);
    let r = browser("load", &server.url, &screenshots("load_144x10k"), &[]);
    assert_eq!(r["cells"], 144);
    assert_eq!(r["points"], 144 * 20_000);
    // Recorded, not asserted: the README quotes it.
    eprintln!(
        "viewer: 144 heads x 10k tokens (2.88M points) drawn {} ms after navigation; stages {}",
        r["load_ms"], r["loads"]
    );
}
