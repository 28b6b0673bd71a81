//! The committed data/ is what `tessera-demo` makes of the seed file, today.
#![allow(clippy::indexing_slicing)] // test code: a bad index is a failed test

use rusqlite::Connection;
use std::path::PathBuf;

/// A path in the workspace root (tests run in the package's own directory).
fn root(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
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
        "SELECT u.username || ' denylisted ' ||
                (SELECT count(*) FROM revoked_tokens r WHERE r.user_id = u.id AND r.kind = 'session')
                || ' session(s), at generation ' || u.token_generation
         FROM users u ORDER BY u.username",
        "SELECT u.username || ' session: rotated ' || s.refresh_counter || ' times, ' ||
                coalesce('ended (' || s.end_reason || ')', 'live') || ', agent ' || s.user_agent
         FROM sessions s JOIN users u ON u.id = s.user_id
         ORDER BY u.username, s.end_reason IS NULL, s.refresh_counter",
        "SELECT u.username || ' second factor active ' || t.active || ', sealed ' ||
                (t.sealed_secret LIKE 'v1.%') || ', recovery codes ' ||
                (SELECT count(*) FROM recovery_codes r WHERE r.user_id = u.id)
         FROM totp_factors t JOIN users u ON u.id = t.user_id ORDER BY u.username",
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
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tessera-demo"))
        .arg(root("data/seed-users.csv"))
        .arg(&fresh_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report = String::from_utf8(output.stdout).unwrap();
    assert!(report.contains("register kvothe       -> 201"), "{report}");
    let fresh = std::fs::read_to_string(&fresh_path).unwrap();
    let committed = std::fs::read_to_string(root("data/tessera-dump.sql")).unwrap();
    assert_eq!(summary(&committed), summary(&fresh));

    let state = summary(&committed);
    assert!(
        state.contains(&"kvothe denylisted 1 session(s), at generation 0".to_owned()),
        "{state:?}"
    );
    assert!(state.contains(&"tpratchett denylisted 0 session(s), at generation 0".to_owned()));
    assert!(
        state
            .contains(&"tpratchett second factor active 1, sealed 1, recovery codes 10".to_owned()),
        "{state:?}"
    );
    for session in [
        "kvothe session: rotated 0 times, ended (logout), agent ",
        "kvothe session: rotated 0 times, live, agent ",
        "tpratchett session: rotated 1 times, live, agent ",
    ] {
        assert!(state.contains(&session.to_owned()), "{state:?}");
    }
    assert!(state.iter().any(|r| r.starts_with(
        "kvothe|kvothe|Patrick Rothfuss|Duck Duck Go|$argon2id$v=19$m=19456,t=2,p=1$"
    )));
    // No token (they start with the base64 of `{"`), no MAC, no key in the dump.
    assert!(!committed.contains("eyJ"));
    assert!(!committed.contains("tsr_"), "no refresh token");
    assert!(!committed.contains("\"k\""));
}
