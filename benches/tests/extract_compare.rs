//! The extraction benchmark's driver runs end to end on a tiny fixture model (the PyTorch side is
//! skipped: CI has no torch). Checks what it reports, not how fast.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the driver on the attn-extract fixture `fixture` with `args` (PyTorch skipped), writing
/// into `out`; fails the test unless it succeeds. Returns its stdout.
fn run_on_fixture(fixture: &str, args: &[&str], out: &Path) -> String {
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../attn-extract/tests/fixtures")
        .join(fixture);
    let run: Output = Command::new(env!("CARGO_BIN_EXE_extract_compare"))
        .arg("--model")
        .arg(&model)
        .args(args)
        .arg("--skip-python")
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

fn results(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

#[test]
fn extract_compare_reports_rounds_and_writes_results() {
    let out = tempfile::tempdir().unwrap();
    let stdout = run_on_fixture(
        "bert_tiny",
        &[
            "--sentences",
            "12",
            "--batch",
            "5",
            "--repeats",
            "2",
            "--rounds",
            "2",
            "--truncate",
        ],
        out.path(),
    );
    assert!(stdout.contains("PyTorch skipped: no ratio."), "{stdout}");
    let json = results(out.path());
    assert_eq!(json["sentences"], 12);
    // Every generated sentence has at least 9 words plus [CLS] and [SEP].
    assert!(json["tokens"].as_u64().unwrap() >= 12 * 11, "{json}");
    assert!(json["ratio"].is_null());
    let rounds = json["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    for round in rounds {
        for key in ["attn_extract", "attn_extract_no_attention"] {
            let rates = round[key].as_array().unwrap();
            assert_eq!(rates.len(), 2, "{key}");
            assert!(
                rates.iter().all(|r| r.as_f64().unwrap() > 0.0),
                "{key}: {rates:?}"
            );
        }
        assert!(round["pytorch"].is_null());
    }
    assert!(out.path().join("results.md").is_file());
    assert!(!out.path().join(".results.json.tmp").exists());
}

#[test]
fn extract_compare_names_a_missing_model_and_bad_options() {
    let missing = Command::new(env!("CARGO_BIN_EXE_extract_compare"))
        .env_remove("ATTNVIZ_MINILM_DIR")
        .arg("--skip-python")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--model"));
    let zero = Command::new(env!("CARGO_BIN_EXE_extract_compare"))
        .args(["--repeats", "0"])
        .output()
        .unwrap();
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--repeats must be at least 1"));
}

#[test]
fn extract_compare_runs_a_vit_on_synthetic_images() {
    let out = tempfile::tempdir().unwrap();
    let args = [
        "--sentences",
        "3",
        "--batch",
        "2",
        "--repeats",
        "1",
        "--rounds",
        "1",
    ];
    run_on_fixture("vit16_tiny", &args, out.path());
    let json = results(out.path());
    // The fixture sees 48 px through 16 px patches: 3 x 3 patches + [CLS] per image.
    assert_eq!(json["tokens"], 3 * 10, "{json}");
    let pngs = std::fs::read_dir(out.path().join("images"))
        .unwrap()
        .count();
    assert_eq!(pngs, 3, "the images the PyTorch side reads");
}

/// A stand-in for the PyTorch side: an executable shell script that prints `stdout` and exits with
/// `code`, whatever it is asked.
fn fake_python(dir: &Path, stdout: &str, code: i32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-python");
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho '{stdout}'\necho 'torch exploded' >&2\nexit {code}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn extract_compare_reports_a_failing_or_disagreeing_pytorch_side() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../attn-extract/tests/fixtures/bert_tiny");
    let dir = tempfile::tempdir().unwrap();
    let run = |python: &Path| {
        Command::new(env!("CARGO_BIN_EXE_extract_compare"))
            .arg("--model")
            .arg(&model)
            .args([
                "--sentences",
                "4",
                "--repeats",
                "1",
                "--rounds",
                "1",
                "--truncate",
            ])
            .arg("--python")
            .arg(python)
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .unwrap()
    };
    let failing = run(&fake_python(dir.path(), "", 3));
    assert!(!failing.status.success());
    let msg = String::from_utf8_lossy(&failing.stderr);
    assert!(
        msg.contains("torch_extract.py failed") && msg.contains("torch exploded"),
        "{msg}"
    );
    let disagreeing = run(&fake_python(
        dir.path(),
        r#"{"tokens": 1, "rates": [5.0]}"#,
        0,
    ));
    assert!(!disagreeing.status.success());
    let msg = String::from_utf8_lossy(&disagreeing.stderr);
    assert!(
        msg.contains("token counts differ") && msg.contains("PyTorch 1"),
        "{msg}"
    );
}
