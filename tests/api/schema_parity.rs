//! The two backends' migration lists are written in two dialects; this holds them to one
//! schema: the same tables with the same columns, whatever each dialect calls their types.
//! What only one backend has is named here, with the reason.

use crate::helpers::*;
use std::collections::{BTreeMap, BTreeSet};

/// Tables only SQLite has: none (both keep the change log that feeds the revocation view).
const SQLITE_ONLY: &[&str] = &[];
/// Tables only PostgreSQL has: its migration version (SQLite keeps it in `PRAGMA user_version`),
/// the change log's position counter (SQLite's is `sqlite_sequence`) and the replicas' leases.
const POSTGRES_ONLY: &[&str] = &["tessera_schema", "change_position", "replica_leases"];

type Schema = BTreeMap<String, BTreeSet<String>>;

fn sqlite_schema(path: &std::path::Path) -> Schema {
    let db = rusqlite::Connection::open(path).unwrap();
    let mut tables = db
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap();
    let names: Vec<String> = tables
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .filter(|name| !SQLITE_ONLY.contains(&name.as_str()))
        .map(|name| {
            let mut columns = db
                .prepare("SELECT name FROM pragma_table_info(?1)")
                .unwrap();
            let columns: BTreeSet<String> = columns
                .query_map([&name], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (name, columns)
        })
        .collect()
}

async fn postgres_schema(database: &str) -> Schema {
    let client = postgres_client(database).await;
    let rows = client
        .query(
            "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns
             WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap();
    let mut schema = Schema::new();
    for row in rows {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        if !POSTGRES_ONLY.contains(&table.as_str()) {
            schema.entry(table).or_default().insert(column);
        }
    }
    schema
}

#[tokio::test]
#[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
async fn both_migration_lists_build_the_same_tables_and_columns() {
    let sqlite = spawn_sqlite_app().await;
    let url = fresh_postgres_database()
        .await
        .expect("TESSERA_TEST_POSTGRES");
    let postgres =
        spawn_app_with(|c| c.db = tessera::store::DbLocation::Postgres(url.clone())).await;
    drop(postgres);
    let database = url.rsplit('/').next().unwrap();
    let ours = sqlite_schema(&sqlite.db_path);
    assert!(ours["sessions"].contains("client_address"), "{ours:?}");
    assert!(ours["revoked_tokens"].contains("reason"), "{ours:?}");
    assert_eq!(ours, postgres_schema(database).await);
}
