//! The README's commands and claims, and the committed data/, checked against reality.

use crate::helpers::*;
use clap::CommandFactory as _;

fn readme() -> String {
    std::fs::read_to_string("README.md").unwrap()
}

/// The text between two markers, without the code fence lines.
fn block_between(text: &str, start: &str, end: &str) -> String {
    let from = text.find(start).unwrap() + start.len();
    let to = from + text[from..].find(end).unwrap();
    text[from..to]
        .lines()
        .filter(|line| !line.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces every `"created_at":"…"` value so outputs from different runs compare equal.
fn without_timestamps(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\"created_at\":\"") {
        let value_start = at + "\"created_at\":\"".len();
        out.push_str(&rest[..value_start]);
        let value_end = value_start + rest[value_start..].find('"').unwrap();
        out.push_str("<time>");
        rest = &rest[value_end..];
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_runs_verbatim() {
    let app = spawn_app().await;
    let readme = readme();
    let script = block_between(
        &readme,
        "<!-- walkthrough:start -->",
        "<!-- walkthrough:end -->",
    );
    let expected = block_between(&readme, "Output (the timestamps will differ):", "\n```\n\n");
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("BASE", format!("http://{}", app.addr))
        .output()
        .await
        .expect("bash and curl are needed for this test (.ci/run installs curl)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        without_timestamps(stdout.trim()),
        without_timestamps(expected.trim())
    );
}

#[test]
fn readme_documents_every_serve_flag() {
    let readme = readme();
    let cli = tessera::cli::args::Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" {
            continue;
        }
        assert!(
            readme.contains(&format!("`--{long}`")),
            "README lacks --{long}"
        );
        let env = arg.get_env().unwrap().to_str().unwrap();
        assert!(readme.contains(&format!("`{env}`")), "README lacks {env}");
    }
}

#[test]
fn readme_test_command_is_the_one_ci_runs() {
    let ci = std::fs::read_to_string(".ci/run").unwrap();
    assert!(readme().contains("cargo test --workspace"));
    assert!(ci.contains("cargo test --workspace"));
}

#[test]
fn seed_file_is_the_briefs_verbatim() {
    let ours = std::fs::read("data/seed-users.csv").unwrap();
    if let Ok(brief) = std::fs::read("../shared/seed-users.csv") {
        assert_eq!(ours, brief);
    }
    assert_eq!(
        csv::Reader::from_path("data/seed-users.csv")
            .unwrap()
            .records()
            .count(),
        5
    );
}
