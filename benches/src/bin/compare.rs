//! Peer comparison: attnviz's t-SNE, UMAP and PCA against bhtsne (in-process), openTSNE, umap-learn and
//! scikit-learn (Python, through `benches/peers/run_peers.py`), on the same seeded data, every
//! embedding scored by one evaluator (`attn_project::metrics::quality`, k = 10).
//!
//! ```text
//! cargo run -p attnviz-benches --bin compare -- --sizes 1000,10000 --out target/compare
//! ```
//!
//! Options: `--sizes N,N` (default 1000,10000), `--out DIR` (default target/compare), `--datasets
//! mixture,manifold`, `--dims 2,3`, `--threads 2`, `--seed 0`, `--skip tool,tool` (attnviz-tsne,
//! attnviz-umap, attnviz-pca, bhtsne-bh, bhtsne-fitsne, python, umap-learn, umap-learn-parallel,
//! opentsne, sklearn-pca, sklearn-tsne), `--python PATH` (skip the venv setup), `--sklearn-tsne-max-n N`
//! (default 1000: scikit-learn's t-SNE takes minutes above that).
//! Writes `DIR/results.md` and `DIR/results.json` (with the machine, its load and the versions).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use attn_project::pca::Pca;
use attn_project::tsne::Tsne;
use attn_project::umap::Umap;
use attn_project::{Embedding, metrics};
use attn_types::{Matrix, Metric};
use attnviz_benches::{DatasetKind, last_line_of, read_npy, write_npy};

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    sizes: Vec<usize>,
    out: PathBuf,
    datasets: Vec<DatasetKind>,
    dims: Vec<u8>,
    threads: usize,
    seed: u64,
    skip: Vec<String>,
    python: Option<String>,
    sklearn_tsne_max_n: usize,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        sizes: vec![1000, 10000],
        out: PathBuf::from("target/compare"),
        datasets: vec![DatasetKind::Mixture, DatasetKind::Manifold],
        dims: vec![2, 3],
        threads: 2,
        seed: 0,
        skip: Vec::new(),
        python: None,
        sklearn_tsne_max_n: 1000,
    };
    let list = |s: &str| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => {
                a.sizes = list(&val()?)
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?
            }
            "--out" => a.out = PathBuf::from(val()?),
            "--datasets" => {
                a.datasets = list(&val()?)
                    .iter()
                    .map(|s| DatasetKind::parse(s).ok_or_else(|| format!("unknown dataset `{s}`")))
                    .collect::<Result<_, _>>()?
            }
            "--dims" => {
                a.dims = list(&val()?)
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?
            }
            "--threads" => a.threads = val()?.parse()?,
            "--seed" => a.seed = val()?.parse()?,
            "--skip" => a.skip = list(&val()?),
            "--python" => a.python = Some(val()?),
            "--sklearn-tsne-max-n" => a.sklearn_tsne_max_n = val()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("compare.rs")
                        .lines()
                        .take(15)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown option `{other}` (see --help)").into()),
        }
    }
    Ok(a)
}

/// One embedding and how it was made.
#[derive(Debug, Clone)]
struct Row {
    dataset: &'static str,
    n: usize,
    method: String,
    dims: u8,
    tool: String,
    time_s: f64,
    note: String,
    file: PathBuf,
    trust: Option<f32>,
    recall: Option<f32>,
}

fn log(msg: &str) {
    eprintln!("[compare] {msg}");
}

fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_secs_f64(), r)
}

fn main() -> Res<()> {
    // Recorded first: the load at the start is the one the timings ran under.
    let machine = attnviz_benches::machine_record();
    let command = std::iter::once("compare".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let args = parse_args()?;
    // Every in-process tool (ours and bhtsne) runs on rayon's global pool, pinned here.
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()?;
    let emb_dir = args.out.join("emb");
    std::fs::create_dir_all(&emb_dir)?;
    let skip = |t: &str| args.skip.iter().any(|s| s == t);

    let mut rows: Vec<Row> = Vec::new();
    let mut data: BTreeMap<(&'static str, usize), (Matrix, Metric, PathBuf)> = BTreeMap::new();
    for &kind in &args.datasets {
        for &n in &args.sizes {
            let (m, _) = kind.generate(n, args.seed);
            let file = args.out.join(format!("{}_{n}.npy", kind.name()));
            write_npy(&file, &m)?;
            data.insert((kind.name(), n), (m, kind.metric(), file));
        }
    }

    for (&(name, n), (x, metric, _)) in &data {
        let metric = *metric;
        for &dims in &args.dims {
            let mut ours = |method: &str,
                            note: &str,
                            f: &dyn Fn() -> Result<Embedding, attn_project::ProjectError>|
             -> Res<()> {
                log(&format!("attnviz {method}{dims}d {name} n={n}"));
                let (secs, e) = timed(f);
                let e = e?;
                let file = emb_dir.join(format!("{name}_{n}__{method}{dims}d__attnviz.npy"));
                write_npy(&file, &e.coords)?;
                rows.push(row(name, n, method, dims, "attnviz", secs, note, file));
                Ok(())
            };
            if !skip("attnviz-pca") {
                let p = Pca::params().dims(dims).metric(metric).check()?;
                ours("pca", "", &|| p.fit(x))?;
            }
            if !skip("attnviz-umap") {
                let p = Umap::params()
                    .dims(dims)
                    .metric(metric)
                    .seed(args.seed)
                    .check()?;
                ours("umap", "deterministic", &|| p.fit(x))?;
            }
            if !skip("attnviz-tsne") {
                let p = Tsne::params()
                    .dims(dims)
                    .metric(metric)
                    .seed(args.seed)
                    .check()?;
                ours("tsne", "auto repulsion", &|| p.fit(x))?;
            }
            if !skip("bhtsne-bh") {
                log(&format!("bhtsne barnes-hut {dims}d {name} n={n}"));
                let (secs, e) = timed(|| bhtsne_fit(x, metric, dims, false));
                if let Some(e) = e {
                    let file = emb_dir.join(format!("{name}_{n}__tsne{dims}d__bhtsne-bh.npy"));
                    write_npy(&file, &e)?;
                    rows.push(row(
                        name,
                        n,
                        "tsne",
                        dims,
                        "bhtsne-bh",
                        secs,
                        bhtsne_note(metric),
                        file,
                    ));
                }
            }
            if !skip("bhtsne-fitsne") && dims == 2 {
                log(&format!("bhtsne fit-sne {dims}d {name} n={n}"));
                let (secs, e) = timed(|| bhtsne_fit(x, metric, dims, true));
                if let Some(e) = e {
                    let file = emb_dir.join(format!("{name}_{n}__tsne{dims}d__bhtsne-fitsne.npy"));
                    write_npy(&file, &e)?;
                    rows.push(row(
                        name,
                        n,
                        "tsne",
                        dims,
                        "bhtsne-fitsne",
                        secs,
                        bhtsne_note(metric),
                        file,
                    ));
                }
            }
        }
    }

    if !skip("python") {
        match run_python(&args, &data, &emb_dir) {
            Ok(mut peer_rows) => rows.append(&mut peer_rows),
            Err(e) => log(&format!("Python peers skipped: {e}")),
        }
    }

    log(&format!(
        "scoring {} embeddings (trustworthiness@10, recall@10)",
        rows.len()
    ));
    for r in rows.iter_mut() {
        let Some((x, metric, _)) = data.get(&(r.dataset, r.n)) else {
            continue;
        };
        match read_npy(&r.file)
            .map_err(|e| e.to_string())
            .and_then(|e| metrics::quality(x, &e, 10, *metric).map_err(|e| e.to_string()))
        {
            Ok(q) => {
                r.trust = Some(q.trustworthiness);
                r.recall = Some(q.knn_recall);
            }
            Err(e) => log(&format!("cannot score {}: {e}", r.file.display())),
        }
    }

    let table = markdown(&rows, &args);
    println!("{table}");
    let header = format!(
        "Command: `{command}`\n\nMachine: {}.\n\n",
        attnviz_benches::machine_line(&machine)
    );
    std::fs::write(args.out.join("results.md"), format!("{header}{table}"))?;
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "dataset": r.dataset, "n": r.n, "method": r.method, "dims": r.dims, "tool": r.tool,
                "time_s": r.time_s, "note": r.note, "trustworthiness_10": r.trust, "recall_10": r.recall,
            })
        })
        .collect();
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "machine": machine, "command": command, "results": json,
        }))?,
    )?;
    log(&format!("wrote {}", args.out.join("results.md").display()));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn row(
    dataset: &'static str,
    n: usize,
    method: &str,
    dims: u8,
    tool: &str,
    time_s: f64,
    note: &str,
    file: PathBuf,
) -> Row {
    Row {
        dataset,
        n,
        method: method.into(),
        dims,
        tool: tool.into(),
        time_s,
        note: note.into(),
        file,
        trust: None,
        recall: None,
    }
}

fn bhtsne_note(metric: Metric) -> &'static str {
    match metric {
        // bhtsne needs a true metric for its vantage-point tree; Euclidean distance of unit vectors
        // ranks neighbours exactly as cosine distance does.
        Metric::Cosine => "unit rows + euclidean",
        Metric::Euclidean => "",
    }
}

/// bhtsne 0.7.13 with our t-SNE's schedule (perplexity 30, 750 epochs, exaggeration 12 for 250).
/// Barnes-Hut (theta 0.5) in 2D/3D, or its FIt-SNE interpolation path (2D only).
fn bhtsne_fit(x: &Matrix, metric: Metric, dims: u8, fitsne: bool) -> Option<Matrix> {
    let rows: Vec<Vec<f32>> = x
        .iter_rows()
        .map(|r| match metric {
            Metric::Cosine => {
                let nrm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
                r.iter()
                    .map(|v| if nrm > 0.0 { v / nrm } else { 0.0 })
                    .collect()
            }
            Metric::Euclidean => r.to_vec(),
        })
        .collect();
    let samples: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let dist = |a: &&[f32], b: &&[f32]| {
        a.iter()
            .zip(b.iter())
            .map(|(p, q)| (p - q) * (p - q))
            .sum::<f32>()
            .sqrt()
    };
    let n = x.rows();
    let emb = match (dims, fitsne) {
        (2, false) => bhtsne::tSNE::<f32, &[f32], 2>::new(&samples)
            .perplexity(30.0)
            .epochs(750)
            .barnes_hut(0.5, dist)
            .embedding(),
        (2, true) => bhtsne::tSNE::<f32, &[f32], 2>::new(&samples)
            .perplexity(30.0)
            .epochs(750)
            .fit_sne(dist)
            .embedding(),
        (3, false) => bhtsne::tSNE::<f32, &[f32], 3>::new(&samples)
            .perplexity(30.0)
            .epochs(750)
            .barnes_hut(0.5, dist)
            .embedding(),
        _ => return None,
    };
    Matrix::from_vec(n, dims as usize, emb).ok()
}

/// Sets up the Python venv (idempotent) and runs the peers on the written `.npy` files.
fn run_python(
    args: &Args,
    data: &BTreeMap<(&'static str, usize), (Matrix, Metric, PathBuf)>,
    emb_dir: &Path,
) -> Res<Vec<Row>> {
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let python = match &args.python {
        Some(p) => p.clone(),
        None => {
            log("setting up the peer venv (benches/peers/setup.sh; first run takes a few minutes)");
            let setup = peers.join("setup.sh");
            last_line_of(Command::new("bash").arg(&setup), &setup)?
        }
    };
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let datasets: Vec<serde_json::Value> = data
        .iter()
        .map(|(&(name, n), (_, metric, file))| {
            serde_json::json!({
                "name": name, "n": n, "file": abs(file),
                "metric": match metric { Metric::Cosine => "cosine", Metric::Euclidean => "euclidean" },
                "seed": args.seed,
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "out": abs(emb_dir), "threads": args.threads, "dims": args.dims, "skip": args.skip, "datasets": datasets,
        "sklearn_tsne_max_n": args.sklearn_tsne_max_n,
    });
    let mpath = args.out.join("peers_manifest.json");
    std::fs::write(&mpath, serde_json::to_string_pretty(&manifest)?)?;
    let t = args.threads.to_string();
    log(&format!("running Python peers with {python}"));
    let status = Command::new(&python)
        .arg(peers.join("run_peers.py"))
        .arg(&mpath)
        .env("OMP_NUM_THREADS", &t)
        .env("NUMBA_NUM_THREADS", &t)
        .env("OPENBLAS_NUM_THREADS", &t)
        .env("MKL_NUM_THREADS", &t)
        .status()?;
    if !status.success() {
        log(&format!(
            "run_peers.py exited with {status}; keeping the timings it wrote"
        ));
    }
    let timings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(emb_dir.join("peer_timings.json"))?)?;
    let mut rows = Vec::new();
    for r in timings.as_array().into_iter().flatten() {
        let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let n = r.get("n").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let Some(&(name, _)) = data.keys().find(|(nm, nn)| *nm == s("dataset") && *nn == n) else {
            continue;
        };
        rows.push(Row {
            dataset: name,
            n,
            method: s("method"),
            dims: r.get("dims").and_then(|v| v.as_u64()).unwrap_or(0) as u8,
            tool: s("tool"),
            time_s: r.get("time_s").and_then(|v| v.as_f64()).unwrap_or(f64::NAN),
            note: s("note"),
            file: emb_dir.join(s("file")),
            trust: None,
            recall: None,
        });
    }
    Ok(rows)
}

fn markdown(rows: &[Row], args: &Args) -> String {
    let mut s = format!(
        "Threads: {} (rayon pool; OMP/NUMBA/OPENBLAS/MKL_NUM_THREADS for Python). Seed {}. Metric: cosine for mixture, euclidean for manifold. ratio = tool time / attnviz time (same method, dims; > 1 means attnviz is faster).\n\n",
        args.threads, args.seed
    );
    s.push_str("| dataset | n | method | tool | time (s) | ratio tool/ours | trust@10 | recall@10 | note |\n");
    s.push_str("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |\n");
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        (
            a.dataset,
            a.n,
            &a.method,
            a.dims,
            a.tool != "attnviz",
            &a.tool,
        )
            .cmp(&(
                b.dataset,
                b.n,
                &b.method,
                b.dims,
                b.tool != "attnviz",
                &b.tool,
            ))
    });
    let f = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for r in sorted {
        let ours = rows.iter().find(|o| {
            o.tool == "attnviz"
                && o.dataset == r.dataset
                && o.n == r.n
                && o.method == r.method
                && o.dims == r.dims
        });
        let ratio = ours.map_or("-".to_string(), |o| format!("{:.2}", r.time_s / o.time_s));
        s.push_str(&format!(
            "| {} | {} | {} {}D | {} | {:.2} | {} | {} | {} | {} |\n",
            r.dataset,
            r.n,
            r.method,
            r.dims,
            r.tool,
            r.time_s,
            ratio,
            f(r.trust),
            f(r.recall),
            r.note
        ));
    }
    s
}
