//! The README's commands and claims, and the committed data/, checked against reality.

use crate::helpers::*;
use clap::CommandFactory as _;
use rusqlite::Connection;
use std::path::Path;

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
    let cli = tessera::config::Cli::command();
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

/// What must match between the committed dump and a fresh one: everything but salts, hashes,
/// ids and times.
fn summary(dump: &str) -> Vec<String> {
    let db = Connection::open_in_memory().unwrap();
    db.execute_batch(dump).unwrap();
    let mut rows = Vec::new();
    let queries = [
        "SELECT type || ' ' || name || ': ' || sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name",
        "SELECT username || '|' || username_canonical || '|' || full_name || '|' ||
                mothers_favorite_search_engine || '|' ||
                substr(password_hash, 1, instr(password_hash, 'p=1$') + 3) || '|' ||
                token_generation || '|' || failed_logins
         FROM users ORDER BY username",
        "SELECT u.username || ' issued ' || count(t.jti) || ', revoked ' ||
                count(r.jti) || ', at generation ' || coalesce(max(t.generation), '-')
         FROM users u LEFT JOIN issued_tokens t ON t.user_id = u.id
              LEFT JOIN revoked_tokens r ON r.jti = t.jti
         GROUP BY u.username ORDER BY u.username",
        "SELECT 'user_version ' || user_version FROM pragma_user_version",
    ];
    for query in queries {
        let mut statement = db.prepare(query).unwrap();
        let found = statement
            .query_map([], |row| row.get::<_, String>(0))
            .unwrap();
        rows.extend(found.map(Result::unwrap));
    }
    rows
}

#[test]
fn committed_dump_matches_a_fresh_regeneration() {
    let dir = tempfile::tempdir().unwrap();
    let fresh_path = dir.path().join("dump.sql");
    let report = tessera::demo::regenerate(Path::new("data/seed-users.csv"), &fresh_path).unwrap();
    assert!(report.contains("register kvothe       -> 201"), "{report}");
    let fresh = std::fs::read_to_string(&fresh_path).unwrap();
    let committed = std::fs::read_to_string("data/tessera-dump.sql").unwrap();
    assert_eq!(summary(&committed), summary(&fresh));

    let state = summary(&committed);
    assert!(
        state.contains(&"kvothe issued 2, revoked 1, at generation 0".to_owned()),
        "{state:?}"
    );
    assert!(state.contains(&"tpratchett issued 1, revoked 0, at generation 0".to_owned()));
    assert!(state.iter().any(|r| r.starts_with(
        "kvothe|kvothe|Patrick Rothfuss|Duck Duck Go|$argon2id$v=19$m=19456,t=2,p=1$"
    )));
    // No token (they start with the base64 of `{"`), no MAC, no key in the dump.
    assert!(!committed.contains("eyJ"));
    assert!(!committed.contains("\"k\""));
}

#[test]
fn seed_file_is_the_briefs_verbatim() {
    let ours = std::fs::read("data/seed-users.csv").unwrap();
    if let Ok(brief) = std::fs::read("../shared/seed-users.csv") {
        assert_eq!(ours, brief);
    }
    assert_eq!(
        tessera::demo::read_seed(Path::new("data/seed-users.csv"))
            .unwrap()
            .len(),
        5
    );
}
