//! Versioned schema migrations shipped inside the crate.

use std::fmt;

use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

use super::config::Portability;
use super::fault::Fault;

/// One schema migration: a version, a name and its SQL (with `{schema}` standing for the
/// quoted schema name).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: u32,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
    /// Checksums of earlier shipped texts of this migration that differ from `sql` only in
    /// optional-block markers (comments): schemas they migrated are the same and accepted.
    pub(crate) earlier: &'static [i64],
}

/// Every migration this build knows, in version order. Append only: a released migration is
/// never edited (its checksum is recorded and verified).
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
        // Before the `truncate_trigger` markers.
        earlier: &[-2655999107254946757],
    },
    Migration {
        version: 2,
        name: "history_overrides",
        sql: include_str!("migrations/0002_history_overrides.sql"),
        earlier: &[],
    },
    Migration {
        version: 3,
        name: "feed_terms",
        sql: include_str!("migrations/0003_feed_terms.sql"),
        earlier: &[],
    },
    Migration {
        version: 4,
        name: "directives",
        sql: include_str!("migrations/0004_directives.sql"),
        earlier: &[],
    },
    Migration {
        version: 5,
        name: "headroom_by_resource",
        sql: include_str!("migrations/0005_headroom_by_resource.sql"),
        earlier: &[],
    },
    Migration {
        version: 6,
        name: "lifetimes",
        sql: include_str!("migrations/0006_lifetimes.sql"),
        earlier: &[],
    },
    Migration {
        version: 7,
        name: "rollouts",
        sql: include_str!("migrations/0007_rollouts.sql"),
        earlier: &[],
    },
    Migration {
        version: 8,
        name: "health",
        sql: include_str!("migrations/0008_health.sql"),
        earlier: &[],
    },
    Migration {
        version: 9,
        name: "set_based_stamp_checks",
        sql: include_str!("migrations/0009_set_based_stamp_checks.sql"),
        earlier: &[],
    },
    Migration {
        version: 10,
        name: "json_change_payload",
        sql: include_str!("migrations/0010_json_change_payload.sql"),
        earlier: &[],
    },
];

/// The newest schema version this build of the crate knows.
///
/// ```
/// assert!(stamps::registry::postgres::SCHEMA_VERSION >= 1);
/// ```
pub const SCHEMA_VERSION: u32 = 10;

/// Why the registry refuses a database schema. Returned inside
/// [`Error::Backend`](crate::error::Error::Backend); downcast the source to match on it.
///
/// ```
/// use stamps::registry::postgres::SchemaError;
/// let e = SchemaError::TooNew { schema: "stamps".into(), found: 3, supported: 1 };
/// assert!(e.to_string().contains("upgrade"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaError {
    /// The database was migrated by a newer build of the crate; this build does not know its
    /// tables and must not write to them.
    TooNew {
        /// The schema.
        schema: String,
        /// The version found in the database.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// An applied migration differs from the one shipped in this build (edited by hand, or a
    /// different crate wrote the schema).
    Modified {
        /// The schema.
        schema: String,
        /// The migration's version.
        version: u32,
    },
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::TooNew {
                schema,
                found,
                supported,
            } => write!(
                f,
                "schema {schema:?} is at version {found} but this build of stamps knows versions up to \
                 {supported}; upgrade the stamps crate (never point an older build at a newer schema)"
            ),
            SchemaError::Modified { schema, version } => write!(
                f,
                "migration {version} recorded in schema {schema:?} differs from the one shipped in this build; \
                 the schema was changed by hand or by another program"
            ),
        }
    }
}

impl std::error::Error for SchemaError {}

impl From<SchemaError> for Fault {
    fn from(e: SchemaError) -> Self {
        Fault::Crate(crate::error::Error::backend(e))
    }
}

/// FNV-1a over the migration's SQL: a stable fingerprint recorded with each applied migration.
pub(crate) fn checksum(sql: &str) -> i64 {
    crate::hash::fnv1a_64(sql.as_bytes()) as i64
}

/// Quotes a validated schema name.
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// The applied versions and checksums, or an empty list when the schema has no migration table.
async fn applied(client: &tokio_postgres::Client, schema: &str) -> Result<Vec<(u32, i64)>, Fault> {
    let exists = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{}.schema_migrations", quoted(schema))],
        )
        .await?;
    if !exists.try_get::<_, bool>(0)? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT version, checksum FROM {}.schema_migrations ORDER BY version",
                quoted(schema)
            ),
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let v: i32 = r.try_get(0)?;
        let c: i64 = r.try_get(1)?;
        out.push((
            u32::try_from(v).map_err(|_| super::fault::corrupt("schema_migrations.version"))?,
            c,
        ));
    }
    Ok(out)
}

/// Refuses a schema that a newer build migrated, or whose applied migrations differ from ours.
fn verify(schema: &str, applied: &[(u32, i64)]) -> Result<(), Fault> {
    if let Some(&(found, _)) = applied.iter().max_by_key(|(v, _)| *v) {
        if found > SCHEMA_VERSION {
            return Err(SchemaError::TooNew {
                schema: schema.to_string(),
                found,
                supported: SCHEMA_VERSION,
            }
            .into());
        }
    }
    for &(version, sum) in applied {
        let known = MIGRATIONS.iter().find(|m| m.version == version);
        if known.is_none_or(|m| checksum(m.sql) != sum && !m.earlier.contains(&sum)) {
            return Err(SchemaError::Modified {
                schema: schema.to_string(),
                version,
            }
            .into());
        }
    }
    Ok(())
}

/// The schema's version (`None` before the first migration), after checking it is one this
/// build can use.
pub(crate) async fn current_version(client: &tokio_postgres::Client, schema: &str) -> Result<Option<u32>, Fault> {
    let applied = applied(client, schema).await?;
    verify(schema, &applied)?;
    Ok(applied.iter().map(|(v, _)| *v).max())
}

/// A migration's SQL as run with `portability`: blocks between `-- stamps:optional <feature>`
/// and `-- stamps:end optional` are left out when the feature is off. The checksum is always
/// over the shipped text, so a schema migrated with any options is recognised by every build.
pub(crate) fn sql_for(sql: &str, portability: &Portability) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut skipping = false;
    for line in sql.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("-- stamps:optional ") {
            let feature = rest.split_whitespace().next().unwrap_or("");
            skipping = !portability.enabled(feature);
            continue;
        }
        if trimmed == "-- stamps:end optional" {
            skipping = false;
            continue;
        }
        if !skipping {
            out.push_str(line);
        }
    }
    out
}

/// Applies the missing migrations, returning the versions applied (empty when the schema was
/// up to date). With [`Portability::transactional_ddl`] all of them run in one transaction
/// (a failure applies none); with [`Portability::lock_table`] under an exclusive lock on the
/// migration table, so concurrent migrators apply each version once (without it, a concurrent
/// migrator fails on the migration table's primary key and the caller runs it again).
pub(crate) async fn migrate(
    client: &mut tokio_postgres::Client,
    schema: &str,
    portability: &Portability,
) -> Result<Vec<u32>, Fault> {
    let q = quoted(schema);
    let bootstrap = format!(
        "CREATE SCHEMA IF NOT EXISTS {q};
         CREATE TABLE IF NOT EXISTS {q}.schema_migrations (
             version    integer PRIMARY KEY,
             name       text    NOT NULL,
             checksum   bigint  NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    );
    // Two migrators creating the schema at once: the loser's CREATE ... IF NOT EXISTS can fail
    // on the catalog's unique index; the second attempt sees the objects.
    let mut attempt = 0;
    loop {
        match client.batch_execute(&bootstrap).await {
            Ok(()) => break,
            Err(e)
                if attempt < 3
                    && e.code().is_some_and(|c| {
                        *c == SqlState::UNIQUE_VIOLATION
                            || *c == SqlState::DUPLICATE_SCHEMA
                            || *c == SqlState::DUPLICATE_TABLE
                    }) =>
            {
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !portability.transactional_ddl {
        // Each migration on its own: a failure leaves the failing one unrecorded (and, where
        // DDL commits by itself, partly applied: the error names it).
        return apply_missing(client, schema, &q, portability).await;
    }
    let tx = client.transaction().await?;
    match apply_missing(&tx, schema, &q, portability).await {
        Ok(applied_now) => {
            tx.commit().await?;
            Ok(applied_now)
        }
        Err(e) => {
            // Release the table lock now rather than when the connection is next polled.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn apply_missing(
    tx: &impl GenericClient,
    schema: &str,
    q: &str,
    portability: &Portability,
) -> Result<Vec<u32>, Fault> {
    if portability.lock_table {
        tx.batch_execute(&format!("LOCK TABLE {q}.schema_migrations IN EXCLUSIVE MODE"))
            .await?;
    }
    let rows = tx
        .query(&format!("SELECT version, checksum FROM {q}.schema_migrations"), &[])
        .await?;
    let mut done = Vec::with_capacity(rows.len());
    for r in rows {
        let v: i32 = r.try_get(0)?;
        let c: i64 = r.try_get(1)?;
        done.push((
            u32::try_from(v).map_err(|_| super::fault::corrupt("schema_migrations.version"))?,
            c,
        ));
    }
    verify(schema, &done)?;
    let mut applied_now = Vec::new();
    for m in MIGRATIONS {
        if done.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        tx.batch_execute(&sql_for(m.sql, portability).replace("{schema}", q))
            .await
            .map_err(|e| {
                if portability.transactional_ddl {
                    Fault::from(e)
                } else {
                    Fault::Crate(crate::error::Error::backend(super::fault::DatabaseError::new(
                        e.code().map(|c| c.code()).unwrap_or(""),
                        format!(
                            "migration {} ({}) failed without transactional DDL and may be partly applied; \
                             repair the schema by hand before running migrate() again: {e}",
                            m.version, m.name
                        ),
                    )))
                }
            })?;
        let version = i32::try_from(m.version).map_err(|_| super::fault::corrupt("migration version"))?;
        tx.execute(
            &format!("INSERT INTO {q}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"),
            &[&version, &m.name, &checksum(m.sql)],
        )
        .await?;
        applied_now.push(m.version);
    }
    Ok(applied_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_latest_is_known() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
        assert!(MIGRATIONS.iter().all(|m| m.sql.contains("{schema}")));
    }

    #[test]
    fn optional_blocks_follow_the_portability_options() {
        let all = sql_for(MIGRATIONS[0].sql, &Portability::default());
        assert!(all.contains("BEFORE TRUNCATE") && !all.contains("stamps:optional"));
        let without = sql_for(MIGRATIONS[0].sql, &Portability::default().truncate_trigger(false));
        assert!(!without.contains("BEFORE TRUNCATE"));
        assert!(
            without.contains("assignment_history_append_only"),
            "only the optional block goes"
        );
        assert!(
            without.contains("CREATE TABLE {schema}.changes"),
            "what follows the block stays"
        );
        for m in MIGRATIONS {
            let opens = m.sql.matches("-- stamps:optional ").count();
            assert_eq!(
                opens,
                m.sql.matches("-- stamps:end optional").count(),
                "migration {}",
                m.version
            );
        }
    }

    #[test]
    fn earlier_checksums_are_the_same_migration_without_markers() {
        for m in MIGRATIONS {
            let unmarked: String = m
                .sql
                .split_inclusive('\n')
                .filter(|l| !l.trim_start().starts_with("-- stamps:"))
                .collect();
            for &sum in m.earlier {
                assert_eq!(checksum(&unmarked), sum, "migration {}", m.version);
                assert!(verify("s", &[(m.version, sum)]).is_ok());
            }
        }
    }

    #[test]
    fn verify_refuses_newer_and_modified() {
        let ok = [(1, checksum(MIGRATIONS[0].sql))];
        assert!(verify("s", &ok).is_ok());
        assert!(verify("s", &[]).is_ok());
        let newer = [(1, checksum(MIGRATIONS[0].sql)), (SCHEMA_VERSION + 1, 0)];
        match verify("s", &newer) {
            Err(Fault::Crate(crate::error::Error::Backend { source })) => {
                let e = source.downcast_ref::<SchemaError>().cloned();
                assert!(matches!(e, Some(SchemaError::TooNew { found, .. }) if found == SCHEMA_VERSION + 1));
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
        assert!(matches!(verify("s", &[(1, 42)]), Err(Fault::Crate(_))));
    }
}
