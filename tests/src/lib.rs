//! Helpers of the end-to-end tests in `tests/tests/`: they drive the real `attnviz` binary.
//!
//! The binary is taken from the target directory these tests were built into (`cargo test --workspace`
//! builds it, since `attn-cli` has integration tests of its own).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `attnviz` binary next to this test executable's `deps/` folder.
pub fn attnviz_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in <target>/<profile>/deps");
    let bin = profile_dir.join(format!("attnviz{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p attn-cli` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    // At run time first: `cargo test` sets it for the checkout being tested, while the compile-time
    // value may name another checkout that shares the target directory.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// A tiny random-weight fixture model (`bert_tiny`, `gpt2_tiny`, `vit16_tiny`, `vit32_tiny`).
pub fn fixture_model(name: &str) -> PathBuf {
    repo_root().join("attn-extract/tests/fixtures").join(name)
}

/// The arguments of `attnviz run --model MODEL --corpus CORPUS --out OUT`, then `extra`.
pub fn run_args<'a>(
    model: &'a Path,
    corpus: &'a Path,
    out: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let path = |p: &'a Path| p.to_str().expect("a UTF-8 path");
    let mut args = vec![
        "run",
        "--model",
        path(model),
        "--corpus",
        path(corpus),
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

/// Removes the run parameter `key` from the `meta.json` of the dataset at `dir` (what a dataset made
/// before that record existed looks like); returns the file's earlier text, to restore it.
pub fn remove_run_param(dir: &Path, key: &str) -> String {
    let path = dir.join("meta.json");
    let recorded = std::fs::read_to_string(&path).expect("meta.json");
    let mut meta: serde_json::Value = serde_json::from_str(&recorded).expect("meta.json is JSON");
    let removed = meta["run"]["params"]
        .as_object_mut()
        .expect("run.params")
        .remove(key);
    assert!(
        removed.is_some(),
        "{}: no run parameter {key}",
        path.display()
    );
    std::fs::write(&path, meta.to_string()).expect("meta.json written");
    recorded
}

/// Runs `attnviz` with `args` in `cwd`, returning its output.
pub fn attnviz(cwd: &Path, args: &[&str]) -> Output {
    Command::new(attnviz_bin())
        .args(args)
        .current_dir(cwd)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("attnviz runs")
}

/// Runs `attnviz` and asserts success, returning stdout.
pub fn attnviz_ok(cwd: &Path, args: &[&str]) -> String {
    let out = attnviz(cwd, args);
    assert!(
        out.status.success(),
        "attnviz {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `attnviz`, asserts exit code 2 and a one-line error mentioning every `needle`, and returns
/// stderr.
pub fn attnviz_fails(cwd: &Path, args: &[&str], needles: &[&str]) -> String {
    let out = attnviz(cwd, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "attnviz {args:?}: expected exit 2, stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "attnviz {args:?} panicked: {stderr}"
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "attnviz {args:?}: stderr does not mention `{n}`: {stderr}"
        );
    }
    stderr
}

/// Width and height of a PNG file, read from its header; panics if it is not a PNG.
pub fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

/// Modification times of every file below `dir`, by path.
pub fn mtimes(dir: &Path) -> std::collections::BTreeMap<PathBuf, std::time::SystemTime> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.clone(),
                    std::fs::metadata(&p)
                        .and_then(|m| m.modified())
                        .expect("mtime"),
                );
            }
        }
    }
    out
}

/// Writes a small text corpus and returns its path.
pub fn write_corpus(dir: &Path, lines: &[&str]) -> PathBuf {
    let p = dir.join("corpus.txt");
    std::fs::write(&p, lines.join("\n")).expect("write corpus");
    p
}

/// Neighbour ranks of a point set in input space, for trustworthiness (Venna & Kaski 2001, as
/// scikit-learn and `attn_project::metrics` define it) of any number of layouts of the same points.
pub struct InputRanks {
    n: usize,
    /// `rank[i * n + j]`: 1-based rank of `j` among `i`'s neighbours by (distance, index); 0 for `j == i`.
    rank: Vec<u32>,
}

impl InputRanks {
    /// Ranks the `n = data.len() / dim` rows of `data` by cosine distance (`cosine`) or Euclidean.
    pub fn new(data: &[f32], dim: usize, cosine: bool) -> Self {
        assert!(
            dim > 0 && data.len().is_multiple_of(dim),
            "data is not n x {dim}"
        );
        let n = data.len() / dim;
        let rows: Vec<Vec<f64>> = data
            .chunks_exact(dim)
            .map(|r| {
                let r: Vec<f64> = r.iter().map(|&v| f64::from(v)).collect();
                let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
                if cosine && norm > 0.0 {
                    r.iter().map(|v| v / norm).collect()
                } else {
                    r
                }
            })
            .collect();
        let dist = |a: &[f64], b: &[f64]| -> f64 {
            if cosine {
                (1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>()).max(0.0)
            } else {
                a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>()
            }
        };
        let mut rank = vec![0u32; n * n];
        let mut order: Vec<(f64, usize)> = Vec::with_capacity(n);
        for i in 0..n {
            order.clear();
            order.extend(
                (0..n)
                    .filter(|&j| j != i)
                    .map(|j| (dist(&rows[i], &rows[j]), j)),
            );
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (r, &(_, j)) in order.iter().enumerate() {
                rank[i * n + j] = r as u32 + 1;
            }
        }
        Self { n, rank }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Trustworthiness at `k` (`1 <= k < n / 2`) of the layout `coords` (`n` rows of `dims`
    /// coordinates, Euclidean), exact over every point.
    pub fn trustworthiness(&self, coords: &[f32], dims: usize, k: usize) -> f64 {
        let n = self.n;
        assert_eq!(coords.len(), n * dims, "layout is not {n} x {dims}");
        assert!(k >= 1 && 2 * k < n, "k = {k} out of range for n = {n}");
        let mut sum = 0u64;
        let mut order: Vec<(f64, usize)> = Vec::with_capacity(n);
        for i in 0..n {
            let ci = &coords[i * dims..(i + 1) * dims];
            order.clear();
            order.extend((0..n).filter(|&j| j != i).map(|j| {
                let cj = &coords[j * dims..(j + 1) * dims];
                let d: f64 = ci
                    .iter()
                    .zip(cj)
                    .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                    .sum();
                (d, j)
            }));
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, j) in &order[..k] {
                let r = u64::from(self.rank[i * n + j]);
                sum += r.saturating_sub(k as u64);
            }
        }
        let (n, k) = (n as f64, k as f64);
        1.0 - 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)) * sum as f64
    }
}

/// `coords` (`dims` columns) with its rows in a seeded random order: a layout that keeps the
/// coordinate values but none of the neighbourhoods, the baseline trustworthiness is compared with.
pub fn shuffled_rows(coords: &[f32], dims: usize, seed: u64) -> Vec<f32> {
    let n = coords.len() / dims;
    let mut perm: Vec<usize> = (0..n).collect();
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = ((s >> 33) % (i as u64 + 1)) as usize;
        perm.swap(i, j);
    }
    perm.iter()
        .flat_map(|&p| coords[p * dims..(p + 1) * dims].iter().copied())
        .collect()
}

/// Checks a stored trustworthiness `stored` at `k` of the layout `coords` (`dims` columns): it is what
/// [`InputRanks::trustworthiness`] computes independently, it reaches `bound`, and the same
/// coordinates in shuffled order (random layouts of the same points, three seeds) all stay below
/// `bound`, so the bound tells a layout from noise.
pub fn check_trustworthiness(
    ranks: &InputRanks,
    coords: &[f32],
    dims: usize,
    stored: f32,
    k: usize,
    bound: f64,
    what: &str,
) {
    let stored = f64::from(stored);
    let mine = ranks.trustworthiness(coords, dims, k);
    let random = (0..3)
        .map(|seed| ranks.trustworthiness(&shuffled_rows(coords, dims, seed), dims, k))
        .fold(f64::NEG_INFINITY, f64::max);
    // f32 and f64 cosine distances may order near ties differently: measured up to 4.0e-6 on the
    // fixtures (one rank at n = 166) and 2.2e-5 on MiniLM (L1H3 PCA, n = 834).
    assert!(
        (stored - mine).abs() < 1e-4,
        "{what}: stored trustworthiness {stored}, recomputed {mine}"
    );
    assert!(
        stored >= bound,
        "{what}: trustworthiness {stored} below {bound}"
    );
    assert!(
        random < bound,
        "{what}: a shuffled layout reaches {random}: the bound {bound} does not tell it from noise"
    );
}
