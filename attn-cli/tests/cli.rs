//! The binary's own surface: help, version and usage errors. (The pipeline is tested end to end in
//! the workspace's `tests/` crate, which drives this same binary.)

use std::process::Command;

fn attnviz(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_attnviz"))
        .args(args)
        .output()
        .expect("attnviz runs")
}

/// Every subcommand with words found in its own `--help` and in no other subcommand's: its own flags
/// (`--x`, matched whole) or, where it has none, a phrase of its description.
const OWN_HELP: &[(&str, &[&str])] = &[
    ("run", &["--no-render"]),
    ("extract", &["(no projection)"]),
    ("project", &["--force"]),
    (
        "render",
        &["--view", "--size-by-norm", "--hide-special", "--select-key"],
    ),
    (
        "import",
        &[
            "--queries",
            "--softmax-scale",
            "--no-attention",
            "--model-id",
        ],
    ),
    ("serve", &["--port", "--allow-host"]),
    ("export-html", &["--sequences", "--projection"]),
    ("info", &["per-head summary"]),
    ("bench", &["--sizes", "bhtsne"]),
    ("fetch-model", &["--print-dir"]),
];

/// The `--flags` of a help text, each whole.
fn flags(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("--") {
        let tail = &rest[i + 2..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .unwrap_or(tail.len());
        if end > 0 {
            out.insert(format!("--{}", &tail[..end]));
        }
        rest = &tail[end..];
    }
    out
}

/// Whether `help` has `word`: a flag whole, a phrase anywhere.
fn has(help: &str, word: &str) -> bool {
    if word.starts_with("--") {
        flags(help).contains(word)
    } else {
        help.contains(word)
    }
}

#[test]
fn help_lists_every_command() {
    let out = attnviz(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // The command names of the `Commands:` section, in order (the first word of each entry; a wrapped
    // description would continue further indented).
    let section = text
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .unwrap_or_else(|| panic!("--help has no Commands: section:\n{text}"));
    let listed: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut expected: Vec<&str> = OWN_HELP.iter().map(|(cmd, _)| *cmd).collect();
    expected.push("help");
    assert_eq!(listed, expected, "--help lists other commands:\n{text}");
}

#[test]
fn every_subcommand_has_its_own_help() {
    let helps: Vec<(&str, String)> = OWN_HELP
        .iter()
        .map(|(cmd, _)| {
            let out = attnviz(&[cmd, "--help"]);
            assert!(out.status.success(), "{cmd} --help failed");
            (*cmd, String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .collect();
    for ((cmd, own), (_, help)) in OWN_HELP.iter().zip(&helps) {
        assert!(
            help.contains(&format!("Usage: attnviz {cmd} ")),
            "{cmd} --help has no usage line of its own:\n{help}"
        );
        for word in *own {
            assert!(has(help, word), "{cmd} --help lacks `{word}`:\n{help}");
            // The word tells this help apart: no other subcommand's help has it.
            for (other, other_help) in &helps {
                assert!(
                    other == cmd || !has(other_help, word),
                    "`{word}` of {cmd} --help also appears in {other} --help"
                );
            }
        }
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
