//! A plain-text SQL dump written by our code (no sqlite3 binary needed): the schema as SQLite
//! stores it, then every row as an INSERT, tables and rows in a stable order so two dumps of the
//! same data compare equal.

use super::Result;
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use std::fmt::Write as _;

pub(super) fn dump(conn: &Connection) -> Result<String> {
    let mut out = String::new();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let _ = writeln!(out, "-- Tessera database dump (schema version {version})");
    out.push_str("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n");
    let _ = writeln!(out, "PRAGMA user_version={version};");

    let tables = schema_objects(conn, "table")?;
    for (name, sql) in &tables {
        let _ = writeln!(out, "{sql};");
        dump_rows(conn, name, &mut out)?;
    }
    for kind in ["index", "view", "trigger"] {
        for (_, sql) in schema_objects(conn, kind)? {
            let _ = writeln!(out, "{sql};");
        }
    }
    out.push_str("COMMIT;\n");
    Ok(out)
}

/// Objects of one kind, by name; SQLite's own (`sqlite_*`, automatic indexes) left out.
fn schema_objects(conn: &Connection, kind: &str) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT name, sql FROM sqlite_schema
         WHERE type = ?1 AND sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let rows = stmt.query_map([kind], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn dump_rows(conn: &Connection, table: &str, out: &mut String) -> Result<()> {
    let quoted = quote_identifier(table);
    let mut stmt = conn.prepare(&format!("SELECT * FROM {quoted} ORDER BY 1"))?;
    let columns = stmt.column_count();
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(sql_literal(row.get_ref(i)?));
        }
        let _ = writeln!(out, "INSERT INTO {quoted} VALUES({});", values.join(","));
    }
    Ok(())
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn sql_literal(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => format!("{f:?}"),
        ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t).replace('\'', "''")),
        ValueRef::Blob(b) => {
            let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("X'{hex}'")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted_for_sqlite() {
        assert_eq!(sql_literal(ValueRef::Text(b"O'Brien")), "'O''Brien'");
        assert_eq!(sql_literal(ValueRef::Null), "NULL");
        assert_eq!(sql_literal(ValueRef::Integer(-3)), "-3");
        assert_eq!(sql_literal(ValueRef::Blob(&[0, 255])), "X'00ff'");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn dump_replays_into_an_identical_database() {
        let source = Connection::open_in_memory().unwrap();
        source
            .execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, note TEXT);
                 INSERT INTO t VALUES (1, 'O''Brien', NULL), (2, 'x', 'semi;colon');
                 CREATE INDEX t_name ON t(name);",
            )
            .unwrap();
        let text = dump(&source).unwrap();
        let replica = Connection::open_in_memory().unwrap();
        replica.execute_batch(&text).unwrap();
        assert_eq!(dump(&replica).unwrap(), text);
    }
}
