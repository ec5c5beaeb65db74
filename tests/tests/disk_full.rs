//! A full disk: one line naming the file that could not be written, exit code 2, no temporary file
//! left behind, the files finished before it kept (a re-run with space resumes from them), and a
//! rendering that fails still prints the per-head summary.
//!
//! The disk is a small tmpfs mounted in a private mount namespace (`unshare --map-root-user
//! --mount`, util-linux), so the test needs neither root nor a real full disk; everything that
//! looks at the mount runs inside that namespace, in one shell script.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use attnviz_tests::{attnviz_bin, attnviz_ok, fixture_model, write_corpus};

const SENTENCES: &[&str] = &[
    "the cat sat on the mat",
    "a dog ran to the park and back",
    "hello world again",
];

/// What one run on a tmpfs of `kb` KiB left: exit code, stdout, stderr, the temporary files found
/// after it, `info --json` of the dataset, and the summary of a re-run after the tmpfs was grown.
struct FullRun {
    rc: i32,
    stdout: String,
    stderr: String,
    temp_files: String,
    info: String,
    rerun: String,
}

fn run_on_tmpfs(work: &Path, kb: u64, run_args: &str) -> FullRun {
    let mount = work.join(format!("mnt{kb}"));
    let out = work.join(format!("out{kb}"));
    std::fs::create_dir_all(&mount).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let script = format!(
        r#"set -u
mount -t tmpfs -o size={kb}k tmpfs "$M" || exit 99
"$BIN" {run_args} --out "$M/ds" >"$O/stdout" 2>"$O/stderr"
echo $? >"$O/rc"
find "$M" -name '*.tmp' >"$O/temp_files"
"$BIN" info "$M/ds" --json >"$O/info" 2>&1
mount -o remount,size=8m "$M" || exit 98
"$BIN" {run_args} --out "$M/ds" >"$O/rerun" 2>&1
"#
    );
    let status = Command::new("unshare")
        .args(["--map-root-user", "--mount", "sh", "-c", &script])
        .env("M", &mount)
        .env("O", &out)
        .env("BIN", attnviz_bin())
        .env("RAYON_NUM_THREADS", "2")
        .current_dir(work)
        .status()
        .expect("unshare (util-linux) runs");
    assert!(
        status.success(),
        "the tmpfs script failed with {status} (99: mounting a tmpfs in a user namespace is not allowed here)"
    );
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    FullRun {
        rc: read("rc").trim().parse().unwrap(),
        stdout: read("stdout"),
        stderr: read("stderr"),
        temp_files: read("temp_files"),
        info: read("info"),
        rerun: read("rerun"),
    }
}

/// The memory page size (a tmpfs allocates whole pages per file).
fn page_size() -> u64 {
    let out = Command::new("getconf")
        .arg("PAGESIZE")
        .output()
        .expect("getconf runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("getconf PAGESIZE prints a number")
}

/// Bytes of the files under `dir` as a tmpfs of `page`-byte pages holds them.
fn blocks(dir: &Path, page: u64) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        total += if path.is_dir() {
            blocks(&path, page)
        } else {
            std::fs::metadata(&path).unwrap().len().div_ceil(page) * page
        };
    }
    total
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
#[ignore = "mounts a tmpfs in a private user and mount namespace (unshare); run by scripts/test.sh"]
fn a_full_disk_is_said_once_and_loses_nothing_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let corpus = write_corpus(work, SENTENCES);
    let model = fixture_model("bert_tiny");
    let run_args = format!(
        "run --model {} --corpus {} --methods pca --quiet --json",
        model.display(),
        corpus.display()
    );
    // Sizes from a run with space: the data (heads, tokens, metadata) and the one figure.
    let args: Vec<&str> = run_args.split(' ').collect();
    let mut full_args = args.clone();
    full_args.extend(["--out", "roomy"]);
    let summary = json(&attnviz_ok(work, &full_args));
    let heads = summary["heads"].as_u64().unwrap();
    let page = page_size();
    let figure = blocks(&work.join("roomy/figures"), page);
    let data = blocks(&work.join("roomy"), page) - figure;

    // 1. The disk fills up while heads are written (a third of the data fits).
    let r = run_on_tmpfs(work, data / 3 / 1024, &run_args);
    assert_eq!(r.rc, 2, "stderr: {}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", r.stderr);
    assert!(
        lines[0].contains("the disk is full") && lines[0].contains("/ds/heads/L"),
        "{}",
        lines[0]
    );
    let named = lines[0]
        .split(": the disk is full")
        .next()
        .unwrap_or_default();
    assert!(
        named.ends_with(".parquet") && lines[0].matches("space").count() == 1,
        "the cause once, naming the file meant (not its temporary file): {}",
        lines[0]
    );
    assert_eq!(r.temp_files, "", "temporary files left behind");
    // What was finished is complete and kept: the dataset reads, and the re-run with space reuses it.
    let done = json(&r.info)["heads"].as_u64().unwrap();
    assert!(0 < done && done < heads, "{done} of {heads} heads stored");
    let rerun = json(&r.rerun);
    assert_eq!(rerun["heads"].as_u64().unwrap(), heads, "{}", r.rerun);
    assert_eq!(rerun["heads_extracted"].as_u64().unwrap(), heads - done);

    // 2. The data fits, the figure does not: the summary is printed, then the error.
    let r = run_on_tmpfs(work, (data + figure / 2) / 1024, &run_args);
    assert_eq!(r.rc, 2, "stderr: {}", r.stderr);
    assert!(
        r.stderr.contains("the disk is full") && r.stderr.contains("figures/matrix_pca_2d.png"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_eq!(json(&r.stdout)["heads"].as_u64().unwrap(), heads);
    assert_eq!(r.temp_files, "", "temporary files left behind");
    assert_eq!(json(&r.info)["heads"].as_u64().unwrap(), heads);
}
