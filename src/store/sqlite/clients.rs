//! Introspection clients: one row each, the secret's digest only.

use super::{Result, SqliteStore, StoreError};
use crate::domain::client::{ClientName, ClientRecord};
use crate::store::Clients;
use rusqlite::{ErrorCode, OptionalExtension as _, params};

impl Clients for SqliteStore {
    fn add_client(&self, name: &ClientName, secret_digest: &str, now: i64) -> Result<()> {
        self.with_write(|conn| {
            let inserted = conn.execute(
                "INSERT INTO introspection_clients (name, secret_digest, created_at)
                 VALUES (?1, ?2, ?3)",
                params![name.as_str(), secret_digest, now],
            );
            match inserted {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::ClientExists)
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn client_secret_digest(&self, name: &ClientName) -> Result<Option<String>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT secret_digest FROM introspection_clients WHERE name = ?1",
            )?;
            Ok(stmt
                .query_row([name.as_str()], |row| row.get(0))
                .optional()?)
        })
    }

    fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        self.with_conn(|conn| {
            let mut stmt =
                conn.prepare("SELECT name, created_at FROM introspection_clients ORDER BY name")?;
            let rows = stmt.query_map([], |row| {
                Ok(ClientRecord {
                    name: ClientName::from_stored(row.get(0)?),
                    created_at: row.get(1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn remove_client(&self, name: &ClientName) -> Result<bool> {
        self.with_write(|conn| {
            Ok(conn.execute(
                "DELETE FROM introspection_clients WHERE name = ?1",
                [name.as_str()],
            )? == 1)
        })
    }
}
