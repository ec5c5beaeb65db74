//! The binary's own surface: help, version and usage errors. (The pipeline is tested end to end in
//! the workspace's `tests/` crate, which drives this same binary.)

use std::process::Command;

fn attnviz(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_attnviz"))
        .args(args)
        .output()
        .expect("attnviz runs")
}

#[test]
fn help_lists_every_command() {
    let out = attnviz(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "run",
        "extract",
        "project",
        "render",
        "info",
        "bench",
        "fetch-model",
    ] {
        assert!(
            text.contains(cmd),
            "--help does not mention `{cmd}`:\n{text}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = attnviz(&["render"]);
    assert_eq!(out.status.code(), Some(2));
    let out = attnviz(&["run", "--shard", "3/2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard"));
}
