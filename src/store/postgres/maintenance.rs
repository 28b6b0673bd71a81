//! Keys, readiness, integrity and the dump on PostgreSQL.

use super::{PgStore, col};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::store::{Maintenance, ReplicationStats, Result};
use tokio_postgres::Row;

impl Maintenance for PgStore {
    fn register_keys(&self, fingerprints: &[(String, String)]) -> Result<Vec<String>> {
        self.block(async {
            let mut conflicts = Vec::new();
            for (kid, fingerprint) in fingerprints {
                let rows = self
                    .query(
                        "WITH added AS (
                             INSERT INTO key_fingerprints (kid, fingerprint) VALUES ($1, $2)
                             ON CONFLICT (kid) DO NOTHING RETURNING fingerprint)
                         SELECT fingerprint FROM added
                         UNION ALL SELECT fingerprint FROM key_fingerprints WHERE kid = $1",
                        &[kid, fingerprint],
                    )
                    .await?;
                let stored = rows
                    .iter()
                    .map(|row| col::<String>(row, 0))
                    .collect::<Result<Vec<_>>>()?;
                if stored.iter().any(|stored| stored != fingerprint) {
                    conflicts.push(kid.clone());
                }
            }
            Ok(conflicts)
        })
    }

    fn record_signing(&self, kid: &str, until: i64) -> Result<()> {
        self.block(async {
            self.execute(
                "UPDATE key_fingerprints
                 SET signing_until = GREATEST(coalesce(signing_until, $2), $2) WHERE kid = $1",
                &[&kid, &until],
            )
            .await?;
            Ok(())
        })
    }

    fn signing_until(&self, kid: &str) -> Result<Option<i64>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT signing_until FROM key_fingerprints WHERE kid = $1",
                    &[&kid],
                )
                .await?;
            Ok(rows
                .first()
                .map(|row| col::<Option<i64>>(row, 0))
                .transpose()?
                .flatten())
        })
    }

    /// Readiness is what token checks experience: a probe check queued behind the real ones,
    /// through the same batches, pool and timeouts. A replica whose checks stall or fail is
    /// reported not ready, so a load balancer moves its traffic elsewhere.
    fn ping(&self) -> Result<()> {
        let probe = String::new;
        self.checks.check(
            &UserId::from_string(probe()),
            &TokenId::from_string(probe()),
            &SessionId::from_string(probe()),
        )?;
        Ok(())
    }

    /// PostgreSQL checks its own pages; here: the schema is ours and every table answers.
    fn integrity_check(&self) -> Result<Vec<String>> {
        self.block(async {
            for table in ["users", "sessions", "revoked_tokens"] {
                self.query(&format!("SELECT count(*) FROM {table}"), &[])
                    .await?;
            }
            Ok(vec!["ok".to_owned()])
        })
    }

    /// Nothing to fold back: PostgreSQL is complete once a commit returns.
    /// Gives up this replica's lease, so writers stop waiting for it at once.
    fn checkpoint(&self) -> Result<()> {
        self.release_lease()
    }

    fn answers_from_memory(&self) -> bool {
        self.replica
            .as_ref()
            .is_some_and(|replica| replica.trusts_now())
    }

    fn replication(&self) -> Option<ReplicationStats> {
        self.replica
            .as_ref()
            .map(|replica| replica.stats(&self.latency))
    }

    /// Our tables as plain text: the migrations that made them, then every row as an INSERT,
    /// in a stable order (`pg_dump` remains the tool for backups).
    fn dump(&self) -> Result<String> {
        self.block(async {
            let mut out = format!(
                "-- Tessera database dump (PostgreSQL, schema version {})\n",
                super::schema::MIGRATIONS.len()
            );
            for migration in super::schema::MIGRATIONS {
                out.push_str(migration.trim());
                out.push('\n');
            }
            for table in ["users", "sessions", "revoked_tokens"] {
                let rows = self
                    .query(&format!("SELECT * FROM {table} ORDER BY 1"), &[])
                    .await?;
                for row in &rows {
                    let values: Vec<String> = (0..row.len()).map(|i| sql_literal(row, i)).collect();
                    out.push_str(&format!(
                        "INSERT INTO \"{table}\" VALUES({});\n",
                        values.join(",")
                    ));
                }
            }
            Ok(out)
        })
    }
}

/// Column `i` of `row` as an SQL literal; our tables hold only text and integers.
fn sql_literal(row: &Row, i: usize) -> String {
    use tokio_postgres::types::Type;
    let kind = row.columns().get(i).map(|c| c.type_().clone());
    let value = match kind {
        Some(Type::INT8) => row
            .try_get::<_, Option<i64>>(i)
            .ok()
            .flatten()
            .map(|v| v.to_string()),
        Some(Type::INT4) => row
            .try_get::<_, Option<i32>>(i)
            .ok()
            .flatten()
            .map(|v| v.to_string()),
        _ => row
            .try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .map(|v| format!("'{}'", v.replace('\'', "''"))),
    };
    value.unwrap_or_else(|| "NULL".into())
}
