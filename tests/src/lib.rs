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
