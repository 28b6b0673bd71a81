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
    let base = format!("http://{}", app.addr);
    let db = app.db_path.clone();
    // std's Command on the blocking pool, not tokio's: tokio's "process" feature would be
    // unified into every build that includes dev-dependencies — the benchmarks' too — and its
    // driver runs on every park of the server's workers.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("BASE", base)
            .env("TESSERA", env!("CARGO_BIN_EXE_tessera"))
            .env("TESSERA_DB", db)
            .output()
    })
    .await
    .unwrap()
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

/// Every file under `src/`, relative to it.
fn source_files(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_dir() {
            source_files(&entry.path(), &format!("{prefix}{name}/"), out);
        } else {
            out.push(format!("{prefix}{name}"));
        }
    }
}

#[test]
fn the_architecture_doc_lists_every_source_file() {
    let architecture = std::fs::read_to_string("docs/architecture.md").unwrap();
    let listing = block_between(&architecture, "# Architecture", "tools/tessera-token");
    let tree = listing.split_once("src/\n").unwrap().1;
    // Two spaces per level; a name ending in `/` opens a folder.
    let mut folders: Vec<String> = Vec::new();
    let mut listed = Vec::new();
    for line in tree.lines() {
        let indent = line.len() - line.trim_start().len();
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let depth = indent / 2 - 1;
        folders.truncate(depth);
        if let Some(folder) = name.strip_suffix('/') {
            folders.push(format!("{folder}/"));
        } else {
            listed.push(format!("{}{name}", folders.concat()));
        }
    }
    let mut actual = Vec::new();
    source_files(std::path::Path::new("src"), "", &mut actual);
    listed.sort();
    actual.sort();
    assert_eq!(listed, actual, "docs/architecture.md's listing vs src/");
}

/// The layers of `src/`, bottom to top; each may import only from those before it.
#[test]
fn layers_import_downward_only() {
    let layers = [
        "support", "crypto", "domain", "token", "store", "auth", "http",
    ];
    for (position, layer) in layers.iter().enumerate() {
        let above = layers.get(position + 1..).unwrap_or_default();
        let mut files = Vec::new();
        source_files(&std::path::Path::new("src").join(layer), "", &mut files);
        for file in files {
            let text = std::fs::read_to_string(format!("src/{layer}/{file}")).unwrap();
            for upper in above.iter().chain(&["app", "cli", "config"]) {
                assert!(
                    !text.contains(&format!("crate::{upper}::")),
                    "src/{layer}/{file} imports from `{upper}`, a layer above it"
                );
            }
        }
    }
}

/// Only the HTTP edge logs while serving a request — with the request's id on every line. The
/// layers below return errors instead; the hashing threads log once, when they start, and a
/// PostgreSQL replica's feed task when its lease is lost or held again.
#[test]
fn only_the_http_edge_logs_while_serving() {
    for layer in ["support", "crypto", "domain", "token", "store", "auth"] {
        let mut files = Vec::new();
        source_files(&std::path::Path::new("src").join(layer), "", &mut files);
        for file in files {
            let text = std::fs::read_to_string(format!("src/{layer}/{file}")).unwrap();
            let logs = text.matches("tracing::").count();
            let allowed = match (layer, file.as_str()) {
                ("auth", "hash_pool.rs") => 1, // a thread's priority could not be lowered
                // The replica's feed task, outside any request: its lease lost and held again.
                ("store", "postgres/replica.rs") => 2,
                _ => 0,
            };
            assert_eq!(logs, allowed, "src/{layer}/{file} logs");
        }
    }
}

/// A key file is never committed, wherever `tessera serve` or `tessera keys` made it: started
/// from a subdirectory, `serve` creates `keys/jwks.json` there.
#[test]
fn git_ignores_key_files_wherever_they_are_made() {
    let root = env!("CARGO_MANIFEST_DIR");
    let ignored = |path: &str| {
        std::process::Command::new("git")
            .args(["-C", root, "check-ignore", "-q", "--no-index", path])
            .status()
            .unwrap()
            .success()
    };
    for path in [
        "keys/jwks.json",
        "tools/keys/jwks.json",
        "tools/tessera-token/keys/jwks.json",
        "deploy/jwks.json",
        "keys/jwks.tmp-AbCdEf",
        "tools/data/tessera.db",
    ] {
        assert!(ignored(path), "{path} would be committed");
    }
    for path in ["keys/README.md", "keys/.gitignore", "README.md"] {
        assert!(!ignored(path), "{path} is ignored");
    }
}
