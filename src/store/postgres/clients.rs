//! Introspection clients on PostgreSQL: one row each, the secret's digest only.

use super::{PgStore, col, error};
use crate::domain::client::{ClientName, ClientRecord};
use crate::store::{Clients, Result, StoreError};
use tokio_postgres::error::SqlState;

impl Clients for PgStore {
    fn add_client(&self, name: &ClientName, secret_digest: &str, now: i64) -> Result<()> {
        self.run(async |client| {
            let inserted = client
                .execute(
                    "INSERT INTO introspection_clients (name, secret_digest, created_at)
                     VALUES ($1, $2, $3)",
                    &[&name.as_str(), &secret_digest, &now],
                )
                .await;
            match inserted {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(StoreError::ClientExists)
                }
                Err(e) => Err(error(e)),
            }
        })
    }

    fn client_secret_digest(&self, name: &ClientName) -> Result<Option<String>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT secret_digest FROM introspection_clients WHERE name = $1",
                    &[&name.as_str()],
                )
                .await?;
            rows.first().map(|row| col(row, 0)).transpose()
        })
    }

    fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT name, created_at FROM introspection_clients ORDER BY name",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(ClientRecord {
                        name: ClientName::from_stored(col(row, 0)?),
                        created_at: col(row, 1)?,
                    })
                })
                .collect()
        })
    }

    fn remove_client(&self, name: &ClientName) -> Result<bool> {
        self.block(async {
            Ok(self
                .execute(
                    "DELETE FROM introspection_clients WHERE name = $1",
                    &[&name.as_str()],
                )
                .await?
                == 1)
        })
    }
}
